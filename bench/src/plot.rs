//! SVG plots of commit latency, written by hand (a few dozen elements need no plotting
//! library): against replicas and against loss, one panel per remaining workload, one colour
//! per strategy, p50 solid, p99 dashed, the lower bound dotted.

use std::fmt::Write as _;

use crate::grid::{CellKnobs, StrategyName, format_rate, format_size};
use crate::record::{CellRecord, Results};

const PANEL_W: f64 = 360.0;
const PANEL_H: f64 = 240.0;
const MARGIN: f64 = 64.0;
const COLUMNS: usize = 3;
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
                |x| format!("{x}"),
            ),
        ),
        (
            "latency-vs-loss.svg".to_owned(),
            plot(
                results,
                "Commit latency against loss",
                "loss %",
                |k| k.loss * 100.0,
                |x| format!("{x}"),
            ),
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
    x_text: fn(f64) -> String,
) -> String {
    // Panels in the order the run reached them (the sweep's order), not alphabetical.
    let mut panels: Vec<(String, Vec<&CellRecord>)> = Vec::new();
    for cell in &results.cells {
        let title = panel_title(&cell.knobs, x_label);
        match panels.iter_mut().find(|(name, _)| *name == title) {
            Some((_, cells)) => cells.push(cell),
            None => panels.push((title, vec![cell])),
        }
    }
    let shown = panels.len().min(MAX_PANELS);
    let rows = shown.div_ceil(COLUMNS).max(1);
    let columns = shown.clamp(1, COLUMNS);
    let width = MARGIN + columns as f64 * (PANEL_W + MARGIN);
    let height = 40.0 + rows as f64 * (PANEL_H + 2.0 * MARGIN) + 30.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{MARGIN}" y="22" font-size="15">{}</text>"#,
        escape(title)
    );
    for (number, (name, cells)) in panels.iter().take(shown).enumerate() {
        let left = MARGIN + (number % COLUMNS) as f64 * (PANEL_W + MARGIN);
        let top = 40.0 + MARGIN * 0.6 + (number / COLUMNS) as f64 * (PANEL_H + 2.0 * MARGIN);
        panel(
            &mut svg, left, top, name, cells, x_label, x_of_knobs, x_text,
        );
    }
    let legend_y = height - 12.0;
    for (i, strategy) in StrategyName::ALL.iter().enumerate() {
        let x = MARGIN + i as f64 * 110.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{x}" x2="{}" y1="{}" y2="{}" stroke="{}" stroke-width="2"/><text x="{}" y="{legend_y}">{strategy}</text>"#,
            x + 20.0,
            legend_y - 4.0,
            legend_y - 4.0,
            colour(*strategy),
            x + 24.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{legend_y}">solid p50, dashed p99, dotted lower bound (ms)</text>"#,
        MARGIN + 3.0 * 110.0
    );
    svg.push_str("</svg>\n");
    svg
}

#[allow(clippy::too_many_arguments)]
fn panel(
    svg: &mut String,
    left: f64,
    top: f64,
    name: &str,
    cells: &[&CellRecord],
    x_label: &str,
    x_of_knobs: fn(&CellKnobs) -> f64,
    x_text: fn(f64) -> String,
) {
    let mut xs: Vec<f64> = cells.iter().map(|c| x_of_knobs(&c.knobs)).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let y_max = cells
        .iter()
        .map(|c| c.figures.latency_p99_ms.max(c.figures.bound_ms))
        .fold(1.0, f64::max)
        * 1.1;
    let x_of = |x: f64| {
        let i = xs.iter().position(|v| *v == x).unwrap_or(0) as f64;
        if xs.len() < 2 {
            left + PANEL_W / 2.0
        } else {
            left + 24.0 + i * (PANEL_W - 48.0) / (xs.len() - 1) as f64
        }
    };
    let y_of = |ms: f64| top + PANEL_H - ms / y_max * PANEL_H;
    let _ = writeln!(
        svg,
        r#"<rect x="{left}" y="{top}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="gray"/><text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        left + PANEL_W / 2.0,
        top - 8.0,
        escape(name)
    );
    for tick in 0..=4 {
        let ms = y_max * f64::from(tick) / 4.0;
        let y = y_of(ms);
        let _ = writeln!(
            svg,
            r#"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="gainsboro"/><text x="{}" y="{:.1}" text-anchor="end">{ms:.0}</text>"#,
            left + PANEL_W,
            left - 4.0,
            y + 4.0
        );
    }
    for x in &xs {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x_of(*x),
            top + PANEL_H + 14.0,
            x_text(*x)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text><text x="{}" y="{}" transform="rotate(-90 {} {})" text-anchor="middle">commit latency, ms</text>"#,
        left + PANEL_W / 2.0,
        top + PANEL_H + 30.0,
        escape(x_label),
        left - 44.0,
        top + PANEL_H / 2.0,
        left - 44.0,
        top + PANEL_H / 2.0
    );
    for strategy in StrategyName::ALL {
        let mut series: Vec<&&CellRecord> = cells
            .iter()
            .filter(|c| c.knobs.strategy == strategy)
            .collect();
        if series.is_empty() {
            continue;
        }
        series.sort_by(|a, b| x_of_knobs(&a.knobs).total_cmp(&x_of_knobs(&b.knobs)));
        let points = |value: fn(&CellRecord) -> f64| {
            series
                .iter()
                .map(|c| format!("{:.1},{:.1}", x_of(x_of_knobs(&c.knobs)), y_of(value(c))))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let stroke = colour(strategy);
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{stroke}" stroke-width="2"/>"#,
            points(|c| c.figures.latency_p50_ms)
        );
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{stroke}" stroke-dasharray="6 4"/>"#,
            points(|c| c.figures.latency_p99_ms)
        );
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{stroke}" stroke-dasharray="1 3" opacity="0.7"/>"#,
            points(|c| c.figures.bound_ms)
        );
        for c in &series {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{stroke}"/>"#,
                x_of(x_of_knobs(&c.knobs)),
                y_of(c.figures.latency_p50_ms)
            );
        }
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
