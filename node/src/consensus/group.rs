//! [`Group`]: one master's member of the raft group, as a sans-IO state machine.
//!
//! It wraps raft-rs' `RawNode` over the [`RaftLog`] and does what raft-rs prescribes for each
//! `Ready`: the messages a leader may send at once go out first; the snapshot, the new entries
//! and the hard state are made durable in one redb transaction (within the call, or on the
//! log's writer thread after [`Group::write_behind`]); only then go the messages that depend
//! on them (votes, append answers); committed entries are handed to the state
//! machine ([`Group::take_applied`]) in log order. Time comes from the caller: raft's ticks
//! are due every [`GroupSettings::tick`] of the `now` passed in, which is what lets a
//! simulation run the group on a virtual clock.
//!
//! Masters are named; raft numbers its members. A master's raft id is a 64-bit hash of its
//! name, so every master derives the same ids from the same names, and a message's sender is
//! the authenticated peer the driver names, never a number from the message.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use raft::eraftpb::{EntryType, Message as RaftMessage};
use raft::{RawNode, StateRole};

use super::error::{ConsensusError, LogError};
use super::log::{LogWrite, RaftLog};
use super::wire::ConsensusMessage;
use super::writer::LogWriter;
use crate::persist::BatchHook;

/// Raft's timing and the log's compaction, for one master.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSettings {
    /// How often raft's clock ticks.
    pub tick: Duration,
    /// Ticks without a leader's word before a follower stands for election, at least; each
    /// election waits a random number of ticks in `election_ticks .. max_election_ticks`.
    pub election_ticks: usize,
    /// The upper (excluded) bound of the random election wait, in ticks.
    pub max_election_ticks: usize,
    /// Ticks between two heartbeats of the leader.
    pub heartbeat_ticks: usize,
    /// Applied entries after which the log is compacted into a snapshot.
    pub compact_every: u64,
}

impl Default for GroupSettings {
    /// A tick of 50 ms, elections after 0.5 to 1 s without a leader, heartbeats every 100 ms:
    /// a dead primary is replaced within about a second and a half on a LAN.
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(50),
            election_ticks: 10,
            max_election_ticks: 20,
            heartbeat_ticks: 2,
            compact_every: 1024,
        }
    }
}

/// Something the state machine must apply, in log order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A committed command (empty for the entry a new leader appends).
    Entry {
        /// Its log index.
        index: u64,
        /// The term it was proposed in.
        term: u64,
        /// The command.
        data: Bytes,
    },
    /// The whole state, from a snapshot the leader sent: it replaces the state machine.
    Snapshot {
        /// The last index it includes.
        index: u64,
        /// The serialized state.
        data: Bytes,
    },
}

/// Where a master stands in the group, for the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStatus {
    /// This master's term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<String>,
    /// Whether it is the leader.
    pub is_leader: bool,
    /// The last index it applied.
    pub applied: u64,
    /// The last index it knows committed.
    pub commit: u64,
    /// The last index in its log.
    pub last_index: u64,
    /// On the leader: each member's last index known to match the leader's log.
    pub matched: Vec<(String, u64)>,
}

/// One master's member of the raft group; see the documentation of `consensus/group.rs`.
pub struct Group {
    node: RawNode<RaftLog>,
    name: String,
    ids: BTreeMap<String, u64>,
    names: BTreeMap<u64, String>,
    settings: GroupSettings,
    next_tick: SystemTime,
    outbox: VecDeque<(String, ConsensusMessage)>,
    applied: VecDeque<Applied>,
    /// The thread that writes the log, once [`write_behind`](Self::write_behind) started it;
    /// until then each `Ready` is written before `pump` returns.
    writer: Option<LogWriter>,
    /// The `Ready`s handed to the writer (or behind one that was) and not yet durable, in
    /// order, with the messages that wait for them.
    unwritten: VecDeque<Unwritten>,
    /// The number of the last `Ready` handled.
    last_ready: u64,
}

/// A `Ready` not yet durable, and the messages that promise what it writes.
struct Unwritten {
    number: u64,
    /// Whether it wrote anything itself (if not, it is durable once those before it are).
    writes: bool,
    messages: Vec<RaftMessage>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.name)
            .field("term", &self.node.raft.term)
            .field("leader", &self.node.raft.leader_id)
            .field("log", self.node.store())
            .finish()
    }
}

/// The raft id of the master named `name`: a hash of the name (never 0, raft's "nobody").
///
/// ```
/// use replicast_node::consensus::raft_id;
/// assert_eq!(raft_id("master-1"), raft_id("master-1"));
/// assert_ne!(raft_id("master-1"), raft_id("master-2"));
/// ```
pub fn raft_id(name: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes()).max(1)
}

impl Group {
    /// This master, `name`, in the group of `masters` (itself included), on `log`. A new log
    /// starts the group with `masters` as its voters; an existing one keeps its membership.
    /// A group of one elects itself at once.
    pub fn new(
        name: &str,
        masters: &[String],
        log: RaftLog,
        settings: GroupSettings,
        now: SystemTime,
    ) -> Result<Self, ConsensusError> {
        if !masters.iter().any(|master| master == name) {
            return Err(ConsensusError::NotListed {
                name: name.to_owned(),
                masters: masters.to_vec(),
            });
        }
        let mut names: BTreeMap<u64, String> = BTreeMap::new();
        let mut ids = BTreeMap::new();
        for master in masters {
            let id = raft_id(master);
            if let Some(other) = names.get(&id).filter(|other| *other != master) {
                return Err(ConsensusError::IdCollision {
                    first: other.clone(),
                    second: master.clone(),
                });
            }
            names.insert(id, master.clone());
            ids.insert(master.clone(), id);
        }
        let id = raft_id(name);
        let applied = log.snapshot_data().index;
        let config = raft::Config {
            id,
            election_tick: settings.election_ticks,
            heartbeat_tick: settings.heartbeat_ticks,
            min_election_tick: settings.election_ticks,
            max_election_tick: settings.max_election_ticks.max(settings.election_ticks + 1),
            applied,
            // A leader that no longer hears a majority steps down by itself, and a member
            // back from a partition asks before it disturbs the group with a new term.
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..raft::Config::default()
        };
        config.validate()?;
        let mut log = log;
        let voters = log.membership().voters.clone();
        let mut configured: Vec<u64> = ids.values().copied().collect();
        configured.sort_unstable();
        let mut members = voters.clone();
        members.sort_unstable();
        if members != configured {
            let named = |id: &u64| {
                log.name_of(*id)
                    .map(str::to_owned)
                    .or_else(|| names.get(id).cloned())
                    .unwrap_or_else(|| format!("{id:#x}"))
            };
            return Err(ConsensusError::MembershipDiffers {
                log: members.iter().map(named).collect(),
                configured: masters.to_vec(),
            });
        }
        log.record_names(masters)?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut node = RawNode::new(&config, log, &logger)?;
        if voters == [id] {
            // Alone: nobody else could vote, so waiting for an election timeout is useless.
            node.campaign()?;
        }
        let mut group = Self {
            node,
            name: name.to_owned(),
            ids,
            names,
            next_tick: now + settings.tick,
            settings,
            outbox: VecDeque::new(),
            applied: VecDeque::new(),
            writer: None,
            unwritten: VecDeque::new(),
            last_ready: 0,
        };
        group.pump()?;
        Ok(group)
    }

    /// This master's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The other members' names.
    pub fn peers(&self) -> impl Iterator<Item = &str> {
        self.ids
            .keys()
            .map(String::as_str)
            .filter(move |name| *name != self.name)
    }

    /// Whether `name` is a member.
    pub fn is_member(&self, name: &str) -> bool {
        self.ids.contains_key(name)
    }

    /// The snapshot the log starts from (index 0 and no data if none yet): the state machine
    /// starts from it, then applies the committed entries after it.
    pub fn initial_snapshot(&self) -> (u64, Bytes) {
        let snapshot = self.node.store().snapshot_data();
        (snapshot.index, snapshot.data.clone())
    }

    /// Runs raft's clock up to `now`.
    pub fn tick(&mut self, now: SystemTime) -> Result<(), ConsensusError> {
        let mut ticks = 0;
        while self.next_tick <= now && ticks < 1000 {
            self.node.tick();
            self.next_tick += self.settings.tick;
            ticks += 1;
        }
        if self.next_tick <= now {
            // A clock that jumped far ahead (or a process that was stopped): raft's timeouts
            // expired; the ticks in between change nothing more.
            self.next_tick = now + self.settings.tick;
        }
        self.pump()
    }

    /// When [`tick`](Self::tick) is due next.
    pub fn poll_timeout(&self) -> SystemTime {
        self.next_tick
    }

    /// A raft message from master `from`.
    pub fn step(&mut self, from: &str, message: &ConsensusMessage) -> Result<(), ConsensusError> {
        let Some(from_id) = self.ids.get(from).copied() else {
            return Err(ConsensusError::NotAMember {
                from: from.to_owned(),
            });
        };
        let message = message.to_raft(from_id, self.node.raft.id);
        self.node.step(message)?;
        self.pump()
    }

    /// The connection to master `peer` is lost: raft sends it less until it answers again.
    pub fn peer_lost(&mut self, peer: &str) {
        if let Some(id) = self.ids.get(peer) {
            self.node.report_unreachable(*id);
        }
    }

    /// Proposes `command` as this leader; returns the index it will have in the log.
    pub fn propose(&mut self, command: Vec<u8>) -> Result<u64, ConsensusError> {
        self.node.propose(Vec::new(), command)?;
        let index = self.node.raft.raft_log.last_index();
        self.pump()?;
        Ok(index)
    }

    /// Compacts the log up to `applied` (an index already applied) into a snapshot of the
    /// state machine, `state`, when [`GroupSettings::compact_every`] entries were applied
    /// since the last snapshot. `state` is only serialized when due.
    pub fn compact_if_due(
        &mut self,
        applied: u64,
        state: impl FnOnce() -> Result<Vec<u8>, ConsensusError>,
    ) -> Result<(), ConsensusError> {
        let since = self.node.store().snapshot_data().index;
        if applied < since + self.settings.compact_every {
            return Ok(());
        }
        let term = self.node.raft.raft_log.term(applied)?;
        let state = state()?;
        let write = self.node.mut_store().stage_compaction(applied, term, state);
        if let Some(write) = write {
            // Behind the writes queued before it: the entries it drops may still be on their
            // way to the disk.
            self.write(self.last_ready, write)?;
        }
        Ok(())
    }

    /// Makes `write`, staged for the `Ready` numbered `number` (or after it), durable: on the
    /// writer, in order with the writes before it, or at once without one.
    fn write(&mut self, number: u64, write: LogWrite) -> Result<(), LogError> {
        match self.writer.as_mut() {
            Some(writer) => writer.send(number, write),
            None => self.node.store().write_now(Some(write)),
        }
    }

    /// From now on the log is written by a thread of its own ([`LogWriter`]): `Ready`s are
    /// staged in memory and written in batches, and what depends on them waits until the
    /// caller reports them durable ([`written`](Self::written), with what
    /// [`next_written`](Self::next_written) returns). The masters' daemon runs its group this
    /// way; a simulation, which has no disk to wait for, does not.
    /// `before_batch` runs on the writer before each batch: a test's slow or stopped disk,
    /// `None` in production.
    pub fn write_behind(&mut self, before_batch: Option<BatchHook>) -> Result<(), ConsensusError> {
        if self.writer.is_none() {
            let database = self.node.store().database();
            let writer =
                LogWriter::start(database, before_batch).map_err(|error| LogError::Database {
                    what: "start the log's writer thread",
                    message: error.to_string(),
                })?;
            self.writer = Some(writer);
        }
        Ok(())
    }

    /// Waits until the writer made another batch durable: the number of the last `Ready`
    /// written, for [`written`](Self::written). Never returns without a writer.
    pub async fn next_written(&mut self) -> Result<u64, ConsensusError> {
        match self.writer.as_mut() {
            Some(writer) => {
                let mut last = writer.written().await?;
                // Batches that completed meanwhile, taken together.
                while let Some(more) = writer.try_written() {
                    last = last.max(more?);
                }
                Ok(last)
            }
            None => std::future::pending().await,
        }
    }

    /// Every `Ready` up to `number` is durable: the messages that waited for them go out,
    /// raft counts their entries as this member's, and what that commits is handed on.
    pub fn written(&mut self, number: u64) -> Result<(), ConsensusError> {
        let durable = self
            .unwritten
            .iter()
            .take_while(|unwritten| !unwritten.writes || unwritten.number <= number)
            .count();
        let durable: Vec<Unwritten> = self.unwritten.drain(..durable).collect();
        if let Some(last) = durable.last() {
            self.node.on_persist_ready(last.number);
        }
        for unwritten in durable {
            self.queue_messages(unwritten.messages);
        }
        self.pump()
    }

    /// The next message for another master.
    pub fn poll_message(&mut self) -> Option<(String, ConsensusMessage)> {
        self.outbox.pop_front()
    }

    /// The next committed entry or snapshot to apply, in log order.
    pub fn take_applied(&mut self) -> Option<Applied> {
        self.applied.pop_front()
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    /// Whether this master is the leader.
    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    /// Whether this master leads and has applied an entry of its own term: everything
    /// committed before it took over is in its state machine, so it may act on it.
    pub fn leads_with_current_state(&self) -> bool {
        let log = &self.node.raft.raft_log;
        self.is_leader() && log.term(log.applied).ok() == Some(self.node.raft.term)
    }

    /// The leader's name, if one is known.
    pub fn leader(&self) -> Option<&str> {
        self.names
            .get(&self.node.raft.leader_id)
            .map(String::as_str)
    }

    /// The last index applied.
    pub fn applied(&self) -> u64 {
        self.node.raft.raft_log.applied
    }

    /// Where this master stands, for the status.
    pub fn status(&self) -> GroupStatus {
        let raft = &self.node.raft;
        let matched = if self.is_leader() {
            raft.prs()
                .iter()
                .filter_map(|(id, progress)| {
                    self.names
                        .get(id)
                        .map(|name| (name.clone(), progress.matched))
                })
                .collect()
        } else {
            Vec::new()
        };
        GroupStatus {
            term: raft.term,
            leader: self.leader().map(str::to_owned),
            is_leader: self.is_leader(),
            applied: raft.raft_log.applied,
            commit: raft.raft_log.committed,
            last_index: raft.raft_log.last_index(),
            matched,
        }
    }

    /// Handles every `Ready` raft has, as raft-rs prescribes.
    fn pump(&mut self) -> Result<(), ConsensusError> {
        while self.node.has_ready() {
            let mut ready = self.node.ready();
            if let Some(soft) = ready.ss() {
                let leader = self
                    .names
                    .get(&soft.leader_id)
                    .map_or("none", String::as_str);
                tracing::info!(
                    role = ?soft.raft_state,
                    term = self.node.raft.term,
                    leader,
                    "raft: this master's role changed"
                );
            }
            // A leader's messages do not depend on its own log being durable.
            self.queue_messages(ready.take_messages());
            let snapshot = (!ready.snapshot().is_empty()).then(|| ready.snapshot().clone());
            if let Some(snapshot) = &snapshot {
                self.applied.push_back(Applied::Snapshot {
                    index: snapshot.get_metadata().index,
                    data: snapshot.data.clone(),
                });
            }
            let committed = ready.take_committed_entries();
            self.queue_committed(committed);
            let hard_state = ready.hs().cloned();
            self.last_ready = ready.number();
            if self.writer.is_some() {
                self.stage(ready, snapshot.as_ref(), hard_state.as_ref())?;
                continue;
            }
            self.node.mut_store().persist(
                snapshot.as_ref(),
                ready.entries(),
                hard_state.as_ref(),
            )?;
            // Votes and append answers promise what is now on disk.
            self.queue_messages(ready.take_persisted_messages());
            let mut light = self.node.advance(ready);
            self.queue_messages(light.take_messages());
            let committed = light.take_committed_entries();
            self.queue_committed(committed);
            self.node.advance_apply();
        }
        Ok(())
    }

    /// `ready` with a writer: its changes taken in memory and queued for the disk, its votes
    /// and append answers held until they are durable ([`written`](Self::written)).
    fn stage(
        &mut self,
        mut ready: raft::Ready,
        snapshot: Option<&raft::eraftpb::Snapshot>,
        hard_state: Option<&raft::eraftpb::HardState>,
    ) -> Result<(), ConsensusError> {
        let number = ready.number();
        let log = self.node.store().hard_state();
        // A hard state that only moves the commit index is written lazily, with the next
        // write (as the inline path does): a lower commit index after a crash is learned
        // again, and a write of its own would cost every batch a second fsync.
        let lazy = snapshot.is_none()
            && ready.entries().is_empty()
            && hard_state.is_some_and(|state| state.term == log.term && state.vote == log.vote);
        let write = self
            .node
            .mut_store()
            .stage(snapshot, ready.entries(), hard_state)
            .filter(|_| !lazy);
        let messages = ready.take_persisted_messages();
        // raft reads the staged entries from the log's memory from now on, and counts them
        // as this member's only once told they are durable.
        self.node.advance_append_async(ready);
        self.node.advance_apply();
        let writes = write.is_some();
        if let Some(write) = write {
            self.write(number, write)?;
        }
        if !writes && self.unwritten.is_empty() {
            // Nothing to wait for.
            self.queue_messages(messages);
            self.node.on_persist_ready(number);
        } else {
            self.unwritten.push_back(Unwritten {
                number,
                writes,
                messages,
            });
        }
        Ok(())
    }

    fn queue_messages(&mut self, messages: Vec<RaftMessage>) {
        for message in messages {
            let (Some(to), Some(wire)) = (
                self.names.get(&message.to),
                ConsensusMessage::from_raft(&message),
            ) else {
                continue;
            };
            self.outbox.push_back((to.clone(), wire));
        }
    }

    fn queue_committed(&mut self, entries: Vec<raft::eraftpb::Entry>) {
        for entry in entries {
            if entry.get_entry_type() != EntryType::EntryNormal {
                // Membership changes are not proposed yet (the group is the configured one).
                continue;
            }
            self.applied.push_back(Applied::Entry {
                index: entry.index,
                term: entry.term,
                data: entry.data,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::ConsensusKind;

    fn masters(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    /// Delivers every message between `groups` until none is left (bounded).
    fn settle(groups: &mut BTreeMap<String, Group>) {
        for _ in 0..1000 {
            let mut messages = Vec::new();
            for (name, group) in groups.iter_mut() {
                while let Some((to, message)) = group.poll_message() {
                    messages.push((name.clone(), to, message));
                }
            }
            if messages.is_empty() {
                return;
            }
            for (from, to, message) in messages {
                if let Some(group) = groups.get_mut(&to) {
                    group.step(&from, &message).expect("step");
                }
            }
        }
        panic!("the group did not settle");
    }

    #[test]
    fn a_log_of_another_group_is_refused_naming_both() {
        let now = SystemTime::UNIX_EPOCH;
        let log = RaftLog::in_memory(&[raft_id("m1")]).expect("log");
        let refused = Group::new(
            "m1",
            &masters(&["m1", "m2", "m3"]),
            log,
            GroupSettings::default(),
            now,
        );
        match refused {
            Err(ConsensusError::MembershipDiffers { log, configured }) => {
                assert_eq!(log, vec!["m1".to_owned()]);
                assert_eq!(configured, masters(&["m1", "m2", "m3"]));
            }
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_lone_master_leads_at_once_and_commits_what_it_proposes() {
        let now = SystemTime::UNIX_EPOCH;
        let log = RaftLog::in_memory(&[raft_id("m")]).expect("log");
        let mut group =
            Group::new("m", &masters(&["m"]), log, GroupSettings::default(), now).expect("group");
        assert!(group.leads_with_current_state());
        while group.take_applied().is_some() {}
        let index = group.propose(b"hello".to_vec()).expect("propose");
        assert_eq!(
            group.take_applied(),
            Some(Applied::Entry {
                index,
                term: group.term(),
                data: Bytes::from_static(b"hello")
            })
        );
    }

    /// The group of masters `names`, each on the log `log` gives it, run on a virtual
    /// clock until one leads: different, fixed election timeouts make it the first named.
    fn elected(names: &[&str], log: impl Fn(&str, &[u64]) -> RaftLog) -> BTreeMap<String, Group> {
        let names = masters(names);
        let ids: Vec<u64> = names.iter().map(|name| raft_id(name)).collect();
        let mut now = SystemTime::UNIX_EPOCH;
        let mut groups: BTreeMap<String, Group> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let settings = GroupSettings {
                    election_ticks: 10 + 3 * i,
                    max_election_ticks: 11 + 3 * i,
                    ..GroupSettings::default()
                };
                let group =
                    Group::new(name, &names, log(name, &ids), settings, now).expect("group");
                (name.clone(), group)
            })
            .collect();
        for _ in 0..100 {
            now += Duration::from_millis(50);
            for group in groups.values_mut() {
                group.tick(now).expect("tick");
            }
            settle(&mut groups);
            if groups.values().any(Group::leads_with_current_state) {
                break;
            }
        }
        groups
    }

    #[test]
    fn three_masters_elect_one_leader_and_replicate_its_commands() {
        let mut groups = elected(&["m1", "m2", "m3"], |_, ids| {
            RaftLog::in_memory(ids).expect("log")
        });
        let leaders: Vec<&str> = groups
            .values()
            .filter(|group| group.is_leader())
            .map(Group::name)
            .collect();
        assert_eq!(leaders, ["m1"], "the shortest election timeout wins");
        let leader = groups.get_mut("m1").expect("m1");
        leader.propose(b"c".to_vec()).expect("propose");
        settle(&mut groups);
        for group in groups.values_mut() {
            let commands: Vec<Bytes> = std::iter::from_fn(|| group.take_applied())
                .filter_map(|applied| match applied {
                    Applied::Entry { data, .. } if !data.is_empty() => Some(data),
                    _ => None,
                })
                .collect();
            assert_eq!(commands, [Bytes::from_static(b"c")], "{}", group.name());
            assert_eq!(group.leader(), Some("m1"));
        }
    }

    /// Runs `future` to completion on a runtime of its own (the writer's completions come
    /// through tokio's channel).
    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    fn commands(group: &mut Group) -> Vec<Bytes> {
        std::iter::from_fn(|| group.take_applied())
            .filter_map(|applied| match applied {
                Applied::Entry { data, .. } if !data.is_empty() => Some(data),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_master_writing_behind_commits_only_once_its_writer_made_the_entries_durable() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("m.log");
        let now = SystemTime::UNIX_EPOCH;
        let log = RaftLog::open(&path, &[raft_id("m")]).expect("log");
        let mut group =
            Group::new("m", &masters(&["m"]), log, GroupSettings::default(), now).expect("group");
        group.write_behind(None).expect("writer");
        commands(&mut group);
        for command in [b"a", b"b", b"c"] {
            group.propose(command.to_vec()).expect("propose");
        }
        assert!(
            commands(&mut group).is_empty(),
            "nothing commits before the writer said it is on disk"
        );
        let mut applied = Vec::new();
        for _ in 0..10 {
            let written = block_on(group.next_written()).expect("written");
            group.written(written).expect("taken");
            applied.extend(commands(&mut group));
            if applied.len() == 3 {
                break;
            }
        }
        assert_eq!(applied, [b"a".as_slice(), b"b", b"c"]);
        let last = group.status().last_index;
        drop(group);
        // Dropping the group joined its writer: the file opens again, with the entries.
        let log = RaftLog::open(&path, &[raft_id("m")]).expect("reopen");
        assert_eq!(log.last(), last);
    }

    #[test]
    fn a_follower_writing_behind_answers_an_append_only_once_it_is_durable() {
        let dir = tempfile::tempdir().expect("dir");
        let mut groups = elected(&["m1", "m2"], |name, ids| {
            RaftLog::open(dir.path().join(format!("{name}.log")), ids).expect("log")
        });
        assert!(groups["m1"].leads_with_current_state());
        let mut follower = groups.remove("m2").expect("m2");
        let mut leader = groups.remove("m1").expect("m1");
        follower.write_behind(None).expect("writer");
        leader.propose(b"c".to_vec()).expect("propose");
        let appends: Vec<ConsensusMessage> = std::iter::from_fn(|| leader.poll_message())
            .map(|(to, message)| {
                assert_eq!(to, "m2");
                message
            })
            .collect();
        assert!(
            appends
                .iter()
                .any(|message| message.kind == ConsensusKind::Append)
        );
        for message in &appends {
            follower.step("m1", message).expect("step");
        }
        assert!(
            follower.poll_message().is_none(),
            "no answer promises entries before they are on disk"
        );
        let written = block_on(follower.next_written()).expect("written");
        follower.written(written).expect("taken");
        let answers: Vec<ConsensusKind> = std::iter::from_fn(|| follower.poll_message())
            .map(|(_, message)| message.kind)
            .collect();
        assert!(
            answers.contains(&ConsensusKind::AppendResponse),
            "{answers:?}"
        );
    }
}
