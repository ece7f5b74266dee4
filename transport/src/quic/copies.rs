//! Message copies: a channel's last messages, and the last requests, ride again in their
//! connection's tail probe, so one whose packet was lost is served from its copy instead of
//! QUIC's retransmission.
//!
//! A channel message lost on the way costs its QUIC recovery, about 1.3 round trips even with
//! [tail probes](super::tail_probe): the probe's acknowledgement reveals the loss and the
//! retransmission crosses the path once more. On a lossy WAN that recovery is most of the
//! tail of a short exchange (a commit's vote and finish are one packet each). The tail probe
//! already sends a packet of its own right after the writes pause; it now carries a copy of
//! each of the last few messages written since the previous probe, as QUIC datagrams. If the
//! message's packet was lost and the probe's was not, the receiver delivers the message from
//! its copy, about one probe delay after it was sent, and skips it when the stream brings it
//! again. A message is delivered once, in its channel's order, whichever copy came first.
//!
//! A copy names its channel by the QUIC stream id of the channel's stream (the same on both
//! sides of the connection) and the message by its index on that stream (0 for the first).
//! A receiver holds copies that arrive ahead of their turn (an earlier message still missing),
//! at most [`MAX_EARLY`] per channel, and drops copies of channels it does not read (yet).
//! Peers that predate copies read every datagram as a liveness probe and drop it.
//!
//! A request is one stream of its own, and the receiver answers on that stream: a request
//! served from its copy is answered once the stream reaches the receiver, whichever comes
//! first (the stream may be known to the receiver and still wait for its lost bytes). So the
//! receiver's work starts one probe delay after the request was sent, and only the answer
//! waits for QUIC; a fan-out announcement's work is the object's delivery, which then does not
//! wait at all. See [`Requests`].
//!
//! Wire format of a copy datagram: the tag ([`MESSAGE_TAG`] or [`REQUEST_TAG`]), the stream
//! id as an 8-byte big-endian number, for a message its index likewise, then the message's
//! bytes, or the request stream's first bytes (kind, service, framed request).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::oneshot;

use crate::sync::lock;

/// The first byte of a channel message's copy (an empty datagram is a plain probe).
pub(crate) const MESSAGE_TAG: u8 = 1;

/// The first byte of a request's copy.
pub(crate) const REQUEST_TAG: u8 = 2;

/// Bytes of a message's copy before the message.
const MESSAGE_HEADER: usize = 1 + 8 + 8;

/// Bytes of a request's copy before the stream's bytes.
const REQUEST_HEADER: usize = 1 + 8;

/// The most copies a probe carries: the last messages written before the pause (earlier ones
/// were followed by later packets, whose acknowledgements reveal their loss soon enough).
pub(crate) const MAX_RECENT: usize = 4;

/// The largest message (or request opening, or small object stream) a sender copies. A copy
/// goes only if it fits one datagram on the path when the probe leaves (checked then): up to
/// about 1,150 bytes at QUIC's minimum of 1,200 bytes of UDP payload, up to 1,400 once MTU
/// discovery found the 1,452 bytes of [`LinkConfig::mtu_upper_bound`]'s default (so a 1 KiB
/// object's stream, about 1,100 bytes with its header, is copied on such a path). A receiver
/// takes a copy of any size a datagram can hold, up to its message limit.
///
/// [`LinkConfig::mtu_upper_bound`]: super::LinkConfig::mtu_upper_bound
pub(crate) const MAX_COPIED_MESSAGE: usize = 1_400;

/// Copies a receiver holds per channel ahead of their turn.
pub(crate) const MAX_EARLY: usize = 64;

/// What a copy is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Of {
    /// Channel message `index` of its stream.
    Message { index: u64 },
    /// The request that opened its stream, or the whole of a small object's stream (both
    /// are bidirectional streams their receiver answers on).
    Request,
}

/// One copy, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Copy {
    /// The QUIC stream id of the channel, or of the request.
    pub(crate) stream: u64,
    /// What it copies.
    pub(crate) of: Of,
    /// The message, or the request stream's first bytes.
    pub(crate) body: Bytes,
}

impl Copy {
    /// The datagram of this copy.
    pub(crate) fn encode(&self) -> Bytes {
        let mut datagram = BytesMut::with_capacity(MESSAGE_HEADER + self.body.len());
        match self.of {
            Of::Message { index } => {
                datagram.put_u8(MESSAGE_TAG);
                datagram.put_u64(self.stream);
                datagram.put_u64(index);
            }
            Of::Request => {
                datagram.put_u8(REQUEST_TAG);
                datagram.put_u64(self.stream);
            }
        }
        datagram.put_slice(&self.body);
        datagram.freeze()
    }

    /// The copy in `datagram`; `None` for an empty probe, another tag, or a datagram too short
    /// for its header (a newer peer's, or a hostile one's: both are dropped).
    pub(crate) fn decode(datagram: &Bytes) -> Option<Self> {
        let number = |at: usize| {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(&datagram[at..at + 8]);
            u64::from_be_bytes(bytes)
        };
        match datagram.first() {
            Some(&MESSAGE_TAG) if datagram.len() >= MESSAGE_HEADER => Some(Self {
                stream: number(1),
                of: Of::Message { index: number(9) },
                body: datagram.slice(MESSAGE_HEADER..),
            }),
            Some(&REQUEST_TAG) if datagram.len() >= REQUEST_HEADER => Some(Self {
                stream: number(1),
                of: Of::Request,
                body: datagram.slice(REQUEST_HEADER..),
            }),
            _ => None,
        }
    }
}

/// The sender's side: copies of the last messages written on a connection since its last
/// probe, at most [`MAX_RECENT`].
#[derive(Debug, Default)]
pub(crate) struct Recent(Mutex<VecDeque<Copy>>);

impl Recent {
    /// Channel message `index` (or the request) of stream `stream` was written: its copy goes
    /// with the next probe if it is small enough.
    pub(crate) fn wrote(&self, stream: u64, of: Of, body: &Bytes) {
        if body.len() > MAX_COPIED_MESSAGE {
            return;
        }
        let mut recent = lock(&self.0);
        if recent.len() == MAX_RECENT {
            recent.pop_front();
        }
        recent.push_back(Copy {
            stream,
            of,
            body: body.clone(),
        });
    }

    /// The copies for the probe going out now (and none for the next).
    pub(crate) fn take(&self) -> Vec<Copy> {
        lock(&self.0).drain(..).collect()
    }
}

/// What a channel reader decides for a message, from its stream or from a copy.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Delivered already (from a copy, or the stream): drop this one.
    Done,
    /// Deliver it now, then [`Order::next_early`] until none is left.
    Now(Bytes),
    /// Held until its turn (a copy ahead of a missing message).
    Held,
    /// Dropped: too far ahead, or the channel holds enough already.
    Dropped,
}

/// The receiver's order of one channel: the next index to deliver and the copies that came
/// ahead of it. A message is delivered exactly once, in index order.
#[derive(Debug, Default)]
pub(crate) struct Order {
    next: u64,
    early: BTreeMap<u64, Bytes>,
    ended: bool,
}

impl Order {
    /// Message `index` arrived (`from_copy`: in a copy; else on the stream, which brings
    /// every index in order). On [`Turn::Now`] the caller delivers it (the index counts as
    /// delivered), then the held copies [`next_early`](Self::next_early) gives.
    pub(crate) fn arrived(&mut self, index: u64, body: Bytes, from_copy: bool) -> Turn {
        if self.ended || index < self.next {
            return Turn::Done;
        }
        if index == self.next {
            self.next += 1;
            return Turn::Now(body);
        }
        // Only a copy can be ahead: the stream brings the indexes in order.
        if !from_copy || index - self.next > MAX_EARLY as u64 || self.early.len() >= MAX_EARLY {
            return Turn::Dropped;
        }
        self.early.insert(index, body);
        Turn::Held
    }

    /// The held copy whose turn it is now, if any (it counts as delivered).
    pub(crate) fn next_early(&mut self) -> Option<Bytes> {
        // Copies behind the next index were overtaken by the stream.
        while let Some(entry) = self.early.first_entry() {
            if *entry.key() >= self.next {
                break;
            }
            entry.remove();
        }
        let body = self.early.remove(&self.next)?;
        self.next += 1;
        Some(body)
    }

    /// The channel ended: nothing more is delivered.
    pub(crate) fn end(&mut self) {
        self.ended = true;
        self.early.clear();
    }
}

/// The receiver's channels of one connection, by stream id, for routing copies.
#[derive(Debug)]
pub(crate) struct Routes<T>(Mutex<HashMap<u64, Arc<T>>>);

impl<T> Default for Routes<T> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<T> Routes<T> {
    /// The channel on stream `stream` is read now.
    pub(crate) fn register(&self, stream: u64, channel: Arc<T>) {
        lock(&self.0).insert(stream, channel);
    }

    /// The channel on stream `stream` ended.
    pub(crate) fn forget(&self, stream: u64) {
        lock(&self.0).remove(&stream);
    }

    /// The channel a copy of stream `stream` is for, if it is read.
    pub(crate) fn get(&self, stream: u64) -> Option<Arc<T>> {
        lock(&self.0).get(&stream).cloned()
    }
}

/// The most requests a receiver serves from their copies before their streams arrive.
pub(crate) const MAX_COPIED_REQUESTS: usize = 64;

/// The receiver's request streams of one connection, between a request's copy and its
/// stream: whichever brings the request first serves it, and the stream's send half (`S`,
/// on which the answer goes) ends with whoever serves it.
///
/// The peer's request streams are accepted in the order of their ids, so a stream whose id is
/// at most the highest accepted one and that has no slot was served already.
#[derive(Debug)]
pub(crate) struct Requests<S> {
    /// The two low bits of the peer's bidirectional stream ids (RFC 9000, 2.1: the initiator
    /// and the direction): a copy naming another stream is not the peer's request.
    peer_bidi: u64,
    highest: Option<u64>,
    slots: HashMap<u64, Slot<S>>,
    copied: usize,
}

impl<S> Requests<S> {
    /// The request streams of a connection whose peer is a client (`peer_is_client`: its
    /// bidirectional stream ids are 0 mod 4) or a server (1 mod 4).
    pub(crate) fn new(peer_is_client: bool) -> Self {
        Self {
            peer_bidi: if peer_is_client { 0 } else { 1 },
            highest: None,
            slots: HashMap::new(),
            copied: 0,
        }
    }
}

/// Where a request stream stands.
#[derive(Debug)]
enum Slot<S> {
    /// Accepted, its task reading the request; a copy that comes meanwhile takes the send
    /// half through this.
    Reading(oneshot::Sender<oneshot::Sender<S>>),
    /// Served from its copy before the stream was accepted: its send half goes here.
    Copied(oneshot::Sender<S>),
}

/// What the acceptor of a request stream does with it.
pub(crate) enum Accepted<S> {
    /// Read it; a copy that comes first takes the send half through the receiver.
    Read(S, oneshot::Receiver<oneshot::Sender<S>>),
    /// Served from its copy already: the send half went to it; the stream is not read.
    Copied,
    /// Served from its copy already, whose work was dropped unanswered: the acceptor resets
    /// the send half (as an unanswered request is), and does not read the stream.
    Orphaned(S),
}

impl<S> Requests<S> {
    /// Request stream `id` was accepted, with `send` its send half.
    pub(crate) fn accepted(&mut self, id: u64, send: S) -> Accepted<S> {
        self.highest = Some(self.highest.map_or(id, |highest| highest.max(id)));
        if let Some(Slot::Copied(copy)) = self.slots.remove(&id) {
            self.copied -= 1;
            return match copy.send(send) {
                Ok(()) => Accepted::Copied,
                // The copy's work was dropped without an answer.
                Err(send) => Accepted::Orphaned(send),
            };
        }
        let (take, taken) = oneshot::channel();
        self.slots.insert(id, Slot::Reading(take));
        Accepted::Read(send, taken)
    }

    /// The task reading stream `id` read its request (or failed to): true if it serves it,
    /// false if a copy took it meanwhile (its send half goes to the copy, through the
    /// receiver [`accepted`](Self::accepted) gave).
    pub(crate) fn read(&mut self, id: u64) -> bool {
        matches!(self.slots.remove(&id), Some(Slot::Reading(_)))
    }

    /// A copy of request `id` came: the receiver of the stream's send half if the copy is to
    /// serve it, `None` if its stream served it or is served already, or too many copies wait
    /// for their streams.
    pub(crate) fn copied(&mut self, id: u64) -> Option<oneshot::Receiver<S>> {
        if id & 0b11 != self.peer_bidi {
            return None; // Not a stream the peer can open a request on.
        }
        let (give, send) = oneshot::channel();
        if self.highest.is_some_and(|highest| id <= highest) {
            // Accepted: the copy takes over only from a task still reading it.
            return match self.slots.remove(&id) {
                Some(Slot::Reading(take)) => take.send(give).is_ok().then_some(send),
                // Streams are accepted in order and each takes its copy's slot: none is left
                // behind; were one, it goes with its count.
                Some(Slot::Copied(_)) => {
                    self.copied -= 1;
                    None
                }
                None => None,
            };
        }
        if self.slots.contains_key(&id) || self.copied >= MAX_COPIED_REQUESTS {
            return None;
        }
        self.copied += 1;
        self.slots.insert(id, Slot::Copied(give));
        Some(send)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    #[test]
    fn a_copy_decodes_to_what_was_encoded_and_anything_else_is_no_copy() {
        let copy = Copy {
            stream: 7,
            of: Of::Message { index: 3 },
            body: body("vote"),
        };
        assert_eq!(Copy::decode(&copy.encode()), Some(copy));
        let request = Copy {
            stream: 8,
            of: Of::Request,
            body: body("announce"),
        };
        assert_eq!(Copy::decode(&request.encode()), Some(request));
        assert_eq!(Copy::decode(&Bytes::new()), None, "a plain probe");
        assert_eq!(
            Copy::decode(&Bytes::from_static(&[MESSAGE_TAG, 0, 1])),
            None
        );
        assert_eq!(
            Copy::decode(&Bytes::from_static(&[REQUEST_TAG, 0, 1])),
            None
        );
        let mut other = Copy {
            stream: 1,
            of: Of::Request,
            body: Bytes::new(),
        }
        .encode()
        .to_vec();
        other[0] = 9;
        assert_eq!(Copy::decode(&Bytes::from(other)), None, "another tag");
    }

    #[test]
    fn the_sender_keeps_the_last_small_messages_until_a_probe_takes_them() {
        let recent = Recent::default();
        for index in 0..6 {
            recent.wrote(1, Of::Message { index }, &body("m"));
        }
        let large = Bytes::from(vec![0; MAX_COPIED_MESSAGE + 1]);
        recent.wrote(1, Of::Message { index: 6 }, &large);
        let taken: Vec<Of> = recent.take().iter().map(|copy| copy.of).collect();
        let expected: Vec<Of> = (2..6).map(|index| Of::Message { index }).collect();
        assert_eq!(taken, expected, "the last four small ones");
        assert!(recent.take().is_empty(), "each copy goes with one probe");
    }

    #[test]
    fn every_index_is_delivered_once_in_order_whichever_copy_comes_first() {
        let mut order = Order::default();
        // Message 0 by the stream; 2 and 1 by copies (1's packet lost, 2 ahead of it).
        assert_eq!(order.arrived(0, body("0"), false), Turn::Now(body("0")));
        assert_eq!(order.arrived(2, body("2"), true), Turn::Held);
        assert_eq!(order.next_early(), None, "1 is still missing");
        assert_eq!(order.arrived(1, body("1"), true), Turn::Now(body("1")));
        assert_eq!(order.next_early(), Some(body("2")));
        assert_eq!(order.next_early(), None);
        // The stream brings 1 and 2 again: both done; 3 comes by the stream.
        assert_eq!(order.arrived(1, body("1"), false), Turn::Done);
        assert_eq!(order.arrived(2, body("2"), false), Turn::Done);
        assert_eq!(order.arrived(3, body("3"), false), Turn::Now(body("3")));
        // A copy of 3 after the stream's: done.
        assert_eq!(order.arrived(3, body("3"), true), Turn::Done);
    }

    #[test]
    fn copies_far_ahead_or_beyond_the_bound_are_dropped_and_an_ended_channel_takes_nothing() {
        let mut order = Order::default();
        let far = MAX_EARLY as u64 + 1;
        assert_eq!(order.arrived(far, body("x"), true), Turn::Dropped);
        for index in 1..=MAX_EARLY as u64 {
            assert_eq!(order.arrived(index, body("x"), true), Turn::Held);
        }
        assert_eq!(order.early.len(), MAX_EARLY);
        order.end();
        assert_eq!(order.arrived(0, body("0"), false), Turn::Done);
        assert_eq!(order.next_early(), None);
    }

    #[test]
    fn a_held_copy_overtaken_by_the_stream_is_not_delivered_again() {
        let mut order = Order::default();
        assert_eq!(order.arrived(1, body("1"), true), Turn::Held);
        assert_eq!(order.arrived(0, body("0"), false), Turn::Now(body("0")));
        // The reader delivers 0 and would take 1 from the copies; here the stream got there
        // first instead (the reader did not drain yet).
        assert_eq!(order.arrived(1, body("1"), false), Turn::Now(body("1")));
        assert_eq!(order.next_early(), None, "1 was delivered by the stream");
    }
}

#[cfg(test)]
mod request_tests {
    use super::*;

    #[test]
    fn a_request_read_from_its_stream_first_ignores_its_copy() {
        let mut requests = Requests::new(true);
        let Accepted::Read(_send, _taken) = requests.accepted(0, "send-0") else {
            panic!("a fresh stream is read");
        };
        assert!(requests.read(0), "the stream's task serves it");
        assert!(requests.copied(0).is_none(), "its copy is dropped");
    }

    #[test]
    fn a_copy_before_the_stream_serves_the_request_and_gets_the_send_half() {
        let mut requests = Requests::new(true);
        let mut send = requests.copied(4).expect("the copy serves it");
        assert!(requests.copied(4).is_none(), "a second copy is dropped");
        assert!(matches!(requests.accepted(4, "send-4"), Accepted::Copied));
        assert_eq!(send.try_recv(), Ok("send-4"));
        assert!(requests.copied(4).is_none(), "served");
    }

    #[test]
    fn a_copy_while_the_stream_waits_for_its_bytes_takes_it_over() {
        let mut requests = Requests::new(true);
        let Accepted::Read(send, mut taken) = requests.accepted(8, "send-8") else {
            panic!("a fresh stream is read");
        };
        let mut copy = requests.copied(8).expect("the copy takes over");
        // The reading task learns it and hands the send half over.
        let give = taken.try_recv().expect("taken");
        give.send(send).expect("the copy waits");
        assert_eq!(copy.try_recv(), Ok("send-8"));
        assert!(!requests.read(8), "the task does not serve it too");
    }

    #[test]
    fn a_copy_naming_a_stream_the_peer_cannot_open_is_dropped() {
        let mut requests: Requests<&str> = Requests::new(true);
        assert!(requests.copied(1).is_none(), "a server's stream");
        assert!(requests.copied(2).is_none(), "a unidirectional stream");
        assert!(requests.copied(4).is_some(), "a client's request stream");
        let mut from_server: Requests<&str> = Requests::new(false);
        assert!(from_server.copied(4).is_none());
        assert!(from_server.copied(5).is_some());
    }

    #[test]
    fn a_copy_whose_work_was_dropped_leaves_its_stream_to_be_reset() {
        let mut requests = Requests::new(true);
        drop(requests.copied(4).expect("served from the copy"));
        assert!(matches!(
            requests.accepted(4, "send-4"),
            Accepted::Orphaned("send-4")
        ));
    }

    #[test]
    fn copies_of_requests_served_before_or_beyond_the_bound_are_dropped() {
        let mut requests: Requests<&str> = Requests::new(true);
        let Accepted::Read(..) = requests.accepted(12, "send-12") else {
            panic!("a fresh stream is read");
        };
        assert!(requests.read(12));
        assert!(
            requests.copied(0).is_none(),
            "below the highest accepted: served"
        );
        let held: Vec<_> = (0..MAX_COPIED_REQUESTS as u64)
            .map(|n| requests.copied(16 + 4 * n).expect("room"))
            .collect();
        assert!(requests.copied(10_000).is_none(), "the bound");
        drop(held);
    }
}
