//! # replicast-testkit
//!
//! What replicast's tests and benchmarks share, in one copy:
//!
//! - [`endpoint`]: a cluster CA, node certificates and QUIC endpoints on this host, on an
//!   emulated link when asked;
//! - [`cluster`]: in-process clusters (a master and redb storages as node drivers);
//! - [`disk`]: a disk that tests stop and slow down, through the writers' hooks;
//! - [`fanout`]: fan-out writers' configurations, replicas added to a writer, hand-made
//!   memberships;
//! - [`process`]: the process harness (`replicast` commands and nodes as child processes, a
//!   local cluster of them, the replication checks of the process tests);
//! - [`netns`]: hosts made of Linux network namespaces, bridges and a router (root);
//! - [`sim`]: the simulated network of the deterministic simulations;
//! - [`payload`]: bytes that compress and bytes that do not, the same for the same seed;
//! - [`plot`]: latency plots in SVG;
//! - [`workload`]: the transfers workload (also run by `replicast client transfers`);
//! - [`zodb`]: what the ZODB client API tests share (a cluster with relaxed timeouts, commits).
//!
//! It is a harness, not a shipped library: the library crates (`replicast-transport`,
//! `replicast-certs`, `replicast-node`) take it as a dev-dependency only, for their
//! integration tests and benches (a dev-dependency cycle Cargo allows there, not in unit
//! tests: the library's own test build would be a second, different copy of its types). The
//! bench and the `replicast` command, harnesses and tools themselves, depend on it normally.
//!
//! Functions that return `Result` serve harnesses that report errors (the bench); the
//! others serve tests and panic with the reason, as their docs say.

#![warn(missing_docs)]

pub mod cluster;
pub mod disk;
pub mod endpoint;
mod error;
pub mod fanout;
pub mod netns;
pub mod payload;
pub mod plot;
pub mod process;
pub mod sim;
pub mod workload;
pub mod zodb;

pub use error::TestkitError;
