//! SVG plots of commit latency (the testkit's [`LatencyPlot`]): against replicas and against
//! loss, one panel per remaining workload, one colour per strategy, p50 solid, p99 dashed, the
//! lower bound dotted.

use replicast_testkit::plot::{LatencyPlot, Layout, Panel, Point, Series};

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

/// The plots of a run: `(file name, SVG text)`.
pub fn plots(results: &Results) -> Vec<(String, String)> {
    vec![
        (
            "latency-vs-replicas.svg".to_owned(),
            plot(
                results,
                "Commit latency against replicas",
                "replicas",
                |k| k.replicas as f64,
            ),
        ),
        (
            "latency-vs-loss.svg".to_owned(),
            plot(results, "Commit latency against loss", "loss %", |k| {
                k.loss * 100.0
            }),
        ),
    ]
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
    parts.push(format!("rtt {} ms", knobs.rtt_ms));
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

fn plot(
    results: &Results,
    title: &str,
    x_label: &str,
    x_of_knobs: fn(&CellKnobs) -> f64,
) -> String {
    // Panels in the order the run reached them (the sweep's order), not alphabetical.
    let mut panels: Vec<Panel> = Vec::new();
    for cell in &results.cells {
        let title = panel_title(&cell.knobs, x_label);
        let point = Point {
            series: StrategyName::ALL
                .iter()
                .position(|strategy| *strategy == cell.knobs.strategy)
                .unwrap_or(0),
            x: x_of_knobs(&cell.knobs),
            p50: cell.figures.latency_p50_ms,
            p99: cell.figures.latency_p99_ms,
            bound: cell.figures.bound_ms,
        };
        match panels.iter_mut().find(|panel| panel.title == title) {
            Some(panel) => panel.points.push(point),
            None => panels.push(Panel {
                title,
                points: vec![point],
            }),
        }
    }
    panels.truncate(MAX_PANELS);
    LatencyPlot {
        title: title.to_owned(),
        x_label: x_label.to_owned(),
        y_label: "commit latency, ms".to_owned(),
        note: "solid p50, dashed p99, dotted lower bound (ms)".to_owned(),
        series: StrategyName::ALL
            .iter()
            .map(|strategy| Series {
                name: strategy.to_string(),
                colour: colour(*strategy),
            })
            .collect(),
        panels,
        layout: Layout::default(),
    }
    .to_svg()
}
