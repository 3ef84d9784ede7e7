//! The report's plots, as SVG strings (plotters' SVG backend writes text as `<text>` elements,
//! so no font is read here; the browser renders them).

use anyhow::Result;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const SIZE: (u32, u32) = (860, 480);
const FONT: &str = "sans-serif";
/// One colour per series, the same series keeps its colour across plots.
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];
const GREY: RGBColor = RGBColor(120, 120, 120);

/// A colour for a series name, stable across plots.
fn colour(name: &str) -> RGBColor {
    let index = match name {
        n if n.starts_with("xdp") => 0,
        n if n.starts_with("afxdp") => 1,
        n if n.starts_with("sockets") => 2,
        n if n.starts_with("rtpengine") || n.starts_with("kamailio") => 3,
        n if n.starts_with("sluice") => 4,
        _ => 5,
    };
    COLOURS[index]
}

/// One step of a streams sweep, as plotted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossPoint {
    /// Concurrent streams.
    pub streams: u64,
    /// Loss, percent.
    pub loss_percent: f64,
    /// The generator fell behind: the step measures the generator, not the relay.
    pub generator_saturated: bool,
}

/// Loss against the stream count, one line per relay; hollow markers where the generator
/// fell behind, the clean threshold dashed. The counts sit at equal spacing in order (sweeps
/// double them, so this reads as a log scale), each labelled with its value.
pub fn streams_vs_loss(
    series: &[(String, Vec<LossPoint>)],
    threshold_percent: f64,
) -> Result<String> {
    let mut counts: Vec<u64> = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.streams))
        .collect();
    counts.sort_unstable();
    counts.dedup();
    let position = |streams: u64| counts.binary_search(&streams).unwrap_or(0) as f64;
    let max_loss = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.loss_percent))
        .fold(0.0, f64::max);
    let y_max = (max_loss.max(threshold_percent * 2.0) * 1.15).max(1e-3);
    let n = counts.len().max(1);
    let x_range = -0.5f64..(n as f64 - 0.5);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let (upper, note) = root.split_vertically(SIZE.1 - 22);
        let mut chart = ChartBuilder::on(&upper)
            .caption("Packet loss against concurrent streams", (FONT, 20))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x_range.clone(), 0f64..y_max)?;
        chart
            .configure_mesh()
            .x_labels(n)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    counts
                        .get(i as usize)
                        .map_or_else(String::new, |c| c.to_string())
                } else {
                    String::new()
                }
            })
            .x_desc("concurrent streams (50 packets/s each)")
            .y_desc("loss %")
            .y_label_formatter(&|y| trim_float(*y))
            .label_style((FONT, 13))
            .draw()?;
        chart
            .draw_series(DashedLineSeries::new(
                [
                    (x_range.start, threshold_percent),
                    (x_range.end, threshold_percent),
                ],
                6,
                4,
                GREY.stroke_width(1),
            ))?
            .label(format!(
                "clean threshold ({}% loss)",
                trim_float(threshold_percent)
            ))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREY.stroke_width(1)));
        for (i, (name, points)) in series.iter().enumerate() {
            let c = colour(name);
            let (width, radius) = layered(i, series.len());
            let line: Vec<(f64, f64)> = points
                .iter()
                .map(|p| (position(p.streams), p.loss_percent))
                .collect();
            chart
                .draw_series(LineSeries::new(line, c.stroke_width(width)))?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                });
            chart.draw_series(points.iter().map(|p| {
                let style = if p.generator_saturated {
                    c.stroke_width(2)
                } else {
                    c.filled()
                };
                Circle::new((position(p.streams), p.loss_percent), radius, style)
            }))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(GREY)
            .draw()?;
        note.draw(&Text::new(
            "filled marker: a step run to its end; hollow: the generator fell behind (its limit, not the relay's)",
            (14, 4),
            TextStyle::from((FONT, 12).into_font()).color(&GREY),
        ))?;
        root.present()?;
    }
    Ok(svg)
}

/// One-way latency percentiles (p50, p99, p99.9, microseconds) per relay as grouped bars on a
/// log scale, each bar labelled with its value.
pub fn latency(groups: &[(String, [u64; 3])], streams: u64) -> Result<String> {
    let max = groups
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .max()
        .unwrap_or(1)
        .max(10) as f64;
    let n = groups.len().max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("One-way latency at {streams} streams"), (FONT, 20))
            .margin(14)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), (1f64..max * 4.0).log_scale())?;
        let names: Vec<String> = groups.iter().map(|(n, _)| n.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    names.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc("microseconds (log scale)")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style((FONT, 13))
            .draw()?;
        const PERCENTILES: [&str; 3] = ["p50", "p99", "p99.9"];
        const WIDTH: f64 = 0.26;
        for (k, label) in PERCENTILES.iter().enumerate() {
            let c = COLOURS[k];
            let bars = groups.iter().enumerate().map(move |(i, (_, values))| {
                let x0 = i as f64 - 1.5 * WIDTH + k as f64 * WIDTH;
                let top = (values[k] as f64).max(1.0);
                Rectangle::new([(x0 + 0.01, 1.0), (x0 + WIDTH - 0.01, top)], c.filled())
            });
            chart
                .draw_series(bars)?
                .label(*label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
            let labels = groups.iter().enumerate().map(move |(i, (_, values))| {
                let x = i as f64 - 1.5 * WIDTH + (k as f64 + 0.5) * WIDTH;
                Text::new(
                    values[k].to_string(),
                    (x, (values[k] as f64).max(1.0) * 1.08),
                    TextStyle::from((FONT, 11).into_font())
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            });
            chart.draw_series(labels)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(GREY)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// Failed ratio (percent) against the offered rate, one line per target, the clean threshold
/// dashed.
pub fn rate_vs_failed(
    title: &str,
    x_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
    threshold_percent: f64,
) -> Result<String> {
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let max_rate = points.clone().map(|p| p.0).fold(1.0, f64::max);
    let max_failed = points.map(|p| p.1).fold(0.0, f64::max);
    let y_max = (max_failed.max(threshold_percent * 2.0) * 1.15).max(1e-3);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 20))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..max_rate * 1.08, 0f64..y_max)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc("failed %")
            .x_label_formatter(&|x| trim_float(*x))
            .y_label_formatter(&|y| trim_float(*y))
            .label_style((FONT, 13))
            .draw()?;
        chart
            .draw_series(DashedLineSeries::new(
                [
                    (0.0, threshold_percent),
                    (max_rate * 1.08, threshold_percent),
                ],
                6,
                4,
                GREY.stroke_width(1),
            ))?
            .label(format!(
                "clean threshold ({}% failed)",
                trim_float(threshold_percent)
            ))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREY.stroke_width(1)));
        for (i, (name, points)) in series.iter().enumerate() {
            let c = colour(name);
            let (width, radius) = layered(i, series.len());
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    c.stroke_width(width),
                ))?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                });
            chart.draw_series(points.iter().map(|&p| Circle::new(p, radius, c.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(GREY)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// Line width and marker radius of series `i` of `n`: earlier series are drawn wider, so a
/// later one on the same points (equal figures) shows inside it instead of hiding it.
fn layered(i: usize, n: usize) -> (u32, u32) {
    let below = n.saturating_sub(i + 1).min(4) as u32;
    (2 + 2 * below, 4 + 2 * below)
}

/// `0.1`, `2`, `12.5`: no trailing zeros.
fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_svg(svg: &str) {
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn plots_streams_against_loss() {
        let p = |streams, loss_percent, generator_saturated| LossPoint {
            streams,
            loss_percent,
            generator_saturated,
        };
        let svg = streams_vs_loss(
            &[
                (
                    "xdp".into(),
                    vec![p(500, 0.0, false), p(1000, 0.0, false), p(2000, 0.0, true)],
                ),
                (
                    "rtpengine (ng)".into(),
                    vec![p(500, 0.0, false), p(1000, 2.5, false)],
                ),
            ],
            0.1,
        )
        .expect("plot");
        is_svg(&svg);
        for text in [
            "xdp",
            "rtpengine (ng)",
            "loss %",
            "clean threshold (0.1% loss)",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
    }

    #[test]
    fn plots_latency_bars_with_values() {
        let svg = latency(
            &[
                ("none".into(), [17, 93, 2663]),
                ("xdp".into(), [34, 1175, 3447]),
                ("sockets".into(), [0, 316_671, 374_271]),
            ],
            2000,
        )
        .expect("plot");
        is_svg(&svg);
        for text in ["none", "xdp", "sockets", "p99.9", "316671", "2000 streams"] {
            assert!(svg.contains(text), "{text} missing");
        }
    }

    #[test]
    fn plots_rates_and_empty_series() {
        let svg = rate_vs_failed(
            "Calls",
            "calls/s",
            &[
                ("sluice".into(), vec![(50.0, 0.0), (100.0, 0.2)]),
                ("kamailio".into(), vec![]),
            ],
            1.0,
        )
        .expect("plot");
        is_svg(&svg);
        assert!(svg.contains("kamailio") && svg.contains("failed %"));
        // Nothing at all still draws axes.
        is_svg(&rate_vs_failed("R", "x", &[], 1.0).expect("plot"));
        is_svg(&streams_vs_loss(&[], 0.1).expect("plot"));
        is_svg(&latency(&[], 2000).expect("plot"));
    }

    #[test]
    fn trims_floats() {
        assert_eq!(trim_float(0.1), "0.1");
        assert_eq!(trim_float(2.0), "2");
        assert_eq!(trim_float(0.0), "0");
        assert_eq!(trim_float(12.5), "12.5");
    }
}
