//! Reading committed revisions.

use redb::{ReadableDatabase, ReadableTable};

use super::data::LazyData;
use super::error::database;
use super::records::{Revision, RevisionBefore};
use super::tables::{OBJECTS, TRANSACTIONS};
use super::{Engine, EngineError, read_revision};
use crate::ids::{Oid, Tid};

impl Engine {
    /// The latest committed revision of `oid`, or `None` if it has none here.
    pub fn load(&self, oid: Oid) -> Result<Option<Revision>, EngineError> {
        Ok(self.load_before(oid, Tid::MAX)?.map(|found| found.revision))
    }

    /// The revision of `oid` that was current just before transaction `before`, and the TID of
    /// the revision that replaced it (`None` if none did). `None` if `oid` had no revision
    /// before `before`.
    pub fn load_before(
        &self,
        oid: Oid,
        before: Tid,
    ) -> Result<Option<RevisionBefore>, EngineError> {
        let txn = self.db.begin_read().map_err(database("begin read"))?;
        let objects = txn.open_table(OBJECTS).map_err(database("open objects"))?;
        let data_rows = LazyData::new(&txn);
        let found = objects
            .range((oid, Tid::ZERO)..(oid, before))
            .map_err(database("find revision"))?
            .next_back()
            .transpose()
            .map_err(database("read revision"))?;
        let Some((key, _)) = found else {
            return Ok(None);
        };
        let tid = key.value().1;
        let (data, digest) = read_revision(&objects, &data_rows, oid, tid)?
            .ok_or(EngineError::NoSuchRevision { oid, tid })?;
        // The first revision at or after `before` is the one that replaced `tid`.
        let next_serial = objects
            .range((oid, before)..=(oid, Tid::MAX))
            .map_err(database("find next revision"))?
            .next()
            .transpose()
            .map_err(database("read next revision"))?
            .map(|(key, _)| key.value().1);
        Ok(Some(RevisionBefore {
            revision: Revision {
                oid,
                tid,
                data,
                digest,
            },
            next_serial,
        }))
    }

    /// The TID of the last transaction committed here, [`Tid::ZERO`] if none.
    pub fn last_tid(&self) -> Result<Tid, EngineError> {
        let txn = self.db.begin_read().map_err(database("begin read"))?;
        let transactions = txn
            .open_table(TRANSACTIONS)
            .map_err(database("open transactions"))?;
        let last = transactions
            .last()
            .map_err(database("read last transaction"))?;
        Ok(last.map_or(Tid::ZERO, |(tid, _)| tid.value()))
    }

    /// Whether a transaction committed here at `tid` (a TID names one commit).
    pub fn holds_transaction(&self, tid: Tid) -> Result<bool, EngineError> {
        let txn = self.db.begin_read().map_err(database("begin read"))?;
        let transactions = txn
            .open_table(TRANSACTIONS)
            .map_err(database("open transactions"))?;
        let found = transactions
            .get(tid)
            .map_err(database("read a transaction"))?;
        Ok(found.is_some())
    }
}
