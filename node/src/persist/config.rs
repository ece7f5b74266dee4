//! The bounds and timings of the persistence executor.

use std::sync::Arc;
use std::time::Duration;

/// Something to run on the writer thread before each batch: a test's slow disk.
pub type BatchHook = Arc<dyn Fn() + Send + Sync>;

/// The bounds and timings of a [`ThreadedStorage`](super::ThreadedStorage)'s executor.
#[derive(Clone)]
pub struct PersistConfig {
    /// Writes queued for the writer thread; beyond it they wait in the role, which then stops
    /// taking stores.
    pub write_queue: usize,
    /// The most writes in one redb write transaction.
    pub max_batch: usize,
    /// How long a commit made without fsync (a finish) may wait for the next durable commit
    /// before the writer makes one for it. A write that arrives while that fsync runs waits
    /// for it, so the delay is long next to the time between a finish and the next vote of a
    /// busy storage; correctness does not depend on it (a storage that loses an acknowledged
    /// finish in a crash asks the master for the outcome when it starts).
    pub sync_delay: Duration,
    /// Threads serving reads (loads, replication batches) on redb read transactions.
    pub readers: usize,
    /// Reads queued for the reader threads.
    pub read_queue: usize,
    /// Runs on the writer thread before each batch: a test hook to make the disk slow (a
    /// delay) or stop it (a gate), with redb itself unchanged. `None` in production.
    pub before_batch: Option<BatchHook>,
}

impl Default for PersistConfig {
    fn default() -> Self {
        Self {
            write_queue: 1024,
            max_batch: 512,
            sync_delay: Duration::from_millis(500),
            readers: 2,
            read_queue: 256,
            before_batch: None,
        }
    }
}

impl std::fmt::Debug for PersistConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistConfig")
            .field("write_queue", &self.write_queue)
            .field("max_batch", &self.max_batch)
            .field("sync_delay", &self.sync_delay)
            .field("readers", &self.readers)
            .field("read_queue", &self.read_queue)
            .field("before_batch", &self.before_batch.is_some())
            .finish()
    }
}
