//! `--netns`: the same comparison across real network namespaces joined by a bridge, with the
//! nodes as separate `replicast node` processes. Needs root; not built yet.

use crate::error::BenchError;

/// Whether the process runs as root (namespaces and bridges need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs the namespace mode: a clear error without root, and (for now) a clear "not yet" with
/// it.
pub fn run() -> Result<(), BenchError> {
    if !is_root() {
        return Err(BenchError::NotRoot);
    }
    Err(BenchError::NetnsNotYet)
}
