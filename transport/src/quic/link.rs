//! [`Link`]: a handle on the connection to one named peer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::channel::Channel;
use super::copies::Of;
use super::endpoint::Inner;
use super::error::LinkError;
use super::frame::StreamKind;
use super::peer::Peer;
use super::service::Service;
use super::stream_io::{PeerRef, message_frame, service_opening};
use super::wire::{ObjectHead, Reply};

/// The link to one peer. Cheap to clone; every clone and every caller shares the endpoint's
/// one connection to that peer. Requests and objects each open their own stream, so a slow
/// answer never holds up another; messages go in order on the peer's [`Channel`].
///
/// Its requests and objects are for one [`Service`] of the peer's ([`Service::DEFAULT`]
/// unless [`for_service`](Self::for_service) says otherwise); its channel is the peer's one
/// channel, whatever the service.
///
/// When the connection drops, the next call dials again.
#[derive(Clone)]
pub struct Link {
    inner: Arc<Inner>,
    peer: Arc<Peer>,
    service: Service,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("peer", &self.peer.name)
            .field("addr", &self.peer.addr())
            .field("session", &self.session())
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Link {
    pub(crate) fn new(inner: Arc<Inner>, peer: Arc<Peer>) -> Self {
        Self {
            inner,
            peer,
            service: Service::DEFAULT,
        }
    }

    /// This link, with its requests and objects for `service` of the peer's: the receiver
    /// routes them by it ([`Incoming::service`](super::Incoming::service)), never by what
    /// their bytes look like. The connection is the same.
    ///
    /// ```no_run
    /// # async fn demo(endpoint: replicast_transport::quic::Endpoint) -> Result<(), replicast_transport::quic::LinkError> {
    /// use replicast_transport::quic::Service;
    ///
    /// const BACKUP: Service = Service::new(7);
    /// let storage = endpoint.link("storage-1", "127.0.0.1:7001".parse().unwrap()).await?;
    /// let backup = storage.clone().for_service(BACKUP);
    /// let pages: u64 = backup.request(&"pages").await?;
    /// # Ok(()) }
    /// ```
    pub fn for_service(self, service: Service) -> Self {
        Self { service, ..self }
    }

    /// The service its requests and objects are for.
    pub fn service(&self) -> Service {
        self.service
    }

    /// The peer's node name.
    pub fn peer(&self) -> &str {
        &self.peer.name
    }

    /// The peer's address: where it is dialed, or else where its connection comes from.
    pub fn remote_address(&self) -> SocketAddr {
        self.peer
            .addr()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The current round-trip time estimate, if connected.
    pub fn rtt(&self) -> Option<Duration> {
        self.peer.current().map(|c| c.connection.rtt())
    }

    /// QUIC statistics of the current connection (path MTU, congestion window, lost packets,
    /// ...), if connected.
    pub fn connection_stats(&self) -> Option<quinn::ConnectionStats> {
        self.peer.current().map(|c| c.connection.stats())
    }

    /// The leaf certificate the peer presented on the current connection, if connected: for
    /// a caller that decides by what the certificate grants (e.g. its roles) before handing
    /// the peer anything.
    pub fn peer_certificate(&self) -> Option<super::PeerCertificate> {
        self.peer
            .current()
            .and_then(|current| super::identity::peer_certificate(&current.connection))
    }

    /// Whether a live connection to the peer exists right now.
    pub fn is_connected(&self) -> bool {
        self.peer.current().is_some()
    }

    /// The session of the process behind the current connection, if connected: it changes
    /// when the peer's process is another one (a restart).
    pub fn session(&self) -> Option<u64> {
        self.peer.current().map(|c| c.session)
    }

    /// The ordered message channel to the peer: the open one, or a new one (see
    /// [`Endpoint::channel`](super::Endpoint::channel)).
    pub fn channel(&self) -> Channel {
        self.peer.channel(&self.inner)
    }

    /// Closes the current connection (streams in flight fail); the next call dials again.
    pub fn disconnect(&self, reason: &str) {
        self.peer.disconnect(reason);
    }

    async fn connection(&self) -> Result<(quinn::Connection, PeerRef), LinkError> {
        let connection = self.peer.connection(&self.inner).await?;
        let peer = PeerRef {
            name: self.peer.name.clone(),
            addr: connection.remote_address(),
            probe: self.inner.tail_probe(&connection),
        };
        Ok((connection, peer))
    }

    /// Sends `request` and waits for the peer's answer, bounded by
    /// [`LinkConfig::request_timeout`](super::LinkConfig::request_timeout).
    ///
    /// The peer's error answer arrives as [`LinkError::Remote`].
    pub async fn request<Q, A>(&self, request: &Q) -> Result<A, LinkError>
    where
        Q: Serialize + ?Sized,
        A: DeserializeOwned,
    {
        let max_len = self.inner.link.max_frame_len;
        let opening = service_opening(StreamKind::Request, self.service);
        let frame = Bytes::from(message_frame(&opening, request, max_len, "request")?);
        let exchange = async {
            let (connection, peer) = self.connection().await?;
            let (mut send, mut recv) = connection
                .open_bi()
                .await
                .map_err(|e| LinkError::from_connection(&peer.name, peer.addr, e))?;
            peer.write_all(&mut send, &frame).await?;
            // The tail probe after this write carries a copy of the request (if it is small
            // and copies are on): the peer serves it from the copy if this packet is lost.
            peer.probe
                .wrote_copied(u64::from(send.id()), Of::Request, &frame);
            let _ = send.finish();
            self.read_answer(&peer, &mut recv).await
        };
        match self.inner.link.request_timeout {
            Some(after) => {
                tokio::time::timeout(after, exchange)
                    .await
                    .map_err(|_| LinkError::Timeout {
                        what: "request",
                        after,
                    })?
            }
            None => exchange.await,
        }
    }

    /// Sends a one-way message (postcard) on the peer's [`Channel`], after the messages sent
    /// on it before. It returns once the message is queued; the channel delivers it in order
    /// unless it breaks first, which [`Channel::closed`] reports (and the next message opens
    /// a new channel).
    pub async fn send_message<M: Serialize + ?Sized>(&self, message: &M) -> Result<(), LinkError> {
        let body = postcard::to_stdvec(message).map_err(|source| LinkError::Encode {
            what: "message",
            source,
        })?;
        self.channel().send(Bytes::from(body)).await
    }

    /// Sends an object: `header` (postcard, for the receiving application) and `payload`,
    /// streamed in chunks of [`LinkConfig::chunk_size`](super::LinkConfig::chunk_size) with
    /// QUIC flow control as backpressure, compressed per chunk where that pays. Returns the
    /// receiver's answer (its acknowledgement).
    ///
    /// The payload is not copied: raw chunks are slices of it. No timeout applies beyond the
    /// connection's idle timeout, since a large object may legitimately take long.
    pub async fn send_object<H, A>(&self, header: &H, payload: Bytes) -> Result<A, LinkError>
    where
        H: Serialize + ?Sized,
        A: DeserializeOwned,
    {
        self.send_object_parts(header, vec![payload]).await
    }

    /// Sends an object whose payload is `parts` one after the other, as
    /// [`send_object`](Self::send_object) does one `Bytes`: the receiver gets the
    /// concatenation, and nothing is copied to make it (each part is cut into chunks of its
    /// own), so a batch of buffers the caller holds costs no gathering copy.
    ///
    /// ```no_run
    /// # async fn demo(link: replicast_transport::quic::Link) -> Result<(), replicast_transport::quic::LinkError> {
    /// use bytes::Bytes;
    ///
    /// let parts = vec![Bytes::from_static(b"first "), Bytes::from_static(b"second")];
    /// // The receiver's payload is b"first second".
    /// let ack: u64 = link.send_object_parts(&"two", parts).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_object_parts<H, A>(
        &self,
        header: &H,
        parts: Vec<Bytes>,
    ) -> Result<A, LinkError>
    where
        H: Serialize + ?Sized,
        A: DeserializeOwned,
    {
        let config = &self.inner.link;
        let header = postcard::to_stdvec(header).map_err(|source| LinkError::Encode {
            what: "object header",
            source,
        })?;
        let head = ObjectHead {
            len: parts.iter().map(|part| part.len() as u64).sum(),
            header: &header,
        };
        let frame = message_frame(
            &service_opening(StreamKind::Object, self.service),
            &head,
            config.max_frame_len,
            "object head",
        )?;
        let (connection, peer) = self.connection().await?;
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| LinkError::from_connection(&peer.name, peer.addr, e))?;
        let sent = async {
            peer.write_all(&mut send, &frame).await?;
            // A small object's whole stream rides in the tail probe after it, as a request
            // does: the peer takes the object from the copy if a packet of it is lost.
            let copy = peer.probe.copies().then(|| BytesMut::from(&frame[..]));
            let copy = peer
                .write_object(&mut send, parts, config, &self.peer.compressibility, copy)
                .await?;
            if let Some(copy) = copy {
                peer.probe
                    .wrote_copied(u64::from(send.id()), Of::Request, &copy);
            }
            let _ = send.finish();
            Ok::<_, LinkError>(())
        }
        .await;
        match sent {
            Ok(()) => self.read_answer(&peer, &mut recv).await,
            // The receiver stopped the stream: its reply says why, if it sent one.
            Err(LinkError::StreamReset { .. }) => match self.read_answer(&peer, &mut recv).await {
                Err(LinkError::StreamReset { peer, code }) => {
                    Err(LinkError::StreamReset { peer, code })
                }
                other => other,
            },
            Err(e) => Err(e),
        }
    }

    async fn read_answer<A: DeserializeOwned>(
        &self,
        peer: &PeerRef,
        recv: &mut quinn::RecvStream,
    ) -> Result<A, LinkError> {
        let body = peer
            .read_frame(recv, self.inner.link.max_frame_len, "answer")
            .await?;
        match Reply::decode(&body)? {
            Reply::Ok(answer) => postcard::from_bytes(answer).map_err(|source| LinkError::Decode {
                what: "answer",
                source,
            }),
            Reply::AppError(message) => Err(LinkError::Remote {
                peer: peer.name.to_string(),
                message: message.to_owned(),
            }),
            Reply::Rejected(message) => Err(LinkError::Rejected {
                peer: peer.name.to_string(),
                message: message.to_owned(),
            }),
        }
    }
}
