//! [`FailureTimeouts`]: the waits of the fan-out, of a finish and of a transaction's outcome,
//! derived from the links' failure detection instead of fixed constants.
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

use crate::client::ClientConfig;
use crate::storage::StorageConfig;

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
/// assert_eq!(timeouts.outcome, Duration::from_secs(3));
/// assert_eq!(timeouts.storage_silence, Duration::from_secs(4));
///
/// // Two sites whose links wait 5 s: a voter waits out a writer's slowest replica.
/// let timeouts = FailureTimeouts::after(Duration::from_secs(5));
/// assert!(timeouts.outcome > timeouts.expect);
/// assert!(timeouts.storage_silence > timeouts.outcome);
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
    /// How long a storage that voted waits for the transaction's finish before it asks the
    /// master, which aborts a transaction still open: three detection times. A live writer
    /// may take that long between its first vote and its finish, since its slowest replica's
    /// stores may wait out [`expect`](Self::expect) and then go by unicast; a fixed 3 s made
    /// voters give up on live writers on links slower than a second (two sites at 5 s).
    pub outcome: Duration,
    /// How long a client lets a storage that owes it an answer stay silent before it counts
    /// as failed, at the least: four detection times, so that a lock held by a vanished
    /// client is released (its voters ask after [`outcome`](Self::outcome)) before the
    /// writers waiting for it give up.
    pub storage_silence: Duration,
}

impl FailureTimeouts {
    /// The waits for links that notice a dead or frozen peer after `detection`.
    pub fn after(detection: Duration) -> Self {
        Self {
            expect: detection * 2,
            repair: detection * 2,
            delivery: detection * 3,
            finish: detection * 3,
            outcome: detection * 3,
            storage_silence: detection * 4,
        }
    }

    /// `storage` with its outcome timeout raised to [`outcome`](Self::outcome) if shorter
    /// (the default, 3 s, covers links that detect within a second, and stays above the
    /// clients' vote timeout on faster ones).
    pub fn storage(&self, mut storage: StorageConfig) -> StorageConfig {
        storage.outcome_timeout = storage.outcome_timeout.max(self.outcome);
        storage
    }

    /// `client` with its storage timeout raised to [`storage_silence`](Self::storage_silence)
    /// if shorter (the default, 10 s, covers links that detect within 2.5 s).
    pub fn client(&self, mut client: ClientConfig) -> ClientConfig {
        client.storage_timeout = client.storage_timeout.max(self.storage_silence);
        client
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The order the waits must keep whatever the links' detection time: a client's vote
    /// deadline (an fsync) before a voter's outcome wait (a vanished client), which covers a
    /// writer's wait for its slowest replica, before a client gives up on a silent storage.
    #[test]
    fn the_waits_keep_their_order_for_any_detection_time() {
        for millis in [100, 250, 1_000, 2_500, 5_000, 30_000] {
            let detection = Duration::from_millis(millis);
            let timeouts = FailureTimeouts::after(detection);
            let storage = timeouts.storage(StorageConfig::default());
            let client = timeouts.client(ClientConfig::default());
            assert!(
                storage.outcome_timeout >= timeouts.expect + detection,
                "{detection:?}: a voter waits out the expect wait and a fallback"
            );
            assert!(
                client.storage_timeout > storage.outcome_timeout + detection / 2,
                "{detection:?}: a vanished client's locks go before waiters give up"
            );
            assert!(
                client.vote_timeout < storage.outcome_timeout,
                "{detection:?}: a failed vote is reported before voters give up"
            );
        }
        // The default link (1 s) keeps the defaults.
        let timeouts = FailureTimeouts::after(Duration::from_secs(1));
        assert_eq!(
            timeouts.storage(StorageConfig::default()).outcome_timeout,
            StorageConfig::default().outcome_timeout
        );
        assert_eq!(
            timeouts.client(ClientConfig::default()).storage_timeout,
            ClientConfig::default().storage_timeout
        );
    }
}
