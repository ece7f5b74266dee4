//! `replicast_zodb._native.Client`: one client of the cluster for Python, over the node's
//! [`ClientHandle`].
//!
//! Every call blocks the calling thread on the extension's tokio runtime with the GIL released
//! ([`Python::detach`]), so other Python threads run meanwhile, and every wait is bounded by
//! the client's timeout. Calls from several threads are serialised on the handle (one
//! transaction at a time, as `ClientHandle` allows); the storage above keeps ZODB's commit lock.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use replicast_node::driver::{ClientError, ClientHandle};
use replicast_node::object::ObjectData;
use replicast_node::transaction::TransactionInfo;
use replicast_transport::quic::Endpoint;
use tokio::sync::Mutex;

use crate::connect::connect;
use crate::errors::{ZodbError, seconds, wrong_type};
use crate::ids::{oid_bytes, oid_repr, tid, tid_bytes};
use crate::runtime::runtime;

/// How long a closing client waits for its peers to acknowledge that it left.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The default bound on one object's size, below the QUIC frame limit of a load's answer
/// (4 MiB with the message around it).
pub const DEFAULT_MAX_OBJECT_SIZE: usize = (4 << 20) - (64 << 10);

/// A revision for Python: its data (`None` for a deletion) and its TID.
type Revision<'py> = (Option<Bound<'py, PyBytes>>, Bound<'py, PyBytes>);

type Call<'a, T> = Pin<Box<dyn Future<Output = Result<T, ClientError>> + Send + 'a>>;

/// What the Python object and its calls in flight share.
struct Shared {
    handle: Mutex<Option<ClientHandle>>,
    endpoint: Endpoint,
}

impl Drop for Shared {
    /// A client dropped without `close()` still leaves the cluster cleanly, in the background.
    fn drop(&mut self) {
        if let Some(handle) = self.handle.get_mut().take()
            && let Ok(runtime) = runtime()
        {
            let endpoint = self.endpoint.clone();
            runtime.spawn(async move {
                let _ = handle.close().await;
                let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
            });
        }
    }
}

/// A client of a replicast cluster: begin, store, vote, finish, abort, load, new oids.
///
/// Oids and tids are ZODB's 8-byte big-endian `bytes`.
#[pyclass(name = "Client", module = "replicast_zodb._native", frozen)]
pub struct NativeClient {
    shared: Arc<Shared>,
    name: String,
    strategy: String,
    max_object_size: usize,
    timeout: Duration,
}

impl NativeClient {
    /// Runs `call` on the handle with the GIL released, bounded by the handle's timeout.
    fn call<T, F>(&self, py: Python<'_>, call: F) -> PyResult<T>
    where
        T: Send,
        F: for<'a> FnOnce(&'a mut ClientHandle) -> Call<'a, T> + Send,
    {
        let shared = Arc::clone(&self.shared);
        let result = py.detach(move || -> Result<T, ZodbError> {
            runtime()?.block_on(async move {
                let mut guard = shared.handle.lock().await;
                let handle = guard.as_mut().ok_or(ZodbError::Closed)?;
                Ok(call(handle).await?)
            })
        });
        result.map_err(|error| error.into_py(py))
    }
}

#[pymethods]
impl NativeClient {
    /// Connects to the cluster as the client that the TOML file at `config_path` describes;
    /// every wait for the cluster, this one included, is bounded by `timeout` seconds.
    #[new]
    #[pyo3(signature = (config_path, *, timeout = 30.0, max_object_size = DEFAULT_MAX_OBJECT_SIZE))]
    fn new(
        py: Python<'_>,
        config_path: PathBuf,
        timeout: f64,
        max_object_size: usize,
    ) -> PyResult<Self> {
        let timeout = seconds("timeout", timeout).map_err(|e| e.into_py(py))?;
        let connected = py
            .detach(|| runtime()?.block_on(connect(&config_path, timeout)))
            .map_err(|e| e.into_py(py))?;
        Ok(Self {
            shared: Arc::new(Shared {
                handle: Mutex::new(Some(connected.handle)),
                endpoint: connected.endpoint,
            }),
            name: connected.name,
            strategy: connected.strategy.as_str().to_owned(),
            max_object_size,
            timeout,
        })
    }

    /// The client's node name (`node.name`).
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// How stores reach the replicas (`fanout.strategy`): unicast, multicast or auto.
    #[getter]
    fn strategy(&self) -> &str {
        &self.strategy
    }

    /// The largest object data accepted, in bytes.
    #[getter]
    fn max_object_size(&self) -> usize {
        self.max_object_size
    }

    /// The bound on each wait for the cluster, in seconds.
    #[getter]
    fn timeout(&self) -> f64 {
        self.timeout.as_secs_f64()
    }

    /// Up to `count` new object ids from the master (at least one).
    fn new_oids<'py>(&self, py: Python<'py>, count: u32) -> PyResult<Bound<'py, PyList>> {
        let oids = self.call(py, move |h| Box::pin(h.new_oids(count.max(1))))?;
        PyList::new(py, oids.into_iter().map(|o| oid_bytes(py, o)))
    }

    /// Begins a transaction; returns its temporary TID.
    fn begin<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let ttid = self.call(py, |h| Box::pin(h.begin()))?;
        Ok(tid_bytes(py, ttid))
    }

    /// Stores `data` (`bytes`; `None` deletes the object) as the new revision of `oid`, read
    /// at `serial` (`None` or 8 zero bytes for a new object). Pipelined: a conflict is
    /// reported by a later call of the transaction.
    #[pyo3(signature = (oid, serial, data))]
    fn store(
        &self,
        py: Python<'_>,
        oid: &Bound<'_, PyAny>,
        serial: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let oid = crate::ids::oid(oid)?;
        let serial = tid("serial", serial, true)?;
        let data = if data.is_none() {
            ObjectData::Deleted
        } else {
            let bytes = data
                .cast::<PyBytes>()
                .map_err(|_| wrong_type("data", "bytes", data))?
                .as_bytes();
            if bytes.len() > self.max_object_size {
                return Err(ZodbError::TooLarge {
                    oid: oid_repr(oid),
                    len: bytes.len(),
                    limit: self.max_object_size,
                }
                .into_py(py));
            }
            ObjectData::from(Bytes::copy_from_slice(bytes))
        };
        self.call(py, move |h| Box::pin(h.store(oid, serial, data)))
    }

    /// Votes with the transaction's metadata; returns once every touched object is durable
    /// on a replica that voted yes.
    #[pyo3(signature = (user = b"".as_slice(), description = b"".as_slice(), extension = b"".as_slice()))]
    fn vote(
        &self,
        py: Python<'_>,
        user: &[u8],
        description: &[u8],
        extension: &[u8],
    ) -> PyResult<()> {
        let info = TransactionInfo {
            user: latin1(user),
            description: latin1(description),
            extension: extension.to_vec(),
        };
        self.call(py, move |h| Box::pin(h.vote(info)))
    }

    /// Commits the voted transaction; returns its TID.
    fn finish<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let tid = self.call(py, |h| Box::pin(h.finish()))?;
        Ok(tid_bytes(py, tid))
    }

    /// Aborts the transaction in progress everywhere.
    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, |h| Box::pin(h.abort()))
    }

    /// The last committed revision of `oid` as `(data, tid)` (`data` is `None` when the
    /// revision deleted the object), or `None` when the object has none.
    fn load<'py>(
        &self,
        py: Python<'py>,
        oid: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Revision<'py>>> {
        let oid = crate::ids::oid(oid)?;
        let loaded = self.call(py, move |h| Box::pin(h.load(oid)))?;
        Ok(loaded.map(|(serial, data)| {
            let data = match data {
                ObjectData::Bytes(bytes) => Some(PyBytes::new(py, &bytes)),
                ObjectData::Deleted => None,
            };
            (data, tid_bytes(py, serial))
        }))
    }

    /// How many invalidations from other clients' commits arrived so far.
    fn invalidation_count(&self, py: Python<'_>) -> PyResult<u64> {
        self.call(py, |h| Box::pin(async { Ok(h.invalidations()) }))
    }

    /// Leaves the cluster; later calls raise `ClientDisconnected`. Closing twice is allowed.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let shared = Arc::clone(&self.shared);
        let result = py.detach(move || -> Result<(), ZodbError> {
            runtime()?.block_on(async move {
                let handle = shared.handle.lock().await.take();
                let Some(handle) = handle else {
                    return Ok(());
                };
                let closed = handle.close().await;
                // The master must learn that this client left before the process may exit:
                // a client of the same name may connect right after. Bounded: the master may
                // be gone.
                let _ = tokio::time::timeout(CLOSE_GRACE, shared.endpoint.wait_idle()).await;
                Ok(closed?)
            })
        });
        result.map_err(|error| error.into_py(py))
    }

    fn __repr__(&self) -> String {
        format!(
            "<replicast_zodb._native.Client {} ({})>",
            self.name, self.strategy
        )
    }
}

/// ZODB's metadata bytes as the node's text, one character per byte (lossless both ways).
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}
