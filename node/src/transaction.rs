//! What a transaction says about itself, as the wire, the client and the engine all see it.

use serde::{Deserialize, Serialize};

use crate::ids::{Oid, Tid};
use crate::object::ObjectData;

/// What the client says about a transaction, kept with it when it commits.
///
/// Bytes, kept as given: ZODB's `user` and `description` are bytes, and its `extension` a
/// pickle the store never reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionInfo {
    /// Who committed (ZODB's `user`).
    pub user: Vec<u8>,
    /// What the transaction did, in words (ZODB's `description`).
    pub description: Vec<u8>,
    /// Application-defined metadata (ZODB's `extension`), opaque to the store.
    pub extension: Vec<u8>,
}

/// A committed transaction: its TID, what it says about itself, and the objects it wrote on
/// the storage that tells.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedTransaction {
    /// Its TID.
    pub tid: Tid,
    /// The objects it wrote that this store holds, in increasing order.
    pub oids: Vec<Oid>,
    /// What the client said about it.
    pub info: TransactionInfo,
}

/// One revision in an object's history ([`ClientHandle::history`](crate::driver::ClientHandle::history)):
/// what ZODB's `history()` lists, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The transaction that wrote the revision (its serial).
    pub tid: Tid,
    /// What that transaction said about itself.
    pub info: TransactionInfo,
    /// The size of the revision's data in bytes (0 for a deletion).
    pub size: u64,
}

/// A committed transaction as the undo log lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionSummary {
    /// Its TID (ZODB's undo `id`).
    pub tid: Tid,
    /// What it said about itself.
    pub info: TransactionInfo,
}

/// One object revision of a transaction, as ZODB's iterator shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataRecord {
    /// The object.
    pub oid: Oid,
    /// The revision's content (a deletion when the transaction undid the object's creation).
    pub data: ObjectData,
    /// When the revision reuses the data of an earlier revision of the object (an undo's
    /// back-pointer), that revision's TID (ZODB's `data_txn`).
    pub data_txn: Option<Tid>,
}

/// A committed transaction with its object revisions, as ZODB's iterator yields it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionRecords {
    /// Its TID.
    pub tid: Tid,
    /// What it said about itself.
    pub info: TransactionInfo,
    /// Its revisions, in OID order.
    pub records: Vec<DataRecord>,
}

/// What undoing a transaction needs to know about one object it wrote.
///
/// When `current` is the undone transaction itself, the undo writes the revision `before`
/// again (a back-pointer), or a deletion when `before` is `None`. Otherwise later
/// transactions changed the object, and the undo needs conflict resolution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndoRecord {
    /// The object.
    pub oid: Oid,
    /// Its last committed TID.
    pub current: Tid,
    /// The revision the undone transaction replaced; `None` when it created the object.
    pub before: Option<Tid>,
}
