//! The extension's one tokio runtime, shared by every client of the process.

use std::sync::OnceLock;

use tokio::runtime::Runtime;

use crate::errors::ZodbError;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The runtime, started on first use with two worker threads (the clients' drivers are light;
/// the application's threads block on it with the GIL released).
///
/// A process that forks after using it must not use it in the child (tokio's threads are not
/// copied by `fork`): start worker processes with `multiprocessing`'s `spawn` method.
pub fn runtime() -> Result<&'static Runtime, ZodbError> {
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let built = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("replicast-zodb")
        .enable_all()
        .build()
        .map_err(ZodbError::Runtime)?;
    // Two threads may build one at once: the loser's runtime is dropped unused.
    Ok(RUNTIME.get_or_init(|| built))
}
