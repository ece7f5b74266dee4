//! Keys handed to the core from outside (over an authenticated QUIC link).

use std::fmt;

/// A sender session's group key of one epoch: every datagram the sender multicasts is sealed
/// with a key derived from it, the session id and the epoch.
#[derive(Clone, PartialEq, Eq)]
pub struct GroupKey {
    /// Epoch; a new one replaces the old when membership changes.
    pub epoch: u32,
    /// 32 random bytes shared by the sender and the members.
    pub secret: [u8; 32],
}

/// A receiver's own key: its NACKs and status reports are sealed with it, so the sender knows
/// which member asks and can rate-limit repairs per member.
#[derive(Clone, PartialEq, Eq)]
pub struct ReceiverKey {
    /// The receiver's id within the group.
    pub receiver_id: u32,
    /// 32 random bytes shared by this receiver and the senders it reports to.
    pub secret: [u8; 32],
}

impl fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupKey")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ReceiverKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiverKey")
            .field("receiver_id", &self.receiver_id)
            .finish_non_exhaustive()
    }
}
