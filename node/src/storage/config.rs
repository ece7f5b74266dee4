//! The timeouts of a storage.

use std::time::Duration;

/// Timeouts of a storage.
#[derive(Clone, Debug)]
pub struct StorageConfig {
    /// How long a voted transaction waits for its finish before the master is asked.
    pub outcome_timeout: Duration,
    /// How long an unvoted transaction may stay idle (not waiting for a lock) before it is
    /// aborted.
    pub idle_timeout: Duration,
    /// How many ended transactions are remembered, to refuse late stores for them.
    pub remembered_ends: usize,
    /// About how many bytes one replication batch carries (at least one transaction or
    /// revision, whatever its size); well below the links' frame limit.
    pub replication_batch_bytes: usize,
    /// How long a partition waits before asking its sources again when all of them failed.
    pub replication_retry: Duration,
    /// How long a source has to answer one replication batch before another is asked.
    pub replication_answer_timeout: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            outcome_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(30),
            remembered_ends: 4096,
            replication_batch_bytes: 1 << 20,
            replication_retry: Duration::from_secs(1),
            replication_answer_timeout: Duration::from_secs(30),
        }
    }
}
