//! Latency plots in SVG, written by hand (a few dozen elements need no plotting library):
//! panels side by side, one line per series (a strategy, say) in its colour, the p50 solid with
//! a marker per point, the p99 dashed, a lower bound dotted. The x axis is categorical: the
//! distinct x values of a panel, evenly spaced in increasing order.
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
        let Layout {
            panel_width,
            panel_height,
            margin,
            columns,
            font_size,
        } = self.layout;
        let columns = columns.max(1);
        let shown = self.panels.len();
        let rows = shown.div_ceil(columns).max(1);
        let width = margin + shown.clamp(1, columns) as f64 * (panel_width + margin);
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
            escape(&self.title)
        );
        for (number, panel) in self.panels.iter().enumerate() {
            let left = margin + (number % columns) as f64 * (panel_width + margin);
            let top =
                40.0 + margin * 0.6 + (number / columns) as f64 * (panel_height + 2.0 * margin);
            self.panel(&mut svg, left, top, panel);
        }
        let legend_y = height - 12.0;
        for (i, series) in self.series.iter().enumerate() {
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
            margin + self.series.len() as f64 * 110.0,
            escape(&self.note)
        );
        svg.push_str("</svg>\n");
        svg
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
        let _ = writeln!(
            svg,
            r#"<rect x="{left}" y="{top}" width="{panel_width}" height="{panel_height}" fill="none" stroke="gray"/><text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            left + panel_width / 2.0,
            top - 8.0,
            escape(&panel.title)
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
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text><text x="{}" y="{}" transform="rotate(-90 {} {})" text-anchor="middle">{}</text>"#,
            left + panel_width / 2.0,
            top + panel_height + 30.0,
            escape(&self.x_label),
            left - 44.0,
            top + panel_height / 2.0,
            left - 44.0,
            top + panel_height / 2.0,
            escape(&self.y_label)
        );
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

    #[test]
    fn points_are_drawn_in_increasing_x() {
        let svg = plot(1).to_svg();
        // x = 1 at the panel's left end (64 + 24), x = 4 at its right end (64 + 360 - 24).
        assert!(svg.contains(r#"<polyline points="88.0,"#), "{svg}");
        assert!(svg.contains(r#"<text x="88.0" y="332.4" text-anchor="middle">1</text>"#));
    }
}
