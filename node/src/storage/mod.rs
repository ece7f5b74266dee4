//! The storage role's state machine: stores under locks, votes, finishes, and recovery.
//!
//! It wraps a [`Engine`] and a [`LockManager`]. A store waits for its object's lock, then is
//! checked for a conflict and staged; the stores of one transaction are taken in the order they
//! arrive, one lock at a time. When an older transaction wounds a younger one, the younger's
//! staged data is dropped and its client told to [`Restart`](Message::Restart) under a new
//! generation; stores of an older generation still in flight are ignored.
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
//! those partitions without the serial check until it holds their whole history. Commits use
//! [`Engine::finish_merging`]: replication may have imported the commit's TID, or later ones,
//! before its finish arrived.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::SystemTime;

use crate::engine::{Engine, EngineError};
use crate::ids::{Oid, Tid};
use crate::locks::{LockDecision, LockEvent, LockManager};
use crate::object::ObjectData;
use crate::partition::NodeName;
use crate::protocol::{
    LoadResult, Message, Outbox, ProtocolError, StoreKind, StoreResult, TransactionOutcome,
    Transmit, VoteRefusal, VoteResult,
};
use crate::transaction::TransactionInfo;

mod config;
mod event;
mod reads;
mod replication;

pub use config::StorageConfig;
pub use event::StorageEvent;

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
    /// Objects checked, not written (their locks are held all the same).
    checked: BTreeSet<Oid>,
    voted: bool,
    deadline: SystemTime,
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
    master: NodeName,
    config: StorageConfig,
    store: Engine,
    locks: LockManager,
    transactions: BTreeMap<Tid, Transaction>,
    /// Voted transactions found on disk at start, with when to ask the master again.
    recovering: BTreeMap<Tid, Recovery>,
    /// Recently ended transactions, with their commit TID if they committed.
    ended: BTreeMap<Tid, Option<Tid>>,
    ended_order: VecDeque<Tid>,
    /// The table, the other storages' addresses, and the partitions catching up.
    replicator: replication::Replicator,
    /// Where this storage accepts connections, once announced.
    address: Option<SocketAddr>,
    /// When to announce this storage to the master again, after the link to it was lost.
    reannounce_at: Option<SystemTime>,
    out: Outbox,
    events: VecDeque<StorageEvent>,
}

impl Storage {
    /// Starts the role on `store`: announces itself to `master`, asks it about every voted
    /// transaction left on disk and drops the unvoted ones.
    pub fn open(
        now: SystemTime,
        name: &str,
        master: &str,
        store: Engine,
        config: StorageConfig,
    ) -> Result<Self, ProtocolError> {
        let mut node = Self {
            name: name.to_owned(),
            master: master.to_owned(),
            config,
            store,
            locks: LockManager::new(),
            transactions: BTreeMap::new(),
            recovering: BTreeMap::new(),
            ended: BTreeMap::new(),
            ended_order: VecDeque::new(),
            replicator: replication::Replicator::default(),
            address: None,
            reannounce_at: None,
            out: Outbox::default(),
            events: VecDeque::new(),
        };
        node.out.send(master, Message::StorageReady);
        for pending in node.store.pending_transactions()? {
            if pending.voted {
                node.recovering.insert(
                    pending.ttid,
                    Recovery::Asking {
                        next: now + node.config.outcome_timeout,
                    },
                );
                node.out
                    .send(master, Message::AskOutcome { ttid: pending.ttid });
            } else {
                node.store.abort(pending.ttid)?;
            }
        }
        Ok(node)
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

    /// The engine, e.g. to read it in tests.
    pub fn store(&self) -> &Engine {
        &self.store
    }

    /// Gives the engine back (the role stops).
    pub fn into_store(self) -> Engine {
        self.store
    }

    /// Where storage `peer` accepts connections, as the master said (to replicate from it).
    pub fn peer_address(&self, peer: &str) -> Option<SocketAddr> {
        self.replicator.address(peer)
    }

    /// The partitions catching up here by replication, in increasing order.
    pub fn catching_up(&self) -> Vec<u32> {
        self.replicator.catching_up().collect()
    }

    /// The transactions in progress here, voted ones found at start included.
    pub fn transactions_in_progress(&self) -> usize {
        self.transactions.len() + self.recovering.len()
    }

    /// Handles one message from peer `from`.
    pub fn handle(
        &mut self,
        now: SystemTime,
        from: &str,
        message: Message,
    ) -> Result<(), ProtocolError> {
        let from_master = from == self.master;
        match message {
            Message::Store {
                ttid,
                generation,
                oid,
                serial,
                data,
                kind,
            } if !from_master => {
                let store = QueuedStore {
                    oid,
                    serial,
                    data,
                    kind,
                };
                self.take_store(now, from, ttid, generation, store)
            }
            Message::Vote {
                ttid,
                generation,
                oids,
                info,
            } if !from_master => self.vote(now, from, ttid, generation, &oids, &info),
            Message::AbortTransaction { ttid } => {
                let known = self.transactions.get(&ttid);
                let allowed = known.is_some_and(|txn| from_master || txn.client == from)
                    || (from_master && self.recovering.contains_key(&ttid));
                if allowed {
                    self.end(now, ttid, None)
                } else {
                    Err(self.unknown(from, "AbortTransaction", ttid))
                }
            }
            Message::Finish { ttid, tid } if from_master && self.recovering.contains_key(&ttid) => {
                self.recovered(now, ttid, Some(tid))
            }
            Message::Outcome { ttid, outcome }
                if from_master && self.recovering.contains_key(&ttid) =>
            {
                match outcome {
                    TransactionOutcome::Committed(tid) => self.recovered(now, ttid, Some(tid)),
                    TransactionOutcome::Aborted
                    | TransactionOutcome::Unavailable { .. }
                    | TransactionOutcome::TidNotAfterLast { .. } => self.recovered(now, ttid, None),
                    TransactionOutcome::Pending => Ok(()),
                }
            }
            Message::Finish { ttid, tid } if from_master => {
                let voted = self.transactions.get(&ttid).is_some_and(|txn| txn.voted);
                if !voted {
                    if self.ended.get(&ttid) == Some(&Some(tid)) {
                        // Committed already on the master's answer to our question: the
                        // acknowledgement crossed this finish.
                        self.out.send(&self.master, Message::Finished { ttid, tid });
                        return Ok(());
                    }
                    return Err(self.unknown(from, "Finish", ttid));
                }
                self.end(now, ttid, Some(tid))?;
                self.out.send(&self.master, Message::Finished { ttid, tid });
                Ok(())
            }
            Message::Outcome { ttid, outcome } if from_master => {
                let voted = self.transactions.get(&ttid).is_some_and(|txn| txn.voted);
                if !voted {
                    return Err(self.unknown(from, "Outcome", ttid));
                }
                match outcome {
                    TransactionOutcome::Committed(tid) => {
                        self.end(now, ttid, Some(tid))?;
                        // The master may still wait for this voter's acknowledgement.
                        self.out.send(&self.master, Message::Finished { ttid, tid });
                        Ok(())
                    }
                    TransactionOutcome::Aborted
                    | TransactionOutcome::Unavailable { .. }
                    | TransactionOutcome::TidNotAfterLast { .. } => self.end(now, ttid, None),
                    TransactionOutcome::Pending => Ok(()),
                }
            }
            Message::Load { request, oid } if !from_master => {
                let result = match self.store.load(oid) {
                    Ok(Some(revision)) => LoadResult::Found {
                        tid: revision.tid,
                        data: revision.data,
                    },
                    Ok(None) => LoadResult::Missing,
                    Err(_) => LoadResult::Failed,
                };
                self.out.send(
                    from,
                    Message::AnswerLoad {
                        request,
                        oid,
                        result,
                    },
                );
                Ok(())
            }
            Message::Ask { request, ask } if !from_master => {
                let answer = self.answer_ask(ask);
                self.out.send(from, Message::Answer { request, answer });
                Ok(())
            }
            Message::PartitionTable(table) if from_master => {
                self.new_table(table);
                self.pump_replication(now)
            }
            Message::StorageAddresses(book) if from_master => {
                self.replicator.learn_addresses(book);
                Ok(())
            }
            Message::Replicate { up_to, partitions } if from_master => {
                self.start_replication(now, up_to, &partitions)
            }
            Message::AskTransactions {
                partition,
                after,
                up_to,
            } if !from_master => {
                self.serve_transactions(from, partition, after, up_to);
                Ok(())
            }
            Message::AskObjects {
                partition,
                after,
                up_to,
            } if !from_master => {
                self.serve_objects(from, partition, after, up_to);
                Ok(())
            }
            Message::AnswerTransactions {
                partition,
                transactions,
                resume,
            } if !from_master => self.take_transactions(now, from, partition, transactions, resume),
            Message::AnswerObjects {
                partition,
                objects,
                resume,
            } if !from_master => self.take_objects(now, from, partition, objects, resume),
            Message::AskObjectPart {
                partition,
                oid,
                tid,
                offset,
            } if !from_master => {
                self.serve_object_part(from, partition, oid, tid, offset);
                Ok(())
            }
            Message::AnswerObjectPart(part) if !from_master => {
                self.take_object_part(now, from, part)
            }
            Message::ReplicationUnavailable { partition } if !from_master => {
                self.source_failed(now, from, partition, "ReplicationUnavailable")
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
        if node == self.master {
            // The master counts this storage as gone: announce it again, as at a start, so
            // that it runs and catches up. Not at once: a master still unreachable makes this
            // loss come back, and asking once per outcome timeout bounds the attempts.
            self.reannounce_at
                .get_or_insert(now + self.config.outcome_timeout);
        }
        let mut unvoted = Vec::new();
        for (ttid, txn) in &mut self.transactions {
            if txn.client != node {
                continue;
            }
            if txn.voted {
                txn.deadline = now + self.config.outcome_timeout;
                self.out
                    .send(&self.master, Message::AskOutcome { ttid: *ttid });
            } else {
                unvoted.push(*ttid);
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
        for (ttid, txn) in &mut self.transactions {
            if now < txn.deadline {
                continue;
            }
            if txn.voted {
                txn.deadline = now + self.config.outcome_timeout;
                self.out
                    .send(&self.master, Message::AskOutcome { ttid: *ttid });
            } else if !txn.waiting {
                idle.push((*ttid, txn.client.clone()));
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
        if self.reannounce_at.take_if(|at| *at <= now).is_some() {
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
        let transactions = self
            .transactions
            .values()
            .filter(|txn| txn.voted || !txn.waiting)
            .map(|txn| txn.deadline);
        let recovering = self
            .recovering
            .values()
            .filter_map(|recovery| match recovery {
                Recovery::Asking { next } => Some(*next),
                Recovery::Committed(_) => None,
            });
        transactions
            .chain(recovering)
            .chain(self.replicator.poll_timeout())
            .chain(self.reannounce_at)
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

    fn take_store(
        &mut self,
        now: SystemTime,
        from: &str,
        ttid: Tid,
        generation: u32,
        store: QueuedStore,
    ) -> Result<(), ProtocolError> {
        if self.ended.contains_key(&ttid) || self.recovering.contains_key(&ttid) {
            return Err(self.unknown(from, "Store", ttid));
        }
        let deadline = now + self.config.idle_timeout;
        let refused = match self.transactions.get(&ttid) {
            Some(txn) => txn.client != from || txn.voted || generation > txn.generation,
            None => generation != 0,
        };
        if refused {
            return Err(ProtocolError::OutOfOrder {
                from: from.to_owned(),
                kind: "Store",
                ttid,
            });
        }
        let txn = self
            .transactions
            .entry(ttid)
            .or_insert_with(|| Transaction {
                client: from.to_owned(),
                generation: 0,
                queue: VecDeque::new(),
                waiting: false,
                stored: BTreeSet::new(),
                checked: BTreeSet::new(),
                voted: false,
                deadline,
            });
        if generation < txn.generation {
            // Sent before the client heard of the restart; it sends this one again.
            return Ok(());
        }
        txn.deadline = deadline;
        txn.queue.push_back(store);
        self.pump(now, Some(ttid))
    }

    /// Takes the queued stores of `first` until one must wait for its lock, then those of
    /// every transaction a released lock went to.
    fn pump(&mut self, now: SystemTime, first: Option<Tid>) -> Result<(), ProtocolError> {
        let mut ready: VecDeque<Tid> = first.into_iter().collect();
        loop {
            while let Some(ttid) = ready.pop_front() {
                self.take_queued(now, ttid)?;
            }
            let Some(LockEvent::Granted { ttid, oid }) = self.locks.poll_event() else {
                return Ok(());
            };
            let Some(txn) = self.transactions.get_mut(&ttid) else {
                continue;
            };
            txn.waiting = false;
            if txn.queue.front().is_some_and(|store| store.oid == oid) {
                self.apply_head(now, ttid)?;
            }
            ready.push_back(ttid);
        }
    }

    fn take_queued(&mut self, now: SystemTime, ttid: Tid) -> Result<(), ProtocolError> {
        loop {
            let Some(txn) = self.transactions.get_mut(&ttid) else {
                return Ok(());
            };
            if txn.waiting {
                return Ok(());
            }
            let Some(oid) = txn.queue.front().map(|store| store.oid) else {
                return Ok(());
            };
            match self.locks.lock(ttid, oid)? {
                LockDecision::Granted => {}
                LockDecision::Wait { .. } => {
                    txn.waiting = true;
                    return Ok(());
                }
                LockDecision::Restart { younger } => self.wound(younger)?,
            }
            self.apply_head(now, ttid)?;
        }
    }

    /// Stages the first queued store of `ttid`, whose lock it holds, and answers it.
    fn apply_head(&mut self, now: SystemTime, ttid: Tid) -> Result<(), ProtocolError> {
        let Some(txn) = self.transactions.get_mut(&ttid) else {
            return Ok(());
        };
        let Some(store) = txn.queue.pop_front() else {
            return Ok(());
        };
        txn.deadline = now + self.config.idle_timeout;
        let oid = store.oid;
        let kind = store.kind;
        let staged = stage(
            &self.store,
            ttid,
            store,
            self.replicator.unchecked(&self.name, oid),
        );
        let result = match staged {
            Ok(()) => {
                if kind == StoreKind::CheckCurrent {
                    txn.checked.insert(oid);
                } else {
                    txn.checked.remove(&oid);
                    txn.stored.insert(oid);
                }
                StoreResult::Stored
            }
            Err(EngineError::Conflict { current, .. }) => StoreResult::Conflict { current },
            Err(error) => {
                self.events.push_back(StorageEvent::EngineError {
                    ttid,
                    error: error.to_string(),
                });
                StoreResult::Failed
            }
        };
        let (client, generation) = (txn.client.clone(), txn.generation);
        self.out.send(
            &client,
            Message::AnswerStore {
                ttid,
                generation,
                oid,
                result,
            },
        );
        Ok(())
    }

    /// `younger` lost its locks: drop what it staged, tell its client to store again.
    fn wound(&mut self, younger: Tid) -> Result<(), ProtocolError> {
        let Some(txn) = self.transactions.get_mut(&younger) else {
            return Ok(());
        };
        txn.generation = txn.generation.wrapping_add(1);
        txn.queue.clear();
        txn.stored.clear();
        txn.checked.clear();
        txn.waiting = false;
        let (client, generation) = (txn.client.clone(), txn.generation);
        self.store.abort(younger)?;
        self.events
            .push_back(StorageEvent::Wounded { ttid: younger });
        self.out.send(
            &client,
            Message::Restart {
                ttid: younger,
                generation,
            },
        );
        Ok(())
    }

    fn vote(
        &mut self,
        now: SystemTime,
        from: &str,
        ttid: Tid,
        generation: u32,
        oids: &[Oid],
        info: &TransactionInfo,
    ) -> Result<(), ProtocolError> {
        let Some(txn) = self
            .transactions
            .get_mut(&ttid)
            .filter(|txn| txn.client == from)
        else {
            if self.ended.contains_key(&ttid) || oids.is_empty() {
                self.out.send(
                    from,
                    Message::AnswerVote {
                        ttid,
                        result: VoteResult::No(VoteRefusal::UnknownTransaction),
                    },
                );
                return Ok(());
            }
            return Err(self.unknown(from, "Vote", ttid));
        };
        if generation < txn.generation {
            // The client will vote again once it stored everything again.
            return Ok(());
        }
        if txn.voted || generation > txn.generation {
            return Err(ProtocolError::OutOfOrder {
                from: from.to_owned(),
                kind: "Vote",
                ttid,
            });
        }
        let listed: BTreeSet<Oid> = oids.iter().copied().collect();
        let result = if txn.waiting || !txn.queue.is_empty() || listed != txn.stored {
            VoteResult::No(VoteRefusal::MissingStores)
        } else {
            let (replicator, name) = (&self.replicator, self.name.as_str());
            match self
                .store
                .vote_unchecked_for(ttid, info, |oid| replicator.unchecked(name, oid))
            {
                Ok(()) => {
                    self.locks.vote(ttid)?;
                    txn.voted = true;
                    txn.deadline = now + self.config.outcome_timeout;
                    VoteResult::Yes
                }
                Err(EngineError::Conflict {
                    oid,
                    expected,
                    current,
                }) => VoteResult::Conflict {
                    oid,
                    expected,
                    current,
                },
                Err(error) => {
                    self.events.push_back(StorageEvent::EngineError {
                        ttid,
                        error: error.to_string(),
                    });
                    VoteResult::No(VoteRefusal::StorageFailed)
                }
            }
        };
        self.out.send(from, Message::AnswerVote { ttid, result });
        Ok(())
    }

    /// Commits `ttid` at `tid`, or aborts it (`None`), and releases its locks.
    fn end(&mut self, now: SystemTime, ttid: Tid, tid: Option<Tid>) -> Result<(), ProtocolError> {
        let outcome = match tid {
            // Merging: replication may have imported this TID, or later ones, already.
            Some(tid) => self.store.finish_merging(ttid, tid),
            None => self.store.abort(ttid),
        };
        let event = match (outcome, tid) {
            (Ok(()), Some(tid)) => StorageEvent::Committed { ttid, tid },
            (Ok(()), None) => StorageEvent::Aborted { ttid },
            (Err(error), _) => {
                // E.g. a late outcome for a storage gone out of date that committed a later
                // TID meanwhile: its data is dropped here, replication brings the commit.
                self.store.abort(ttid)?;
                StorageEvent::EngineError {
                    ttid,
                    error: error.to_string(),
                }
            }
        };
        self.transactions.remove(&ttid);
        self.recovering.remove(&ttid);
        let committed = match &event {
            StorageEvent::Committed { tid, .. } => Some(*tid),
            _ => None,
        };
        self.remember_end(ttid, committed);
        self.events.push_back(event);
        self.locks.release(ttid);
        // The released locks went to waiters: let them go on.
        self.pump(now, None)
    }

    /// Settles a recovered transaction: an abort at once, a commit once every recovered
    /// transaction is settled, all commits in TID order.
    fn recovered(
        &mut self,
        now: SystemTime,
        ttid: Tid,
        tid: Option<Tid>,
    ) -> Result<(), ProtocolError> {
        match tid {
            Some(tid) => {
                self.recovering.insert(ttid, Recovery::Committed(tid));
            }
            None => self.end(now, ttid, None)?,
        }
        let mut commits = Vec::new();
        for (ttid, recovery) in &self.recovering {
            match recovery {
                Recovery::Asking { .. } => return Ok(()),
                Recovery::Committed(tid) => commits.push((*tid, *ttid)),
            }
        }
        commits.sort();
        for (tid, ttid) in commits {
            self.end(now, ttid, Some(tid))?;
            self.out.send(&self.master, Message::Finished { ttid, tid });
        }
        Ok(())
    }

    fn remember_end(&mut self, ttid: Tid, committed: Option<Tid>) {
        if self.ended.insert(ttid, committed).is_none() {
            self.ended_order.push_back(ttid);
        }
        while self.ended_order.len() > self.config.remembered_ends {
            if let Some(old) = self.ended_order.pop_front() {
                self.ended.remove(&old);
            }
        }
    }
}

/// Stages `store` of transaction `ttid` in `engine` as its kind says, the transaction holding
/// the object's lock; `unchecked` for a partition whose history here is incomplete (feeding),
/// where serials are not checked (the readable replicas check them).
fn stage(
    engine: &Engine,
    ttid: Tid,
    store: QueuedStore,
    unchecked: bool,
) -> Result<(), EngineError> {
    let QueuedStore {
        oid,
        serial,
        data,
        kind,
    } = store;
    match (kind, unchecked) {
        (StoreKind::Checked, false) => engine.store_pending(ttid, oid, serial, data),
        (StoreKind::Checked | StoreKind::Unchecked, true) => {
            engine.store_pending_unchecked(ttid, oid, serial, data)
        }
        // A restore writes over whatever is there: on top of the last revision, which the
        // held lock keeps last until the vote checks it again.
        (StoreKind::Unchecked, false) => {
            let current = engine.last_serial(oid)?;
            engine.store_pending(ttid, oid, current, data)
        }
        (StoreKind::Undo(restore), false) => engine.store_undo(ttid, oid, serial, restore),
        (StoreKind::Undo(restore), true) => engine.store_undo_unchecked(ttid, oid, serial, restore),
        (StoreKind::CheckCurrent, true) => Ok(()),
        (StoreKind::CheckCurrent, false) => {
            let current = engine.last_serial(oid)?;
            if current == serial {
                Ok(())
            } else {
                Err(EngineError::Conflict {
                    oid,
                    expected: serial,
                    current,
                })
            }
        }
    }
}
