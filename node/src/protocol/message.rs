//! Every message a peer of the two-phase commit can send, with the answers it can carry.

use std::net::SocketAddr;

use bytes::Bytes;
use replicast_transport::fanout::wire::DIGEST_LEN;
use serde::{Deserialize, Serialize};

use super::admin::{ChangeOutcome, StorageChange};
use super::ask::{StorageAnswer, StorageAsk};
use super::authorization::Refusal;
use super::inspect::{InspectAnswer, InspectAsk};
use super::status::{BackupReport, ClusterStatus, NodeReport};
use crate::consensus::ConsensusMessage;
use crate::engine::{ObjectCursor, ReplicatedObject};
use crate::ids::{Oid, Tid};
use crate::object::{Digest, ObjectData};
use crate::partition::{NodeName, PartitionTable};
use crate::transaction::{CommittedTransaction, TransactionInfo};

/// One protocol message. The comment on each variant names who sends it to whom.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Client -> master: announces the client and asks for the partition table.
    ClientHello,
    /// Storage -> master: the storage (re)started and serves again.
    StorageReady,
    /// Master -> client or storage: the current partition table.
    PartitionTable(PartitionTable),
    /// Master -> client, in the welcome before the partition table: how this client makes
    /// the temporary TIDs of its transactions itself (see [`crate::client::TtidClock`]), so
    /// that a begin costs no round trip.
    TtidSpace {
        /// The client's number among the clients of this primary: the low 16 bits of every
        /// temporary TID it makes, so that no two clients make the same one.
        number: u16,
        /// The primary's clock when it sent this (as a TID): the client corrects its own
        /// clock by the difference, so that the ages of transactions of different clients
        /// compare.
        clock: Tid,
    },
    /// Client -> master, one way: the client began transaction `ttid`, a temporary TID it
    /// made itself (its number in the low 16 bits, see [`Message::TtidSpace`]). Refused (a
    /// protocol error, and the transaction's finish is answered aborted) when the number is
    /// not the client's, or the TID is open or was decided already.
    Begin {
        /// The temporary TID.
        ttid: Tid,
        /// The version of the partition table the client had: with an older one than the
        /// primary's, its stores may miss cells that started feeding since, which then wait
        /// for the transaction to end before they replicate (see `master::replication`).
        table_version: u64,
    },
    /// Client -> master: asks for a temporary TID to begin a transaction that must commit at
    /// exactly `tid` (a restore, ZODB's `tpc_begin(txn, tid)`); refused with
    /// [`Message::BeginRefused`] unless `tid` is after the last committed TID.
    AskBeginAt {
        /// The commit TID the transaction must get.
        tid: Tid,
    },
    /// Master -> client: the temporary TID of the transaction just begun at a chosen commit
    /// TID ([`Message::AskBeginAt`]).
    AnswerBegin {
        /// The temporary TID.
        ttid: Tid,
    },
    /// Master -> client: the answer to [`Message::AskBeginAt`] when `tid` is not after the
    /// last committed TID.
    BeginRefused {
        /// The TID asked for.
        tid: Tid,
        /// The last committed TID.
        last: Tid,
    },
    /// Master -> client, before the partition table: the last committed TID, the client's
    /// starting point (ZODB's `lastTransaction()` at connect).
    LastTransaction {
        /// The TID of the last finished commit ([`Tid::ZERO`] for none).
        tid: Tid,
    },
    /// Client -> master: the last committed TID, please (ZODB's `sync()`).
    AskLastTransaction {
        /// Chosen by the client to match the answer.
        request: u64,
    },
    /// Master -> client: the answer to [`Message::AskLastTransaction`]. Every invalidation of
    /// a TID up to `tid` reached the client before this answer (one ordered link).
    AnswerLastTransaction {
        /// The request answered.
        request: u64,
        /// The TID of the last finished commit.
        tid: Tid,
    },
    /// Client -> master: asks for `count` new object ids.
    AskNewOids {
        /// How many.
        count: u32,
    },
    /// Master -> client: the ids `first .. first + count`.
    AnswerNewOids {
        /// The first id.
        first: Oid,
        /// How many ids follow it, itself included (may be fewer than asked).
        count: u32,
    },
    /// Client -> storage: store `data` as the new revision of `oid`, on top of `serial` (or
    /// another kind of store, see [`StoreKind`]). A second store of an object in the same
    /// transaction replaces the first.
    Store {
        /// The transaction.
        ttid: Tid,
        /// The restart generation this store belongs to (see [`Message::Restart`]).
        generation: u32,
        /// The object.
        oid: Oid,
        /// The revision the client read ([`Tid::ZERO`] for a new object).
        serial: Tid,
        /// The new content (empty for [`StoreKind::Undo`] and [`StoreKind::CheckCurrent`]).
        data: ObjectData,
        /// What the store does.
        kind: StoreKind,
    },
    /// Client -> storage: the store that the client's fan-out object `object` carries over
    /// the multicast group, in its place among the client's messages to this storage. The
    /// group carries the bytes and the channel the order: the storage takes the store here,
    /// once the group delivered it or [`Message::GroupMissed`] said what became of it, and
    /// what the client sent after it waits until then. So a store the group carries can
    /// neither overtake nor trail its transaction's vote or abort.
    ///
    /// The place carries the store's digest: any member of the group holds the group key
    /// and could send bytes under the client's session, so the storage takes only bytes that
    /// match what the client named on its authenticated channel (the fan-out announces
    /// nothing for the node: this is the one check, and the storage's `AnswerStore` the one
    /// acknowledgement).
    GroupStore {
        /// The client's id of the fan-out object (the transport's object id).
        object: u64,
        /// BLAKE3 of the encoded [`Message::Store`] the group carries
        /// ([`digest`](replicast_transport::fanout::wire::digest)).
        digest: [u8; DIGEST_LEN],
    },
    /// Client -> storage: the group did not deliver fan-out object `object` here (named
    /// before by a [`Message::GroupStore`]). `store` is the encoded [`Message::Store`] it
    /// carried, sent this way instead (`auto`'s fallback), or empty: the store failed for
    /// this storage, and its transaction's abort follows.
    GroupMissed {
        /// The client's id of the fan-out object.
        object: u64,
        /// The encoded store, or nothing.
        #[serde(deserialize_with = "crate::encoding::shared_bytes")]
        store: Bytes,
    },
    /// Storage -> client: the outcomes of stores of one transaction's generation, in the
    /// order the storage executed them (at most [`MAX_STORE_ANSWERS`]). A storage answers in
    /// one message every store it finished at once: a commit of many objects costs its
    /// client a few messages per storage, not one per object.
    AnswerStore {
        /// The transaction.
        ttid: Tid,
        /// The generation of the stores answered.
        generation: u32,
        /// Each object, and whether it was stored or why not; an object stored twice in the
        /// generation is answered twice.
        answers: Vec<(Oid, StoreResult)>,
    },
    /// Storage -> client: the transaction lost its locks here to an older one (wound-wait);
    /// every store of it to this storage must be sent again with `generation`.
    Restart {
        /// The transaction.
        ttid: Tid,
        /// The generation the stores sent again must carry.
        generation: u32,
    },
    /// Client -> storage: make the transaction durable; `oids` are all it stored here. Sent
    /// with the stores, not after their answers, and after them on the client's channel (a
    /// store the group carries has its place there, [`Message::GroupStore`]): the storage
    /// votes once it staged every store before it.
    Vote {
        /// The transaction.
        ttid: Tid,
        /// The generation the stores belong to.
        generation: u32,
        /// Every object the transaction stored on this storage.
        oids: Vec<Oid>,
        /// What the transaction says about itself.
        info: TransactionInfo,
    },
    /// Storage -> client: the vote of one storage.
    AnswerVote {
        /// The transaction.
        ttid: Tid,
        /// Yes, or why not.
        result: VoteResult,
    },
    /// Client -> master: every touched partition has a replica that voted yes; commit.
    AskFinish {
        /// The transaction.
        ttid: Tid,
        /// The objects it wrote (for invalidations).
        oids: Vec<Oid>,
        /// The storages that voted yes.
        voters: Vec<NodeName>,
        /// The storages that failed to answer during the transaction.
        failed: Vec<NodeName>,
    },
    /// Master -> client: the outcome of [`Message::AskFinish`].
    AnswerFinish {
        /// The transaction.
        ttid: Tid,
        /// Committed at a TID, or refused.
        outcome: TransactionOutcome,
    },
    /// Master -> other clients: the objects that commits changed, in TID order. The commits a
    /// master announces together (those one write of its log decided) go to each client in
    /// one message, of at most [`MAX_INVALIDATED_OIDS`] objects unless one commit wrote more.
    Invalidate {
        /// Each commit's TID and the objects it wrote.
        commits: Vec<Changed>,
    },
    /// Client -> master and storages, master -> storages: forget the transaction.
    AbortTransaction {
        /// The transaction.
        ttid: Tid,
    },
    /// Storage -> client: the storage gave up on an idle transaction and aborted it.
    Aborted {
        /// The transaction.
        ttid: Tid,
    },
    /// Storage -> client: an older transaction waits here for the transaction, which voted
    /// here. If the client is still waiting for a vote of it elsewhere (so it may be waiting
    /// for a lock there, perhaps for that older one), it aborts it: a cycle of waits could
    /// otherwise close (see the storage's `vote.rs`).
    OlderWaits {
        /// The transaction.
        ttid: Tid,
    },
    /// Storage -> client: a store of the transaction waits here for a lock another
    /// transaction holds (sent once, until the storage answers the vote or restarts the
    /// transaction). A transaction an older one waits for elsewhere ([`OlderWaits`]) is
    /// aborted only if it waits somewhere itself: only then can the two waits be part of a
    /// cycle (see the storage's `vote.rs`).
    ///
    /// [`OlderWaits`]: Message::OlderWaits
    Waits {
        /// The transaction.
        ttid: Tid,
    },
    /// Master -> storage: commit the voted transaction at `tid`.
    Finish {
        /// The transaction.
        ttid: Tid,
        /// Its commit TID.
        tid: Tid,
    },
    /// Storage -> master: the transaction is committed here.
    Finished {
        /// The transaction.
        ttid: Tid,
        /// Its commit TID.
        tid: Tid,
    },
    /// Storage -> master: what became of a transaction this storage voted for?
    AskOutcome {
        /// The transaction.
        ttid: Tid,
    },
    /// Master -> storage: the answer to [`Message::AskOutcome`].
    Outcome {
        /// The transaction.
        ttid: Tid,
        /// What became of it.
        outcome: TransactionOutcome,
    },
    /// Client -> storage: the last committed revision of `oid`.
    Load {
        /// Chosen by the client to match the answer.
        request: u64,
        /// The object.
        oid: Oid,
    },
    /// Storage -> client: the answer to [`Message::Load`].
    AnswerLoad {
        /// The request answered.
        request: u64,
        /// The object.
        oid: Oid,
        /// The revision, if any.
        result: LoadResult,
    },
    /// Client -> storage: a question beside two-phase commit (past revisions, history, the
    /// transaction log, sizes, pack).
    Ask {
        /// Chosen by the client to match the answer.
        request: u64,
        /// The question.
        ask: StorageAsk,
        /// The asker's own transaction in progress, not decided yet: a storage that voted it
        /// does not hold the question until its outcome (it holds questions that could see a
        /// transaction voted there, which may be announced before applied), since the asker
        /// would wait for itself (ZODB reads inside its transaction).
        open: Option<Tid>,
    },
    /// Storage -> client: the answer to [`Message::Ask`].
    Answer {
        /// The request answered.
        request: u64,
        /// The answer.
        answer: StorageAnswer,
    },
    /// Storage -> master: where the storage accepts connections from clients.
    StorageAddress {
        /// Its QUIC address.
        address: SocketAddr,
    },
    /// Master -> client, before the partition table: where each storage that told its
    /// address accepts connections.
    StorageAddresses(Vec<(NodeName, SocketAddr)>),
    /// Client or storage -> master: its links as it measures them (sent now and then).
    NodeReport(NodeReport),
    /// Master -> storage: catch up on these feeding partitions, each from an up-to-date cell
    /// of the current table, up to `up_to`; every transaction after it reaches the storage
    /// live.
    Replicate {
        /// The TID to replicate up to.
        up_to: Tid,
        /// The partitions, each with the TID up to which the master knows the storage holds it
        /// whole (it missed nothing committed before); [`Tid::ZERO`] for a new cell.
        partitions: Vec<(u32, Tid)>,
    },
    /// Storage -> master: this storage runs, but its latest table shows cells of it out of date
    /// (it failed a commit, or a client reported it): let them feed and catch up. Only a live
    /// storage asks, so one that is really gone stays out of date and out of the writes.
    AskCatchUp,
    /// Storage -> master: the partition holds every transaction up to `up_to`, as the
    /// [`Message::Replicate`] with that bound asked.
    Replicated {
        /// The partition.
        partition: u32,
        /// The bound of the `Replicate` done.
        up_to: Tid,
    },
    /// Storage -> storage: the committed transactions touching `partition` after `after`, up
    /// to `up_to` (the first step of replication).
    AskTransactions {
        /// The partition.
        partition: u32,
        /// The last TID the asker already has.
        after: Tid,
        /// The last TID wanted.
        up_to: Tid,
    },
    /// Storage -> storage: one bounded batch answering [`Message::AskTransactions`].
    AnswerTransactions {
        /// The partition.
        partition: u32,
        /// The question's `after`: which question this answers (a storage may have asked the
        /// next batch before the last one was imported, and drop that question if the import
        /// fails; its late answer must not pass for the answer of a question from further back).
        after: Tid,
        /// The question's `up_to`: an answer complete up to an earlier round's bound must not
        /// pass for one complete up to the current round's (the same `after` is asked again
        /// when a round ends before its first batch arrived).
        up_to: Tid,
        /// Transactions in TID order, each listing only the partition's objects.
        transactions: Vec<CommittedTransaction>,
        /// The TID to ask again after; `None` when nothing is left up to the bound.
        resume: Option<Tid>,
    },
    /// Storage -> storage: the object revisions of `partition` after `after`, up to `up_to`
    /// (the second step of replication).
    AskObjects {
        /// The partition.
        partition: u32,
        /// The last revision the asker already has, in (TID, OID) order.
        after: ObjectCursor,
        /// The last TID wanted.
        up_to: Tid,
    },
    /// Storage -> storage: one bounded batch answering [`Message::AskObjects`].
    AnswerObjects {
        /// The partition.
        partition: u32,
        /// The question's `after`, as in [`Message::AnswerTransactions`].
        after: ObjectCursor,
        /// The question's `up_to`, as in [`Message::AnswerTransactions`].
        up_to: Tid,
        /// Revisions in (TID, OID) order.
        objects: Vec<ReplicatedObject>,
        /// The cursor to ask again after; `None` when nothing is left up to the bound.
        resume: Option<ObjectCursor>,
    },
    /// Storage -> storage: the next part of a revision too large for one batch, which came
    /// first as an [`AnswerObjectPart`](Message::AnswerObjectPart).
    AskObjectPart {
        /// The partition.
        partition: u32,
        /// The object.
        oid: Oid,
        /// The revision.
        tid: Tid,
        /// How many bytes of it the asker has.
        offset: u64,
    },
    /// Storage -> storage: a part of a revision too large for one batch, answering
    /// [`Message::AskObjects`] (the first part) or [`Message::AskObjectPart`].
    AnswerObjectPart(ObjectPart),
    /// Storage -> storage: this storage cannot serve the partition's history (its engine
    /// failed, or it does not hold the partition); ask another.
    ReplicationUnavailable {
        /// The partition.
        partition: u32,
    },
    /// Anyone with a cluster certificate -> master: asks for the cluster's status.
    ///
    /// Sent as a request (a request stream whose body is the postcard `Vec<u8>` of
    /// [`encode`](super::encode)d bytes; the answer comes back the same way), which the
    /// master's driver answers apart from the asker's messages, so the asker may use the name
    /// of a running node. The one-way form is still answered, but it shares the sequence of
    /// messages from that name: it disturbs a running node of the same name.
    AskStatus {
        /// Chosen by the asker to match the answer.
        request: u64,
    },
    /// Master -> asker: the answer to [`Message::AskStatus`].
    AnswerStatus {
        /// The request answered.
        request: u64,
        /// The cluster as the master sees it.
        status: Box<ClusterStatus>,
    },
    /// Anyone with a cluster certificate -> master: add a storage or take one out
    /// (`replicast admin`). Sent as a request, like [`Message::AskStatus`].
    AskChangeStorage {
        /// Chosen by the asker to match the answer.
        request: u64,
        /// The change.
        change: StorageChange,
    },
    /// Master -> asker: the answer to [`Message::AskChangeStorage`].
    AnswerChangeStorage {
        /// The request answered.
        request: u64,
        /// Done, or why not.
        outcome: ChangeOutcome,
    },
    /// Operator (`admin` certificate) -> storage: a question about the data the storage holds
    /// (`replicast check`). Sent as a request, like [`Message::AskStatus`]; the storage answers
    /// once its engine read what the question needs.
    AskInspect {
        /// Chosen by the asker to match the answer.
        request: u64,
        /// The question.
        ask: InspectAsk,
    },
    /// Storage -> operator: the answer to [`Message::AskInspect`].
    AnswerInspect {
        /// The request answered.
        request: u64,
        /// The answer.
        answer: InspectAnswer,
    },
    /// Any node -> the sender of a message or request it refused before its role saw it
    /// (the sender's certificate does not allow it, is revoked, or a per-peer limit is
    /// reached): the answer of a refused request, and sent back for a refused message.
    Refused(Refusal),
    /// Master -> master: a message of the masters' raft group.
    Consensus(ConsensusMessage),
    /// Primary -> storage or client: `message` is an order of the primary of raft term
    /// `term`. Every message the primary sends a storage or a client travels so; a node that
    /// has seen a later term refuses it (a deposed primary's orders never take effect), and
    /// two masters claiming the same term are told apart (raft never has two leaders in one
    /// term).
    FromPrimary {
        /// The primary's term.
        term: u64,
        /// The order (never itself a `FromPrimary`: decoding refuses nesting).
        message: Order,
    },
    /// Master -> storage, client or asker: who the primary is, as this master knows it (the
    /// typed redirect, `NotPrimary`): sent by a master that is not the primary in answer to
    /// anything that needs one, and by any master in answer to [`Message::AskPrimary`].
    PrimaryIs {
        /// The primary's name, when one is known and ready to serve.
        primary: Option<NodeName>,
        /// Where it accepts connections, if this master knows.
        address: Option<SocketAddr>,
        /// The term of this master's knowledge.
        term: u64,
    },
    /// Storage or client -> any master: who is the primary?
    AskPrimary,
    /// Standing backup (`replicast backup --follow`, an `admin` certificate) -> primary:
    /// where the backup is, about once per interval. Sent as a request, like
    /// [`Message::AskStatus`], and answered the same way: the status after the report, which
    /// tells the follower whether the cluster moved on. The master keeps the latest report of
    /// each backup in memory only and shows it in the status ([`ClusterStatus::backups`]).
    ReportBackup {
        /// Chosen by the asker to match the answer.
        request: u64,
        /// Where the backup is.
        report: BackupReport,
    },
}

/// The order inside a [`Message::FromPrimary`]: a message, decoded only one level deep (an
/// order inside an order is refused, so that nesting cannot exhaust the decoder's stack).
#[derive(Clone, Debug, PartialEq)]
pub struct Order(pub Box<Message>);

thread_local! {
    /// How many orders the decoder is inside, on this thread.
    static ORDER_DEPTH: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

impl Serialize for Order {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Order {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        ORDER_DEPTH.with(|depth| {
            if depth.get() > 0 {
                return Err(serde::de::Error::custom("an order inside an order"));
            }
            depth.set(1);
            let message = Box::<Message>::deserialize(deserializer);
            depth.set(0);
            message.map(Order)
        })
    }
}

/// What a [`Message::Store`] does. Every kind takes the object's write lock, held until the
/// transaction ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreKind {
    /// Writes `data` on top of `serial`: a conflict when `serial` is not the object's last
    /// committed TID.
    #[default]
    Checked,
    /// Writes `data` without checking `serial` (ZODB's `restore`).
    Unchecked,
    /// Writes again the content of the object's revision at this TID, by reference (an
    /// undo), on top of `serial` like [`Checked`](Self::Checked).
    Undo(Tid),
    /// Writes nothing: checks that `serial` is the object's last committed TID and keeps the
    /// lock so that nobody commits it before this transaction ends (ZODB's
    /// `checkCurrentSerialInTransaction`).
    CheckCurrent,
}

/// The most answers one [`Message::AnswerStore`] carries (a storage sends more in several).
pub const MAX_STORE_ANSWERS: usize = 4096;

/// The most objects one [`Message::Invalidate`] names when it tells of several commits (a
/// master sends more in several; a single commit that wrote more goes alone).
pub const MAX_INVALIDATED_OIDS: usize = 65_536;

/// The objects one commit changed, as [`Message::Invalidate`] tells them.
///
/// ```
/// use replicast_node::ids::{Oid, Tid};
/// use replicast_node::protocol::{Changed, Message, decode, encode};
///
/// let commits = vec![
///     Changed { tid: Tid(10), oids: vec![Oid(1), Oid(2)] },
///     Changed { tid: Tid(11), oids: vec![Oid(7)] },
/// ];
/// let message = Message::Invalidate { commits };
/// assert_eq!(decode(&encode(&message))?, message);
/// # Ok::<(), replicast_node::protocol::DecodeError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    /// The TID of the commit.
    pub tid: Tid,
    /// The objects it wrote.
    pub oids: Vec<Oid>,
}

/// The outcome of one store on one storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreResult {
    /// Recorded (not durable until the vote).
    Stored,
    /// The object's last committed revision is `current`, not the serial the client sent.
    Conflict {
        /// The object's last committed TID.
        current: Tid,
    },
    /// The storage could not record it (its engine failed).
    Failed,
}

/// One storage's vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VoteResult {
    /// The data is durable here.
    Yes,
    /// An object was committed by another transaction since it was stored.
    Conflict {
        /// The object.
        oid: Oid,
        /// The serial the transaction stored on top of.
        expected: Tid,
        /// The object's last committed TID.
        current: Tid,
    },
    /// The storage does not hold the transaction the vote describes.
    No(VoteRefusal),
}

/// Why a storage votes no, other than a conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VoteRefusal {
    /// The storage does not know the transaction (aborted, or never stored here).
    UnknownTransaction,
    /// The objects listed are not those the storage holds for the transaction.
    MissingStores,
    /// The storage's engine failed.
    StorageFailed,
}

/// What became of a transaction, as the master knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransactionOutcome {
    /// Committed at this TID.
    Committed(Tid),
    /// Aborted: nothing of it is visible, ever.
    Aborted,
    /// Not decided yet (its finish is queued): ask again later.
    Pending,
    /// Refused at finish: a touched partition has no readable replica that voted yes.
    Unavailable {
        /// The partition.
        partition: u32,
    },
    /// Refused at finish: the transaction had to commit at the TID it began with
    /// ([`Message::AskBeginAt`]), which is no longer after the last committed one.
    TidNotAfterLast {
        /// The last committed TID.
        last: Tid,
    },
}

/// The answer to a load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoadResult {
    /// The last committed revision.
    Found {
        /// Its TID (the serial to store on top of).
        tid: Tid,
        /// Its content.
        data: ObjectData,
    },
    /// The object has no committed revision.
    Missing,
    /// The storage could not read it.
    Failed,
}

/// A part of a revision too large for one replication batch
/// ([`Message::AnswerObjectPart`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectPart {
    /// The partition.
    pub partition: u32,
    /// For the first part, answering [`Message::AskObjects`]: that question's `after` (which
    /// question it answers, as in [`Message::AnswerObjects`]); `None` for the next parts, which
    /// answer [`Message::AskObjectPart`] and are known by the revision and offset.
    pub after: Option<ObjectCursor>,
    /// The object.
    pub oid: Oid,
    /// The revision.
    pub tid: Tid,
    /// The digest of the whole content, checked once it is complete.
    pub digest: Digest,
    /// The length of the whole content.
    pub total: u64,
    /// Where these bytes start in it.
    pub offset: u64,
    /// The bytes.
    pub bytes: Vec<u8>,
}

impl Message {
    /// `message` as an order of the primary of raft term `term` (what a primary sends a
    /// storage or a client).
    ///
    /// ```
    /// use replicast_node::protocol::Message;
    /// let order = Message::order(3, Message::AskLastTransaction { request: 1 });
    /// assert!(matches!(order, Message::FromPrimary { term: 3, .. }));
    /// assert_eq!(order.into_order(), Message::AskLastTransaction { request: 1 });
    /// ```
    pub fn order(term: u64, message: Message) -> Message {
        Message::FromPrimary {
            term,
            message: Order(Box::new(message)),
        }
    }

    /// The order inside a [`Message::FromPrimary`], or the message itself.
    pub fn into_order(self) -> Message {
        match self {
            Message::FromPrimary { message, .. } => *message.0,
            other => other,
        }
    }

    /// The variant's name, for errors and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::ClientHello => "ClientHello",
            Message::StorageReady => "StorageReady",
            Message::PartitionTable(_) => "PartitionTable",
            Message::TtidSpace { .. } => "TtidSpace",
            Message::Begin { .. } => "Begin",
            Message::AskBeginAt { .. } => "AskBeginAt",
            Message::AnswerBegin { .. } => "AnswerBegin",
            Message::BeginRefused { .. } => "BeginRefused",
            Message::LastTransaction { .. } => "LastTransaction",
            Message::AskLastTransaction { .. } => "AskLastTransaction",
            Message::AnswerLastTransaction { .. } => "AnswerLastTransaction",
            Message::AskNewOids { .. } => "AskNewOids",
            Message::AnswerNewOids { .. } => "AnswerNewOids",
            Message::Store { .. } => "Store",
            Message::AnswerStore { .. } => "AnswerStore",
            Message::GroupStore { .. } => "GroupStore",
            Message::GroupMissed { .. } => "GroupMissed",
            Message::Restart { .. } => "Restart",
            Message::Vote { .. } => "Vote",
            Message::AnswerVote { .. } => "AnswerVote",
            Message::AskFinish { .. } => "AskFinish",
            Message::AnswerFinish { .. } => "AnswerFinish",
            Message::Invalidate { .. } => "Invalidate",
            Message::AbortTransaction { .. } => "AbortTransaction",
            Message::Aborted { .. } => "Aborted",
            Message::OlderWaits { .. } => "OlderWaits",
            Message::Waits { .. } => "Waits",
            Message::Finish { .. } => "Finish",
            Message::Finished { .. } => "Finished",
            Message::AskOutcome { .. } => "AskOutcome",
            Message::Outcome { .. } => "Outcome",
            Message::Load { .. } => "Load",
            Message::AnswerLoad { .. } => "AnswerLoad",
            Message::Ask { .. } => "Ask",
            Message::Answer { .. } => "Answer",
            Message::StorageAddress { .. } => "StorageAddress",
            Message::StorageAddresses(_) => "StorageAddresses",
            Message::NodeReport(_) => "NodeReport",
            Message::Replicate { .. } => "Replicate",
            Message::AskCatchUp => "AskCatchUp",
            Message::Replicated { .. } => "Replicated",
            Message::AskTransactions { .. } => "AskTransactions",
            Message::AnswerTransactions { .. } => "AnswerTransactions",
            Message::AskObjects { .. } => "AskObjects",
            Message::AnswerObjects { .. } => "AnswerObjects",
            Message::AskObjectPart { .. } => "AskObjectPart",
            Message::AnswerObjectPart(_) => "AnswerObjectPart",
            Message::ReplicationUnavailable { .. } => "ReplicationUnavailable",
            Message::AskStatus { .. } => "AskStatus",
            Message::AnswerStatus { .. } => "AnswerStatus",
            Message::AskChangeStorage { .. } => "AskChangeStorage",
            Message::AnswerChangeStorage { .. } => "AnswerChangeStorage",
            Message::AskInspect { .. } => "AskInspect",
            Message::AnswerInspect { .. } => "AnswerInspect",
            Message::Refused(_) => "Refused",
            Message::Consensus(_) => "Consensus",
            Message::FromPrimary { .. } => "FromPrimary",
            Message::PrimaryIs { .. } => "PrimaryIs",
            Message::AskPrimary => "AskPrimary",
            Message::ReportBackup { .. } => "ReportBackup",
        }
    }
}
