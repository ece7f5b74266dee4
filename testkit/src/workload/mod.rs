//! Workloads that exercise a cluster through [`ClientHandle`](replicast_node::driver::ClientHandle),
//! shared by the tests, the `replicast client` command and the benchmark.
//!
//! - [`transfers`]: money transfers between accounts; the sum of all balances never changes,
//!   so a lost, doubled or half-visible commit shows.
//! - [`gaps`]: the gaps between a workload's commits (how long it went without one).
//! - [`worker`]: the same transfers (or writes of a set of objects) driven through a sans-IO
//!   [`Client`](replicast_node::client::Client) inside a simulation.

pub mod gaps;
pub mod transfers;
pub mod worker;
