//! The durable storage engine of a storage node, on [redb].
//!
//! It keeps every committed revision of the objects of its partitions, the committed
//! transactions, and the transactions in progress, following the two-phase commit of NEO:
//!
//! 1. [`store_pending`](Engine::store_pending) records an object of transaction `ttid` after
//!    checking it was written on top of the object's last committed revision
//!    ([`store_undo`](Engine::store_undo) records an earlier revision again, by reference);
//! 2. [`vote`](Engine::vote) makes the transaction's data durable (fsync) without making it
//!    visible, and checks for conflicts again;
//! 3. [`finish`](Engine::finish) makes it visible at its TID, atomically, or
//!    [`abort`](Engine::abort) forgets it.
//!
//! A revision's content of more than 4000 bytes (about a redb page) is written once, at the
//! store, to a data table apart from the records: the pending record and then the committed
//! one name it, so the finish moves small records only (see `engine/data.rs`).
//!
//! Loads only see finished transactions. After a crash, [`Engine::open`] forgets the transactions
//! that had not voted (their clients must store again) and
//! [`pending_transactions`](Engine::pending_transactions) lists the voted ones, whose outcome
//! the master knows.
//!
//! The engine takes no locks of its own beyond redb's single writer: which transaction may store
//! which object is the [`LockManager`](crate::locks::LockManager)'s business.
//!
//! Each of those calls is one redb write transaction. A [`WriteBatch`] puts several writes (of
//! different transactions) in one, committed with one fsync at most: the group commit of the
//! storage's persistence executor. Staging needs no fsync (a crash before the vote only costs
//! the client a retry), so a batch is durable only when one of its writes asks for it;
//! redb makes a commit without durability durable with the next durable one, and
//! [`syncs`](Engine::syncs) counts the durable commits (one fsync each).

mod batch;
mod catch_up;
mod commit;
mod data;
#[cfg(test)]
mod data_tests;
mod error;
mod history;
mod inspect;
mod iterate;
mod load;
mod pack;
mod records;
mod replication;
mod startup;
mod tables;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use redb::{Database, Durability, ReadableTable, Table, WriteTransaction};

pub use batch::WriteBatch;
pub use catch_up::{ReplicationProgress, TransactionBatch};
pub use error::EngineError;
pub use inspect::RecordPage;
pub use iterate::{ObjectsAtPage, PartitionSize, TransactionPage};
pub use pack::PackStep;
pub use records::{PendingTransaction, Revision, RevisionBefore};
pub use replication::{ObjectBatch, ObjectCursor, ReplicatedObject};
pub use startup::StartupState;

use data::{DataRows, DataSource};
use error::database;
use records::{ObjectRecord, PendingHeader, StoredData, TransactionRecord, decode, split_pending};
use tables::{
    DATA, OBJECTS, OBJECTS_NAME, PENDING, PENDING_NAME, PENDING_OBJECTS, PENDING_OBJECTS_NAME,
    TRANSACTIONS, TRANSACTIONS_NAME,
};

use crate::ids::{Oid, Tid};
use crate::object::{Digest, ObjectData};

/// How an [`Engine`] opens its database.
///
/// ```
/// use replicast_node::engine::{Engine, EngineOptions};
/// use replicast_node::ids::Oid;
///
/// let dir = tempfile::tempdir()?;
/// let options = EngineOptions { cache_bytes: 64 << 20 };
/// let engine = Engine::open_with(dir.path().join("store.redb"), &options)?;
/// assert!(engine.load(Oid(1))?.is_none(), "a new store holds nothing");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    /// Memory redb's page cache may hold: pages read, and the pages a write transaction
    /// changes until it commits (at most half of it; beyond, redb writes them out early).
    pub cache_bytes: u64,
}

impl EngineOptions {
    /// The smallest cache a node's configuration accepts (`storage.cache_bytes`): below it
    /// redb writes most of a transaction's pages out before it commits, since its write
    /// buffer is half the cache.
    pub const MIN_CACHE_BYTES: u64 = 1 << 20;
}

impl Default for EngineOptions {
    /// redb's own default: a 1 GiB cache.
    fn default() -> Self {
        Self {
            cache_bytes: 1 << 30,
        }
    }
}

/// A storage node's object store in one redb file; see the [module documentation](self).
///
/// ```
/// use replicast_node::ids::{Oid, Tid};
/// use replicast_node::engine::Engine;
/// use replicast_node::object::ObjectData;
/// use replicast_node::transaction::TransactionInfo;
///
/// let dir = tempfile::tempdir()?;
/// let store = Engine::open(dir.path().join("store.redb"))?;
/// let (ttid, tid) = (Tid(100), Tid(101));
/// store.store_pending(ttid, Oid(1), Tid::ZERO, ObjectData::from(b"hello".to_vec()))?;
/// store.vote(ttid, &TransactionInfo::default())?;
/// assert!(store.load(Oid(1))?.is_none(), "voted is not visible yet");
/// store.finish(ttid, tid)?;
/// let revision = store.load(Oid(1))?.expect("visible once finished");
/// assert_eq!((revision.data.as_bytes(), revision.tid), (&b"hello"[..], tid));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Engine {
    db: Database,
    /// Durable commits since open: one fsync each.
    syncs: AtomicU64,
    /// Whether a commit without durability has not been followed by a durable one yet.
    unsynced: AtomicBool,
}

impl Engine {
    /// Opens the store at `path`, creating it if missing, and forgets the transactions that had
    /// stored objects but not voted when the store was last closed or killed.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, EngineError> {
        Self::open_with(path, &EngineOptions::default())
    }

    /// [`open`](Self::open) with `options` (the page cache's size).
    pub fn open_with(path: impl AsRef<Path>, options: &EngineOptions) -> Result<Self, EngineError> {
        let cache_bytes = usize::try_from(options.cache_bytes).unwrap_or(usize::MAX);
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(database("open the database file"))?;
        Self::with_database(db)
    }

    /// The engine over `db`, recovered as [`open`](Self::open) says.
    fn with_database(db: Database) -> Result<Self, EngineError> {
        let store = Self {
            db,
            syncs: AtomicU64::new(0),
            unsynced: AtomicBool::new(false),
        };
        store.recover()?;
        Ok(store)
    }

    /// How many durable commits (each one fsync) this engine made since it was opened.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Whether a commit made without durability (staging, a finish whose fsync was deferred)
    /// still waits for a durable commit to reach the disk.
    pub fn has_unsynced(&self) -> bool {
        self.unsynced.load(Ordering::Relaxed)
    }

    /// Makes every commit so far durable, with one empty durable commit if any was not;
    /// whether it had to.
    pub fn sync(&self) -> Result<bool, EngineError> {
        if !self.has_unsynced() {
            return Ok(false);
        }
        let txn = self.db.begin_write().map_err(database("begin sync"))?;
        self.commit(txn, true, "commit sync")?;
        Ok(true)
    }

    /// Commits `txn`, durably (one fsync, which also makes every earlier commit durable) or not
    /// (visible to readers at once, durable with the next durable commit).
    pub(crate) fn commit(
        &self,
        mut txn: WriteTransaction,
        durable: bool,
        operation: &'static str,
    ) -> Result<(), EngineError> {
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability)
            .map_err(database("set durability"))?;
        txn.commit().map_err(database(operation))?;
        if durable {
            self.syncs.fetch_add(1, Ordering::Relaxed);
            self.unsynced.store(false, Ordering::Relaxed);
        } else {
            self.unsynced.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Creates the tables if missing and drops pending transactions that had not voted.
    fn recover(&self) -> Result<(), EngineError> {
        let txn = self.db.begin_write().map_err(database("begin recovery"))?;
        {
            txn.open_table(OBJECTS).map_err(database("open objects"))?;
            txn.open_table(TRANSACTIONS)
                .map_err(database("open transactions"))?;
            // Created here, also in a store written before it existed, so that readers can
            // open it whatever the store's age.
            txn.open_table(DATA).map_err(database("open data"))?;
            let mut pending = txn.open_table(PENDING).map_err(database("open pending"))?;
            let mut pending_objects = txn
                .open_table(PENDING_OBJECTS)
                .map_err(database("open pending objects"))?;
            let mut unvoted = Vec::new();
            for entry in pending.iter().map_err(database("scan pending"))? {
                let (ttid, header) = entry.map_err(database("read pending"))?;
                let header: PendingHeader = decode(PENDING_NAME, header.value())?;
                if !header.voted {
                    unvoted.push(ttid.value());
                }
            }
            let mut data = DataRows::new(&txn);
            for ttid in unvoted {
                pending.remove(ttid).map_err(database("drop unvoted"))?;
                drop_pending_objects(&mut pending_objects, &mut data, ttid)?;
            }
        }
        self.commit(txn, true, "commit recovery")
    }
}

/// Removes the pending objects of `ttid`, with their data rows.
fn drop_pending_objects(
    pending_objects: &mut Table<(Tid, Oid), &'static [u8]>,
    data: &mut DataRows<'_>,
    ttid: Tid,
) -> Result<(), EngineError> {
    for entry in pending_objects
        .extract_from_if((ttid, Oid(0))..=(ttid, Oid(u64::MAX)), |_, _| true)
        .map_err(database("take pending objects"))?
    {
        let (key, object) = entry.map_err(database("read pending object"))?;
        let released = split_pending(object.value())
            .and_then(|(_, record)| data.release_encoded(PENDING_OBJECTS_NAME, record));
        match released {
            Ok(()) => {}
            // Dropping what could not be read leaks its data row at worst; failing here would
            // keep the store from opening (recovery) or a transaction from ending (abort).
            Err(error) => tracing::warn!(
                ttid = %ttid,
                oid = %key.value().1,
                %error,
                "dropped an unreadable pending object; its data row, if any, stays"
            ),
        }
    }
    Ok(())
}

/// Writes `record` (encoded) as revision `tid` of `oid`. A record it replaces (a revision
/// imported by replication, then finished here, or imported twice) goes with its data row.
fn put_revision(
    objects: &mut Table<(Oid, Tid), &'static [u8]>,
    data: &mut DataRows<'_>,
    oid: Oid,
    tid: Tid,
    record: &[u8],
) -> Result<(), EngineError> {
    if let Some(replaced) = objects
        .insert((oid, tid), record)
        .map_err(database("write revision"))?
    {
        data.release_encoded(OBJECTS_NAME, replaced.value())?;
    }
    Ok(())
}

/// The content and digest of revision `tid` of `oid`, following an undo's back-pointer, its
/// content read from `data` when it is a data row.
fn read_revision(
    objects: &impl ReadableTable<(Oid, Tid), &'static [u8]>,
    data: &impl DataSource,
    oid: Oid,
    tid: Tid,
) -> Result<Option<(ObjectData, Digest)>, EngineError> {
    let Some((stored, digest)) = content_record(objects, oid, tid)? else {
        return Ok(None);
    };
    let content = stored
        .content(data)?
        .ok_or(EngineError::NoSuchRevision { oid, tid })?;
    Ok(Some((content, digest)))
}

/// What revision `tid` of `oid` holds of its content (inline or a data row, an undo's
/// back-pointer followed), without reading a data row, and its digest.
fn content_record(
    objects: &impl ReadableTable<(Oid, Tid), &'static [u8]>,
    oid: Oid,
    tid: Tid,
) -> Result<Option<(StoredData, Digest)>, EngineError> {
    let Some(record) = read_record(objects, oid, tid)? else {
        return Ok(None);
    };
    let stored = match record.data {
        // Back-pointers are written pointing at content, so one hop is enough.
        StoredData::SameAs(target) => {
            match read_record(objects, oid, target)?.map(|target| target.data) {
                Some(StoredData::SameAs(_)) | None => {
                    return Err(EngineError::NoSuchRevision { oid, tid: target });
                }
                Some(content) => content,
            }
        }
        content => content,
    };
    Ok(Some((stored, record.digest)))
}

/// The raw record of revision `tid` of `oid`.
fn read_record(
    objects: &impl ReadableTable<(Oid, Tid), &'static [u8]>,
    oid: Oid,
    tid: Tid,
) -> Result<Option<ObjectRecord>, EngineError> {
    match objects.get((oid, tid)).map_err(database("read revision"))? {
        Some(record) => Ok(Some(decode(OBJECTS_NAME, record.value())?)),
        None => Ok(None),
    }
}

/// The record of transaction `tid`, if it is committed here.
fn read_transaction(
    transactions: &impl ReadableTable<Tid, &'static [u8]>,
    tid: Tid,
) -> Result<Option<TransactionRecord>, EngineError> {
    match transactions
        .get(tid)
        .map_err(database("read transaction"))?
    {
        Some(record) => Ok(Some(decode(TRANSACTIONS_NAME, record.value())?)),
        None => Ok(None),
    }
}

/// The last committed TID of `oid` in `objects`, or [`Tid::ZERO`] if it has no revision.
fn last_serial(
    objects: &impl ReadableTable<(Oid, Tid), &'static [u8]>,
    oid: Oid,
) -> Result<Tid, EngineError> {
    let last = objects
        .range((oid, Tid::ZERO)..=(oid, Tid::MAX))
        .map_err(database("find last revision"))?
        .next_back()
        .transpose()
        .map_err(database("read last revision"))?;
    Ok(last.map_or(Tid::ZERO, |(key, _)| key.value().1))
}
