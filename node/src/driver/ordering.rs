//! In-order delivery per peer on top of the transport's one-stream-per-message sends.
//!
//! [`Link::send_message`](replicast_transport::quic::Link::send_message) opens a stream per
//! message, so two messages to one peer may overtake each other. The roles need them in
//! order, so every message carries the sender's [`Envelope`] sequence number and the receiver
//! holds early ones in a bounded reorder buffer until the gap closes.
//!
//! A sender that fails to deliver a message starts a new *epoch* for that peer (the peer is
//! reported lost, so the roles cope with what was dropped); the receiver then restarts its
//! count, and never waits for a message of a dead epoch.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// One protocol message on the wire, with its place in the sender's order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Identifies the sending driver instance; a restarted sender draws a new one.
    pub instance: u64,
    /// Bumped by the sender each time it gave up on delivering to this receiver.
    pub epoch: u32,
    /// The message's position in the epoch, from 0.
    pub seq: u64,
    /// The encoded [`Message`](crate::protocol::Message).
    pub body: Vec<u8>,
}

/// The sender's side: the next sequence number per receiver.
#[derive(Debug)]
pub(crate) struct Sequencer {
    instance: u64,
    peers: HashMap<String, (u32, u64)>,
}

impl Sequencer {
    pub(crate) fn new(instance: u64) -> Self {
        Self {
            instance,
            peers: HashMap::new(),
        }
    }

    /// Wraps `body` for `peer` with the next number.
    pub(crate) fn wrap(&mut self, peer: &str, body: Vec<u8>) -> Envelope {
        let (epoch, next) = self.peers.entry(peer.to_owned()).or_default();
        let seq = *next;
        *next += 1;
        Envelope {
            instance: self.instance,
            epoch: *epoch,
            seq,
            body,
        }
    }

    /// Messages to `peer` were lost: later ones start a new epoch.
    pub(crate) fn restart(&mut self, peer: &str) {
        let (epoch, next) = self.peers.entry(peer.to_owned()).or_default();
        *epoch = epoch.wrapping_add(1);
        *next = 0;
    }
}

/// What the receiver made of one envelope.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// These bodies are now deliverable, in order.
    Deliver(Vec<Vec<u8>>),
    /// The envelope is early: it waits for the ones before it.
    Early,
    /// The envelope belongs to an epoch the sender already left; dropped.
    Stale,
    /// More early envelopes (or bytes of them) than the buffer holds: the envelope is
    /// dropped and the peer should be treated as lost.
    Overflow,
}

#[derive(Debug)]
struct Stream {
    instance: u64,
    epoch: u32,
    expected: u64,
    early: BTreeMap<u64, Vec<u8>>,
    /// The bytes of the bodies in `early`.
    early_bytes: usize,
}

impl Stream {
    fn new(envelope: &Envelope) -> Self {
        Self {
            instance: envelope.instance,
            epoch: envelope.epoch,
            expected: 0,
            early: BTreeMap::new(),
            early_bytes: 0,
        }
    }
}

/// The receiver's side: per sender, the next expected number and the early arrivals.
#[derive(Debug)]
pub(crate) struct Reorder {
    limit: usize,
    byte_limit: usize,
    peers: HashMap<String, Stream>,
}

impl Reorder {
    /// A buffer holding at most `limit` early envelopes, and at most `byte_limit` bytes of
    /// their bodies, per sender.
    pub(crate) fn new(limit: usize, byte_limit: usize) -> Self {
        Self {
            limit,
            byte_limit,
            peers: HashMap::new(),
        }
    }

    pub(crate) fn accept(&mut self, peer: &str, envelope: Envelope) -> Arrival {
        let stream = self
            .peers
            .entry(peer.to_owned())
            .or_insert_with(|| Stream::new(&envelope));
        // A new instance (restarted peer) or a later epoch resets the count; an older epoch
        // of the same instance is what the sender abandoned.
        if envelope.instance != stream.instance || envelope.epoch > stream.epoch {
            *stream = Stream::new(&envelope);
        } else if envelope.epoch < stream.epoch || envelope.seq < stream.expected {
            return Arrival::Stale;
        }
        if envelope.seq > stream.expected {
            // A duplicate number replaces the body it held.
            let held = stream.early.get(&envelope.seq).map(Vec::len);
            let bytes = stream.early_bytes - held.unwrap_or(0) + envelope.body.len();
            let count = stream.early.len() + usize::from(held.is_none());
            if count > self.limit || bytes > self.byte_limit {
                return Arrival::Overflow;
            }
            stream.early.insert(envelope.seq, envelope.body);
            stream.early_bytes = bytes;
            return Arrival::Early;
        }
        let mut ready = vec![envelope.body];
        stream.expected += 1;
        while let Some(body) = stream.early.remove(&stream.expected) {
            stream.early_bytes -= body.len();
            ready.push(body);
            stream.expected += 1;
        }
        Arrival::Deliver(ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(epoch: u32, seq: u64) -> Envelope {
        Envelope {
            instance: 7,
            epoch,
            seq,
            body: vec![seq as u8],
        }
    }

    #[test]
    fn early_messages_wait_for_the_gap() {
        let mut reorder = Reorder::new(4, 1 << 20);
        assert_eq!(reorder.accept("a", envelope(0, 1)), Arrival::Early);
        assert_eq!(reorder.accept("a", envelope(0, 2)), Arrival::Early);
        assert_eq!(
            reorder.accept("a", envelope(0, 0)),
            Arrival::Deliver(vec![vec![0], vec![1], vec![2]])
        );
        assert_eq!(reorder.accept("a", envelope(0, 1)), Arrival::Stale);
    }

    #[test]
    fn a_new_epoch_restarts_and_old_ones_are_stale() {
        let mut reorder = Reorder::new(4, 1 << 20);
        assert_eq!(reorder.accept("a", envelope(0, 1)), Arrival::Early);
        assert_eq!(
            reorder.accept("a", envelope(1, 0)),
            Arrival::Deliver(vec![vec![0]])
        );
        assert_eq!(reorder.accept("a", envelope(0, 0)), Arrival::Stale);
    }

    #[test]
    fn the_buffer_is_bounded() {
        let mut reorder = Reorder::new(1, 1 << 20);
        assert_eq!(reorder.accept("a", envelope(0, 1)), Arrival::Early);
        assert_eq!(reorder.accept("a", envelope(0, 2)), Arrival::Overflow);
    }

    fn sized(seq: u64, len: usize) -> Envelope {
        Envelope {
            instance: 7,
            epoch: 0,
            seq,
            body: vec![seq as u8; len],
        }
    }

    #[test]
    fn the_buffer_is_bounded_in_bytes() {
        let mut reorder = Reorder::new(100, 10);
        assert_eq!(reorder.accept("a", sized(1, 6)), Arrival::Early);
        assert_eq!(reorder.accept("a", sized(2, 5)), Arrival::Overflow);
        assert_eq!(reorder.accept("a", sized(2, 4)), Arrival::Early);
        // Another sender has its own budget.
        assert_eq!(reorder.accept("b", sized(1, 10)), Arrival::Early);
        // Delivering frees the bytes: the buffer holds 10 bytes again afterwards.
        assert_eq!(
            reorder.accept("a", sized(0, 1)),
            Arrival::Deliver(vec![vec![0], vec![1; 6], vec![2; 4]])
        );
        assert_eq!(reorder.accept("a", sized(4, 10)), Arrival::Early);
        assert_eq!(reorder.accept("a", sized(5, 1)), Arrival::Overflow);
    }

    #[test]
    fn a_duplicate_early_number_is_counted_once() {
        let mut reorder = Reorder::new(100, 10);
        assert_eq!(reorder.accept("a", sized(1, 8)), Arrival::Early);
        assert_eq!(reorder.accept("a", sized(1, 8)), Arrival::Early);
        assert_eq!(reorder.accept("a", sized(2, 2)), Arrival::Early);
    }

    #[test]
    fn sequencer_numbers_per_peer_and_restarts() {
        let mut sequencer = Sequencer::new(7);
        assert_eq!(sequencer.wrap("a", vec![]).seq, 0);
        assert_eq!(sequencer.wrap("a", vec![]).seq, 1);
        assert_eq!(sequencer.wrap("b", vec![]).seq, 0);
        sequencer.restart("a");
        let next = sequencer.wrap("a", vec![]);
        assert_eq!((next.epoch, next.seq), (1, 0));
    }
}
