//! Why a fixture could not be set up.

use std::time::Duration;

/// Why a fixture (an endpoint, a cluster, a namespace, a process) could not be set up or did
/// not reach the state asked for in time. Tests `expect` it; the bench reports it.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// A step of the setup failed.
    #[error("{what}: {source}")]
    Setup {
        /// The step.
        what: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An external command (`ip`, `sysctl`) failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// A state was not reached within its bound.
    #[error("not within {waited:?}: {what}")]
    Timeout {
        /// The state waited for.
        what: String,
        /// The bound.
        waited: Duration,
    },
}

impl TestkitError {
    /// A setup failure of `what`, with its cause.
    pub fn setup(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Setup {
            what: what.into(),
            source: source.into(),
        }
    }

    /// A wait for `what` that ran out after `waited`.
    pub fn timeout(what: impl Into<String>, waited: Duration) -> Self {
        Self::Timeout {
            what: what.into(),
            waited,
        }
    }
}
