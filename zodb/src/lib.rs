//! `replicast_zodb._native`: the Rust half of the `replicast_zodb` Python package.
//!
//! It makes each Python process a client of a replicast cluster through the node's
//! [`ClientHandle`](replicast_node::driver::ClientHandle): stores fan out to the replicas by
//! the configured strategy, loads go to the nearest replica. The Python half
//! (`zodb/python/replicast_zodb`) puts ZODB's storage API on top (`ReplicastStorage`).
//!
//! - `client`: the `Client` class (begin, store, vote, finish, abort, load, new oids);
//! - `connect`: a client from its TOML configuration file;
//! - `errors`: every failure as a typed error, and the Python exception it becomes;
//! - `ids`: ZODB's 8-byte oids and tids;
//! - `log`: the transaction log (iterator, object scan, undo log and undo records, pack
//!   reports);
//! - `runtime`: the tokio runtime the clients run on.
//!
//! Logs go to standard error when `REPLICAST_LOG` is set (a `tracing` filter such as `info`).

mod client;
mod connect;
mod errors;
mod ids;
mod log;
mod runtime;

use pyo3::prelude::*;

/// mimalloc for the extension's own allocations, as in the `replicast` binary (src/main.rs
/// says why): the client's driver and fan-out allocate per store and per answer. Python's
/// objects keep Python's allocator. As in the binary, mimalloc never asks for transparent huge
/// pages (Cargo.toml's `no_thp`); unlike the binary, the extension leaves the Python process's
/// own huge page setting alone (the process is the application's), so on a host whose THP
/// setting is `always` its memory may still get them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The module `replicast_zodb._native`.
#[pymodule]
#[pyo3(name = "_native")]
fn native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    init_logging();
    module.add_class::<client::NativeClient>()?;
    module.add_class::<log::NativeTransactionIterator>()?;
    module.add_class::<log::NativeObjectScan>()?;
    module.add("DEFAULT_MAX_OBJECT_SIZE", client::DEFAULT_MAX_OBJECT_SIZE)?;
    Ok(())
}

/// Logs to standard error with the filter in `REPLICAST_LOG`, when it is set.
fn init_logging() {
    if let Ok(filter) = std::env::var("REPLICAST_LOG")
        && let Ok(filter) = tracing_subscriber::EnvFilter::try_new(filter)
    {
        // Another subscriber (an embedding application's) wins.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
}
