//! What the client reports to its user.

use crate::ids::{Oid, Tid};
use crate::partition::NodeName;
use crate::protocol::{LoadResult, StorageAnswer, TransactionOutcome, VoteRefusal};

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
    /// An older transaction waited for this one on a storage where it had voted, while
    /// another vote of it was not in: it may have been waiting for that older one there, so
    /// it started over rather than close a cycle of waits. Nothing of it committed; retry it.
    Wounded {
        /// The storage where the older transaction waited.
        node: NodeName,
    },
    /// An object had to be stored again (to resolve a conflict) on a storage that had voted
    /// yes already: a replica that does not check serials (catching up) voted while another
    /// found the conflict. A voted storage takes no more stores, so the transaction starts
    /// over. Nothing of it committed; retry it.
    StoreAfterVote {
        /// The storage that voted.
        node: NodeName,
        /// The object.
        oid: Oid,
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
    /// The finish was answered aborted after the link to the primary that began the
    /// transaction was lost or another master became primary: the masters' failover aborted
    /// it (a primary aborts what a lost client had open; a new primary never decides what an
    /// earlier one began). Nothing of it committed; it may be retried as it is.
    MasterLost,
}

/// What a conflict is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConflictKind {
    /// A store named a serial that is not the object's last committed TID: resolve it (store
    /// the object again on top of `current`) or abort (ZODB's `ConflictError`).
    Write,
    /// A [`check_current`](super::Client::check_current) found the object changed since it
    /// was read (ZODB's `ReadConflictError`): not resolvable.
    ReadCurrent,
}

/// A store or check of the transaction that met a newer committed revision. The transaction
/// goes on: the caller stores the object again or aborts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conflict {
    /// The object.
    pub oid: Oid,
    /// The serial the store or check named.
    pub serial: Tid,
    /// The object's last committed TID.
    pub current: Tid,
    /// Store or check.
    pub kind: ConflictKind,
}

/// Why a replica did not answer a read; the client then asked the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFailure {
    /// It answered that it cannot (not readable there, or its engine failed).
    Unavailable,
    /// The connection to it was lost.
    Lost,
    /// It did not answer within [`ClientConfig::load_timeout`](super::ClientConfig::load_timeout).
    Timeout,
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
    /// [`begin_at`](super::Client::begin_at) was refused: the TID is not after the last
    /// committed one. No transaction is in progress.
    BeginRefused {
        /// The TID asked for.
        tid: Tid,
        /// The last committed TID.
        last: Tid,
    },
    /// Every store and check sent so far is answered; `conflicts` are those not stored again
    /// since (empty: everything stored). Reported each time the last answer arrives.
    StoresAnswered {
        /// The transaction.
        ttid: Tid,
        /// The unresolved conflicts.
        conflicts: Vec<Conflict>,
    },
    /// The vote cannot go out: stores met conflicts, which the caller must resolve (store
    /// again) before voting again. The transaction is storing again.
    VoteHeld {
        /// The transaction.
        ttid: Tid,
        /// The unresolved conflicts.
        conflicts: Vec<Conflict>,
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
        /// The replicas asked before, and why each did not answer.
        failures: Vec<(NodeName, ReadFailure)>,
    },
    /// The answer to [`ask`](super::Client::ask): [`StorageAnswer::Unavailable`] when no
    /// replica could answer.
    Answered {
        /// The request it answers.
        request: u64,
        /// The answer.
        answer: StorageAnswer,
        /// The storage that answered; `None` when none did.
        from: Option<NodeName>,
        /// The replicas asked before, and why each did not answer.
        failures: Vec<(NodeName, ReadFailure)>,
    },
    /// The master's last finished commit, as [`ask_last_transaction`](super::Client::ask_last_transaction)
    /// asked (every invalidation up to it arrived before).
    LastTransaction {
        /// The request it answers.
        request: u64,
        /// The TID.
        tid: Tid,
    },
    /// The link to the master was lost and the client announced itself again: invalidations
    /// sent meanwhile may be lost, so every cached object may be stale. `last` is the
    /// master's last finished commit now.
    Resynced {
        /// The master's last finished commit.
        last: Tid,
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
