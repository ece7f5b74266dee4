//! # replicast-node
//!
//! The NEO-style replicated object store that runs on the replicast transport. This crate holds
//! the parts of a node that need no network, as plain state and a storage engine that the
//! network roles (master, storage, client) drive:
//!
//! - [`ids`]: 8-byte object ids ([`Oid`](ids::Oid)) and time-based transaction ids
//!   ([`Tid`](ids::Tid)), with the monotonic [`TidClock`](ids::TidClock);
//! - [`partition`]: the [`PartitionTable`](partition::PartitionTable) every node holds: which
//!   storages hold which objects, cell states, re-replication when storages join or leave;
//! - [`locks`]: per-object write locks with deadlock avoidance, as a state machine;
//! - [`object`], [`transaction`]: the values every layer shares (an object revision's data and
//!   digest, what a transaction says about itself);
//! - [`engine`]: the durable engine on redb: two-phase commit, loads, history for replication;
//! - [`protocol`]: the messages of two-phase commit and the sans-IO contract of the roles;
//! - [`master`], [`client`], [`storage`]: the roles' two-phase commit as state machines.
//! - [`persist`]: the storage's persistence executor, which runs the storage role's writes
//!   (group commit) and reads (off the writer) on its engine.
//! - [`config`]: the node's TOML configuration file, checked, with errors that name the key.
//! - [`driver`]: tokio drivers that run the roles over QUIC links, and an `async` client API.
//! - [`crash_point`]: exact moments at which a process test stops a node to kill it there
//!   (compiled in only with the `crash-points` feature).
//! - [`gate`]: what every message passes before a role sees it: the sender's certificate must
//!   grant a role the [authorization table](protocol::rule) allows.
//!
//! A storage node's commit path, without the network:
//!
//! ```
//! use replicast_node::ids::{Oid, Tid, TidClock};
//! use replicast_node::locks::{LockDecision, LockManager};
//! use replicast_node::partition::PartitionTable;
//! use replicast_node::engine::Engine;
//! use replicast_node::object::ObjectData;
//! use replicast_node::transaction::TransactionInfo;
//! use std::time::SystemTime;
//!
//! let table = PartitionTable::new(12, 2, &["s1".into(), "s2".into(), "s3".into()])?;
//! let oid = Oid(42);
//! let replicas: Vec<_> = table.writable_cells(oid).map(|cell| cell.node.clone()).collect();
//! assert_eq!(replicas.len(), 2);
//!
//! // On each of those replicas:
//! let dir = tempfile::tempdir()?;
//! let store = Engine::open(dir.path().join("s1.redb"))?;
//! let mut locks = LockManager::new();
//! let mut clock = TidClock::default();
//! let ttid = clock.allocate(SystemTime::now())?;
//! assert_eq!(locks.lock(ttid, oid)?, LockDecision::Granted);
//! store.store_pending(ttid, oid, Tid::ZERO, ObjectData::from(b"v1".to_vec()))?;
//! store.vote(ttid, &TransactionInfo { user: "alice".into(), ..Default::default() })?;
//! locks.vote(ttid)?;
//! let tid = clock.allocate(SystemTime::now())?;
//! store.finish(ttid, tid)?;
//! locks.release(ttid);
//! assert_eq!(store.load(oid)?.map(|revision| revision.tid), Some(tid));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod config;
pub mod consensus;
pub mod crash_point;
mod encoding;
pub mod engine;
pub mod ids;
pub mod locks;
pub mod object;
pub mod partition;
pub mod primary;

pub mod client;
pub mod driver;
pub mod gate;
pub mod master;
pub mod persist;
pub mod protocol;
pub mod storage;
pub mod transaction;
