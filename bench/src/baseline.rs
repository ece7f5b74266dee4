//! A baseline: the results.json of an earlier run (a build of the commit before a change,
//! another machine) that a run is compared with, cell by cell: the same knobs, the earlier and
//! the new latency side by side with their ratio, and the earlier series in the plots.
//!
//! Cells match when their workload is the same ([`CellKnobs::label`] and the jitter); the
//! amount of transactions may differ. A cell of the run without a match in the baseline is
//! listed with dashes.
//!
//! ```
//! use replicast_bench::baseline::{Baseline, comparison_table};
//! use replicast_bench::Results;
//!
//! let empty = Results::from_json(
//!     r#"{"schema_version":1,"tool":"replicast bench","version":"0","mode":"in-process",
//!         "started_unix_s":0,"cpus":2,"cells":[]}"#,
//! )?;
//! let baseline = Baseline { label: "before".into(), results: empty.clone() };
//! assert!(comparison_table(&empty, &baseline).starts_with("| strategy"));
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::fmt::Write as _;
use std::path::Path;

use crate::BenchError;
use crate::grid::{CellKnobs, format_rate, format_size};
use crate::record::{CellRecord, Results};

/// An earlier run to compare with.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// What the earlier run was, as tables and plots name it (e.g. its directory).
    pub label: String,
    /// Its results.
    pub results: Results,
}

impl Baseline {
    /// Reads `dir/results.json` (the `--out` directory of the earlier run); labelled with the
    /// directory's name.
    pub fn load(dir: &Path) -> Result<Self, BenchError> {
        let path = dir.join("results.json");
        let text = std::fs::read_to_string(&path).map_err(|source| BenchError::Input {
            path: path.clone(),
            source,
        })?;
        let results = Results::from_json(&text)?;
        let label = dir.file_name().map_or_else(
            || dir.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        );
        Ok(Self { label, results })
    }

    /// The baseline's cell with the same workload as `knobs`, if it ran one.
    pub fn matching(&self, knobs: &CellKnobs) -> Option<&CellRecord> {
        let label = knobs.label();
        self.results
            .cells
            .iter()
            .find(|cell| cell.knobs.label() == label && cell.knobs.jitter_ms == knobs.jitter_ms)
    }
}

/// A markdown table of every cell of `results` beside its match in `baseline`: p50 and p99
/// of both, their ratios (new over baseline: below 1 is faster), and the new run's bound.
pub fn comparison_table(results: &Results, baseline: &Baseline) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| strategy | N | size | K | RTT ms | loss | rate | clients | p50 ms {b} | p50 ms | p50 ratio | p99 ms {b} | p99 ms | p99 ratio | bound ms |",
        b = baseline.label
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let ms = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    let ratio = |new: f64, old: Option<f64>| {
        old.filter(|old| *old > 0.0)
            .map_or_else(|| "-".to_owned(), |old| format!("{:.2}x", new / old))
    };
    for cell in &results.cells {
        let k = &cell.knobs;
        let f = &cell.figures;
        let old = baseline.matching(k).map(|cell| &cell.figures);
        let (old_p50, old_p99) = (old.map(|f| f.latency_p50_ms), old.map(|f| f.latency_p99_ms));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {}% | {} | {} | {} | {:.1} | {} | {} | {:.1} | {} | {:.1} |",
            k.strategy,
            k.replicas,
            format_size(k.object_size),
            k.objects_per_txn,
            k.rtt_ms,
            k.loss * 100.0,
            k.rate_bits_per_s
                .map_or_else(|| "unlimited".to_owned(), format_rate),
            k.clients,
            ms(old_p50),
            f.latency_p50_ms,
            ratio(f.latency_p50_ms, old_p50),
            ms(old_p99),
            f.latency_p99_ms,
            ratio(f.latency_p99_ms, old_p99),
            f.bound_ms,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::Sweep;
    use crate::record::Figures;

    /// Multicast at 64 KiB, no loss, N = 1 and 4, with `p50s` (a missing one: the cell did
    /// not run).
    fn results(p50s: &[f64]) -> Results {
        let mut sweep = Sweep::default_grid();
        sweep.replicas = vec![1, 4];
        sweep.losses = vec![0.0];
        sweep.object_sizes = vec![65536];
        sweep.strategies = vec![crate::StrategyName::Multicast];
        let mut results = Results::made_up(&sweep, |knobs| {
            let p50 = if knobs.replicas == 1 {
                p50s[0]
            } else {
                p50s.get(1).copied().unwrap_or_default()
            };
            Figures {
                latency_p50_ms: p50,
                latency_p99_ms: p50 * 2.0,
                bound_ms: 10.0,
                ..Figures::default()
            }
        });
        results.cells.truncate(p50s.len());
        results
    }

    #[test]
    fn cells_are_matched_by_workload_and_compared_as_ratios() {
        let run = results(&[30.0, 40.0]);
        let baseline = Baseline {
            label: "before".into(),
            results: results(&[60.0]),
        };
        assert!(baseline.matching(&run.cells[0].knobs).is_some());
        assert!(
            baseline.matching(&run.cells[1].knobs).is_none(),
            "N=4 did not run before"
        );
        let table = comparison_table(&run, &baseline);
        let rows: Vec<&str> = table.lines().skip(2).collect();
        assert_eq!(rows.len(), 2);
        assert!(
            rows[0].contains("| 60.0 | 30.0 | 0.50x | 120.0 | 60.0 | 0.50x |"),
            "{}",
            rows[0]
        );
        assert!(
            rows[1].contains("| - | 40.0 | - | - | 80.0 | - |"),
            "{}",
            rows[1]
        );
        assert!(table.starts_with("| strategy") && table.contains("p50 ms before"));
    }

    #[test]
    fn a_missing_baseline_names_its_file() {
        let dir =
            std::env::temp_dir().join(format!("replicast-no-baseline-{}", std::process::id()));
        let error = Baseline::load(&dir).expect_err("no results.json");
        assert!(error.to_string().contains("results.json"), "{error}");
    }
}
