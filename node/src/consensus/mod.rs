//! The masters' consensus: election and the replicated log, from raft-rs.
//!
//! The masters form one raft group (1, 3 or 5 of them; a lone master is a group of one with
//! the same durable log). Raft elects the primary and orders the commands that change the
//! masters' replicated state; this module is the glue, in the project's sans-IO manner:
//!
//! - [`RaftLog`]: raft-rs' `Storage` over redb (entries, hard state, snapshots), one file per
//!   master;
//! - [`Group`]: the `RawNode` driven by `(now, message)` inputs, persisting each `Ready`
//!   before the messages that depend on it and handing committed entries to the state
//!   machine ([`Applied`]);
//! - [`LogWriter`]: the thread that makes a daemon's log writes durable in batches, off the
//!   event loop;
//! - [`ConsensusMessage`]: raft's messages as our own serde types, so that network bytes are
//!   decoded by postcard (totally), never by rust-protobuf.
//!
//! The state machine itself, and what the primary does with it, is the
//! [master](crate::master)'s.

mod error;
mod group;
mod log;
mod wire;
mod writer;

pub use error::{ConsensusError, LogError};
pub use group::{Applied, Group, GroupSettings, GroupStatus, raft_id};
pub use log::RaftLog;
pub use wire::{ConsensusKind, ConsensusMessage, EntryKind, LogEntry, Membership, SnapshotData};
pub use writer::LogWriter;
