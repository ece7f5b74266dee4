//! # replicast-bench
//!
//! The harness of `replicast bench`: the unicast-versus-multicast commit latency comparison.
//!
//! Each cell of a [`Sweep`] starts a real local cluster in this process ([`cluster`]): a
//! master and N storages on redb in a temporary directory, every node its own QUIC endpoint on
//! 127.0.0.1 with certificates of a fresh cluster CA, every socket on the cell's emulated WAN
//! ([`emulation`]); storages join a multicast group on loopback (TTL 1). The writing clients
//! run on a thread and runtime of their own ([`workload`]), so that their CPU time can be
//! measured, and store through the transport's fan-out with the cell's strategy. Each cell
//! yields commit latency percentiles, commits per second, the writer's bytes per committed
//! byte, repair bytes, the writer's CPU seconds and the strategy's lower bound ([`bound`]);
//! a run writes them to results.json ([`record`]), report.md ([`report`]) and SVG plots
//! ([`plot`]), beside an earlier run's cells when given one ([`baseline`]).
//!
//! ```no_run
//! use replicast_bench::{Mode, RunOptions, Sweep, run};
//!
//! let mut sweep = Sweep::default_grid();
//! sweep.replicas = vec![1, 4];
//! let output = run(&RunOptions {
//!     sweep,
//!     out: "target/replicast-bench".into(),
//!     seed: 1,
//!     progress: true,
//!     mode: Mode::InProcess,
//!     data_dir: None,
//!     baseline: None,
//! })?;
//! println!("{}", output.table);
//! # Ok::<(), replicast_bench::BenchError>(())
//! ```

#![warn(missing_docs)]

pub mod baseline;
pub mod bound;
pub mod cluster;
pub mod cpu;
pub mod emulation;
mod error;
pub mod grid;
pub mod netns;
pub mod plot;
pub mod record;
pub mod report;
mod run;
pub mod units;
pub mod workload;

pub use error::BenchError;
pub use grid::{Amount, CellKnobs, StrategyName, Sweep};
pub use record::{CellRecord, Figures, Results, SCHEMA_VERSION};
pub use run::{Mode, RunOptions, RunOutput, figures, run, write_outputs};
