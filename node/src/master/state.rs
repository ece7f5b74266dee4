//! The masters' replicated state: what every master holds the same, applied from the log.
//!
//! It is what the cluster must not lose when a master dies: the partition table (with its
//! version), the next object id to hand out, the last commit TID, the commit decisions until
//! every voter has them (and the latest ones after that, for clients and storages that ask
//! after a failover), the replication rounds in progress and where each storage listens.
//! What can be rebuilt (links, open transactions, reports) is the primary's volatile state.
//!
//! The primary changes its working copy as it handles messages, then proposes the change to
//! the group as one [`Update`] (only the fields that changed); every master, the primary
//! included, applies committed updates to its copy of the committed state with
//! [`ReplicatedState::apply`]. Updates assign values rather than describe operations, so
//! applying one is trivial and cannot diverge from what the primary computed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::ids::{Oid, Tid};
use crate::partition::{NodeName, PartitionTable};

/// The version of the encoding of [`ReplicatedState`] and [`Update`] in the masters' log
/// (postcard, which has no optional fields: any change of these types, or of a type they
/// hold, changes what an older log decodes to). Bump it with every such change; a master
/// refuses a log of another version at start, naming both, rather than misread it.
///
/// ```
/// // A log written by this build records the version; `replicast master-log show` prints it.
/// assert!(replicast_node::master::state::STATE_FORMAT >= 2);
/// ```
pub const STATE_FORMAT: u32 = 2;

/// How many completed decisions the state keeps after every voter acknowledged them: a
/// client whose finish was in flight when the primary died asks the next one, seconds later.
pub const RECENT_DECISIONS: usize = 65_536;

/// A commit decided: its TID and the voters that have not acknowledged it yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The commit TID.
    pub tid: Tid,
    /// The client that asked for the finish.
    pub client: NodeName,
    /// Voters that have not acknowledged the commit.
    pub pending: BTreeSet<NodeName>,
    /// The objects it wrote: a primary that resumes the decision after a failover tells the
    /// other clients which objects to invalidate, as the primary that decided it would have.
    pub oids: Vec<Oid>,
}

/// The replicated state; see the [module documentation](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicatedState {
    /// Whether a primary wrote the initial state (the table from its configuration): until
    /// then the state is only the local configuration's, which nobody acts on.
    pub initialized: bool,
    /// The partition table.
    pub table: PartitionTable,
    /// The next object id to hand out; every id below it was handed out.
    pub next_oid: u64,
    /// The greatest commit TID decided.
    pub last_tid: Tid,
    /// The TID of the last finish completed (every voter acknowledged or went out of date):
    /// the bound of the next replication round.
    pub last_committed: Tid,
    /// Decisions some voter has not acknowledged, by TTID.
    pub decisions: BTreeMap<Tid, Decision>,
    /// The latest completed decisions, `(ttid, tid)`, oldest first.
    pub recent: VecDeque<(Tid, Tid)>,
    /// The bound each feeding cell was told to replicate up to.
    pub bounds: BTreeMap<(u32, NodeName), Tid>,
    /// For cells that went out of date: the last TID up to which they hold everything.
    pub complete_to: BTreeMap<(u32, NodeName), Tid>,
    /// Where each storage said it accepts connections.
    pub storage_addresses: BTreeMap<NodeName, SocketAddr>,
}

/// A change of the replicated state, proposed by the primary: the fields that changed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Update {
    /// The state is initialized (set with its first table).
    pub initialized: bool,
    /// The new table.
    pub table: Option<PartitionTable>,
    /// The new next object id.
    pub next_oid: Option<u64>,
    /// The new bound of replication.
    pub last_committed: Option<Tid>,
    /// New decisions.
    pub decided: Vec<(Tid, Decision)>,
    /// Voters that acknowledged a decision (or no longer need to).
    pub acked: Vec<(Tid, Vec<NodeName>)>,
    /// The new replication bounds.
    pub bounds: Option<BTreeMap<(u32, NodeName), Tid>>,
    /// The new completeness of out-of-date cells.
    pub complete_to: Option<BTreeMap<(u32, NodeName), Tid>>,
    /// The new storage addresses.
    pub storage_addresses: Option<BTreeMap<NodeName, SocketAddr>>,
}

impl Update {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether it only records that finishes completed (acknowledgements, the replication
    /// bound): nothing anyone is told depends on it, and a primary that dies before it is in
    /// the log only makes its successor finish those decisions again. Such an update may wait
    /// for the next one.
    pub fn is_bookkeeping(&self) -> bool {
        let Self {
            acked,
            last_committed,
            ..
        } = self;
        Self {
            acked: Vec::new(),
            last_committed: None,
            ..self.clone()
        }
        .is_empty()
            && (!acked.is_empty() || last_committed.is_some())
    }
}

impl ReplicatedState {
    /// The state a group starts from: `table`, object ids from `first_oid`, nothing decided;
    /// not [initialized](Self::initialized).
    pub fn new(table: PartitionTable, first_oid: u64) -> Self {
        Self {
            initialized: false,
            table,
            next_oid: first_oid,
            last_tid: Tid::ZERO,
            last_committed: Tid::ZERO,
            decisions: BTreeMap::new(),
            recent: VecDeque::new(),
            bounds: BTreeMap::new(),
            complete_to: BTreeMap::new(),
            storage_addresses: BTreeMap::new(),
        }
    }

    /// Applies a committed update.
    pub fn apply(&mut self, update: Update) {
        self.initialized |= update.initialized;
        if let Some(table) = update.table {
            self.table = table;
        }
        if let Some(next_oid) = update.next_oid {
            self.next_oid = next_oid;
        }
        if let Some(last_committed) = update.last_committed {
            self.last_committed = last_committed;
        }
        for (ttid, decision) in update.decided {
            self.decide(ttid, decision);
        }
        for (ttid, nodes) in update.acked {
            self.ack(ttid, &nodes);
        }
        if let Some(bounds) = update.bounds {
            self.bounds = bounds;
        }
        if let Some(complete_to) = update.complete_to {
            self.complete_to = complete_to;
        }
        if let Some(addresses) = update.storage_addresses {
            self.storage_addresses = addresses;
        }
    }

    /// Records a decision (also on the primary's working copy).
    pub fn decide(&mut self, ttid: Tid, decision: Decision) {
        self.last_tid = self.last_tid.max(decision.tid);
        if decision.pending.is_empty() {
            self.remember(ttid, decision.tid);
        } else {
            self.decisions.insert(ttid, decision);
        }
    }

    /// `nodes` acknowledged decision `ttid` (or no longer need it); once none is left, the
    /// decision is only remembered among the recent ones.
    pub fn ack(&mut self, ttid: Tid, nodes: &[NodeName]) {
        let Some(decision) = self.decisions.get_mut(&ttid) else {
            return;
        };
        for node in nodes {
            decision.pending.remove(node);
        }
        if decision.pending.is_empty() {
            let tid = decision.tid;
            self.decisions.remove(&ttid);
            self.remember(ttid, tid);
        }
    }

    fn remember(&mut self, ttid: Tid, tid: Tid) {
        self.recent.push_back((ttid, tid));
        while self.recent.len() > RECENT_DECISIONS {
            self.recent.pop_front();
        }
    }

    /// The commit TID of `ttid`, if it is decided (pending or recent).
    pub fn committed_tid(&self, ttid: Tid) -> Option<Tid> {
        if let Some(decision) = self.decisions.get(&ttid) {
            return Some(decision.tid);
        }
        // Recent decisions are in TID order, and a TTID is below its TID: scan from the end,
        // where a question after a failover finds it.
        self.recent
            .iter()
            .rev()
            .find(|(recent, _)| *recent == ttid)
            .map(|(_, tid)| *tid)
    }

    /// What changed from `before` to `self`, with the decisions and acknowledgements that
    /// `journal` recorded (they are not compared: the recent decisions are many).
    pub fn diff(&self, before: &Self, journal: Journal) -> Update {
        Update {
            initialized: self.initialized && !before.initialized,
            table: (self.table.version() != before.table.version()
                || self.table.storages() != before.table.storages())
            .then(|| self.table.clone()),
            next_oid: (self.next_oid != before.next_oid).then_some(self.next_oid),
            last_committed: (self.last_committed != before.last_committed)
                .then_some(self.last_committed),
            decided: journal.decided,
            acked: journal.acked,
            bounds: (self.bounds != before.bounds).then(|| self.bounds.clone()),
            complete_to: (self.complete_to != before.complete_to).then(|| self.complete_to.clone()),
            storage_addresses: (self.storage_addresses != before.storage_addresses)
                .then(|| self.storage_addresses.clone()),
        }
    }
}

/// Decisions and acknowledgements made on the primary's working copy since the last proposal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Journal {
    /// New decisions.
    pub decided: Vec<(Tid, Decision)>,
    /// Acknowledgements.
    pub acked: Vec<(Tid, Vec<NodeName>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ReplicatedState {
        let table = PartitionTable::new(4, 2, &["s1".into(), "s2".into()]).expect("table");
        ReplicatedState::new(table, 1)
    }

    #[test]
    fn a_diff_applied_to_the_old_state_gives_the_new_one() {
        let before = state();
        let mut after = before.clone();
        let mut journal = Journal::default();
        after.table.mark_out_of_date("s2").expect("mark");
        after.next_oid = 100;
        let decision = Decision {
            tid: Tid(50),
            client: "c1".into(),
            pending: ["s1".to_owned(), "s2".to_owned()].into(),
            oids: vec![Oid(7)],
        };
        after.decide(Tid(10), decision.clone());
        journal.decided.push((Tid(10), decision));
        after.ack(Tid(10), &["s1".to_owned()]);
        journal.acked.push((Tid(10), vec!["s1".to_owned()]));
        after
            .storage_addresses
            .insert("s1".into(), "127.0.0.1:1".parse().expect("address"));
        let update = after.diff(&before, journal);
        let mut replayed = before.clone();
        replayed.apply(
            postcard::from_bytes(&postcard::to_stdvec(&update).expect("encode")).expect("decode"),
        );
        assert_eq!(replayed, after);
        assert_eq!(replayed.committed_tid(Tid(10)), Some(Tid(50)));
        assert_eq!(replayed.last_tid, Tid(50));
        assert!(before.diff(&before, Journal::default()).is_empty());
    }

    #[test]
    fn acknowledged_decisions_stay_among_the_recent_ones() {
        let mut state = state();
        state.decide(
            Tid(1),
            Decision {
                tid: Tid(2),
                client: "c1".into(),
                pending: ["s1".to_owned()].into(),
                oids: vec![Oid(7)],
            },
        );
        state.ack(Tid(1), &["s1".to_owned()]);
        assert!(state.decisions.is_empty());
        assert_eq!(state.committed_tid(Tid(1)), Some(Tid(2)));
        assert_eq!(state.committed_tid(Tid(3)), None);
    }
}
