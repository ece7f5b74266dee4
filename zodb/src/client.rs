//! `replicast_zodb._native.Client`: one client of the cluster for Python, over the node's
//! shared [`ClientHandle`].
//!
//! Every call that waits for the cluster blocks the calling thread on the extension's tokio
//! runtime with the GIL released ([`Python::detach`]), so other Python threads run meanwhile;
//! every wait is bounded by the client's timeout. The handle is shared by threads: loads and
//! other reads go on while another thread commits; one transaction at a time (`begin` waits
//! for the one in progress, as ZODB's commit lock does).

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyList, PyTuple};
use replicast_node::client::{Conflict, ConflictKind};
use replicast_node::driver::{ClientError, ClientHandle, Invalidation};
use replicast_node::ids::{Oid, Tid};
use replicast_node::object::ObjectData;
use replicast_node::protocol::LoadBefore;
use replicast_node::transaction::TransactionInfo;
use replicast_transport::quic::Endpoint;
use tokio::task::JoinHandle;

use crate::connect::connect;
use crate::errors::{ZodbError, raise_pos, seconds, wrong_type};
use crate::ids::{oid_bytes, tid, tid_bytes};
use crate::log::{
    NativeObjectScan, NativeTransactionIterator, data_bytes, pack_report, undo_log, undo_records,
};
use crate::runtime::runtime;

/// How long a closing client waits for its peers to acknowledge that it left.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How many stores `store` gathers before it hands them to the client's driver at once.
/// Each hand-over wakes the driver and costs a turn of its loop: one per store made the
/// client's runtime threads spend more CPU on waking and polling than on the stores. A
/// commit's stores still go out while the application pickles the next ones (a batch at a
/// time), and every other call sends what was gathered first.
const STORE_BATCH: usize = 64;

pub use replicast_node::client::DEFAULT_MAX_OBJECT_SIZE;

/// A batch of new oids on its way from the master.
type OidBatch = JoinHandle<Result<Vec<Oid>, ClientError>>;

/// A revision for Python: its data (`None` for a deletion) and its TID.
type Revision<'py> = (Option<Bound<'py, PyBytes>>, Bound<'py, PyBytes>);

/// A revision for `loadBefore`: data (`None` for a deletion), its TID, the next TID.
type RevisionBefore<'py> = (
    Option<Bound<'py, PyBytes>>,
    Bound<'py, PyBytes>,
    Option<Bound<'py, PyBytes>>,
);

/// What the Python object owns: the handle and its endpoint.
struct Shared {
    handle: ClientHandle,
    endpoint: Endpoint,
}

impl Drop for Shared {
    /// A client dropped without `close()` still leaves the cluster, in the background.
    fn drop(&mut self) {
        if let Ok(runtime) = runtime() {
            let handle = self.handle.clone();
            let endpoint = self.endpoint.clone();
            runtime.spawn(async move {
                let _ = handle.close().await;
                let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
            });
        }
    }
}

/// A client of a replicast cluster: transactions, reads, new oids, invalidations.
///
/// Oids and tids are ZODB's 8-byte big-endian `bytes`.
#[pyclass(name = "Client", module = "replicast_zodb._native", frozen)]
pub struct NativeClient {
    shared: Arc<Shared>,
    /// Stores gathered by `store`, not yet handed to the driver (see [`STORE_BATCH`]).
    gathered: Mutex<Vec<(Oid, Tid, ObjectData)>>,
    /// The next batch of new oids, asked for as soon as the last one arrived (`new_oids`).
    prefetched: Mutex<Option<OidBatch>>,
    name: String,
    strategy: String,
    max_object_size: usize,
    timeout: Duration,
}

/// Locks `mutex` past poisoning: nothing panics while holding these locks.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl NativeClient {
    /// Hands the stores `store` gathered to the driver; every call that sends something else
    /// of the transaction (or waits for its stores) does this first, so the driver takes the
    /// transaction's calls in the order Python made them.
    fn send_gathered(&self, py: Python<'_>) -> PyResult<()> {
        let gathered = std::mem::take(&mut *self.gathered());
        if gathered.is_empty() {
            return Ok(());
        }
        self.shared
            .handle
            .store_pipelined_batch(gathered)
            .map_err(|error| ZodbError::from(error).into_py(py))
    }

    /// The stores gathered, locked past poisoning (nothing panics while holding it).
    fn gathered(&self) -> std::sync::MutexGuard<'_, Vec<(Oid, Tid, ObjectData)>> {
        lock(&self.gathered)
    }

    /// Runs the future `call` makes of the handle, with the GIL released, once the stores
    /// gathered so far are with the driver.
    fn call<T, F, Fut>(&self, py: Python<'_>, call: F) -> PyResult<T>
    where
        T: Send,
        F: FnOnce(ClientHandle) -> Fut + Send,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        self.send_gathered(py)?;
        let handle = self.shared.handle.clone();
        py.detach(move || -> Result<T, ZodbError> { Ok(runtime()?.block_on(call(handle))?) })
            .map_err(|error| error.into_py(py))
    }

    /// Runs a read, again while no replica answers it (a storage restarting, a link
    /// re-dialed, a loaded machine), until the client's timeout: only then does the
    /// application see `StorageUnavailable`.
    fn read<T, F, Fut>(&self, py: Python<'_>, read: F) -> PyResult<T>
    where
        T: Send,
        F: Fn(ClientHandle) -> Fut + Send + Sync,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let handle = self.shared.handle.clone();
        let timeout = self.timeout;
        py.detach(move || -> Result<T, ZodbError> {
            runtime()?.block_on(async move {
                let deadline = tokio::time::Instant::now() + timeout;
                let mut pause = READ_RETRY_FIRST;
                loop {
                    match read(handle.clone()).await {
                        Err(ClientError::ReadFailed { .. } | ClientError::LoadFailed { .. })
                            if tokio::time::Instant::now() + pause < deadline =>
                        {
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(READ_RETRY_MAX);
                        }
                        other => return Ok(other?),
                    }
                }
            })
        })
        .map_err(|error| error.into_py(py))
    }
}

/// The first pause before a read that no replica answered is asked again; it doubles up to
/// [`READ_RETRY_MAX`].
const READ_RETRY_FIRST: Duration = Duration::from_millis(20);
/// The longest pause between two attempts of a read.
const READ_RETRY_MAX: Duration = Duration::from_millis(500);

#[pymethods]
impl NativeClient {
    /// Connects to the cluster as the client that the TOML file at `config_path` describes;
    /// every wait for the cluster, this one included, is bounded by `timeout` seconds.
    /// Stores of more than `max_object_size` bytes are refused before anything is sent.
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
            .detach(|| runtime()?.block_on(connect(&config_path, timeout, max_object_size)))
            .map_err(|e| e.into_py(py))?;
        Ok(Self {
            shared: Arc::new(Shared {
                handle: connected.handle,
                endpoint: connected.endpoint,
            }),
            gathered: Mutex::new(Vec::with_capacity(STORE_BATCH)),
            prefetched: Mutex::new(None),
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

    /// Up to `count` new object ids from the master (at least one; never oid 0), in
    /// increasing order.
    ///
    /// The next batch (of `count`) is asked for as soon as this one is here, so that an
    /// application creating many objects waits for the master once, not once per batch; a
    /// prefetched batch that failed is asked for again, and its error is this call's.
    fn new_oids<'py>(&self, py: Python<'py>, count: u32) -> PyResult<Bound<'py, PyList>> {
        let count = count.max(1);
        let ahead = lock(&self.prefetched).take();
        let oids = self.call(py, move |h| async move {
            match ahead {
                Some(ahead) => match ahead.await {
                    Ok(Ok(oids)) if !oids.is_empty() => Ok(oids),
                    _ => h.new_oids(count).await,
                },
                None => h.new_oids(count).await,
            }
        })?;
        if let Ok(runtime) = runtime() {
            let handle = self.shared.handle.clone();
            let next = runtime.spawn(async move { handle.new_oids(count).await });
            *lock(&self.prefetched) = Some(next);
        }
        PyList::new(py, oids.into_iter().map(|o| oid_bytes(py, o)))
    }

    /// The last TID this client knows of; it never passes a TID whose invalidations the
    /// listener has not had (ZODB's `lastTransaction()`).
    fn last_transaction<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        tid_bytes(py, self.shared.handle.last_transaction())
    }

    /// Asks the master for its last commit and waits until its invalidations were delivered;
    /// returns it.
    fn sync<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let tid = self.call(py, |h| async move { h.sync().await })?;
        Ok(tid_bytes(py, tid))
    }

    /// Calls `listener(tid, oids)` for every other client's commit, in TID order, on a
    /// thread of the client's own, and `listener(tid, None)` when invalidations may have
    /// been missed (every cached object may be stale). `None` removes it. An exception in
    /// the listener is reported as unraisable; delivery goes on.
    #[pyo3(signature = (listener))]
    fn set_invalidation_listener(&self, py: Python<'_>, listener: Option<Py<PyAny>>) {
        let listener = listener.map(|callable| {
            Box::new(move |invalidation: &Invalidation| {
                Python::attach(|py| {
                    let result = match invalidation {
                        Invalidation::Objects { tid, oids } => {
                            PyList::new(py, oids.iter().map(|o| oid_bytes(py, *o)))
                                .and_then(|oids| callable.call1(py, (tid_bytes(py, *tid), oids)))
                        }
                        Invalidation::Everything { tid } => {
                            callable.call1(py, (tid_bytes(py, *tid), py.None()))
                        }
                    };
                    if let Err(error) = result {
                        error.write_unraisable(py, Some(callable.bind(py)));
                    }
                });
            }) as replicast_node::driver::InvalidationListener
        });
        let handle = &self.shared.handle;
        // Without the GIL: the delivery thread holds the listener's lock while it calls the
        // listener, which waits for the GIL; taking that lock with the GIL held deadlocks
        // the process (every Python thread then waits for the GIL forever).
        py.detach(move || handle.set_invalidation_listener(listener));
    }

    /// Begins a transaction once the one in progress ended; with `tid`, it commits at
    /// exactly that TID (restore). Returns the temporary TID.
    #[pyo3(signature = (tid = None))]
    fn begin<'py>(
        &self,
        py: Python<'py>,
        tid: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let at = match tid {
            Some(value) if !value.is_none() => Some(crate::ids::tid("tid", value, false)?),
            _ => None,
        };
        let ttid = self.call(py, move |h| async move { h.begin_at(at).await })?;
        Ok(tid_bytes(py, ttid))
    }

    /// Stores `data` (`bytes`; `None` deletes the object) as the new revision of `oid`, read
    /// at `serial` (`None` or 8 zero bytes for a new object). Pipelined: stores are gathered
    /// and handed to the client's driver 64 at a time (and before any other call), without
    /// waiting for it; a conflict, or a failure of the store, comes back from `wait_stores`
    /// (or `vote`); wrong arguments and data over the size limit are refused here. Storing
    /// an oid again replaces the earlier data. The data is not copied: the store holds the
    /// `bytes` object until it is sent.
    fn store(
        &self,
        py: Python<'_>,
        oid: &Bound<'_, PyAny>,
        serial: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let oid = crate::ids::oid(oid)?;
        let serial = tid("serial", serial, true)?;
        let data = object_data(data)?;
        let size = data.as_bytes().len();
        if size > self.max_object_size {
            let max = self.max_object_size;
            return Err(ZodbError::from(ClientError::TooLarge { oid, size, max }).into_py(py));
        }
        let full = {
            let mut gathered = self.gathered();
            gathered.push((oid, serial, data));
            gathered.len() >= STORE_BATCH
        };
        if full {
            self.send_gathered(py)?;
        }
        Ok(())
    }

    /// Stores `data` (`None`: a deletion) as the new revision of `oid` without a serial check
    /// (ZODB's `restore`).
    fn restore(
        &self,
        py: Python<'_>,
        oid: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let oid = crate::ids::oid(oid)?;
        let data = object_data(data)?;
        self.call(py, move |h| async move { h.restore(oid, data).await })
    }

    /// An undo's store: the new revision of `oid` (read at `serial`) is the content of its
    /// revision `restore`, or a deletion when `restore` is `None`.
    fn store_undo(
        &self,
        py: Python<'_>,
        oid: &Bound<'_, PyAny>,
        serial: &Bound<'_, PyAny>,
        restore: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let oid = crate::ids::oid(oid)?;
        let serial = tid("serial", serial, false)?;
        let restore = match restore {
            Some(value) if !value.is_none() => Some(tid("restore", value, false)?),
            _ => None,
        };
        self.call(py, move |h| async move {
            h.store_undo(oid, serial, restore).await
        })
    }

    /// Checks that `serial` is the last revision of `oid` and keeps it locked until the
    /// transaction ends; a stale serial comes back from `wait_stores` (kind `read`).
    fn check_current_serial(
        &self,
        py: Python<'_>,
        oid: &Bound<'_, PyAny>,
        serial: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let oid = crate::ids::oid(oid)?;
        let serial = tid("serial", serial, false)?;
        self.call(py, move |h| async move {
            h.check_current_serial(oid, serial).await
        })
    }

    /// Waits until every store and check sent so far is answered; returns the conflicts not
    /// resolved, each `(oid, serial, current, kind)` with kind `"write"` (resolve it: store
    /// the object again on top of `current`) or `"read"` (a stale read: ReadConflictError).
    fn wait_stores<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let conflicts = self.call(py, |h| async move { h.wait_stores().await })?;
        conflict_list(py, &conflicts)
    }

    /// Votes with the transaction's metadata: the votes go out at once, behind the stores.
    /// Returns `(resolved, conflicts)`: the oids whose conflicts were resolved, and an empty
    /// list; or, when stores met conflicts not resolved (the storages that found them did not
    /// vote), an empty list and the conflicts as `wait_stores` lists them: resolve them and
    /// vote again.
    #[pyo3(signature = (user = b"".as_slice(), description = b"".as_slice(), extension = b"".as_slice()))]
    fn vote<'py>(
        &self,
        py: Python<'py>,
        user: &[u8],
        description: &[u8],
        extension: &[u8],
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
        let info = TransactionInfo {
            user: user.to_vec(),
            description: description.to_vec(),
            extension: extension.to_vec(),
        };
        let outcome = self.call(py, move |h| async move {
            match h.vote(info).await {
                Ok(resolved) => Ok((resolved, Vec::new())),
                Err(ClientError::Conflicts(conflicts)) => Ok((Vec::new(), conflicts)),
                Err(other) => Err(other),
            }
        })?;
        let (resolved, conflicts) = outcome;
        Ok((
            PyList::new(py, resolved.into_iter().map(|o| oid_bytes(py, o)))?,
            conflict_list(py, &conflicts)?,
        ))
    }

    /// Commits the voted transaction; returns its TID (once every earlier invalidation was
    /// delivered).
    fn finish<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let tid = self.call(py, |h| async move { h.finish().await })?;
        Ok(tid_bytes(py, tid))
    }

    /// Aborts the transaction in progress everywhere (nothing when none is); with `ttid`
    /// (what `begin` returned), only if that transaction is still the one in progress, so a
    /// late abort never hits a transaction another thread began since.
    #[pyo3(signature = (ttid = None))]
    fn abort(&self, py: Python<'_>, ttid: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let ttid = optional_tid("ttid", ttid)?;
        // The stores gathered go first, in the order Python made the calls: a late abort of an
        // earlier transaction must not lose those of the one in progress now. If they cannot
        // be handed over (the transaction was aborted already, the client is closed), the
        // transaction they belong to cannot vote either: the abort goes on.
        let _ = self.send_gathered(py);
        match ttid {
            Some(ttid) => self.call(py, move |h| async move { h.abort_transaction(ttid).await }),
            None => self.call(py, |h| async move { h.abort().await }),
        }
    }

    /// The last committed revision of `oid` as `(data, tid)` (`data` is `None` when the
    /// revision deleted the object), or `None` when the object has none.
    fn load<'py>(
        &self,
        py: Python<'py>,
        oid: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Revision<'py>>> {
        let oid = crate::ids::oid(oid)?;
        let loaded = self.read(py, move |h| async move { h.load(oid).await })?;
        Ok(loaded.map(|(serial, data)| (data_bytes(py, &data), tid_bytes(py, serial))))
    }

    /// ZODB's `loadBefore`: `(data, serial, next)` of the revision current just before
    /// `tid` (`data` `None` for a deletion, `next` `None` while it is the latest), `None` when
    /// the object has no revision before `tid`; `POSKeyError` when it has none at all.
    fn load_before<'py>(
        &self,
        py: Python<'py>,
        oid: &Bound<'py, PyAny>,
        tid: &Bound<'py, PyAny>,
    ) -> PyResult<Option<RevisionBefore<'py>>> {
        let oid_value = oid.clone();
        let oid = crate::ids::oid(oid)?;
        let before = crate::ids::tid("tid", tid, false)?;
        match self.read(py, move |h| async move { h.load_before(oid, before).await })? {
            LoadBefore::Found { data, serial, next } => Ok(Some((
                data_bytes(py, &data),
                tid_bytes(py, serial),
                next.map(|next| tid_bytes(py, next)),
            ))),
            LoadBefore::NoRevision => Ok(None),
            LoadBefore::Missing => Err(poskey(py, &oid_value)),
        }
    }

    /// ZODB's `loadSerial`: the data of revision `serial` of `oid` (`None` when that revision
    /// is a deletion); `POSKeyError` when there is no such revision.
    fn load_serial<'py>(
        &self,
        py: Python<'py>,
        oid: &Bound<'py, PyAny>,
        serial: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let oid_value = oid.clone();
        let oid = crate::ids::oid(oid)?;
        let serial = crate::ids::tid("serial", serial, false)?;
        match self.read(py, move |h| async move { h.load_serial(oid, serial).await })? {
            Some(data) => Ok(data_bytes(py, &data)),
            None => Err(poskey(py, &oid_value)),
        }
    }

    /// ZODB's `history`: up to `size` revisions of `oid`, newest first, each
    /// `(tid, user, description, extension, size)`; `POSKeyError` when it has none.
    fn history<'py>(
        &self,
        py: Python<'py>,
        oid: &Bound<'py, PyAny>,
        size: u32,
    ) -> PyResult<Bound<'py, PyList>> {
        let oid_value = oid.clone();
        let oid = crate::ids::oid(oid)?;
        let entries = self.read(py, move |h| async move { h.history(oid, size).await })?;
        if entries.is_empty() {
            return Err(poskey(py, &oid_value));
        }
        let rows = entries
            .into_iter()
            .map(|entry| {
                PyTuple::new(
                    py,
                    [
                        tid_bytes(py, entry.tid).into_any(),
                        PyBytes::new(py, &entry.info.user).into_any(),
                        PyBytes::new(py, &entry.info.description).into_any(),
                        PyBytes::new(py, &entry.info.extension).into_any(),
                        entry.size.into_pyobject(py)?.into_any(),
                    ],
                )
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, rows)
    }

    /// ZODB's `iterator(start, stop)`: the committed transactions with TIDs from `start`
    /// (`None`: the first) to `stop` (`None`: the last this client knows now), oldest first,
    /// as they were when this was called (commits made meanwhile are not shown).
    #[pyo3(signature = (start = None, stop = None))]
    fn iterator(
        &self,
        start: Option<&Bound<'_, PyAny>>,
        stop: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<NativeTransactionIterator> {
        let start = optional_tid("start", start)?.unwrap_or(Tid::ZERO);
        let stop = optional_tid("stop", stop)?;
        Ok(NativeTransactionIterator::new(
            self.shared.handle.iterator(start, stop),
        ))
    }

    /// Up to `count` committed transactions with TIDs below `before`, newest first, as
    /// `(tid, user, description, extension)`; packed-away transactions are not listed.
    fn undo_log<'py>(
        &self,
        py: Python<'py>,
        before: &Bound<'py, PyAny>,
        count: u32,
    ) -> PyResult<Bound<'py, PyList>> {
        let before = tid("before", before, false)?;
        let log = self.read(py, move |h| async move { h.undo_log(before, count).await })?;
        undo_log(py, &log)
    }

    /// What undoing transaction `tid` needs, per object it wrote: `(oid, current, before)`
    /// with `current` the object's last committed TID and `before` the revision the
    /// transaction replaced (`None`: it created the object); `None` when there is no such
    /// transaction (or it was packed away).
    fn undo_info<'py>(
        &self,
        py: Python<'py>,
        tid: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        let undone = crate::ids::tid("tid", tid, false)?;
        match self.read(py, move |h| async move { h.undo_info(undone).await })? {
            Some(records) => undo_records(py, &records).map(Some),
            None => Ok(None),
        }
    }

    /// `(objects, bytes)`: how many objects the database holds (their latest revision is
    /// not a deletion) and the bytes of all their revisions' data.
    fn size(&self, py: Python<'_>) -> PyResult<(u64, u64)> {
        let size = self.read(py, |h| async move { h.size().await })?;
        Ok((size.objects, size.bytes))
    }

    /// Packs every storage at `tid`: the revisions older than `tid` that are not current at
    /// `tid` are removed. Returns `(packed, failed, removed)`: the storages that did it, those
    /// that did not answer (they keep their old revisions until the next pack), and how many
    /// revisions were removed over all replicas.
    fn pack<'py>(
        &self,
        py: Python<'py>,
        tid: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>, u64)> {
        let at = crate::ids::tid("tid", tid, false)?;
        let report = self.call(py, move |h| async move { h.pack(at).await })?;
        pack_report(py, report)
    }

    /// The revision current at `tid` of every object (garbage collection's input), read in
    /// batches with `next_batch`.
    fn scan_objects(&self, tid: &Bound<'_, PyAny>) -> PyResult<NativeObjectScan> {
        let at = crate::ids::tid("tid", tid, false)?;
        Ok(NativeObjectScan::new(self.shared.handle.scan_objects(at)))
    }

    /// Removes every revision of the objects `oids` (unreachable at `tid`) on every storage,
    /// except objects written after `tid`; the report as `pack` gives it.
    fn collect<'py>(
        &self,
        py: Python<'py>,
        tid: &Bound<'py, PyAny>,
        oids: Vec<Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>, u64)> {
        let at = crate::ids::tid("tid", tid, false)?;
        let oids = oids
            .iter()
            .map(crate::ids::oid)
            .collect::<PyResult<Vec<_>>>()?;
        let report = self.call(py, move |h| async move { h.collect(at, oids).await })?;
        pack_report(py, report)
    }

    /// How many invalidations from other clients' commits arrived so far.
    fn invalidation_count(&self) -> u64 {
        self.shared.handle.invalidations()
    }

    /// Leaves the cluster; later calls raise `ClientDisconnected`. Closing twice is allowed.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let handle = self.shared.handle.clone();
        let endpoint = self.shared.endpoint.clone();
        py.detach(move || -> Result<(), ZodbError> {
            // Inside detach: see set_invalidation_listener.
            handle.set_invalidation_listener(None);
            runtime()?.block_on(async move {
                let closed = handle.close().await;
                // The master must learn that this client left before the process may exit:
                // a client of the same name may connect right after. Bounded: the master may
                // be gone.
                let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
                match closed {
                    Ok(()) | Err(ClientError::Driver(_)) => Ok(()),
                    Err(other) => Err(other.into()),
                }
            })
        })
        .map_err(|error| error.into_py(py))
    }

    fn __repr__(&self) -> String {
        format!(
            "<replicast_zodb._native.Client {} ({})>",
            self.name, self.strategy
        )
    }
}

/// Object data from Python: `bytes`, or `None` for a deletion.
fn object_data(data: &Bound<'_, PyAny>) -> PyResult<ObjectData> {
    if data.is_none() {
        return Ok(ObjectData::Deleted);
    }
    let bytes = data
        .cast::<PyBytes>()
        .map_err(|_| wrong_type("data", "bytes", data))?;
    // Python's bytes are immutable: the payload is the object's own buffer, kept alive by the
    // `Bytes` (issue 11: no copy from the application to the transport).
    Ok(ObjectData::from(Bytes::from_owner(PyBackedBytes::from(
        bytes.clone(),
    ))))
}

/// A TID argument that may be `None`.
fn optional_tid(what: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Tid>> {
    match value {
        Some(value) if !value.is_none() => tid(what, value, false).map(Some),
        _ => Ok(None),
    }
}

/// `POSKeyError(oid)`, as ZODB raises it.
fn poskey(py: Python<'_>, oid: &Bound<'_, PyAny>) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let class = py.import("ZODB.POSException")?.getattr("POSKeyError")?;
        Ok(PyErr::from_value(class.call1((oid,))?))
    };
    build().unwrap_or_else(|_| raise_pos(py, "POSKeyError", "object not found".to_owned()))
}

/// Conflicts as a list of `(oid, serial, current, kind)`.
fn conflict_list<'py>(py: Python<'py>, conflicts: &[Conflict]) -> PyResult<Bound<'py, PyList>> {
    let tuples = conflicts
        .iter()
        .map(|conflict| {
            let kind = match conflict.kind {
                ConflictKind::Write => "write",
                ConflictKind::ReadCurrent => "read",
            };
            PyTuple::new(
                py,
                [
                    oid_bytes(py, conflict.oid).into_any(),
                    tid_bytes(py, conflict.serial).into_any(),
                    tid_bytes(py, conflict.current).into_any(),
                    kind.into_pyobject(py)?.into_any(),
                ],
            )
        })
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, tuples)
}
