//! Reading an object's history: its last serial, one revision by serial, and its revisions
//! newest first with their transactions (ZODB's `loadSerial` and `history`); and an undo
//! staged without the serial check.

use redb::ReadableDatabase;

use super::data::LazyData;
use super::error::database;
use super::records::StoredData;
use super::tables::{OBJECTS, TRANSACTIONS};
use super::{
    Engine, EngineError, content_record, last_serial, read_record, read_revision, read_transaction,
};
use crate::ids::{Oid, Tid};
use crate::object::ObjectData;
use crate::transaction::HistoryEntry;

impl Engine {
    /// The TID of the last committed revision of `oid`, [`Tid::ZERO`] if it has none.
    pub fn last_serial(&self, oid: Oid) -> Result<Tid, EngineError> {
        let txn = self.db.begin_read().map_err(database("begin read"))?;
        let objects = txn.open_table(OBJECTS).map_err(database("open objects"))?;
        last_serial(&objects, oid)
    }

    /// Whether `oid` has any committed revision here.
    pub fn has_object(&self, oid: Oid) -> Result<bool, EngineError> {
        Ok(self.last_serial(oid)? != Tid::ZERO)
    }

    /// The content of revision `serial` of `oid`, following an undo's back-pointer; `None`
    /// when there is no such revision.
    pub fn load_serial(&self, oid: Oid, serial: Tid) -> Result<Option<ObjectData>, EngineError> {
        let txn = self.db.begin_read().map_err(database("begin read"))?;
        let objects = txn.open_table(OBJECTS).map_err(database("open objects"))?;
        let data_rows = LazyData::new(&txn);
        Ok(read_revision(&objects, &data_rows, oid, serial)?.map(|(data, _)| data))
    }

    /// The TID of the revision of `oid` after `serial`, `None` when `serial` is the latest.
    pub fn next_serial(&self, oid: Oid, serial: Tid) -> Result<Option<Tid>, EngineError> {
        let Some(after) = serial.next() else {
            return Ok(None);
        };
        let txn = self.db.begin_read().map_err(database("begin read"))?;
        let objects = txn.open_table(OBJECTS).map_err(database("open objects"))?;
        let next = objects
            .range((oid, after)..=(oid, Tid::MAX))
            .map_err(database("find next revision"))?
            .next()
            .transpose()
            .map_err(database("read next revision"))?
            .map(|(key, _)| key.value().1);
        Ok(next)
    }

    /// Up to `size` revisions of `oid`, newest first, each with what its transaction said
    /// and the size of its data; empty when the object has no revision here.
    pub fn history(&self, oid: Oid, size: usize) -> Result<Vec<HistoryEntry>, EngineError> {
        let txn = self.db.begin_read().map_err(database("begin read"))?;
        let objects = txn.open_table(OBJECTS).map_err(database("open objects"))?;
        let transactions = txn
            .open_table(TRANSACTIONS)
            .map_err(database("open transactions"))?;
        let mut entries = Vec::new();
        for entry in objects
            .range((oid, Tid::ZERO)..=(oid, Tid::MAX))
            .map_err(database("scan revisions"))?
            .rev()
            .take(size)
        {
            let (key, _) = entry.map_err(database("read revision"))?;
            let tid = key.value().1;
            // The record says the content's length: a data row is not read for it.
            let size =
                content_record(&objects, oid, tid)?.map_or(0, |(stored, _)| stored.content_len());
            let info = read_transaction(&transactions, tid)?
                .map(|record| record.info)
                .unwrap_or_default();
            entries.push(HistoryEntry { tid, info, size });
        }
        Ok(entries)
    }

    /// The TID whose content revision `tid` of `oid` reuses (an undo's back-pointer), `None`
    /// when the revision holds its own content or does not exist.
    pub fn data_txn(&self, oid: Oid, tid: Tid) -> Result<Option<Tid>, EngineError> {
        let txn = self.db.begin_read().map_err(database("begin read"))?;
        let objects = txn.open_table(OBJECTS).map_err(database("open objects"))?;
        Ok(
            match read_record(&objects, oid, tid)?.map(|record| record.data) {
                Some(StoredData::SameAs(target)) => Some(target),
                _ => None,
            },
        )
    }

    /// Records an undo like [`store_undo`](Self::store_undo) without checking `serial`: for a
    /// partition still catching up by replication (see
    /// [`store_pending_unchecked`](Self::store_pending_unchecked)). The revision restored must
    /// be here.
    pub fn store_undo_unchecked(
        &self,
        ttid: Tid,
        oid: Oid,
        serial: Tid,
        restore: Tid,
    ) -> Result<(), EngineError> {
        self.write_one(|batch| batch.store_undo_unchecked(ttid, oid, serial, restore))
    }
}
