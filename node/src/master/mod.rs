//! The master's state machine: ids, the partition table, and the finish of every transaction.
//!
//! The master allocates object ids in batches and TIDs from a [`TidClock`]; owns the
//! [`PartitionTable`] and pushes every new version of it to the clients and running storages;
//! and serializes finishes: a finish gets its commit TID when asked, and is announced (its
//! client answered, the other clients invalidated, in TID order) once the decision is in the
//! log; then one transaction at a time is finished on its voters, so that TIDs commit in order
//! on every storage (which hold reads of what a voted transaction wrote until they applied
//! it). It remembers the outcome of every transaction it decided, for storages that ask after
//! a timeout or a crash.
//!
//! A storage that fails during a commit (reported by a client, lost, or silent at finish) has
//! its cells marked out of date, unless it holds the last readable cell of a partition; a
//! finish goes on only while every partition it touches keeps a readable replica that voted
//! yes, and is refused with [`TransactionOutcome::Unavailable`] otherwise.
//!
//! ```
//! use replicast_node::master::{Master, MasterConfig};
//! use replicast_node::partition::PartitionTable;
//! use replicast_node::protocol::Message;
//! use std::time::SystemTime;
//!
//! let table = PartitionTable::new(12, 2, &["s1".into(), "s2".into(), "s3".into()])?;
//! let mut master = Master::new(table, MasterConfig::default())?;
//! let now = SystemTime::now();
//! master.handle(now, "c1", Message::ClientHello)?;
//! // Answers go out as orders of the primary's term: the last commit, the client's number
//! // for the temporary TIDs it makes, the table.
//! let answers: Vec<Message> = std::iter::from_fn(|| master.poll_transmit())
//!     .map(|transmit| transmit.message.into_order())
//!     .collect();
//! let Message::TtidSpace { number, clock } = answers[1] else { panic!("{answers:?}") };
//! assert!(matches!(answers[2], Message::PartitionTable(_)));
//! // The client begins with a ttid of its own, carrying its number: no answer.
//! let ttid = replicast_node::ids::Tid((clock.0 & !0xffff) | u64::from(number));
//! let table_version = master.table().version();
//! master.handle(now, "c1", Message::Begin { ttid, table_version })?;
//! assert!(master.poll_transmit().is_none());
//! assert_eq!(master.peer_load("c1", Some(ttid)).open_transactions, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::SystemTime;

use crate::ids::{Oid, Tid, TidClock};
use crate::partition::{NodeName, PartitionTable};
use crate::protocol::{Message, Outbox, ProtocolError, TransactionOutcome, Transmit};

mod admin;
mod backups;
mod begin;
mod clients;
mod config;
mod consensus;
mod event;
mod oids;
mod open;
mod replication;
pub mod state;
mod status;
mod storages;

#[cfg(test)]
mod test_support;

pub use config::MasterConfig;
pub use consensus::GroupConfig;
pub use event::MasterEvent;

use state::{Decision, ReplicatedState};

/// How many lost clients the master remembers, to welcome them back when they speak.
const REMEMBERED_CLIENTS: usize = 4096;

/// The most queued finishes decided in one go.
const DECIDE_AHEAD: usize = 64;

/// A finish asked for and waiting for its turn.
#[derive(Debug)]
struct FinishRequest {
    ttid: Tid,
    /// The client to answer (none for a decision of an earlier primary that no client has
    /// asked about yet).
    client: Option<NodeName>,
    oids: Vec<Oid>,
    voters: BTreeSet<NodeName>,
    /// The commit TID the transaction began with, if it chose one.
    chosen: Option<Tid>,
    /// The commit TID, when an earlier primary decided it already: the finish resumes.
    decided: Option<Tid>,
    /// Whether the commit was announced: its client answered, the other clients told
    /// ([`Master::announce_decided`]).
    announced: bool,
}

/// The finish in progress: the commit TID is decided, the voters are acknowledging it.
#[derive(Debug)]
struct Finishing {
    request: FinishRequest,
    tid: Tid,
    waiting: BTreeSet<NodeName>,
    /// The voters that acknowledged.
    acked: Vec<NodeName>,
    deadline: SystemTime,
}

/// The master role; see the [module documentation](self).
#[derive(Debug)]
pub struct Master {
    config: MasterConfig,
    /// The replicated state as the primary works on it (ahead of the committed state by the
    /// proposals in flight); on a master that is not the primary, a copy of the committed one
    /// as of its last time as primary, unused.
    state: ReplicatedState,
    /// The raft group, the committed state and what the primary holds back until its
    /// proposals commit.
    consensus: consensus::Consensus,
    clock: TidClock,
    /// The last commit announced to the clients by this primary (see
    /// [`announce_decided`](Self::announce_decided)); the replicated state's last finished
    /// one may be older.
    last_announced: Tid,
    running: BTreeSet<NodeName>,
    clients: BTreeSet<NodeName>,
    /// The number of each client known, the low 16 bits of the temporary TIDs it makes
    /// (see [`TtidClock`](crate::client::TtidClock)); volatile: a new primary numbers its
    /// clients anew, and a lost client's number is free again.
    client_numbers: BTreeMap<NodeName, u16>,
    /// Clients lost lately: one that speaks again is welcomed back.
    forgotten_clients: BTreeSet<NodeName>,
    open: open::OpenTransactions,
    queue: VecDeque<FinishRequest>,
    finishing: Option<Finishing>,
    /// Transactions aborted or refused by this primary (commits are in the replicated state).
    outcomes: HashMap<Tid, TransactionOutcome>,
    /// Which storages wait to replicate, and which were lost.
    replication: replication::Replication,
    /// Reports, waiting storages and the master's own name, for `replicast status`.
    roster: status::Roster,
    /// After a take-over: when the storages that did not announce themselves to this primary
    /// count as lost (their cells go out of date, as a lost storage's do).
    announce_deadline: Option<SystemTime>,
    out: Outbox,
    events: VecDeque<MasterEvent>,
}

impl Master {
    /// A lone master owning `table`, with no storage running yet, whose log is in memory (it
    /// does not survive its process: for tests and in-process clusters; a daemon uses
    /// [`open`](Self::open) with a log on disk).
    pub fn new(
        table: PartitionTable,
        config: MasterConfig,
    ) -> Result<Self, crate::consensus::ConsensusError> {
        let group = GroupConfig::lone("master");
        let log = crate::consensus::RaftLog::in_memory(&group.voters())?;
        Self::open(table, config, group, log, SystemTime::UNIX_EPOCH)
    }

    /// A master of the group `group` on `log`. `table` is the partition table of a new
    /// cluster (the first primary writes it to the log; afterwards the log's table is in
    /// force, whatever the configuration says). It serves once raft made it the primary and it
    /// applied everything committed before (a lone master at once).
    pub fn open(
        table: PartitionTable,
        config: MasterConfig,
        group: GroupConfig,
        log: crate::consensus::RaftLog,
        now: SystemTime,
    ) -> Result<Self, crate::consensus::ConsensusError> {
        // Oid 0 is ZODB's root, created by the first store of it: never handed out.
        let initial = ReplicatedState::new(table, config.first_oid.0.max(1));
        let consensus = consensus::Consensus::open(group, log, initial.clone(), now)?;
        let mut master = Self {
            config,
            state: initial,
            consensus,
            clock: TidClock::default(),
            last_announced: Tid::ZERO,
            running: BTreeSet::new(),
            clients: BTreeSet::new(),
            client_numbers: BTreeMap::new(),
            forgotten_clients: BTreeSet::new(),
            open: open::OpenTransactions::default(),
            queue: VecDeque::new(),
            finishing: None,
            outcomes: HashMap::new(),
            replication: replication::Replication::default(),
            roster: status::Roster::default(),
            announce_deadline: None,
            out: Outbox::default(),
            events: VecDeque::new(),
        };
        // A lone master takes over here; an error then is one of its log.
        if let Err(error) = master.settle(now) {
            if let Some(failure) = master.consensus.take_failure() {
                return Err(failure);
            }
            return Err(match error {
                ProtocolError::Consensus(error) => error,
                other => {
                    crate::consensus::ConsensusError::Log(crate::consensus::LogError::Database {
                        what: "start",
                        message: other.to_string(),
                    })
                }
            });
        }
        Ok(master)
    }

    /// Where each storage that told its address accepts connections.
    pub fn storage_addresses(&self) -> &BTreeMap<NodeName, SocketAddr> {
        &self.current().storage_addresses
    }

    /// The current partition table (the committed one on a master that is not the primary).
    pub fn table(&self) -> &PartitionTable {
        &self.current().table
    }

    /// The replicated state this master acts on: the primary's working copy, or the
    /// committed state.
    fn current(&self) -> &ReplicatedState {
        if self.is_primary() {
            &self.state
        } else {
            self.consensus.committed()
        }
    }

    /// The storages that announced themselves and were not lost since.
    pub fn running_storages(&self) -> impl Iterator<Item = &str> {
        self.running.iter().map(String::as_str)
    }

    /// The transactions `client` has open (begun, not decided), and whether `ttid` is one
    /// of them: for the per-peer limits of the driver's gate.
    pub fn peer_load(&self, client: &str, ttid: Option<Tid>) -> crate::gate::PeerLoad {
        crate::gate::PeerLoad {
            open_transactions: self.open.count_of(client),
            knows_transaction: ttid
                .and_then(|ttid| self.open.get(&ttid))
                .is_some_and(|open| open.client == client),
            ..crate::gate::PeerLoad::default()
        }
    }

    /// The TID of the last finished commit ([`Tid::ZERO`] for none): its invalidations went
    /// out. Replicated: a new or restarted primary starts from the log's.
    pub fn last_transaction(&self) -> Tid {
        self.current().last_committed
    }

    /// The finishes asked for and not completed yet (their voters have not all acknowledged
    /// the commit): a commit is announced before it completes.
    pub fn finishes_in_progress(&self) -> usize {
        self.queue.len() + usize::from(self.finishing.is_some())
    }

    /// What became of transaction `ttid`, if the master decided it.
    pub fn outcome(&self, ttid: Tid) -> Option<TransactionOutcome> {
        self.current()
            .committed_tid(ttid)
            .map(TransactionOutcome::Committed)
            .or_else(|| self.outcomes.get(&ttid).copied())
    }

    /// Handles one message from peer `from`: a master's (the group's), or, on the primary, a
    /// storage's or a client's; a master that is not the primary redirects those.
    pub fn handle(
        &mut self,
        now: SystemTime,
        from: &str,
        message: Message,
    ) -> Result<(), ProtocolError> {
        let result = if self.consensus.is_member(from) {
            self.handle_master_message(now, from, message)
        } else if self.is_primary() {
            self.handle_node_message(now, from, message)
        } else {
            self.redirect(from, message)
        };
        let settled = self.settle(now);
        result.and(settled)
    }

    /// A message from a storage or a client, on the primary, handed to its conversation: the
    /// clients' ([`client_message`](Self::client_message)), the storages'
    /// ([`storage_message`](Self::storage_message)) or anyone's
    /// ([`anyone_message`](Self::anyone_message)). Each refuses what its sender may not say.
    fn handle_node_message(
        &mut self,
        now: SystemTime,
        from: &str,
        message: Message,
    ) -> Result<(), ProtocolError> {
        let is_storage = self.state.table.storages().iter().any(|node| node == from);
        if !is_storage && message != Message::ClientHello && self.forgotten_clients.remove(from) {
            // A client counted as lost speaks: its link was cut and came back, maybe before
            // it noticed. Welcome it again; the last commit tells it that invalidations may
            // have been lost meanwhile.
            self.welcome_client(now, from)?;
        }
        match message {
            Message::ClientHello
            | Message::Begin { .. }
            | Message::AskBeginAt { .. }
            | Message::AskLastTransaction { .. }
            | Message::AskNewOids { .. }
            | Message::AskFinish { .. }
            | Message::AbortTransaction { .. } => {
                self.client_message(now, from, is_storage, message)?
            }
            Message::StorageAddress { .. }
            | Message::StorageReady
            | Message::Finished { .. }
            | Message::AskOutcome { .. }
            | Message::AskCatchUp
            | Message::Replicated { .. } => self.storage_message(now, from, is_storage, message)?,
            other => self.anyone_message(now, from, is_storage, other)?,
        }
        if is_storage && self.replication.lost.remove(from) && self.running.insert(from.to_owned())
        {
            // A storage counted as lost speaks: its link is up (the loss was a link's, or
            // reported late), so it runs again and catches up as if it had restarted.
            self.storage_back(from)?;
        }
        self.sync_replication();
        Ok(())
    }

    /// The connection to `node` is lost: a storage goes out of date, a client's open
    /// transactions are aborted; a master's loss is raft's business.
    pub fn peer_lost(&mut self, now: SystemTime, node: &str) -> Result<(), ProtocolError> {
        let result = if self.consensus.is_member(node) {
            self.consensus.peer_lost(node);
            Ok(())
        } else if self.is_primary() {
            self.node_lost(now, node)
        } else {
            Ok(())
        };
        let settled = self.settle(now);
        result.and(settled)
    }

    fn node_lost(&mut self, now: SystemTime, node: &str) -> Result<(), ProtocolError> {
        self.forget_in_roster(node);
        if self.running.remove(node) {
            self.replication.lost.insert(node.to_owned());
            self.mark_out_of_date(node)?;
            if let Some(finishing) = self.finishing.as_mut() {
                finishing.waiting.remove(node);
            }
            self.complete_finish_if_done(now)?;
            self.sync_replication();
        } else if self.clients.remove(node) {
            self.client_numbers.remove(node);
            if self.forgotten_clients.len() >= REMEMBERED_CLIENTS {
                self.forgotten_clients.pop_first();
            }
            self.forgotten_clients.insert(node.to_owned());
            let abandoned: Vec<Tid> = self
                .open
                .iter()
                .filter(|(_, open)| open.client == node && !open.finish_queued)
                .map(|(ttid, _)| *ttid)
                .collect();
            for ttid in abandoned {
                self.abort(ttid, true);
            }
            self.sync_replication();
        }
        Ok(())
    }

    /// Handles expired timers: raft's clock, and a finish whose voters stay silent.
    pub fn handle_timeout(&mut self, now: SystemTime) -> Result<(), ProtocolError> {
        let ticked = self.consensus.tick(now).map_err(ProtocolError::from);
        let result = if self.is_primary() {
            self.finish_timeout(now)
        } else {
            Ok(())
        };
        let settled = self.settle(now);
        ticked.and(result).and(settled)
    }

    fn finish_timeout(&mut self, now: SystemTime) -> Result<(), ProtocolError> {
        if self.announce_deadline.take_if(|at| *at <= now).is_some() {
            // A storage that did not answer the new primary's announcement (it died with the
            // old primary, or before) is lost: out of date, as if its link had dropped here.
            let silent: Vec<NodeName> = self
                .state
                .table
                .storages()
                .iter()
                .filter(|node| !self.running.contains(*node))
                .cloned()
                .collect();
            for node in silent {
                self.replication.lost.insert(node.clone());
                self.mark_out_of_date(&node)?;
            }
            self.sync_replication();
        }
        let Some(finishing) = self.finishing.as_mut() else {
            return Ok(());
        };
        if now < finishing.deadline {
            return Ok(());
        }
        let silent = std::mem::take(&mut finishing.waiting);
        let written = finishing.request.oids.clone();
        for node in &silent {
            self.mark_missed(node, &written)?;
        }
        // A silent voter that is still the last readable copy of a partition the commit
        // wrote is waited for again: completing without it would announce a commit that
        // no readable replica of that partition shows yet.
        let still_needed: BTreeSet<NodeName> = silent
            .into_iter()
            .filter(|node| self.last_copy_of_written(node))
            .collect();
        if let Some(finishing) = self.finishing.as_mut() {
            finishing.deadline = now + self.config.finish_timeout;
            finishing.waiting = still_needed;
        }
        self.complete_finish_if_done(now)?;
        self.sync_replication();
        Ok(())
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    pub fn poll_timeout(&self) -> Option<SystemTime> {
        let finish = self
            .finishing
            .as_ref()
            .filter(|_| self.is_primary())
            .map(|finishing| finishing.deadline);
        finish
            .into_iter()
            .chain(self.consensus.poll_timeout())
            .min()
    }

    /// The next message to send: raft's and redirects at once, the primary's orders once
    /// the proposals they follow are committed.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.consensus.poll_transmit()
    }

    /// The next event (once the proposals it follows are committed).
    pub fn poll_event(&mut self) -> Option<MasterEvent> {
        self.consensus.poll_event()
    }

    fn ask_finish(
        &mut self,
        now: SystemTime,
        from: &str,
        ttid: Tid,
        oids: Vec<Oid>,
        voters: Vec<NodeName>,
        failed: Vec<NodeName>,
    ) -> Result<(), ProtocolError> {
        if let Some(request) = self
            .queue
            .iter_mut()
            .chain(
                self.finishing
                    .as_mut()
                    .map(|finishing| &mut finishing.request),
            )
            .find(|request| request.ttid == ttid)
        {
            // Asked again (its client lost the primary meanwhile), or the finish of an
            // earlier primary's decision resumes: answered at once if announced (the decision
            // is in the log), else when it is.
            match (request.announced, request.decided) {
                (true, Some(tid)) => {
                    let outcome = TransactionOutcome::Committed(tid);
                    self.out.send(from, Message::AnswerFinish { ttid, outcome });
                }
                _ => {
                    if request.client.is_none() {
                        request.client = Some(from.to_owned());
                    }
                }
            }
            return Ok(());
        }
        let Some(open) = self.open.get(&ttid).filter(|open| open.client == from) else {
            // Decided by this primary or an earlier one (the client asks again after a
            // failover, as NEO's AskFinalTID), aborted meanwhile (a storage gave up on it), or
            // begun under an earlier primary and never decided: aborted, for good, since no
            // primary decides a transaction it does not hold open.
            let outcome = match self.outcome(ttid) {
                Some(TransactionOutcome::Committed(tid)) => TransactionOutcome::Committed(tid),
                _ => {
                    self.outcomes.insert(ttid, TransactionOutcome::Aborted);
                    TransactionOutcome::Aborted
                }
            };
            self.out.send(from, Message::AnswerFinish { ttid, outcome });
            return Ok(());
        };
        if open.finish_queued {
            return Err(ProtocolError::OutOfOrder {
                from: from.to_owned(),
                kind: "AskFinish",
                ttid,
            });
        }
        for node in &failed {
            if self.state.table.storages().contains(node) {
                self.mark_missed(node, &oids)?;
            }
        }
        // Before the readable voters are counted: a missed cell no longer counts as readable.
        for node in self.missed_cells(ttid, &oids) {
            self.mark_missed(&node, &oids)?;
        }
        let voters: BTreeSet<NodeName> = voters.into_iter().collect();
        let uncovered = oids.iter().find(|oid| {
            !self
                .state
                .table
                .readable_cells(**oid)
                .any(|cell| voters.contains(&cell.node))
        });
        if let Some(oid) = uncovered {
            let partition = self.state.table.partition_of(*oid);
            self.abort(ttid, true);
            self.out.send(
                from,
                Message::AnswerFinish {
                    ttid,
                    outcome: TransactionOutcome::Unavailable { partition },
                },
            );
            return Ok(());
        }
        let mut chosen = None;
        if let Some(open) = self.open.get_mut(&ttid) {
            open.finish_queued = true;
            chosen = open.tid;
        }
        self.queue.push_back(FinishRequest {
            ttid,
            client: Some(from.to_owned()),
            oids,
            voters,
            chosen,
            decided: None,
            announced: false,
        });
        // Decided now, not when the finish in progress completes: the client's answer needs
        // only the decision in the log.
        self.decide_queued(now)?;
        self.start_next_finish(now)
    }

    fn start_next_finish(&mut self, now: SystemTime) -> Result<(), ProtocolError> {
        while self.finishing.is_none() {
            self.decide_queued(now)?;
            let Some(request) = self.queue.pop_front() else {
                return Ok(());
            };
            let Some(tid) = request.decided else {
                continue;
            };
            // A voter gone out of date since its vote asks for the outcome itself, as does one
            // whose loss was seen. One that voted but has not announced itself to this primary
            // yet (it just took over) is waited for, and goes out of date if it stays silent.
            let waiting: BTreeSet<NodeName> = request
                .voters
                .iter()
                .filter(|node| {
                    !self.replication.lost.contains(*node) && self.has_writable_cell(node)
                })
                .cloned()
                .collect();
            for node in &waiting {
                self.out.send(
                    node,
                    Message::Finish {
                        ttid: request.ttid,
                        tid,
                    },
                );
            }
            self.finishing = Some(Finishing {
                request,
                tid,
                waiting,
                acked: Vec::new(),
                deadline: now + self.config.finish_timeout,
            });
            // A finish with no voter to wait for completes at once, and the loop goes on to
            // the next: iterating, not recursing, whatever the length of the queue.
            self.complete_finish();
        }
        Ok(())
    }

    /// Decides every queued finish not decided yet (at most [`DECIDE_AHEAD`]), in queue order:
    /// the commit point. The decisions go to the log in one entry; their finishes then go out
    /// one at a time, each as soon as the previous one completes, without waiting for the log
    /// again.
    fn decide_queued(&mut self, now: SystemTime) -> Result<(), ProtocolError> {
        let undecided: Vec<usize> = self
            .queue
            .iter()
            .enumerate()
            .filter(|(_, request)| request.decided.is_none())
            .map(|(index, _)| index)
            .take(DECIDE_AHEAD)
            .collect();
        let mut refused = Vec::new();
        for index in undecided {
            let tid = match self.queue[index].chosen {
                None => self.clock.allocate(now)?,
                Some(tid) if tid > self.state.last_tid => {
                    // Later TIDs from the clock come after it.
                    self.clock.observe(tid);
                    tid
                }
                Some(_) => {
                    // Another commit got in since the transaction began: it cannot commit at
                    // its TID any more.
                    refused.push(index);
                    continue;
                }
            };
            let request = &self.queue[index];
            let (ttid, client, voters, oids) = (
                request.ttid,
                request.client.clone().unwrap_or_default(),
                request.voters.clone(),
                request.oids.clone(),
            );
            // The data is durable on the voters; the TID is decided, and goes to the log
            // before anyone hears of it.
            self.decide(
                ttid,
                Decision {
                    tid,
                    client,
                    pending: voters,
                    oids,
                },
            );
            self.queue[index].decided = Some(tid);
            // In the same log entry as the decision (see the `oids` module).
            let greatest = self.queue[index].oids.iter().max().copied();
            self.raise_next_oid(greatest);
        }
        self.announce_decided();
        for index in refused.into_iter().rev() {
            let Some(request) = self.queue.remove(index) else {
                continue;
            };
            let last = self.state.last_tid;
            self.abort(request.ttid, true);
            if let Some(client) = &request.client {
                self.out.send(
                    client,
                    Message::AnswerFinish {
                        ttid: request.ttid,
                        outcome: TransactionOutcome::TidNotAfterLast { last },
                    },
                );
            }
        }
        Ok(())
    }

    /// Completes the finish in progress if no voter is left to acknowledge it, and starts the
    /// next ones.
    fn complete_finish_if_done(&mut self, now: SystemTime) -> Result<(), ProtocolError> {
        if self.complete_finish() {
            self.start_next_finish(now)
        } else {
            Ok(())
        }
    }

    /// Completes the finish in progress if no voter is left to acknowledge it; whether it did.
    fn complete_finish(&mut self) -> bool {
        let Some(finishing) = self
            .finishing
            .take_if(|finishing| finishing.waiting.is_empty())
        else {
            return false;
        };
        let Finishing {
            request,
            tid,
            acked,
            ..
        } = finishing;
        self.open.remove(&request.ttid);
        self.state.last_committed = self.state.last_committed.max(tid);
        if !acked.is_empty() {
            self.ack(request.ttid, acked);
        }
        if !request.announced {
            // A decision of an earlier primary: announced once its voters applied it, to the
            // clients that announced themselves to this one since (they dropped their caches,
            // but may have read an object again before the commit reached its storages).
            self.announce(request.ttid, request.client.as_ref(), &request.oids, tid);
            self.announce_decided();
        }
        self.events.push_back(MasterEvent::Committed {
            ttid: request.ttid,
            tid,
        });
        true
    }

    /// Announces the decided commits in TID order, as far as every commit before them was
    /// announced: a commit is announced once its decision is in the log (this primary's
    /// messages are held until then), before its voters applied it. The voters hold reads of
    /// what it wrote until they have (`storage::in_doubt`), so a client that hears of it never
    /// reads an older value; finishing on the voters then overlaps the clients' next work
    /// instead of costing every commit a round trip more. An earlier primary's decision is
    /// announced when it completes (above), and every later one waits for it.
    fn announce_decided(&mut self) {
        if self
            .finishing
            .as_ref()
            .is_some_and(|finishing| !finishing.request.announced)
        {
            return;
        }
        let mut due = Vec::new();
        for request in &mut self.queue {
            let Some(tid) = request.decided else {
                break;
            };
            if request.announced {
                continue;
            }
            if request.client.is_none() {
                // An earlier primary's decision waiting for its turn.
                break;
            }
            request.announced = true;
            due.push((
                request.ttid,
                request.client.clone(),
                request.oids.clone(),
                tid,
            ));
        }
        for (ttid, client, oids, tid) in due {
            self.announce(ttid, client.as_ref(), &oids, tid);
        }
    }

    /// Answers `client` that `ttid` committed at `tid`, and invalidates `oids`, which it
    /// wrote, at the other clients.
    fn announce(&mut self, ttid: Tid, client: Option<&NodeName>, oids: &[Oid], tid: Tid) {
        self.last_announced = self.last_announced.max(tid);
        if let Some(client) = client.filter(|client| self.clients.contains(*client)) {
            let outcome = TransactionOutcome::Committed(tid);
            self.out
                .send(client, Message::AnswerFinish { ttid, outcome });
        }
        for other in self.clients.iter().filter(|other| Some(*other) != client) {
            self.out.invalidate(other, tid, oids.to_vec());
        }
    }

    /// The last commit the clients were told of: what a client that connects, or asks, starts
    /// from.
    fn last_announced(&self) -> Tid {
        self.last_announced.max(self.state.last_committed)
    }

    /// Aborts an open transaction; `tell_storages` when its client will not do it.
    fn abort(&mut self, ttid: Tid, tell_storages: bool) {
        self.open.remove(&ttid);
        self.outcomes.insert(ttid, TransactionOutcome::Aborted);
        if tell_storages {
            for node in &self.running {
                self.out.send(node, Message::AbortTransaction { ttid });
            }
        }
        self.events.push_back(MasterEvent::Aborted { ttid });
    }

    /// Whether `node` holds a readable cell of a partition that the finish in progress wrote.
    fn last_copy_of_written(&self, node: &str) -> bool {
        let Some(finishing) = self.finishing.as_ref() else {
            return false;
        };
        finishing.request.oids.iter().any(|oid| {
            self.state
                .table
                .readable_cells(*oid)
                .any(|cell| cell.node == node)
        })
    }

    fn has_writable_cell(&self, node: &str) -> bool {
        self.state.table.partitions().any(|cells| {
            cells
                .iter()
                .any(|cell| cell.node == node && cell.is_writable())
        })
    }

    /// `node` missed a commit that wrote `oids`: its cells go out of date as a whole when
    /// the table stays operational; else (one of its cells is the last readable copy of a
    /// partition) its cells of the partitions the commit wrote do, except such a last copy.
    /// Either way no readable cell is left without the commit where another has it (P7:
    /// leaving the whole node readable when it could not go out of date as a whole let a
    /// reader at the commit's TID see half of the transaction). A last copy stays readable:
    /// a finish that needs it without its vote is refused, or waits for it (see
    /// [`finish_timeout`](Self::finish_timeout)).
    fn mark_missed(&mut self, node: &str, oids: &[Oid]) -> Result<(), ProtocolError> {
        let mut whole = self.state.table.clone();
        if whole.mark_out_of_date(node)? > 0 && whole.is_operational() {
            return self.mark_out_of_date(node);
        }
        let partitions: BTreeSet<u32> = oids
            .iter()
            .map(|oid| self.state.table.partition_of(*oid))
            .collect();
        let mut marked = self.state.table.clone();
        if marked.mark_cells_out_of_date(node, partitions)? == 0 {
            return Ok(());
        }
        self.note_out_of_date(node);
        self.state.table = marked;
        self.events.push_back(MasterEvent::StorageOutOfDate {
            node: node.to_owned(),
        });
        self.broadcast_table();
        Ok(())
    }

    /// The storages with a cell that transaction `ttid` writes (`oids`) and that has been
    /// writable only since a later table than the one its client began with (the client made
    /// its ttid before the new table reached it, so its stores may have missed the cell), unless
    /// the cell's replication round waits for the transaction and so copies it. Such a cell
    /// would miss the commit for good: it is [marked missed](Self::mark_missed) instead, and
    /// catches up past it.
    fn missed_cells(&self, ttid: Tid, oids: &[Oid]) -> BTreeSet<NodeName> {
        let table = &self.state.table;
        let Some(began_with) = self
            .open
            .get(&ttid)
            .map(|open| open.table_version)
            .filter(|version| *version < table.version())
        else {
            return BTreeSet::new();
        };
        oids.iter()
            .flat_map(|oid| {
                let partition = table.partition_of(*oid);
                table
                    .writable_cells(*oid)
                    .filter(move |cell| {
                        self.replication
                            .writable_after(partition, &cell.node, began_with)
                            && !self.replication.covers(partition, &cell.node, ttid)
                    })
                    .map(|cell| cell.node.clone())
            })
            .collect()
    }

    /// Marks `node`'s cells out of date, unless that would leave a partition without a
    /// readable cell: the last copy of a partition stays readable, and finishes that need the
    /// node are refused instead (a node that missed a commit: [`mark_missed`](Self::mark_missed)).
    fn mark_out_of_date(&mut self, node: &str) -> Result<(), ProtocolError> {
        let mut marked = self.state.table.clone();
        if marked.mark_out_of_date(node)? == 0 || !marked.is_operational() {
            return Ok(());
        }
        self.note_out_of_date(node);
        self.state.table = marked;
        self.events.push_back(MasterEvent::StorageOutOfDate {
            node: node.to_owned(),
        });
        self.broadcast_table();
        Ok(())
    }

    /// Sends the current table to every client and running storage.
    pub(super) fn broadcast_table(&mut self) {
        let peers: Vec<NodeName> = self
            .clients
            .iter()
            .chain(self.running.iter())
            .cloned()
            .collect();
        for peer in peers {
            self.out
                .send(&peer, Message::PartitionTable(self.state.table.clone()));
        }
    }

    /// Sends `peer` where every other storage accepts connections, when any is known.
    pub(super) fn send_address_book(&mut self, peer: &str) {
        let book: Vec<(NodeName, SocketAddr)> = self
            .state
            .storage_addresses
            .iter()
            .filter(|(name, _)| *name != peer)
            .map(|(name, address)| (name.clone(), *address))
            .collect();
        if !book.is_empty() {
            self.out.send(peer, Message::StorageAddresses(book));
        }
    }
}

/// The refusal of a message its sender may not send (or not now).
fn unexpected(from: &str, message: &Message) -> ProtocolError {
    ProtocolError::Unexpected {
        from: from.to_owned(),
        kind: message.kind(),
    }
}
