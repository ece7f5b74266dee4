//! Two-phase commit on one store: store, vote, finish or abort.
//!
//! Each write is a method of [`WriteBatch`], so that a storage can put the writes of many
//! transactions in one redb transaction; the [`Engine`] methods of the same names run one
//! write as a batch of its own.

use redb::{ReadableDatabase, ReadableTable, Table, WriteTransaction};

use super::batch::WriteBatch;
use super::data::DataRows;
use super::error::database;
use super::records::{
    ObjectRecord, PendingHeader, PendingObject, PendingTransaction, StoredData, TransactionRecord,
    decode, encode, split_pending,
};
use super::tables::{
    OBJECTS, PENDING, PENDING_NAME, PENDING_OBJECTS, PENDING_OBJECTS_NAME, TRANSACTIONS,
    TRANSACTIONS_NAME,
};
use super::{
    Engine, EngineError, drop_pending_objects, last_serial, put_revision, read_record,
    read_transaction,
};
use crate::ids::{Oid, Tid};
use crate::object::ObjectData;
use crate::transaction::TransactionInfo;

impl WriteBatch<'_> {
    /// Records `data` as the new revision of `oid` in transaction `ttid`, written on top of
    /// revision `serial` ([`Tid::ZERO`] for a new object). Storing the same object again in the
    /// same transaction replaces the earlier data.
    ///
    /// Refused with [`EngineError::Conflict`] when `serial` is not the object's last committed
    /// TID. Needs no fsync: the vote makes it durable.
    pub fn store_pending(
        &mut self,
        ttid: Tid,
        oid: Oid,
        serial: Tid,
        data: ObjectData,
    ) -> Result<(), EngineError> {
        self.write(
            |_| false,
            |txn| {
                stage(txn, ttid, oid, serial, Some(serial), |_, rows| {
                    content(rows, data)
                })
            },
        )
    }

    /// Records `data` like [`store_pending`](Self::store_pending) without checking `serial`
    /// against the object's history: for a partition still catching up by replication, whose
    /// history here may lack revisions the serial names, or for a storage that checks serials
    /// at the vote only. The vote checks it, unless told otherwise.
    pub fn store_pending_unchecked(
        &mut self,
        ttid: Tid,
        oid: Oid,
        serial: Tid,
        data: ObjectData,
    ) -> Result<(), EngineError> {
        self.write(
            |_| false,
            |txn| stage(txn, ttid, oid, serial, None, |_, rows| content(rows, data)),
        )
    }

    /// Records, as the new revision of `oid` in transaction `ttid`, the content of its earlier
    /// revision `restore` (by reference); see [`Engine::store_undo`].
    pub fn store_undo(
        &mut self,
        ttid: Tid,
        oid: Oid,
        serial: Tid,
        restore: Tid,
    ) -> Result<(), EngineError> {
        self.write(
            |_| false,
            |txn| {
                stage(txn, ttid, oid, serial, Some(serial), |objects, _| {
                    undo_record(objects, oid, restore)
                })
            },
        )
    }

    /// [`store_undo`](Self::store_undo) without checking `serial` against the object's
    /// history (a partition catching up by replication, or a serial the vote checks).
    pub fn store_undo_unchecked(
        &mut self,
        ttid: Tid,
        oid: Oid,
        serial: Tid,
        restore: Tid,
    ) -> Result<(), EngineError> {
        self.write(
            |_| false,
            |txn| {
                stage(txn, ttid, oid, serial, None, |objects, _| {
                    undo_record(objects, oid, restore)
                })
            },
        )
    }

    /// Checks that `serial` is the last committed revision of `oid` (ZODB's
    /// `checkCurrentSerialInTransaction`), writing nothing: refused with
    /// [`EngineError::Conflict`] otherwise. In a batch, it sees every write before it.
    pub fn check_serial(&mut self, oid: Oid, serial: Tid) -> Result<(), EngineError> {
        self.write(
            |_| false,
            |txn| {
                let objects = txn.open_table(OBJECTS).map_err(database("open objects"))?;
                let current = last_serial(&objects, oid)?;
                if current == serial {
                    Ok(())
                } else {
                    Err(EngineError::Conflict {
                        oid,
                        expected: serial,
                        current,
                    })
                }
            },
        )
    }

    /// Votes for transaction `ttid` with `info` to commit it with, checking that none of its
    /// objects was committed by another transaction since it was stored (except those for
    /// which `unchecked` says yes: partitions still catching up by replication). With
    /// `staged`, also checks that the transaction staged exactly these objects here (refused
    /// with [`EngineError::StagedMismatch`] otherwise). Makes the batch durable.
    pub fn vote(
        &mut self,
        ttid: Tid,
        info: &TransactionInfo,
        staged: Option<&[Oid]>,
        unchecked: impl Fn(Oid) -> bool,
    ) -> Result<(), EngineError> {
        self.write(|_| true, |txn| vote(txn, ttid, info, staged, unchecked))
    }

    /// Commits the voted transaction `ttid` at `tid`, which must be later than every TID
    /// committed here; see [`Engine::finish`]. Not durable by itself:
    /// [`require_sync`](Self::require_sync) makes it so.
    pub fn finish(&mut self, ttid: Tid, tid: Tid) -> Result<(), EngineError> {
        self.write(|_| false, |txn| commit_pending(txn, ttid, tid, true))
    }

    /// Commits `ttid` at `tid` like [`finish`](Self::finish), also when later TIDs are here
    /// already; see [`Engine::finish_merging`].
    pub fn finish_merging(&mut self, ttid: Tid, tid: Tid) -> Result<(), EngineError> {
        self.write(|_| false, |txn| commit_pending(txn, ttid, tid, false))
    }

    /// Forgets transaction `ttid` and everything it stored; durable if it had voted (its
    /// removal must reach the disk, or it comes back pending after a crash).
    pub fn abort(&mut self, ttid: Tid) -> Result<(), EngineError> {
        self.write(|voted: &bool| *voted, |txn| abort(txn, ttid))
            .map(|_| ())
    }
}

impl Engine {
    /// Records `data` as the new revision of `oid` in transaction `ttid`, written on top of
    /// revision `serial` ([`Tid::ZERO`] for a new object). Storing the same object again in the
    /// same transaction replaces the earlier data.
    ///
    /// Fails with [`EngineError::Conflict`] when `serial` is not the object's last committed
    /// TID; nothing is recorded then. The data is not fsynced until [`vote`](Self::vote).
    pub fn store_pending(
        &self,
        ttid: Tid,
        oid: Oid,
        serial: Tid,
        data: ObjectData,
    ) -> Result<(), EngineError> {
        self.write_one(|batch| batch.store_pending(ttid, oid, serial, data))
    }

    /// Records `data` like [`store_pending`](Self::store_pending) without checking `serial`
    /// against the object's history: for a partition still catching up by replication, whose
    /// history here may lack revisions the serial names. The readable replicas check it.
    pub fn store_pending_unchecked(
        &self,
        ttid: Tid,
        oid: Oid,
        serial: Tid,
        data: ObjectData,
    ) -> Result<(), EngineError> {
        self.write_one(|batch| batch.store_pending_unchecked(ttid, oid, serial, data))
    }

    /// Records, as the new revision of `oid` in transaction `ttid`, the content of its earlier
    /// revision `restore`: what undoing the transactions after `restore` writes. The new
    /// revision refers to the old one rather than copying its data.
    ///
    /// Fails like [`store_pending`](Self::store_pending), and with
    /// [`EngineError::NoSuchRevision`] when `oid` has no revision `restore`.
    pub fn store_undo(
        &self,
        ttid: Tid,
        oid: Oid,
        serial: Tid,
        restore: Tid,
    ) -> Result<(), EngineError> {
        self.write_one(|batch| batch.store_undo(ttid, oid, serial, restore))
    }

    /// Makes the data of transaction `ttid` durable, with `info` to commit it with, and checks
    /// again that none of its objects was committed by another transaction meanwhile.
    ///
    /// A transaction that stored nothing here may vote (it only leaves its `info`). Voting
    /// twice is harmless. The data stays invisible until [`finish`](Self::finish).
    pub fn vote(&self, ttid: Tid, info: &TransactionInfo) -> Result<(), EngineError> {
        self.vote_unchecked_for(ttid, info, |_| false)
    }

    /// Votes like [`vote`](Self::vote), without checking the serials of the objects for which
    /// `unchecked` says yes: those of partitions still catching up by replication (see
    /// [`store_pending_unchecked`](Self::store_pending_unchecked)).
    pub fn vote_unchecked_for(
        &self,
        ttid: Tid,
        info: &TransactionInfo,
        unchecked: impl Fn(Oid) -> bool,
    ) -> Result<(), EngineError> {
        self.write_one(|batch| batch.vote(ttid, info, None, unchecked))
    }

    /// Commits the voted transaction `ttid` at `tid`: all its objects become visible at once,
    /// durably.
    ///
    /// `tid` must be greater than every TID committed here: the master finishes transactions
    /// in TID order.
    pub fn finish(&self, ttid: Tid, tid: Tid) -> Result<(), EngineError> {
        self.write_one(|batch| {
            batch.finish(ttid, tid)?;
            batch.require_sync();
            Ok(())
        })
    }

    /// Commits the voted transaction `ttid` at `tid` like [`finish`](Self::finish), also when
    /// transactions after `tid` are here already: on a replica that imported them by
    /// replication while the finish of `tid` was on its way. A transaction `tid` imported
    /// already gains the objects of `ttid`, which are the same revisions.
    pub fn finish_merging(&self, ttid: Tid, tid: Tid) -> Result<(), EngineError> {
        self.write_one(|batch| {
            batch.finish_merging(ttid, tid)?;
            batch.require_sync();
            Ok(())
        })
    }

    /// Forgets transaction `ttid` and everything it stored. Aborting an unknown transaction is
    /// harmless (the abort may arrive twice, or after a crash forgot it).
    pub fn abort(&self, ttid: Tid) -> Result<(), EngineError> {
        self.write_one(|batch| batch.abort(ttid))
    }

    /// The transactions that stored objects here and have neither finished nor aborted.
    ///
    /// Right after [`open`](Self::open) they all voted: these are the ones to ask the master
    /// about, then [`finish`](Self::finish) or [`abort`](Self::abort).
    pub fn pending_transactions(&self) -> Result<Vec<PendingTransaction>, EngineError> {
        let txn = self.db.begin_read().map_err(database("begin read"))?;
        let pending = txn.open_table(PENDING).map_err(database("open pending"))?;
        let pending_objects = txn
            .open_table(PENDING_OBJECTS)
            .map_err(database("open pending objects"))?;
        let mut transactions = Vec::new();
        for entry in pending.iter().map_err(database("scan pending"))? {
            let (ttid, header) = entry.map_err(database("read pending"))?;
            let ttid = ttid.value();
            let header: PendingHeader = decode(PENDING_NAME, header.value())?;
            let mut oids = Vec::new();
            for entry in pending_objects
                .range((ttid, Oid(0))..=(ttid, Oid(u64::MAX)))
                .map_err(database("scan pending objects"))?
            {
                let (key, _) = entry.map_err(database("read pending object"))?;
                oids.push(key.value().1);
            }
            transactions.push(PendingTransaction {
                ttid,
                voted: header.voted,
                oids,
            });
        }
        Ok(transactions)
    }
}

/// The record of a revision holding `data`, which goes to a data row if it is large.
fn content(rows: &mut DataRows<'_>, data: ObjectData) -> Result<ObjectRecord, EngineError> {
    let digest = data.digest();
    Ok(ObjectRecord {
        data: rows.store(data)?,
        digest,
    })
}

/// Records the revision `make_record` builds (writing its data row, if it has one) as `oid`'s
/// in transaction `ttid` on top of `serial`, after checking the transaction has not voted
/// and, with `check`, that `check` is the last committed revision. Every refusal comes before
/// the first write. A record the transaction staged for `oid` before goes, with its data row.
fn stage(
    txn: &WriteTransaction,
    ttid: Tid,
    oid: Oid,
    serial: Tid,
    check: Option<Tid>,
    make_record: impl FnOnce(
        &Table<(Oid, Tid), &'static [u8]>,
        &mut DataRows<'_>,
    ) -> Result<ObjectRecord, EngineError>,
) -> Result<(), EngineError> {
    let mut pending = txn.open_table(PENDING).map_err(database("open pending"))?;
    // The transaction's header is written with its first object only.
    let new_header = match pending.get(ttid).map_err(database("read pending"))? {
        Some(header) if decode::<PendingHeader>(PENDING_NAME, header.value())?.voted => {
            return Err(EngineError::AlreadyVoted { ttid, oid });
        }
        Some(_) => None,
        None => Some(encode(PENDING_NAME, &PendingHeader::default())?),
    };
    let objects = txn.open_table(OBJECTS).map_err(database("open objects"))?;
    if let Some(serial) = check {
        let current = last_serial(&objects, oid)?;
        if current != serial {
            return Err(EngineError::Conflict {
                oid,
                expected: serial,
                current,
            });
        }
    }
    let mut rows = DataRows::new(txn);
    let record = make_record(&objects, &mut rows)?;
    // The record is small (large content is in its data row): encoded apart, and inserted
    // with `insert`, which hands back the record it replaces.
    let record = encode(PENDING_OBJECTS_NAME, &PendingObject { serial, record })?;
    let mut pending_objects = txn
        .open_table(PENDING_OBJECTS)
        .map_err(database("open pending objects"))?;
    if let Some(replaced) = pending_objects
        .insert((ttid, oid), record.as_slice())
        .map_err(database("record pending object"))?
    {
        let (_, replaced) = split_pending(replaced.value())?;
        rows.release_encoded(PENDING_OBJECTS_NAME, replaced)?;
    }
    if let Some(header) = new_header {
        pending
            .insert(ttid, header.as_slice())
            .map_err(database("record pending"))?;
    }
    Ok(())
}

/// [`WriteBatch::vote`]: every check before the one write (the header).
fn vote(
    txn: &WriteTransaction,
    ttid: Tid,
    info: &TransactionInfo,
    staged: Option<&[Oid]>,
    unchecked: impl Fn(Oid) -> bool,
) -> Result<(), EngineError> {
    let objects = txn.open_table(OBJECTS).map_err(database("open objects"))?;
    let pending_objects = txn
        .open_table(PENDING_OBJECTS)
        .map_err(database("open pending objects"))?;
    let mut found = Vec::new();
    for entry in pending_objects
        .range((ttid, Oid(0))..=(ttid, Oid(u64::MAX)))
        .map_err(database("scan pending objects"))?
    {
        let (key, object) = entry.map_err(database("read pending object"))?;
        let oid = key.value().1;
        found.push(oid);
        if unchecked(oid) {
            continue;
        }
        let (serial, _) = split_pending(object.value())?;
        let current = last_serial(&objects, oid)?;
        if current != serial {
            return Err(EngineError::Conflict {
                oid,
                expected: serial,
                current,
            });
        }
    }
    if let Some(staged) = staged {
        // `found` is in oid order (the key order), without duplicates.
        let mut listed = staged.to_vec();
        listed.sort_unstable();
        listed.dedup();
        if listed != found {
            return Err(EngineError::StagedMismatch { ttid });
        }
    }
    let header = encode(
        PENDING_NAME,
        &PendingHeader {
            voted: true,
            info: info.clone(),
        },
    )?;
    txn.open_table(PENDING)
        .map_err(database("open pending"))?
        .insert(ttid, header.as_slice())
        .map_err(database("record vote"))?;
    Ok(())
}

/// Commits `ttid` at `tid`; `in_order` refuses a `tid` at or before the last committed. Every
/// refusal comes before the first write.
fn commit_pending(
    txn: &WriteTransaction,
    ttid: Tid,
    tid: Tid,
    in_order: bool,
) -> Result<(), EngineError> {
    let mut pending = txn.open_table(PENDING).map_err(database("open pending"))?;
    let header: PendingHeader = match pending.get(ttid).map_err(database("read pending"))? {
        Some(header) => decode(PENDING_NAME, header.value())?,
        None => return Err(EngineError::UnknownTransaction { ttid }),
    };
    if !header.voted {
        return Err(EngineError::NotVoted { ttid });
    }
    let mut transactions = txn
        .open_table(TRANSACTIONS)
        .map_err(database("open transactions"))?;
    let last = transactions
        .last()
        .map_err(database("read last transaction"))?
        .map_or(Tid::ZERO, |(key, _)| key.value());
    if in_order && tid <= last {
        return Err(EngineError::TidNotAfterLast { tid, last });
    }
    let imported = read_transaction(&transactions, tid)?;
    let mut objects = txn.open_table(OBJECTS).map_err(database("open objects"))?;
    let mut pending_objects = txn
        .open_table(PENDING_OBJECTS)
        .map_err(database("open pending objects"))?;
    let mut rows = DataRows::new(txn);
    let mut oids = Vec::new();
    for entry in pending_objects
        .extract_from_if((ttid, Oid(0))..=(ttid, Oid(u64::MAX)), |_, _| true)
        .map_err(database("take pending objects"))?
    {
        let (key, object) = entry.map_err(database("read pending object"))?;
        let oid = key.value().1;
        // The record goes in as it was staged, without decoding: small, as large content is
        // in a data row that stays where it is.
        let (_, record) = split_pending(object.value())?;
        put_revision(&mut objects, &mut rows, oid, tid, record)?;
        oids.push(oid);
    }
    let record = match imported {
        Some(mut record) => {
            record.oids.extend(oids);
            record.oids.sort_unstable();
            record.oids.dedup();
            record
        }
        None => TransactionRecord {
            oids,
            info: header.info,
        },
    };
    let record = encode(TRANSACTIONS_NAME, &record)?;
    transactions
        .insert(tid, record.as_slice())
        .map_err(database("commit transaction"))?;
    pending.remove(ttid).map_err(database("drop pending"))?;
    Ok(())
}

/// Drops `ttid` and its objects; whether it had voted. Unknown transactions are fine.
fn abort(txn: &WriteTransaction, ttid: Tid) -> Result<bool, EngineError> {
    let mut pending = txn.open_table(PENDING).map_err(database("open pending"))?;
    let voted = match pending.get(ttid).map_err(database("read pending"))? {
        Some(header) => decode::<PendingHeader>(PENDING_NAME, header.value())?.voted,
        None => return Ok(false),
    };
    pending.remove(ttid).map_err(database("drop pending"))?;
    drop_pending_objects(
        &mut txn
            .open_table(PENDING_OBJECTS)
            .map_err(database("open pending objects"))?,
        &mut DataRows::new(txn),
        ttid,
    )?;
    Ok(voted)
}

/// The record of an undo that writes again the content of `oid`'s revision `restore`: a
/// back-pointer at the content itself, so that reads follow one pointer at most.
pub(super) fn undo_record(
    objects: &Table<(Oid, Tid), &'static [u8]>,
    oid: Oid,
    restore: Tid,
) -> Result<ObjectRecord, EngineError> {
    let target = read_record(objects, oid, restore)?
        .ok_or(EngineError::NoSuchRevision { oid, tid: restore })?;
    let content_at = match target.data {
        StoredData::SameAs(content_at) => content_at,
        StoredData::Content(_) | StoredData::Stored { .. } => restore,
    };
    Ok(ObjectRecord {
        data: StoredData::SameAs(content_at),
        digest: target.digest,
    })
}
