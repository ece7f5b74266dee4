//! Workloads that exercise a cluster through [`ClientHandle`](replicast_node::driver::ClientHandle),
//! shared by the tests, the `replicast client` command and the benchmark.
//!
//! - [`transfers`]: money transfers between accounts; the sum of all balances never changes,
//!   so a lost, doubled or half-visible commit shows.
//! - [`gaps`]: the gaps between a workload's commits (how long it went without one).

pub mod gaps;
pub mod transfers;
