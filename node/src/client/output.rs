//! [`Output`]: what a client sends next, a message or a store for the fan-out, in the order
//! the client made them.

use super::fanout::FanoutStore;
use crate::protocol::Transmit;

/// One thing a client sends, as [`Client::poll_output`](super::Client::poll_output) gives
/// them: in the order made, so that a store reaches each storage after what the client said
/// to it before and ahead of what it said after (its vote, an abort).
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// A message for one peer.
    Message(Transmit),
    /// A store for several storages, through the fan-out.
    Store(FanoutStore),
}
