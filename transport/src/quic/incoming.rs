//! Work arriving from peers: requests to answer, one-way messages, and objects.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::channel::{ChannelId, ChannelReader, GiveUps, Ids};
use super::copies::{Accepted, Requests, Routes};

use bytes::Bytes;
use rustls_pki_types::CertificateDer;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

use super::codes;
use super::error::LinkError;
use super::frame::{FrameError, StreamKind};
use super::service::Service;
use super::stream_io::{PeerRef, error_reply_frame, ok_reply_frame};
use super::wire::{DecodeLimits, DecodedStream, ObjectHead, Reply, decode_stream};
use crate::sync::lock;

/// One unit of work from a peer, whichever side dialed the connection.
#[derive(Debug)]
pub enum Incoming {
    /// A request waiting for its answer.
    Request(IncomingRequest),
    /// A message of a peer's ordered [channel](super::channel), in order after the earlier
    /// messages of the same channel.
    Message(IncomingMessage),
    /// An object whose header has arrived; its payload is read with
    /// [`IncomingObject::receive`].
    Object(IncomingObject),
    /// A peer's channel ended (its connection closed, the peer abandoned it, or it broke):
    /// nothing more comes from it, and what the peer sent on it after the last
    /// [`Message`](Self::Message) is lost. Comes after the channel's last message.
    ChannelEnded(ChannelEnd),
}

impl Incoming {
    /// The name of the peer this came from.
    pub fn peer(&self) -> &str {
        match self {
            Self::Request(r) => r.peer(),
            Self::Message(m) => m.peer(),
            Self::Object(o) => o.peer(),
            Self::ChannelEnded(end) => end.peer(),
        }
    }

    /// The service a request or object is for, as its sender named it (see [`Service`]): an
    /// endpoint serving several protocols routes by it. `None` for a channel's messages and
    /// ends (a peer's one channel carries one protocol's messages).
    pub fn service(&self) -> Option<Service> {
        match self {
            Self::Request(r) => Some(r.service()),
            Self::Object(o) => Some(o.service()),
            Self::Message(_) | Self::ChannelEnded(_) => None,
        }
    }

    /// The leaf certificate the peer presented on the connection this came over, verified by
    /// the handshake; for applications that grant rights by what a certificate says.
    pub fn peer_certificate(&self) -> Option<&PeerCertificate> {
        match self {
            Self::Request(r) => r.peer_certificate(),
            Self::Message(m) => m.peer_certificate(),
            Self::Object(o) => o.peer_certificate(),
            // The end of a channel carries nothing to authorize.
            Self::ChannelEnded(_) => None,
        }
    }
}

/// A peer's leaf certificate, shared by everything that came over one connection (comparing
/// two with [`Arc::ptr_eq`] tells cheaply whether they came over the same connection's
/// handshake).
pub type PeerCertificate = Arc<CertificateDer<'static>>;

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, LinkError> {
    postcard::from_bytes(bytes).map_err(|source| LinkError::Decode { what, source })
}

/// The sending half of a bidirectional stream, owed one reply.
///
/// Dropped without a reply, it resets the stream with [`codes::NO_REPLY`], so the requester
/// learns at once that no answer will come.
#[derive(Debug)]
struct Responder {
    send: Option<SendHalf>,
    peer: PeerRef,
    max_frame_len: u32,
}

/// The half of a request's stream its answer goes on.
#[derive(Debug)]
enum SendHalf {
    /// The stream's, at hand.
    Ready(quinn::SendStream),
    /// Coming with the stream: the request was served from its copy
    /// ([`copies`](super::copies)) before the stream (or its bytes) arrived. Dropped
    /// unanswered, the stream is reset where it arrives ([`Accepted::Orphaned`]).
    Pending(oneshot::Receiver<quinn::SendStream>),
}

impl Responder {
    async fn send(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        let mut send = match self.send.take() {
            Some(SendHalf::Ready(send)) => send,
            Some(SendHalf::Pending(coming)) => coming.await.map_err(|_| {
                // The connection ended before the request's stream arrived.
                LinkError::ChannelClosed {
                    peer: self.peer.name.to_string(),
                    reason: "the request's stream never arrived".into(),
                }
            })?,
            None => return Ok(()), // Already answered (only reachable through a drop-time path).
        };
        self.peer.write_all(&mut send, frame).await?;
        // Finishing cannot fail on a stream we have not finished or reset before.
        let _ = send.finish();
        Ok(())
    }

    async fn ok<T: Serialize + ?Sized>(mut self, value: &T) -> Result<(), LinkError> {
        match ok_reply_frame(value, self.max_frame_len) {
            Ok(frame) => self.send(&frame).await,
            Err(e) => {
                let text = format!("the answer cannot be sent: {e}");
                let frame = error_reply_frame(Reply::AppError(&text), self.max_frame_len);
                self.send(&frame).await?;
                Err(e)
            }
        }
    }

    async fn error(mut self, reply: Reply<'_>) -> Result<(), LinkError> {
        let frame = error_reply_frame(reply, self.max_frame_len);
        self.send(&frame).await
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        // A pending send half is reset where it arrives, when it finds this gone.
        if let Some(SendHalf::Ready(mut send)) = self.send.take() {
            let _ = send.reset(codes::NO_REPLY);
        }
    }
}

/// A request from a peer. Decode it, then answer with [`respond`](Self::respond) or
/// [`respond_err`](Self::respond_err); dropping it unanswered resets the stream.
#[derive(Debug)]
pub struct IncomingRequest {
    service: Service,
    body: Vec<u8>,
    responder: Responder,
    certificate: Option<PeerCertificate>,
}

impl IncomingRequest {
    /// The node name of the requesting peer.
    pub fn peer(&self) -> &str {
        &self.responder.peer.name
    }

    /// The requesting peer's leaf certificate ([`Incoming::peer_certificate`]).
    pub fn peer_certificate(&self) -> Option<&PeerCertificate> {
        self.certificate.as_ref()
    }

    /// The requesting peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.responder.peer.addr
    }

    /// The service the request is for ([`Link::for_service`](super::Link::for_service) at
    /// the sender).
    pub fn service(&self) -> Service {
        self.service
    }

    /// The request's postcard bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Decodes the request as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, LinkError> {
        decode(&self.body, "request")
    }

    /// Sends the answer.
    pub async fn respond<T: Serialize + ?Sized>(self, answer: &T) -> Result<(), LinkError> {
        self.responder.ok(answer).await
    }

    /// Answers with an error; the requester gets [`LinkError::Remote`] with this message.
    pub async fn respond_err(self, message: &str) -> Result<(), LinkError> {
        self.responder.error(Reply::AppError(message)).await
    }
}

/// A message from a peer's ordered channel.
#[derive(Debug)]
pub struct IncomingMessage {
    peer: PeerRef,
    channel: ChannelId,
    body: bytes::Bytes,
    certificate: Option<PeerCertificate>,
}

impl IncomingMessage {
    pub(crate) fn new(
        peer: PeerRef,
        channel: ChannelId,
        body: bytes::Bytes,
        certificate: Option<PeerCertificate>,
    ) -> Self {
        Self {
            peer,
            channel,
            body,
            certificate,
        }
    }

    /// The name of the sending peer.
    pub fn peer(&self) -> &str {
        &self.peer.name
    }

    /// The sending peer's leaf certificate ([`Incoming::peer_certificate`]).
    pub fn peer_certificate(&self) -> Option<&PeerCertificate> {
        self.certificate.as_ref()
    }

    /// The channel it came on: messages of one channel arrive in the order they were sent.
    pub fn channel(&self) -> ChannelId {
        self.channel
    }

    /// The message's bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The message's bytes, without a copy.
    pub fn into_body(self) -> bytes::Bytes {
        self.body
    }

    /// Decodes the message as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, LinkError> {
        decode(&self.body, "message")
    }
}

/// The end of a peer's channel (see [`Incoming::ChannelEnded`]).
#[derive(Debug)]
pub struct ChannelEnd {
    peer: PeerRef,
    channel: ChannelId,
    reason: LinkError,
}

impl ChannelEnd {
    pub(crate) fn new(peer: PeerRef, channel: ChannelId, reason: LinkError) -> Self {
        Self {
            peer,
            channel,
            reason,
        }
    }

    /// The name of the peer whose channel ended.
    pub fn peer(&self) -> &str {
        &self.peer.name
    }

    /// The channel that ended.
    pub fn channel(&self) -> ChannelId {
        self.channel
    }

    /// Why it ended.
    pub fn reason(&self) -> &LinkError {
        &self.reason
    }
}

/// An object from a peer: the header has arrived, the payload follows on the stream.
///
/// Look at the header, then [`receive`](Self::receive) the payload (or drop the object to
/// refuse it), then answer with [`respond`](Self::respond) or [`respond_err`](Self::respond_err).
/// The sender's flow control waits for `receive`, so a slow consumer slows the sender instead
/// of filling memory.
#[derive(Debug)]
pub struct IncomingObject {
    service: Service,
    header: Vec<u8>,
    len: u64,
    body: Body,
    responder: Responder,
    max_object_size: u64,
    counters: Arc<Counters>,
    certificate: Option<PeerCertificate>,
}

/// Where an [`IncomingObject`]'s payload is.
#[derive(Debug)]
enum Body {
    /// On its stream: `payload` once read. The stream is held until the object is answered,
    /// since dropping it before its end was read would stop the peer's stream.
    Stream {
        stream: quinn::RecvStream,
        payload: Option<Bytes>,
    },
    /// Came whole in the stream's copy (the stream, if it comes, is answered on then).
    Copied(Bytes),
}

impl IncomingObject {
    /// The node name of the sending peer.
    pub fn peer(&self) -> &str {
        &self.responder.peer.name
    }

    /// The sending peer's leaf certificate ([`Incoming::peer_certificate`]).
    pub fn peer_certificate(&self) -> Option<&PeerCertificate> {
        self.certificate.as_ref()
    }

    /// The service the object is for ([`Link::for_service`](super::Link::for_service) at
    /// the sender).
    pub fn service(&self) -> Service {
        self.service
    }

    /// The payload's announced length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The header's postcard bytes.
    pub fn header_bytes(&self) -> &[u8] {
        &self.header
    }

    /// Decodes the application header as `H`.
    pub fn header<H: DeserializeOwned>(&self) -> Result<H, LinkError> {
        decode(&self.header, "object header")
    }

    /// Receives the whole payload, checked against its announced length and checksum.
    ///
    /// On malformed input the stream is stopped, the sender is told why, and the error is
    /// returned; a later call returns the payload again once received.
    pub async fn receive(&mut self) -> Result<Bytes, LinkError> {
        let (stream, read) = match &mut self.body {
            Body::Stream {
                payload: Some(payload),
                ..
            }
            | Body::Copied(payload) => return Ok(payload.clone()),
            Body::Stream { stream, payload } => (stream, payload),
        };
        let peer = self.responder.peer.clone();
        let result = peer
            .read_object(
                stream,
                self.len,
                self.responder.max_frame_len,
                self.max_object_size,
            )
            .await;
        match result {
            Ok(payload) => {
                *read = Some(payload.clone());
                Ok(payload)
            }
            Err(e) => {
                if e.is_peer_fault() {
                    self.counters.protocol_error(&peer, &e);
                    let _ = stream.stop(codes::PROTOCOL_ERROR);
                    let text = e.to_string();
                    let frame =
                        error_reply_frame(Reply::Rejected(&text), self.responder.max_frame_len);
                    let _ = self.responder.send(&frame).await;
                }
                Err(e)
            }
        }
    }

    /// Sends the answer (typically an acknowledgement).
    pub async fn respond<T: Serialize + ?Sized>(self, answer: &T) -> Result<(), LinkError> {
        self.responder.ok(answer).await
    }

    /// Answers with an error; the sender gets [`LinkError::Remote`] with this message.
    pub async fn respond_err(self, message: &str) -> Result<(), LinkError> {
        let Self {
            body, responder, ..
        } = self;
        if let Body::Stream {
            mut stream,
            payload: None,
        } = body
        {
            // Not reading the rest: tell the sender to stop instead of draining it.
            let _ = stream.stop(codes::REFUSED);
        }
        responder.error(Reply::AppError(message)).await
    }
}

/// Counters of an endpoint, shared with its stream tasks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) dialed: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) handshake_failures: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) names_refused: AtomicU64,
    pub(crate) unreachable: AtomicU64,
    pub(crate) tail_probes: AtomicU64,
    pub(crate) copies_sent: AtomicU64,
    pub(crate) copies_delivered: AtomicU64,
    pub(crate) requests_from_copies: AtomicU64,
    pub(crate) objects_from_copies: AtomicU64,
}

impl Counters {
    pub(crate) fn protocol_error(&self, peer: &PeerRef, e: &LinkError) {
        self.protocol_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(peer = %peer.name, addr = %peer.addr, "refused a stream: {e}");
    }

    pub(crate) fn snapshot(&self) -> EndpointStats {
        EndpointStats {
            connections_dialed: self.dialed.load(Ordering::Relaxed),
            connections_accepted: self.accepted.load(Ordering::Relaxed),
            handshake_failures: self.handshake_failures.load(Ordering::Relaxed),
            protocol_errors: self.protocol_errors.load(Ordering::Relaxed),
            names_refused: self.names_refused.load(Ordering::Relaxed),
            unreachable_closed: self.unreachable.load(Ordering::Relaxed),
            tail_probes: self.tail_probes.load(Ordering::Relaxed),
            message_copies_sent: self.copies_sent.load(Ordering::Relaxed),
            messages_from_copies: self.copies_delivered.load(Ordering::Relaxed),
            requests_from_copies: self.requests_from_copies.load(Ordering::Relaxed),
            objects_from_copies: self.objects_from_copies.load(Ordering::Relaxed),
        }
    }
}

/// Counts of what an endpoint has seen since it was bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Connections this endpoint established by dialing.
    pub connections_dialed: u64,
    /// Connections accepted from peers (handshake completed).
    pub connections_accepted: u64,
    /// Incoming connections that failed their handshake (refused certificates, ...).
    pub handshake_failures: u64,
    /// Streams refused because of what the peer sent (oversized, malformed, unknown kind).
    pub protocol_errors: u64,
    /// Connections refused because another live process holds the dialer's name.
    pub names_refused: u64,
    /// Connections closed because their peer was reported unreachable (ICMP) and did not
    /// answer a probe.
    pub unreachable_closed: u64,
    /// Tail probes sent: empty datagrams after a pause in the writes on a connection, so a
    /// lost last packet is found within about a round trip (see
    /// [`LinkConfig::tail_probe`](super::LinkConfig::tail_probe)).
    pub tail_probes: u64,
    /// Copies of channel messages sent with tail probes (see
    /// [`LinkConfig::message_copies`](super::LinkConfig::message_copies)).
    pub message_copies_sent: u64,
    /// Peers' channel messages delivered from their copy, ahead of their stream (whose packet
    /// was lost, or late).
    pub messages_from_copies: u64,
    /// Peers' requests served from their copy, ahead of their stream.
    pub requests_from_copies: u64,
    /// Peers' small objects taken from their copy, ahead of their stream (see
    /// [`LinkConfig::message_copies`](super::LinkConfig::message_copies)).
    pub objects_from_copies: u64,
}

/// What a stream task needs to turn a peer's stream into [`Incoming`] work.
#[derive(Debug)]
pub(crate) struct StreamContext {
    pub(crate) peer: PeerRef,
    pub(crate) max_frame_len: u32,
    pub(crate) max_object_size: u64,
    pub(crate) max_message_len: u32,
    /// [`LinkConfig::channel_window`](super::LinkConfig::channel_window), per channel.
    pub(crate) channel_window: usize,
    pub(crate) queue: mpsc::Sender<Incoming>,
    pub(crate) counters: Arc<Counters>,
    /// The peer's leaf certificate, handed out with everything that comes over the connection.
    pub(crate) certificate: Option<PeerCertificate>,
    pub(crate) ids: Arc<Ids>,
    /// The switches that give up the peers' channels being read.
    pub(crate) give_ups: Arc<GiveUps>,
    /// The peer's channels on this connection, by stream id, for the copies of their
    /// messages that come in datagrams.
    pub(crate) channels: Routes<ChannelReader>,
    /// The peer's request streams on this connection, between their copies and themselves.
    pub(crate) requests: Mutex<Requests<quinn::SendStream>>,
    /// Copies being delivered now, at most [`MAX_COPY_TASKS`]: one beyond is dropped (a copy
    /// is only ever a second chance), so a peer's datagrams cannot pile up tasks.
    pub(crate) copy_tasks: Arc<tokio::sync::Semaphore>,
}

/// Copies a connection delivers at once (each waits for its channel's turn, or for room in
/// the endpoint's queue).
pub(crate) const MAX_COPY_TASKS: usize = 64;

impl StreamContext {
    /// A peer opened bidirectional stream `send`/`recv`: read, unless its request was served
    /// from a copy already (the copy's answer takes the send half).
    pub(crate) fn accept_bi(self: &Arc<Self>, send: quinn::SendStream, recv: quinn::RecvStream) {
        let id = u64::from(recv.id());
        let accepted = lock(&self.requests).accepted(id, send);
        match accepted {
            // Dropping the receive half tells the peer to stop sending what it still would.
            Accepted::Copied => drop(recv),
            Accepted::Orphaned(mut send) => {
                let _ = send.reset(codes::NO_REPLY);
                drop(recv);
            }
            Accepted::Read(send, taken) => {
                let context = self.clone();
                tokio::spawn(async move { context.serve_bi(id, send, recv, taken).await });
            }
        }
    }

    /// A copy of request stream `stream` came (its stream's opening bytes): served from it if
    /// the stream has not brought it yet.
    pub(crate) async fn request_copied(&self, stream: u64, opening: &[u8]) {
        // Decoded by the rules the stream's own reader applies (kind, service, one frame,
        // nothing after it).
        let limits = DecodeLimits {
            max_frame_len: self.max_frame_len,
            max_object_size: self.max_object_size,
            max_message_len: self.max_message_len,
        };
        let decoded = match decode_stream(opening, limits) {
            Ok(decoded @ (DecodedStream::Request { .. } | DecodedStream::Object { .. })) => decoded,
            // Anything else, or malformed: the stream itself is the referee.
            _ => return,
        };
        let Some(coming) = lock(&self.requests).copied(stream) else {
            return;
        };
        let responder = Responder {
            send: Some(SendHalf::Pending(coming)),
            peer: self.peer.clone(),
            max_frame_len: self.max_frame_len,
        };
        let incoming = match decoded {
            DecodedStream::Object {
                service,
                header,
                payload,
            } => {
                self.counters
                    .objects_from_copies
                    .fetch_add(1, Ordering::Relaxed);
                Incoming::Object(IncomingObject {
                    service,
                    header,
                    len: payload.len() as u64,
                    body: Body::Copied(payload),
                    responder,
                    max_object_size: self.max_object_size,
                    counters: self.counters.clone(),
                    certificate: self.certificate.clone(),
                })
            }
            DecodedStream::Request { service, body } => {
                self.counters
                    .requests_from_copies
                    .fetch_add(1, Ordering::Relaxed);
                Incoming::Request(IncomingRequest {
                    service,
                    body,
                    responder,
                    certificate: self.certificate.clone(),
                })
            }
            DecodedStream::Channel(_) | DecodedStream::Hello(_) => return,
        };
        let _ = self.queue.send(incoming).await;
    }

    /// Reads the start of bidirectional stream `id` and queues it as work, or refuses it;
    /// unless a copy of its request takes it over first (`taken`: the send half goes there).
    async fn serve_bi(
        &self,
        id: u64,
        send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        mut taken: oneshot::Receiver<oneshot::Sender<quinn::SendStream>>,
    ) {
        let start = tokio::select! {
            start = self.read_bi_start(&mut recv) => start,
            Ok(copy) = &mut taken => {
                give_to_copy(copy, send);
                return;
            }
        };
        if !lock(&self.requests).read(id) {
            // A copy took it over as the read finished: the copy answers.
            if let Ok(copy) = taken.await {
                give_to_copy(copy, send);
            }
            return;
        }
        let mut responder = Responder {
            send: Some(SendHalf::Ready(send)),
            peer: self.peer.clone(),
            max_frame_len: self.max_frame_len,
        };
        let incoming = match start {
            Ok(BiStart::Request { service, body }) => Incoming::Request(IncomingRequest {
                service,
                body,
                responder,
                certificate: self.certificate.clone(),
            }),
            Ok(BiStart::Object {
                service,
                header,
                len,
            }) => Incoming::Object(IncomingObject {
                service,
                header,
                len,
                body: Body::Stream {
                    stream: recv,
                    payload: None,
                },
                responder,
                max_object_size: self.max_object_size,
                counters: self.counters.clone(),
                certificate: self.certificate.clone(),
            }),
            Err(e) => {
                if e.is_peer_fault() {
                    self.counters.protocol_error(&self.peer, &e);
                    let _ = recv.stop(codes::PROTOCOL_ERROR);
                    let text = e.to_string();
                    let frame = error_reply_frame(Reply::Rejected(&text), self.max_frame_len);
                    let _ = responder.send(&frame).await;
                } else {
                    tracing::debug!(peer = %self.peer.name, "stream ended before its first frame: {e}");
                }
                return;
            }
        };
        // Fails only when the endpoint is gone; dropping the work resets the stream.
        let _ = self.queue.send(incoming).await;
    }

    async fn read_bi_start(&self, recv: &mut quinn::RecvStream) -> Result<BiStart, LinkError> {
        match self.peer.read_kind(recv).await? {
            StreamKind::Request => {
                let service = self.peer.read_service(recv).await?;
                let body = self
                    .peer
                    .read_frame(recv, self.max_frame_len, "request")
                    .await?;
                Ok(BiStart::Request { service, body })
            }
            StreamKind::Object => {
                let service = self.peer.read_service(recv).await?;
                let body = self
                    .peer
                    .read_frame(recv, self.max_frame_len, "object head")
                    .await?;
                let head = ObjectHead::decode(&body)?;
                if head.len > self.max_object_size {
                    return Err(FrameError::ObjectTooLarge {
                        len: head.len,
                        max: self.max_object_size,
                    }
                    .into());
                }
                Ok(BiStart::Object {
                    service,
                    header: head.header.to_vec(),
                    len: head.len,
                })
            }
            kind => Err(LinkError::UnknownStreamKind(kind.as_byte())),
        }
    }
}

/// Hands a request stream's send half to the copy that serves the request; resets it if the
/// copy's answer is gone (its work dropped).
fn give_to_copy(copy: oneshot::Sender<quinn::SendStream>, send: quinn::SendStream) {
    if let Err(mut send) = copy.send(send) {
        let _ = send.reset(codes::NO_REPLY);
    }
}

enum BiStart {
    Request {
        service: Service,
        body: Vec<u8>,
    },
    Object {
        service: Service,
        header: Vec<u8>,
        len: u64,
    },
}
