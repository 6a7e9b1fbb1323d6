//! What a sweep writes for each cell and what the report reads back: the records of
//! `config.json` and `summary.json`, the failure record, and `metrics.csv`.

use std::path::Path;

use scl_fs::FsError;
use scl_train::config::UfmConfig;
pub use scl_train::run_files::{UfmMetricsRow as MetricsRow, write_ufm_metrics};
use serde::{Deserialize, Serialize};

use crate::experiment::{Cell, CellConfig, Experiment};
use crate::layout::{
    CONFIG, METRICS, SUMMARY, cell_dir, failure_file, is_finished, summary_problem,
};

/// What `summary.json` holds, for a cell of either kind: the fields every cell has, and the
/// kind's own outcome (written flat beside them). `C` is the cell's configuration type, `O`
/// its outcome: [`RunSummary`] for UFM cells, [`DeepSummary`] for deep-network cells.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary<C, O> {
    /// The cell id.
    pub cell_id: String,
    /// The resolved configuration (copied here so a report needs only this file).
    pub config: C,
    /// Wall-clock seconds the cell took (a resumed deep cell counts only its last part).
    pub seconds: f64,
    /// The backend the cell ran on.
    pub backend: String,
    /// What the run produced.
    #[serde(flatten)]
    pub outcome: O,
}

/// The summary of a UFM cell.
pub type RunSummary = Summary<UfmConfig, UfmCellOutcome>;

/// The summary of a deep-network cell: counts, minority classes and the metrics of every
/// evaluated epoch.
pub type DeepSummary = Summary<scl_train::deep::DeepConfig, scl_train::deep::DeepOutcome>;

/// What a UFM cell produced, as its summary keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UfmCellOutcome {
    /// Samples per class.
    pub class_sizes: Vec<usize>,
    /// The final logged point: loss and geometry.
    pub last: scl_train::ufm::UfmPoint,
    /// The closed-form loss at an orthogonal frame.
    pub orthogonal_frame_loss: f64,
    /// Final loss minus the orthogonal-frame loss.
    pub loss_gap: f64,
    /// For a mini-batch run, the validator's verdict on every batch the run used.
    #[serde(default)]
    pub verdict: Option<scl_batching::Verdict>,
    /// Gram matrix of the final class means (`K` rows of `K`).
    #[serde(default)]
    pub class_mean_gram: Vec<Vec<f64>>,
}

/// What `config.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// The cell id.
    pub cell_id: String,
    /// The experiment name.
    pub experiment: String,
    /// The axis values of the cell.
    pub axes: Vec<(String, String)>,
    /// The resolved configuration.
    pub config: UfmConfig,
    /// The backend the cell ran on.
    pub backend: String,
    /// `git rev-parse HEAD` of the working tree, with `-dirty` when it had changes.
    pub git_revision: String,
}

/// A failed cell's record, `<root>/.failed-<id>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailureRecord {
    /// The cell id.
    pub cell_id: String,
    /// The error, one sentence.
    pub error: String,
}

/// Writes the failure record of cell `id` (best effort: a failure to write it is ignored).
pub fn record_failure(root: &Path, id: &str, error: &str) {
    let record = FailureRecord {
        cell_id: id.to_string(),
        error: error.to_string(),
    };
    let _ = write_json(&failure_file(root, id), &record);
}

/// The failure records of the cells of `experiment` that have not finished, grid order; a
/// cell whose `summary.json` is there but unreadable (truncated, empty, another cell's) is
/// listed with that problem, naming the file.
pub fn read_failures(experiment: &Experiment, root: &Path) -> Vec<(String, String)> {
    experiment
        .ids()
        .into_iter()
        .filter_map(|id| {
            match summary_problem(root, id) {
                Some(None) => return None,
                Some(Some(why)) => {
                    return Some((id.to_string(), format!("unreadable summary ({why})")));
                }
                None => {}
            }
            let text = std::fs::read_to_string(failure_file(root, id)).ok()?;
            let r: FailureRecord = serde_json::from_str(&text).ok()?;
            Some((r.cell_id, r.error))
        })
        .collect()
}

/// The git revisions that the finished cells of `experiment` were computed at (the
/// `git_revision` of each one's `config.json`), sorted, each once.
pub fn read_revisions(experiment: &Experiment, root: &Path) -> Vec<String> {
    let revisions: std::collections::BTreeSet<String> = experiment
        .ids()
        .into_iter()
        .filter(|id| is_finished(root, id))
        .filter_map(|id| {
            let text = std::fs::read_to_string(cell_dir(root, id).join(CONFIG)).ok()?;
            let value: serde_json::Value = serde_json::from_str(&text).ok()?;
            Some(value.get("git_revision")?.as_str()?.to_string())
        })
        .collect();
    revisions.into_iter().collect()
}

/// The summaries of the finished cells among `cells` (UFM or deep: the summary type follows
/// from the cells' configuration type and the outcome asked for), in grid order. A cell whose
/// `summary.json` is missing or does not parse is left out.
///
/// ```no_run
/// # use scl_experiments::experiment::Experiment;
/// # use scl_experiments::records::{DeepSummary, RunSummary, read_summaries};
/// # fn f(experiment: &Experiment, root: &std::path::Path) {
/// let ufm: Vec<RunSummary> = read_summaries(&experiment.cells, root);
/// let deep: Vec<DeepSummary> = read_summaries(&experiment.deep_cells, root);
/// # }
/// ```
pub fn read_summaries<C, O>(cells: &[Cell<C>], root: &Path) -> Vec<Summary<C, O>>
where
    C: CellConfig,
    O: serde::de::DeserializeOwned,
{
    cells
        .iter()
        .filter_map(|cell| {
            let text = std::fs::read_to_string(cell_dir(root, &cell.id).join(SUMMARY)).ok()?;
            serde_json::from_str(&text).ok()
        })
        .collect()
}

/// Reads the overall columns of `<root>/<id>/metrics.csv` of a UFM cell; empty when the file
/// is missing or lacks those columns.
pub fn read_metrics_csv(root: &Path, id: &str) -> Vec<MetricsRow> {
    scl_train::run_files::read_ufm_metrics(&cell_dir(root, id).join(METRICS))
}

/// Writes `value` as pretty JSON to `path`, atomically.
///
/// # Errors
/// An [`FsError`] when the file cannot be written.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), FsError> {
    let text = serde_json::to_string_pretty(value).expect("run records serialise to JSON");
    scl_fs::write(path, text)
}
