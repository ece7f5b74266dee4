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
//! - [`storage`]: the durable engine on redb: two-phase commit, loads, history for replication;
//! - [`protocol`]: the messages of two-phase commit and the sans-IO contract of the roles;
//! - [`master`], [`client`], [`storage_node`]: the roles' two-phase commit as state machines.
//! - [`config`]: the node's TOML configuration file, checked, with errors that name the key.
//! - [`driver`]: tokio drivers that run the roles over QUIC links, and an `async` client API.
//!
//! A storage node's commit path, without the network:
//!
//! ```
//! use replicast_node::ids::{Oid, Tid, TidClock};
//! use replicast_node::locks::{LockDecision, LockManager};
//! use replicast_node::partition::PartitionTable;
//! use replicast_node::storage::{ObjectData, Store, TransactionInfo};
//! use std::time::SystemTime;
//!
//! let table = PartitionTable::new(12, 2, &["s1".into(), "s2".into(), "s3".into()])?;
//! let oid = Oid(42);
//! let replicas: Vec<_> = table.writable_cells(oid).map(|cell| cell.node.clone()).collect();
//! assert_eq!(replicas.len(), 2);
//!
//! // On each of those replicas:
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path().join("s1.redb"))?;
//! let mut locks = LockManager::new();
//! let mut clock = TidClock::default();
//! let ttid = clock.allocate(SystemTime::now())?;
//! assert_eq!(locks.lock(ttid, oid)?, LockDecision::Granted);
//! store.store_pending(ttid, oid, Tid::ZERO, ObjectData::Bytes(b"v1".to_vec()))?;
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
pub mod ids;
pub mod locks;
pub mod partition;
pub mod storage;

pub mod client;
pub mod driver;
pub mod master;
pub mod protocol;
pub mod storage_node;
pub mod workload;
