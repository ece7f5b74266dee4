//! [`Disk`]: a disk that tests stop and slow down, as the writer threads of storages
//! and masters see it through their batch hooks (`PersistConfig::before_batch`,
//! `Master::write_log_behind`); redb itself is unchanged.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use replicast_testkit::disk::Disk;
//!
//! let disk = Arc::new(Disk::default());
//! let hook = disk.hook(); // for the writer's configuration
//! hook(); // a writer's batch: runs at once
//! disk.run(Duration::from_millis(1)); // slow from now on
//! hook();
//! assert_eq!(disk.waiting(), 0);
//! ```

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// A disk that a test stops (a writer waits before its batch until it runs again) or slows
/// (a delay before each batch).
#[derive(Default)]
pub struct Disk {
    state: Mutex<DiskState>,
    changed: Condvar,
}

#[derive(Default)]
struct DiskState {
    stopped: bool,
    delay: Duration,
    /// Writers waiting in a stopped disk now.
    waiting: usize,
}

impl Disk {
    fn lock(&self) -> MutexGuard<'_, DiskState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The hook a writer runs before each batch: waits while the disk is stopped, then for
    /// its delay. Only the writer's thread waits there.
    pub fn before_batch(&self) {
        let mut state = self.lock();
        if state.stopped {
            state.waiting += 1;
            self.changed.notify_all();
            while state.stopped {
                state = self
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            state.waiting -= 1;
        }
        let delay = state.delay;
        drop(state);
        std::thread::sleep(delay);
    }

    /// [`before_batch`](Self::before_batch) as a writer's hook.
    pub fn hook(self: &Arc<Self>) -> Arc<dyn Fn() + Send + Sync> {
        let disk = self.clone();
        Arc::new(move || disk.before_batch())
    }

    /// Stops the disk: every writer waits before its next batch.
    pub fn stop(&self) {
        self.lock().stopped = true;
    }

    /// Runs again, `delay` before each batch from now on.
    pub fn run(&self, delay: Duration) {
        let mut state = self.lock();
        state.stopped = false;
        state.delay = delay;
        self.changed.notify_all();
    }

    /// How many writers wait in the stopped disk now.
    pub fn waiting(&self) -> usize {
        self.lock().waiting
    }
}
