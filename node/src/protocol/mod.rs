//! The messages of the two-phase commit, and what the sans-IO roles exchange with a driver.
//!
//! The roles ([`Master`](crate::master::Master), [`Client`](crate::client::Client),
//! [`Storage`](crate::storage::Storage)) are state machines in the style of
//! `quinn-proto`: a driver feeds each one `(now, peer, message)` and expired timers, and takes
//! from it [`Transmit`]s (a message for a named peer) and events. They do no I/O and read no
//! clock, so the whole protocol runs under a deterministic simulation
//! (`node/tests/twopc_sim.rs`) as well as over QUIC links.
//!
//! The driver's contract: messages between two peers arrive in order and without loss (a QUIC
//! stream), and the driver reports a peer whose connection is lost. Everything else (delay,
//! reordering across peers, crashes) the protocol copes with.
//!
//! ## Two-phase commit, as built here (two round trips)
//!
//! 1. *begin*: the client makes its temporary TID (`ttid`, the transaction's age) itself, from
//!    its clock corrected by the primary's and the number the primary gave it, and tells the
//!    primary one way ([`Begin`](Message::Begin)).
//! 2. *store and vote*: the client sends each object to every writable replica of its
//!    partition without waiting, and each storage its [`Vote`](Message::Vote) right behind
//!    them on its channel (a store the multicast group carries has its place there,
//!    [`GroupStore`](Message::GroupStore)). A storage locks each object (wound-wait: an older
//!    transaction takes the lock of a younger one that has not voted and the storage tells the
//!    younger's client to [`Restart`](Message::Restart), i.e. send its stores and vote there
//!    again under a new generation) and stages it with its serial checked; a conflict keeps
//!    the lock and is answered with the committed serial, for the client to resolve (store
//!    again, vote again) or abort. The storage votes once every store before the vote is staged:
//!    a yes means the data is fsynced, and from then on nobody takes its locks. A storage that
//!    fails or does not answer in time is reported, and the vote still succeeds if every
//!    touched partition keeps a replica that voted yes. An older transaction that waits for a
//!    voted younger one makes the storage tell the younger's client
//!    ([`OlderWaits`](Message::OlderWaits)), and a storage where a store waits for a lock
//!    tells that store's client ([`Waits`](Message::Waits)). A client told both while a vote of
//!    its transaction is not in aborts it (it may wait elsewhere for the older one: a cycle
//!    wound-wait alone no longer rules out); one that waits nowhere goes on.
//! 3. *finish*: the client asks the primary ([`AskFinish`](Message::AskFinish)); the primary
//!    checks the voters against its table (marking failed storages' cells out of date, or
//!    refusing a finish that would lose a partition's last readable cell), allocates the commit
//!    TID, puts the decision in the masters' raft log and answers the client and invalidates
//!    the objects at the other clients; then it sends the TID to the voters, one transaction
//!    at a time so that every storage commits in TID order. A storage holds reads of what a
//!    transaction it voted for wrote until it applied the outcome.
//! 4. A storage that voted and hears no finish in time, or that restarts with voted
//!    transactions on disk, asks the primary for the [outcome](TransactionOutcome); the primary
//!    aborts a transaction still open when asked, so a client that vanished after its vote
//!    releases its locks. An unvoted transaction idle for too long, or whose client's
//!    connection is lost, is aborted by the storage.
//!
//! Timeouts are ordered so that the right side gives up first: the client's vote timeout
//! (an fsync) is shorter than the storages' outcome timeout (a vanished client), which is
//! shorter than the client's store timeout (waiting for locks held by that vanished client).
//!
//! ## Replication
//!
//! A storage whose cells go feeding (it restarted, failed a commit, spoke again after being
//! counted lost, or was given cells by an operator) takes new transactions' stores at once; the
//! master waits for the transactions open at that moment, then sends
//! [`Replicate`](Message::Replicate) with the last committed TID as the bound. The storage pulls
//! each partition's transactions, then its objects, from a readable cell in batches bounded in
//! bytes (large revisions in parts), imports each batch with its progress in one durable write,
//! and reports [`Replicated`](Message::Replicated); the master makes the cell readable.
//!
//! docs/ARCHITECTURE.md tells the whole design, the masters' group (raft) included.

mod admin;
mod ask;
mod authorization;
mod codec;
mod error;
mod inspect;
mod message;
mod outbox;
mod status;

pub use admin::{ChangeOutcome, ChangeRefusal, StorageChange};
pub use ask::{LoadBefore, ObjectRevision, StorageAnswer, StorageAsk, StorageSize};
pub use authorization::{
    FANOUT_REPLICAS, FANOUT_WRITERS, PeerLimit, Refusal, RefusalReason, Rule, authorize, rule,
};
pub use codec::{PROTOCOL_VERSION, decode, decode_from, decode_shared, decode_shared_from, encode};
pub use error::{DecodeError, ProtocolError};
pub use inspect::{InspectAnswer, InspectAsk, OidRange, RangeDigest, RecordDigest};
pub use message::{
    Changed, LoadResult, MAX_INVALIDATED_OIDS, MAX_STORE_ANSWERS, Message, ObjectPart, Order,
    StoreKind, StoreResult, TransactionOutcome, VoteRefusal, VoteResult,
};
pub(crate) use outbox::Outbox;
pub use outbox::Transmit;
pub use status::{
    BackupReport, BackupState, BackupStatus, ClusterStatus, CrlStatus, LinkReport, MasterRole,
    MasterStatus, NodeReport, NodeRole, NodeState, NodeStatus, RefusalCount, STALE_AFTER_MISSED,
    StorePath,
};
