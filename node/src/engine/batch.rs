//! [`WriteBatch`]: several writes in one redb write transaction, committed with one fsync at
//! most — the group commit of the storage's persistence executor.
//!
//! Every write checks what it must (a serial, a vote, a TID's order) before it writes
//! anything, and says no with a *refusal* ([`EngineError::is_refusal`]): the batch goes on
//! and its other writes commit. Any other failure (redb's, a record that does not decode) may
//! come after part of the write; it *spoils* the batch, which then refuses further writes and
//! rolls back whole on [`commit`](WriteBatch::commit), so the caller does its writes again one
//! batch each to find the one that fails.

use redb::WriteTransaction;

use super::error::database;
use super::{Engine, EngineError};

/// Writes of several transactions in one redb write transaction; see the
/// documentation of `engine/batch.rs`.
///
/// ```
/// use replicast_node::engine::Engine;
/// use replicast_node::ids::{Oid, Tid};
/// use replicast_node::object::ObjectData;
/// use replicast_node::transaction::TransactionInfo;
///
/// let dir = tempfile::tempdir()?;
/// let engine = Engine::open(dir.path().join("store.redb"))?;
/// let mut batch = engine.write_batch()?;
/// for ttid in [Tid(100), Tid(200)] {
///     batch.store_pending(ttid, Oid(ttid.0), Tid::ZERO, ObjectData::from(b"x".to_vec()))?;
///     batch.vote(ttid, &TransactionInfo::default(), Some(&[Oid(ttid.0)]), |_| false)?;
/// }
/// let before = engine.syncs();
/// assert!(batch.commit()?, "votes are durable");
/// assert_eq!(engine.syncs(), before + 1, "two votes, one fsync");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct WriteBatch<'a> {
    pub(super) engine: &'a Engine,
    pub(super) txn: WriteTransaction,
    /// A write asked for durability.
    sync: bool,
    /// A write changed something.
    changed: bool,
    /// A write failed part-way.
    spoiled: bool,
}

impl std::fmt::Debug for WriteBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBatch")
            .field("sync", &self.sync)
            .field("changed", &self.changed)
            .field("spoiled", &self.spoiled)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Begins a batch of writes: one redb write transaction (redb has one writer at a time, so
    /// this waits for a batch still open elsewhere).
    pub fn write_batch(&self) -> Result<WriteBatch<'_>, EngineError> {
        let txn = self.db.begin_write().map_err(database("begin write"))?;
        Ok(WriteBatch {
            engine: self,
            txn,
            sync: false,
            changed: false,
            spoiled: false,
        })
    }

    /// Runs `write` as a batch of its own and commits it.
    pub(super) fn write_one(
        &self,
        write: impl FnOnce(&mut WriteBatch<'_>) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let mut batch = self.write_batch()?;
        // A refusal drops the batch: nothing was written.
        write(&mut batch)?;
        batch.commit().map(|_| ())
    }
}

impl WriteBatch<'_> {
    /// Makes the commit of this batch durable whatever its writes ask (a finish whose
    /// acknowledgement must not go out before its fsync).
    pub fn require_sync(&mut self) {
        self.sync = true;
    }

    /// Whether the commit will be durable (one fsync).
    pub fn needs_sync(&self) -> bool {
        self.sync
    }

    /// Whether a write failed part-way: the batch then rolls back whole.
    pub fn is_spoiled(&self) -> bool {
        self.spoiled
    }

    /// Commits every write that was not refused, durably if one of them asked for it; whether
    /// it was durable. A spoiled batch rolls back and fails with [`EngineError::BatchSpoiled`].
    pub fn commit(self) -> Result<bool, EngineError> {
        if self.spoiled {
            self.txn
                .abort()
                .map_err(database("roll back a spoiled batch"))?;
            return Err(EngineError::BatchSpoiled);
        }
        if !self.changed && !self.sync {
            // Every write was refused: nothing to commit.
            self.txn.abort().map_err(database("end an empty batch"))?;
            return Ok(false);
        }
        self.engine.commit(self.txn, self.sync, "commit batch")?;
        Ok(self.sync)
    }

    /// Runs one write on the batch's transaction: a refusal leaves the batch as it was,
    /// another error spoils it. `durable` marks the commit durable once the write is done.
    pub(super) fn write<T>(
        &mut self,
        durable: impl FnOnce(&T) -> bool,
        op: impl FnOnce(&WriteTransaction) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        if self.spoiled {
            return Err(EngineError::BatchSpoiled);
        }
        match op(&self.txn) {
            Ok(value) => {
                self.changed = true;
                self.sync |= durable(&value);
                Ok(value)
            }
            Err(error) => {
                if !error.is_refusal() {
                    self.spoiled = true;
                }
                Err(error)
            }
        }
    }
}
