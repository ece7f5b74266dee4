//! [`RaftLog`]: the masters' replicated log on redb, as raft-rs' [`Storage`](raft::Storage).
//!
//! One redb file per master holds the log entries, raft's hard state (term, vote, commit) and
//! the latest snapshot of the state machine. Everything raft reads is also kept in memory
//! (the entries since the last snapshot, a bounded number since the log is compacted), so the
//! trait's reads never touch the disk. A [`Ready`](raft::Ready) is taken in memory and
//! written to redb in one durable transaction, either within the call ([`RaftLog::persist`])
//! or, for a master that writes behind, later on a [`LogWriter`](super::LogWriter) thread,
//! together with the `Ready`s staged meanwhile (`RaftLog::stage`). A master killed at any
//! point restarts from what its last transaction made durable, which is what raft requires:
//! nothing is sent that depends on an entry or a vote before it is on disk (the
//! [`Group`](super::Group) holds it until then).

use std::path::Path;
use std::sync::Arc;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use redb::{Database, Durability, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use super::error::LogError;
use super::group::raft_id;
use super::wire::{LogEntry, Membership, SnapshotData};

/// Log entries: index -> postcard [`LogEntry`].
const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_entries");
/// Raft's state: key -> postcard value ([`HARD_STATE`], [`SNAPSHOT`]).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const HARD_STATE: &str = "hard_state";
const SNAPSHOT: &str = "snapshot";
/// The members' names (raft knows only their ids), for messages to an operator.
const MEMBER_NAMES: &str = "member_names";
/// The version of the encoding of the state the entries and snapshots hold (the log's user
/// chooses it; see [`RaftLog::state_format`]).
const STATE_FORMAT: &str = "state_format";

/// Raft's hard state as stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct StoredHardState {
    term: u64,
    vote: u64,
    commit: u64,
}

/// The replicated log of one master; see the documentation of `consensus/log.rs`.
pub struct RaftLog {
    db: Arc<Database>,
    hard_state: HardState,
    /// The latest snapshot (index 0 and no data before the first compaction; its membership
    /// is the group's initial one then).
    snapshot: SnapshotData,
    /// The entries after the snapshot, in index order.
    entries: Vec<Entry>,
    /// The members' names, where recorded.
    member_names: Vec<String>,
}

impl std::fmt::Debug for RaftLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftLog")
            .field("term", &self.hard_state.term)
            .field("commit", &self.hard_state.commit)
            .field("snapshot", &self.snapshot.index)
            .field("entries", &self.entries.len())
            .finish()
    }
}

fn db(what: &'static str) -> impl Fn(redb::Error) -> LogError {
    move |error| LogError::Database {
        what,
        message: error.to_string(),
    }
}

fn db_err<E: Into<redb::Error>>(what: &'static str) -> impl Fn(E) -> LogError {
    move |error| db(what)(error.into())
}

fn decode<T: for<'a> Deserialize<'a>>(what: &'static str, bytes: &[u8]) -> Result<T, LogError> {
    postcard::from_bytes(bytes).map_err(|source| LogError::Corrupt { what, source })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Our own plain types: serializing into a Vec cannot fail.
    postcard::to_stdvec(value).unwrap_or_default()
}

impl RaftLog {
    /// Opens the log at `path`, creating the file if missing. A new log starts with
    /// `voters` (raft ids) as the group; an existing one keeps its own membership.
    pub fn open(path: impl AsRef<Path>, voters: &[u64]) -> Result<Self, LogError> {
        let path = path.as_ref();
        let db = Database::create(path).map_err(|error| LogError::Open {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        Self::load(db, voters)
    }

    /// A log in memory (lost when dropped): for a master that need not survive its process,
    /// as in tests and the benchmark's clusters.
    pub fn in_memory(voters: &[u64]) -> Result<Self, LogError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(db_err("create the in-memory log"))?;
        Self::load(db, voters)
    }

    fn load(db: Database, voters: &[u64]) -> Result<Self, LogError> {
        let mut txn = db.begin_write().map_err(db_err("begin"))?;
        txn.set_durability(Durability::Immediate)
            .map_err(db_err("set durability"))?;
        txn.open_table(ENTRIES).map_err(db_err("open entries"))?;
        txn.open_table(META).map_err(db_err("open meta"))?;
        txn.commit().map_err(db_err("create tables"))?;
        let read = db.begin_read().map_err(db_err("begin read"))?;
        let meta = read.open_table(META).map_err(db_err("open meta"))?;
        let stored: StoredHardState = match meta.get(HARD_STATE).map_err(db_err("read"))? {
            Some(value) => decode("hard state", value.value())?,
            None => StoredHardState::default(),
        };
        let stored_snapshot: Option<SnapshotData> =
            match meta.get(SNAPSHOT).map_err(db_err("read"))? {
                Some(value) => Some(decode("snapshot", value.value())?),
                None => None,
            };
        let initial = stored_snapshot.is_none();
        let snapshot = stored_snapshot.unwrap_or_else(|| SnapshotData {
            membership: Membership {
                voters: voters.to_vec(),
                ..Membership::default()
            },
            ..SnapshotData::default()
        });
        let member_names: Vec<String> = match meta.get(MEMBER_NAMES).map_err(db_err("read"))? {
            Some(value) => decode("member names", value.value())?,
            None => Vec::new(),
        };
        let table = read.open_table(ENTRIES).map_err(db_err("open entries"))?;
        let mut entries = Vec::new();
        for row in table
            .range(snapshot.index + 1..)
            .map_err(db_err("scan entries"))?
        {
            let (index, value) = row.map_err(db_err("read entry"))?;
            let entry: LogEntry = decode("log entry", value.value())?;
            let expected = snapshot.index + 1 + entries.len() as u64;
            if index.value() != expected || entry.index != expected {
                return Err(LogError::Gap {
                    expected,
                    found: index.value(),
                });
            }
            entries.push(entry.to_raft());
        }
        drop(table);
        drop(meta);
        drop(read);
        let hard_state = HardState {
            term: stored.term,
            vote: stored.vote,
            // The commit index is written with the hard state, lazily; a snapshot is committed.
            commit: stored.commit.max(snapshot.index),
            ..HardState::default()
        };
        let log = Self {
            db: Arc::new(db),
            hard_state,
            snapshot,
            entries,
            member_names,
        };
        if initial {
            // The membership is fixed when the log is created (or first opened by a version
            // that did not store it): from then on the configuration cannot change the group
            // behind raft's back, only `set_voters`, on purpose.
            log.write_meta(&[(SNAPSHOT, encode(&log.snapshot))])?;
        }
        Ok(log)
    }

    /// Makes the masters named `names` the group's members, durably: for an operator who
    /// changes the masters of a stopped group (every member starting from a copy of one log;
    /// see docs/DEPLOY.md), never for a running one, whose members raft alone may change.
    pub fn set_members(&mut self, names: &[String]) -> Result<(), LogError> {
        let names = sorted_names(names);
        let mut voters: Vec<u64> = names.iter().map(|name| raft_id(name)).collect();
        voters.sort_unstable();
        self.snapshot.membership = Membership {
            voters,
            ..Membership::default()
        };
        self.write_meta(&[
            (SNAPSHOT, encode(&self.snapshot)),
            (MEMBER_NAMES, encode(&names)),
        ])?;
        self.member_names = names;
        Ok(())
    }

    /// Records the members' names (raft ids are hashes of them), for an operator's messages;
    /// writes only when they changed.
    pub fn record_names(&mut self, names: &[String]) -> Result<(), LogError> {
        let names = sorted_names(names);
        if names != self.member_names {
            self.write_meta(&[(MEMBER_NAMES, encode(&names))])?;
            self.member_names = names;
        }
        Ok(())
    }

    /// The version of the encoding of the entries' and snapshots' contents, as recorded
    /// with [`set_state_format`](Self::set_state_format) (`None`: never recorded).
    pub fn state_format(&self) -> Result<Option<u32>, LogError> {
        let read = self.db.begin_read().map_err(db_err("begin read"))?;
        let meta = read.open_table(META).map_err(db_err("open meta"))?;
        match meta.get(STATE_FORMAT).map_err(db_err("read"))? {
            Some(value) => Ok(Some(decode("state format", value.value())?)),
            None => Ok(None),
        }
    }

    /// Records the version of the encoding of the entries' and snapshots' contents.
    pub fn set_state_format(&mut self, format: u32) -> Result<(), LogError> {
        self.write_meta(&[(STATE_FORMAT, encode(&format))])
    }

    /// The members' names as recorded (empty when never recorded).
    pub fn member_names(&self) -> &[String] {
        &self.member_names
    }

    /// The name of member `id` as recorded, if it was.
    pub fn name_of(&self, id: u64) -> Option<&str> {
        self.member_names
            .iter()
            .find(|name| raft_id(name) == id)
            .map(String::as_str)
    }

    /// Writes `values` (key, encoded value) into the meta table in one durable transaction.
    fn write_meta(&self, values: &[(&str, Vec<u8>)]) -> Result<(), LogError> {
        let mut txn = self.db.begin_write().map_err(db_err("begin"))?;
        txn.set_durability(Durability::Immediate)
            .map_err(db_err("set durability"))?;
        {
            let mut meta = txn.open_table(META).map_err(db_err("open meta"))?;
            for (key, value) in values {
                meta.insert(*key, value.as_slice())
                    .map_err(db_err("write meta"))?;
            }
        }
        txn.commit().map_err(db_err("commit meta"))
    }

    /// The term of the last entry (the snapshot's when no entry follows it): with
    /// [`last`](Self::last), how up to date this log is (raft compares the term first).
    pub fn last_term(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot.term, |entry| entry.term)
    }

    /// The term raft last stored (the latest it took part in).
    pub fn current_term(&self) -> u64 {
        self.hard_state.term
    }

    /// Whether nothing was ever written (a new group).
    pub fn is_new(&self) -> bool {
        self.hard_state.term == 0 && self.entries.is_empty() && self.snapshot.index == 0
    }

    /// The latest snapshot (index 0 before the first compaction).
    pub fn snapshot_data(&self) -> &SnapshotData {
        &self.snapshot
    }

    /// The commit index as stored.
    pub fn commit(&self) -> u64 {
        self.hard_state.commit
    }

    /// The current membership: the snapshot's.
    pub fn membership(&self) -> &Membership {
        &self.snapshot.membership
    }

    /// The index of the last entry.
    pub fn last(&self) -> u64 {
        self.snapshot.index + self.entries.len() as u64
    }

    /// Makes `entries` (which may replace a suffix of the log), `hard_state` and `snapshot`
    /// durable in one transaction, and takes them in memory. A snapshot replaces every entry
    /// it covers.
    pub fn persist(
        &mut self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), LogError> {
        let write = self.stage(snapshot, entries, hard_state);
        self.write_now(write)
    }

    /// Makes `write` (staged here, if any) durable within the call.
    pub(crate) fn write_now(&self, write: Option<LogWrite>) -> Result<(), LogError> {
        match write {
            Some(write) => write_durably(&self.db, std::slice::from_ref(&write)),
            None => Ok(()),
        }
    }

    /// Takes `entries`, `hard_state` and `snapshot` in memory at once (raft then reads them
    /// from here) and returns the write that makes them durable (`None`: nothing to write),
    /// for [`write_durably`] to run, in order with the writes staged before it. Nothing that
    /// depends on them may be sent before it ran (see [`Group`](super::Group)).
    pub(crate) fn stage(
        &mut self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Option<LogWrite> {
        if snapshot.is_none() && entries.is_empty() && hard_state.is_none() {
            return None;
        }
        let snapshot = snapshot.map(SnapshotData::from_raft);
        // A snapshot whose last entry is ours keeps the entries after it (a compaction);
        // another one (received from the leader) replaces the whole log.
        let consistent = snapshot.as_ref().is_some_and(|snapshot| {
            snapshot.index == self.snapshot.index
                || self
                    .entry(snapshot.index)
                    .is_some_and(|entry| entry.term == snapshot.term)
        });
        let write = LogWrite {
            snapshot: snapshot
                .as_ref()
                .map(|snapshot| (snapshot.index, encode(snapshot))),
            consistent,
            first: entries.first().map(|entry| entry.index),
            entries: entries
                .iter()
                .map(|entry| (entry.index, encode(&LogEntry::from_raft(entry))))
                .collect(),
            hard_state: hard_state.map(|state| {
                encode(&StoredHardState {
                    term: state.term,
                    vote: state.vote,
                    commit: state.commit,
                })
            }),
        };
        if let Some(snapshot) = snapshot {
            let covered = usize::try_from(snapshot.index.saturating_sub(self.snapshot.index))
                .unwrap_or(usize::MAX);
            if consistent {
                self.entries.drain(..covered.min(self.entries.len()));
            } else {
                self.entries.clear();
            }
            self.hard_state.commit = self.hard_state.commit.max(snapshot.index);
            self.hard_state.term = self.hard_state.term.max(snapshot.term);
            self.snapshot = snapshot;
        }
        if let Some(first) = entries.first() {
            let keep = usize::try_from(first.index.saturating_sub(self.snapshot.index + 1))
                .unwrap_or(usize::MAX);
            self.entries.truncate(keep);
            self.entries.extend_from_slice(entries);
        }
        if let Some(state) = hard_state {
            self.hard_state = state.clone();
        }
        Some(write)
    }

    /// raft's hard state as this log holds it in memory.
    pub(crate) fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The database, for a [`LogWriter`](super::LogWriter) that runs the staged writes on a
    /// thread of its own.
    pub(crate) fn database(&self) -> Arc<Database> {
        self.db.clone()
    }

    /// Replaces the entries up to `index` (applied, of term `term`) with a snapshot of the
    /// state machine, `data`.
    pub fn compact(&mut self, index: u64, term: u64, data: Vec<u8>) -> Result<(), LogError> {
        let write = self.stage_compaction(index, term, data);
        self.write_now(write)
    }

    /// [`compact`](Self::compact) in memory, returning the write that makes it durable, for
    /// a log whose writes run on a [`LogWriter`](super::LogWriter) (in order with the writes
    /// staged before it, which may still be on their way to the disk).
    pub(crate) fn stage_compaction(
        &mut self,
        index: u64,
        term: u64,
        data: Vec<u8>,
    ) -> Option<LogWrite> {
        if index <= self.snapshot.index || index > self.last() {
            return None;
        }
        let snapshot = SnapshotData {
            index,
            term,
            membership: self.snapshot.membership.clone(),
            data: data.into(),
        };
        self.stage(Some(&snapshot.to_raft()), &[], None)
    }

    fn entry(&self, index: u64) -> Option<&Entry> {
        let offset = index.checked_sub(self.snapshot.index + 1)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }
}

/// What one staged change of the log writes to redb: its encoded snapshot, entries and hard
/// state (see [`RaftLog::stage`]).
#[derive(Debug)]
pub(crate) struct LogWrite {
    /// The snapshot's index and encoding.
    snapshot: Option<(u64, Vec<u8>)>,
    /// Whether the snapshot keeps the entries after it (a compaction, or one that agrees
    /// with this log), or replaces the whole log.
    consistent: bool,
    /// The index of the first entry, from which every stored entry is replaced.
    first: Option<u64>,
    entries: Vec<(u64, Vec<u8>)>,
    hard_state: Option<Vec<u8>>,
}

/// Runs `writes` in order in one durable redb transaction: one fsync however many there are.
pub(crate) fn write_durably(db: &Database, writes: &[LogWrite]) -> Result<(), LogError> {
    let mut txn = db.begin_write().map_err(db_err("begin"))?;
    txn.set_durability(Durability::Immediate)
        .map_err(db_err("set durability"))?;
    {
        let mut table = txn.open_table(ENTRIES).map_err(db_err("open entries"))?;
        let mut meta = txn.open_table(META).map_err(db_err("open meta"))?;
        for write in writes {
            if let Some((index, snapshot)) = &write.snapshot {
                if write.consistent {
                    table
                        .retain_in(..=*index, |_, _| false)
                        .map_err(db_err("drop covered entries"))?;
                } else {
                    table
                        .retain(|_, _| false)
                        .map_err(db_err("drop the entries"))?;
                }
                meta.insert(SNAPSHOT, snapshot.as_slice())
                    .map_err(db_err("write snapshot"))?;
            }
            if let Some(first) = write.first {
                table
                    .retain_in(first.., |_, _| false)
                    .map_err(db_err("truncate entries"))?;
                for (index, entry) in &write.entries {
                    table
                        .insert(*index, entry.as_slice())
                        .map_err(db_err("write entry"))?;
                }
            }
            if let Some(state) = &write.hard_state {
                meta.insert(HARD_STATE, state.as_slice())
                    .map_err(db_err("write hard state"))?;
            }
        }
    }
    txn.commit().map_err(db_err("commit"))
}

/// `names` sorted, each once: how the log keeps them.
fn sorted_names(names: &[String]) -> Vec<String> {
    let mut names = names.to_vec();
    names.sort();
    names.dedup();
    names
}

impl raft::Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let conf_state: ConfState = self.snapshot.membership.to_raft();
        Ok(RaftState::new(self.hard_state.clone(), conf_state))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.snapshot.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut out = Vec::new();
        let mut size = 0u64;
        for index in low..high {
            let Some(entry) = self.entry(index) else {
                return Err(raft::Error::Store(StorageError::Unavailable));
            };
            size += (entry.data.len() + entry.context.len() + 24) as u64;
            // At least one entry, as raft requires.
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index == self.snapshot.index {
            return Ok(self.snapshot.term);
        }
        if index < self.snapshot.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.entry(index)
            .map(|entry| entry.term)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snapshot.index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot.index == 0 || self.snapshot.index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.to_raft())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage as _;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        LogEntry {
            kind: super::super::wire::EntryKind::Normal,
            term,
            index,
            data: data.to_vec().into(),
            context: Default::default(),
        }
        .to_raft()
    }

    #[test]
    fn the_members_are_fixed_at_creation_and_changed_only_on_purpose() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.redb");
        {
            let mut log = RaftLog::open(&path, &[raft_id("m1")]).expect("open");
            log.persist(None, &[entry(1, 1, b"a")], None)
                .expect("persist");
            assert_eq!((log.last(), log.last_term()), (1, 1));
        }
        // A configuration listing other masters does not change the group behind raft's back.
        let mut log = RaftLog::open(&path, &[1, 2, 3]).expect("reopen");
        assert_eq!(log.membership().voters, vec![raft_id("m1")]);
        let names: Vec<String> = ["m3", "m1", "m2", "m2"].map(String::from).to_vec();
        log.set_members(&names).expect("set");
        drop(log);
        let log = RaftLog::open(&path, &[1]).expect("reopen");
        let mut ids: Vec<u64> = ["m1", "m2", "m3"].map(raft_id).to_vec();
        ids.sort_unstable();
        assert_eq!(log.membership().voters, ids);
        assert_eq!(log.member_names(), ["m1", "m2", "m3"]);
        assert_eq!(log.name_of(raft_id("m2")), Some("m2"));
        assert_eq!((log.last(), log.last_term()), (1, 1), "the entries stay");
    }

    #[test]
    fn entries_hard_state_and_snapshot_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.redb");
        {
            let mut log = RaftLog::open(&path, &[1, 2, 3]).expect("open");
            assert!(log.is_new());
            let state = HardState {
                term: 2,
                vote: 3,
                commit: 2,
                ..HardState::default()
            };
            let entries: Vec<Entry> = (1..=4).map(|i| entry(i, 1, &[i as u8])).collect();
            log.persist(None, &entries, Some(&state)).expect("persist");
            // A new leader overwrites the suffix from 3 on.
            log.persist(None, &[entry(3, 2, b"x")], None)
                .expect("overwrite");
            assert_eq!(log.last(), 3);
            log.compact(2, 1, b"state".to_vec()).expect("compact");
        }
        let log = RaftLog::open(&path, &[9]).expect("reopen");
        assert!(!log.is_new());
        let state = log.initial_state().expect("state");
        assert_eq!(
            (
                state.hard_state.term,
                state.hard_state.vote,
                state.hard_state.commit
            ),
            (2, 3, 2)
        );
        assert_eq!(
            state.conf_state.voters,
            [1, 2, 3],
            "the stored membership wins"
        );
        assert_eq!(log.first_index().expect("first"), 3);
        assert_eq!(log.last_index().expect("last"), 3);
        assert_eq!(log.term(2).expect("snapshot term"), 1);
        assert_eq!(log.term(3).expect("term"), 2);
        assert!(log.term(1).is_err(), "compacted");
        let got = log
            .entries(3, 4, None, GetEntriesContext::empty(false))
            .expect("entries");
        assert_eq!(&got[0].data[..], b"x");
        let snapshot = log.snapshot(0, 2).expect("a snapshot");
        assert_eq!(&snapshot.data[..], b"state");
        assert_eq!(snapshot.get_metadata().index, 2);
    }

    #[test]
    fn a_received_snapshot_replaces_the_entries_it_covers() {
        let mut log = RaftLog::in_memory(&[1]).expect("log");
        let entries: Vec<Entry> = (1..=3).map(|i| entry(i, 1, b"e")).collect();
        log.persist(None, &entries, None).expect("persist");
        let snapshot = SnapshotData {
            index: 10,
            term: 4,
            membership: Membership {
                voters: vec![1, 2],
                ..Membership::default()
            },
            data: b"s".to_vec().into(),
        };
        log.persist(Some(&snapshot.to_raft()), &[], None)
            .expect("snapshot");
        assert_eq!(log.first_index().expect("first"), 11);
        assert_eq!(log.last_index().expect("last"), 10);
        assert_eq!(log.commit(), 10);
        assert_eq!(log.membership().voters, [1, 2]);
    }
}
