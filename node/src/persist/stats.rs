//! What the persistence executor counts.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::storage::Backlog;

/// Counters of a [`ThreadedStorage`](super::ThreadedStorage)'s executor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistStats {
    /// Durable commits of the engine since it was opened: one fsync each.
    pub syncs: u64,
    /// redb write transactions the writer ran (each covering one or more writes).
    pub batches: u64,
    /// Writes executed.
    pub writes: u64,
    /// The most writes one batch covered.
    pub largest_batch: u64,
    /// Reads executed.
    pub reads: u64,
    /// What the role has handed out and not heard back about, now.
    pub backlog: Backlog,
    /// The most bytes of writes that ever waited for the disk at once.
    pub peak_write_bytes: usize,
    /// The most writes that ever waited for the disk at once.
    pub peak_writes: usize,
}

/// The counters the executor's threads update.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub batches: AtomicU64,
    pub writes: AtomicU64,
    pub largest_batch: AtomicU64,
    pub reads: AtomicU64,
}

impl Counters {
    pub(super) fn batch(&self, writes: usize, batches: u64) {
        let writes = writes as u64;
        self.batches.fetch_add(batches, Ordering::Relaxed);
        self.writes.fetch_add(writes, Ordering::Relaxed);
        self.largest_batch.fetch_max(writes, Ordering::Relaxed);
    }

    pub(super) fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }
}
