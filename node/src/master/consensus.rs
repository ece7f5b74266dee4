//! The master's seat in the raft group: the committed state, what the primary proposes, and
//! what it holds back until its proposals commit.
//!
//! On the primary, the master's handlers change the working copy of the
//! [replicated state](super::state) as before; at the end of each input, [`Master::settle`]
//! proposes what changed as one [`Update`] and tags every message and event produced so far
//! with the index of the last proposal. They are released, in order, once that index is
//! applied: an answer, an order to a storage or a new table never goes out before the state
//! it depends on is committed in the log, so a primary that dies, or is deposed, has told
//! nobody anything the next primary does not know. (A lone master commits within the call.)
//!
//! Every message for a storage or a client goes out as an order of the primary's term
//! ([`Message::FromPrimary`]). A master that is not the primary answers what needs one with a
//! redirect ([`Message::PrimaryIs`]). When raft makes this master the leader and it applied an
//! entry of its own term, it takes over: its working state is the committed one, its clock
//! starts above every TID decided, the decisions some voter has not acknowledged are finished
//! again first, and it tells the storages it knows that it is the primary. When raft deposes
//! it, everything held back is dropped and the volatile state forgotten.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::SystemTime;

use super::open::Open;
use super::state::{Journal, ReplicatedState, STATE_FORMAT, Update};
use super::{FinishRequest, Master, MasterEvent};
use crate::consensus::{
    Applied, ConsensusError, Group, GroupSettings, GroupStatus, LogError, RaftLog, raft_id,
};
use crate::ids::{Tid, TidClock};
use crate::partition::NodeName;
use crate::protocol::{Message, Order, ProtocolError, Transmit};

/// Who the masters are, and this one's raft settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// This master's name.
    pub name: NodeName,
    /// Every master of the group (this one included) with the address it accepts connections
    /// at, where known.
    pub masters: Vec<(NodeName, Option<SocketAddr>)>,
    /// Raft's timing.
    pub settings: GroupSettings,
}

impl GroupConfig {
    /// A group of one master named `name`.
    pub fn lone(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            masters: vec![(name.to_owned(), None)],
            settings: GroupSettings::default(),
        }
    }

    /// The masters' raft ids.
    pub fn voters(&self) -> Vec<u64> {
        self.masters.iter().map(|(name, _)| raft_id(name)).collect()
    }

    fn names(&self) -> Vec<NodeName> {
        self.masters.iter().map(|(name, _)| name.clone()).collect()
    }

    /// Where master `name` accepts connections, if known.
    pub fn address(&self, name: &str) -> Option<SocketAddr> {
        self.masters
            .iter()
            .find(|(master, _)| master == name)
            .and_then(|(_, address)| *address)
    }
}

/// Something the primary produced, held until the proposals before it commit.
#[derive(Debug)]
enum Held {
    Transmit(Box<Transmit>),
    Event(MasterEvent),
    /// The answer to an operator's request (by the driver's token).
    Answer(u64, Box<Message>),
}

/// What [`Consensus::transition`] asks of the master.
enum Transition {
    None,
    TakeOver,
    StepDown,
}

/// The master's seat in the group; see the [module documentation](self).
#[derive(Debug)]
pub(super) struct Consensus {
    group: Group,
    config: GroupConfig,
    /// The state applied from the committed log.
    committed: ReplicatedState,
    /// The committed state with the proposals in flight applied: what the next proposal is a
    /// change of.
    proposed: ReplicatedState,
    /// Decisions and acknowledgements since the last proposal.
    pub(super) journal: Journal,
    /// The term this master is the primary of, while it is.
    primary_term: Option<u64>,
    /// The log index of the last proposal.
    last_proposed: u64,
    held: VecDeque<(u64, Held)>,
    direct: VecDeque<Transmit>,
    released: VecDeque<Transmit>,
    events: VecDeque<MasterEvent>,
    /// Answers to operators' requests that may go out, by token.
    answers: VecDeque<(u64, Result<Message, ProtocolError>)>,
    /// Why this master stopped: its log failed, or holds what it cannot apply (see
    /// [`ConsensusError::is_fatal`]). Once set, the master does nothing more and its driver
    /// stops the node.
    failure: Option<ConsensusError>,
    /// When bookkeeping held back (see [`Update::is_bookkeeping`]) must be proposed at the
    /// latest.
    bookkeeping_due: Option<SystemTime>,
}

/// How long bookkeeping may wait for the next proposal.
const BOOKKEEPING_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

impl Consensus {
    pub(super) fn open(
        config: GroupConfig,
        log: RaftLog,
        initial: ReplicatedState,
        now: SystemTime,
    ) -> Result<Self, ConsensusError> {
        let mut log = log;
        match log.state_format()? {
            Some(STATE_FORMAT) => {}
            None if log.is_new() => log.set_state_format(STATE_FORMAT)?,
            found => {
                return Err(ConsensusError::StateFormat {
                    found,
                    expected: STATE_FORMAT,
                });
            }
        }
        let group = Group::new(
            &config.name,
            &config.names(),
            log,
            config.settings.clone(),
            now,
        )?;
        let (index, data) = group.initial_snapshot();
        let committed = if index > 0 {
            postcard::from_bytes(&data).map_err(|source| LogError::Corrupt {
                what: "snapshot of the replicated state",
                source,
            })?
        } else {
            initial
        };
        Ok(Self {
            group,
            config,
            proposed: committed.clone(),
            committed,
            journal: Journal::default(),
            primary_term: None,
            last_proposed: 0,
            held: VecDeque::new(),
            direct: VecDeque::new(),
            released: VecDeque::new(),
            events: VecDeque::new(),
            answers: VecDeque::new(),
            failure: None,
            bookkeeping_due: None,
        })
    }

    pub(super) fn committed(&self) -> &ReplicatedState {
        &self.committed
    }

    pub(super) fn is_member(&self, name: &str) -> bool {
        self.group.is_member(name)
    }

    pub(super) fn is_primary(&self) -> bool {
        self.primary_term.is_some()
    }

    pub(super) fn term(&self) -> u64 {
        self.group.term()
    }

    pub(super) fn name(&self) -> &str {
        &self.config.name
    }

    pub(super) fn group_config(&self) -> &GroupConfig {
        &self.config
    }

    pub(super) fn status(&self) -> GroupStatus {
        self.group.status()
    }

    pub(super) fn failure(&self) -> Option<&ConsensusError> {
        self.failure.as_ref()
    }

    /// Takes the failure out (for a master that failed while it was being opened).
    pub(super) fn take_failure(&mut self) -> Option<ConsensusError> {
        self.failure.take()
    }

    /// Passes `result` on, but a fatal error becomes this master's
    /// [`failure`](Self::failure) (the first one only), and the caller gets
    /// [`ConsensusError::Stopped`].
    fn check<T>(&mut self, result: Result<T, ConsensusError>) -> Result<T, ConsensusError> {
        match result {
            Err(error) if error.is_fatal() => {
                if self.failure.is_none() {
                    tracing::error!(%error, "the masters' log failed: this master stops");
                    self.failure = Some(error);
                }
                Err(ConsensusError::Stopped)
            }
            other => other,
        }
    }

    /// The primary as this master knows it: itself once it serves, the leader raft knows
    /// otherwise (none while an election goes on, or while the leader catches up).
    pub(super) fn primary_is(&self) -> (Option<NodeName>, Option<SocketAddr>) {
        if self.is_primary() {
            return (
                Some(self.config.name.clone()),
                self.config.address(&self.config.name),
            );
        }
        match self
            .group
            .leader()
            .filter(|leader| *leader != self.config.name)
        {
            Some(leader) => (Some(leader.to_owned()), self.config.address(leader)),
            None => (None, None),
        }
    }

    pub(super) fn tick(&mut self, now: SystemTime) -> Result<(), ConsensusError> {
        let result = self.group.tick(now);
        self.check(result)
    }

    /// When raft's clock must tick next (never for a lone master, which needs no ticks), or
    /// held-back bookkeeping is due.
    pub(super) fn poll_timeout(&self) -> Option<SystemTime> {
        (self.config.masters.len() > 1)
            .then(|| self.group.poll_timeout())
            .into_iter()
            .chain(self.bookkeeping_due)
            .min()
    }

    pub(super) fn step(
        &mut self,
        from: &str,
        message: &crate::consensus::ConsensusMessage,
    ) -> Result<(), ConsensusError> {
        let result = self.group.step(from, message);
        self.check(result)
    }

    pub(super) fn peer_lost(&mut self, master: &str) {
        self.group.peer_lost(master);
    }

    pub(super) fn write_behind(
        &mut self,
        before_batch: Option<crate::persist::BatchHook>,
    ) -> Result<(), ConsensusError> {
        let result = self.group.write_behind(before_batch);
        self.check(result)
    }

    pub(super) async fn next_written(&mut self) -> Result<u64, ConsensusError> {
        self.group.next_written().await
    }

    pub(super) fn written(
        &mut self,
        written: Result<u64, ConsensusError>,
    ) -> Result<(), ConsensusError> {
        let result = written.and_then(|number| self.group.written(number));
        self.check(result)
    }

    /// Sends `message` to `to` now, not as an order (a redirect, a follower's answer).
    pub(super) fn send_direct(&mut self, to: &str, message: Message) {
        self.direct.push_back(Transmit {
            to: to.to_owned(),
            message,
        });
    }

    /// Proposes `update` (a change of the working state); the state it leads to is what the
    /// next proposal is compared with.
    fn propose(&mut self, update: Update) -> Result<(), ConsensusError> {
        let bytes = postcard::to_stdvec(&update).map_err(|source| ConsensusError::Encode {
            what: "a change of the replicated state",
            source,
        });
        let bytes = self.check(bytes)?;
        self.proposed.apply(update);
        let index = self.group.propose(bytes);
        self.last_proposed = self.check(index)?;
        Ok(())
    }

    /// Holds what the master produced until the last proposal commits; orders for storages
    /// and clients carry the primary's term.
    fn hold(&mut self, transmits: impl Iterator<Item = Transmit>, events: Vec<MasterEvent>) {
        let term = self.primary_term.unwrap_or_else(|| self.group.term());
        for mut transmit in transmits {
            if !self.group.is_member(&transmit.to) {
                transmit.message = Message::FromPrimary {
                    term,
                    message: Order(Box::new(transmit.message)),
                };
            }
            self.held
                .push_back((self.last_proposed, Held::Transmit(Box::new(transmit))));
        }
        for event in events {
            self.held
                .push_back((self.last_proposed, Held::Event(event)));
        }
    }

    /// Holds the answer to an operator's request (`token`) until the last proposal commits,
    /// and releases it at once if it did.
    pub(super) fn hold_answer(&mut self, token: u64, answer: Message) {
        self.held
            .push_back((self.last_proposed, Held::Answer(token, Box::new(answer))));
        self.release();
    }

    /// The next answer to an operator's request that may go out.
    pub(super) fn poll_answer(&mut self) -> Option<(u64, Result<Message, ProtocolError>)> {
        self.answers.pop_front()
    }

    /// Applies what committed to the committed state, and compacts the log when due.
    fn apply_committed(&mut self) -> Result<(), ConsensusError> {
        let result = self.apply_entries();
        self.check(result)
    }

    fn apply_entries(&mut self) -> Result<(), ConsensusError> {
        if self.failure.is_some() {
            // What follows an entry that could not be applied is not applied either.
            return Ok(());
        }
        while let Some(applied) = self.group.take_applied() {
            match applied {
                Applied::Entry { data, .. } if data.is_empty() => {}
                Applied::Entry { index, data, .. } => {
                    let update = postcard::from_bytes::<Update>(&data).map_err(|source| {
                        ConsensusError::Undecodable {
                            what: "entry",
                            index,
                            source,
                        }
                    })?;
                    self.committed.apply(update);
                }
                Applied::Snapshot { index, data } => {
                    self.committed =
                        postcard::from_bytes::<ReplicatedState>(&data).map_err(|source| {
                            ConsensusError::Undecodable {
                                what: "snapshot",
                                index,
                                source,
                            }
                        })?;
                }
            }
        }
        let committed = &self.committed;
        self.group.compact_if_due(self.group.applied(), || {
            postcard::to_stdvec(committed).map_err(|source| ConsensusError::Encode {
                what: "the replicated state",
                source,
            })
        })
    }

    /// Whether the master must take over as primary or step down.
    fn transition(&mut self) -> Transition {
        let term = self.group.term();
        match self.primary_term {
            None if self.group.leads_with_current_state() => {
                self.primary_term = Some(term);
                self.proposed = self.committed.clone();
                self.last_proposed = self.group.applied();
                Transition::TakeOver
            }
            Some(primary) if !(self.group.is_leader() && term == primary) => {
                self.primary_term = None;
                // What was held is dropped, but an operator waiting for a change hears that
                // it may not be in force (never that it is: it may be lost).
                for (_, held) in self.held.drain(..) {
                    if let Held::Answer(token, answer) = held {
                        self.answers.push_back((
                            token,
                            Err(ProtocolError::Deposed {
                                kind: answer.kind(),
                            }),
                        ));
                    }
                }
                self.bookkeeping_due = None;
                self.journal = Journal::default();
                self.proposed = self.committed.clone();
                Transition::StepDown
            }
            _ => Transition::None,
        }
    }

    /// Releases, in order, what waited for proposals now committed.
    fn release(&mut self) {
        let applied = self.group.applied();
        while self
            .held
            .front()
            .is_some_and(|(index, _)| *index <= applied)
        {
            match self.held.pop_front() {
                Some((_, Held::Transmit(transmit))) => self.released.push_back(*transmit),
                Some((_, Held::Event(event))) => self.events.push_back(event),
                Some((_, Held::Answer(token, answer))) => {
                    self.answers.push_back((token, Ok(*answer)));
                }
                None => {}
            }
        }
    }

    pub(super) fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some((to, message)) = self.group.poll_message() {
            return Some(Transmit {
                to,
                message: Message::Consensus(message),
            });
        }
        self.direct
            .pop_front()
            .or_else(|| self.released.pop_front())
    }

    pub(super) fn poll_event(&mut self) -> Option<MasterEvent> {
        self.events.pop_front()
    }
}

impl Master {
    /// Whether this master is the primary (raft's leader, with everything committed before
    /// its term applied).
    pub fn is_primary(&self) -> bool {
        self.consensus.is_primary()
    }

    /// The raft term this master is in.
    pub fn term(&self) -> u64 {
        self.consensus.term()
    }

    /// The committed replicated state (as every master applies it from the log).
    pub fn committed_state(&self) -> &ReplicatedState {
        self.consensus.committed()
    }

    /// The primary's working state, ahead of the committed one by the proposals in flight
    /// (equal to it once they committed).
    pub fn working_state(&self) -> &ReplicatedState {
        &self.state
    }

    /// From now on this master's log is written by a thread of its own, in batches: the
    /// decisions that come while one batch is on its way to the disk share the next one's
    /// fsync, and the master goes on serving meanwhile. What depends on a write (a decision's
    /// answers and orders, a vote) still waits for it: the driver awaits
    /// [`next_log_written`](Self::next_log_written) and hands the result to
    /// [`log_written`](Self::log_written) (`Role::background`). Without this, as in the
    /// simulations, each input's writes are durable before it returns. `before_batch` runs
    /// on the writer thread before each batch: a test's slow or stopped disk (`None` in
    /// production).
    ///
    /// ```
    /// use replicast_node::master::{GroupConfig, Master, MasterConfig};
    /// use replicast_node::consensus::RaftLog;
    /// use replicast_node::partition::PartitionTable;
    /// use std::time::SystemTime;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let table = PartitionTable::new(4, 1, &["s1".to_string()])?;
    /// let group = GroupConfig::lone("master");
    /// let log = RaftLog::open(dir.path().join("master.log"), &group.voters())?;
    /// let mut master = Master::open(table, MasterConfig::default(), group, log, SystemTime::now())?;
    /// master.write_log_behind(None)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_log_behind(
        &mut self,
        before_batch: Option<crate::persist::BatchHook>,
    ) -> Result<(), ConsensusError> {
        self.consensus.write_behind(before_batch)
    }

    /// Waits until the log's writer made another batch durable (never, unless
    /// [`write_log_behind`](Self::write_log_behind) started it).
    pub async fn next_log_written(&mut self) -> Result<u64, ConsensusError> {
        self.consensus.next_written().await
    }

    /// What [`next_log_written`](Self::next_log_written) returned, at `now`: what waited for
    /// those writes goes on (a failed write stops the master, see
    /// [`failure`](Self::failure)).
    pub fn log_written(
        &mut self,
        now: SystemTime,
        written: Result<u64, ConsensusError>,
    ) -> Result<(), ProtocolError> {
        let result = self.consensus.written(written).map_err(ProtocolError::from);
        let settled = self.settle(now);
        result.and(settled)
    }

    /// Why this master stopped serving, if it did: its log could not be written or read, or
    /// holds what it cannot apply. The driver stops the node then (see
    /// [`Role::failure`](crate::driver::Role::failure)).
    pub fn failure(&self) -> Option<&ConsensusError> {
        self.consensus.failure()
    }

    /// Where this master's peer `peer` accepts connections: another master's configured
    /// address, or a storage's announced one.
    pub fn peer_address(&self, peer: &str) -> Option<SocketAddr> {
        self.consensus
            .group_config()
            .address(peer)
            .or_else(|| self.current().storage_addresses.get(peer).copied())
    }

    /// A message from another master: raft's.
    pub(super) fn handle_master_message(
        &mut self,
        _now: SystemTime,
        from: &str,
        message: Message,
    ) -> Result<(), ProtocolError> {
        match message {
            Message::Consensus(message) => Ok(self.consensus.step(from, &message)?),
            other => Err(ProtocolError::Unexpected {
                from: from.to_owned(),
                kind: other.kind(),
            }),
        }
    }

    /// A message that needs the primary, on a master that is not: the asker learns who is.
    pub(super) fn redirect(&mut self, from: &str, message: Message) -> Result<(), ProtocolError> {
        match message {
            Message::AskStatus { request } => {
                let status = Box::new(self.cluster_status());
                self.consensus
                    .send_direct(from, Message::AnswerStatus { request, status });
                Ok(())
            }
            // Anything else, the periodic reports included: a node that took this master for
            // the primary (it may have been, in an earlier term) learns who is.
            _ => {
                let (primary, address) = self.consensus.primary_is();
                let term = self.consensus.term();
                self.consensus.send_direct(
                    from,
                    Message::PrimaryIs {
                        primary,
                        address,
                        term,
                    },
                );
                Ok(())
            }
        }
    }

    /// Records a commit decision in the working state and the journal.
    pub(super) fn decide(&mut self, ttid: crate::ids::Tid, decision: super::state::Decision) {
        self.consensus
            .journal
            .decided
            .push((ttid, decision.clone()));
        self.state.decide(ttid, decision);
    }

    /// Records acknowledgements of decision `ttid` in the working state and the journal.
    pub(super) fn ack(&mut self, ttid: crate::ids::Tid, nodes: Vec<NodeName>) {
        self.state.ack(ttid, &nodes);
        self.consensus.journal.acked.push((ttid, nodes));
    }

    /// Sends storage `node` (which just announced itself) the finish of every decision it has
    /// not acknowledged, in TID order, before anything else of this primary reaches it.
    pub(super) fn resend_decisions(&mut self, node: &str) {
        let mut pending: Vec<(crate::ids::Tid, crate::ids::Tid)> = self
            .state
            .decisions
            .iter()
            .filter(|(ttid, decision)| {
                decision.pending.contains(node)
                    && self
                        .finishing
                        .as_ref()
                        .is_none_or(|finishing| finishing.request.ttid != **ttid)
            })
            .map(|(ttid, decision)| (decision.tid, *ttid))
            .collect();
        pending.sort_unstable();
        for (tid, ttid) in pending {
            self.out.send(node, Message::Finish { ttid, tid });
        }
        if let Some(finishing) = self
            .finishing
            .as_ref()
            .filter(|finishing| finishing.waiting.contains(node))
        {
            let (ttid, tid) = (finishing.request.ttid, finishing.tid);
            self.out.send(node, Message::Finish { ttid, tid });
        }
    }

    /// After every input: proposes what the primary changed, holds what it produced until
    /// that commits, applies what committed, takes over or steps down as raft decided, and
    /// releases what may go out.
    pub(super) fn settle(&mut self, now: SystemTime) -> Result<(), ProtocolError> {
        self.roster.backups.saw(now);
        let mut result = Ok(());
        // Bounded: a take-over proposes once more, then nothing changes.
        for _ in 0..8 {
            if self.is_primary() {
                let journal = std::mem::take(&mut self.consensus.journal);
                let update = self.state.diff(&self.consensus.proposed, journal);
                let due = self.consensus.bookkeeping_due.is_some_and(|due| now >= due);
                if update.is_bookkeeping() && !due {
                    // Completed finishes: recorded with the next proposal (one log write per
                    // transaction, not two), or shortly.
                    self.consensus.journal.acked = update.acked;
                    self.consensus
                        .bookkeeping_due
                        .get_or_insert(now + BOOKKEEPING_DELAY);
                } else if !update.is_empty() {
                    self.consensus.bookkeeping_due = None;
                    if let Err(error) = self.consensus.propose(update) {
                        result = Err(error.into());
                    }
                }
            }
            let transmits: Vec<Transmit> = std::iter::from_fn(|| self.out.poll()).collect();
            let events: Vec<MasterEvent> = self.events.drain(..).collect();
            self.consensus.hold(transmits.into_iter(), events);
            if let Err(error) = self.consensus.apply_committed() {
                result = Err(error.into());
            }
            match self.consensus.transition() {
                Transition::None => break,
                Transition::TakeOver => self.take_over(now),
                Transition::StepDown => self.step_down(),
            }
        }
        self.consensus.release();
        result
    }

    /// Forgets what the primary held in memory (links, transactions, reports).
    fn forget_volatile(&mut self) {
        self.announce_deadline = None;
        self.running.clear();
        self.clients.clear();
        self.client_numbers.clear();
        self.forgotten_clients.clear();
        self.open.clear();
        self.last_announced = Tid::ZERO;
        self.queue.clear();
        self.finishing = None;
        self.outcomes.clear();
        self.replication = super::replication::Replication::default();
        self.roster.forget_nodes();
        self.out = Default::default();
        self.events.clear();
    }

    fn take_over(&mut self, now: SystemTime) {
        self.forget_volatile();
        self.state = self.consensus.committed().clone();
        // Never back in TIDs: above every decision, whatever this host's clock says.
        let floor = self.state.last_tid.max(self.clock.last());
        self.clock = TidClock::starting_after(floor);
        if !self.state.initialized {
            // The first primary of a new group writes the table of its configuration.
            self.state.initialized = true;
        }
        let term = self.consensus.term();
        self.events.push_back(MasterEvent::BecamePrimary { term });
        // Every client of this primary learns the table in its welcome from it: none began
        // with a table from before the cells writable now.
        self.replication.writable_from_start(&self.state.table);
        // Decisions of an earlier primary that a voter has not acknowledged are finished
        // again before anything new, in TID order.
        let mut resumed: Vec<_> = self
            .state
            .decisions
            .iter()
            .map(|(ttid, decision)| (decision.tid, *ttid, decision.clone()))
            .collect();
        resumed.sort_unstable_by_key(|(tid, ttid, _)| (*tid, *ttid));
        for (tid, ttid, decision) in resumed {
            self.open.insert(
                ttid,
                Open {
                    client: decision.client.clone(),
                    finish_queued: true,
                    tid: None,
                    table_version: self.state.table.version(),
                },
            );
            self.queue.push_back(FinishRequest {
                ttid,
                client: None,
                oids: decision.oids,
                voters: decision.pending,
                chosen: None,
                decided: Some(tid),
                announced: false,
            });
        }
        // The storages learn at once that this master is the primary (they announce
        // themselves in return), rather than when their link to the old one times out.
        let (primary, address) = self.consensus.primary_is();
        // (Those whose address is known; the others learn it from the redirect to their next
        // message, their periodic report at the latest.)
        let storages: Vec<NodeName> = self.state.storage_addresses.keys().cloned().collect();
        for storage in storages {
            self.out.send(
                &storage,
                Message::PrimaryIs {
                    primary: primary.clone(),
                    address,
                    term,
                },
            );
        }
        // Only after a take-over within a group: a lone master that starts waits for its
        // storages as it always did.
        if self.consensus.group_config().masters.len() > 1 {
            self.announce_deadline = Some(now + self.config.finish_timeout);
        }
        if let Err(error) = self.start_next_finish(now) {
            tracing::warn!(%error, "cannot resume the finishes of the previous primary");
        }
    }

    fn step_down(&mut self) {
        self.forget_volatile();
        self.state = self.consensus.committed().clone();
        let term = self.consensus.term();
        self.consensus
            .events
            .push_back(MasterEvent::SteppedDown { term });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::ids::Oid;
    use crate::master::MasterConfig;
    use crate::partition::PartitionTable;
    use crate::protocol::{ChangeOutcome, StorageChange, Transmit};

    /// A lone master's log in memory, with this build's state format unless `format` says
    /// otherwise, holding `entries` (raft term 1, committed).
    fn lone_log(format: Option<u32>, entries: &[(u64, Vec<u8>)]) -> (GroupConfig, RaftLog) {
        let group = GroupConfig::lone("master");
        let mut log = RaftLog::in_memory(&group.voters()).expect("log");
        if let Some(format) = format {
            log.set_state_format(format).expect("format");
        }
        let entries: Vec<_> = entries
            .iter()
            .map(|(index, data)| {
                crate::consensus::LogEntry {
                    kind: crate::consensus::EntryKind::Normal,
                    term: 1,
                    index: *index,
                    data: data.clone().into(),
                    context: Default::default(),
                }
                .to_raft()
            })
            .collect();
        let hard_state = raft::eraftpb::HardState {
            term: 1,
            vote: crate::consensus::raft_id("master"),
            commit: entries.len() as u64,
            ..Default::default()
        };
        log.persist(None, &entries, Some(&hard_state))
            .expect("persist");
        (group, log)
    }

    fn open_lone(group: GroupConfig, log: RaftLog) -> Result<Master, ConsensusError> {
        let table = PartitionTable::new(4, 2, &["s1".into(), "s2".into()]).expect("table");
        Master::open(
            table,
            MasterConfig::default(),
            group,
            log,
            SystemTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn a_committed_entry_that_does_not_decode_stops_the_master_instead_of_being_skipped() {
        let raise = Update {
            next_oid: Some(500),
            ..Update::default()
        };
        let good = postcard::to_stdvec(&raise).expect("encode");
        // The entries before the bad one are applied; the bad one stops the master.
        let (group, log) = lone_log(Some(STATE_FORMAT), &[(1, good.clone())]);
        let master = open_lone(group, log).expect("a good log opens");
        assert_eq!(master.committed_state().next_oid, 500);
        let (group, log) = lone_log(Some(STATE_FORMAT), &[(1, good), (2, vec![0xff; 3])]);
        match open_lone(group, log) {
            Err(error @ ConsensusError::Undecodable { index: 2, .. }) => {
                assert!(error.to_string().contains("index 2"), "{error}");
            }
            Err(other) => panic!("the wrong error: {other}"),
            Ok(_) => panic!("a master went on without a committed entry"),
        }
    }

    #[test]
    fn a_log_of_another_state_format_is_refused_naming_both() {
        for recorded in [None, Some(STATE_FORMAT + 1)] {
            let (group, log) = lone_log(recorded, &[]);
            match open_lone(group, log) {
                Err(error @ ConsensusError::StateFormat { found, expected }) => {
                    assert_eq!((found, expected), (recorded, STATE_FORMAT));
                    assert!(
                        error.to_string().contains(&STATE_FORMAT.to_string()),
                        "{error}"
                    );
                }
                Err(other) => panic!("the wrong error: {other}"),
                Ok(_) => panic!("a log of format {recorded:?} was read"),
            }
        }
        // A new log is given this build's format, durably.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.redb");
        let group = GroupConfig::lone("master");
        let log = RaftLog::open(&path, &group.voters()).expect("log");
        drop(open_lone(group.clone(), log).expect("a new log opens"));
        let log = RaftLog::open(&path, &group.voters()).expect("reopen");
        assert_eq!(log.state_format().expect("read"), Some(STATE_FORMAT));
    }

    const TICK: Duration = Duration::from_millis(50);

    /// Three masters in memory, `m1` with the shortest election timeout (fixed ones:
    /// deterministic), over a table of P = 4, R = 2 on s1 and s2.
    fn group(now: SystemTime) -> BTreeMap<String, Master> {
        let names = ["m1", "m2", "m3"];
        let masters: Vec<(NodeName, Option<SocketAddr>)> = names
            .iter()
            .map(|name| ((*name).to_owned(), None))
            .collect();
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let config = GroupConfig {
                    name: (*name).to_owned(),
                    masters: masters.clone(),
                    settings: GroupSettings {
                        election_ticks: 10 + 3 * i,
                        max_election_ticks: 11 + 3 * i,
                        ..GroupSettings::default()
                    },
                };
                let log = RaftLog::in_memory(&config.voters()).expect("log");
                let table = PartitionTable::new(4, 2, &["s1".into(), "s2".into()]).expect("table");
                let master =
                    Master::open(table, MasterConfig::default(), config, log, now).expect("master");
                ((*name).to_owned(), master)
            })
            .collect()
    }

    /// Delivers the masters' messages to one another until none is left (bounded); a
    /// message from or to a master in `cut` is lost. Returns what the masters not cut off sent
    /// to other nodes, with its sender (orders unwrapped).
    fn route(
        masters: &mut BTreeMap<String, Master>,
        now: SystemTime,
        cut: &[&str],
    ) -> Vec<(String, Transmit)> {
        let mut others = Vec::new();
        for _ in 0..1000 {
            let mut messages = Vec::new();
            for (name, master) in masters.iter_mut() {
                while let Some(transmit) = master.poll_transmit() {
                    messages.push((name.clone(), transmit));
                }
            }
            if messages.is_empty() {
                return others;
            }
            for (from, transmit) in messages {
                if cut.contains(&from.as_str()) || cut.contains(&transmit.to.as_str()) {
                    continue;
                }
                match masters.get_mut(&transmit.to) {
                    Some(master) => master
                        .handle(now, &from, transmit.message)
                        .expect("a master takes another's message"),
                    None => {
                        let message = match transmit.message {
                            Message::FromPrimary { message, .. } => *message.0,
                            other => other,
                        };
                        let to = transmit.to;
                        others.push((from, Transmit { to, message }));
                    }
                }
            }
        }
        panic!("the masters did not settle");
    }

    /// Advances the clock a tick at a time (at most `ticks`), firing the masters' timers and
    /// routing, until `done`.
    fn run_until(
        masters: &mut BTreeMap<String, Master>,
        now: &mut SystemTime,
        cut: &[&str],
        ticks: usize,
        done: impl Fn(&BTreeMap<String, Master>) -> bool,
    ) {
        for _ in 0..ticks {
            if done(masters) {
                return;
            }
            *now += TICK;
            for master in masters.values_mut() {
                if master.poll_timeout().is_some_and(|due| due <= *now) {
                    master.handle_timeout(*now).expect("timeout");
                }
            }
            route(masters, *now, cut);
        }
        assert!(done(masters), "not reached within {ticks} ticks");
    }

    fn ask_add(storage: &str) -> Message {
        Message::AskChangeStorage {
            request: 1,
            change: StorageChange::Add(storage.into()),
        }
    }

    #[test]
    fn a_decision_resumed_by_the_next_primary_invalidates_the_objects_it_wrote() {
        let mut now = SystemTime::UNIX_EPOCH;
        let mut masters = group(now);
        run_until(&mut masters, &mut now, &[], 100, |masters| {
            masters["m1"].is_primary()
        });
        let m1 = masters.get_mut("m1").expect("m1");
        for node in ["s1", "s2"] {
            m1.handle(now, node, Message::StorageReady).expect("ready");
        }
        m1.handle(now, "c1", Message::ClientHello).expect("hello");
        let number = route(&mut masters, now, &[])
            .into_iter()
            .find_map(|(_, transmit)| match transmit.message.into_order() {
                Message::TtidSpace { number, .. } => Some(number),
                _ => None,
            })
            .expect("numbered");
        let ttid = crate::ids::Tid(
            (crate::ids::Tid::from_system_time(now).0 & !0xffff) | u64::from(number),
        );
        let m1 = masters.get_mut("m1").expect("m1");
        m1.handle(
            now,
            "c1",
            Message::Begin {
                ttid,
                table_version: 1,
            },
        )
        .expect("begin");

        // m1 decides the commit (the decision is in every master's log) and orders it, but is
        // cut off before any storage acknowledges.
        let written = vec![Oid(5), Oid(9)];
        let finish = Message::AskFinish {
            ttid,
            oids: written.clone(),
            voters: vec!["s1".into(), "s2".into()],
            failed: Vec::new(),
        };
        let m1 = masters.get_mut("m1").expect("m1");
        m1.handle(now, "c1", finish).expect("finish");
        let tid = route(&mut masters, now, &[])
            .into_iter()
            .find_map(|(_, transmit)| match transmit.message {
                Message::Finish { tid, .. } => Some(tid),
                _ => None,
            })
            .expect("the decision is ordered");
        run_until(&mut masters, &mut now, &["m1"], 200, |masters| {
            masters["m2"].is_primary() || masters["m3"].is_primary()
        });
        let new = if masters["m2"].is_primary() {
            "m2"
        } else {
            "m3"
        };

        // Another client connects to the new primary; the storages announce themselves, are
        // told the decision again and acknowledge it.
        let primary = masters.get_mut(new).expect("the new primary");
        primary
            .handle(now, "c2", Message::ClientHello)
            .expect("hello");
        for node in ["s1", "s2"] {
            primary
                .handle(now, node, Message::StorageReady)
                .expect("ready");
        }
        let mut sent = route(&mut masters, now, &["m1"]);
        let primary = masters.get_mut(new).expect("the new primary");
        for node in ["s1", "s2"] {
            primary
                .handle(now, node, Message::Finished { ttid, tid })
                .expect("finished");
        }
        sent.extend(route(&mut masters, now, &["m1"]));
        let invalidations: Vec<Vec<Oid>> = sent
            .into_iter()
            .filter(|(_, transmit)| transmit.to == "c2")
            .filter_map(|(_, transmit)| match transmit.message {
                Message::Invalidate { commits } => Some(commits),
                _ => None,
            })
            .flatten()
            .filter(|changed| changed.tid == tid)
            .map(|changed| changed.oids)
            .collect();
        assert_eq!(
            invalidations,
            vec![written],
            "c2 learns which objects the resumed commit wrote"
        );
    }

    #[test]
    fn a_storage_change_is_answered_once_committed_and_never_done_by_a_deposed_primary() {
        let mut now = SystemTime::UNIX_EPOCH;
        let mut masters = group(now);
        run_until(&mut masters, &mut now, &[], 100, |masters| {
            masters["m1"].is_primary()
        });

        // s3 connects; the operator adds it: the answer waits for the followers.
        let m1 = masters.get_mut("m1").expect("m1");
        m1.handle(now, "s3", Message::StorageReady)
            .expect("s3 connects");
        assert!(matches!(
            m1.answer_or_defer(now, "admin", ask_add("s3"), 1),
            Ok(None)
        ));
        assert!(m1.poll_answer().is_none(), "not committed yet: no answer");
        route(&mut masters, now, &[]);
        let (token, answer) = masters
            .get_mut("m1")
            .and_then(Master::poll_answer)
            .expect("committed: answered");
        assert_eq!(token, 1);
        assert!(matches!(
            answer,
            Ok(Message::AnswerChangeStorage {
                outcome: ChangeOutcome::Done { .. },
                ..
            })
        ));
        for master in masters.values() {
            assert!(
                master
                    .committed_state()
                    .table
                    .storages()
                    .contains(&"s3".into())
            );
        }

        // s4 connects and is added, but m1 is cut off before its followers hear of it: another
        // master takes over without the change, and m1, deposed, never says it is done.
        let m1 = masters.get_mut("m1").expect("m1");
        m1.handle(now, "s4", Message::StorageReady)
            .expect("s4 connects");
        route(&mut masters, now, &[]);
        let m1 = masters.get_mut("m1").expect("m1");
        assert!(matches!(
            m1.answer_or_defer(now, "admin", ask_add("s4"), 2),
            Ok(None)
        ));
        run_until(&mut masters, &mut now, &["m1"], 200, |masters| {
            masters["m2"].is_primary() || masters["m3"].is_primary()
        });
        assert!(
            masters
                .get_mut("m1")
                .and_then(Master::poll_answer)
                .is_none()
        );
        // The partition heals: m1 hears of the later term, steps down and says so.
        run_until(&mut masters, &mut now, &[], 200, |masters| {
            !masters["m1"].is_primary()
        });
        let (token, answer) = masters
            .get_mut("m1")
            .and_then(Master::poll_answer)
            .expect("the deposed primary answers the operator");
        assert_eq!(token, 2);
        assert!(
            matches!(answer, Err(ProtocolError::Deposed { .. })),
            "{answer:?}"
        );
        run_until(&mut masters, &mut now, &[], 200, |masters| {
            masters
                .values()
                .all(|master| master.committed_state().table.storages().len() == 3)
        });
        for master in masters.values() {
            assert!(
                !master
                    .committed_state()
                    .table
                    .storages()
                    .contains(&"s4".into())
            );
        }
    }
}
