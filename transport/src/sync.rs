//! Locking the crate's short-held `std` mutexes.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, also after a holder panicked: every update under the crate's mutexes is one
/// step (an insert, a remove, a swap), so the state they guard is consistent either way, and a
/// panic in one task must not take the endpoint down with it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
