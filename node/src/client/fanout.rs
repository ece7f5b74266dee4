//! [`FanoutStore`]: one store for every replica of an object, as the client role emits it.

use crate::partition::NodeName;
use crate::protocol::Message;

/// One [`Message::Store`] for a set of storages, handed to the driver in one piece so that
/// it can travel through the transport's fan-out API (one multicast send for all replicas,
/// or one QUIC object per replica) instead of as one message per storage.
///
/// The driver reports a storage the store did not reach with
/// [`Client::fanout_failed`](super::Client::fanout_failed); a storage it reached answers with
/// [`Message::AnswerStore`] as for any store.
#[derive(Clone, Debug, PartialEq)]
pub struct FanoutStore {
    /// The client's id of this fan-out, unique for the client's lifetime.
    pub id: u64,
    /// The storages that get the store (distinct, at least one).
    pub replicas: Vec<NodeName>,
    /// The store, identical for every replica in `replicas`.
    pub message: Message,
}
