//! The timeouts of a client.

use std::time::Duration;

/// The default [`ClientConfig::max_object_size`]: the links' default message limit on a
/// channel (`LinkConfig::max_message_len`, 1 GiB) less 64 KiB for the message around the data.
pub const DEFAULT_MAX_OBJECT_SIZE: usize = (1 << 30) - (64 << 10);

/// Timeouts and limits of a client.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How long a storage may stay silent while it owes an answer before it counts as failed.
    /// Longer than the storages' [`outcome_timeout`](crate::storage::StorageConfig), so
    /// that a lock held by a vanished client is released before waiters give up.
    pub storage_timeout: Duration,
    /// How long a storage may take to answer a vote before it counts as failed. Votes go out
    /// once every lock is held, so this only covers an fsync; shorter than the storages'
    /// `outcome_timeout`, so that a crashed replica is reported before the others give up
    /// on the transaction.
    pub vote_timeout: Duration,
    /// The slowest rate, in bytes per second, at which a storage is expected to make staged
    /// bytes durable: a vote's deadline is [`vote_timeout`](Self::vote_timeout) plus the
    /// storage's staged bytes at this rate ([`vote_deadline`](Self::vote_deadline)), so a large
    /// object is not taken for a failure. A crashed or frozen storage is noticed by its link
    /// (about a second), not by this deadline.
    pub vote_bytes_per_second: u64,
    /// How long a load waits for one replica before trying the next, unless the replica
    /// sent at least [`load_progress_bytes`](Self::load_progress_bytes) meanwhile (a large
    /// answer on its way): then it waits this long again.
    pub load_timeout: Duration,
    /// The bytes a replica must send within a [`load_timeout`](Self::load_timeout) for a
    /// load waiting on it to count as progressing: far above the links' keep-alives, far
    /// below what any live transfer moves.
    pub load_progress_bytes: u64,
    /// How long after losing its master link the client announces itself again: the master
    /// forgot it, and invalidations sent meanwhile are lost. Until the table comes, the
    /// masters are asked who the primary is every [`master_timeout`](Self::master_timeout).
    pub master_retry: Duration,
    /// The largest object data a store takes: a load answers with one message on the
    /// storage's channel, which carries messages up to `max_message_len` (1 GiB by default);
    /// this leaves room for the message around the data.
    pub max_object_size: usize,
    /// How long the primary may owe an answer (a begin, object ids, a finish's) without any
    /// answer coming before the client asks the masters who the primary is: a dead or frozen
    /// primary is replaced within a second or two, and a merely slow one answers that it is
    /// still the primary.
    pub master_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            storage_timeout: Duration::from_secs(10),
            vote_timeout: Duration::from_secs(1),
            vote_bytes_per_second: 16 << 20,
            load_timeout: Duration::from_secs(2),
            load_progress_bytes: 64 << 10,
            master_retry: Duration::from_secs(1),
            max_object_size: DEFAULT_MAX_OBJECT_SIZE,
            master_timeout: Duration::from_secs(1),
        }
    }
}

impl ClientConfig {
    /// How long a storage that staged `bytes` may take to answer its vote.
    ///
    /// ```
    /// use std::time::Duration;
    /// use replicast_node::client::ClientConfig;
    ///
    /// let config = ClientConfig::default();
    /// assert_eq!(config.vote_deadline(0), config.vote_timeout);
    /// // 64 MiB at 16 MiB/s: four more seconds.
    /// assert_eq!(config.vote_deadline(64 << 20), config.vote_timeout + Duration::from_secs(4));
    /// ```
    pub fn vote_deadline(&self, bytes: u64) -> Duration {
        let rate = self.vote_bytes_per_second.max(1);
        self.vote_timeout + Duration::from_secs_f64(bytes as f64 / rate as f64)
    }
}
