//! What the client reports to its user.

use crate::ids::{Oid, Tid};
use crate::partition::NodeName;
use crate::protocol::{LoadResult, TransactionOutcome, VoteRefusal};

/// Why a transaction failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbortReason {
    /// An object was committed by someone else since it was read.
    Conflict {
        /// The object.
        oid: Oid,
        /// The serial the transaction stored on top of.
        serial: Tid,
        /// The object's last committed TID.
        current: Tid,
    },
    /// A storage voted no.
    VoteRefused {
        /// The storage.
        node: NodeName,
        /// Why.
        refusal: VoteRefusal,
    },
    /// A storage could not record a store.
    StoreFailed {
        /// The storage.
        node: NodeName,
        /// The object.
        oid: Oid,
    },
    /// A storage gave the transaction's locks to an older one after its votes were sent: some
    /// storages may hold it voted, which may not wait for locks, so it starts over.
    Wounded {
        /// The storage.
        node: NodeName,
    },
    /// A storage aborted the transaction after it stayed idle.
    StorageGaveUp {
        /// The storage.
        node: NodeName,
    },
    /// No replica of an object is left.
    NoReplica {
        /// The object.
        oid: Oid,
    },
    /// The master refused the finish.
    FinishRefused(TransactionOutcome),
}

/// Something that happened to the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// The partition table arrived: the client can work.
    Ready,
    /// The transaction began.
    Begun {
        /// Its temporary TID.
        ttid: Tid,
    },
    /// Every touched object is durable on a replica that voted yes: call
    /// [`finish`](super::Client::finish).
    Voted {
        /// The transaction.
        ttid: Tid,
    },
    /// The transaction committed.
    Committed {
        /// Its temporary TID.
        ttid: Tid,
        /// Its commit TID.
        tid: Tid,
    },
    /// The transaction failed and was aborted everywhere.
    Aborted {
        /// The transaction.
        ttid: Tid,
        /// Why.
        reason: AbortReason,
    },
    /// A storage failed during the transaction (reported to the master at finish).
    StorageFailed {
        /// The storage.
        node: NodeName,
    },
    /// The answer to [`load`](super::Client::load).
    Loaded {
        /// The request it answers.
        request: u64,
        /// The object.
        oid: Oid,
        /// The revision, or [`LoadResult::Failed`] when no replica answered.
        result: LoadResult,
        /// The storage that answered; `None` when none did.
        from: Option<NodeName>,
    },
    /// New object ids.
    NewOids {
        /// The first.
        first: Oid,
        /// How many.
        count: u32,
    },
    /// Another client committed these objects at `tid`.
    Invalidated {
        /// The commit TID.
        tid: Tid,
        /// The objects.
        oids: Vec<Oid>,
    },
}
