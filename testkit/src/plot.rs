//! Plots in SVG, written by hand (a few dozen elements need no plotting library), of two
//! kinds that share the page: panels side by side, a title, a legend of the series (one colour
//! each) and a note.
//!
//! - [`LatencyPlot`]: one line per series (a strategy, say), the p50 solid with a marker per
//!   point, the p99 dashed, a lower bound dotted. The x axis is categorical: the distinct x
//!   values of a panel, evenly spaced in increasing order.
//! - [`CdfPlot`]: the cumulative distribution of each series' values (delays, say) as a step
//!   line, over a logarithmic x axis (delays span decades), 0-100% up.
//!
//! ```
//! use replicast_testkit::plot::{Layout, LatencyPlot, Panel, Point, Series};
//!
//! let plot = LatencyPlot {
//!     title: "Commit latency against replicas".into(),
//!     x_label: "replicas".into(),
//!     y_label: "commit latency, ms".into(),
//!     note: "solid p50, dashed p99, dotted lower bound (ms)".into(),
//!     series: vec![Series { name: "unicast".into(), colour: "#d62728" }],
//!     panels: vec![Panel {
//!         title: "64 KiB x1".into(),
//!         points: vec![
//!             Point { series: 0, x: 1.0, p50: 2.0, p99: 3.0, bound: 1.0 },
//!             Point { series: 0, x: 4.0, p50: 5.0, p99: 9.0, bound: 4.0 },
//!         ],
//!     }],
//!     layout: Layout::default(),
//! };
//! let svg = plot.to_svg();
//! assert!(svg.starts_with("<svg") && svg.contains("<polyline"));
//! ```

use std::fmt::Write as _;

/// The geometry of a plot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Layout {
    /// Width of a panel's frame.
    pub panel_width: f64,
    /// Height of a panel's frame.
    pub panel_height: f64,
    /// Space around and between panels (their axis labels go there).
    pub margin: f64,
    /// Panels per row.
    pub columns: usize,
    /// The text size; the title is 4 larger.
    pub font_size: u32,
}

impl Default for Layout {
    /// 360 x 240 panels, three to a row, 11-point text.
    fn default() -> Self {
        Self {
            panel_width: 360.0,
            panel_height: 240.0,
            margin: 64.0,
            columns: 3,
            font_size: 11,
        }
    }
}

/// A line of the plot, in every panel where it has points.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Its name in the legend.
    pub name: String,
    /// Its colour (an SVG colour: `#d62728`).
    pub colour: &'static str,
}

/// One measurement: a series' p50, p99 and lower bound at `x`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// The index of its series in [`LatencyPlot::series`].
    pub series: usize,
    /// Its x value.
    pub x: f64,
    /// The median, in the y axis's unit.
    pub p50: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The lower bound.
    pub bound: f64,
}

/// A panel: its title and its points, of any series.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    /// The title above the frame.
    pub title: String,
    /// The points.
    pub points: Vec<Point>,
}

/// A plot: a title, panels in rows of [`Layout::columns`], a legend of the series and a note.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyPlot {
    /// The title at the top.
    pub title: String,
    /// The x axis's label, under every panel.
    pub x_label: String,
    /// The y axis's label, beside every panel.
    pub y_label: String,
    /// The text after the legend (what the line styles mean).
    pub note: String,
    /// The series, in legend order.
    pub series: Vec<Series>,
    /// The panels, in reading order.
    pub panels: Vec<Panel>,
    /// The geometry.
    pub layout: Layout,
}

impl LatencyPlot {
    /// The SVG document.
    pub fn to_svg(&self) -> String {
        page(
            &self.title,
            &self.note,
            &self.series,
            self.layout,
            self.panels.len(),
            |svg, number, left, top| {
                if let Some(panel) = self.panels.get(number) {
                    self.panel(svg, left, top, panel);
                }
            },
        )
    }

    fn panel(&self, svg: &mut String, left: f64, top: f64, panel: &Panel) {
        let Layout {
            panel_width,
            panel_height,
            ..
        } = self.layout;
        let mut xs: Vec<f64> = panel.points.iter().map(|point| point.x).collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        let y_max = panel
            .points
            .iter()
            .map(|point| point.p99.max(point.bound))
            .fold(1.0, f64::max)
            * 1.1;
        let x_of = |x: f64| {
            let i = xs.iter().position(|v| *v == x).unwrap_or(0) as f64;
            if xs.len() < 2 {
                left + panel_width / 2.0
            } else {
                left + 24.0 + i * (panel_width - 48.0) / (xs.len() - 1) as f64
            }
        };
        let y_of = |value: f64| top + panel_height - value / y_max * panel_height;
        frame(
            svg,
            self.layout,
            (left, top),
            &panel.title,
            &self.x_label,
            &self.y_label,
        );
        for tick in 0..=4 {
            let value = y_max * f64::from(tick) / 4.0;
            let y = y_of(value);
            let _ = writeln!(
                svg,
                r#"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="gainsboro"/><text x="{}" y="{:.1}" text-anchor="end">{value:.0}</text>"#,
                left + panel_width,
                left - 4.0,
                y + 4.0
            );
        }
        for x in &xs {
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{x}</text>"#,
                x_of(*x),
                top + panel_height + 14.0,
            );
        }
        for (index, series) in self.series.iter().enumerate() {
            let mut points: Vec<&Point> = panel
                .points
                .iter()
                .filter(|point| point.series == index)
                .collect();
            if points.is_empty() {
                continue;
            }
            points.sort_by(|a, b| a.x.total_cmp(&b.x));
            let line = |value: fn(&Point) -> f64| {
                points
                    .iter()
                    .map(|point| format!("{:.1},{:.1}", x_of(point.x), y_of(value(point))))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let stroke = series.colour;
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{stroke}" stroke-width="2"/>"#,
                line(|point| point.p50)
            );
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{stroke}" stroke-dasharray="6 4"/>"#,
                line(|point| point.p99)
            );
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{stroke}" stroke-dasharray="1 3" opacity="0.7"/>"#,
                line(|point| point.bound)
            );
            for point in &points {
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{stroke}"/>"#,
                    x_of(point.x),
                    y_of(point.p50)
                );
            }
        }
    }
}

/// The cumulative distribution of one series' values in a panel.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    /// The index of its series in [`CdfPlot::series`].
    pub series: usize,
    /// Buckets of values in increasing order: each bucket's upper bound (in the x axis's unit)
    /// and how many values it holds (a histogram's non-empty buckets).
    pub buckets: Vec<(f64, u64)>,
}

/// A panel of cumulative distributions: its title and a curve per series shown.
#[derive(Clone, Debug, PartialEq)]
pub struct CdfPanel {
    /// The title above the frame.
    pub title: String,
    /// The curves.
    pub curves: Vec<Curve>,
}

/// A plot of cumulative distributions: for each curve, the share of its values at or below
/// x, a step at each bucket's upper bound (so it never shows a value smaller than it was). The
/// x axis is logarithmic, in whole decades around the panel's values, ticked at 1, 2 and 5;
/// values of 0 or less sit at its left end.
///
/// ```
/// use replicast_testkit::plot::{CdfPanel, CdfPlot, Curve, Layout, Series};
///
/// let plot = CdfPlot {
///     title: "Repair delay".into(),
///     x_label: "ms".into(),
///     note: "share of repairs within x".into(),
///     series: vec![Series { name: "1% loss".into(), colour: "#1f77b4" }],
///     panels: vec![CdfPanel {
///         title: "loopback".into(),
///         curves: vec![Curve { series: 0, buckets: vec![(0.5, 90), (4.0, 10)] }],
///     }],
///     layout: Layout::default(),
/// };
/// let svg = plot.to_svg();
/// assert!(svg.starts_with("<svg") && svg.contains("<polyline"));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct CdfPlot {
    /// The title at the top.
    pub title: String,
    /// The x axis's label (the values' unit), under every panel.
    pub x_label: String,
    /// The text after the legend.
    pub note: String,
    /// The series, in legend order.
    pub series: Vec<Series>,
    /// The panels, in reading order.
    pub panels: Vec<CdfPanel>,
    /// The geometry.
    pub layout: Layout,
}

impl CdfPlot {
    /// The SVG document.
    pub fn to_svg(&self) -> String {
        page(
            &self.title,
            &self.note,
            &self.series,
            self.layout,
            self.panels.len(),
            |svg, number, left, top| {
                if let Some(panel) = self.panels.get(number) {
                    self.panel(svg, left, top, panel);
                }
            },
        )
    }

    fn panel(&self, svg: &mut String, left: f64, top: f64, panel: &CdfPanel) {
        let Layout {
            panel_width,
            panel_height,
            ..
        } = self.layout;
        frame(
            svg,
            self.layout,
            (left, top),
            &panel.title,
            &self.x_label,
            "share at or below x",
        );
        // Whole decades around the positive values (one decade if there are none).
        let positive = || {
            panel
                .curves
                .iter()
                .flat_map(|curve| curve.buckets.iter().map(|(x, _)| *x))
                .filter(|x| *x > 0.0)
        };
        let low = positive().fold(f64::INFINITY, f64::min);
        let high = positive().fold(0.0, f64::max);
        let (low, high) = if low.is_finite() {
            let low = low.log10().floor();
            (low, high.log10().ceil().max(low + 1.0))
        } else {
            (0.0, 1.0)
        };
        let x_of = |x: f64| {
            let decades = if x > 0.0 { x.log10() - low } else { 0.0 };
            left + decades.clamp(0.0, high - low) / (high - low) * panel_width
        };
        let y_of = |share: f64| top + panel_height - share * panel_height;
        for percent in [0u32, 25, 50, 75, 90, 100] {
            let y = y_of(f64::from(percent) / 100.0);
            let _ = writeln!(
                svg,
                r#"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="gainsboro"/><text x="{}" y="{:.1}" text-anchor="end">{percent}%</text>"#,
                left + panel_width,
                left - 4.0,
                y + 4.0
            );
        }
        // Bounded: the decades of a finite f64 range are at most about 650.
        for decade in (low as i32)..(high as i32) {
            for step in [1.0, 2.0, 5.0] {
                let value = step * 10f64.powi(decade);
                let x = x_of(value);
                let _ = writeln!(
                    svg,
                    r#"<line x1="{x:.1}" x2="{x:.1}" y1="{top}" y2="{}" stroke="gainsboro"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
                    top + panel_height,
                    top + panel_height + 14.0,
                    tick_label(value)
                );
            }
        }
        let last = 10f64.powi(high as i32);
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x_of(last),
            top + panel_height + 14.0,
            tick_label(last)
        );
        for curve in &panel.curves {
            let Some(series) = self.series.get(curve.series) else {
                continue;
            };
            let total: u64 = curve.buckets.iter().map(|(_, count)| count).sum();
            if total == 0 {
                continue;
            }
            let mut seen = 0u64;
            let mut points = Vec::with_capacity(2 * curve.buckets.len());
            for (x, count) in &curve.buckets {
                let below = seen as f64 / total as f64;
                seen += count;
                let at = seen as f64 / total as f64;
                points.push(format!("{:.1},{:.1}", x_of(*x), y_of(below)));
                points.push(format!("{:.1},{:.1}", x_of(*x), y_of(at)));
            }
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
                points.join(" "),
                series.colour
            );
        }
    }
}

/// A tick's value as text: no trailing zeros, no binary fractions (0.2, not 0.2000000001).
fn tick_label(value: f64) -> String {
    format!("{}", (value * 1e6).round() / 1e6)
}

/// The page every plot shares: the title, `panels` panels in rows of [`Layout::columns`]
/// (drawn by `panel`, given the panel's number and its frame's top left corner), the legend
/// of the series and the note.
fn page(
    title: &str,
    note: &str,
    series: &[Series],
    layout: Layout,
    panels: usize,
    mut panel: impl FnMut(&mut String, usize, f64, f64),
) -> String {
    let Layout {
        panel_width,
        panel_height,
        margin,
        columns,
        font_size,
    } = layout;
    let columns = columns.max(1);
    let rows = panels.div_ceil(columns).max(1);
    let width = margin + panels.clamp(1, columns) as f64 * (panel_width + margin);
    let height = 40.0 + rows as f64 * (panel_height + 2.0 * margin) + 30.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="{font_size}">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{margin}" y="22" font-size="{}">{}</text>"#,
        font_size + 4,
        escape(title)
    );
    for number in 0..panels {
        let left = margin + (number % columns) as f64 * (panel_width + margin);
        let top = 40.0 + margin * 0.6 + (number / columns) as f64 * (panel_height + 2.0 * margin);
        panel(&mut svg, number, left, top);
    }
    let legend_y = height - 12.0;
    for (i, series) in series.iter().enumerate() {
        let x = margin + i as f64 * 110.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{x}" x2="{}" y1="{}" y2="{}" stroke="{}" stroke-width="2"/><text x="{}" y="{legend_y}">{}</text>"#,
            x + 20.0,
            legend_y - 4.0,
            legend_y - 4.0,
            series.colour,
            x + 24.0,
            escape(&series.name)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{legend_y}">{}</text>"#,
        margin + series.len() as f64 * 110.0,
        escape(note)
    );
    svg.push_str("</svg>\n");
    svg
}

/// A panel's frame with its title above, its x axis's label below and its y axis's beside.
fn frame(
    svg: &mut String,
    layout: Layout,
    (left, top): (f64, f64),
    title: &str,
    x_label: &str,
    y_label: &str,
) {
    let Layout {
        panel_width,
        panel_height,
        ..
    } = layout;
    let _ = writeln!(
        svg,
        r#"<rect x="{left}" y="{top}" width="{panel_width}" height="{panel_height}" fill="none" stroke="gray"/><text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        left + panel_width / 2.0,
        top - 8.0,
        escape(title)
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text><text x="{}" y="{}" transform="rotate(-90 {} {})" text-anchor="middle">{}</text>"#,
        left + panel_width / 2.0,
        top + panel_height + 30.0,
        escape(x_label),
        left - 44.0,
        top + panel_height / 2.0,
        left - 44.0,
        top + panel_height / 2.0,
        escape(y_label)
    );
}

/// `text` with the characters SVG text must not hold escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plot(panels: usize) -> LatencyPlot {
        LatencyPlot {
            title: "a < b".into(),
            x_label: "replicas".into(),
            y_label: "ms".into(),
            note: "solid p50".into(),
            series: vec![
                Series {
                    name: "unicast".into(),
                    colour: "#d62728",
                },
                Series {
                    name: "multicast".into(),
                    colour: "#1f77b4",
                },
            ],
            panels: (0..panels)
                .map(|panel| Panel {
                    title: format!("panel {panel}"),
                    points: [4.0, 1.0]
                        .into_iter()
                        .map(|x| Point {
                            series: 1,
                            x,
                            p50: x,
                            p99: 2.0 * x,
                            bound: x / 2.0,
                        })
                        .collect(),
                })
                .collect(),
            layout: Layout::default(),
        }
    }

    #[test]
    fn panels_wrap_into_rows_and_empty_series_draw_nothing() {
        let svg = plot(4).to_svg();
        // Three columns, two rows: 64 + 3 * (360 + 64) wide, 40 + 2 * (240 + 128) + 30 high.
        assert!(
            svg.starts_with(r#"<svg xmlns="http://www.w3.org/2000/svg" width="1336" height="806""#)
        );
        assert_eq!(svg.matches("<polyline").count(), 4 * 3, "multicast only");
        assert_eq!(svg.matches("<circle").count(), 4 * 2);
        assert!(svg.contains("a &lt; b"));
        assert!(svg.ends_with("</svg>\n"));
    }

    fn cdf(buckets: Vec<(f64, u64)>) -> CdfPlot {
        CdfPlot {
            title: "delays".into(),
            x_label: "ms".into(),
            note: "share within x".into(),
            series: vec![Series {
                name: "1%".into(),
                colour: "#1f77b4",
            }],
            panels: vec![CdfPanel {
                title: "cell".into(),
                curves: vec![
                    Curve { series: 0, buckets },
                    // A series that does not exist draws nothing.
                    Curve {
                        series: 7,
                        buckets: vec![(1.0, 1)],
                    },
                ],
            }],
            layout: Layout::default(),
        }
    }

    #[test]
    fn a_cdf_steps_up_at_each_bucket_over_whole_decades() {
        // 0.5 and 4 ms: the decades 0.1 to 10, 180 px each in a 360 px panel from x = 64.
        let svg = cdf(vec![(0.5, 3), (4.0, 1)]).to_svg();
        assert_eq!(svg.matches("<polyline").count(), 1, "{svg}");
        // From 0 up to 75% at log10(0.5) + 1 = 0.70 decades (64 + 125.8), then to 100% at
        // log10(4) + 1 = 1.60 decades (64 + 288.4); the frame's top is at 40 + 0.6 * 64.
        assert!(
            svg.contains(r#"<polyline points="189.8,318.4 189.8,138.4 352.4,138.4 352.4,78.4""#),
            "{svg}"
        );
        for label in [">0.1<", ">0.2<", ">0.5<", ">1<", ">5<", ">10<", ">90%<"] {
            assert!(svg.contains(label), "{label} in {svg}");
        }
        assert!(!svg.contains(">20<") && !svg.contains(">0.05<"), "{svg}");
    }

    #[test]
    fn a_cdf_of_nothing_or_of_zeros_is_still_a_plot() {
        let empty = cdf(Vec::new()).to_svg();
        assert_eq!(empty.matches("<polyline").count(), 0);
        assert!(empty.contains(">1<") && empty.contains(">10<"), "{empty}");
        // Zero sits at the left end.
        let zeros = cdf(vec![(0.0, 2), (1.0, 2)]).to_svg();
        assert!(
            zeros.contains(r#"<polyline points="64.0,318.4 64.0,198.4 64.0,198.4"#),
            "{zeros}"
        );
    }

    #[test]
    fn points_are_drawn_in_increasing_x() {
        let svg = plot(1).to_svg();
        // x = 1 at the panel's left end (64 + 24), x = 4 at its right end (64 + 360 - 24).
        assert!(svg.contains(r#"<polyline points="88.0,"#), "{svg}");
        assert!(svg.contains(r#"<text x="88.0" y="332.4" text-anchor="middle">1</text>"#));
    }
}
