//! [`Endpoint`]: one UDP socket that accepts and dials, and the table of peers it knows.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use crate::sync::lock;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};

use super::channel::{Channel, ChannelId, GiveUps, Ids, copy_arrived, read_channel};
use super::codes;
use super::config::{ConfigError, EndpointConfig, LinkConfig};
use super::copies::{Requests, Routes};
use super::error::LinkError;
use super::frame::StreamKind;
use super::hello::{Hello, Welcome, session_peer_name};
#[cfg(target_os = "linux")]
use super::icmp;
use super::identity::{peer_certificate, peer_name};
use super::incoming::{Counters, EndpointStats, Incoming, MAX_COPY_TASKS, StreamContext};
use super::link::Link;
use super::peer::{Admission, Established, Peer};
use super::stream_io::{PeerRef, error_reply_frame, message_frame, ok_reply_frame};
use super::tail_probe::TailProbe;
use super::wire::Reply;

/// A QUIC endpoint with mutual TLS: it accepts connections from peers and dials them, on one
/// UDP socket, and keeps one connection per peer that every caller shares.
///
/// Every connection opens with a hello (see [`hello`](super::hello)): each endpoint is one
/// *session* of its certificate's name, and a peer whose name is shared
/// ([`LinkConfig::shared_name`]) is known as one peer per session, `NAME#SESSION`.
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
    /// This process's session: peers tell it apart from other processes with the same name.
    session: u64,
    peers: Mutex<HashMap<Arc<str>, Arc<Peer>>>,
    queue: mpsc::Sender<Incoming>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Incoming>>,
    closed: watch::Sender<bool>,
    counters: Arc<Counters>,
    /// Every connection being served, by stable id (a peer may have two for a while, after
    /// crossing dials), so that [`Endpoint::close_connections`] reaches them all, with the
    /// tail probe its writes tell.
    served: Mutex<HashMap<usize, (quinn::Connection, TailProbe)>>,
    pub(crate) ids: Arc<Ids>,
    /// The switches that give up the peers' channels being read.
    give_ups: Arc<GiveUps>,
    /// Destinations the socket found unreachable (ICMP), where the platform reports them.
    unreachable: Option<broadcast::Sender<SocketAddr>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.quinn.close(codes::CLOSED, b"endpoint dropped");
    }
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
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd as _;
            icmp::enable_error_queue(&socket);
            let fd = socket.as_raw_fd();
            let inner =
                quinn::Runtime::wrap_udp_socket(&*runtime, socket.into()).map_err(bind_error)?;
            let (hints, _) = broadcast::channel(icmp::HINTS);
            let socket = icmp::IcmpSocket::new(fd, inner, hints.clone());
            Self::start(config, socket, Some(hints))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let socket =
                quinn::Runtime::wrap_udp_socket(&*runtime, socket.into()).map_err(bind_error)?;
            Self::start(config, socket, None)
        }
    }

    /// Starts an endpoint on a socket the caller provides, for example one wrapped by
    /// the `netem` module (feature `netem`) to emulate a WAN. `config.listen` is only used in messages.
    pub fn bind_with_socket(
        config: EndpointConfig,
        socket: Arc<dyn quinn::AsyncUdpSocket>,
    ) -> Result<Self, LinkError> {
        Self::start(config, socket, None)
    }

    /// Starts the endpoint on `socket`; `unreachable` carries the destinations the socket
    /// found unreachable (ICMP), where it reports them.
    fn start(
        config: EndpointConfig,
        socket: Arc<dyn quinn::AsyncUdpSocket>,
        unreachable: Option<broadcast::Sender<SocketAddr>>,
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
            session: rand::random(),
            peers: Mutex::new(HashMap::new()),
            queue,
            incoming: tokio::sync::Mutex::new(incoming),
            closed: watch::Sender::new(false),
            counters: Arc::default(),
            served: Mutex::new(HashMap::new()),
            ids: Arc::default(),
            give_ups: Arc::default(),
            unreachable: unreachable.clone(),
        });
        tokio::spawn(accept_connections(
            inner.quinn.clone(),
            Arc::downgrade(&inner),
        ));
        if let Some(unreachable) = unreachable {
            tokio::spawn(probe_unreachable(
                Arc::downgrade(&inner),
                unreachable.subscribe(),
            ));
        }
        Ok(Self { inner })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.quinn.local_addr()
    }

    /// This endpoint's session: a random number drawn at bind, told to every peer in the
    /// hello, so that peers tell this process apart from another one with the same name.
    pub fn session(&self) -> u64 {
        self.inner.session
    }

    /// The link to `peer` at `addr`: the existing connection if there is one (dialed or
    /// accepted), otherwise a new one. Concurrent calls for the same peer share one dial.
    ///
    /// The peer must present a certificate for the node name `peer`, signed by the CA the
    /// client TLS configuration trusts, and accept this endpoint's hello
    /// ([`LinkError::NameInUse`] when another process holds this endpoint's name there).
    pub async fn link(&self, peer: &str, addr: SocketAddr) -> Result<Link, LinkError> {
        let entry = self.inner.peer_entry(peer, Some(addr));
        entry.connection(&self.inner).await?;
        Ok(Link::new(self.inner.clone(), entry))
    }

    /// The link to a peer this endpoint already knows (it dialed it, or the peer connected),
    /// without connecting. Calls on it reconnect to the last known address when needed.
    pub fn known_link(&self, peer: &str) -> Option<Link> {
        let entry = lock(&self.inner.peers).get(peer).cloned()?;
        Some(Link::new(self.inner.clone(), entry))
    }

    /// The ordered message [`Channel`] to `peer`: the open one if there is one, otherwise a
    /// new one that connects in the background (dialing `addr`, or the last known address of
    /// the peer, or using the connection the peer made). Never waits: a channel that cannot
    /// connect closes with the reason, and messages queued on it are dropped with it.
    pub fn channel(&self, peer: &str, addr: Option<SocketAddr>) -> Channel {
        let entry = match addr {
            Some(addr) => self.inner.peer_entry(peer, Some(addr)),
            None => match lock(&self.inner.peers).get(peer).cloned() {
                Some(entry) => entry,
                None => {
                    return Channel::failed(
                        &self.inner,
                        peer,
                        LinkError::UnknownPeer {
                            peer: peer.to_owned(),
                        },
                    );
                }
            },
        };
        entry.channel(&self.inner)
    }

    /// The names of the peers with a live connection now.
    pub fn connected_peers(&self) -> Vec<String> {
        let peers: Vec<Arc<Peer>> = lock(&self.inner.peers).values().cloned().collect();
        peers
            .into_iter()
            .filter(|peer| peer.current().is_some())
            .map(|peer| peer.name.to_string())
            .collect()
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

    /// Gives up the peer's channel `id` (one this endpoint reads): its stream is stopped, so
    /// the peer's [`Channel`] closes and its next message opens a new channel; this side
    /// gets the channel's [`Incoming::ChannelEnded`] and nothing more from it. For a node that
    /// counts the peer as lost and drops what still comes on its old channel: without this,
    /// a peer that noticed nothing would go on sending there, unheard. Returns whether the
    /// channel was still being read.
    pub fn give_up_channel(&self, id: ChannelId) -> bool {
        self.inner.give_ups.give_up(id)
    }

    /// Closes every connection whose peer presented a certificate `condemned` says yes to
    /// (for example one revoked since the handshake), with `reason`, and returns the peers'
    /// names. Their streams fail; a later dial to or from them goes through a new handshake.
    pub fn close_connections(
        &self,
        reason: &str,
        condemned: impl Fn(&str, &rustls_pki_types::CertificateDer<'_>) -> bool,
    ) -> Vec<String> {
        let connections: Vec<quinn::Connection> = lock(&self.inner.served)
            .values()
            .map(|(connection, _)| connection.clone())
            .collect();
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
    /// The entry of `name`, created if missing; `addr` (when given) becomes its address.
    pub(crate) fn peer_entry(&self, name: &str, addr: Option<SocketAddr>) -> Arc<Peer> {
        let mut peers = lock(&self.peers);
        let entry = peers
            .entry(Arc::from(name))
            .or_insert_with_key(|name| Arc::new(Peer::new(name.clone(), addr)));
        if let Some(addr) = addr {
            entry.set_addr(addr);
        }
        entry.clone()
    }

    pub(crate) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Dials `peer` at `addr` and introduces this endpoint: the connection is usable once the
    /// peer welcomed the hello.
    pub(crate) async fn dial(
        self: &Arc<Self>,
        peer: &Arc<str>,
        addr: SocketAddr,
    ) -> Result<Established, LinkError> {
        if self.is_closed() {
            return Err(LinkError::EndpointClosed);
        }
        let connect_error = |reason: String| LinkError::Connect {
            peer: peer.to_string(),
            addr,
            reason,
        };
        let server_name = super::hello::node_name(peer);
        let connecting = self
            .quinn
            .connect_with(self.client.clone(), addr, server_name)
            .map_err(|e| connect_error(e.to_string()))?;
        let timeout = self.link.connect_timeout;
        let mut unreachable = self.unreachable.as_ref().map(broadcast::Sender::subscribe);
        let refused = async {
            let Some(hints) = unreachable.as_mut() else {
                return std::future::pending().await;
            };
            loop {
                match hints.recv().await {
                    Ok(hint) if hint == addr => return,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        return std::future::pending().await;
                    }
                }
            }
        };
        let handshake = async {
            let connection = match connecting.await {
                Ok(connection) => connection,
                Err(quinn::ConnectionError::TimedOut) => {
                    return Err(connect_error("no answer (QUIC idle timeout)".into()));
                }
                Err(e) => return Err(LinkError::from_connection(peer, addr, e)),
            };
            let welcome = self.introduce(&connection, peer).await?;
            Ok((connection, welcome))
        };
        let attempt = async {
            tokio::select! {
                result = handshake => result,
                () = refused => Err(connect_error(
                    "unreachable: nothing listens there (ICMP port unreachable)".into(),
                )),
            }
        };
        let (connection, welcome) = match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(LinkError::Timeout {
                    what: "connect",
                    after: timeout,
                });
            }
        };
        self.counters.dialed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, %addr, session = welcome.session, "connected");
        let established = Established {
            connection,
            session: welcome.session,
            dialed: true,
        };
        self.serve(established.connection.clone(), peer.clone());
        Ok(established)
    }

    /// Sends this endpoint's hello on a new connection and reads the peer's welcome.
    async fn introduce(
        &self,
        connection: &quinn::Connection,
        peer: &str,
    ) -> Result<Welcome, LinkError> {
        let addr = connection.remote_address();
        let peer_ref = PeerRef {
            name: Arc::from(peer),
            addr,
            // Not served yet: the connection's probe starts with `serve`.
            probe: TailProbe::default(),
        };
        let hello = Hello {
            session: self.session,
            shared: self.link.shared_name,
        };
        let frame = message_frame(
            &[StreamKind::Hello.as_byte()],
            &hello,
            self.link.max_frame_len,
            "hello",
        )?;
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| LinkError::from_connection(peer, addr, e))?;
        peer_ref.write_all(&mut send, &frame).await?;
        let _ = send.finish();
        let body = peer_ref
            .read_frame(&mut recv, self.link.max_frame_len, "welcome")
            .await?;
        match Reply::decode(&body)? {
            Reply::Ok(welcome) => Ok(Welcome::decode(welcome)?),
            Reply::AppError(message) | Reply::Rejected(message) => {
                // A refused name is said in the connection's close, right behind this reply
                // (`admit`): report the close's reason, as a dialer that read the close first
                // does, rather than a bare rejection (its callers tell a name in use apart).
                if let Ok(reason) =
                    tokio::time::timeout(CLOSE_AFTER_REFUSAL, connection.closed()).await
                {
                    let error = LinkError::from_connection(peer, addr, reason);
                    if matches!(error, LinkError::NameInUse { .. }) {
                        return Err(error);
                    }
                }
                Err(LinkError::Rejected {
                    peer: peer.to_owned(),
                    message: message.to_owned(),
                })
            }
        }
    }

    /// Serves a peer's streams on `connection` until it closes.
    fn serve(self: &Arc<Self>, connection: quinn::Connection, peer: Arc<str>) {
        let probe = TailProbe::start(
            &connection,
            self.link.tail_probe,
            self.link.message_copies,
            self.counters.clone(),
        );
        let context = Arc::new(StreamContext {
            peer: PeerRef {
                name: peer,
                addr: connection.remote_address(),
                probe: probe.clone(),
            },
            max_frame_len: self.link.max_frame_len,
            max_object_size: self.link.max_object_size,
            max_message_len: self.link.max_message_len,
            channel_window: self.link.channel_window,
            queue: self.queue.clone(),
            counters: self.counters.clone(),
            certificate: peer_certificate(&connection),
            ids: self.ids.clone(),
            give_ups: self.give_ups.clone(),
            channels: Routes::default(),
            // The peer opened this connection (its streams are a client's) unless we did.
            requests: Mutex::new(Requests::new(connection.side() == quinn::Side::Server)),
            copy_tasks: Arc::new(tokio::sync::Semaphore::new(MAX_COPY_TASKS)),
        });
        lock(&self.served).insert(connection.stable_id(), (connection.clone(), probe));
        tokio::spawn(serve_connection(connection, context, Arc::downgrade(self)));
    }

    /// The tail probe of `connection` (a disabled one if it is not served).
    pub(crate) fn tail_probe(&self, connection: &quinn::Connection) -> TailProbe {
        lock(&self.served)
            .get(&connection.stable_id())
            .map(|(_, probe)| probe.clone())
            .unwrap_or_default()
    }

    /// `connection` of `peer` ended: it is no longer the peer's current one, and a session's
    /// entry with nothing left is forgotten (each client process leaves one behind).
    fn forget(&self, peer: &str, connection: &quinn::Connection) {
        let mut peers = lock(&self.peers);
        let Some(entry) = peers.get(peer) else { return };
        if entry.forget(connection) && peer.contains(super::hello::SESSION_SEPARATOR) {
            peers.remove(peer);
        }
    }
}

/// Extra time a probed peer has to answer, beyond three round trips (its acknowledgement may
/// be delayed by up to 25 ms).
const PROBE_SLACK: Duration = Duration::from_millis(50);

/// Takes each unreachable destination as a hint: every current connection to it is probed,
/// and closed (its peer lost) if nothing arrives from it within a few round trips.
async fn probe_unreachable(inner: Weak<Inner>, mut hints: broadcast::Receiver<SocketAddr>) {
    let probing: Arc<Mutex<std::collections::HashSet<usize>>> = Arc::default();
    loop {
        let addr = match hints.recv().await {
            Ok(addr) => addr,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(inner) = inner.upgrade() else { return };
        let connections: Vec<(Arc<str>, quinn::Connection)> = {
            let peers: Vec<Arc<Peer>> = lock(&inner.peers).values().cloned().collect();
            peers
                .into_iter()
                .filter_map(|peer| Some((peer.name.clone(), peer.current()?.connection)))
                .filter(|(_, connection)| connection.remote_address() == addr)
                .collect()
        };
        for (peer, connection) in connections {
            if !lock(&probing).insert(connection.stable_id()) {
                continue; // Already being probed.
            }
            let (probing, counters) = (probing.clone(), inner.counters.clone());
            tokio::spawn(async move {
                let before = connection.stats().udp_rx.datagrams;
                // A live peer acknowledges the datagram; its content is ignored.
                let _ = connection.send_datagram(bytes::Bytes::new());
                tokio::time::sleep(connection.rtt() * 3 + PROBE_SLACK).await;
                if is_live(&connection) && connection.stats().udp_rx.datagrams == before {
                    tracing::info!(%peer, %addr, "unreachable and silent: connection closed");
                    counters.unreachable.fetch_add(1, Ordering::Relaxed);
                    connection.close(codes::PEER_SILENT, b"unreachable (ICMP) and silent");
                }
                lock(&probing).remove(&connection.stable_id());
            });
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
            let wait = inner.link.connect_timeout;
            let (hello, send) = match tokio::time::timeout(
                wait,
                read_hello(&connection, &name, inner.link.max_frame_len),
            )
            .await
            {
                Ok(Ok(hello)) => hello,
                Ok(Err(error)) => {
                    inner
                        .counters
                        .handshake_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(peer = %name, %addr, "no usable hello: {error}");
                    connection.close(codes::PROTOCOL_ERROR, b"no usable hello");
                    return;
                }
                Err(_) => {
                    inner
                        .counters
                        .handshake_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(peer = %name, %addr, "no hello within {wait:?}");
                    connection.close(codes::PROTOCOL_ERROR, b"no hello in time");
                    return;
                }
            };
            admit(&inner, connection, name, hello, send).await;
        });
    }
}

/// Reads the hello that opens an accepted connection (the first stream the dialer opens).
async fn read_hello(
    connection: &quinn::Connection,
    name: &str,
    max_frame_len: u32,
) -> Result<(Hello, quinn::SendStream), LinkError> {
    let addr = connection.remote_address();
    let peer = PeerRef {
        name: Arc::from(name),
        addr,
        // Only reads: the hello's answer is written before the connection is served.
        probe: TailProbe::default(),
    };
    let (send, mut recv) = connection
        .accept_bi()
        .await
        .map_err(|e| LinkError::from_connection(name, addr, e))?;
    match peer.read_kind(&mut recv).await? {
        StreamKind::Hello => {}
        other => return Err(LinkError::UnknownStreamKind(other.as_byte())),
    }
    let body = peer.read_frame(&mut recv, max_frame_len, "hello").await?;
    Ok((Hello::decode(&body)?, send))
}

/// Admits or refuses the session behind an accepted connection (see [`hello`](super::hello)).
async fn admit(
    inner: &Arc<Inner>,
    connection: quinn::Connection,
    name: String,
    hello: Hello,
    mut send: quinn::SendStream,
) {
    let addr = connection.remote_address();
    let key = if hello.shared {
        session_peer_name(&name, hello.session)
    } else {
        name
    };
    let entry = inner.peer_entry(&key, None);
    let established = Established {
        connection: connection.clone(),
        session: hello.session,
        dialed: false,
    };
    match entry.admit(established, addr) {
        Admission::Refused { holder } => {
            inner.counters.names_refused.fetch_add(1, Ordering::Relaxed);
            let reason = format!("{key} is already running at {holder}");
            tracing::warn!(peer = %key, %addr, "refused a second process: {reason}");
            let frame = error_reply_frame(Reply::Rejected(&reason), inner.link.max_frame_len);
            // The refusal travels in the connection's close, which the dialer reads however
            // far it got; the reply is a courtesy for one that reads its stream first.
            let _ = tokio::time::timeout(REFUSAL_WAIT, send.write_all(&frame)).await;
            connection.close(codes::NAME_IN_USE, reason.as_bytes());
        }
        Admission::Admitted { replaced } => {
            inner.counters.accepted.fetch_add(1, Ordering::Relaxed);
            if let Some(old) = replaced {
                tracing::info!(peer = %key, %addr, "the session connected again: its old connection is closed");
                old.close(
                    codes::REPLACED,
                    b"replaced by a new connection of the same session",
                );
            }
            tracing::debug!(peer = %key, %addr, session = hello.session, "accepted");
            inner.serve(connection.clone(), entry.name.clone());
            let welcome = Welcome {
                session: inner.session,
                shared: inner.link.shared_name,
            };
            match ok_reply_frame(&welcome, inner.link.max_frame_len) {
                Ok(frame) => {
                    if send.write_all(&frame).await.is_ok() {
                        let _ = send.finish();
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot encode the welcome"),
            }
        }
    }
}

/// How long a refused dialer is given to read the refusal before its connection closes.
const REFUSAL_WAIT: Duration = Duration::from_millis(100);

/// How long a dialer that read a refusal waits for the connection's close, which says why
/// (the refusing side closes right after its reply, within [`REFUSAL_WAIT`]; a loaded machine
/// may take longer to deliver it).
const CLOSE_AFTER_REFUSAL: Duration = Duration::from_secs(2);

async fn serve_connection(
    connection: quinn::Connection,
    context: Arc<StreamContext>,
    inner: Weak<Inner>,
) {
    let reason = loop {
        tokio::select! {
            bi = connection.accept_bi() => match bi {
                Ok((send, recv)) => context.accept_bi(send, recv),
                Err(e) => break e,
            },
            uni = connection.accept_uni() => match uni {
                Ok(recv) => {
                    let context = context.clone();
                    tokio::spawn(async move { context.serve_uni(recv).await });
                }
                Err(e) => break e,
            },
            // Datagrams are probes of liveness, acknowledged by QUIC, and the tail probes'
            // copies of channel messages (delivered in their own task: a full queue must not
            // hold this loop).
            datagram = connection.read_datagram() => match datagram {
                Ok(datagram) if datagram.is_empty() => {}
                Ok(datagram) => {
                    if let Ok(permit) = context.copy_tasks.clone().try_acquire_owned() {
                        let context = context.clone();
                        tokio::spawn(async move {
                            copy_arrived(&context, datagram).await;
                            drop(permit);
                        });
                    }
                }
                Err(e) => break e,
            },
        }
    };
    tracing::debug!(peer = %context.peer.name, "connection ended: {reason}");
    if let Some(inner) = inner.upgrade() {
        inner.forget(&context.peer.name, &connection);
        lock(&inner.served).remove(&connection.stable_id());
    }
}

impl StreamContext {
    /// Reads a unidirectional stream: a channel, read to its end; anything else is refused.
    pub(crate) async fn serve_uni(self: Arc<Self>, mut recv: quinn::RecvStream) {
        match self.peer.read_kind(&mut recv).await {
            Ok(StreamKind::Channel) => read_channel(self, recv).await,
            Ok(kind) => {
                let error = LinkError::UnknownStreamKind(kind.as_byte());
                self.counters.protocol_error(&self.peer, &error);
                let _ = recv.stop(codes::PROTOCOL_ERROR);
            }
            Err(error) if error.is_peer_fault() => {
                self.counters.protocol_error(&self.peer, &error);
                let _ = recv.stop(codes::PROTOCOL_ERROR);
            }
            Err(error) => {
                tracing::debug!(peer = %self.peer.name, "stream ended before its kind: {error}");
            }
        }
    }
}

pub(crate) fn is_live(connection: &quinn::Connection) -> bool {
    connection.close_reason().is_none()
}
