//! Export and import of committed history, for a replica catching up.
//!
//! A replica that is behind first copies the transactions it misses
//! ([`Engine::transactions_after`], [`Engine::apply_replicated_transactions`]), then the object
//! revisions of its partitions ([`Engine::objects_for`], [`Engine::apply_replicated_objects`]).
//! Both go in bounded batches, each ending with a cursor to resume from, so a replication cut
//! off by a crash or a lost link goes on where it stopped rather than from scratch.
//!
//! Revisions travel as content: an undo's back-pointer is exported as the data it points at,
//! with the same digest, and stored as a copy on the receiving replica.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use redb::{ReadableDatabase, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::data::{DataRows, LazyData};
use super::error::database;
use super::records::{ObjectRecord, TransactionRecord, decode, encode, encode_into};
use super::tables::{OBJECTS, OBJECTS_NAME, TRANSACTIONS, TRANSACTIONS_NAME};
use super::{Engine, EngineError, put_revision, read_revision, read_transaction};
use crate::ids::{Oid, Tid};
use crate::object::{Digest, ObjectData};
use crate::partition::PartitionSet;
use crate::transaction::CommittedTransaction;

/// A position in the history of object revisions, ordered by TID then OID.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectCursor {
    /// The transaction of the last revision returned.
    pub tid: Tid,
    /// The object of the last revision returned.
    pub oid: Oid,
}

impl ObjectCursor {
    /// Before every revision: no transaction commits at [`Tid::ZERO`].
    pub const START: ObjectCursor = ObjectCursor {
        tid: Tid::ZERO,
        oid: Oid(0),
    };
}

/// One object revision as replicated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicatedObject {
    /// The object.
    pub oid: Oid,
    /// The transaction that wrote the revision.
    pub tid: Tid,
    /// The content.
    pub data: ObjectData,
    /// The digest of `data`, checked on import.
    pub digest: Digest,
}

/// A batch of revisions and where to resume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectBatch {
    /// Revisions in (TID, OID) order.
    pub objects: Vec<ReplicatedObject>,
    /// The cursor to ask the next batch after; `None` when the history is exhausted.
    pub resume: Option<ObjectCursor>,
}

impl Engine {
    /// Up to `limit` committed transactions with TIDs greater than `after`, in TID order.
    pub fn transactions_after(
        &self,
        after: Tid,
        limit: usize,
    ) -> Result<Vec<CommittedTransaction>, EngineError> {
        let Some(first) = after.next() else {
            return Ok(Vec::new());
        };
        let txn = self.db.begin_read().map_err(database("begin read"))?;
        let transactions = txn
            .open_table(TRANSACTIONS)
            .map_err(database("open transactions"))?;
        let mut batch = Vec::new();
        for entry in transactions
            .range(first..)
            .map_err(database("scan transactions"))?
            .take(limit)
        {
            let (tid, record) = entry.map_err(database("read transaction"))?;
            let record: TransactionRecord = decode(TRANSACTIONS_NAME, record.value())?;
            batch.push(CommittedTransaction {
                tid: tid.value(),
                oids: record.oids,
                info: record.info,
            });
        }
        Ok(batch)
    }

    /// Up to `limit` revisions of objects in `partitions`, after `cursor` in (TID, OID) order.
    ///
    /// Start from [`ObjectCursor::START`] and pass each batch's
    /// [`resume`](ObjectBatch::resume) to the next call.
    pub fn objects_for(
        &self,
        partitions: &PartitionSet,
        cursor: ObjectCursor,
        limit: usize,
    ) -> Result<ObjectBatch, EngineError> {
        let txn = self.db.begin_read().map_err(database("begin read"))?;
        let transactions = txn
            .open_table(TRANSACTIONS)
            .map_err(database("open transactions"))?;
        let objects = txn.open_table(OBJECTS).map_err(database("open objects"))?;
        let data_rows = LazyData::new(&txn);
        let mut batch = Vec::new();
        if limit == 0 {
            return Ok(ObjectBatch {
                objects: batch,
                resume: Some(cursor),
            });
        }
        // Walking transactions rather than the (oid, tid)-keyed objects yields TID order.
        for entry in transactions
            .range(cursor.tid..)
            .map_err(database("scan transactions"))?
        {
            let (tid, record) = entry.map_err(database("read transaction"))?;
            let tid = tid.value();
            let record: TransactionRecord = decode(TRANSACTIONS_NAME, record.value())?;
            for oid in record.oids {
                if (ObjectCursor { tid, oid }) <= cursor || !partitions.contains(oid) {
                    continue;
                }
                // An undo's back-pointer is exported as the content it points at.
                let Some((data, digest)) = read_revision(&objects, &data_rows, oid, tid)? else {
                    continue;
                };
                batch.push(ReplicatedObject {
                    oid,
                    tid,
                    data,
                    digest,
                });
                if batch.len() == limit {
                    return Ok(ObjectBatch {
                        objects: batch,
                        resume: Some(ObjectCursor { tid, oid }),
                    });
                }
            }
        }
        Ok(ObjectBatch {
            objects: batch,
            resume: None,
        })
    }

    /// Imports transactions exported by [`transactions_after`](Self::transactions_after) on
    /// another replica. A transaction already here gains the objects it lacked.
    pub fn apply_replicated_transactions(
        &self,
        batch: &[CommittedTransaction],
    ) -> Result<(), EngineError> {
        self.write_one(|write| write.write(|_| true, |txn| merge_transactions(txn, batch)))
    }

    /// Imports revisions exported by [`objects_for`](Self::objects_for) on another replica,
    /// after their transactions. Every revision's digest is checked; a batch with a bad one is
    /// refused whole.
    pub fn apply_replicated_objects(&self, batch: &[ReplicatedObject]) -> Result<(), EngineError> {
        self.write_one(|write| write.write(|_| true, |txn| merge_objects(txn, batch)))
    }
}

/// Writes replicated transactions in `txn`; a transaction already here gains the objects it
/// lacked.
pub(super) fn merge_transactions(
    txn: &WriteTransaction,
    batch: &[CommittedTransaction],
) -> Result<(), EngineError> {
    {
        let mut transactions = txn
            .open_table(TRANSACTIONS)
            .map_err(database("open transactions"))?;
        for transaction in batch {
            let existing = read_transaction(&transactions, transaction.tid)?;
            let mut record = existing.unwrap_or_else(|| TransactionRecord {
                oids: Vec::new(),
                info: transaction.info.clone(),
            });
            record.oids.extend(&transaction.oids);
            record.oids.sort_unstable();
            record.oids.dedup();
            let record = encode(TRANSACTIONS_NAME, &record)?;
            transactions
                .insert(transaction.tid, record.as_slice())
                .map_err(database("import transaction"))?;
        }
    }
    Ok(())
}

/// Writes replicated revisions in `txn`, after checking each one's digest and that its
/// transaction is here: every refusal comes before the first write, so a refused batch leaves
/// a [`WriteBatch`](super::WriteBatch) usable.
pub(super) fn merge_objects(
    txn: &WriteTransaction,
    batch: &[ReplicatedObject],
) -> Result<(), EngineError> {
    let mut transactions = txn
        .open_table(TRANSACTIONS)
        .map_err(database("open transactions"))?;
    let mut objects = txn.open_table(OBJECTS).map_err(database("open objects"))?;
    let mut rows = DataRows::new(txn);
    let mut encoded = Vec::new();
    // Each transaction of the batch is read (decoded) once, not once per revision: a record
    // lists every object of its transaction, so reading it per revision made a batch cost
    // revisions x objects per transaction (thousands squared for small objects; profiled as
    // most of an importing storage's CPU). Whether a record gains objects is known per record,
    // and each that does is written once.
    let mut records: BTreeMap<Tid, (TransactionRecord, bool)> = BTreeMap::new();
    for object in batch {
        let (oid, tid) = (object.oid, object.tid);
        if object.data.digest() != object.digest {
            return Err(EngineError::DigestMismatch { oid, tid });
        }
        if let Entry::Vacant(entry) = records.entry(tid) {
            // Writing revisions adds objects to transactions, never removes one: a transaction
            // found here now is still here when its revision is written below.
            let record = read_transaction(&transactions, tid)?
                .ok_or(EngineError::MissingTransaction { oid, tid })?;
            entry.insert((record, false));
        }
    }
    for object in batch {
        let (oid, tid) = (object.oid, object.tid);
        let (record, changed) = records
            .get_mut(&tid)
            .ok_or(EngineError::MissingTransaction { oid, tid })?;
        if let Err(position) = record.oids.binary_search(&oid) {
            record.oids.insert(position, oid);
            *changed = true;
        }
        // The content goes where a store puts it (a data row of this store's if it is
        // large): ids are local, the batch carries content only.
        let record = ObjectRecord {
            data: rows.store(object.data.clone())?,
            digest: object.digest,
        };
        // Encoded apart, not in the space `insert_reserve` gives: `insert` hands back the
        // record it replaces (the revision imported again), whose data row must go.
        encode_into(OBJECTS_NAME, &record, &mut encoded)?;
        put_revision(&mut objects, &mut rows, oid, tid, &encoded)?;
    }
    for (tid, (record, changed)) in records {
        if changed {
            let record = encode(TRANSACTIONS_NAME, &record)?;
            transactions
                .insert(tid, record.as_slice())
                .map_err(database("import transaction"))?;
        }
    }
    Ok(())
}
