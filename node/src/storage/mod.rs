//! The storage role's state machine: stores under locks, votes, finishes, recovery and
//! replication — sans-IO, like the other roles: it never touches the engine.
//!
//! # Conversations
//!
//! [`Storage::handle`] routes each message by who the role talks with: a client (stores,
//! votes, loads, aborts: `client.rs`; past revisions, history, the transaction log, pack:
//! `reads.rs`), the master (finishes, outcomes, the table, replication
//! orders: `master.rs`), another storage (replication batches: `replication.rs`).
//!
//! # Persistence
//!
//! What needs the engine goes out as a [`Write`] or a [`Read`] ([`poll_persist`],
//! [`poll_fetch`]); the driver executes it (writes in order, reads on read transactions that
//! never wait for a write) and hands the outcome back ([`persisted`], [`fetched`]). An answer
//! that promises something of the disk goes out only once the write it depends on is
//! persisted; the others go at once:
//!
//! - **Store: answered once executed**, not fsynced: staging is not durable anyway (a crash
//!   before the vote forgets it, which costs the client a retry). The writes go to the
//!   engine in the order they are emitted, so a staging's serial check sees every commit
//!   finished before its lock was granted, and a conflict is exact: the client hears
//!   `StoreResult::Conflict` with the committed serial while the transaction keeps the lock,
//!   and stores the object again on top of it (ZODB's conflict resolution) or aborts. The
//!   vote checks every serial again ([`VoteResult::Conflict`]), is executed after the
//!   stagings it covers, and checks that the transaction staged exactly the objects it lists
//!   ([`EngineError::StagedMismatch`]): a staging that failed makes the vote fail, never
//!   promise data that is not there. A check of the current serial
//!   ([`StoreKind::CheckCurrent`]) is a write that writes nothing, for the same order.
//! - **Vote: answered once persisted** (fsynced). The transaction takes the voted state of
//!   the lock manager when the vote is emitted, so no wound can take its locks while the
//!   fsync runs; a vote that fails leaves it holding them until its client aborts, which it
//!   does on the refusal (an older transaction waits meanwhile instead of wounding it, which
//!   cannot deadlock: the voting transaction waits for nothing).
//! - **Finish: acknowledged once committed** (visible to loads), and durable with the next
//!   fsync unless [`StorageConfig::durable_finish`]. The master finishes one transaction at a
//!   time and waits for every voter's acknowledgement, so an fsync per finish would serialize
//!   every commit of the cluster behind one fsync; the vote already made the data durable and
//!   the master holds the outcome, so a storage that loses the finish in a crash finds the
//!   transaction voted at its restart, asks the master and commits it at the same TID, in
//!   TID order (NEO commits its last step lazily in the same way). redb makes a commit
//!   durable together with every commit before it, so what survives a crash is always a
//!   prefix of the commits.
//! - **Replication: a batch counts once persisted**: [`Message::Replicated`] and the next
//!   question wait for the durable import of the batch and its progress.
//! - **Loads, a client's questions and replication batches: answered once read**, from a
//!   read transaction that sees every finish persisted before the load arrived. A client's
//!   read that could see what a transaction voted here wrote (its objects, or the transaction
//!   log) is read only once that transaction's outcome is applied: the master announces a
//!   commit before its voters apply it (see `in_doubt.rs`).
//! - **Pack steps and garbage collection: answered once persisted**: they are writes, in
//!   order with the others.
//!
//! The locks of a finished or aborted transaction are released when its write is emitted:
//! writes are executed in order, so a store that takes a lock after that is staged after the
//! commit and checked against it at its vote.
//!
//! Stores are taken while less than [`StorageConfig::max_unpersisted_writes`] writes and
//! [`StorageConfig::max_unpersisted_bytes`] wait for the disk ([`takes_stores`]): the driver
//! stops handing it stores otherwise, so a slow disk slows the writers.
//!
//! # Transactions
//!
//! A store waits for its object's lock, then is staged; the stores of one transaction are
//! taken in the order they arrive, one lock at a time. When an older transaction wounds a
//! younger one, the younger's staged data is dropped and its client told to
//! [`Restart`](Message::Restart) under a new generation; stores of an older generation still
//! in flight are ignored.
//!
//! A transaction that voted and hears nothing for [`StorageConfig::outcome_timeout`] is asked
//! about at the master (its client may be gone); one that has not voted and is idle for
//! [`StorageConfig::idle_timeout`] is aborted here. After a restart, every voted transaction
//! found on disk is asked about, and unvoted ones (whose locks died with the process) dropped;
//! the recovered commits are applied once every outcome is known, in TID order, as the store
//! requires. A finish that crosses the master's answer to such a question is acknowledged
//! again, so the master does not take this storage for silent.
//!
//! When the link to the master is lost, the master counts the storage as gone and its cells
//! out of date; the storage announces itself again ([`Message::StorageReady`]) after
//! [`StorageConfig::outcome_timeout`], so that once the link is back it runs and catches up
//! without a restart.
//!
//! A storage whose cells are feeding catches up by replication from the
//! up-to-date cells (it pulls; up-to-date storages serve the batches), and takes stores for
//! those partitions without the serial check until it holds their whole history. Commits
//! merge ([`Engine::finish_merging`](crate::engine::Engine::finish_merging)): replication may
//! have imported the commit's TID, or later ones, before its finish arrived.
//!
//! ```
//! use std::time::SystemTime;
//! use replicast_node::engine::StartupState;
//! use replicast_node::ids::{Oid, Tid};
//! use replicast_node::object::ObjectData;
//! use replicast_node::protocol::{Message, StoreKind, StoreResult, VoteResult};
//! use replicast_node::storage::{Storage, StorageConfig, Write};
//! use replicast_node::transaction::TransactionInfo;
//!
//! let now = SystemTime::now();
//! let mut storage =
//!     Storage::open(now, "s1", "master", StartupState::default(), StorageConfig::default());
//! let (ttid, oid) = (Tid(7), Oid(1));
//! let data = ObjectData::from(b"v1".to_vec());
//! let kind = StoreKind::Checked;
//! let store = Message::Store { ttid, generation: 0, oid, serial: Tid::ZERO, data, kind };
//! storage.handle(now, "c1", store)?;
//! // The staging goes to the engine, which checks the serial; the store is answered then.
//! let staging = storage.poll_persist().expect("a staging");
//! assert!(matches!(staging.write, Write::Stage { check: true, .. }));
//! let answers = |storage: &mut Storage| {
//!     std::iter::from_fn(|| storage.poll_transmit())
//!         .filter(|transmit| transmit.to == "c1")
//!         .map(|transmit| transmit.message)
//!         .collect::<Vec<_>>()
//! };
//! assert!(answers(&mut storage).is_empty());
//! storage.persisted(now, staging.id, Ok(()))?;
//! let sent = answers(&mut storage);
//! assert!(matches!(&sent[..], [Message::AnswerStore { answers, .. }] if answers[..] == [(oid, StoreResult::Stored)]));
//! let info = TransactionInfo::default();
//! let vote = Message::Vote { ttid, generation: 0, oids: vec![oid], info };
//! storage.handle(now, "c1", vote)?;
//! let vote = storage.poll_persist().expect("the vote's write");
//! // The vote is answered once the engine says it is on disk.
//! assert!(answers(&mut storage).is_empty());
//! storage.persisted(now, vote.id, Ok(()))?;
//! let sent = answers(&mut storage);
//! assert!(matches!(sent[..], [Message::AnswerVote { result: VoteResult::Yes, .. }]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`poll_persist`]: Storage::poll_persist
//! [`poll_fetch`]: Storage::poll_fetch
//! [`persisted`]: Storage::persisted
//! [`fetched`]: Storage::fetched
//! [`takes_stores`]: Storage::takes_stores
//! [`VoteResult::Conflict`]: crate::protocol::VoteResult::Conflict
//! [`EngineError::StagedMismatch`]: crate::engine::EngineError::StagedMismatch
//! [`StoreKind::CheckCurrent`]: crate::protocol::StoreKind::CheckCurrent

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::SystemTime;

use crate::engine::{ReplicationProgress, StartupState};
use crate::ids::{Oid, Tid};
use crate::locks::LockManager;
use crate::object::ObjectData;
use crate::partition::NodeName;
use crate::protocol::{Message, Outbox, ProtocolError, StoreKind, Transmit};

mod client;
mod config;
mod event;
mod in_doubt;
mod inspect;
mod master;
mod open;
mod persist;
mod primary;
mod reads;
mod replication;
#[cfg(test)]
mod tests;
mod vote;

pub use config::StorageConfig;

/// How soon a storage asks again when the masters know no primary (an election goes on).
const PRIMARY_RETRY: std::time::Duration = std::time::Duration::from_millis(250);
pub use event::StorageEvent;
pub use persist::{Backlog, Fetch, Persist, Read, ReadResult, Write, WriteResult, Written};

/// A store waiting for its lock or its turn.
#[derive(Debug)]
struct QueuedStore {
    oid: Oid,
    serial: Tid,
    data: ObjectData,
    kind: StoreKind,
}

/// A transaction this storage takes part in.
#[derive(Debug)]
struct Transaction {
    client: NodeName,
    generation: u32,
    queue: VecDeque<QueuedStore>,
    waiting: bool,
    stored: BTreeSet<Oid>,
    /// Objects stored without a serial check (restores): the vote does not check them either.
    restored: BTreeSet<Oid>,
    /// A staging of this generation failed: the vote says no.
    failed: bool,
    /// The bytes staged in this generation (what the other voters write too, about).
    staged_bytes: u64,
    /// The stagings (and checks) of this generation emitted and not executed yet.
    staging: u32,
    /// Objects whose last staging met a newer committed revision: (serial, current).
    conflicted: BTreeMap<Oid, (Tid, Tid)>,
    /// The client's vote, waiting for the stagings of the stores it covers (see `vote.rs`).
    held_vote: Option<vote::HeldVote>,
    /// The vote is written and not persisted yet.
    voting: bool,
    voted: bool,
    /// Its client was told that an older transaction waits here for it (it voted).
    escalated: bool,
    /// Its client was told that a store of it waits here for a lock ([`Message::Waits`]), and
    /// the vote was not answered since.
    told_waits: bool,
    deadline: SystemTime,
}

impl Transaction {
    /// A transaction `client` just opened here (its first store or its vote arrived), idle
    /// until `deadline`.
    fn new(client: &str, deadline: SystemTime) -> Self {
        Self {
            client: client.to_owned(),
            generation: 0,
            queue: VecDeque::new(),
            waiting: false,
            stored: BTreeSet::new(),
            restored: BTreeSet::new(),
            failed: false,
            staged_bytes: 0,
            staging: 0,
            conflicted: BTreeMap::new(),
            held_vote: None,
            voting: false,
            voted: false,
            escalated: false,
            told_waits: false,
            deadline,
        }
    }

    /// When [`Storage::handle_timeout`] must look at it, if its deadline counts: a voted
    /// transaction's wait for its outcome, an unvoted one's idle time while it waits for no
    /// lock (a wait for a lock is bounded by the transaction holding it).
    fn timer(&self) -> Option<SystemTime> {
        (self.voted || !self.waiting).then_some(self.deadline)
    }
}

/// Where a voted transaction found on disk at start stands.
#[derive(Clone, Copy, Debug)]
enum Recovery {
    /// The master is asked; again at `next` if no answer came.
    Asking { next: SystemTime },
    /// Committed at this TID; applied once every recovered transaction is known, in TID order
    /// (the store commits in TID order only).
    Committed(Tid),
}

/// The storage role; see the [module documentation](self).
#[derive(Debug)]
pub struct Storage {
    name: NodeName,
    /// The master this storage reports to: the primary, or the master it asks next.
    master: NodeName,
    /// The masters, and which is the primary of which term.
    masters: crate::primary::PrimaryTracker,
    config: StorageConfig,
    locks: LockManager,
    transactions: open::OpenTransactions,
    /// Voted transactions found on disk at start, with when to ask the master again.
    recovering: BTreeMap<Tid, Recovery>,
    /// Recently ended transactions, with their commit TID if they committed.
    ended: BTreeMap<Tid, Option<Tid>>,
    ended_order: VecDeque<Tid>,
    /// Finishes written and not persisted yet, with the acknowledgements owed to the master
    /// once they are.
    finishing: BTreeMap<Tid, u32>,
    /// Transactions voted here whose outcome is not applied yet, and the reads that wait for
    /// them (the master announces a commit before its voters apply it).
    in_doubt: in_doubt::InDoubt,
    /// What replication holds of each partition on disk, as persisted imports said.
    progress: BTreeMap<u32, ReplicationProgress>,
    /// The table, the other storages' addresses, and the partitions catching up.
    replicator: replication::Replicator,
    /// Writes and reads for the engine, and what waits for them.
    persistence: persist::Persistence,
    /// Where this storage accepts connections, once announced.
    address: Option<SocketAddr>,
    /// When to announce this storage to the master again, after the link to it was lost.
    reannounce_at: Option<SystemTime>,
    out: Outbox,
    events: VecDeque<StorageEvent>,
    /// Answers to operators' requests, deferred until the engine read what they asked, by the
    /// driver's token.
    answers: VecDeque<(u64, Result<Message, ProtocolError>)>,
}

impl Storage {
    /// Starts the role on an engine in state `state` ([`Engine::startup_state`]): announces
    /// itself to `master`, asks it about every voted transaction left on disk and drops the
    /// unvoted ones.
    ///
    /// [`Engine::startup_state`]: crate::engine::Engine::startup_state
    pub fn open(
        now: SystemTime,
        name: &str,
        master: &str,
        state: StartupState,
        config: StorageConfig,
    ) -> Self {
        Self::open_with_masters(now, name, vec![master.to_owned()], state, config)
    }

    /// As [`open`](Self::open), in a cluster of several `masters`: the storage announces
    /// itself to the first, follows redirects to the primary, and takes orders only from the
    /// primary of the latest term (see [`PrimaryTracker`](crate::primary::PrimaryTracker)).
    pub fn open_with_masters(
        now: SystemTime,
        name: &str,
        masters: Vec<NodeName>,
        state: StartupState,
        config: StorageConfig,
    ) -> Self {
        let masters = crate::primary::PrimaryTracker::new(masters);
        let master = masters.target().to_owned();
        let master = master.as_str();
        let mut node = Self {
            name: name.to_owned(),
            master: master.to_owned(),
            masters,
            config,
            locks: LockManager::new(),
            transactions: open::OpenTransactions::default(),
            recovering: BTreeMap::new(),
            ended: BTreeMap::new(),
            ended_order: VecDeque::new(),
            finishing: BTreeMap::new(),
            in_doubt: in_doubt::InDoubt::default(),
            progress: state.replication,
            replicator: replication::Replicator::default(),
            persistence: persist::Persistence::default(),
            address: None,
            reannounce_at: None,
            out: Outbox::default(),
            events: VecDeque::new(),
            answers: VecDeque::new(),
        };
        node.out.send(master, Message::StorageReady);
        for pending in state.pending {
            if pending.voted {
                // It may have committed: its objects are read once its outcome is applied.
                node.in_doubt
                    .voted(pending.ttid, pending.oids.iter().copied());
                node.recovering.insert(
                    pending.ttid,
                    Recovery::Asking {
                        next: now + node.config.outcome_timeout,
                    },
                );
                node.out
                    .send(master, Message::AskOutcome { ttid: pending.ttid });
            } else {
                node.persistence.write(
                    Write::Abort { ttid: pending.ttid },
                    persist::AfterWrite::Abort {
                        ttid: pending.ttid,
                        report: false,
                    },
                );
            }
        }
        node
    }

    /// Tells the master that this storage accepts connections at `address`; the master hands
    /// it to clients, which then need no list of storage addresses of their own.
    pub fn announce_address(&mut self, address: SocketAddr) {
        self.address = Some(address);
        self.out
            .send(&self.master, Message::StorageAddress { address });
    }

    /// This storage's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What this storage holds for `client`'s unfinished transactions (and whether `ttid` is
    /// one of them): for the per-peer limits of the driver's gate.
    pub fn peer_load(&self, client: &str, ttid: Option<Tid>) -> crate::gate::PeerLoad {
        let mut load = crate::gate::PeerLoad::default();
        for (open, transaction) in self.transactions.of_client(client) {
            load.open_transactions += 1;
            load.knows_transaction |= Some(open) == ttid;
            load.pending_stores += (transaction.stored.len() + transaction.queue.len()) as u64;
            load.pending_store_bytes += transaction
                .queue
                .iter()
                .map(|store| store.data.as_bytes().len() as u64)
                .sum::<u64>();
        }
        load
    }

    /// Where storage `peer` accepts connections, as the master said (to replicate from it).
    pub fn peer_address(&self, peer: &str) -> Option<SocketAddr> {
        self.replicator.address(peer)
    }

    /// The partitions catching up here by replication, in increasing order.
    pub fn catching_up(&self) -> Vec<u32> {
        self.replicator.catching_up().collect()
    }

    /// The transactions in progress here: voted ones found at start included, and those whose
    /// finish is written but not persisted yet (their acknowledgement is owed).
    pub fn transactions_in_progress(&self) -> usize {
        self.transactions.len() + self.recovering.len() + self.finishing.len()
    }

    /// Handles one message from peer `from`: from a master, a client or another storage.
    /// From a master, only orders of the primary ([`Message::FromPrimary`]) and redirects are
    /// taken.
    pub fn handle(
        &mut self,
        now: SystemTime,
        from: &str,
        message: Message,
    ) -> Result<(), ProtocolError> {
        if self.masters.is_master(from) {
            return self.handle_master_message(now, from, message);
        }
        match message {
            message @ (Message::Store { .. }
            | Message::Vote { .. }
            | Message::Load { .. }
            | Message::Ask { .. }
            | Message::AbortTransaction { .. }) => self.handle_client(now, from, message),
            message @ (Message::AskTransactions { .. }
            | Message::AskObjects { .. }
            | Message::AskObjectPart { .. }
            | Message::AnswerTransactions { .. }
            | Message::AnswerObjects { .. }
            | Message::AnswerObjectPart(_)
            | Message::ReplicationUnavailable { .. }) => {
                self.handle_replication(now, from, message)
            }
            other => Err(ProtocolError::Unexpected {
                from: from.to_owned(),
                kind: other.kind(),
            }),
        }
    }

    /// The connection to `node` is lost. A client's unvoted transactions are aborted (it can
    /// no longer vote for them); its voted ones are asked about at the master right away.
    pub fn peer_lost(&mut self, now: SystemTime, node: &str) -> Result<(), ProtocolError> {
        if self.masters.is_master(node) {
            self.master_lost(now, node);
        }
        if node == self.master {
            // The master counts this storage as gone: announce it again, as at a start, so
            // that it runs and catches up. Not at once: a master still unreachable makes this
            // loss come back, and asking once per outcome timeout bounds the attempts.
            self.reannounce_at
                .get_or_insert(now + self.config.outcome_timeout);
        }
        let mut unvoted = Vec::new();
        let of_node: Vec<Tid> = self
            .transactions
            .of_client(node)
            .map(|(ttid, _)| ttid)
            .collect();
        for ttid in of_node {
            let Some(mut txn) = self.transactions.get_mut(&ttid) else {
                continue;
            };
            if txn.voted {
                txn.deadline = now + self.config.outcome_timeout;
                self.out.send(&self.master, Message::AskOutcome { ttid });
            } else {
                // A vote still being written is not answered: its client is gone.
                unvoted.push(ttid);
            }
        }
        for ttid in unvoted {
            self.end(now, ttid, None)?;
        }
        self.replication_peer_lost(now, node)
    }

    /// Handles expired timers: asks the master about voted transactions left waiting, aborts
    /// idle unvoted ones.
    pub fn handle_timeout(&mut self, now: SystemTime) -> Result<(), ProtocolError> {
        let mut idle = Vec::new();
        for ttid in self.transactions.due(now) {
            let Some(mut txn) = self.transactions.get_mut(&ttid) else {
                continue;
            };
            // Due means voted, or unvoted and waiting for no lock (`Transaction::timer`).
            if txn.voted {
                txn.deadline = now + self.config.outcome_timeout;
                self.out.send(&self.master, Message::AskOutcome { ttid });
            } else {
                idle.push((ttid, txn.client.clone()));
            }
        }
        for (ttid, recovery) in &mut self.recovering {
            if let Recovery::Asking { next } = recovery
                && now >= *next
            {
                *next = now + self.config.outcome_timeout;
                self.out
                    .send(&self.master, Message::AskOutcome { ttid: *ttid });
            }
        }
        for (ttid, client) in idle {
            self.end(now, ttid, None)?;
            self.out.send(&client, Message::Aborted { ttid });
        }
        self.expire_held_reads(now);
        if self.reannounce_at.take_if(|at| *at <= now).is_some() {
            if self.masters.primary().is_none() && self.masters.masters().len() > 1 {
                // No primary known: ask every master again (the next primary also tells).
                let masters: Vec<String> = self.masters.masters().to_vec();
                for master in &masters {
                    self.out.send(master, Message::AskPrimary);
                }
                self.reannounce_at = Some(now + PRIMARY_RETRY.max(self.config.outcome_timeout / 4));
            }
            self.out.send(&self.master, Message::StorageReady);
            if let Some(address) = self.address {
                self.out
                    .send(&self.master, Message::StorageAddress { address });
            }
        }
        self.replication_timeout(now)
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    pub fn poll_timeout(&self) -> Option<SystemTime> {
        let transactions = self.transactions.next_timer();
        let recovering = self
            .recovering
            .values()
            .filter_map(|recovery| match recovery {
                Recovery::Asking { next } => Some(*next),
                Recovery::Committed(_) => None,
            });
        transactions
            .into_iter()
            .chain(recovering)
            .chain(self.replicator.poll_timeout())
            .chain(self.reannounce_at)
            .chain(self.in_doubt.poll_timeout())
            .min()
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.poll()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<StorageEvent> {
        self.events.pop_front()
    }

    fn unknown(&self, from: &str, kind: &'static str, ttid: Tid) -> ProtocolError {
        ProtocolError::UnknownTransaction {
            from: from.to_owned(),
            kind,
            ttid,
        }
    }
}
