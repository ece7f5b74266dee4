//! [`FailureTimeouts`]: the waits of the fan-out and of a finish, derived from the links'
//! failure detection instead of fixed constants.
//!
//! A peer that died or froze is noticed by its link within the failure detection time (the
//! link's idle timeout, which QUIC raises to three probe timeouts, about three round trips,
//! on a slow path): the client then counts it failed for the transaction and the
//! transaction goes on on the other replicas. The other waits only cover a peer that is
//! alive but slow (a multicast object still being repaired, a finish still being written),
//! so they are a few failure detection times: never much longer, or a live but stuck peer
//! holds writers back for seconds, and never shorter, or a live peer is taken for a failed
//! one before its link could tell.

use std::time::Duration;

use replicast_transport::fanout::FanoutReceiverConfig;
use replicast_transport::multicast::driver::MulticastSenderConfig;

/// The fan-out's and the master's waits for a given failure detection time.
///
/// ```
/// use std::time::Duration;
/// use replicast_node::driver::FailureTimeouts;
///
/// // The default link: a silent peer is lost after 1 s.
/// let timeouts = FailureTimeouts::after(Duration::from_secs(1));
/// assert_eq!(timeouts.expect, Duration::from_secs(2));
/// assert_eq!(timeouts.repair, Duration::from_secs(2));
/// assert_eq!(timeouts.delivery, Duration::from_secs(3));
/// assert_eq!(timeouts.finish, Duration::from_secs(3));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureTimeouts {
    /// How long a storage waits, with nothing heard from the writer on the group, for a
    /// multicast object announced to it before it answers that it did not receive it (the
    /// writer then falls back to unicast, or fails the replica): two detection times.
    pub expect: Duration,
    /// How long a storage's multicast receiver keeps asking for a lost datagram before the
    /// object counts as lost: two detection times, so a lost object is reported by the time
    /// the writer's wait for it ends.
    pub repair: Duration,
    /// How long a writer's multicast sender waits for a receiver that makes no progress
    /// before it gives up on it (and stops holding its window back for it): three
    /// detection times, longer than a receiver's repairs.
    pub delivery: Duration,
    /// How long the master waits for the voters of a commit to acknowledge it before it
    /// takes the silent ones for failed: three detection times (a dead or frozen voter is
    /// noticed by its link first).
    pub finish: Duration,
}

impl FailureTimeouts {
    /// The waits for links that notice a dead or frozen peer after `detection`.
    pub fn after(detection: Duration) -> Self {
        Self {
            expect: detection * 2,
            repair: detection * 2,
            delivery: detection * 3,
            finish: detection * 3,
        }
    }

    /// `sender` (a client's fan-out writer) with its delivery timeout.
    pub fn sender(&self, mut sender: MulticastSenderConfig) -> MulticastSenderConfig {
        sender.protocol.delivery_timeout = self.delivery;
        sender
    }

    /// `receiver` (a storage's fan-out receiver) with its expect timeout and repair deadline.
    pub fn receiver(&self, mut receiver: FanoutReceiverConfig) -> FanoutReceiverConfig {
        receiver.expect_timeout = self.expect;
        receiver.protocol.repair_deadline = self.repair;
        receiver
    }
}
