//! SVG plots of commit latency (the testkit's [`LatencyPlot`]): against replicas, loss and
//! round-trip time, one panel per remaining workload, one colour per strategy, p50 solid, p99
//! dashed, the lower bound dotted; a [baseline](crate::baseline)'s cells in a paler shade of
//! their strategy's colour.

use replicast_testkit::plot::{LatencyPlot, Layout, Panel, Point, Series};

use crate::baseline::Baseline;
use crate::grid::{CellKnobs, StrategyName, format_rate, format_size};
use crate::record::Results;

/// Panels drawn at most per plot; a larger sweep is in results.json.
const MAX_PANELS: usize = 24;

fn colour(strategy: StrategyName) -> &'static str {
    match strategy {
        StrategyName::Unicast => "#d62728",
        StrategyName::Multicast => "#1f77b4",
        StrategyName::Auto => "#2ca02c",
    }
}

/// The colour of a baseline's strategy: a paler shade of [`colour`]'s.
fn baseline_colour(strategy: StrategyName) -> &'static str {
    match strategy {
        StrategyName::Unicast => "#f5a3a3",
        StrategyName::Multicast => "#9ecae1",
        StrategyName::Auto => "#a1d99b",
    }
}

/// One plot: its file, its title, its x axis and where a cell sits on it.
struct Axis {
    file: &'static str,
    title: &'static str,
    label: &'static str,
    x: fn(&CellKnobs) -> f64,
}

const AXES: [Axis; 3] = [
    Axis {
        file: "latency-vs-replicas.svg",
        title: "Commit latency against replicas",
        label: "replicas",
        x: |k| k.replicas as f64,
    },
    Axis {
        file: "latency-vs-loss.svg",
        title: "Commit latency against loss",
        label: "loss %",
        x: |k| k.loss * 100.0,
    },
    Axis {
        file: "latency-vs-rtt.svg",
        title: "Commit latency against round-trip time",
        label: "RTT ms",
        x: |k| k.rtt_ms,
    },
];

/// The plots of a run, with `baseline`'s cells beside its own: `(file name, SVG text)`.
pub fn plots(results: &Results, baseline: Option<&Baseline>) -> Vec<(String, String)> {
    AXES.iter()
        .map(|axis| (axis.file.to_owned(), plot(results, baseline, axis)))
        .collect()
}

/// The panel a cell belongs to: every knob except the strategy and the x axis.
fn panel_title(knobs: &CellKnobs, x_label: &str) -> String {
    let mut parts = Vec::new();
    if x_label != "replicas" {
        parts.push(format!("N={}", knobs.replicas));
    }
    parts.push(format!(
        "{} x{}",
        format_size(knobs.object_size),
        knobs.objects_per_txn
    ));
    if x_label != "RTT ms" {
        parts.push(format!("rtt {} ms", knobs.rtt_ms));
    }
    if x_label != "loss %" {
        parts.push(format!("loss {}%", knobs.loss * 100.0));
    }
    parts.push(
        knobs
            .rate_bits_per_s
            .map_or_else(|| "unlimited".to_owned(), format_rate),
    );
    parts.push(format!("{} client(s)", knobs.clients));
    parts.join(", ")
}

fn plot(results: &Results, baseline: Option<&Baseline>, axis: &Axis) -> String {
    let strategies = StrategyName::ALL.len();
    // The baseline's series follow the run's: strategy i of the baseline is series
    // strategies + i.
    let runs = std::iter::once((0, &results.cells)).chain(
        baseline
            .iter()
            .map(|baseline| (strategies, &baseline.results.cells)),
    );
    // Panels in the order the run reached them (the sweep's order), not alphabetical.
    let mut panels: Vec<Panel> = Vec::new();
    for (offset, cells) in runs {
        for cell in cells {
            let title = panel_title(&cell.knobs, axis.label);
            let point = Point {
                series: offset
                    + StrategyName::ALL
                        .iter()
                        .position(|strategy| *strategy == cell.knobs.strategy)
                        .unwrap_or(0),
                x: (axis.x)(&cell.knobs),
                p50: cell.figures.latency_p50_ms,
                p99: cell.figures.latency_p99_ms,
                bound: cell.figures.bound_ms,
            };
            match panels.iter_mut().find(|panel| panel.title == title) {
                Some(panel) => panel.points.push(point),
                // A baseline's workload the run did not measure is left out.
                None if offset > 0 => {}
                None => panels.push(Panel {
                    title,
                    points: vec![point],
                }),
            }
        }
    }
    panels.truncate(MAX_PANELS);
    let mut series: Vec<Series> = StrategyName::ALL
        .iter()
        .map(|strategy| Series {
            name: strategy.to_string(),
            colour: colour(*strategy),
        })
        .collect();
    if let Some(baseline) = baseline {
        series.extend(StrategyName::ALL.iter().map(|strategy| Series {
            name: format!("{strategy} ({})", baseline.label),
            colour: baseline_colour(*strategy),
        }));
    }
    LatencyPlot {
        title: axis.title.to_owned(),
        x_label: axis.label.to_owned(),
        y_label: "commit latency, ms".to_owned(),
        note: "solid p50, dashed p99, dotted lower bound (ms)".to_owned(),
        series,
        panels,
        layout: Layout::default(),
    }
    .to_svg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::Sweep;
    use crate::record::Figures;

    fn results(rtts: &[f64]) -> Results {
        let mut sweep = Sweep::default_grid();
        sweep.replicas = vec![4];
        sweep.losses = vec![0.0];
        sweep.object_sizes = vec![65536];
        sweep.rtts_ms = rtts.to_vec();
        Results::made_up(&sweep, |knobs| Figures {
            latency_p50_ms: knobs.rtt_ms * 3.0,
            latency_p99_ms: knobs.rtt_ms * 4.0,
            bound_ms: knobs.rtt_ms * 3.0,
            ..Figures::default()
        })
    }

    #[test]
    fn a_run_is_drawn_against_rtt_and_a_baseline_beside_it() {
        let run = results(&[20.0, 80.0]);
        let alone = plots(&run, None);
        let names: Vec<&str> = alone.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "latency-vs-replicas.svg",
                "latency-vs-loss.svg",
                "latency-vs-rtt.svg"
            ]
        );
        let baseline = Baseline {
            label: "before".into(),
            results: results(&[20.0, 80.0]),
        };
        let (_, rtt) = &plots(&run, Some(&baseline))[2];
        assert!(rtt.contains("multicast (before)"), "the baseline's legend");
        assert!(rtt.contains(baseline_colour(StrategyName::Multicast)));
        assert!(!alone[2].1.contains("(before)"));
    }
}
