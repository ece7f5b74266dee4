//! What a client asks one storage beside two-phase commit ([`Message::Ask`]), and its answers
//! ([`Message::Answer`]): past revisions, history, the transaction log, sizes, and pack.
//!
//! Every question about a partition or an object is answered only by a storage whose cell of
//! it is up to date (readable) in its own table; any other answers
//! [`StorageAnswer::Unavailable`], and the client asks the next readable replica, as for a
//! load.
//!
//! [`Message::Ask`]: super::Message::Ask
//! [`Message::Answer`]: super::Message::Answer

use serde::{Deserialize, Serialize};

use crate::engine::ObjectCursor;
use crate::ids::{Oid, Tid};
use crate::object::ObjectData;
use crate::transaction::{HistoryEntry, TransactionRecords, TransactionSummary, UndoRecord};

/// A question for one storage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StorageAsk {
    /// The revision of `oid` current just before `before`, and the TID that replaced it
    /// (ZODB's `loadBefore`).
    LoadBefore {
        /// The object.
        oid: Oid,
        /// The TID the revision must precede.
        before: Tid,
    },
    /// The revision of `oid` written by `serial` (ZODB's `loadSerial`).
    LoadSerial {
        /// The object.
        oid: Oid,
        /// The revision.
        serial: Tid,
    },
    /// Up to `size` revisions of `oid`, newest first (ZODB's `history`).
    History {
        /// The object.
        oid: Oid,
        /// The most revisions wanted.
        size: u32,
    },
    /// The transactions touching `partition` with their revisions of its objects, in
    /// (TID, OID) order after `after`, with TIDs up to `up_to`, about `max_bytes` of them (at
    /// least one revision): a page of ZODB's `iterator`.
    Transactions {
        /// The partition.
        partition: u32,
        /// The last revision the asker has.
        after: ObjectCursor,
        /// The last TID wanted.
        up_to: Tid,
        /// About how many bytes of data the page may carry.
        max_bytes: u32,
    },
    /// Up to `count` transactions touching `partition` with TIDs below `before`, newest
    /// first, leaving out those packed away (a page of ZODB's `undoLog`).
    UndoLog {
        /// The partition.
        partition: u32,
        /// Every TID listed is below this one.
        before: Tid,
        /// The most transactions wanted.
        count: u32,
    },
    /// What undoing transaction `tid` needs for the objects of `partition` it wrote.
    UndoInfo {
        /// The partition.
        partition: u32,
        /// The transaction to undo.
        tid: Tid,
    },
    /// The revision current at `at` of every object of `partition` after `after`, in OID
    /// order, about `max_bytes` of them (at least one): the input of garbage collection.
    ObjectsAt {
        /// The partition.
        partition: u32,
        /// The TID the revisions are current at (included).
        at: Tid,
        /// The last object the asker has; `None` to start.
        after: Option<Oid>,
        /// About how many bytes of data the page may carry.
        max_bytes: u32,
    },
    /// How many objects of `partition` have a current revision, and their bytes.
    Size {
        /// The partition.
        partition: u32,
    },
    /// Packs this storage's objects after `after` (OID order), a bounded number of them: the
    /// revisions older than `tid` that are not current at `tid` are removed.
    Pack {
        /// The pack TID.
        tid: Tid,
        /// The last object packed in an earlier step; `None` to start.
        after: Option<Oid>,
    },
    /// Removes every revision of these objects (garbage collection after a pack at `tid`),
    /// except objects with a revision after `tid`, which were written meanwhile.
    Collect {
        /// The pack TID.
        tid: Tid,
        /// The unreachable objects.
        oids: Vec<Oid>,
    },
}

/// What a revision lookup found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoadBefore {
    /// The revision.
    Found {
        /// Its content ([`ObjectData::Deleted`] when the revision undid the object's
        /// creation).
        data: ObjectData,
        /// The TID that wrote it.
        serial: Tid,
        /// The TID of the revision that replaced it; `None` while it is the latest.
        next: Option<Tid>,
    },
    /// The object has revisions, but not the one asked for (none before the TID, or not
    /// that serial).
    NoRevision,
    /// The object has no revision at all.
    Missing,
}

/// How big a partition (or the whole store, summed) is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageSize {
    /// Objects whose latest revision is not a deletion.
    pub objects: u64,
    /// The bytes of all their revisions' data.
    pub bytes: u64,
}

/// An object's revision current at some TID ([`StorageAsk::ObjectsAt`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRevision {
    /// The object.
    pub oid: Oid,
    /// The TID that wrote the revision.
    pub serial: Tid,
    /// Its content.
    pub data: ObjectData,
}

/// A storage's answer to a [`StorageAsk`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StorageAnswer {
    /// To [`StorageAsk::LoadBefore`] and [`StorageAsk::LoadSerial`].
    Load(LoadBefore),
    /// To [`StorageAsk::History`]: newest first; empty when the object has no revision.
    History(Vec<HistoryEntry>),
    /// To [`StorageAsk::Transactions`].
    Transactions {
        /// Transactions in TID order, each with its revisions after the cursor, in OID order.
        transactions: Vec<TransactionRecords>,
        /// The cursor to ask again after; `None` when nothing is left up to the bound.
        resume: Option<ObjectCursor>,
    },
    /// To [`StorageAsk::UndoLog`]: newest first.
    UndoLog(Vec<TransactionSummary>),
    /// To [`StorageAsk::UndoInfo`]: `None` when the transaction is not here (never committed,
    /// or packed away).
    UndoInfo(Option<Vec<UndoRecord>>),
    /// To [`StorageAsk::ObjectsAt`].
    Objects {
        /// Revisions in OID order.
        objects: Vec<ObjectRevision>,
        /// The object to ask again after; `None` when the partition is done.
        resume: Option<Oid>,
    },
    /// To [`StorageAsk::Size`].
    Size(StorageSize),
    /// To [`StorageAsk::Pack`].
    Packed {
        /// The object to pack again after; `None` when the store is packed.
        resume: Option<Oid>,
        /// Revisions removed by this step.
        removed: u64,
    },
    /// To [`StorageAsk::Collect`].
    Collected {
        /// Revisions removed.
        removed: u64,
    },
    /// This storage cannot answer (it does not hold the partition readable, or its engine
    /// failed): ask another replica.
    Unavailable,
}

impl StorageAsk {
    /// The variant's name, for errors and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            StorageAsk::LoadBefore { .. } => "LoadBefore",
            StorageAsk::LoadSerial { .. } => "LoadSerial",
            StorageAsk::History { .. } => "History",
            StorageAsk::Transactions { .. } => "Transactions",
            StorageAsk::UndoLog { .. } => "UndoLog",
            StorageAsk::UndoInfo { .. } => "UndoInfo",
            StorageAsk::ObjectsAt { .. } => "ObjectsAt",
            StorageAsk::Size { .. } => "Size",
            StorageAsk::Pack { .. } => "Pack",
            StorageAsk::Collect { .. } => "Collect",
        }
    }
}
