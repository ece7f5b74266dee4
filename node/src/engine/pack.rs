//! Pack and garbage collection (ZODB's `pack(t, referencesf)`), in bounded steps.
//!
//! Packing at TID `t` removes every revision older than `t` that is not current at `t` (the
//! last revision at or before `t` stays, and everything after), and an object whose current
//! revision at `t` is a deletion (its creation was undone) entirely when nothing follows.
//! Transactions left without revisions go too, and the data rows of the revisions removed. A
//! kept revision that is an undo's back-pointer at a removed one gets its content: the first
//! one the removed revision's own (its data row moves, uncopied), any other a copy, as a data
//! row belongs to one record. The pack TID is remembered: the undo log stops there, and
//! transactions at or before it cannot be undone.
//!
//! Garbage collection needs the references inside the objects' data, which only the
//! application reads (ZODB's `referencesf` on pickles): the application computes which
//! objects are unreachable at `t` and [`collect`](Engine::collect)s them.

use redb::{ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};

use super::data::DataRows;
use super::error::database;
use super::records::{ObjectRecord, StoredData, TransactionRecord, encode, insert_record};
use super::tables::{OBJECTS, OBJECTS_NAME, TRANSACTIONS, TRANSACTIONS_NAME};
use super::{Engine, EngineError, WriteBatch, content_record, read_record, read_transaction};
use crate::ids::{Oid, Tid};
use crate::object::ObjectData;

/// Facts about the whole store: name -> 8-byte value.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The TID of the last pack, in [`META`].
const PACKED: &str = "packed";

/// What one pack step did ([`Engine::pack_step`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PackStep {
    /// The object to go on after; `None` when the store is packed.
    pub resume: Option<Oid>,
    /// Revisions removed.
    pub removed: u64,
}

impl Engine {
    /// The TID of the last pack ([`Tid::ZERO`] if the store was never packed).
    pub fn packed(&self) -> Result<Tid, EngineError> {
        let txn = self.db.begin_read().map_err(database("begin read"))?;
        let meta = match txn.open_table(META) {
            Ok(meta) => meta,
            // Created by the first pack.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Tid::ZERO),
            Err(error) => return Err(database("open meta")(error)),
        };
        Ok(meta
            .get(PACKED)
            .map_err(database("read pack TID"))?
            .map_or(Tid::ZERO, |packed| Tid(packed.value())))
    }

    /// Packs the objects after `after` (in OID order), at most `max_objects` of them, at
    /// `tid`; see the documentation of `engine/pack.rs`. Durable when it returns.
    pub fn pack_step(
        &self,
        tid: Tid,
        after: Option<Oid>,
        max_objects: usize,
    ) -> Result<PackStep, EngineError> {
        let mut batch = self.write_batch()?;
        let step = batch.pack_step(tid, after, max_objects)?;
        batch.commit()?;
        Ok(step)
    }

    /// Removes every revision of each of `oids` that has none after `tid` (unreachable at a
    /// pack at `tid`; one written since is reachable again), with the transactions left
    /// without revisions. Returns how many revisions went. Durable when it returns.
    pub fn collect(&self, tid: Tid, oids: &[Oid]) -> Result<u64, EngineError> {
        let mut batch = self.write_batch()?;
        let removed = batch.collect(tid, oids)?;
        batch.commit()?;
        Ok(removed)
    }
}

impl WriteBatch<'_> {
    /// [`Engine::pack_step`] in this batch, which it makes durable.
    pub fn pack_step(
        &mut self,
        tid: Tid,
        after: Option<Oid>,
        max_objects: usize,
    ) -> Result<PackStep, EngineError> {
        self.write(|_| true, |txn| pack_step(txn, tid, after, max_objects))
    }

    /// [`Engine::collect`] in this batch, which it makes durable.
    pub fn collect(&mut self, tid: Tid, oids: &[Oid]) -> Result<u64, EngineError> {
        self.write(|_| true, |txn| collect(txn, tid, oids))
    }
}

/// [`Engine::pack_step`] on `txn`.
fn pack_step(
    txn: &WriteTransaction,
    tid: Tid,
    after: Option<Oid>,
    max_objects: usize,
) -> Result<PackStep, EngineError> {
    let first = match after {
        Some(oid) => match oid.0.checked_add(1) {
            Some(next) => Oid(next),
            None => return Ok(PackStep::default()),
        },
        None => Oid(0),
    };
    let mut step = PackStep::default();
    let mut meta = txn.open_table(META).map_err(database("open meta"))?;
    let packed = meta
        .get(PACKED)
        .map_err(database("read pack TID"))?
        .map_or(0, |packed| packed.value());
    meta.insert(PACKED, packed.max(tid.0))
        .map_err(database("record pack TID"))?;
    let mut objects = txn.open_table(OBJECTS).map_err(database("open objects"))?;
    let mut rows = DataRows::new(txn);
    let mut oid = first;
    for _ in 0..max_objects {
        let Some(next) = next_object(&objects, oid)? else {
            step.resume = None;
            break;
        };
        step.removed += pack_object(txn, &mut objects, &mut rows, next, tid)?;
        step.resume = Some(next);
        match next.0.checked_add(1) {
            Some(following) => oid = Oid(following),
            None => {
                step.resume = None;
                break;
            }
        }
    }
    Ok(step)
}

/// [`Engine::collect`] on `txn`.
fn collect(txn: &WriteTransaction, tid: Tid, oids: &[Oid]) -> Result<u64, EngineError> {
    let mut removed = 0;
    let mut objects = txn.open_table(OBJECTS).map_err(database("open objects"))?;
    let mut rows = DataRows::new(txn);
    for oid in oids {
        let revisions = revisions_of(&objects, *oid)?;
        if revisions.last().is_none_or(|last| *last > tid) {
            continue;
        }
        for revision in revisions {
            remove_revision(txn, &mut objects, &mut rows, *oid, revision, true)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The first object at or after `from` that has a revision.
fn next_object(
    objects: &Table<(Oid, Tid), &'static [u8]>,
    from: Oid,
) -> Result<Option<Oid>, EngineError> {
    Ok(objects
        .range((from, Tid::ZERO)..)
        .map_err(database("find next object"))?
        .next()
        .transpose()
        .map_err(database("read next object"))?
        .map(|(key, _)| key.value().0))
}

/// The TIDs of every revision of `oid`, oldest first.
fn revisions_of(
    objects: &impl ReadableTable<(Oid, Tid), &'static [u8]>,
    oid: Oid,
) -> Result<Vec<Tid>, EngineError> {
    let mut tids = Vec::new();
    for entry in objects
        .range((oid, Tid::ZERO)..=(oid, Tid::MAX))
        .map_err(database("scan revisions"))?
    {
        let (key, _) = entry.map_err(database("read revision"))?;
        tids.push(key.value().1);
    }
    Ok(tids)
}

/// Packs one object at `tid`; returns how many of its revisions went.
fn pack_object(
    txn: &WriteTransaction,
    objects: &mut Table<(Oid, Tid), &'static [u8]>,
    rows: &mut DataRows<'_>,
    oid: Oid,
    tid: Tid,
) -> Result<u64, EngineError> {
    let revisions = revisions_of(objects, oid)?;
    let current = revisions.iter().rposition(|revision| *revision <= tid);
    let Some(current) = current else {
        return Ok(0);
    };
    let mut doomed: Vec<Tid> = revisions[..current].to_vec();
    let after_pack = &revisions[current + 1..];
    let current_tid = revisions[current];
    // A deletion is inline: the record tells, no data row is read.
    let deleted = matches!(
        content_record(objects, oid, current_tid)?,
        Some((StoredData::Content(ObjectData::Deleted), _))
    );
    if deleted && after_pack.is_empty() {
        // Gone at the pack TID, and nothing brought it back.
        doomed.push(current_tid);
    }
    if doomed.is_empty() {
        return Ok(0);
    }
    // Kept revisions that point at a doomed one get its content: the first takes the doomed
    // record's own (inline, or its data row, which then stays), the others a copy.
    let mut taken = Vec::new();
    for kept in revisions
        .iter()
        .filter(|revision| !doomed.contains(revision))
    {
        let Some(record) = read_record(objects, oid, *kept)? else {
            continue;
        };
        let StoredData::SameAs(target) = record.data else {
            continue;
        };
        if !doomed.contains(&target) {
            continue;
        }
        let Some((content, _)) = content_record(objects, oid, *kept)? else {
            continue;
        };
        let data = if taken.contains(&target) {
            let copy = content
                .content(&*rows.table()?)?
                .ok_or(EngineError::ChainedBackPointer { oid, tid: target })?;
            rows.store(copy)?
        } else {
            taken.push(target);
            content
        };
        let record = ObjectRecord {
            data,
            digest: record.digest,
        };
        insert_record(
            objects,
            OBJECTS_NAME,
            (oid, *kept),
            &record,
            "copy undone content",
        )?;
    }
    let removed = doomed.len() as u64;
    for revision in doomed {
        let release = !taken.contains(&revision);
        remove_revision(txn, objects, rows, oid, revision, release)?;
    }
    Ok(removed)
}

/// Removes revision `tid` of `oid` with its data row (unless `release` is false: a kept
/// revision took it), and `oid` from the transaction's record (the record with it when no
/// revision is left).
fn remove_revision(
    txn: &WriteTransaction,
    objects: &mut Table<(Oid, Tid), &'static [u8]>,
    rows: &mut DataRows<'_>,
    oid: Oid,
    tid: Tid,
    release: bool,
) -> Result<(), EngineError> {
    if let Some(removed) = objects
        .remove((oid, tid))
        .map_err(database("remove revision"))?
        && release
    {
        rows.release_encoded(OBJECTS_NAME, removed.value())?;
    }
    let mut transactions = txn
        .open_table(TRANSACTIONS)
        .map_err(database("open transactions"))?;
    let Some(mut record): Option<TransactionRecord> = read_transaction(&transactions, tid)? else {
        return Ok(());
    };
    record.oids.retain(|kept| *kept != oid);
    if record.oids.is_empty() {
        transactions
            .remove(tid)
            .map_err(database("remove transaction"))?;
    } else {
        let record = encode(TRANSACTIONS_NAME, &record)?;
        transactions
            .insert(tid, record.as_slice())
            .map_err(database("update transaction"))?;
    }
    Ok(())
}
