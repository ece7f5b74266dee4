//! The table on standard output and report.md: the table, then issue 6's three expected
//! outcomes checked against the data.

use std::fmt::Write as _;

use crate::baseline::Baseline;
use crate::grid::{CellKnobs, StrategyName, format_rate, format_size};
use crate::record::{CellRecord, Results};

/// The verdict of one expected outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every cell it applies to meets it.
    Met,
    /// At least one cell misses it.
    NotMet,
    /// The run has no cell it applies to.
    NotMeasured,
}

impl Verdict {
    /// `met`, `not met`, `not measured`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::NotMet => "not met",
            Self::NotMeasured => "not measured",
        }
    }
}

/// One expected outcome of issue 6, checked.
#[derive(Debug, Clone)]
pub struct Check {
    /// What is expected.
    pub expectation: &'static str,
    /// Whether the data meets it.
    pub verdict: Verdict,
    /// The numbers, one line per compared cell (or why nothing was compared).
    pub details: Vec<String>,
}

/// The knobs of a cell except its strategy: cells with equal keys ran the same workload.
fn workload_key(knobs: &CellKnobs) -> String {
    let mut key = knobs.clone();
    key.strategy = StrategyName::Unicast;
    format!("{key:?}")
}

fn workload_label(knobs: &CellKnobs) -> String {
    format!(
        "N={} {}x{} rtt {} ms loss {}% {} clients {}",
        knobs.replicas,
        format_size(knobs.object_size),
        knobs.objects_per_txn,
        knobs.rtt_ms,
        knobs.loss * 100.0,
        rate_label(knobs.rate_bits_per_s),
        knobs.clients
    )
}

fn rate_label(rate: Option<u64>) -> String {
    rate.map_or_else(|| "unlimited".to_owned(), format_rate)
}

/// The unicast and multicast cells of each workload `applies` selects.
fn pairs(
    results: &Results,
    applies: impl Fn(&CellKnobs) -> bool,
) -> Vec<(&CellRecord, &CellRecord)> {
    let mut pairs = Vec::new();
    for unicast in results
        .cells
        .iter()
        .filter(|cell| cell.knobs.strategy == StrategyName::Unicast && applies(&cell.knobs))
    {
        let key = workload_key(&unicast.knobs);
        if let Some(multicast) = results.cells.iter().find(|cell| {
            cell.knobs.strategy == StrategyName::Multicast && workload_key(&cell.knobs) == key
        }) {
            pairs.push((unicast, multicast));
        }
    }
    pairs
}

fn verdict(details: &[(bool, String)]) -> Verdict {
    if details.is_empty() {
        Verdict::NotMeasured
    } else if details.iter().all(|(ok, _)| *ok) {
        Verdict::Met
    } else {
        Verdict::NotMet
    }
}

fn lines(details: Vec<(bool, String)>, missing: &str) -> Vec<String> {
    if details.is_empty() {
        return vec![missing.to_owned()];
    }
    details
        .into_iter()
        .map(|(ok, line)| format!("{} {line}", if ok { "ok:" } else { "MISSED:" }))
        .collect()
}

/// For each workload of the cells `select` takes that has both strategies: whether multicast's
/// p50 over unicast's is at most `limit`, and a line with both and the ratio (then `wanted`).
fn p50_ratios(
    results: &Results,
    select: impl Fn(&CellKnobs) -> bool,
    limit: f64,
    wanted: &str,
) -> Vec<(bool, String)> {
    pairs(results, select)
        .into_iter()
        .map(|(u, m)| {
            let ratio = m.figures.latency_p50_ms / u.figures.latency_p50_ms;
            (
                ratio <= limit,
                format!(
                    "{}: multicast p50 {:.1} ms, unicast p50 {:.1} ms, ratio {:.2}{wanted}",
                    workload_label(&u.knobs),
                    m.figures.latency_p50_ms,
                    u.figures.latency_p50_ms,
                    ratio
                ),
            )
        })
        .collect()
}

/// Issue 6's three expected outcomes, checked against the cells of `results`.
pub fn checks(results: &Results) -> Vec<Check> {
    let mut checks = Vec::new();

    let small = p50_ratios(
        results,
        |k| k.object_size <= 64 << 10 && k.loss == 0.0,
        1.10,
        "",
    );
    checks.push(Check {
        expectation: "Small objects (<= 64 KiB), no loss: multicast commit latency (p50) within 10% of unicast",
        verdict: verdict(&small),
        details: lines(small, "no loss-free cell with objects of 64 KiB or less and both strategies"),
    });

    let large = p50_ratios(
        results,
        |k| {
            k.object_size >= 1 << 20
                && k.replicas >= 8
                && k.rate_bits_per_s.is_some()
                && k.loss == 0.0
        },
        1.0 / 3.0,
        " (wanted <= 0.33)",
    );
    checks.push(Check {
        expectation: "1 MiB objects, 8 replicas, link-rate bound: multicast commit latency at most a third of unicast",
        verdict: verdict(&large),
        details: lines(
            large,
            "no loss-free cell with objects of 1 MiB or more, 8 or more replicas and a link rate",
        ),
    });

    let lossy: Vec<(bool, String)> = results
        .cells
        .iter()
        .filter(|cell| {
            cell.knobs.strategy == StrategyName::Multicast && (cell.knobs.loss - 0.01).abs() < 1e-9
        })
        .map(|cell| {
            let ratio = cell.figures.p99_over_bound.unwrap_or(f64::INFINITY);
            // The same workload without loss tells what loss costs and what the rest of the
            // system (fsync, CPU, scheduling) already costs.
            let mut loss_free = cell.knobs.clone();
            loss_free.loss = 0.0;
            let key = format!("{loss_free:?}");
            let context = results
                .cells
                .iter()
                .find(|other| format!("{:?}", other.knobs) == key)
                .map(|other| {
                    format!(
                        "; loss-free p99 {:.1} ms (ratio {:.2})",
                        other.figures.latency_p99_ms,
                        other.figures.p99_over_bound.unwrap_or(f64::INFINITY)
                    )
                })
                .unwrap_or_default();
            (
                ratio <= 1.5,
                format!(
                    "{}: multicast p99 {:.1} ms, bound {:.1} ms, ratio {:.2}{context}",
                    workload_label(&cell.knobs),
                    cell.figures.latency_p99_ms,
                    cell.figures.bound_ms,
                    ratio
                ),
            )
        })
        .collect();
    checks.push(Check {
        expectation: "1% loss: multicast p99 within 1.5x of its lower bound",
        verdict: verdict(&lossy),
        details: lines(lossy, "no multicast cell with 1% loss"),
    });
    checks
}

/// The table of every cell, as Markdown (also what `replicast bench` prints).
pub fn table(results: &Results) -> String {
    let mut out = String::new();
    out.push_str(
        "| strategy | N | size | K | RTT ms | loss | rate | clients | commits | commits/s | p50 ms | p99 ms | max ms | bound ms | p50/bound | p99/bound | writer B per committed B | repair KB | writer CPU s | fsyncs per commit per storage | master fsyncs per commit | master commit ms |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let ratio = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
    for cell in &results.cells {
        let k = &cell.knobs;
        let f = &cell.figures;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {}% | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {:.2} (bound {}) | {:.1} | {:.2} | {} | {} | {} |",
            k.strategy,
            k.replicas,
            format_size(k.object_size),
            k.objects_per_txn,
            k.rtt_ms,
            k.loss * 100.0,
            rate_label(k.rate_bits_per_s),
            k.clients,
            f.commits,
            f.commits_per_s,
            f.latency_p50_ms,
            f.latency_p99_ms,
            f.latency_max_ms,
            f.bound_ms,
            ratio(f.p50_over_bound),
            ratio(f.p99_over_bound),
            f.writer_bytes_per_committed_byte,
            f.bound_bytes_per_committed_byte,
            f.repair_bytes as f64 / 1e3,
            f.writer_cpu_s,
            ratio(f.fsyncs_per_commit),
            ratio(f.master_fsyncs_per_commit),
            f.master_commit_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1}")),
        );
    }
    out
}

/// report.md: how the run was made, the table, the checks, the comparison with `baseline`
/// and the plots.
pub fn report_markdown(results: &Results, baseline: Option<&Baseline>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# replicast bench\n");
    let _ = writeln!(
        out,
        "{} cells, mode {}, {} CPUs, replicast {}, results.json schema {}. Commit latency is \
         begin to finish returned; the bound is the strategy's bytes on the writer's link / link \
         rate + 2 round trips (docs/BENCH.md).\n",
        results.cells.len(),
        results.mode,
        results.cpus,
        results.version,
        results.schema_version
    );
    out.push_str(&table(results));
    let _ = writeln!(out, "\n## Expected outcomes (issue 6)\n");
    for check in checks(results) {
        let _ = writeln!(
            out,
            "- **{}**: {}",
            check.verdict.as_str(),
            check.expectation
        );
        for line in &check.details {
            let _ = writeln!(out, "  - {line}");
        }
    }
    if let Some(baseline) = baseline {
        let _ = writeln!(out, "\n## Against {}\n", baseline.label);
        out.push_str(&crate::baseline::comparison_table(results, baseline));
    }
    let _ = writeln!(out, "\n## Plots\n");
    for (name, _) in crate::plot::plots(results, baseline) {
        let _ = writeln!(out, "![{name}]({name})");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::Sweep;
    use crate::record::Figures;

    fn figures(p50: f64, p99: f64, bound: f64) -> Figures {
        Figures {
            commits: 8,
            aborts: 0,
            elapsed_s: 1.0,
            commits_per_s: 8.0,
            latency_p50_ms: p50,
            latency_p99_ms: p99,
            latency_max_ms: p99,
            latency_mean_ms: p50,
            committed_bytes: 1,
            writer_bytes: 1,
            writer_quic_bytes: 1,
            writer_multicast_bytes: 0,
            writer_bytes_per_committed_byte: 1.0,
            bound_bytes_per_committed_byte: 1.0,
            repair_bytes: 0,
            nacks_received: 0,
            writer_cpu_s: 0.1,
            bound_ms: bound,
            p50_over_bound: Some(p50 / bound),
            p99_over_bound: Some(p99 / bound),
            fsyncs_per_commit: None,
            master_fsyncs_per_commit: None,
            master_commit_ms: None,
        }
    }

    /// The default grid with multicast at `multicast_p50` of unicast's latency everywhere and
    /// p99 at `p99_over_bound` of the bound.
    fn results(multicast_p50: f64, p99_over_bound: f64) -> Results {
        Results::made_up(&Sweep::default_grid(), |knobs| {
            let p50 = match knobs.strategy {
                StrategyName::Unicast => 300.0,
                _ => 300.0 * multicast_p50,
            };
            figures(p50, 100.0 * p99_over_bound, 100.0)
        })
    }

    #[test]
    fn checks_follow_the_numbers() {
        let verdicts = |results: &Results| -> Vec<Verdict> {
            checks(results)
                .into_iter()
                .map(|check| check.verdict)
                .collect()
        };
        assert_eq!(
            verdicts(&results(0.3, 1.2)),
            vec![Verdict::Met, Verdict::Met, Verdict::Met]
        );
        // Multicast 5% slower than unicast: within 10%, but not a third.
        assert_eq!(
            verdicts(&results(1.05, 2.0)),
            vec![Verdict::Met, Verdict::NotMet, Verdict::NotMet]
        );
        let mut none = results(1.0, 1.0);
        none.cells
            .retain(|cell| cell.knobs.strategy == StrategyName::Unicast);
        assert_eq!(
            verdicts(&none),
            vec![
                Verdict::NotMeasured,
                Verdict::NotMeasured,
                Verdict::NotMeasured
            ]
        );
    }

    #[test]
    fn the_table_has_a_row_per_cell() {
        let results = results(0.5, 1.0);
        let table = table(&results);
        assert_eq!(table.lines().count(), 2 + results.cells.len());
        assert!(report_markdown(&results, None).contains("**met**"));
    }
}
