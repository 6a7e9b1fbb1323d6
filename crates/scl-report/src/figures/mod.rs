//! PNG figures of a sweep, drawn with plotters: geometry along training (one curve per
//! imbalance ratio, ReLU and no-ReLU panels) and Gram heatmaps of the final class means
//! (here), the figures that lay several settings out together (`layouts`: the paper's main
//! figure, batch schedules side by side), and the drawing itself (`draw`: panels, heatmaps,
//! PNG files written atomically).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use scl_experiments::experiment::Experiment;
use scl_experiments::records::{DeepSummary, UfmSummary};

use draw::{draw_error, draw_heatmap, draw_panel, register_fonts, two_panel_png};
use layouts::{Compared, comparison_figures, main_figures};

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
    /// The loss (`scl`, `ce`; UFM cells are SCL).
    loss: String,
    /// The setting without the loss, for the figures that compare losses.
    unlossed: String,
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
            loss: "scl".to_string(),
            unlossed: group_of("UFM", &cell.axes),
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
            loss: scl_experiments::experiment::serde_plain(&c.loss),
            unlossed: group_without(&kind, &cell.axes, &["loss"]),
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
    for compared in Compared::ALL {
        figures.extend(comparison_figures(&dir, &all, compared)?);
    }
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

mod draw;
mod layouts;
#[cfg(test)]
mod tests;
