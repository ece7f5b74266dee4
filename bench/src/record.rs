//! results.json: one record per cell with every knob and every figure (docs/BENCH.md
//! describes each field). The layout is versioned by [`SCHEMA_VERSION`]: a field is never
//! renamed or given another meaning without raising it.

use serde::{Deserialize, Serialize};

use crate::grid::CellKnobs;

/// The version of the results.json layout.
pub const SCHEMA_VERSION: u32 = 1;

/// The whole of results.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// [`SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    /// `replicast bench`.
    pub tool: String,
    /// The replicast version that measured.
    pub version: String,
    /// `in-process` (one process, emulated links) or `netns`.
    pub mode: String,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix_s: u64,
    /// CPUs the machine offers (the cluster and the writer share them).
    pub cpus: usize,
    /// Where the storages' files were (`--data-dir`); `None`: the system's temporary directory.
    #[serde(default)]
    pub data_dir: Option<String>,
    /// One record per cell, in the order they ran.
    pub cells: Vec<CellRecord>,
}

/// One cell: its knobs and what was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    /// Position in the run, from 0.
    pub index: usize,
    /// What the cell ran.
    pub knobs: CellKnobs,
    /// What it measured.
    pub figures: Figures,
}

/// What a cell measured, after its warm-up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Committed transactions (all clients).
    pub commits: u64,
    /// Aborted attempts (retried; not in the latencies).
    pub aborts: u64,
    /// Wall-clock seconds of the measured part.
    pub elapsed_s: f64,
    /// Commits per second, all clients together.
    pub commits_per_s: f64,
    /// Commit latency (begin to finish returned), median, milliseconds.
    pub latency_p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub latency_p99_ms: f64,
    /// Largest, milliseconds.
    pub latency_max_ms: f64,
    /// Mean, milliseconds.
    pub latency_mean_ms: f64,
    /// Bytes of the committed objects: commits x objects per transaction x object size.
    pub committed_bytes: u64,
    /// UDP payload bytes the writers sent: QUIC to every peer plus multicast.
    pub writer_bytes: u64,
    /// Of which over QUIC (every datagram of every connection of the writers' endpoints).
    pub writer_quic_bytes: u64,
    /// Of which multicast (data, repairs, tail announcements).
    pub writer_multicast_bytes: u64,
    /// `writer_bytes / committed_bytes`.
    pub writer_bytes_per_committed_byte: f64,
    /// What a perfect transport needs: the strategy's copies per object (N unicast, 1 otherwise).
    pub bound_bytes_per_committed_byte: f64,
    /// Payload bytes of multicast repairs.
    pub repair_bytes: u64,
    /// NACK datagrams the multicast senders received.
    pub nacks_received: u64,
    /// CPU seconds of the writer thread (every writing client's endpoint, fan-out and role).
    pub writer_cpu_s: f64,
    /// The strategy's lower bound of the commit latency, milliseconds (see `bound`).
    pub bound_ms: f64,
    /// `latency_p50_ms / bound_ms`; `None` when the bound is 0 (plain loopback).
    pub p50_over_bound: Option<f64>,
    /// `latency_p99_ms / bound_ms`; `None` when the bound is 0.
    pub p99_over_bound: Option<f64>,
    /// Durable commits (fsyncs) of the storages' engines during the measured part, per
    /// committed transaction and per storage; `None` when not counted (`--netns`).
    #[serde(default)]
    pub fsyncs_per_commit: Option<f64>,
    /// Durable writes (fsyncs) of the master's log during the measured part, per committed
    /// transaction; `None` when not counted (`--netns`, results written before it was).
    #[serde(default)]
    pub master_fsyncs_per_commit: Option<f64>,
    /// What the master group's own commit of a decision cost on its side of the link: the
    /// median of each commit's finish (asked to answered) less the emulated RTT, milliseconds;
    /// `None` when no commit's phases were measured. Not part of `bound_ms`.
    #[serde(default)]
    pub master_commit_ms: Option<f64>,
}

impl Results {
    /// Reads results.json text.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// results.json text, pretty-printed.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// The results of a run of `sweep`'s cells that measured `figures` for each (the unit
    /// tests' made-up runs).
    #[cfg(test)]
    pub(crate) fn made_up(
        sweep: &crate::grid::Sweep,
        figures: impl Fn(&crate::grid::CellKnobs) -> Figures,
    ) -> Self {
        let cells = sweep
            .cells()
            .into_iter()
            .enumerate()
            .map(|(index, knobs)| CellRecord {
                index,
                figures: figures(&knobs),
                knobs,
            })
            .collect();
        Self {
            schema_version: SCHEMA_VERSION,
            tool: "replicast bench".into(),
            version: "0".into(),
            mode: "in-process".into(),
            started_unix_s: 0,
            cpus: 2,
            data_dir: None,
            cells,
        }
    }
}
