//! Why a benchmark run failed.

use std::path::PathBuf;

use replicast_node::driver::ClientError;

/// Why a benchmark run or one of its cells failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The local cluster of a cell could not be started (certificates, sockets, storage).
    #[error("cannot start the cell's cluster: {0}")]
    Setup(String),
    /// A client call failed for a reason other than an abort worth retrying.
    #[error("client {client}: {what} failed")]
    Client {
        /// The client's index in the cell.
        client: usize,
        /// The call.
        what: &'static str,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// Transactions kept aborting: the cell measures nothing.
    #[error("client {client}: {aborts} aborts in a row, last: {last}")]
    Aborting {
        /// The client's index in the cell.
        client: usize,
        /// Consecutive aborts.
        aborts: u32,
        /// The last abort.
        last: String,
    },
    /// The thread of the writing clients failed.
    #[error("the writer thread failed: {0}")]
    Writer(String),
    /// A result file could not be written.
    #[error("cannot write {path}")]
    Output {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file to read (a baseline's results.json) could not be read.
    #[error("cannot read {path}")]
    Input {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// results.json could not be encoded or decoded.
    #[error("results.json: {0}")]
    Json(#[from] serde_json::Error),
    /// The namespace mode needs root.
    #[error(
        "--netns needs root (it creates network namespaces and a bridge); run it with sudo, or \
         run without --netns for the in-process emulated cluster"
    )]
    NotRoot,
    /// A fixture of the testkit (the cell's cluster, its namespaces, a node process) could not
    /// be set up.
    #[error("cannot start the cell's cluster: {0}")]
    Testkit(#[from] replicast_testkit::TestkitError),
    /// The knobs describe no cell that can run.
    #[error("invalid knobs: {0}")]
    Knobs(String),
}

impl BenchError {
    /// A setup failure of `what`, with its cause.
    pub fn setup(what: impl std::fmt::Display, cause: impl std::fmt::Display) -> Self {
        Self::Setup(format!("{what}: {cause}"))
    }
}
