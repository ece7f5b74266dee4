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
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            outcome_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(30),
            remembered_ends: 4096,
        }
    }
}
