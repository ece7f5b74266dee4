//! Message copies: a channel's last messages ride again in its connection's tail probe, so a
//! message whose packet was lost is delivered from its copy instead of QUIC's retransmission.
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
//! Wire format of a copy datagram: the tag [`COPY_TAG`], the stream id and the message index
//! as 8-byte big-endian numbers, then the message's bytes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};

use crate::sync::lock;

/// The first byte of a copy datagram (an empty datagram is a plain probe).
pub(crate) const COPY_TAG: u8 = 1;

/// Bytes of a copy datagram before the message.
const HEADER_LEN: usize = 1 + 8 + 8;

/// The most copies a probe carries: the last messages written before the pause (earlier ones
/// were followed by later packets, whose acknowledgements reveal their loss soon enough).
pub(crate) const MAX_RECENT: usize = 4;

/// The largest message copied: a copy must fit one datagram on any path QUIC allows (1,200
/// bytes of UDP payload at the least, less QUIC's own overhead).
pub(crate) const MAX_COPIED_MESSAGE: usize = 1_100;

/// Copies a receiver holds per channel ahead of their turn.
pub(crate) const MAX_EARLY: usize = 64;

/// One message's copy, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Copy {
    /// The channel's QUIC stream id.
    pub(crate) stream: u64,
    /// The message's index on that stream.
    pub(crate) index: u64,
    /// The message.
    pub(crate) body: Bytes,
}

impl Copy {
    /// The datagram of this copy.
    pub(crate) fn encode(&self) -> Bytes {
        let mut datagram = BytesMut::with_capacity(HEADER_LEN + self.body.len());
        datagram.put_u8(COPY_TAG);
        datagram.put_u64(self.stream);
        datagram.put_u64(self.index);
        datagram.put_slice(&self.body);
        datagram.freeze()
    }

    /// The copy in `datagram`; `None` for an empty probe, another tag, or a datagram too short
    /// for its header (a newer peer's, or a hostile one's: both are dropped).
    pub(crate) fn decode(datagram: &Bytes) -> Option<Self> {
        if datagram.len() < HEADER_LEN || datagram[0] != COPY_TAG {
            return None;
        }
        let number = |at: usize| {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(&datagram[at..at + 8]);
            u64::from_be_bytes(bytes)
        };
        Some(Self {
            stream: number(1),
            index: number(9),
            body: datagram.slice(HEADER_LEN..),
        })
    }
}

/// The sender's side: copies of the last messages written on a connection since its last
/// probe, at most [`MAX_RECENT`].
#[derive(Debug, Default)]
pub(crate) struct Recent(Mutex<VecDeque<Copy>>);

impl Recent {
    /// Message `index` of stream `stream` was written: its copy goes with the next probe if
    /// it is small enough.
    pub(crate) fn wrote(&self, stream: u64, index: u64, body: &Bytes) {
        if body.len() > MAX_COPIED_MESSAGE {
            return;
        }
        let mut recent = lock(&self.0);
        if recent.len() == MAX_RECENT {
            recent.pop_front();
        }
        recent.push_back(Copy {
            stream,
            index,
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
            index: 3,
            body: body("vote"),
        };
        assert_eq!(Copy::decode(&copy.encode()), Some(copy));
        assert_eq!(Copy::decode(&Bytes::new()), None, "a plain probe");
        assert_eq!(Copy::decode(&Bytes::from_static(&[COPY_TAG, 0, 1])), None);
        let mut other = Copy {
            stream: 1,
            index: 1,
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
            recent.wrote(1, index, &body("m"));
        }
        recent.wrote(1, 6, &Bytes::from(vec![0; MAX_COPIED_MESSAGE + 1]));
        let taken: Vec<u64> = recent.take().iter().map(|copy| copy.index).collect();
        assert_eq!(taken, vec![2, 3, 4, 5], "the last four small ones");
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
