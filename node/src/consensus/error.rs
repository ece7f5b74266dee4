//! What can go wrong in the masters' consensus.

use std::path::PathBuf;

/// The replicated log on redb failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The file could not be opened or created.
    #[error("cannot open the master's log {path}: {message}")]
    Open {
        /// The file.
        path: PathBuf,
        /// redb's error.
        message: String,
    },
    /// redb failed.
    #[error("the master's log: {what}: {message}")]
    Database {
        /// What was being done.
        what: &'static str,
        /// redb's error.
        message: String,
    },
    /// A stored value does not decode.
    #[error("the master's log holds a corrupt {what}: {source}")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// What postcard said.
        source: postcard::Error,
    },
    /// Entries are missing in the middle of the log.
    #[error("the master's log misses entry {expected} (the next stored is {found})")]
    Gap {
        /// The index expected.
        expected: u64,
        /// The index found.
        found: u64,
    },
}

impl ConsensusError {
    /// Whether the master cannot go on after this error: its log could not be written or
    /// read, or holds what it cannot apply. raft's safety rests on what the log holds (a
    /// vote or an append answered is on disk), so a master past such an error stops; the
    /// others refuse what one master alone gets wrong (a message from a non-member, a
    /// proposal while not the leader).
    ///
    /// ```
    /// use replicast_node::consensus::{ConsensusError, LogError};
    ///
    /// let full = LogError::Database { what: "commit", message: "No space left".into() };
    /// assert!(ConsensusError::Log(full).is_fatal());
    /// assert!(!ConsensusError::NotAMember { from: "m9".into() }.is_fatal());
    /// ```
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Self::Log(_)
                | Self::Undecodable { .. }
                | Self::Stopped
                | Self::Encode { .. }
                | Self::StateFormat { .. }
        )
    }
}

/// The consensus group refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// raft-rs refused (a message that does not fit, a proposal while no leader is known).
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// A message from a peer that is not a member of the group.
    #[error("{from} is not a master of this group")]
    NotAMember {
        /// The peer.
        from: String,
    },
    /// The masters' names collide in raft's id space (a 64-bit hash of the name).
    #[error("masters {first} and {second} have the same raft id; rename one")]
    IdCollision {
        /// One master.
        first: String,
        /// The other.
        second: String,
    },
    /// The log's group is not the configured one: the masters were changed in the
    /// configuration only (raft would go on with the log's members, and a new, empty log
    /// elsewhere could form a second group).
    #[error(
        "the master's log belongs to the group {log:?}, but the configuration lists {configured:?}; \
         to change the masters, stop them all and follow docs/DEPLOY.md \
         (`replicast master-log set-members`)"
    )]
    MembershipDiffers {
        /// The log's members (names the configuration knows, raft ids otherwise).
        log: Vec<String>,
        /// The configured masters.
        configured: Vec<String>,
    },
    /// A committed entry or snapshot of the log does not decode into the replicated state: the
    /// log is corrupt, or another build wrote it. The master stops rather than go on without
    /// it (the entry may decide a transaction or raise the next OID).
    #[error(
        "{what} at index {index} of the masters' log does not decode: {source}; \
         the master cannot go on without it"
    )]
    Undecodable {
        /// An entry or a snapshot.
        what: &'static str,
        /// Its log index.
        index: u64,
        /// What postcard said.
        source: postcard::Error,
    },
    /// The replicated state, or a change of it, does not encode.
    #[error("cannot encode {what} for the masters' log: {source}")]
    Encode {
        /// What was encoded.
        what: &'static str,
        /// What postcard said.
        source: postcard::Error,
    },
    /// The log holds the replicated state in another encoding than this build's
    /// ([`STATE_FORMAT`](crate::master::state::STATE_FORMAT)).
    #[error(
        "the master's log holds the replicated state in format {}, this build reads format \
         {expected}: it was written by another version of replicast",
        found.map_or_else(|| "1 (unversioned)".to_owned(), |found| found.to_string())
    )]
    StateFormat {
        /// The log's format (`None`: a log of a build that did not record it).
        found: Option<u32>,
        /// This build's.
        expected: u32,
    },
    /// The master stopped after a fatal error (its failure, which it reports once).
    #[error("this master stopped after its log failed")]
    Stopped,
    /// This node is not in the list of masters it was given.
    #[error("{name} is not in the list of masters {masters:?}")]
    NotListed {
        /// This node's name.
        name: String,
        /// The masters.
        masters: Vec<String>,
    },
}
