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
    /// The imbalance kind of a deep cell (`step`, `long-tail`), for the rows of the main
    /// figure; `None` for UFM cells and other kinds.
    imbalance_kind: Option<&'static str>,
    /// The batch schedule (`full-batch` for a UFM cell without one).
    schedule: String,
    /// The setting without the schedule, for the figures that compare schedules.
    unscheduled: String,
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

/// The axes of a cell that name its setting (all but ratio / imbalance, activation, seed,
/// and the dataset and model that `kind` already names).
fn group_of(kind: &str, axes: &[(String, String)]) -> String {
    group_without(kind, axes, &[])
}

/// [`group_of`] without the axes named in `also`.
fn group_without(kind: &str, axes: &[(String, String)], also: &[&str]) -> String {
    let rest: Vec<String> = axes
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "ratio" | "relu" | "seed" | "imbalance" | "final_activation" | "dataset" | "model"
            ) && !also.contains(&k.as_str())
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
            imbalance_kind: None,
            schedule: s
                .config
                .schedule
                .map_or_else(|| "full-batch".to_string(), |k| k.name().to_string()),
            unscheduled: group_without("UFM", &cell.axes, &["schedule", "batch_size"]),
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
        let (order, imbalance_kind) = match &c.imbalance {
            scl_data::Imbalance::Step { ratio, .. } => (*ratio, Some("step")),
            scl_data::Imbalance::LongTail { ratio, .. } => (*ratio, Some("long-tail")),
            _ => (1.0, None),
        };
        let kind = format!(
            "{} {}",
            c.dataset,
            scl_experiments::experiment::serde_plain(&c.model)
        );
        out.push(Trace {
            group: group_of(&kind, &cell.axes),
            imbalance_kind,
            schedule: c.schedule.name().to_string(),
            unscheduled: group_without(&kind, &cell.axes, &["schedule"]),
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
    curves_by(traces, relu, metric, |t| t.curve.clone())
}

/// [`panel_curves`] with the curve label of each trace given by `label`.
fn curves_by(
    traces: &[&Trace],
    relu: bool,
    metric: Metric,
    label: impl Fn(&Trace) -> String,
) -> Vec<Curve> {
    let mut by_curve: BTreeMap<(u64, String), Vec<&Trace>> = BTreeMap::new();
    for t in traces.iter().filter(|t| t.relu == relu) {
        by_curve
            .entry((t.order.to_bits(), label(t)))
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
    y_span: Option<(f64, f64)>,
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
    if let Some((lo, hi)) = y_span {
        (y0, y1) = (lo, hi);
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
    panels_png(path, size, (1, 2), draw)
}

/// Draws a white PNG of `size` split into `rows x cols` panels (row by row), through a
/// temporary file and a rename.
fn panels_png(
    path: &Path,
    size: (u32, u32),
    grid: (usize, usize),
    draw: impl FnOnce(&[DrawingArea<BitMapBackend<'_>, Shift>]) -> Result<(), String>,
) -> Result<(), String> {
    let mut failure = None;
    let written = scl_fs::write_with(path, |tmp| {
        let area = BitMapBackend::new(tmp, size).into_drawing_area();
        let drawn = area
            .fill(&WHITE)
            .map_err(draw_error(path))
            .and_then(|()| draw(&area.split_evenly(grid)))
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

/// The rows of the paper's main figure: the imbalance kinds, each with the balanced R = 1
/// cells (a `step` cell of ratio 1) as its R = 1 curve.
const MAIN_ROWS: [&str; 2] = ["step", "long-tail"];

/// The paper's main figure at a sweep's scale, when its deep cells span more than one panel:
/// rows the imbalance kinds (step, long-tail), columns the settings (dataset and model), one
/// curve per R (seeds averaged), one file with the final ReLU and one without, for each
/// metric (`main-<metric>-relu.png`, `main-<metric>-norelu.png`).
fn main_figures(dir: &Path, all: &[Trace]) -> Result<Vec<Figure>, String> {
    let deep: Vec<&Trace> = all.iter().filter(|t| t.imbalance_kind.is_some()).collect();
    let mut columns: Vec<&str> = deep.iter().map(|t| t.group.as_str()).collect();
    columns.sort_unstable();
    columns.dedup();
    let in_row = |t: &Trace, row: &str| {
        t.imbalance_kind == Some(row) || (t.imbalance_kind == Some("step") && t.order == 1.0)
    };
    let rows: Vec<&str> = MAIN_ROWS
        .into_iter()
        .filter(|row| deep.iter().any(|t| t.imbalance_kind == Some(*row)))
        .collect();
    if rows.len() * columns.len() < 2 {
        return Ok(Vec::new());
    }
    let mut figures = Vec::new();
    for metric in Metric::ALL {
        let (stem, title, y_label, log) = metric.labels();
        // One y range for every panel of both files, so that ReLU and no ReLU compare by eye.
        let values: Vec<f64> = deep
            .iter()
            .flat_map(|t| t.points.iter().map(|p| metric.of(p)))
            .filter(|v| v.is_finite() && (!log || *v > 0.0))
            .collect();
        let span = values
            .iter()
            .copied()
            .fold(None, |acc: Option<(f64, f64)>, v| {
                Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
            });
        for relu in [true, false] {
            let activation = if relu { "relu" } else { "norelu" };
            let name = format!("main-{stem}-{activation}.png");
            let path = dir.join(&name);
            let size = (520 * columns.len() as u32, 420 * rows.len() as u32);
            panels_png(&path, size, (rows.len(), columns.len()), |panels| {
                for (i, row) in rows.iter().enumerate() {
                    for (j, column) in columns.iter().enumerate() {
                        let traces: Vec<&Trace> = deep
                            .iter()
                            .copied()
                            .filter(|t| t.group == *column && in_row(t, row))
                            .collect();
                        let curves = curves_by(&traces, relu, metric, |t| format!("R={}", t.order));
                        let heading = format!("{column}, {row}");
                        draw_panel(
                            &panels[i * columns.len() + j],
                            &heading,
                            "epoch",
                            y_label,
                            &curves,
                            log,
                            span,
                        )?;
                    }
                }
                Ok(())
            })?;
            figures.push(Figure {
                group: "main".to_string(),
                title: format!(
                    "{title}, {}: rows {}, one column per setting, one curve per R",
                    if relu { "final ReLU" } else { "no ReLU" },
                    rows.join(" / ")
                ),
                path,
                relative_path: format!("figures/{name}"),
            });
        }
    }
    Ok(figures)
}

/// Batch schedules side by side, where a setting's cells differ in their schedule alone:
/// OF distance along training, one curve per schedule and R (seeds averaged), final ReLU on
/// the left, none on the right (`<setting>-schedules.png`).
fn schedule_figures(dir: &Path, all: &[Trace]) -> Result<Vec<Figure>, String> {
    let mut settings: BTreeMap<&str, Vec<&Trace>> = BTreeMap::new();
    for t in all {
        settings.entry(t.unscheduled.as_str()).or_default().push(t);
    }
    let mut figures = Vec::new();
    for (setting, traces) in settings {
        let mut schedules: Vec<&str> = traces.iter().map(|t| t.schedule.as_str()).collect();
        schedules.sort_unstable();
        schedules.dedup();
        if schedules.len() < 2 {
            continue;
        }
        let name = format!("{}-schedules.png", slug(setting));
        let path = dir.join(&name);
        let x_label = traces[0].x_label;
        two_panel_png(&path, (1400, 520), |panels| {
            for (panel, relu) in panels.iter().zip([true, false]) {
                let curves = curves_by(&traces, relu, Metric::OfDistance, |t| {
                    format!("{} R={}", t.schedule, t.order)
                });
                let heading = format!(
                    "OF distance by batch schedule, {}",
                    if relu { "final ReLU" } else { "no ReLU" }
                );
                draw_panel(
                    panel,
                    &heading,
                    x_label,
                    "OF distance",
                    &curves,
                    false,
                    None,
                )?;
            }
            Ok(())
        })?;
        figures.push(Figure {
            group: setting.to_string(),
            title: format!(
                "OF distance by batch schedule ({}): {setting}",
                schedules.join(", ")
            ),
            path,
            relative_path: format!("figures/{name}"),
        });
    }
    Ok(figures)
}

/// Draws every figure of a sweep into `<root>/figures/` and returns them, grouped by setting.
///
/// The paper's main figure first, where the cells make one (`main-<metric>-<relu|norelu>.png`:
/// rows step / long-tail, a column per setting, a curve per R). Then per setting:
/// `<setting>-of_distance.png`, `-nc1.png`, `-mean_cosine.png` (two panels,
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
    let mut figures = main_figures(&dir, &all)?;
    figures.extend(schedule_figures(&dir, &all)?);
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
                    draw_panel(panel, &heading, x_label, y_label, &curves, log, None)?;
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
    use super::*;

    /// A deep cell's trace: OF distance falling from 1 to `end` over 3 evaluated epochs.
    fn trace(
        group: &str,
        kind: &'static str,
        ratio: f64,
        relu: bool,
        schedule: &str,
        end: f64,
    ) -> Trace {
        Trace {
            group: group.to_string(),
            imbalance_kind: Some(kind),
            schedule: schedule.to_string(),
            unscheduled: group.to_string(),
            relu,
            curve: format!("{kind}-R{ratio}"),
            order: ratio,
            seed: 0,
            points: (1..=3)
                .map(|e| Point {
                    x: e as f64,
                    of_distance: 1.0 + (end - 1.0) * (e - 1) as f64 / 2.0,
                    nc1: 1.0 / e as f64,
                    mean_cosine: 0.1,
                })
                .collect(),
            gram: Vec::new(),
            x_label: "epoch",
        }
    }

    /// The number of distinct colours of a PNG (a blank figure has one or two).
    fn colours(path: &Path) -> usize {
        let image = image::open(path).unwrap().to_rgb8();
        image
            .pixels()
            .map(|p| p.0)
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    #[test]
    fn the_main_figure_has_a_row_per_imbalance_kind_and_a_column_per_setting() {
        register_fonts();
        let dir = tempfile::tempdir().unwrap();
        let mut traces = Vec::new();
        for group in ["mnist small-cnn", "fashion-mnist small-cnn"] {
            for relu in [true, false] {
                traces.push(trace(group, "step", 1.0, relu, "batch-binding", 0.8));
                traces.push(trace(group, "step", 10.0, relu, "batch-binding", 0.7));
                traces.push(trace(group, "long-tail", 10.0, relu, "batch-binding", 0.9));
            }
        }
        let figures = main_figures(dir.path(), &traces).unwrap();
        assert_eq!(figures.len(), 6, "three measures, ReLU and no ReLU");
        for f in &figures {
            assert!(colours(&f.path) > 20, "{} is blank", f.path.display());
            assert!(f.title.contains("rows step / long-tail"), "{}", f.title);
        }
        // The balanced R = 1 cells are a curve of both rows.
        let step_row = |t: &&Trace| t.imbalance_kind == Some("long-tail") || t.order == 1.0;
        assert_eq!(traces.iter().filter(step_row).count(), 8);
        // One setting of one kind is one panel: the per-setting figures show it already.
        let single: Vec<Trace> = traces
            .into_iter()
            .filter(|t| t.group == "mnist small-cnn" && t.imbalance_kind == Some("step"))
            .collect();
        assert!(main_figures(dir.path(), &single).unwrap().is_empty());
    }

    #[test]
    fn settings_that_differ_in_their_schedule_alone_get_a_schedule_figure() {
        register_fonts();
        let dir = tempfile::tempdir().unwrap();
        let traces: Vec<Trace> = ["batch-binding", "shuffle"]
            .into_iter()
            .flat_map(|schedule| {
                [true, false]
                    .map(|relu| trace("mnist small-cnn", "step", 100.0, relu, schedule, 0.6))
            })
            .collect();
        let figures = schedule_figures(dir.path(), &traces).unwrap();
        assert_eq!(figures.len(), 1);
        assert!(
            figures[0].title.contains("batch-binding, shuffle"),
            "{}",
            figures[0].title
        );
        assert!(colours(&figures[0].path) > 20);
        assert!(
            schedule_figures(dir.path(), &traces[..2])
                .unwrap()
                .is_empty()
        );
    }

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
