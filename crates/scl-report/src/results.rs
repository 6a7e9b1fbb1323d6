//! `results.csv`: one row per finished cell with its grid values and its final metrics, for
//! pandas, R or a spreadsheet.
//!
//! Columns: `cell_id`, `kind` (`ufm` or `deep`), one column per grid axis of the experiment
//! (every part's axes, in the order they first appear; empty where a cell's part has no such
//! axis), the imbalance read from the configuration whatever the file's spelling
//! (`imbalance_kind`: `step`, `long-tail`, `none`, `counts`; `ratio`; `largest_class`: the
//! majority or first class's size where the configuration gives it; a column an axis already
//! has is not repeated), `backend`, `seconds`, then the last logged (UFM) or evaluated (deep) point: `step`,
//! `epoch` (deep), `final_loss` (UFM: the full-batch loss; deep: the epoch's mean training
//! loss; not `loss`, which is a key of deep configurations and so may be an axis),
//! `of_distance`, `etf_distance`, `nc1`, `mean_cosine`, `norm_ratio`, `loss_gap` (UFM: the
//! loss minus the orthogonal frame's), `ncc_accuracy`, `balanced_accuracy`, `probe_accuracy`,
//! `probe_balanced_accuracy` (deep; the probe's only where it ran). Rows follow the grid order.

use scl_experiments::experiment::Experiment;
use scl_experiments::records::{DeepSummary, UfmSummary};

/// The metric columns after the axes.
const METRICS: [&str; 15] = [
    "backend",
    "seconds",
    "step",
    "epoch",
    "final_loss",
    "of_distance",
    "etf_distance",
    "nc1",
    "mean_cosine",
    "norm_ratio",
    "loss_gap",
    "ncc_accuracy",
    "balanced_accuracy",
    "probe_accuracy",
    "probe_balanced_accuracy",
];

/// The columns of the imbalance, derived from each cell's configuration.
const IMBALANCE: [&str; 3] = ["imbalance_kind", "ratio", "largest_class"];

/// The imbalance columns of a deep configuration's imbalance.
fn imbalance_columns(imbalance: &scl_data::Imbalance) -> [(&'static str, String); 3] {
    use scl_data::Imbalance;
    let (kind, ratio, largest) = match imbalance {
        Imbalance::None => ("none", String::new(), None),
        Imbalance::Step {
            ratio, n_majority, ..
        } => ("step", number(*ratio), *n_majority),
        Imbalance::LongTail { ratio, n_max } => ("long-tail", number(*ratio), *n_max),
        Imbalance::Counts { .. } => ("counts", String::new(), None),
    };
    [
        ("imbalance_kind", kind.to_string()),
        ("ratio", ratio),
        (
            "largest_class",
            largest.map(|n| n.to_string()).unwrap_or_default(),
        ),
    ]
}

/// A number as the shortest text that reads back to it; empty when it is not finite.
fn number(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        String::new()
    }
}

/// A CSV field: quoted when it holds a comma, a quote or a line break.
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// The text of `results.csv` for the finished cells `ufm` and `deep` of `experiment`.
pub fn render_results_csv(
    experiment: &Experiment,
    ufm: &[UfmSummary],
    deep: &[DeepSummary],
) -> String {
    let mut axes: Vec<&str> = Vec::new();
    for cell in experiment.iter() {
        for (name, _) in cell.axes() {
            if !axes.contains(&name.as_str()) {
                axes.push(name);
            }
        }
    }
    let derived: Vec<&str> = IMBALANCE
        .into_iter()
        .filter(|c| !axes.contains(c))
        .collect();
    let metrics: Vec<&str> = derived.iter().chain(METRICS.iter()).copied().collect();
    let mut out = String::new();
    let header: Vec<String> = ["cell_id", "kind"]
        .iter()
        .chain(axes.iter())
        .chain(metrics.iter())
        .map(|h| field(h))
        .collect();
    out.push_str(&header.join(","));
    out.push('\n');
    let geometry = |g: &scl_geometry::GeometryReport| {
        [
            ("of_distance", number(g.of_distance)),
            ("etf_distance", number(g.etf_distance)),
            ("nc1", number(g.nc1)),
            ("mean_cosine", number(g.mean_cosine)),
            ("norm_ratio", number(g.norm_ratio)),
        ]
    };
    for cell in experiment.iter() {
        let mut values: Vec<(&str, String)> = Vec::new();
        let kind;
        if let Some(s) = ufm.iter().find(|s| s.cell_id == cell.id()) {
            kind = "ufm";
            let last = &s.outcome.last;
            let g = &last.geometry.overall;
            values.extend([
                ("imbalance_kind", "step".to_string()),
                ("ratio", number(s.config.ratio)),
                ("largest_class", s.config.n_majority.to_string()),
                ("backend", s.backend.name().to_string()),
                ("seconds", number(s.seconds)),
                ("step", last.step.to_string()),
                ("final_loss", number(last.loss)),
                ("loss_gap", number(s.outcome.loss_gap)),
            ]);
            values.extend(geometry(g));
        } else if let Some(s) = deep.iter().find(|s| s.cell_id == cell.id()) {
            kind = "deep";
            values.extend(imbalance_columns(&s.config.imbalance));
            values.extend([
                ("backend", s.backend.name().to_string()),
                ("seconds", number(s.seconds)),
            ]);
            if let Some(m) = s.outcome.metrics.last() {
                let g = &m.geometry.overall;
                values.extend([
                    ("step", m.step.to_string()),
                    ("epoch", m.epoch.to_string()),
                    ("final_loss", number(m.train_loss)),
                    ("ncc_accuracy", number(m.ncc_accuracy)),
                    ("balanced_accuracy", number(m.balanced_accuracy)),
                ]);
                values.extend(geometry(g));
                if let Some(p) = &m.probe {
                    values.extend([
                        ("probe_accuracy", number(p.accuracy)),
                        ("probe_balanced_accuracy", number(p.balanced_accuracy)),
                    ]);
                }
            }
        } else {
            continue;
        }
        let mut row = vec![field(cell.id()), kind.to_string()];
        for axis in &axes {
            let value = cell
                .axes()
                .iter()
                .find(|(name, _)| name == axis)
                .map_or(String::new(), |(_, v)| v.clone());
            row.push(field(&value));
        }
        for column in &metrics {
            let value = values
                .iter()
                .find(|(name, _)| name == column)
                .map_or(String::new(), |(_, v)| v.clone());
            row.push(field(&value));
        }
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_name_is_given_once_even_where_an_axis_is_named_like_a_metric() {
        // `loss` is a key of deep configurations, so a grid may have it as an axis; `ratio` is
        // an axis of the older UFM spelling.
        let experiment = Experiment::parse(
            r#"
            [experiment]
            name = "t"
            kind = "deep"
            [base]
            dataset = "sklearn-digits"
            model = "mlp"
            epochs = 1
            [grid]
            loss = ["scl", "ce"]
            [parts.ufm]
            kind = "ufm"
            [parts.ufm.base]
            num_classes = 2
            n_majority = 4
            temperature = 1.0
            steps = 2
            lr = 0.1
            optimizer = "adam"
            log_every = 1
            seed = 0
            relu = true
            [parts.ufm.grid]
            ratio = [2]
            "#,
            "t",
            None,
        )
        .unwrap();
        let text = render_results_csv(&experiment, &[], &[]);
        let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
        let mut unique = header.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), header.len(), "{header:?}");
        for column in ["loss", "ratio", "final_loss", "imbalance_kind"] {
            assert!(header.contains(&column), "{column} in {header:?}");
        }
    }
}
