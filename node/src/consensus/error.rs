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
    /// This node is not in the list of masters it was given.
    #[error("{name} is not in the list of masters {masters:?}")]
    NotListed {
        /// This node's name.
        name: String,
        /// The masters.
        masters: Vec<String>,
    },
}
