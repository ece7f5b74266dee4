//! Every failure of the extension as one typed error, and how each reaches Python.
//!
//! Nothing from the node is allowed to panic into the interpreter: each [`ZodbError`] becomes
//! an exception of ZODB's `POSException` family where one fits (`ConflictError` with the oid
//! and both serials, `POSKeyError`, `StorageTransactionError`), else one of
//! `replicast_zodb.errors` (`ClientDisconnected` when the cluster does not answer in time,
//! `ConfigurationError` for a bad configuration file, `ObjectTooLarge`, `TransactionFailed`).

use std::path::PathBuf;
use std::time::Duration;

use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use replicast_node::client::{AbortReason, ConflictKind};
use replicast_node::config::ConfigError;
use replicast_node::driver::{ClientError, ConnectError, DriverError};
use replicast_node::ids::{Oid, Tid};

use crate::ids::oid_repr;

/// Why a call of the extension failed.
#[derive(Debug, thiserror::Error)]
pub enum ZodbError {
    /// The configuration file is missing or wrong.
    #[error("{source}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What the configuration check said (it names the key and the line).
        source: Box<ConfigError>,
    },
    /// The client could not connect: a certificate, `node.listen`, the multicast group or
    /// the master (the error names the file and the key).
    #[error(transparent)]
    Connect(Box<ConnectError>),
    /// A call of the cluster failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// An argument from Python has the right type but a wrong value.
    #[error("{0}")]
    BadValue(String),
    /// The tokio runtime could not start.
    #[error("cannot start the tokio runtime: {0}")]
    Runtime(std::io::Error),
}

impl ZodbError {
    /// The Python exception for this error.
    pub fn into_py(self, py: Python<'_>) -> PyErr {
        let message = self.to_string();
        match self {
            ZodbError::Config { path, source } => match *source {
                ConfigError::Read { source: io, .. }
                    if io.kind() == std::io::ErrorKind::NotFound =>
                {
                    PyFileNotFoundError::new_err((
                        2,
                        format!("replicast client configuration not found: {message}"),
                        path.display().to_string(),
                    ))
                }
                _ => raise_ours(py, "ConfigurationError", message),
            },
            ZodbError::Connect(error) => match *error {
                ConnectError::Connect { source, .. }
                    if matches!(
                        *source,
                        ClientError::Timeout { .. } | ClientError::Driver(_)
                    ) =>
                {
                    raise_ours(py, "ClientDisconnected", message)
                }
                ConnectError::Connect { .. } => raise_ours(py, "ReplicastError", message),
                _ => raise_ours(py, "ConfigurationError", message),
            },
            ZodbError::Client(error) => client_error(py, error),
            ZodbError::BadValue(_) => PyValueError::new_err(message),
            ZodbError::Runtime(_) => PyRuntimeError::new_err(message),
        }
    }
}

/// The exception for a failed call of the cluster.
fn client_error(py: Python<'_>, error: ClientError) -> PyErr {
    let message = error.to_string();
    match error {
        ClientError::Aborted(AbortReason::Conflict {
            oid,
            serial,
            current,
        }) => conflict(py, "ConflictError", oid, current, serial, None),
        ClientError::Aborted(AbortReason::Wounded { node }) => raise_pos(
            py,
            "ConflictError",
            format!(
                "an older transaction waited at {node} for this one, which had voted there \
                 and not yet everywhere; retry it"
            ),
        ),
        ClientError::Aborted(AbortReason::StoreAfterVote { node, oid }) => raise_pos(
            py,
            "ConflictError",
            format!(
                "object {oid} had to be stored again after {node} voted for the transaction; \
                 retry it"
            ),
        ),
        // Every replica of a partition failed for this transaction (none answered its stores
        // or vote in time), or a storage gave up waiting for the client: what a retry meets
        // is the cluster as it is then, as ZEO's disconnected storage.
        ClientError::Aborted(
            reason @ (AbortReason::NoReplica { .. } | AbortReason::StorageGaveUp { .. }),
        ) => raise_ours(
            py,
            "StorageUnavailable",
            format!("transaction aborted: {reason:?}; nothing of it committed: retry it"),
        ),
        ClientError::Aborted(AbortReason::MasterLost) => raise_ours(
            py,
            "ClientDisconnected",
            "the masters' primary was lost while the transaction was open, and the masters \
             aborted it; nothing of it committed: retry it"
                .to_owned(),
        ),
        ClientError::Aborted(reason) => raise_ours(
            py,
            "TransactionFailed",
            format!("transaction aborted: {reason:?}"),
        ),
        ClientError::Conflicts(conflicts) => match conflicts.first() {
            Some(first) => {
                let kind = match first.kind {
                    ConflictKind::Write => "ConflictError",
                    ConflictKind::ReadCurrent => "ReadConflictError",
                };
                conflict(py, kind, first.oid, first.current, first.serial, None)
            }
            None => raise_pos(py, "ConflictError", message),
        },
        ClientError::TidRefused { .. } | ClientError::Protocol(_) => {
            raise_pos(py, "StorageTransactionError", message)
        }
        ClientError::TooLarge { oid, size, max } => raise_ours(
            py,
            "ObjectTooLarge",
            format!(
                "object {} is {size} bytes, more than the limit of {max} bytes \
                 (max_object_size)",
                oid_repr(oid)
            ),
        ),
        ClientError::LoadFailed { .. } | ClientError::ReadFailed { .. } => {
            raise_ours(py, "StorageUnavailable", message)
        }
        ClientError::BadAnswer { .. } => raise_ours(py, "ReplicastError", message),
        ClientError::Timeout { what, after } => raise_ours(
            py,
            "ClientDisconnected",
            format!("the cluster did not answer {what} within {after:?}"),
        ),
        ClientError::Driver(DriverError::Stopped) => raise_ours(
            py,
            "ClientDisconnected",
            "the storage is closed or its client stopped".to_owned(),
        ),
    }
}

/// `POSException.<kind>(oid=..., serials=(current, read))`, as ZODB raises it.
pub fn conflict(
    py: Python<'_>,
    kind: &str,
    oid: Oid,
    current: Tid,
    read: Tid,
    message: Option<String>,
) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let class = py.import("ZODB.POSException")?.getattr(kind)?;
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("oid", PyBytes::new(py, &oid.0.to_be_bytes()))?;
        kwargs.set_item(
            "serials",
            (
                PyBytes::new(py, &current.0.to_be_bytes()),
                PyBytes::new(py, &read.0.to_be_bytes()),
            ),
        )?;
        if let Some(message) = message {
            kwargs.set_item("message", message)?;
        }
        Ok(PyErr::from_value(class.call((), Some(&kwargs))?))
    };
    build().unwrap_or_else(|error| error)
}

/// An exception of `ZODB.POSException` with `message`.
pub fn raise_pos(py: Python<'_>, kind: &str, message: String) -> PyErr {
    raise_from(py, "ZODB.POSException", kind, message)
}

/// An exception of `replicast_zodb.errors` with `message`.
pub fn raise_ours(py: Python<'_>, kind: &str, message: String) -> PyErr {
    raise_from(py, "replicast_zodb.errors", kind, message)
}

fn raise_from(py: Python<'_>, module: &str, kind: &str, message: String) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let class = py.import(module)?.getattr(kind)?;
        Ok(PyErr::from_value(class.call1((message.clone(),))?))
    };
    // The module cannot be imported only in a broken installation: the import error says so.
    build().unwrap_or_else(|error| error)
}

/// A `TypeError` naming the argument and what it must be.
pub fn wrong_type(what: &str, expected: &str, got: &Bound<'_, PyAny>) -> PyErr {
    let got = got
        .get_type()
        .name()
        .map(|name| name.to_string())
        .unwrap_or_else(|_| "?".to_owned());
    PyTypeError::new_err(format!("{what} must be {expected}, not {got}"))
}

/// A wait bound given from Python, checked.
pub fn seconds(what: &str, value: f64) -> Result<Duration, ZodbError> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            ZodbError::BadValue(format!(
                "{what} must be a positive number of seconds, not {value}"
            ))
        })
}
