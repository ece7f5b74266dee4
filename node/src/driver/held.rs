//! Messages of a peer's channel that wait, in the channel's order, for the role to take
//! stores again.
//!
//! A writer's stores that travel by unicast come on its channel, in order with its votes and
//! aborts. A storage whose disk is behind takes no stores ([`Role::takes_stores`]): the
//! driver then holds the first store of a peer's channel, and every message after it, until
//! the role takes stores again, so that no message of that peer overtakes a store. What is
//! held keeps its body, which keeps its share of the channel's window at the transport
//! ([`LinkConfig::channel_window`]): once a peer's held messages fill the window the
//! transport reads no more of its channel, and QUIC's flow control slows that writer alone.
//! Other peers' messages, loads and status go on.
//!
//! [`Role::takes_stores`]: super::Role::takes_stores
//! [`LinkConfig::channel_window`]: replicast_transport::quic::LinkConfig::channel_window

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use replicast_transport::quic::PeerCertificate;

use crate::protocol::Message;

/// One held message: decoded, with the certificate of its channel and the body it came in
/// (kept for the window's sake: a decoded store slices it, other messages would let it go).
pub(crate) struct Waiting {
    pub(crate) certificate: Option<PeerCertificate>,
    pub(crate) message: Message,
    _body: Bytes,
}

/// Every peer's held messages, each peer's in its channel's order.
#[derive(Default)]
pub(crate) struct Held {
    peers: HashMap<String, VecDeque<Waiting>>,
}

impl Held {
    /// Whether `message`, from `peer`, must wait: a store while the role takes none, or any
    /// message behind one of the same peer.
    pub(crate) fn must_wait(&self, peer: &str, message: &Message, takes_stores: bool) -> bool {
        self.peers.contains_key(peer) || (!takes_stores && is_store(message))
    }

    /// Holds `message` from `peer` behind the others it holds.
    pub(crate) fn hold(
        &mut self,
        peer: &str,
        certificate: Option<PeerCertificate>,
        message: Message,
        body: Bytes,
    ) {
        self.peers
            .entry(peer.to_owned())
            .or_default()
            .push_back(Waiting {
                certificate,
                message,
                _body: body,
            });
    }

    /// Whether nothing is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The peers with held messages.
    pub(crate) fn peers(&self) -> Vec<String> {
        self.peers.keys().cloned().collect()
    }

    /// `peer`'s first held message, if it may go now: anything but a store, and a store
    /// while the role takes stores.
    pub(crate) fn next(&mut self, peer: &str, takes_stores: bool) -> Option<Waiting> {
        let queue = self.peers.get_mut(peer)?;
        let goes = queue
            .front()
            .is_some_and(|first| takes_stores || !is_store(&first.message));
        let waiting = if goes { queue.pop_front() } else { None };
        if queue.is_empty() {
            self.peers.remove(peer);
        }
        waiting
    }

    /// Every message held of `peer`, in order.
    pub(crate) fn take_all(&mut self, peer: &str) -> VecDeque<Waiting> {
        self.peers.remove(peer).unwrap_or_default()
    }
}

fn is_store(message: &Message) -> bool {
    matches!(message, Message::Store { .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Oid, Tid};
    use crate::object::ObjectData;
    use crate::protocol::StoreKind;

    fn store() -> Message {
        Message::Store {
            ttid: Tid(1),
            generation: 0,
            oid: Oid(1),
            serial: Tid::ZERO,
            data: ObjectData::from(vec![1; 16]),
            kind: StoreKind::default(),
        }
    }

    fn abort() -> Message {
        Message::AbortTransaction { ttid: Tid(1) }
    }

    #[test]
    fn a_store_waits_while_the_role_takes_none_and_what_follows_waits_behind_it() {
        let mut held = Held::default();
        assert!(!held.must_wait("c", &store(), true));
        assert!(!held.must_wait("c", &abort(), false), "not a store");
        assert!(held.must_wait("c", &store(), false));
        held.hold("c", None, store(), Bytes::new());
        assert!(held.must_wait("c", &abort(), true), "behind the held store");
        assert!(!held.must_wait("d", &abort(), true), "another peer goes on");
        held.hold("c", None, abort(), Bytes::new());

        assert!(held.next("c", false).is_none(), "the store still waits");
        assert!(held.next("c", true).is_some_and(|w| is_store(&w.message)));
        assert!(
            held.next("c", false)
                .is_some_and(|w| matches!(w.message, Message::AbortTransaction { .. })),
            "a message that is not a store goes once no store is ahead of it"
        );
        assert!(held.is_empty());
    }

    #[test]
    fn take_all_gives_a_peers_messages_in_order() {
        let mut held = Held::default();
        held.hold("c", None, store(), Bytes::new());
        held.hold("c", None, abort(), Bytes::new());
        let all: Vec<bool> = held
            .take_all("c")
            .into_iter()
            .map(|w| is_store(&w.message))
            .collect();
        assert_eq!(all, [true, false]);
        assert!(held.is_empty());
    }
}
