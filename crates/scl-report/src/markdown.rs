//! The markdown text of a sweep report.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use scl_experiments::experiment::Experiment;
use scl_experiments::records::{DeepSummary, UfmSummary};

use crate::figures::Figure;

/// Threshold used in the report's "reached" columns: a paper-level tolerance (OF or
/// centred-ETF distance below 0.05). It only labels; it decides nothing.
pub const REACHED: f64 = 0.05;

/// Renders the report text; `figures` are embedded (paths relative to the report);
/// `revisions` are the git revisions the finished cells were computed at.
pub fn render_report(
    experiment: &Experiment,
    summaries: &[UfmSummary],
    deep: &[DeepSummary],
    failed: &[(String, String)],
    figures: &[Figure],
    revisions: &[String],
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Sweep report: {}\n", experiment.folder_name());
    if !experiment.description.is_empty() {
        let _ = writeln!(s, "{}\n", experiment.description.trim());
    }
    let backends: std::collections::BTreeSet<&str> = summaries
        .iter()
        .map(|r| r.backend.name())
        .chain(deep.iter().map(|r| r.backend.name()))
        .collect();
    let _ = writeln!(
        s,
        "{} of {} cells finished; backend: {}; git revision{}: {}.\n",
        summaries.len() + deep.len(),
        experiment.len(),
        backends.into_iter().collect::<Vec<_>>().join(", "),
        if revisions.len() == 1 { "" } else { "s" },
        if revisions.is_empty() {
            "none recorded".to_string()
        } else {
            revisions.join(", ")
        }
    );
    if !figures.is_empty() {
        render_figures(&mut s, figures);
    }
    if !experiment.cells.is_empty() {
        render_ufm_means(&mut s, summaries);
        render_ufm_cells(&mut s, summaries);
    }
    if !experiment.deep_cells.is_empty() {
        render_deep(&mut s, deep);
    }
    if !failed.is_empty() {
        let _ = writeln!(s, "\n## Failed cells\n");
        for (id, e) in failed {
            let _ = writeln!(s, "- `{id}`: {e}");
        }
    }
    let missing = experiment
        .len()
        .saturating_sub(summaries.len() + deep.len() + failed.len());
    if missing > 0 {
        let _ = writeln!(s, "\n{missing} cells have not run yet.");
    }
    s
}

/// How to read the UFM tables, and the means over seeds of every UFM setting.
fn render_ufm_means(s: &mut String, summaries: &[UfmSummary]) {
    let _ = writeln!(
        s,
        "How to read it: each cell optimises free features (the unconstrained-features model) \
     with full-batch SupCon on STEP-imbalanced classes (first half majority with \
     `n_majority` samples, the rest `n_majority / R`). *OF dist* is \
     `||G/||G||_F - I/sqrt(K)||_F` of the class-mean Gram matrix (0 = orthogonal frame); \
     *ETF dist* is the same for the centred means against a simplex ETF (0 = simplex ETF); \
     NC1 is `Tr(S_W S_B^+)`; *gap* is the final loss minus the closed-form loss at an \
     orthogonal frame (it is 0 exactly at an OF, and negative only if the optimiser found \
     something better than the OF). Theorem 1 of Kini et al. predicts OF dist -> 0 for \
     UFM+ (ReLU) at every R; without ReLU, R = 1 should give a simplex ETF and R > 1 \
     neither.\n"
    );

    let _ = writeln!(s, "## Mean over seeds\n");
    let _ = writeln!(
        s,
        "| K | R | ReLU | batches | seeds | OF dist (mean) | OF dist (max) | OF < {REACHED} | ETF dist (mean) | ETF < {REACHED} | NC1 (mean) | gap (mean) | validator |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    type Key = (usize, u64, bool, String);
    let mut groups: BTreeMap<Key, Vec<&UfmSummary>> = BTreeMap::new();
    for r in summaries {
        groups
            .entry((
                r.config.num_classes,
                r.config.ratio.to_bits(),
                !r.config.relu,
                batching(r),
            ))
            .or_default()
            .push(r);
    }
    let mut keys: Vec<Key> = groups.keys().cloned().collect();
    keys.sort_by(|a, b| {
        (a.0, f64::from_bits(a.1), a.2, &a.3)
            .partial_cmp(&(b.0, f64::from_bits(b.1), b.2, &b.3))
            .expect("ratios are finite")
    });
    for key in keys {
        let runs = &groups[&key];
        let n = runs.len() as f64;
        let of: Vec<f64> = runs
            .iter()
            .map(|r| r.outcome.last.geometry.overall.of_distance)
            .collect();
        let etf: Vec<f64> = runs
            .iter()
            .map(|r| r.outcome.last.geometry.overall.etf_distance)
            .collect();
        let nc1 = runs
            .iter()
            .map(|r| r.outcome.last.geometry.overall.nc1)
            .sum::<f64>()
            / n;
        let gap = runs.iter().map(|r| r.outcome.loss_gap).sum::<f64>() / n;
        let accepted = runs
            .iter()
            .filter(|r| r.outcome.verdict.as_ref().is_some_and(|v| v.accepted()))
            .count();
        let validator = if runs.iter().all(|r| r.outcome.verdict.is_none()) {
            "-".to_string()
        } else {
            format!("{accepted}/{} accepted", runs.len())
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.4} | {:.4} | {}/{} | {:.4} | {}/{} | {:.2e} | {:.2e} | {validator} |",
            key.0,
            f64::from_bits(key.1),
            if key.2 { "no" } else { "yes" },
            key.3,
            runs.len(),
            of.iter().sum::<f64>() / n,
            of.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            of.iter().filter(|&&v| v < REACHED).count(),
            runs.len(),
            etf.iter().sum::<f64>() / n,
            etf.iter().filter(|&&v| v < REACHED).count(),
            runs.len(),
            nc1,
            gap,
        );
    }
}

/// One row per finished UFM cell.
fn render_ufm_cells(s: &mut String, summaries: &[UfmSummary]) {
    let _ = writeln!(s, "\n## Every cell\n");
    let _ = writeln!(
        s,
        "| cell | K | R | ReLU | batches | seed | steps | OF dist | ETF dist | NC1 | mean cos | norm ratio | loss | OF loss | gap | validator | s |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in summaries {
        let g = &r.outcome.last.geometry.overall;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {:.4} | {:.4} | {:.2e} | {:.4} | {:.3} | {:.5} | {:.5} | {:.2e} | {} | {:.1} |",
            r.cell_id,
            r.config.num_classes,
            r.config.ratio,
            if r.config.relu { "yes" } else { "no" },
            batching(r),
            r.config.seed,
            r.config.steps,
            g.of_distance,
            g.etf_distance,
            g.nc1,
            g.mean_cosine,
            g.norm_ratio,
            r.outcome.last.loss,
            r.outcome.orthogonal_frame_loss,
            r.outcome.loss_gap,
            verdict_text(r.outcome.verdict.as_ref()),
            r.seconds
        );
    }
}

/// "full" or "<schedule> B=<batch size>".
fn batching(r: &UfmSummary) -> String {
    match (r.config.schedule, r.config.batch_size) {
        (Some(kind), Some(b)) => format!("{} B={b}", kind.name()),
        _ => "full".to_string(),
    }
}

/// The validator's verdict in a few words: which conditions of Corollary 2.1 fail.
fn verdict_text(v: Option<&scl_batching::Verdict>) -> String {
    match v {
        None => "-".to_string(),
        Some(v) if v.accepted() => "accepted".to_string(),
        Some(v) => {
            let mut failed = Vec::new();
            if !v.disconnected_classes.is_empty() {
                failed.push(format!(
                    "(a) classes {:?} not connected",
                    v.disconnected_classes
                ));
            }
            if !v.separated_class_pairs.is_empty() {
                failed.push(format!(
                    "(b) {} class pairs never meet",
                    v.separated_class_pairs.len()
                ));
            }
            format!("rejected: {}", failed.join("; "))
        }
    }
}

/// The deep-network section: mean over seeds per setting, then every cell.
fn render_deep(s: &mut String, deep: &[DeepSummary]) {
    let _ = writeln!(s, "## Deep networks\n");
    let _ = writeln!(
        s,
        "Each cell trains a network on an imbalanced training split and evaluates it at the \
         configured epochs. Geometry is measured on the training embeddings in eval mode \
         (L2-normalised, as the loss sees them): *OF dist* of the class-mean Gram matrix, \
         *ETF dist* of the centred means, NC1, the mean off-diagonal cosine of the class \
         means. *NCC acc* classifies the balanced test split by the nearest TRAINING class \
         mean; *bal acc* is the mean of the per-class accuracies; *probe bal acc* (where the \
         cells ran with `linear_probe = true`) is that of a linear classifier trained on the \
         frozen training embeddings. The paper predicts, with \
         the final ReLU, an OF distance falling towards 0 at every R, clearly below the no-ReLU \
         run at R = 10 and 100, and balanced accuracy within about a point of no-ReLU.\n"
    );
    let probed = deep
        .iter()
        .any(|r| r.outcome.metrics.last().is_some_and(|m| m.probe.is_some()));
    let _ = writeln!(
        s,
        "| dataset | model | imbalance | ReLU | schedule | loss | seeds | epochs | OF dist (first -> last) | ETF dist | NC1 | mean cos | NCC acc | bal acc |{}\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|{}",
        if probed { " probe bal acc |" } else { "" },
        if probed { "---|" } else { "" }
    );
    type Key = (String, String, ImbalanceKey, String, String, String);
    let mut groups: BTreeMap<Key, Vec<&DeepSummary>> = BTreeMap::new();
    for r in deep {
        let c = &r.config;
        groups
            .entry((
                r.outcome.dataset_title.clone(),
                scl_experiments::experiment::serde_plain(&c.model),
                ImbalanceKey::of(&c.imbalance),
                scl_experiments::experiment::serde_plain(&c.final_activation),
                c.schedule.name().to_string(),
                scl_experiments::experiment::serde_plain(&c.loss),
            ))
            .or_default()
            .push(r);
    }
    for (key, runs) in &groups {
        let n = runs.len() as f64;
        let mean = |f: &dyn Fn(&scl_types::deep::EpochMetrics) -> f64| {
            runs.iter()
                .filter_map(|r| r.outcome.metrics.last().map(f))
                .sum::<f64>()
                / n
        };
        let first_of = runs
            .iter()
            .filter_map(|r| r.outcome.metrics.first())
            .map(|m| m.geometry.overall.of_distance)
            .sum::<f64>()
            / n;
        let epochs = runs.first().map_or(0, |r| r.config.epochs);
        let probe = if probed {
            format!(
                " {:.4} |",
                mean(&|m| m.probe.as_ref().map_or(f64::NAN, |p| p.balanced_accuracy))
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {epochs} | {first_of:.4} -> {:.4} | {:.4} | {:.3e} | {:.4} | {:.4} | {:.4} |{probe}",
            key.0,
            key.1,
            key.2,
            if key.3 == "relu" { "yes" } else { "no" },
            key.4,
            key.5,
            runs.len(),
            mean(&|m| m.geometry.overall.of_distance),
            mean(&|m| m.geometry.overall.etf_distance),
            mean(&|m| m.geometry.overall.nc1),
            mean(&|m| m.geometry.overall.mean_cosine),
            mean(&|m| m.ncc_accuracy),
            mean(&|m| m.balanced_accuracy),
        );
    }
    render_balanced_accuracy(s, deep);
    let _ = writeln!(
        s,
        "\n### Every deep cell (OF distance at each evaluated epoch)\n"
    );
    let _ = writeln!(
        s,
        "| cell | class counts | OF dist by epoch | bal acc | s |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    for r in deep {
        let trail: Vec<String> = r
            .outcome
            .metrics
            .iter()
            .map(|m| format!("{}: {:.3}", m.epoch, m.geometry.overall.of_distance))
            .collect();
        let _ = writeln!(
            s,
            "| {} | {:?} | {} | {:.4} | {:.1} |",
            r.cell_id,
            r.outcome.class_counts,
            trail.join(", "),
            r.outcome
                .metrics
                .last()
                .map_or(f64::NAN, |m| m.balanced_accuracy),
            r.seconds
        );
    }
}

/// An imbalance as tables sort it: by kind, then by ratio as a number (R = 5 before R = 10),
/// shown by its label (`step-R10`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ImbalanceKey {
    kind: String,
    ratio_millis: u64,
    label: String,
}

impl ImbalanceKey {
    fn of(imbalance: &scl_data::Imbalance) -> Self {
        use scl_data::Imbalance;
        let (kind, ratio) = match imbalance {
            Imbalance::Step { ratio, .. } => ("step", *ratio),
            Imbalance::LongTail { ratio, .. } => ("long-tail", *ratio),
            Imbalance::None => ("none", 1.0),
            Imbalance::Counts { .. } => ("counts", 1.0),
        };
        Self {
            kind: kind.to_string(),
            // Ratios are at least 1 and finite (validated); rounding to thousandths only orders.
            ratio_millis: (ratio * 1000.0).round() as u64,
            label: imbalance.label(),
        }
    }
}

impl std::fmt::Display for ImbalanceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

/// The figures, grouped by setting, each as a markdown image.
fn render_figures(s: &mut String, figures: &[Figure]) {
    let _ = writeln!(s, "## Figures\n");
    let _ = writeln!(
        s,
        "One row of figures per setting (all axes but R, the final activation and the seed); \
         curves are means over seeds, one per imbalance ratio R; left panel with the final \
         ReLU, right without. The Gram heatmaps show `M^T M / max|M^T M|` of the final class \
         means at the largest R (first seed): an orthogonal frame is a scaled identity.\n"
    );
    let mut last_group = None;
    for f in figures {
        if last_group != Some(&f.group) {
            if f.group == "main" {
                let _ = writeln!(
                    s,
                    "### The main figure\n\nThe layout of the paper's main figure: rows the \
                     imbalance kinds (step, long-tail; the balanced R = 1 cells in both), one \
                     column per setting, one curve per R (means over seeds); one figure with \
                     the final ReLU and one without, for each measure.\n"
                );
            } else {
                let _ = writeln!(s, "### {}\n", f.group);
            }
            last_group = Some(&f.group);
        }
        let _ = writeln!(s, "![{}]({})\n", f.title, f.relative_path);
    }
}

/// Balanced test accuracy with and without the final ReLU, per setting and imbalance
/// (means over seeds, last evaluated epoch): the paper's claim that ReLU costs no accuracy.
fn render_balanced_accuracy(s: &mut String, deep: &[DeepSummary]) {
    type Key = (String, String, String, String, ImbalanceKey);
    let mut rows: BTreeMap<Key, [Vec<f64>; 2]> = BTreeMap::new();
    for r in deep {
        let c = &r.config;
        let Some(last) = r.outcome.metrics.last() else {
            continue;
        };
        let key = (
            r.outcome.dataset_title.clone(),
            scl_experiments::experiment::serde_plain(&c.model),
            c.schedule.name().to_string(),
            scl_experiments::experiment::serde_plain(&c.loss),
            ImbalanceKey::of(&c.imbalance),
        );
        let relu = scl_experiments::experiment::serde_plain(&c.final_activation) == "relu";
        rows.entry(key).or_default()[usize::from(!relu)].push(last.balanced_accuracy);
    }
    let _ = writeln!(
        s,
        "\n### Balanced test accuracy, final ReLU vs none\n\n\
         Means at the last evaluated epoch; with several seeds, ± their standard deviation \
         and (their number).\n\n\
         | dataset | model | schedule | loss | imbalance | ReLU | no ReLU | ReLU - no ReLU |\n\
         |---|---|---|---|---|---|---|---|"
    );
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    // Mean, then the sample standard deviation over seeds and their number where there are
    // several: `0.9488 ± 0.0021 (3)`.
    let show = |v: &[f64]| match (mean(v), v.len()) {
        (None, _) => "-".to_string(),
        (Some(m), 1) => format!("{m:.4}"),
        (Some(m), n) => {
            let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64;
            format!("{m:.4} ± {:.4} ({n})", var.sqrt())
        }
    };
    for (k, [with, without]) in &rows {
        let (a, b) = (mean(with), mean(without));
        let diff = match (a, b) {
            (Some(a), Some(b)) => format!("{:+.2} points", 100.0 * (a - b)),
            _ => "-".to_string(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {diff} |",
            k.0,
            k.1,
            k.2,
            k.3,
            k.4,
            show(with),
            show(without)
        );
    }
}
