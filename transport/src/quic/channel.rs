//! [`Channel`]: the ordered, reliable message channel to one peer.
//!
//! A channel is one unidirectional QUIC stream ([`StreamKind::Channel`]) on one connection:
//! messages are length-prefixed frames written in the order they were sent, and QUIC
//! delivers a stream's bytes in order and without loss unless the connection (or the stream)
//! ends. So the order holds by construction, and a loss is always visible: a channel breaks
//! once, with the reason, and everything not yet written when it broke is dropped with it.
//! The next message to that peer opens a new channel (on the live connection, dialing if
//! there is none), which the receiver tells apart by its [`ChannelId`].
//!
//! Sending never blocks on the network beyond the channel's queue: [`Channel::send`] waits
//! while the queue holds [`channel_queue`](super::LinkConfig::channel_queue) messages or
//! [`channel_queue_bytes`](super::LinkConfig::channel_queue_bytes) bytes, and the queue drains as fast as QUIC's flow
//! control lets the writer task hand bytes to the connection, that is as fast as the peer
//! reads. A slow reader therefore slows its senders instead of filling memory.
//!
//! On the receiving side every message comes out of [`Endpoint::accept`](super::Endpoint::accept)
//! as an [`Incoming::Message`] carrying its channel's id, in order
//! per channel, and the channel's end as an
//! [`Incoming::ChannelEnded`] after its last message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use super::codes;
use super::copies::{Copy, Of, Order, Turn};
use super::endpoint::Inner;
use super::error::LinkError;
use super::frame::{FrameError, LEN_PREFIX, StreamKind, check_len};
use super::incoming::{ChannelEnd, Incoming, IncomingMessage, StreamContext};
use super::peer::Peer;
use super::stream_io::PeerRef;
use crate::sync::lock;

/// Identifies one channel of an endpoint: one direction of message traffic with one peer on
/// one connection. Ids are unique within an endpoint and never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub(crate) u64);

impl std::fmt::Display for ChannelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "channel {}", self.0)
    }
}

/// Where a [`Channel`] stands.
#[derive(Clone, Debug)]
pub enum ChannelState {
    /// Waiting for a connection (dialing) or for its stream to open; messages queue up.
    Opening,
    /// Its stream is open: queued messages are being written.
    Open,
    /// It broke, or was closed: nothing more is sent on it, and what was queued is dropped.
    Closed(LinkError),
}

/// The sending half of the ordered message channel to one peer (see the
/// [module documentation](self)). Cheap to clone; clones are the same channel.
///
/// An endpoint keeps one channel per peer, shared by every caller
/// ([`Endpoint::channel`](super::Endpoint::channel), [`Link::channel`](super::Link::channel),
/// [`Link::send_message`](super::Link::send_message)); once it has closed, the next of these
/// calls opens a new one.
#[derive(Clone)]
pub struct Channel {
    shared: Arc<Shared>,
}

struct Shared {
    id: ChannelId,
    peer: Arc<str>,
    queue: mpsc::Sender<Queued>,
    budget: Arc<Semaphore>,
    budget_bytes: u32,
    max_message_len: u32,
    state: watch::Sender<ChannelState>,
}

/// A message waiting to be written, holding its share of the byte budget.
struct Queued {
    body: Bytes,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.shared.id)
            .field("peer", &self.shared.peer)
            .field("state", &*self.shared.state.borrow())
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// A channel to `peer` whose writer task connects through `inner` (dialing if needed).
    pub(crate) fn open(inner: &Arc<Inner>, peer: Arc<Peer>) -> Self {
        let config = &inner.link;
        let (queue, queued) = mpsc::channel(config.channel_queue);
        let budget_bytes = u32::try_from(config.channel_queue_bytes).unwrap_or(u32::MAX);
        let shared = Arc::new(Shared {
            id: ChannelId(inner.ids.next()),
            peer: peer.name.clone(),
            queue,
            budget: Arc::new(Semaphore::new(budget_bytes as usize)),
            budget_bytes,
            max_message_len: config.max_message_len,
            state: watch::Sender::new(ChannelState::Opening),
        });
        tokio::spawn(write_channel(
            inner.clone(),
            peer,
            shared.state.clone(),
            queued,
        ));
        Self { shared }
    }

    /// A channel that is closed from the start, with `reason`.
    pub(crate) fn failed(inner: &Inner, peer: &str, reason: LinkError) -> Self {
        let (queue, _) = mpsc::channel(1);
        Self {
            shared: Arc::new(Shared {
                id: ChannelId(inner.ids.next()),
                peer: Arc::from(peer),
                queue,
                budget: Arc::new(Semaphore::new(0)),
                budget_bytes: 0,
                max_message_len: 0,
                state: watch::Sender::new(ChannelState::Closed(reason)),
            }),
        }
    }

    /// This channel's id (the sender's; the receiver numbers its channels itself).
    pub fn id(&self) -> ChannelId {
        self.shared.id
    }

    /// The peer's name.
    pub fn peer(&self) -> &str {
        &self.shared.peer
    }

    /// Where the channel stands now.
    pub fn state(&self) -> ChannelState {
        self.shared.state.borrow().clone()
    }

    /// Whether the channel has closed (broken or closed by a caller).
    pub fn is_closed(&self) -> bool {
        matches!(*self.shared.state.borrow(), ChannelState::Closed(_))
    }

    /// Queues `body` as the next message, waiting while the queue is full. Returns once the
    /// message is queued: it is written to the peer in order unless the channel breaks first,
    /// which [`closed`](Self::closed) reports.
    ///
    /// A message larger than [`max_message_len`](super::LinkConfig::max_message_len) is refused
    /// ([`LinkError::FrameTooLarge`]) and the channel goes on.
    pub async fn send(&self, body: Bytes) -> Result<(), LinkError> {
        let cost = self.check(&body)?;
        let permit = tokio::select! {
            permit = self.shared.budget.clone().acquire_many_owned(cost) => permit,
            reason = self.closed() => return Err(reason),
        };
        let Ok(permit) = permit else {
            return Err(self.closed().await);
        };
        let queued = Queued {
            body,
            _permit: permit,
        };
        if self.shared.queue.send(queued).await.is_err() {
            return Err(self.closed().await);
        }
        Ok(())
    }

    /// Queues `body` as the next message if the queue has room now; otherwise gives it back
    /// in [`TrySendError::Full`].
    pub fn try_send(&self, body: Bytes) -> Result<(), TrySendError> {
        let cost = self.check(&body).map_err(TrySendError::Refused)?;
        if let ChannelState::Closed(reason) = &*self.shared.state.borrow() {
            return Err(TrySendError::Closed(reason.clone()));
        }
        let Ok(permit) = self.shared.budget.clone().try_acquire_many_owned(cost) else {
            return Err(TrySendError::Full(body));
        };
        let slot = match self.shared.queue.try_reserve() {
            Ok(slot) => slot,
            Err(mpsc::error::TrySendError::Full(())) => return Err(TrySendError::Full(body)),
            Err(mpsc::error::TrySendError::Closed(())) => {
                return Err(TrySendError::Closed(self.closed_reason()));
            }
        };
        slot.send(Queued {
            body,
            _permit: permit,
        });
        Ok(())
    }

    /// The budget a message takes: its length, or the whole budget for a larger one (it then
    /// goes alone).
    fn check(&self, body: &Bytes) -> Result<u32, LinkError> {
        check_len(body.len(), self.shared.max_message_len).map_err(LinkError::from)?;
        let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        Ok(len.clamp(1, self.shared.budget_bytes.max(1)))
    }

    /// Waits until the channel's stream is open; the reason if it closed instead.
    pub async fn opened(&self) -> Result<(), LinkError> {
        let mut state = self.shared.state.subscribe();
        let result = state
            .wait_for(|state| !matches!(state, ChannelState::Opening))
            .await
            .map(|state| state.clone());
        match result {
            Ok(ChannelState::Closed(reason)) => Err(reason),
            Ok(_) => Ok(()),
            Err(_) => Err(LinkError::EndpointClosed),
        }
    }

    /// Waits until the channel closes; returns why.
    pub async fn closed(&self) -> LinkError {
        let mut state = self.shared.state.subscribe();
        let result = state
            .wait_for(|state| matches!(state, ChannelState::Closed(_)))
            .await
            .map(|state| state.clone());
        match result {
            Ok(ChannelState::Closed(reason)) => reason,
            _ => LinkError::EndpointClosed,
        }
    }

    fn closed_reason(&self) -> LinkError {
        match &*self.shared.state.borrow() {
            ChannelState::Closed(reason) => reason.clone(),
            _ => LinkError::EndpointClosed,
        }
    }

    /// Abandons the channel: nothing more is written, queued messages are dropped and the
    /// stream is reset, so the peer sees the channel end. `reason` is what
    /// [`closed`](Self::closed) reports.
    pub fn close(&self, reason: &str) {
        let reason = LinkError::ChannelClosed {
            peer: self.shared.peer.to_string(),
            reason: reason.to_owned(),
        };
        close_with(&self.shared.state, reason);
    }
}

/// Sets the state to closed with `reason` unless it already is; true if it changed.
fn close_with(state: &watch::Sender<ChannelState>, reason: LinkError) -> bool {
    state.send_if_modified(|state| {
        if matches!(state, ChannelState::Closed(_)) {
            return false;
        }
        *state = ChannelState::Closed(reason);
        true
    })
}

/// Why [`Channel::try_send`] did not queue a message.
#[derive(Debug, thiserror::Error)]
pub enum TrySendError {
    /// The queue is full now; the message is given back.
    #[error("the channel's queue is full")]
    Full(Bytes),
    /// The channel has closed.
    #[error(transparent)]
    Closed(LinkError),
    /// The message is larger than the channel allows.
    #[error(transparent)]
    Refused(LinkError),
}

/// The writer task of one channel: connects, opens the stream, writes queued messages in
/// order until the channel breaks or is closed.
async fn write_channel(
    inner: Arc<Inner>,
    peer: Arc<Peer>,
    shared_state: watch::Sender<ChannelState>,
    mut queued: mpsc::Receiver<Queued>,
) {
    // The task holds no sending side of the queue: it closes when the last `Channel` handle
    // is dropped.
    let mut state = shared_state.subscribe();
    let name = peer.name.clone();
    let cancelled = |state: &ChannelState| matches!(state, ChannelState::Closed(_));
    let opened = async {
        let connection = peer.connection(&inner).await?;
        let peer_ref = PeerRef {
            name: name.clone(),
            addr: connection.remote_address(),
            probe: inner.tail_probe(&connection),
        };
        let mut send = connection
            .open_uni()
            .await
            .map_err(|e| LinkError::from_connection(&name, peer_ref.addr, e))?;
        peer_ref
            .write_all(&mut send, &[StreamKind::Channel.as_byte()])
            .await?;
        Ok::<_, LinkError>((connection, send, peer_ref))
    };
    let opened = tokio::select! {
        opened = opened => opened,
        _ = state.wait_for(cancelled) => {
            queued.close();
            return;
        }
    };
    let (connection, mut send, peer_ref) = match opened {
        Ok(opened) => opened,
        Err(reason) => {
            close_with(&shared_state, reason);
            queued.close();
            return;
        }
    };
    // The copies of this channel's messages name it by its stream and each by its index.
    let stream = u64::from(send.id());
    let mut index = 0u64;
    shared_state.send_if_modified(|state| {
        if matches!(state, ChannelState::Opening) {
            *state = ChannelState::Open;
            return true;
        }
        false
    });
    let reason = loop {
        let next = tokio::select! {
            biased;
            _ = state.wait_for(cancelled) => Next::Cancelled,
            reason = connection.closed() => Next::Lost(reason),
            // The peer refused the channel (it reads nothing more of it).
            stopped = send.stopped() => Next::Stopped(stopped),
            next = queued.recv() => Next::Message(next),
        };
        let message = match next {
            Next::Cancelled => {
                let _ = send.reset(codes::CLOSED);
                break None;
            }
            Next::Lost(reason) => {
                break Some(LinkError::from_connection(&name, peer_ref.addr, reason));
            }
            Next::Stopped(Ok(code)) => {
                break Some(LinkError::StreamReset {
                    peer: name.to_string(),
                    code: code.map_or(0, quinn::VarInt::into_inner),
                });
            }
            Next::Stopped(Err(quinn::StoppedError::ConnectionLost(reason))) => {
                break Some(LinkError::from_connection(&name, peer_ref.addr, reason));
            }
            Next::Stopped(Err(quinn::StoppedError::ZeroRttRejected)) => {
                break Some(LinkError::ChannelClosed {
                    peer: name.to_string(),
                    reason: "0-RTT rejected".into(),
                });
            }
            Next::Message(None) => {
                // Every handle is gone: the stream ends after what was written.
                let _ = send.finish();
                break Some(LinkError::ChannelClosed {
                    peer: name.to_string(),
                    reason: "no sender left".into(),
                });
            }
            Next::Message(Some(message)) => message,
        };
        let len = (message.body.len() as u32).to_be_bytes();
        // A handle on the bytes for the tail probe's copy (the write consumes the chunks).
        let body = message.body.clone();
        let mut chunks = [Bytes::copy_from_slice(&len), message.body];
        let written = tokio::select! {
            biased;
            _ = state.wait_for(cancelled) => None,
            written = send.write_all_chunks(&mut chunks) => Some(written),
        };
        match written {
            None => {
                let _ = send.reset(codes::CLOSED);
                break None;
            }
            Some(Err(error)) => break Some(LinkError::from_write(&name, peer_ref.addr, error)),
            Some(Ok(())) => {
                peer_ref
                    .probe
                    .wrote_copied(stream, Of::Message { index }, &body);
                index += 1;
            }
        }
    };
    if let Some(reason) = reason {
        tracing::debug!(peer = %name, %reason, "channel closed");
        close_with(&shared_state, reason);
    }
    queued.close();
    // Drops what was still queued, releasing its budget.
    while queued.try_recv().is_ok() {}
}

/// What the writer task does next.
enum Next {
    Cancelled,
    Lost(quinn::ConnectionError),
    Stopped(Result<Option<quinn::VarInt>, quinn::StoppedError>),
    Message(Option<Queued>),
}

/// The receiving side of one peer channel: delivers its messages in order, once each,
/// whether a message came on the stream or in a copy ([`copies`](super::copies)).
pub(crate) struct ChannelReader {
    id: ChannelId,
    context: Arc<StreamContext>,
    /// Held across the delivery into the endpoint's queue, so that the stream's reader and
    /// a copy's delivery cannot pass each other on the way there.
    order: tokio::sync::Mutex<Order>,
}

impl std::fmt::Debug for ChannelReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the context: it holds this reader.
        f.debug_struct("ChannelReader")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ChannelReader {
    /// Delivers message `index` if it is its turn (then the held copies whose turn follows),
    /// holds a copy that came early, drops one delivered already. False once the endpoint is
    /// gone.
    async fn arrived(&self, index: u64, body: Bytes, from_copy: bool) -> bool {
        let mut order = self.order.lock().await;
        let Turn::Now(body) = order.arrived(index, body, from_copy) else {
            return true;
        };
        // This message, then the held copies whose turn follows (each from a copy).
        let mut next = Some((body, from_copy));
        while let Some((body, copied)) = next {
            if copied {
                let delivered = &self.context.counters.copies_delivered;
                delivered.fetch_add(1, Ordering::Relaxed);
            }
            if !self.deliver(body).await {
                return false;
            }
            next = order.next_early().map(|body| (body, true));
        }
        true
    }

    async fn deliver(&self, body: Bytes) -> bool {
        let context = &self.context;
        let message = IncomingMessage::new(
            context.peer.clone(),
            self.id,
            body,
            context.certificate.clone(),
        );
        context.queue.send(Incoming::Message(message)).await.is_ok()
    }
}

/// Delivers a copy of a channel message that came in a datagram (see
/// [`copies`](super::copies)); anything else in a datagram is a liveness probe, and a copy of
/// a channel not read (yet, or any more) is dropped. (A copy that takes the channel's turn
/// just before the channel is given up is still delivered, before its end.)
pub(crate) async fn copy_arrived(context: &StreamContext, datagram: Bytes) {
    let Some(copy) = Copy::decode(&datagram) else {
        return;
    };
    match copy.of {
        Of::Message { index } => {
            if copy.body.len() > context.max_message_len as usize {
                return; // A channel would refuse it as a frame: the stream reports the fault.
            }
            if let Some(reader) = context.channels.get(copy.stream) {
                reader.arrived(index, copy.body, true).await;
            }
        }
        Of::Request => context.request_copied(copy.stream, &copy.body).await,
    }
}

/// Reads a peer's channel stream (its kind byte already read): queues each message as
/// [`Incoming::Message`] in order, then the channel's end.
pub(crate) async fn read_channel(context: Arc<StreamContext>, mut recv: quinn::RecvStream) {
    let id = ChannelId(context.ids.next());
    let mut given_up = context.give_ups.register(id);
    let stream = u64::from(recv.id());
    let reader = Arc::new(ChannelReader {
        id,
        context: context.clone(),
        order: tokio::sync::Mutex::new(Order::default()),
    });
    context.channels.register(stream, reader.clone());
    let mut index = 0u64;
    let window = Window::new(context.channel_window);
    let reason = loop {
        let read = tokio::select! {
            read = window.read(&context.peer, &mut recv, context.max_message_len) => read,
            _ = &mut given_up => {
                // The sender sees the stream stopped: its channel closes, and its next
                // message opens a new one, which this side takes.
                let _ = recv.stop(codes::GIVEN_UP);
                break LinkError::ChannelClosed {
                    peer: context.peer.name.to_string(),
                    reason: "given up by this side".into(),
                };
            }
        };
        match read {
            Ok(Some(body)) => {
                let delivered = reader.arrived(index, body, false).await;
                index += 1;
                if !delivered {
                    context.channels.forget(stream);
                    return; // The endpoint is gone.
                }
            }
            Ok(None) => {
                break LinkError::ChannelClosed {
                    peer: context.peer.name.to_string(),
                    reason: "the peer ended the channel".into(),
                };
            }
            Err(error) => {
                if error.is_peer_fault() {
                    context.counters.protocol_error(&context.peer, &error);
                    let _ = recv.stop(codes::PROTOCOL_ERROR);
                }
                break error;
            }
        }
    };
    context.give_ups.forget(id);
    context.channels.forget(stream);
    // No copy is delivered after the end (one being delivered now finishes first).
    reader.order.lock().await.end();
    let end = ChannelEnd::new(context.peer.clone(), id, reason);
    let _ = context.queue.send(Incoming::ChannelEnded(end)).await;
}

/// The bytes of one channel's messages its receiver holds
/// ([`LinkConfig::channel_window`](super::LinkConfig::channel_window)): each message read
/// takes its share until the last slice of its body is dropped, and the channel is read on
/// only while the share of the next one is free.
struct Window {
    room: Arc<Semaphore>,
    size: usize,
}

/// The least share of the window a message takes: a receiver that keeps a message keeps
/// more than its body (its decoded form, its place in a queue), so a sender of many tiny
/// messages fills the window too.
const MIN_SHARE: usize = 256;

/// A message's body with its share of the window, released when the body is dropped.
struct Counted {
    body: Bytes,
    _share: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

impl Window {
    fn new(size: usize) -> Self {
        // A semaphore counts at most `Semaphore::MAX_PERMITS`, and a share at most u32.
        let size = size.clamp(1, u32::MAX as usize);
        Self {
            room: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    /// Reads the next message and waits until the window has room for its share, before the
    /// channel is read on: a message larger than the window waits for all of it, and then is
    /// held alone.
    async fn read(
        &self,
        peer: &PeerRef,
        recv: &mut quinn::RecvStream,
        max_len: u32,
    ) -> Result<Option<Bytes>, LinkError> {
        let Some(body) = read_message(peer, recv, max_len).await? else {
            return Ok(None);
        };
        let share = body.len().max(MIN_SHARE).min(self.size);
        let share = u32::try_from(share).unwrap_or(u32::MAX);
        let Ok(share) = self.room.clone().acquire_many_owned(share).await else {
            // Never closed; a body without its share is only not counted.
            return Ok(Some(body));
        };
        Ok(Some(Bytes::from_owner(Counted {
            body,
            _share: share,
        })))
    }
}

/// Reads one message frame; `None` when the stream finished cleanly between two frames.
async fn read_message(
    peer: &PeerRef,
    recv: &mut quinn::RecvStream,
    max_len: u32,
) -> Result<Option<Bytes>, LinkError> {
    let mut prefix = [0; LEN_PREFIX];
    let mut filled = 0;
    while filled < LEN_PREFIX {
        match recv.read(&mut prefix[filled..]).await {
            Ok(Some(n)) => filled += n,
            Ok(None) if filled == 0 => return Ok(None),
            Ok(None) => {
                return Err(FrameError::Truncated {
                    what: "channel message",
                    needed: LEN_PREFIX as u64,
                    available: filled as u64,
                }
                .into());
            }
            Err(error) => return Err(LinkError::from_read(&peer.name, peer.addr, error)),
        }
    }
    let len = super::frame::frame_len(prefix, max_len)?;
    // Grown as bytes arrive, never ahead of them: an announced length costs nothing until
    // the peer actually sends that much.
    let mut body = BytesMut::with_capacity(len.min(READ_CHUNK));
    while body.len() < len {
        let want = (len - body.len()).min(READ_CHUNK);
        match recv.read_chunk(want, true).await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                return Err(FrameError::Truncated {
                    what: "channel message",
                    needed: len as u64,
                    available: body.len() as u64,
                }
                .into());
            }
            Err(error) => return Err(LinkError::from_read(&peer.name, peer.addr, error)),
        }
    }
    Ok(Some(body.freeze()))
}

/// The most bytes read from a channel stream at once.
const READ_CHUNK: usize = 1 << 20;

/// The peers' channels being read, each with the switch that gives it up
/// ([`Endpoint::give_up_channel`](super::Endpoint::give_up_channel)).
#[derive(Debug, Default)]
pub(crate) struct GiveUps(Mutex<HashMap<ChannelId, oneshot::Sender<()>>>);

impl GiveUps {
    /// Registers channel `id`; the receiver fires when it is given up.
    fn register(&self, id: ChannelId) -> oneshot::Receiver<()> {
        let (give_up, given_up) = oneshot::channel();
        lock(&self.0).insert(id, give_up);
        given_up
    }

    /// Channel `id` ended: nothing to give up any more.
    fn forget(&self, id: ChannelId) {
        lock(&self.0).remove(&id);
    }

    /// Gives channel `id` up; whether it was still being read.
    pub(crate) fn give_up(&self, id: ChannelId) -> bool {
        lock(&self.0)
            .remove(&id)
            .is_some_and(|give_up| give_up.send(()).is_ok())
    }
}

/// Numbers an endpoint's connections and channels.
#[derive(Debug, Default)]
pub(crate) struct Ids(AtomicU64);

impl Ids {
    pub(crate) fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}
