//! The timeouts and bounds of a storage.

use std::time::Duration;

/// Timeouts and bounds of a storage.
#[derive(Clone, Debug)]
pub struct StorageConfig {
    /// How long a voted transaction waits for its finish before the master is asked, plus
    /// the time its staged bytes take at
    /// [`outcome_bytes_per_second`](Self::outcome_bytes_per_second) (see
    /// [`outcome_deadline`](Self::outcome_deadline)).
    pub outcome_timeout: Duration,
    /// The slowest rate, in bytes per second, at which the other voters of a transaction are
    /// expected to make their staged bytes durable: the master aborts a voted transaction
    /// whose finish has not come when asked, so asking before the others could vote would
    /// fail every large transaction on a slow disk. The clients' vote deadline uses the same
    /// default rate (`ClientConfig::vote_bytes_per_second`).
    pub outcome_bytes_per_second: u64,
    /// How long an unvoted transaction may stay idle (not waiting for a lock) before it is
    /// aborted.
    pub idle_timeout: Duration,
    /// How many ended transactions are remembered, to refuse stores for them: the storage
    /// ends transactions on its own too (idle, their client lost, the primary's abort), while
    /// their clients may still be sending.
    pub remembered_ends: usize,
    /// About how many bytes one replication batch carries (at least one transaction or
    /// revision, whatever its size); well below the links' frame limit.
    pub replication_batch_bytes: usize,
    /// How many bytes of a partition's history this storage imports between two durable
    /// imports when it catches up. The imports between are committed without fsync (a durable
    /// commit makes them durable too), so that redb writes the pages that several batches
    /// change once, at the durable commit, instead of once per batch: with 1 KiB objects that
    /// halved the bytes an importing storage wrote (docs/BENCH.md, issue 17). A crash costs at
    /// most this much of the partition's copy, asked again from the last durable progress. The
    /// import that completes a partition's round is always durable, before it is reported.
    pub replication_sync_bytes: usize,
    /// How long a partition waits before asking its sources again when all of them failed.
    pub replication_retry: Duration,
    /// How long a source has to answer one replication batch before another is asked.
    pub replication_answer_timeout: Duration,
    /// Whether a finish is acknowledged only once it is on disk (an fsync per finish, which
    /// the master's one-at-a-time finishes never share). By default it is acknowledged once
    /// committed and visible, and reaches the disk with the next durable commit: the vote
    /// made the data durable and the master holds the outcome, which a storage that lost the
    /// finish in a crash asks for when it starts (see the [module documentation](super)).
    pub durable_finish: bool,
    /// The most writes waiting for the disk before the storage stops taking stores.
    pub max_unpersisted_writes: usize,
    /// The most bytes of writes waiting for the disk before the storage stops taking stores.
    pub max_unpersisted_bytes: usize,
    /// The most reads waiting for the engine; a load beyond it is answered as failed (the
    /// client asks another replica) and a replication batch as unavailable.
    pub max_pending_reads: usize,
    /// How long a read waits for a transaction voted here to be settled (see
    /// `storage::in_doubt`) before it is answered as failed, so that the client asks another
    /// replica instead of waiting behind a stalled finish (shorter than the client's load
    /// timeout, for the client to hear it).
    pub held_read_timeout: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            outcome_timeout: Duration::from_secs(3),
            outcome_bytes_per_second: 16 << 20,
            idle_timeout: Duration::from_secs(30),
            remembered_ends: 4096,
            replication_batch_bytes: 1 << 20,
            replication_sync_bytes: 64 << 20,
            replication_retry: Duration::from_secs(1),
            replication_answer_timeout: Duration::from_secs(30),
            durable_finish: false,
            max_unpersisted_writes: 4096,
            max_unpersisted_bytes: 64 << 20,
            max_pending_reads: 1024,
            held_read_timeout: Duration::from_secs(1),
        }
    }
}

impl StorageConfig {
    /// How long a transaction that staged `bytes` here waits, once voted, for its finish
    /// before the master is asked about it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use replicast_node::storage::StorageConfig;
    ///
    /// let config = StorageConfig::default();
    /// assert_eq!(config.outcome_deadline(0), config.outcome_timeout);
    /// // 64 MiB at 16 MiB/s: four more seconds.
    /// assert_eq!(
    ///     config.outcome_deadline(64 << 20),
    ///     config.outcome_timeout + Duration::from_secs(4)
    /// );
    /// ```
    pub fn outcome_deadline(&self, bytes: u64) -> Duration {
        let rate = self.outcome_bytes_per_second.max(1);
        self.outcome_timeout + Duration::from_secs_f64(bytes as f64 / rate as f64)
    }
}
