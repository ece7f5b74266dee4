//! What can go wrong in the storage engine.

use crate::ids::{Oid, Tid};

/// An operation of [`Engine`](super::Engine) that failed, with what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A store named a serial that is not the object's last committed TID: another transaction
    /// committed the object since the client read it.
    #[error(
        "conflict on {oid}: stored on top of serial {expected}, but the last committed is {current}"
    )]
    Conflict {
        /// The object.
        oid: Oid,
        /// The serial the transaction stored on top of.
        expected: Tid,
        /// The object's last committed TID ([`Tid::ZERO`] if it has none).
        current: Tid,
    },
    /// An undo names a revision the object does not have.
    #[error("cannot undo {oid} back to {tid}: the object has no such revision")]
    NoSuchRevision {
        /// The object.
        oid: Oid,
        /// The revision to restore.
        tid: Tid,
    },
    /// No pending transaction has this temporary TID.
    #[error("no pending transaction {ttid}")]
    UnknownTransaction {
        /// The temporary TID asked for.
        ttid: Tid,
    },
    /// Finishing a transaction that has not voted.
    #[error("transaction {ttid} cannot finish: it has not voted")]
    NotVoted {
        /// The temporary TID of the transaction.
        ttid: Tid,
    },
    /// Storing into a transaction that has already voted.
    #[error("transaction {ttid} cannot store {oid}: it has already voted")]
    AlreadyVoted {
        /// The temporary TID of the transaction.
        ttid: Tid,
        /// The object it tried to store.
        oid: Oid,
    },
    /// A commit TID that is not after the last committed one (finishes happen in TID order).
    #[error("cannot commit at {tid}: the last committed transaction is {last}")]
    TidNotAfterLast {
        /// The TID asked for.
        tid: Tid,
        /// The last committed TID.
        last: Tid,
    },
    /// A replicated object whose digest does not match its data.
    #[error("replicated revision of {oid} at {tid} does not match its digest")]
    DigestMismatch {
        /// The object.
        oid: Oid,
        /// The revision.
        tid: Tid,
    },
    /// A replicated object whose transaction was not replicated first.
    #[error("replicated revision of {oid} at {tid} arrived before its transaction")]
    MissingTransaction {
        /// The object.
        oid: Oid,
        /// The transaction it belongs to.
        tid: Tid,
    },
    /// A vote that names other objects than the transaction staged here: a store was lost
    /// between the storage role and the engine (its staging failed), so the vote cannot
    /// promise the data.
    #[error("transaction {ttid} votes for other objects than it staged here")]
    StagedMismatch {
        /// The temporary TID of the transaction.
        ttid: Tid,
    },
    /// A write of a [`WriteBatch`](super::WriteBatch) failed part-way, so the batch was rolled
    /// back whole; its writes must be done again (one batch each, to find the one that fails).
    #[error("a write failed part-way through its batch; the batch was rolled back")]
    BatchSpoiled,
    /// A revision's content in the data table is not as long as its record says: chunks are
    /// missing (a record names a data row that was removed, or never written whole).
    #[error("data row {id} holds {found} bytes, its record says {expected}")]
    BadData {
        /// The data row.
        id: u64,
        /// The length the record holds.
        expected: u64,
        /// The bytes found in the data table.
        found: u64,
    },
    /// An undo's back-pointer leads to a revision that is itself a back-pointer: every undo
    /// points at a revision with content, so the objects table is damaged. Not a refusal: a
    /// pack that meets it has written part of its work, which the batch's rollback undoes.
    #[error("the revision of object {oid} at {tid} that an undo points at holds no content")]
    ChainedBackPointer {
        /// The object.
        oid: Oid,
        /// The revision pointed at.
        tid: Tid,
    },
    /// Every data id was given out: the data table's last row has id `u64::MAX`.
    #[error("no data id left for a new data row")]
    DataIdsExhausted,
    /// A record on disk that does not decode.
    #[error("corrupt record in table {table}")]
    Corrupt {
        /// The table holding the record.
        table: &'static str,
        /// Why it does not decode.
        #[source]
        source: postcard::Error,
    },
    /// The database failed (I/O, corruption detected by redb, another process holding it...).
    #[error("storage database failed to {operation}")]
    Database {
        /// What the engine was doing.
        operation: &'static str,
        /// The error from redb.
        #[source]
        source: Box<redb::Error>,
    },
}

impl EngineError {
    /// Whether this is a refusal: the engine checked the write against what it holds and said
    /// no before writing anything, so a [`WriteBatch`](super::WriteBatch) survives it and its
    /// other writes may commit. Any other error may come after part of the write, and spoils
    /// the batch.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::Conflict { .. }
                | Self::NoSuchRevision { .. }
                | Self::UnknownTransaction { .. }
                | Self::NotVoted { .. }
                | Self::AlreadyVoted { .. }
                | Self::TidNotAfterLast { .. }
                | Self::DigestMismatch { .. }
                | Self::MissingTransaction { .. }
                | Self::StagedMismatch { .. }
        )
    }
}

/// Wraps a redb error with what the engine was doing: `.map_err(database("commit vote"))`.
pub(crate) fn database<E: Into<redb::Error>>(
    operation: &'static str,
) -> impl FnOnce(E) -> EngineError {
    move |error| EngineError::Database {
        operation,
        source: Box::new(error.into()),
    }
}
