//! [`Endpoint`]: one UDP socket that accepts and dials, and the table of peers it knows.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::{mpsc, watch};

use super::codes;
use super::config::{ConfigError, EndpointConfig, LinkConfig};
use super::error::LinkError;
use super::identity::{peer_certificate, peer_name};
use super::incoming::{Counters, EndpointStats, Incoming, StreamContext};
use super::link::Link;
use super::stream_io::PeerRef;

/// A QUIC endpoint with mutual TLS: it accepts connections from peers and dials them, on one
/// UDP socket, and keeps one connection per peer that every caller shares.
///
/// Cloning is cheap; all clones are the same endpoint. Work from peers (requests, messages,
/// objects) arrives through [`accept`](Self::accept), whichever side dialed.
///
/// ```no_run
/// # async fn demo(config: replicast_transport::quic::EndpointConfig) -> Result<(), replicast_transport::quic::LinkError> {
/// use replicast_transport::quic::{Endpoint, Incoming};
///
/// let endpoint = Endpoint::bind(config)?;
/// let storage = endpoint.link("storage-1", "127.0.0.1:7001".parse().unwrap()).await?;
/// let answer: u64 = storage.request(&"ping").await?;
///
/// while let Some(incoming) = endpoint.accept().await {
///     if let Incoming::Request(request) = incoming {
///         let question: String = request.decode()?;
///         request.respond(&question.len()).await?;
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("local_addr", &self.inner.quinn.local_addr().ok())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    quinn: quinn::Endpoint,
    client: quinn::ClientConfig,
    pub(crate) link: LinkConfig,
    peers: Mutex<HashMap<Arc<str>, Arc<Peer>>>,
    queue: mpsc::Sender<Incoming>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Incoming>>,
    closed: watch::Sender<bool>,
    counters: Arc<Counters>,
    /// Every connection being served, by stable id (a peer may have two for a while, after
    /// crossing dials), so that [`Endpoint::close_connections`] reaches them all.
    served: Mutex<HashMap<usize, quinn::Connection>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.quinn.close(codes::CLOSED, b"endpoint dropped");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded state stays consistent even if a holder panicked: every update is one step.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Endpoint {
    /// Binds a UDP socket at `config.listen` and starts accepting connections.
    ///
    /// Must be called within a tokio runtime.
    pub fn bind(config: EndpointConfig) -> Result<Self, LinkError> {
        let bind_error = |e| LinkError::Bind {
            addr: config.listen,
            source: Arc::new(e),
        };
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(config.listen),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .map_err(bind_error)?;
        if config.listen.is_ipv6() {
            // Dual-stack where the platform allows it; an IPv6-only socket still works.
            let _ = socket.set_only_v6(false);
        }
        for (what, result) in [
            (
                "receive",
                socket.set_recv_buffer_size(config.link.socket_buffer_size),
            ),
            (
                "send",
                socket.set_send_buffer_size(config.link.socket_buffer_size),
            ),
        ] {
            if let Err(e) = result {
                tracing::debug!("cannot set the UDP {what} buffer size: {e}");
            }
        }
        socket.bind(&config.listen.into()).map_err(bind_error)?;
        let runtime = Arc::new(quinn::TokioRuntime);
        let socket =
            quinn::Runtime::wrap_udp_socket(&*runtime, socket.into()).map_err(bind_error)?;
        Self::bind_with_socket(config, socket)
    }

    /// Starts an endpoint on a socket the caller provides, for example one wrapped by
    /// [`netem`](crate::netem) to emulate a WAN. `config.listen` is only used in messages.
    pub fn bind_with_socket(
        config: EndpointConfig,
        socket: Arc<dyn quinn::AsyncUdpSocket>,
    ) -> Result<Self, LinkError> {
        let transport = Arc::new(config.link.transport_config()?);
        let server_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(config.server_tls)
            .map_err(|e| ConfigError(format!("server TLS configuration: {e}")))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(transport.clone());
        let client_crypto = quinn::crypto::rustls::QuicClientConfig::try_from(config.client_tls)
            .map_err(|e| ConfigError(format!("client TLS configuration: {e}")))?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
        client.transport_config(transport);
        let quinn = quinn::Endpoint::new_with_abstract_socket(
            config.link.endpoint_config(),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|e| LinkError::Bind {
            addr: config.listen,
            source: Arc::new(e),
        })?;
        let (queue, incoming) = mpsc::channel(config.link.incoming_queue);
        let inner = Arc::new(Inner {
            quinn,
            client,
            link: config.link,
            peers: Mutex::new(HashMap::new()),
            queue,
            incoming: tokio::sync::Mutex::new(incoming),
            closed: watch::Sender::new(false),
            counters: Arc::default(),
            served: Mutex::new(HashMap::new()),
        });
        tokio::spawn(accept_connections(
            inner.quinn.clone(),
            Arc::downgrade(&inner),
        ));
        Ok(Self { inner })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.quinn.local_addr()
    }

    /// The link to `peer` at `addr`: the existing connection if there is one (dialed or
    /// accepted), otherwise a new one. Concurrent calls for the same peer share one dial.
    ///
    /// The peer must present a certificate for the node name `peer`, signed by the CA the
    /// client TLS configuration trusts.
    pub async fn link(&self, peer: &str, addr: SocketAddr) -> Result<Link, LinkError> {
        let entry = self.inner.peer_entry(peer, addr, true);
        entry.connection(&self.inner).await?;
        Ok(Link::new(self.inner.clone(), entry))
    }

    /// The link to a peer this endpoint already knows (it dialed it, or the peer connected),
    /// without connecting. Calls on it reconnect to the last known address when needed.
    pub fn known_link(&self, peer: &str) -> Option<Link> {
        let entry = lock(&self.inner.peers).get(peer).cloned()?;
        Some(Link::new(self.inner.clone(), entry))
    }

    /// The next unit of work from any peer; `None` once the endpoint is closed.
    pub async fn accept(&self) -> Option<Incoming> {
        let mut closed = self.inner.closed.subscribe();
        let mut incoming = tokio::select! {
            guard = self.inner.incoming.lock() => guard,
            _ = closed.wait_for(|closed| *closed) => return None,
        };
        tokio::select! {
            biased;
            _ = closed.wait_for(|closed| *closed) => None,
            work = incoming.recv() => work,
        }
    }

    /// Closes every connection whose peer presented a certificate `condemned` says yes to
    /// (for example one revoked since the handshake), with `reason`, and returns the peers'
    /// names. Their streams fail; a later dial to or from them goes through a new handshake.
    pub fn close_connections(
        &self,
        reason: &str,
        condemned: impl Fn(&str, &rustls_pki_types::CertificateDer<'_>) -> bool,
    ) -> Vec<String> {
        let connections: Vec<quinn::Connection> =
            lock(&self.inner.served).values().cloned().collect();
        let mut closed = Vec::new();
        for connection in connections {
            let Ok(name) = peer_name(&connection) else {
                continue;
            };
            let Some(certificate) = peer_certificate(&connection) else {
                continue;
            };
            if condemned(&name, &certificate) {
                connection.close(codes::ACCESS_REVOKED, reason.as_bytes());
                closed.push(name);
            }
        }
        closed.sort();
        closed.dedup();
        closed
    }

    /// Counts of connections and refused streams so far.
    pub fn stats(&self) -> EndpointStats {
        self.inner.counters.snapshot()
    }

    /// Closes every connection and the socket. Pending calls fail, [`accept`](Self::accept)
    /// returns `None`.
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
        self.inner.quinn.close(codes::CLOSED, b"endpoint closed");
    }

    /// Waits until every connection has finished closing (after [`close`](Self::close)), so
    /// peers learn of the close before the process exits.
    pub async fn wait_idle(&self) {
        self.inner.quinn.wait_idle().await;
    }
}

impl Inner {
    fn peer_entry(&self, name: &str, addr: SocketAddr, update_addr: bool) -> Arc<Peer> {
        let mut peers = lock(&self.peers);
        let entry = peers.entry(Arc::from(name)).or_insert_with_key(|name| {
            Arc::new(Peer {
                name: name.clone(),
                state: Mutex::new(PeerState {
                    addr,
                    connection: None,
                    generation: 0,
                    dialing: None,
                }),
            })
        });
        if update_addr {
            lock(&entry.state).addr = addr;
        }
        entry.clone()
    }

    async fn dial(
        self: &Arc<Self>,
        peer: &Arc<str>,
        addr: SocketAddr,
    ) -> Result<quinn::Connection, LinkError> {
        if *self.closed.borrow() {
            return Err(LinkError::EndpointClosed);
        }
        let connect_error = |reason: String| LinkError::Connect {
            peer: peer.to_string(),
            addr,
            reason,
        };
        let connecting = self
            .quinn
            .connect_with(self.client.clone(), addr, peer)
            .map_err(|e| connect_error(e.to_string()))?;
        let timeout = self.link.connect_timeout;
        let connection = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(quinn::ConnectionError::TimedOut)) => {
                return Err(connect_error("no answer (QUIC idle timeout)".into()));
            }
            Ok(Err(e)) => return Err(LinkError::from_connection(peer, addr, e)),
            Err(_) => {
                return Err(LinkError::Timeout {
                    what: "connect",
                    after: timeout,
                });
            }
        };
        self.counters.dialed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, %addr, "connected");
        self.serve(connection.clone(), peer.clone());
        Ok(connection)
    }

    /// Serves a peer's streams on `connection` until it closes.
    fn serve(self: &Arc<Self>, connection: quinn::Connection, peer: Arc<str>) {
        let context = Arc::new(StreamContext {
            peer: PeerRef {
                name: peer,
                addr: connection.remote_address(),
            },
            max_frame_len: self.link.max_frame_len,
            max_object_size: self.link.max_object_size,
            queue: self.queue.clone(),
            counters: self.counters.clone(),
            certificate: peer_certificate(&connection),
        });
        lock(&self.served).insert(connection.stable_id(), connection.clone());
        tokio::spawn(serve_connection(connection, context, Arc::downgrade(self)));
    }

    fn forget(&self, peer: &str, stable_id: usize) {
        if let Some(entry) = lock(&self.peers).get(peer) {
            let mut state = lock(&entry.state);
            if state
                .connection
                .as_ref()
                .is_some_and(|c| c.stable_id() == stable_id)
            {
                state.connection = None;
            }
        }
    }
}

async fn accept_connections(quinn: quinn::Endpoint, inner: Weak<Inner>) {
    while let Some(incoming) = quinn.accept().await {
        let inner = inner.clone();
        tokio::spawn(async move {
            let addr = incoming.remote_address();
            let connecting = match incoming.accept() {
                Ok(connecting) => connecting,
                Err(e) => {
                    tracing::debug!(%addr, "dropped an incoming connection: {e}");
                    return;
                }
            };
            let result = connecting.await;
            let Some(inner) = inner.upgrade() else { return };
            let connection = match result {
                Ok(connection) => connection,
                Err(e) => {
                    inner
                        .counters
                        .handshake_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%addr, "refused an incoming connection: {e}");
                    return;
                }
            };
            let name = match peer_name(&connection) {
                Ok(name) => name,
                Err(reason) => {
                    inner
                        .counters
                        .handshake_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%addr, "refused a peer: {reason}");
                    connection.close(codes::PROTOCOL_ERROR, reason.as_bytes());
                    return;
                }
            };
            inner.counters.accepted.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer = %name, %addr, "accepted");
            let entry = inner.peer_entry(&name, addr, false);
            {
                let mut state = lock(&entry.state);
                // Keep a live connection already in use; a crossing dial then leaves two
                // connections, both served, until one idles out or drops.
                if !state.connection.as_ref().is_some_and(is_live) {
                    state.install(connection.clone());
                    state.addr = addr;
                }
            }
            inner.serve(connection, entry.name.clone());
        });
    }
}

async fn serve_connection(
    connection: quinn::Connection,
    context: Arc<StreamContext>,
    inner: Weak<Inner>,
) {
    let reason = loop {
        tokio::select! {
            bi = connection.accept_bi() => match bi {
                Ok((send, recv)) => {
                    let context = context.clone();
                    tokio::spawn(async move { context.serve_bi(send, recv).await });
                }
                Err(e) => break e,
            },
            uni = connection.accept_uni() => match uni {
                Ok(recv) => {
                    let context = context.clone();
                    tokio::spawn(async move { context.serve_uni(recv).await });
                }
                Err(e) => break e,
            },
        }
    };
    tracing::debug!(peer = %context.peer.name, "connection ended: {reason}");
    if let Some(inner) = inner.upgrade() {
        inner.forget(&context.peer.name, connection.stable_id());
        lock(&inner.served).remove(&connection.stable_id());
    }
}

fn is_live(connection: &quinn::Connection) -> bool {
    connection.close_reason().is_none()
}

type DialResult = Option<Result<quinn::Connection, LinkError>>;

/// A peer known by name: its address and its current connection, if any.
pub(crate) struct Peer {
    pub(crate) name: Arc<str>,
    state: Mutex<PeerState>,
}

struct PeerState {
    addr: SocketAddr,
    connection: Option<quinn::Connection>,
    /// Bumped each time another connection becomes the current one: messages handed to
    /// QUIC on an older generation may be lost without any call failing.
    generation: u64,
    /// Set while a dial is under way; callers arriving meanwhile wait for its result.
    dialing: Option<watch::Receiver<DialResult>>,
}

impl PeerState {
    fn install(&mut self, connection: quinn::Connection) {
        self.connection = Some(connection);
        self.generation += 1;
    }
}

enum Step {
    Wait(watch::Receiver<DialResult>),
    Dial(watch::Sender<DialResult>, SocketAddr),
}

impl Peer {
    pub(crate) fn addr(&self) -> SocketAddr {
        lock(&self.state).addr
    }

    /// The current connection if it is live.
    pub(crate) fn current(&self) -> Option<quinn::Connection> {
        lock(&self.state).connection.clone().filter(is_live)
    }

    /// The generation of the current connection if it is live.
    pub(crate) fn current_generation(&self) -> Option<u64> {
        let state = lock(&self.state);
        state
            .connection
            .as_ref()
            .filter(|c| is_live(c))
            .map(|_| state.generation)
    }

    /// The generation of `connection` if it is still the current one (a connection stays
    /// alive while the caller holds it, so its stable id cannot be reused meanwhile).
    pub(crate) fn generation_of(&self, connection: &quinn::Connection) -> Option<u64> {
        let state = lock(&self.state);
        state
            .connection
            .as_ref()
            .is_some_and(|c| c.stable_id() == connection.stable_id())
            .then_some(state.generation)
    }

    /// The live connection to this peer, dialing if there is none. Concurrent callers share
    /// one dial and its result.
    pub(crate) async fn connection(
        &self,
        inner: &Arc<Inner>,
    ) -> Result<quinn::Connection, LinkError> {
        loop {
            let step = {
                let mut state = lock(&self.state);
                if let Some(connection) = state.connection.as_ref().filter(|c| is_live(c)) {
                    return Ok(connection.clone());
                }
                match &state.dialing {
                    Some(dialing) => Step::Wait(dialing.clone()),
                    None => {
                        let (result, dialing) = watch::channel(None);
                        state.dialing = Some(dialing);
                        Step::Dial(result, state.addr)
                    }
                }
            };
            match step {
                Step::Wait(mut dialing) => {
                    let outcome = dialing
                        .wait_for(Option::is_some)
                        .await
                        .map(|result| result.clone());
                    match outcome {
                        Ok(Some(result)) => return result,
                        Ok(None) => {}
                        Err(_) => {
                            // The dialing caller was cancelled: clear its mark and try again.
                            let mut state = lock(&self.state);
                            if state
                                .dialing
                                .as_ref()
                                .is_some_and(|d| d.same_channel(&dialing))
                            {
                                state.dialing = None;
                            }
                        }
                    }
                }
                Step::Dial(result_tx, addr) => {
                    let result = inner.dial(&self.name, addr).await;
                    {
                        let mut state = lock(&self.state);
                        state.dialing = None;
                        if let Ok(connection) = &result {
                            state.install(connection.clone());
                        }
                    }
                    result_tx.send_replace(Some(result.clone()));
                    return result;
                }
            }
        }
    }

    /// Closes the current connection, if any.
    pub(crate) fn disconnect(&self, reason: &str) {
        if let Some(connection) = lock(&self.state).connection.take() {
            connection.close(codes::CLOSED, reason.as_bytes());
        }
    }
}
