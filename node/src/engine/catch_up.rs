//! One partition's history, exported and imported in batches bounded in bytes, with the
//! importer's progress kept on disk in the same write as the data.
//!
//! A storage catching up on partition `p` up to TID `B` first copies the transactions touching
//! `p` ([`Engine::partition_transactions`], [`Engine::import_transactions`]), then the revisions of
//! `p`'s objects ([`Engine::partition_objects`], [`Engine::import_objects`]). Each import records
//! a [`ReplicationProgress`]: what of `p` the store is known to hold whole. After a crash, or
//! when the source fails, the next source is asked from there, not from the start; importing
//! what is already here again changes nothing.

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::data::LazyData;
use super::error::database;
use super::records::{TransactionRecord, decode, encode};
use super::replication::{merge_objects, merge_transactions};
use super::tables::{OBJECTS, PROGRESS, PROGRESS_NAME, TRANSACTIONS, TRANSACTIONS_NAME};
use super::{
    Engine, EngineError, ObjectBatch, ObjectCursor, ReplicatedObject, WriteBatch, read_revision,
};
use crate::ids::{Oid, Tid};
use crate::object::{Digest, ObjectData};
use crate::partition::partition_of;
use crate::transaction::CommittedTransaction;

/// How many committed transactions one export looks at, at most, whether they touch the
/// partition or not: a batch of a rarely written partition still answers in bounded time.
const SCAN_LIMIT: usize = 16_384;

/// Bytes a transaction or revision costs in a batch beyond its ids and data (its encoding's
/// lengths and tags, generously).
const ENTRY_OVERHEAD: usize = 48;

/// What of one partition a store holds whole, as far as replication knows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationProgress {
    /// Every transaction touching the partition up to this TID is here.
    pub transactions: Tid,
    /// Every revision of the partition's objects up to this cursor, in (TID, OID) order, is
    /// here.
    pub objects: ObjectCursor,
}

impl ReplicationProgress {
    /// A store known to hold the whole partition up to `tid`.
    pub fn complete_to(tid: Tid) -> Self {
        Self {
            transactions: tid,
            objects: ObjectCursor {
                tid,
                oid: Oid(u64::MAX),
            },
        }
    }

    /// The later of two facts about the same store: each says what it holds, so both hold.
    pub fn max(self, other: Self) -> Self {
        Self {
            transactions: self.transactions.max(other.transactions),
            objects: self.objects.max(other.objects),
        }
    }
}

/// A batch of one partition's transactions and where to resume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionBatch {
    /// Transactions in TID order, each listing only the partition's objects.
    pub transactions: Vec<CommittedTransaction>,
    /// The TID to ask the next batch after; `None` when nothing is left up to the bound.
    pub resume: Option<Tid>,
}

impl Engine {
    /// The transactions touching `partition` (of `num_partitions`) with TIDs in
    /// `(after, up_to]`, in TID order, until about `max_bytes` of them (at least one).
    pub fn partition_transactions(
        &self,
        partition: u32,
        num_partitions: u32,
        after: Tid,
        up_to: Tid,
        max_bytes: usize,
    ) -> Result<TransactionBatch, EngineError> {
        let done = TransactionBatch {
            transactions: Vec::new(),
            resume: None,
        };
        let Some(first) = after.next().filter(|first| *first <= up_to) else {
            return Ok(done);
        };
        let txn = self.db.begin_read().map_err(database("begin read"))?;
        let transactions = txn
            .open_table(TRANSACTIONS)
            .map_err(database("open transactions"))?;
        let mut batch = done;
        let mut bytes = 0;
        for (scanned, entry) in transactions
            .range(first..=up_to)
            .map_err(database("scan transactions"))?
            .enumerate()
        {
            let (tid, record) = entry.map_err(database("read transaction"))?;
            let tid = tid.value();
            if scanned == SCAN_LIMIT || bytes >= max_bytes {
                // `tid` is not looked at yet: resume just before it.
                batch.resume = Some(Tid(tid.0.saturating_sub(1)));
                return Ok(batch);
            }
            let record: TransactionRecord = decode(TRANSACTIONS_NAME, record.value())?;
            let oids: Vec<Oid> = record
                .oids
                .into_iter()
                .filter(|oid| partition_of(*oid, num_partitions) == partition)
                .collect();
            if oids.is_empty() {
                continue;
            }
            bytes += ENTRY_OVERHEAD
                + 8 * oids.len()
                + record.info.user.len()
                + record.info.description.len()
                + record.info.extension.len();
            batch.transactions.push(CommittedTransaction {
                tid,
                oids,
                info: record.info,
            });
        }
        Ok(batch)
    }

    /// The revisions of `partition`'s objects after `after` in (TID, OID) order, with TIDs up
    /// to `up_to`, as many as fit in `max_bytes` (at least one, whatever its size; a revision
    /// larger than `max_bytes` comes alone).
    pub fn partition_objects(
        &self,
        partition: u32,
        num_partitions: u32,
        after: ObjectCursor,
        up_to: Tid,
        max_bytes: usize,
    ) -> Result<ObjectBatch, EngineError> {
        let mut batch = ObjectBatch {
            objects: Vec::new(),
            resume: None,
        };
        if after.tid > up_to {
            return Ok(batch);
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
        // Walking transactions rather than the (oid, tid)-keyed objects yields TID order.
        for entry in transactions
            .range(after.tid..=up_to)
            .map_err(database("scan transactions"))?
        {
            let (tid, record) = entry.map_err(database("read transaction"))?;
            let tid = tid.value();
            let record: TransactionRecord = decode(TRANSACTIONS_NAME, record.value())?;
            for oid in record.oids {
                let cursor = ObjectCursor { tid, oid };
                if cursor <= after {
                    continue;
                }
                if looked == SCAN_LIMIT {
                    // Everything up to `last` was looked at, and `last` is past `after`.
                    batch.resume = Some(last);
                    return Ok(batch);
                }
                looked += 1;
                if partition_of(oid, num_partitions) != partition {
                    last = cursor;
                    continue;
                }
                // An undo's back-pointer is exported as the content it points at.
                let Some((data, digest)) = read_revision(&objects, &data_rows, oid, tid)? else {
                    last = cursor;
                    continue;
                };
                let size = ENTRY_OVERHEAD + data.as_bytes().len();
                if !batch.objects.is_empty() && bytes + size > max_bytes {
                    // A revision that does not fit starts the next batch, alone if it is
                    // larger than a batch: the asker then fetches it in parts.
                    batch.resume = Some(last);
                    return Ok(batch);
                }
                bytes += size;
                last = cursor;
                batch.objects.push(ReplicatedObject {
                    oid,
                    tid,
                    data,
                    digest,
                });
            }
        }
        Ok(batch)
    }

    /// Imports a batch of [`partition_transactions`](Self::partition_transactions) from
    /// another replica and records `progress` for `partition`, durably and in one write.
    pub fn import_transactions(
        &self,
        partition: u32,
        batch: &[CommittedTransaction],
        progress: ReplicationProgress,
    ) -> Result<(), EngineError> {
        self.write_one(|write| write.import_transactions(partition, batch, progress, true))
    }

    /// Imports a batch of [`partition_objects`](Self::partition_objects) from another replica
    /// (after their transactions) and records `progress` for `partition`, durably and in one
    /// write. A batch with a revision that does not match its digest is refused whole.
    pub fn import_objects(
        &self,
        partition: u32,
        batch: &[ReplicatedObject],
        progress: ReplicationProgress,
    ) -> Result<(), EngineError> {
        self.write_one(|write| write.import_objects(partition, batch, progress, true))
    }

    /// The content and digest of revision `tid` of `oid` (an undo's back-pointer followed),
    /// `None` if there is no such revision: what a source serves of a revision too large for
    /// one batch, in parts.
    pub fn revision_at(
        &self,
        oid: Oid,
        tid: Tid,
    ) -> Result<Option<(ObjectData, Digest)>, EngineError> {
        let txn = self.db.begin_read().map_err(database("begin read"))?;
        let objects = txn.open_table(OBJECTS).map_err(database("open objects"))?;
        let data_rows = LazyData::new(&txn);
        read_revision(&objects, &data_rows, oid, tid)
    }

    /// What replication recorded of `partition` here; the default (nothing) if it never ran.
    pub fn replication_progress(&self, partition: u32) -> Result<ReplicationProgress, EngineError> {
        let txn = self.db.begin_read().map_err(database("begin read"))?;
        let progress = match txn.open_table(PROGRESS) {
            Ok(table) => table,
            // Created by the first import.
            Err(redb::TableError::TableDoesNotExist(_)) => {
                return Ok(ReplicationProgress::default());
            }
            Err(error) => return Err(database("open replication progress")(error)),
        };
        match progress
            .get(partition)
            .map_err(database("read replication progress"))?
        {
            Some(record) => decode(PROGRESS_NAME, record.value()),
            None => Ok(ReplicationProgress::default()),
        }
    }
}

impl WriteBatch<'_> {
    /// [`Engine::import_transactions`] in this batch; makes it durable if `durable`.
    ///
    /// An import left without fsync becomes durable with the next durable commit, and until
    /// then a crash loses it together with the progress it recorded, so the partition is asked
    /// again from the last durable progress: nothing is lost but work. Importing a partition's
    /// batches that way lets redb write the pages a later batch changes again only once, at
    /// the durable commit, not once per batch (see [`StorageConfig::replication_sync_bytes`]).
    ///
    /// [`StorageConfig::replication_sync_bytes`]: crate::storage::StorageConfig::replication_sync_bytes
    pub fn import_transactions(
        &mut self,
        partition: u32,
        batch: &[CommittedTransaction],
        progress: ReplicationProgress,
        durable: bool,
    ) -> Result<(), EngineError> {
        self.write(
            |_| durable,
            |txn| {
                merge_transactions(txn, batch)?;
                record_progress(txn, partition, progress)
            },
        )
    }

    /// [`Engine::import_objects`] in this batch; makes it durable if `durable` (as for
    /// [`import_transactions`](Self::import_transactions)). A revision that does not match its
    /// digest, or whose transaction is not here, is refused before anything is written.
    pub fn import_objects(
        &mut self,
        partition: u32,
        batch: &[ReplicatedObject],
        progress: ReplicationProgress,
        durable: bool,
    ) -> Result<(), EngineError> {
        self.write(
            |_| durable,
            |txn| {
                merge_objects(txn, batch)?;
                record_progress(txn, partition, progress)
            },
        )
    }
}

impl WriteBatch<'_> {
    /// Forgets what replication recorded of `partition` (its copy here is to be made again from
    /// the start: an operator found it bad); durable. Nothing recorded is no error.
    pub fn forget_progress(&mut self, partition: u32) -> Result<(), EngineError> {
        self.write(
            |_| true,
            |txn| {
                let mut table = txn
                    .open_table(PROGRESS)
                    .map_err(database("open replication progress"))?;
                table
                    .remove(partition)
                    .map_err(database("forget replication progress"))?;
                Ok(())
            },
        )
    }
}

/// Records `progress` for `partition` in `txn`, keeping what an earlier record says beyond it.
fn record_progress(
    txn: &redb::WriteTransaction,
    partition: u32,
    progress: ReplicationProgress,
) -> Result<(), EngineError> {
    let mut table = txn
        .open_table(PROGRESS)
        .map_err(database("open replication progress"))?;
    let known = match table
        .get(partition)
        .map_err(database("read replication progress"))?
    {
        Some(record) => decode::<ReplicationProgress>(PROGRESS_NAME, record.value())?,
        None => ReplicationProgress::default(),
    };
    let record = encode(PROGRESS_NAME, &known.max(progress))?;
    table
        .insert(partition, record.as_slice())
        .map_err(database("record replication progress"))?;
    Ok(())
}
