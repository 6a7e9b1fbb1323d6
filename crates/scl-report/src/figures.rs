//! PNG figures of a sweep, drawn with plotters: geometry along training (one curve per
//! imbalance ratio, ReLU and no-ReLU panels) and Gram heatmaps of the final class means.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use scl_experiments::experiment::Experiment;
use scl_experiments::records::{DeepSummary, UfmSummary};

/// One figure file of a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// The setting the figure belongs to (all axes but R, the activation and the seed).
    pub group: String,
    /// What it shows.
    pub title: String,
    /// Where it was written.
    pub path: PathBuf,
    /// Its path relative to the report (`figures/<name>.png`).
    pub relative_path: String,
}

/// One logged point of one cell.
#[derive(Debug, Clone, Copy)]
struct Point {
    x: f64,
    of_distance: f64,
    nc1: f64,
    mean_cosine: f64,
}

/// The curve of one cell, with where it goes.
struct Trace {
    group: String,
    relu: bool,
    /// Curve label (`R=10`, `step-R10`).
    curve: String,
    /// Sort key of the curve (the ratio).
    order: f64,
    seed: u64,
    points: Vec<Point>,
    gram: Vec<Vec<f64>>,
    x_label: &'static str,
}

/// A metric drawn along training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    OfDistance,
    Nc1,
    MeanCosine,
}

impl Metric {
    const ALL: [Metric; 3] = [Metric::OfDistance, Metric::Nc1, Metric::MeanCosine];

    /// File stem, title, y label, log scale.
    fn labels(self) -> (&'static str, &'static str, &'static str, bool) {
        match self {
            Self::OfDistance => (
                "of_distance",
                "OF distance",
                "||G/||G|| - I/sqrt(K)||",
                false,
            ),
            Self::Nc1 => ("nc1", "NC1 (log scale)", "Tr(S_W S_B^+)", true),
            Self::MeanCosine => (
                "mean_cosine",
                "Mean cosine of the class means",
                "mean off-diagonal cosine",
                false,
            ),
        }
    }

    fn of(self, p: &Point) -> f64 {
        match self {
            Self::OfDistance => p.of_distance,
            Self::Nc1 => p.nc1,
            Self::MeanCosine => p.mean_cosine,
        }
    }
}

/// Errors of drawing, as text.
fn draw_error<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

/// Registers the embedded DejaVu Sans as plotters' "sans-serif" (once per process).
fn register_fonts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The font bytes are valid TrueType; registration cannot fail for them.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// The axes of a cell that name its setting (all but ratio / imbalance, activation, seed).
fn group_of(kind: &str, axes: &[(String, String)]) -> String {
    let rest: Vec<String> = axes
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "ratio" | "relu" | "seed" | "imbalance" | "final_activation"
            )
        })
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if rest.is_empty() {
        kind.to_string()
    } else {
        format!("{kind} {}", rest.join(" "))
    }
}

fn traces(
    experiment: &Experiment,
    root: &Path,
    ufm: &[UfmSummary],
    deep: &[DeepSummary],
) -> Vec<Trace> {
    let mut out = Vec::new();
    for s in ufm {
        let Some(cell) = experiment.cells.iter().find(|c| c.id == s.cell_id) else {
            continue;
        };
        out.push(Trace {
            group: group_of("UFM", &cell.axes),
            relu: s.config.relu,
            curve: format!("R={}", s.config.ratio),
            order: s.config.ratio,
            seed: s.config.seed,
            points: scl_experiments::records::read_metrics_csv(root, &s.cell_id)
                .iter()
                .map(|r| Point {
                    x: r.step as f64,
                    of_distance: r.of_distance,
                    nc1: r.nc1,
                    mean_cosine: r.mean_cosine,
                })
                .collect(),
            gram: s.outcome.class_mean_gram.clone(),
            x_label: "step",
        });
    }
    for s in deep {
        let Some(cell) = experiment.deep_cells.iter().find(|c| c.id == s.cell_id) else {
            continue;
        };
        let c = &s.config;
        let order = match &c.imbalance {
            scl_data::Imbalance::Step { ratio, .. }
            | scl_data::Imbalance::LongTail { ratio, .. } => *ratio,
            _ => 1.0,
        };
        let kind = format!(
            "{} {}",
            c.dataset,
            scl_experiments::experiment::serde_plain(&c.model)
        );
        out.push(Trace {
            group: group_of(&kind, &cell.axes),
            relu: matches!(c.final_activation, scl_types::model::FinalActivation::Relu),
            curve: c.imbalance.label(),
            order,
            seed: c.seed,
            points: s
                .outcome
                .metrics
                .iter()
                .map(|m| Point {
                    x: m.epoch as f64,
                    of_distance: m.geometry.overall.of_distance,
                    nc1: m.geometry.overall.nc1,
                    mean_cosine: m.geometry.overall.mean_cosine,
                })
                .collect(),
            gram: s
                .outcome
                .metrics
                .last()
                .map(|m| m.gram.clone())
                .unwrap_or_default(),
            x_label: "epoch",
        });
    }
    out
}

/// A curve: label and (x, mean over seeds) points.
type Curve = (String, Vec<(f64, f64)>);

/// The curves of one panel for one metric: one per label, seeds averaged point by point.
fn panel_curves(traces: &[&Trace], relu: bool, metric: Metric) -> Vec<Curve> {
    let mut by_curve: BTreeMap<(u64, String), Vec<&Trace>> = BTreeMap::new();
    for t in traces.iter().filter(|t| t.relu == relu) {
        by_curve
            .entry((t.order.to_bits(), t.curve.clone()))
            .or_default()
            .push(t);
    }
    let mut keys: Vec<(u64, String)> = by_curve.keys().cloned().collect();
    keys.sort_by(|a, b| {
        f64::from_bits(a.0)
            .total_cmp(&f64::from_bits(b.0))
            .then(a.1.cmp(&b.1))
    });
    keys.into_iter()
        .map(|key| {
            let runs = &by_curve[&key];
            let len = runs.iter().map(|t| t.points.len()).min().unwrap_or(0);
            let points = (0..len)
                .map(|i| {
                    let x = runs[0].points[i].x;
                    let y = runs.iter().map(|t| metric.of(&t.points[i])).sum::<f64>()
                        / runs.len() as f64;
                    (x, y)
                })
                .collect();
            (key.1, points)
        })
        .collect()
}

const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Draws one panel of line curves; `log` puts the y axis on a log scale (non-positive values
/// are left out).
fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    curves: &[Curve],
    log: bool,
) -> Result<(), String> {
    let values = curves
        .iter()
        .flat_map(|(_, p)| p.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log || *y > 0.0));
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in values {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, if log { 1e-3 } else { 0.0 }, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    // The axis spans the data plus a margin (at least 1e-3 each side); its labels need the
    // decimals of that span, not of the data alone (a flat curve would get 2).
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    let decimals = tick_decimals(y0 - pad, y1 + pad);
    let e = |e: DrawingAreaErrorKind<_>| format!("{title}: {e}");
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .x_label_formatter(&|x: &f64| format!("{x:.0}"))
                .y_label_formatter(&|y: &f64| {
                    if log {
                        format!("{y:.0e}")
                    } else {
                        format!("{y:.decimals$}")
                    }
                })
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(e)?;
            for (i, (label, points)) in curves.iter().enumerate() {
                let colour = COLOURS[i % COLOURS.len()];
                let kept: Vec<(f64, f64)> = points
                    .iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log || *y > 0.0))
                    .collect();
                chart
                    .draw_series(LineSeries::new(kept.clone(), colour.stroke_width(2)))
                    .map_err(e)?
                    .label(label.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                    });
                chart
                    .draw_series(kept.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                    .map_err(e)?;
            }
            if !curves.is_empty() {
                chart
                    .configure_series_labels()
                    .label_font(("sans-serif", 14))
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .position(SeriesLabelPosition::UpperRight)
                    .draw()
                    .map_err(e)?;
            }
        }};
    }
    if log {
        let (lo, hi) = (y0 / 1.5, y1 * 1.5);
        finish!(
            builder
                .build_cartesian_2d(x0..x1, (lo..hi).log_scale())
                .map_err(e)?
        );
    } else {
        finish!(
            builder
                .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
                .map_err(e)?
        );
    }
    Ok(())
}

/// Decimals of a linear axis's tick labels for data from `lo` to `hi`: enough that labels
/// about a twentieth of the range apart differ (the mesh puts up to ten labels on the padded
/// range, at steps of 1, 2 or 5 times a power of ten), at least 2 and at most 6. With a fixed
/// 2, a range of 0.05 (OF distances early in training) was labelled 1.10, 1.11, 1.11, ...
fn tick_decimals(lo: f64, hi: f64) -> usize {
    let range = hi - lo;
    if !range.is_finite() || range <= 0.0 {
        return 2;
    }
    (-(range / 20.0).log10()).ceil().clamp(2.0, 6.0) as usize
}

/// Diverging colour of `v` in [-1, 1]: blue (negative), white (0), red (positive).
fn diverging(v: f64) -> RGBColor {
    let v = v.clamp(-1.0, 1.0);
    let fade = |c: u8, t: f64| (255.0 + (f64::from(c) - 255.0) * t).round() as u8;
    if v >= 0.0 {
        RGBColor(fade(178, v), fade(24, v), fade(43, v))
    } else {
        RGBColor(fade(33, -v), fade(102, -v), fade(172, -v))
    }
}

/// Draws `G / max|G|` as a heatmap with the values written in the cells (up to K = 12).
fn draw_heatmap(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    gram: &[Vec<f64>],
) -> Result<(), String> {
    let k = gram.len();
    let e = |e: DrawingAreaErrorKind<_>| format!("{title}: {e}");
    let chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(30)
        .build_cartesian_2d(0..k.max(1), (0..k.max(1)).into_segmented())
        .map_err(e)?;
    let scale = gram
        .iter()
        .flatten()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    let plot = chart.plotting_area();
    for (i, row) in gram.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let r = k - 1 - i;
            let cell = Rectangle::new(
                [
                    (j, SegmentValue::Exact(r)),
                    (j + 1, SegmentValue::Exact(r + 1)),
                ],
                diverging(v / scale).filled(),
            );
            plot.draw(&cell).map_err(e)?;
            if k <= 12 {
                let text = format!("{:.2}", v / scale);
                plot.draw(&Text::new(
                    text,
                    (j, SegmentValue::CenterOf(r)),
                    ("sans-serif", 13).into_font().color(&BLACK),
                ))
                .map_err(e)?;
            }
        }
    }
    Ok(())
}

/// Draws a white PNG of `size` split into a left and a right panel, through a temporary file
/// and a rename, so a reader never sees half a PNG.
fn two_panel_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&[DrawingArea<BitMapBackend<'_>, Shift>]) -> Result<(), String>,
) -> Result<(), String> {
    let mut failure = None;
    let written = scl_fs::write_with(path, |tmp| {
        let area = BitMapBackend::new(tmp, size).into_drawing_area();
        let drawn = area
            .fill(&WHITE)
            .map_err(draw_error(path))
            .and_then(|()| draw(&area.split_evenly((1, 2))))
            .and_then(|()| area.present().map_err(draw_error(path)));
        drawn.map_err(|e| {
            failure = Some(e);
            std::io::Error::other("drawing failed")
        })
    });
    match (written, failure) {
        (_, Some(e)) => Err(e),
        (Err(e), None) => Err(e.to_string()),
        (Ok(()), None) => Ok(()),
    }
}

/// Draws every figure of a sweep into `<root>/figures/` and returns them, grouped by setting.
///
/// Per setting: `<setting>-of_distance.png`, `-nc1.png`, `-mean_cosine.png` (two panels,
/// final ReLU and none, one curve per R, seeds averaged) and `-gram.png` (the Gram matrices
/// of the final class means at the largest R, ReLU and none side by side) when both
/// activations have finished there.
///
/// # Errors
/// A message naming the file that could not be drawn or written.
pub fn draw_figures(
    experiment: &Experiment,
    root: &Path,
    ufm: &[UfmSummary],
    deep: &[DeepSummary],
) -> Result<Vec<Figure>, String> {
    register_fonts();
    let dir = root.join("figures");
    std::fs::create_dir_all(&dir).map_err(draw_error(&dir))?;
    let all = traces(experiment, root, ufm, deep);
    let mut groups: BTreeMap<&str, Vec<&Trace>> = BTreeMap::new();
    for t in &all {
        groups.entry(t.group.as_str()).or_default().push(t);
    }
    let mut figures = Vec::new();
    for (group, traces) in groups {
        let x_label = traces[0].x_label;
        for metric in Metric::ALL {
            let (stem, title, y_label, log) = metric.labels();
            let name = format!("{}-{stem}.png", slug(group));
            let path = dir.join(&name);
            two_panel_png(&path, (1400, 520), |panels| {
                for (panel, relu) in panels.iter().zip([true, false]) {
                    let curves = panel_curves(&traces, relu, metric);
                    let heading =
                        format!("{title}, {}", if relu { "final ReLU" } else { "no ReLU" });
                    draw_panel(panel, &heading, x_label, y_label, &curves, log)?;
                }
                Ok(())
            })?;
            figures.push(Figure {
                group: group.to_string(),
                title: format!("{title}: {group}"),
                path,
                relative_path: format!("figures/{name}"),
            });
        }
        // Gram heatmaps at the largest R where both activations have a finished run.
        let largest = traces
            .iter()
            .filter(|t| !t.gram.is_empty())
            .map(|t| t.order)
            .fold(f64::NEG_INFINITY, f64::max);
        let pick = |relu: bool| {
            traces
                .iter()
                .filter(|t| t.relu == relu && t.order == largest && !t.gram.is_empty())
                .min_by_key(|t| t.seed)
        };
        if let (Some(with), Some(without)) = (pick(true), pick(false)) {
            let name = format!("{}-gram.png", slug(group));
            let path = dir.join(&name);
            two_panel_png(&path, (1100, 560), |panels| {
                draw_heatmap(
                    &panels[0],
                    &format!("final ReLU, {} (seed {})", with.curve, with.seed),
                    &with.gram,
                )?;
                draw_heatmap(
                    &panels[1],
                    &format!("no ReLU, {} (seed {})", without.curve, without.seed),
                    &without.gram,
                )
            })?;
            figures.push(Figure {
                group: group.to_string(),
                title: format!("Gram matrix of the class means at {}: {group}", with.curve),
                path,
                relative_path: format!("figures/{name}"),
            });
        }
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::tick_decimals;

    #[test]
    fn tick_labels_a_twentieth_of_the_range_apart_differ() {
        for (lo, hi) in [
            (1.10, 1.155),
            (0.0, 1.0),
            (0.2, 0.202),
            (5.0, 500.0),
            (-3.0, -2.9),
        ] {
            let d = tick_decimals(lo, hi);
            let step = (hi - lo) / 20.0;
            let (a, b) = (format!("{lo:.d$}"), format!("{:.d$}", lo + step));
            assert_ne!(a, b, "range {lo}..{hi} with {d} decimals");
        }
        assert_eq!(tick_decimals(1.10, 1.155), 3);
        assert_eq!(tick_decimals(0.0, 1.0), 2);
        assert_eq!(tick_decimals(1.0, 1.0), 2);
        assert_eq!(tick_decimals(0.0, 1e-12), 6);
    }
}
