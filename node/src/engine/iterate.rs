//! The transaction log of one partition, as ZODB reads it: its transactions with their
//! revisions in TID order (`iterator`), newest first (`undoLog`), what undoing one needs, the
//! revisions current at a TID (garbage collection's input), and its size.
//!
//! Every walk is bounded: pages end after about `max_bytes` of data (at least one revision)
//! or [`SCAN_LIMIT`] transactions looked at, with a cursor to resume after.

use redb::{ReadableDatabase, ReadableTable};

use super::data::LazyData;
use super::error::database;
use super::records::{ObjectRecord, StoredData, TransactionRecord, decode};
use super::tables::{OBJECTS, OBJECTS_NAME, TRANSACTIONS, TRANSACTIONS_NAME};
use super::{Engine, EngineError, ObjectCursor, last_serial, read_revision};
use crate::ids::{Oid, Tid};
use crate::partition::partition_of;
use crate::transaction::{DataRecord, TransactionRecords, TransactionSummary, UndoRecord};

/// How many transactions or revisions one page looks at, at most, whether they belong to the
/// partition or not: a page of a rarely written partition still answers in bounded time.
const SCAN_LIMIT: usize = 16_384;

/// Bytes a revision costs in a page beyond its data (ids, lengths, tags), generously.
const RECORD_OVERHEAD: usize = 48;

/// A page of one partition's transactions ([`Engine::transaction_records`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionPage {
    /// Transactions in TID order, each with its revisions of the partition after the cursor.
    pub transactions: Vec<TransactionRecords>,
    /// The cursor to ask again after; `None` when nothing is left up to the bound.
    pub resume: Option<ObjectCursor>,
}

/// How big a partition is ([`Engine::partition_size`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionSize {
    /// Objects whose latest revision is not a deletion.
    pub objects: u64,
    /// The bytes of the data of all their revisions held as content.
    pub bytes: u64,
}

/// A page of the revisions current at a TID ([`Engine::objects_at`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectsAtPage {
    /// `(oid, serial, data)` in OID order.
    pub objects: Vec<(Oid, Tid, crate::object::ObjectData)>,
    /// The object to ask again after; `None` when the partition is done.
    pub resume: Option<Oid>,
}

impl Engine {
    /// The transactions touching `partition` (of `num_partitions`) with their revisions of
    /// its objects, in (TID, OID) order after `after`, with TIDs up to `up_to`: about
    /// `max_bytes` of data (at least one revision). An undo's revision carries the content it
    /// points at and the TID it points at (`data_txn`).
    pub fn transaction_records(
        &self,
        partition: u32,
        num_partitions: u32,
        after: ObjectCursor,
        up_to: Tid,
        max_bytes: usize,
    ) -> Result<TransactionPage, EngineError> {
        let mut page = TransactionPage {
            transactions: Vec::new(),
            resume: None,
        };
        if after.tid > up_to {
            return Ok(page);
        }
        let txn = self.db.begin_read().map_err(database("begin read"))?;
        let transactions = txn
            .open_table(TRANSACTIONS)
            .map_err(database("open transactions"))?;
        let objects = txn.open_table(OBJECTS).map_err(database("open objects"))?;
        let data_rows = LazyData::new(&txn);
        let mut bytes = 0;
        let mut looked = 0;
        let mut last = after;
        for entry in transactions
            .range(after.tid..=up_to)
            .map_err(database("scan transactions"))?
        {
            let (tid, record) = entry.map_err(database("read transaction"))?;
            let tid = tid.value();
            let record: TransactionRecord = decode(TRANSACTIONS_NAME, record.value())?;
            let mut records = Vec::new();
            for oid in record.oids {
                let cursor = ObjectCursor { tid, oid };
                if cursor <= after {
                    continue;
                }
                if looked == SCAN_LIMIT || (bytes >= max_bytes && bytes > 0) {
                    push_records(&mut page, tid, &record.info, records);
                    page.resume = Some(last);
                    return Ok(page);
                }
                looked += 1;
                last = cursor;
                if partition_of(oid, num_partitions) != partition {
                    continue;
                }
                let Some(raw) = objects
                    .get((oid, tid))
                    .map_err(database("read revision"))?
                    .map(|raw| decode::<ObjectRecord>(OBJECTS_NAME, raw.value()))
                    .transpose()?
                else {
                    continue;
                };
                let data_txn = match raw.data {
                    StoredData::SameAs(target) => Some(target),
                    StoredData::Content(_) | StoredData::Stored { .. } => None,
                };
                let Some((data, _)) = read_revision(&objects, &data_rows, oid, tid)? else {
                    continue;
                };
                bytes += RECORD_OVERHEAD + data.as_bytes().len();
                records.push(DataRecord {
                    oid,
                    data,
                    data_txn,
                });
            }
            push_records(&mut page, tid, &record.info, records);
            last = ObjectCursor {
                tid,
                oid: Oid(u64::MAX),
            };
        }
        Ok(page)
    }

    /// Up to `count` transactions touching `partition` with TIDs below `before`, newest
    /// first, leaving out those at or before the last pack's TID.
    pub fn undo_log(
        &self,
        partition: u32,
        num_partitions: u32,
        before: Tid,
        count: usize,
    ) -> Result<Vec<TransactionSummary>, EngineError> {
        let packed = self.packed()?;
        let txn = self.db.begin_read().map_err(database("begin read"))?;
        let transactions = txn
            .open_table(TRANSACTIONS)
            .map_err(database("open transactions"))?;
        let mut log = Vec::new();
        for entry in transactions
            .range(..before)
            .map_err(database("scan transactions"))?
            .rev()
        {
            if log.len() == count {
                break;
            }
            let (tid, record) = entry.map_err(database("read transaction"))?;
            let tid = tid.value();
            if tid <= packed {
                break;
            }
            let record: TransactionRecord = decode(TRANSACTIONS_NAME, record.value())?;
            if record
                .oids
                .iter()
                .any(|oid| partition_of(*oid, num_partitions) == partition)
            {
                log.push(TransactionSummary {
                    tid,
                    info: record.info,
                });
            }
        }
        Ok(log)
    }

    /// What undoing transaction `tid` needs for the objects of `partition` it wrote: each
    /// one's last committed TID and the revision `tid` replaced. `None` when the transaction
    /// is not here, or is at or before the last pack's TID.
    pub fn undo_info(
        &self,
        partition: u32,
        num_partitions: u32,
        tid: Tid,
    ) -> Result<Option<Vec<UndoRecord>>, EngineError> {
        if tid <= self.packed()? {
            return Ok(None);
        }
        let txn = self.db.begin_read().map_err(database("begin read"))?;
        let transactions = txn
            .open_table(TRANSACTIONS)
            .map_err(database("open transactions"))?;
        let objects = txn.open_table(OBJECTS).map_err(database("open objects"))?;
        let Some(record) = super::read_transaction(&transactions, tid)? else {
            return Ok(None);
        };
        let mut undo = Vec::new();
        for oid in record.oids {
            if partition_of(oid, num_partitions) != partition
                || objects
                    .get((oid, tid))
                    .map_err(database("read revision"))?
                    .is_none()
            {
                continue;
            }
            let before = objects
                .range((oid, Tid::ZERO)..(oid, tid))
                .map_err(database("find earlier revision"))?
                .next_back()
                .transpose()
                .map_err(database("read earlier revision"))?
                .map(|(key, _)| key.value().1);
            undo.push(UndoRecord {
                oid,
                current: last_serial(&objects, oid)?,
                before,
            });
        }
        Ok(Some(undo))
    }

    /// The revision current at `at` (included) of every object of `partition` after
    /// `after`, in OID order: about `max_bytes` of data (at least one revision).
    pub fn objects_at(
        &self,
        partition: u32,
        num_partitions: u32,
        at: Tid,
        after: Option<Oid>,
        max_bytes: usize,
    ) -> Result<ObjectsAtPage, EngineError> {
        let mut page = ObjectsAtPage {
            objects: Vec::new(),
            resume: None,
        };
        let first = match after {
            Some(oid) => match oid.0.checked_add(1) {
                Some(next) => Oid(next),
                None => return Ok(page),
            },
            None => Oid(0),
        };
        let txn = self.db.begin_read().map_err(database("begin read"))?;
        let objects = txn.open_table(OBJECTS).map_err(database("open objects"))?;
        let data_rows = LazyData::new(&txn);
        let mut bytes = 0;
        // The object of the partition being looked at, and its last revision at or before
        // `at`; and the last object looked at, whatever its partition.
        let mut current: Option<(Oid, Option<Tid>)> = None;
        let mut last_seen: Option<Oid> = None;
        let finish = |page: &mut ObjectsAtPage,
                      object: Option<(Oid, Option<Tid>)>,
                      bytes: &mut usize|
         -> Result<(), EngineError> {
            if let Some((oid, Some(serial))) = object
                && let Some((data, _)) = read_revision(&objects, &data_rows, oid, serial)?
            {
                *bytes += RECORD_OVERHEAD + data.as_bytes().len();
                page.objects.push((oid, serial, data));
            }
            Ok(())
        };
        for (looked, entry) in objects
            .range((first, Tid::ZERO)..)
            .map_err(database("scan revisions"))?
            .enumerate()
        {
            let (key, _) = entry.map_err(database("read revision"))?;
            let (oid, tid) = key.value();
            if let Some(seen) = last_seen.filter(|seen| *seen != oid) {
                // Every revision of `seen` was looked at.
                let done = current.take();
                finish(&mut page, done, &mut bytes)?;
                if bytes >= max_bytes || looked >= SCAN_LIMIT {
                    page.resume = Some(seen);
                    return Ok(page);
                }
            }
            last_seen = Some(oid);
            if partition_of(oid, num_partitions) != partition {
                continue;
            }
            let entry = current.get_or_insert((oid, None));
            if tid <= at {
                entry.1 = Some(tid);
            }
        }
        finish(&mut page, current, &mut bytes)?;
        Ok(page)
    }

    /// How many objects of `partition` have a latest revision that is not a deletion, and the
    /// bytes of the content of all revisions of its objects.
    pub fn partition_size(
        &self,
        partition: u32,
        num_partitions: u32,
    ) -> Result<PartitionSize, EngineError> {
        let txn = self.db.begin_read().map_err(database("begin read"))?;
        let objects = txn.open_table(OBJECTS).map_err(database("open objects"))?;
        let mut size = PartitionSize::default();
        let mut latest: Option<(Oid, bool)> = None;
        for entry in objects.iter().map_err(database("scan revisions"))? {
            let (key, record) = entry.map_err(database("read revision"))?;
            let (oid, _) = key.value();
            if partition_of(oid, num_partitions) != partition {
                continue;
            }
            let record: ObjectRecord = decode(OBJECTS_NAME, record.value())?;
            size.bytes += record.data.content_len();
            let deleted = matches!(
                record.data,
                StoredData::Content(crate::object::ObjectData::Deleted)
            );
            if let Some((previous, previous_deleted)) = latest
                && previous != oid
                && !previous_deleted
            {
                size.objects += 1;
            }
            latest = Some((oid, deleted));
        }
        if latest.is_some_and(|(_, deleted)| !deleted) {
            size.objects += 1;
        }
        Ok(size)
    }
}

/// Adds a transaction's records to the page, unless it has none there.
fn push_records(
    page: &mut TransactionPage,
    tid: Tid,
    info: &crate::transaction::TransactionInfo,
    records: Vec<DataRecord>,
) {
    if !records.is_empty() {
        page.transactions.push(TransactionRecords {
            tid,
            info: info.clone(),
            records,
        });
    }
}
