//! Raft's messages as this project sends them: our own serde types, encoded with postcard like
//! every other message and decoded totally, mapped to and from raft-rs' `eraftpb` types.
//!
//! raft-rs defines its messages in protobuf; its rust-protobuf decoder is not trusted with
//! bytes from the network, so the bytes never reach it. The mapping keeps only what travels
//! between peers: the message kinds a peer may send (local kinds such as `MsgHup` or
//! `MsgPropose` have no variant here, so a peer cannot inject them), and never the sender or
//! the receiver, which the driver knows from the authenticated connection.

use bytes::Bytes;
use raft::eraftpb;
use serde::{Deserialize, Serialize};

/// The kinds of raft message one master sends another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsensusKind {
    /// Log entries for a follower (`MsgAppend`).
    Append,
    /// A follower's answer to an append (`MsgAppendResponse`).
    AppendResponse,
    /// A candidate asks for a vote (`MsgRequestVote`).
    RequestVote,
    /// The answer to a vote request (`MsgRequestVoteResponse`).
    RequestVoteResponse,
    /// A snapshot for a follower too far behind (`MsgSnapshot`).
    Snapshot,
    /// The leader's heartbeat (`MsgHeartbeat`).
    Heartbeat,
    /// A follower's answer to a heartbeat (`MsgHeartbeatResponse`).
    HeartbeatResponse,
    /// Start an election now, as the leader hands over (`MsgTimeoutNow`).
    TimeoutNow,
    /// A pre-vote request, which does not disturb the group (`MsgRequestPreVote`).
    RequestPreVote,
    /// The answer to a pre-vote (`MsgRequestPreVoteResponse`).
    RequestPreVoteResponse,
    /// A follower forwards a leadership transfer (`MsgTransferLeader`).
    TransferLeader,
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// A command for the state machine, or a change of the group's membership.
    pub kind: EntryKind,
    /// The term it was proposed in.
    pub term: u64,
    /// Its place in the log.
    pub index: u64,
    /// The command's bytes.
    pub data: Bytes,
    /// raft's context bytes (unused by the masters; carried for raft's own use).
    pub context: Bytes,
}

/// What an entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A command of the state machine (or an empty entry a new leader appends).
    Normal,
    /// A membership change (`ConfChange`).
    ConfChange,
    /// A membership change (`ConfChangeV2`).
    ConfChangeV2,
}

/// The group's membership as of a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The voters' raft ids.
    pub voters: Vec<u64>,
    /// The learners' raft ids.
    pub learners: Vec<u64>,
    /// Voters of the outgoing configuration, during a joint change.
    pub voters_outgoing: Vec<u64>,
    /// Learners of the next configuration, during a joint change.
    pub learners_next: Vec<u64>,
    /// Whether a joint change is left automatically.
    pub auto_leave: bool,
}

/// A snapshot of the state machine with the log position it stands for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotData {
    /// The last log index it includes.
    pub index: u64,
    /// That entry's term.
    pub term: u64,
    /// The membership then.
    pub membership: Membership,
    /// The serialized state machine.
    pub data: Bytes,
}

/// A raft message between two masters ([`Message::Consensus`](crate::protocol::Message::Consensus)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusMessage {
    /// What it is.
    pub kind: ConsensusKind,
    /// The sender's term.
    pub term: u64,
    /// The term of the entry before `entries` (or the index answered).
    pub log_term: u64,
    /// The index of the entry before `entries` (or the index answered).
    pub index: u64,
    /// Entries to append.
    pub entries: Vec<LogEntry>,
    /// The leader's commit index.
    pub commit: u64,
    /// The term of the leader's commit index.
    pub commit_term: u64,
    /// A snapshot, for [`ConsensusKind::Snapshot`].
    pub snapshot: Option<SnapshotData>,
    /// A follower asks for a snapshot at this index.
    pub request_snapshot: u64,
    /// A refusal (of an append or a vote).
    pub reject: bool,
    /// Where the follower's log may match, after a refused append.
    pub reject_hint: u64,
    /// raft's context bytes.
    pub context: Bytes,
    /// The sender's election priority.
    pub priority: i64,
}

impl ConsensusKind {
    fn to_raft(self) -> eraftpb::MessageType {
        use eraftpb::MessageType as T;
        match self {
            Self::Append => T::MsgAppend,
            Self::AppendResponse => T::MsgAppendResponse,
            Self::RequestVote => T::MsgRequestVote,
            Self::RequestVoteResponse => T::MsgRequestVoteResponse,
            Self::Snapshot => T::MsgSnapshot,
            Self::Heartbeat => T::MsgHeartbeat,
            Self::HeartbeatResponse => T::MsgHeartbeatResponse,
            Self::TimeoutNow => T::MsgTimeoutNow,
            Self::RequestPreVote => T::MsgRequestPreVote,
            Self::RequestPreVoteResponse => T::MsgRequestPreVoteResponse,
            Self::TransferLeader => T::MsgTransferLeader,
        }
    }

    /// The kind of a message raft asks to send; `None` for a local kind, which never leaves
    /// the node.
    fn from_raft(kind: eraftpb::MessageType) -> Option<Self> {
        use eraftpb::MessageType as T;
        Some(match kind {
            T::MsgAppend => Self::Append,
            T::MsgAppendResponse => Self::AppendResponse,
            T::MsgRequestVote => Self::RequestVote,
            T::MsgRequestVoteResponse => Self::RequestVoteResponse,
            T::MsgSnapshot => Self::Snapshot,
            T::MsgHeartbeat => Self::Heartbeat,
            T::MsgHeartbeatResponse => Self::HeartbeatResponse,
            T::MsgTimeoutNow => Self::TimeoutNow,
            T::MsgRequestPreVote => Self::RequestPreVote,
            T::MsgRequestPreVoteResponse => Self::RequestPreVoteResponse,
            T::MsgTransferLeader => Self::TransferLeader,
            _ => return None,
        })
    }
}

impl EntryKind {
    fn to_raft(self) -> eraftpb::EntryType {
        match self {
            Self::Normal => eraftpb::EntryType::EntryNormal,
            Self::ConfChange => eraftpb::EntryType::EntryConfChange,
            Self::ConfChangeV2 => eraftpb::EntryType::EntryConfChangeV2,
        }
    }

    fn from_raft(kind: eraftpb::EntryType) -> Self {
        match kind {
            eraftpb::EntryType::EntryNormal => Self::Normal,
            eraftpb::EntryType::EntryConfChange => Self::ConfChange,
            eraftpb::EntryType::EntryConfChangeV2 => Self::ConfChangeV2,
        }
    }
}

impl LogEntry {
    /// raft's form of the entry.
    pub fn to_raft(&self) -> eraftpb::Entry {
        let mut entry = eraftpb::Entry::default();
        entry.set_entry_type(self.kind.to_raft());
        entry.term = self.term;
        entry.index = self.index;
        entry.data = self.data.clone();
        entry.context = self.context.clone();
        entry
    }

    /// Our form of raft's entry.
    pub fn from_raft(entry: &eraftpb::Entry) -> Self {
        Self {
            kind: EntryKind::from_raft(entry.get_entry_type()),
            term: entry.term,
            index: entry.index,
            data: entry.data.clone(),
            context: entry.context.clone(),
        }
    }
}

impl Membership {
    /// raft's form.
    pub fn to_raft(&self) -> eraftpb::ConfState {
        let mut state = eraftpb::ConfState::default();
        state.voters.clone_from(&self.voters);
        state.learners.clone_from(&self.learners);
        state.voters_outgoing.clone_from(&self.voters_outgoing);
        state.learners_next.clone_from(&self.learners_next);
        state.auto_leave = self.auto_leave;
        state
    }

    /// Our form of raft's membership.
    pub fn from_raft(state: &eraftpb::ConfState) -> Self {
        Self {
            voters: state.voters.clone(),
            learners: state.learners.clone(),
            voters_outgoing: state.voters_outgoing.clone(),
            learners_next: state.learners_next.clone(),
            auto_leave: state.auto_leave,
        }
    }
}

impl SnapshotData {
    /// raft's form.
    pub fn to_raft(&self) -> eraftpb::Snapshot {
        let mut snapshot = eraftpb::Snapshot {
            data: self.data.clone(),
            ..eraftpb::Snapshot::default()
        };
        let metadata = snapshot.mut_metadata();
        metadata.index = self.index;
        metadata.term = self.term;
        metadata.set_conf_state(self.membership.to_raft());
        snapshot
    }

    /// Our form of raft's snapshot.
    pub fn from_raft(snapshot: &eraftpb::Snapshot) -> Self {
        let metadata = snapshot.get_metadata();
        Self {
            index: metadata.index,
            term: metadata.term,
            membership: Membership::from_raft(metadata.get_conf_state()),
            data: snapshot.data.clone(),
        }
    }
}

impl ConsensusMessage {
    /// raft's form of a message that arrived from peer `from` (raft id) for `to` (this node).
    pub fn to_raft(&self, from: u64, to: u64) -> eraftpb::Message {
        let mut message = eraftpb::Message::default();
        message.set_msg_type(self.kind.to_raft());
        message.from = from;
        message.to = to;
        message.term = self.term;
        message.log_term = self.log_term;
        message.index = self.index;
        for entry in &self.entries {
            message.mut_entries().push(entry.to_raft());
        }
        message.commit = self.commit;
        message.commit_term = self.commit_term;
        if let Some(snapshot) = &self.snapshot {
            message.set_snapshot(snapshot.to_raft());
        }
        message.request_snapshot = self.request_snapshot;
        message.reject = self.reject;
        message.reject_hint = self.reject_hint;
        message.context = self.context.clone();
        message.priority = self.priority;
        message
    }

    /// Our form of a message raft wants sent; `None` for a local kind (never sent).
    pub fn from_raft(message: &eraftpb::Message) -> Option<Self> {
        let kind = ConsensusKind::from_raft(message.get_msg_type())?;
        Some(Self {
            kind,
            term: message.term,
            log_term: message.log_term,
            index: message.index,
            entries: message
                .get_entries()
                .iter()
                .map(LogEntry::from_raft)
                .collect(),
            commit: message.commit,
            commit_term: message.commit_term,
            snapshot: message
                .has_snapshot()
                .then(|| SnapshotData::from_raft(message.get_snapshot())),
            request_snapshot: message.request_snapshot,
            reject: message.reject,
            reject_hint: message.reject_hint,
            context: message.context.clone(),
            priority: message.priority,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kinds() -> impl Strategy<Value = ConsensusKind> {
        prop_oneof![
            Just(ConsensusKind::Append),
            Just(ConsensusKind::AppendResponse),
            Just(ConsensusKind::RequestVote),
            Just(ConsensusKind::RequestVoteResponse),
            Just(ConsensusKind::Snapshot),
            Just(ConsensusKind::Heartbeat),
            Just(ConsensusKind::HeartbeatResponse),
            Just(ConsensusKind::TimeoutNow),
            Just(ConsensusKind::RequestPreVote),
            Just(ConsensusKind::RequestPreVoteResponse),
            Just(ConsensusKind::TransferLeader),
        ]
    }

    fn entries() -> impl Strategy<Value = Vec<LogEntry>> {
        proptest::collection::vec(
            (0u8..3, any::<u64>(), any::<u64>(), any::<Vec<u8>>()).prop_map(
                |(kind, term, index, data)| LogEntry {
                    kind: match kind {
                        0 => EntryKind::Normal,
                        1 => EntryKind::ConfChange,
                        _ => EntryKind::ConfChangeV2,
                    },
                    term,
                    index,
                    data: data.into(),
                    context: Bytes::new(),
                },
            ),
            0..4,
        )
    }

    proptest! {
        /// What goes through raft's types comes back unchanged, so the mapping loses nothing
        /// that raft reads.
        #[test]
        fn messages_map_to_raft_and_back(
            kind in kinds(),
            numbers in any::<[u64; 8]>(),
            entries in entries(),
            reject in any::<bool>(),
            priority in any::<i64>(),
            snapshot in proptest::option::of((1u64.., any::<u64>(), proptest::collection::vec(1u64.., 0..5), any::<Vec<u8>>())),
        ) {
            let message = ConsensusMessage {
                kind,
                term: numbers[0],
                log_term: numbers[1],
                index: numbers[2],
                entries,
                commit: numbers[3],
                commit_term: numbers[4],
                snapshot: snapshot.map(|(index, term, voters, data)| SnapshotData {
                    index,
                    term,
                    membership: Membership { voters, ..Membership::default() },
                    data: data.into(),
                }),
                request_snapshot: numbers[5],
                reject,
                reject_hint: numbers[6],
                context: Bytes::from(numbers[7].to_be_bytes().to_vec()),
                priority,
            };
            let raft = message.to_raft(7, 9);
            prop_assert_eq!((raft.from, raft.to), (7, 9));
            prop_assert_eq!(ConsensusMessage::from_raft(&raft), Some(message));
        }
    }

    #[test]
    fn local_kinds_are_never_sent() {
        let mut message = eraftpb::Message::default();
        message.set_msg_type(eraftpb::MessageType::MsgHup);
        assert_eq!(ConsensusMessage::from_raft(&message), None);
        message.set_msg_type(eraftpb::MessageType::MsgPropose);
        assert_eq!(ConsensusMessage::from_raft(&message), None);
    }
}
