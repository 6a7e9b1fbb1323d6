//! The comparison of one experiment run on several backends: the loss at every logged point,
//! the final geometry and the throughput of each cell, with the differences from the first
//! backend (the baseline).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use scl_experiments::experiment::Experiment;
use scl_experiments::layout::experiment_root;
use scl_experiments::records::{read_metrics_csv, read_revisions, read_summaries};

use crate::ReportError;

/// One backend's run of the experiment: its name and the results root it wrote under.
#[derive(Debug, Clone)]
pub struct BackendRun {
    /// The backend's name (`flex`, `wgpu`, ...).
    pub backend: String,
    /// The results root of its sweep (`<root>/<experiment folder>/` holds its cells).
    pub results_root: PathBuf,
}

/// What one backend measured for one cell.
struct Measured {
    /// (step or epoch, loss) at every logged point.
    losses: Vec<(usize, f64)>,
    of_distance: f64,
    nc1: f64,
    mean_cosine: f64,
    balanced_accuracy: Option<f64>,
    seconds: f64,
    steps: usize,
    examples_per_step: usize,
}

fn measure(experiment: &Experiment, root: &Path) -> BTreeMap<String, Measured> {
    let mut out = BTreeMap::new();
    for s in read_summaries(&experiment.cells, root) {
        let g = s.outcome.last.geometry.overall;
        let n: usize = s.outcome.class_sizes.iter().sum();
        out.insert(
            s.cell_id.clone(),
            Measured {
                losses: read_metrics_csv(root, &s.cell_id)
                    .iter()
                    .map(|r| (r.step, r.loss))
                    .collect(),
                of_distance: g.of_distance,
                nc1: g.nc1,
                mean_cosine: g.mean_cosine,
                balanced_accuracy: None,
                seconds: s.seconds,
                steps: s.config.steps,
                examples_per_step: s.config.batch_size.unwrap_or(n),
            },
        );
    }
    for s in read_summaries(&experiment.deep_cells, root) {
        let Some(last) = s.outcome.metrics.last() else {
            continue;
        };
        let g = last.geometry.overall;
        out.insert(
            s.cell_id.clone(),
            Measured {
                losses: s
                    .outcome
                    .metrics
                    .iter()
                    .map(|m| (m.epoch, m.train_loss))
                    .collect(),
                of_distance: g.of_distance,
                nc1: g.nc1,
                mean_cosine: g.mean_cosine,
                balanced_accuracy: Some(last.balanced_accuracy),
                seconds: s.seconds,
                steps: last.step,
                examples_per_step: s.config.batch_size,
            },
        );
    }
    out
}

/// Writes `path` (markdown) comparing the finished cells of `experiment` on each of `runs`
/// (at least one; the first is the baseline).
///
/// # Errors
/// A [`ReportError`] naming the file when it cannot be written.
pub fn write_comparison(
    experiment: &Experiment,
    runs: &[BackendRun],
    path: &Path,
) -> Result<(), ReportError> {
    let mut revisions = Vec::new();
    let measured: Vec<(String, BTreeMap<String, Measured>)> = runs
        .iter()
        .map(|run| {
            let root = experiment_root(experiment, &run.results_root);
            revisions.extend(read_revisions(experiment, &root));
            (run.backend.clone(), measure(experiment, &root))
        })
        .collect();
    revisions.sort();
    revisions.dedup();
    let text = render(experiment, &measured, &revisions);
    scl_fs::write(path, text).map_err(|e| ReportError(e.to_string()))
}

fn render(
    experiment: &Experiment,
    measured: &[(String, BTreeMap<String, Measured>)],
    revisions: &[String],
) -> String {
    let names: Vec<&str> = measured.iter().map(|(b, _)| b.as_str()).collect();
    let baseline = names[0];
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Backend comparison: {}\n\nBackends: {} (baseline {baseline}); git revisions of the \
         cells: {}. Each \
         backend ran the same cells (same configurations and seeds, so the same initial \
         features and batches), one cell at a time. *max |diff|* is the largest absolute \
         difference from the baseline over the other backends.\n",
        experiment.folder_name(),
        names.join(", "),
        if revisions.is_empty() {
            "none recorded".to_string()
        } else {
            revisions.join(", ")
        }
    );
    let header = |extra: &str| {
        let cols: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        format!(
            "| {extra} | {} | max \\|diff\\| |\n|---|{}---|",
            cols.join(" | "),
            "---|".repeat(names.len())
        )
    };
    let ids = experiment.ids();
    let _ = writeln!(s, "## Loss at every logged point\n");
    for id in &ids {
        let _ = writeln!(s, "### `{id}`\n\n{}", header("step / epoch"));
        let Some(base) = measured[0].1.get(*id) else {
            let _ = writeln!(s, "\n(not finished on {baseline})\n");
            continue;
        };
        for (i, &(x, _)) in base.losses.iter().enumerate() {
            let values: Vec<Option<f64>> = measured
                .iter()
                .map(|(_, m)| m.get(*id).and_then(|m| m.losses.get(i)).map(|p| p.1))
                .collect();
            let diff = values[1..]
                .iter()
                .flatten()
                .map(|v| (v - values[0].unwrap_or(f64::NAN)).abs())
                .fold(0.0f64, f64::max);
            let cells: Vec<String> = values
                .iter()
                .map(|v| v.map_or("-".into(), |v| format!("{v:.6}")))
                .collect();
            let _ = writeln!(s, "| {x} | {} | {diff:.2e} |", cells.join(" | "));
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "## Final geometry\n\n| cell | backend | OF dist | NC1 | mean cos | bal acc | OF diff vs {baseline} |\n|---|---|---|---|---|---|---|"
    );
    for id in &ids {
        let base_of = measured[0].1.get(*id).map(|m| m.of_distance);
        for (b, m) in measured {
            let Some(m) = m.get(*id) else {
                let _ = writeln!(s, "| `{id}` | {b} | not finished | | | | |");
                continue;
            };
            let _ = writeln!(
                s,
                "| `{id}` | {b} | {:.5} | {:.3e} | {:.5} | {} | {} |",
                m.of_distance,
                m.nc1,
                m.mean_cosine,
                m.balanced_accuracy
                    .map_or("-".into(), |a| format!("{a:.4}")),
                base_of.map_or("-".into(), |o| format!("{:+.2e}", m.of_distance - o))
            );
        }
    }
    let _ = writeln!(
        s,
        "\n## Throughput\n\nSeconds are the wall-clock time of the cell's process, evaluation \
         and geometry included; examples per step are the batch (each with all its views).\n\n\
         | cell | backend | seconds | steps | ms / step | examples / s | speed vs {baseline} |\n|---|---|---|---|---|---|---|"
    );
    for id in &ids {
        let base_t = measured[0].1.get(*id).map(|m| m.seconds);
        for (b, m) in measured {
            let Some(m) = m.get(*id) else { continue };
            let per_step = m.seconds / m.steps.max(1) as f64;
            let _ = writeln!(
                s,
                "| `{id}` | {b} | {:.2} | {} | {:.2} | {:.0} | {} |",
                m.seconds,
                m.steps,
                1e3 * per_step,
                (m.examples_per_step * m.steps) as f64 / m.seconds,
                base_t.map_or("-".into(), |t| format!("{:.3}x", t / m.seconds))
            );
        }
    }
    s
}
