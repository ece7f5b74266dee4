//! The transaction log for Python: the iterator over committed transactions (ZODB's
//! `iterator`), the scan of the revisions current at a TID (garbage collection's input), and
//! the conversions of the log's records (undo log entries, undo records, pack reports) into
//! Python values.
//!
//! Both iterators hold the node's iterator behind an async mutex: Python may call `next` from
//! any thread, and each call waits for the cluster with the GIL released.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use replicast_node::driver::{ClientError, ObjectScan, PackReport, TransactionIterator};
use replicast_node::object::ObjectData;
use replicast_node::transaction::{TransactionInfo, TransactionSummary, UndoRecord};
use tokio::sync::Mutex;

use crate::errors::ZodbError;
use crate::ids::{oid_bytes, tid_bytes};
use crate::runtime::runtime;

/// How many revisions one call of [`NativeObjectScan::next_batch`] hands over at most.
const SCAN_BATCH_MAX: usize = 100_000;

/// A revision's data for Python: `bytes`, or `None` for a deletion.
pub fn data_bytes<'py>(py: Python<'py>, data: &ObjectData) -> Option<Bound<'py, PyBytes>> {
    match data {
        ObjectData::Bytes(bytes) => Some(PyBytes::new(py, bytes)),
        ObjectData::Deleted => None,
    }
}

/// `(tid, user, description, extension)` of a transaction.
fn summary<'py>(
    py: Python<'py>,
    tid: replicast_node::ids::Tid,
    info: &TransactionInfo,
) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(
        py,
        [
            tid_bytes(py, tid).into_any(),
            PyBytes::new(py, &info.user).into_any(),
            PyBytes::new(py, &info.description).into_any(),
            PyBytes::new(py, &info.extension).into_any(),
        ],
    )
}

/// A page of the undo log: `[(tid, user, description, extension)]`, newest first.
pub fn undo_log<'py>(py: Python<'py>, log: &[TransactionSummary]) -> PyResult<Bound<'py, PyList>> {
    let rows = log
        .iter()
        .map(|entry| summary(py, entry.tid, &entry.info))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, rows)
}

/// What undoing a transaction needs: `[(oid, current, before)]` (`before` `None` when the
/// transaction created the object).
pub fn undo_records<'py>(py: Python<'py>, records: &[UndoRecord]) -> PyResult<Bound<'py, PyList>> {
    let rows = records
        .iter()
        .map(|record| {
            PyTuple::new(
                py,
                [
                    oid_bytes(py, record.oid).into_any(),
                    tid_bytes(py, record.current).into_any(),
                    match record.before {
                        Some(before) => tid_bytes(py, before).into_any(),
                        None => py.None().into_bound(py),
                    },
                ],
            )
        })
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, rows)
}

/// A pack's or a collection's report: `(packed, failed, removed)` (storage names, storage
/// names, revisions removed).
pub fn pack_report<'py>(
    py: Python<'py>,
    report: PackReport,
) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>, u64)> {
    Ok((
        PyList::new(py, report.packed)?,
        PyList::new(py, report.failed)?,
        report.removed,
    ))
}

/// Runs `next` on the iterator behind `shared` with the GIL released.
fn advance<I, T, F>(py: Python<'_>, shared: &Arc<Mutex<I>>, next: F) -> PyResult<T>
where
    I: Send,
    T: Send,
    F: AsyncFnOnce(&mut I) -> Result<T, ClientError> + Send,
{
    let shared = shared.clone();
    py.detach(move || -> Result<T, ZodbError> {
        runtime()?.block_on(async move {
            let mut iterator = shared.lock().await;
            Ok(next(&mut iterator).await?)
        })
    })
    .map_err(|error| error.into_py(py))
}

/// The committed transactions of a TID range, oldest first, as the cluster had them when the
/// iterator was made (`Client.iterator`). Each item is `(tid, user, description, extension,
/// records)` with `records` a list of `(oid, data, data_txn)` (`data` `None` for a deletion,
/// `data_txn` the TID whose data an undo reused, else `None`).
#[pyclass(
    name = "TransactionIterator",
    module = "replicast_zodb._native",
    frozen
)]
pub struct NativeTransactionIterator {
    inner: Arc<Mutex<TransactionIterator>>,
}

impl NativeTransactionIterator {
    /// Wraps the node's iterator.
    pub fn new(iterator: TransactionIterator) -> Self {
        Self {
            inner: Arc::new(Mutex::new(iterator)),
        }
    }
}

#[pymethods]
impl NativeTransactionIterator {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// The next transaction; `StopIteration` at the end.
    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let Some(transaction) = advance(py, &self.inner, async |it| it.next().await)? else {
            return Ok(None);
        };
        let records = transaction
            .records
            .iter()
            .map(|record| {
                PyTuple::new(
                    py,
                    [
                        oid_bytes(py, record.oid).into_any(),
                        match data_bytes(py, &record.data) {
                            Some(data) => data.into_any(),
                            None => py.None().into_bound(py),
                        },
                        match record.data_txn {
                            Some(tid) => tid_bytes(py, tid).into_any(),
                            None => py.None().into_bound(py),
                        },
                    ],
                )
            })
            .collect::<PyResult<Vec<_>>>()?;
        let head = summary(py, transaction.tid, &transaction.info)?;
        let mut items: Vec<Bound<'py, PyAny>> = head.iter().collect();
        items.push(PyList::new(py, records)?.into_any());
        Ok(Some(PyTuple::new(py, items)?))
    }
}

/// Every object's revision current at a TID (`Client.scan_objects`), in batches.
#[pyclass(name = "ObjectScan", module = "replicast_zodb._native", frozen)]
pub struct NativeObjectScan {
    inner: Arc<Mutex<ObjectScan>>,
}

impl NativeObjectScan {
    /// Wraps the node's scan.
    pub fn new(scan: ObjectScan) -> Self {
        Self {
            inner: Arc::new(Mutex::new(scan)),
        }
    }
}

#[pymethods]
impl NativeObjectScan {
    /// Up to `count` more revisions as `(oid, serial, data)` (`data` `None` for a deletion);
    /// an empty list at the end.
    #[pyo3(signature = (count = 1000))]
    fn next_batch<'py>(&self, py: Python<'py>, count: usize) -> PyResult<Bound<'py, PyList>> {
        let count = count.clamp(1, SCAN_BATCH_MAX);
        let batch = advance(py, &self.inner, async move |scan| {
            let mut batch = Vec::with_capacity(count.min(1024));
            while batch.len() < count {
                match scan.next().await? {
                    Some(revision) => batch.push(revision),
                    None => break,
                }
            }
            Ok(batch)
        })?;
        let rows = batch
            .iter()
            .map(|revision| {
                PyTuple::new(
                    py,
                    [
                        oid_bytes(py, revision.oid).into_any(),
                        tid_bytes(py, revision.serial).into_any(),
                        match data_bytes(py, &revision.data) {
                            Some(data) => data.into_any(),
                            None => py.None().into_bound(py),
                        },
                    ],
                )
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, rows)
    }
}
