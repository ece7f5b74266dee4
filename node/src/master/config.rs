//! The limits and timeouts of the master.

use std::time::Duration;

use crate::ids::Oid;

/// Limits and timeouts of the master.
#[derive(Clone, Debug)]
pub struct MasterConfig {
    /// The most object ids handed out by one [`Message::AskNewOids`](crate::protocol::Message::AskNewOids).
    pub max_oid_batch: u32,
    /// How long a voter has to acknowledge a finish before its cells go out of date.
    pub finish_timeout: Duration,
    /// The first object id to hand out; 0 counts as 1 (oid 0 is ZODB's root object, which
    /// its first store creates: it is never allocated).
    pub first_oid: Oid,
}

impl Default for MasterConfig {
    fn default() -> Self {
        Self {
            max_oid_batch: 1024,
            finish_timeout: Duration::from_secs(5),
            first_oid: Oid(1),
        }
    }
}
