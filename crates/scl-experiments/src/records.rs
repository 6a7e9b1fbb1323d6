//! What a sweep writes for each cell and what the report reads back: the records of
//! `config.json` and `summary.json`, the failure record, and `metrics.csv`.

use std::path::Path;

use scl_fs::FsError;
use scl_train::config::UfmConfig;
pub use scl_train::run_files::{UfmMetricsRow as MetricsRow, write_ufm_metrics};
use serde::{Deserialize, Serialize};

use crate::experiment::{Cell, CellConfig, CellKind, CellRef, Experiment};
use crate::layout::{CONFIG, METRICS, SUMMARY, cell_dir, failure_file};

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
    pub backend: scl_train::backend::BackendKind,
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
    pub backend: scl_train::backend::BackendKind,
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

/// What a cell's folder holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Records {
    /// No `summary.json`: the cell has not finished.
    Missing,
    /// `summary.json`, `config.json` and `metrics.csv` parse into their full records, name the
    /// cell and agree with each other: the cell has finished.
    Complete,
    /// `summary.json` is there, but a record is incomplete, damaged or disagrees with another:
    /// why, naming the file. The cell counts as unfinished and runs again.
    Damaged(String),
}

impl Records {
    /// Whether the cell has finished.
    pub fn is_complete(&self) -> bool {
        *self == Self::Complete
    }
}

/// Reads the records of cell `id` of kind `kind` under `root` and says whether they make a
/// finished cell ([`Records`]).
pub fn cell_records(root: &Path, id: &str, kind: CellKind) -> Records {
    let dir = cell_dir(root, id);
    let summary_path = dir.join(SUMMARY);
    let text = match std::fs::read_to_string(&summary_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Records::Missing,
        Err(e) => return Records::Damaged(format!("{}: {e}", summary_path.display())),
    };
    let checked = match kind {
        CellKind::Ufm => check_ufm(&dir, id, &text),
        CellKind::Deep => check_deep(&dir, id, &text),
    };
    match checked {
        Ok(()) => Records::Complete,
        Err(why) => Records::Damaged(why),
    }
}

/// [`cell_records`] of a cell of a grid.
pub fn records_of(root: &Path, cell: CellRef<'_>) -> Records {
    cell_records(root, cell.id(), cell.kind())
}

/// Parses `text` (the content of `path`) as a `T`, with the error naming the file.
fn parse<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads a JSON record.
fn read_record<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(path, &text)
}

/// The checks every kind shares: the summary names the cell, and `config.json`'s
/// configuration is the summary's.
fn check_names_and_config<C: Serialize>(
    dir: &Path,
    id: &str,
    summary_id: &str,
    summary_config: &C,
    record_config: &C,
) -> Result<(), String> {
    if summary_id != id {
        return Err(format!(
            "{}: it is the summary of cell {summary_id}",
            dir.join(SUMMARY).display()
        ));
    }
    if serde_json::to_value(summary_config).ok() != serde_json::to_value(record_config).ok() {
        return Err(format!(
            "{}: its configuration differs from the one in {SUMMARY}",
            dir.join(CONFIG).display()
        ));
    }
    Ok(())
}

fn check_ufm(dir: &Path, id: &str, text: &str) -> Result<(), String> {
    let summary: RunSummary = parse(&dir.join(SUMMARY), text)?;
    let record: RunRecord = read_record(&dir.join(CONFIG))?;
    check_names_and_config(dir, id, &summary.cell_id, &summary.config, &record.config)?;
    if record.cell_id != id {
        return Err(format!(
            "{}: it is the configuration of cell {}",
            dir.join(CONFIG).display(),
            record.cell_id
        ));
    }
    let path = dir.join(METRICS);
    let rows = read_metrics_strict(&path, &scl_train::run_files::UFM_COLUMNS)?;
    let last = summary.outcome.last;
    match rows.last() {
        Some(row) if row[0] == Some(last.step as f64) && row[1] == Some(last.loss) => Ok(()),
        Some(_) => Err(format!(
            "{}: its last row is not the summary's final step {} (loss {})",
            path.display(),
            last.step,
            last.loss
        )),
        None => Err(format!("{}: it has no rows", path.display())),
    }
}

fn check_deep(dir: &Path, id: &str, text: &str) -> Result<(), String> {
    let summary: DeepSummary = parse(&dir.join(SUMMARY), text)?;
    let record: scl_train::deep::DeepRunRecord = read_record(&dir.join(CONFIG))?;
    check_names_and_config(dir, id, &summary.cell_id, &summary.config, &record.config)?;
    let path = dir.join(METRICS);
    let columns = scl_train::run_files::DEEP_COLUMNS;
    let rows = read_metrics_strict(&path, &columns)?;
    let of = columns
        .iter()
        .position(|c| *c == "of_distance")
        .expect("a deep metrics column");
    // Evaluated epochs have their geometry filled; step rows leave it empty.
    let evaluated: Vec<(Option<f64>, Option<f64>)> = rows
        .iter()
        .filter(|r| r[of].is_some())
        .map(|r| (r[0], r[of]))
        .collect();
    let expected: Vec<(Option<f64>, Option<f64>)> = summary
        .outcome
        .metrics
        .iter()
        .map(|m| (Some(m.epoch as f64), Some(m.geometry.overall.of_distance)))
        .collect();
    if evaluated != expected {
        return Err(format!(
            "{}: its evaluated epochs ({}) are not the {} of {SUMMARY}",
            path.display(),
            evaluated.len(),
            expected.len()
        ));
    }
    Ok(())
}

/// Reads a `metrics.csv` whose header must be `columns`: every row as long as the header,
/// every field a number or empty, the first one always a number.
fn read_metrics_strict(path: &Path, columns: &[&str]) -> Result<Vec<Vec<Option<f64>>>, String> {
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let mut reader = csv::Reader::from_path(path).map_err(|e| at(&e))?;
    let header = reader.headers().map_err(|e| at(&e))?;
    if header.iter().ne(columns.iter().copied()) {
        return Err(at(&"its header is not the metrics columns"));
    }
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| at(&e))?;
        let mut row = Vec::with_capacity(record.len());
        for (field, name) in record.iter().zip(columns) {
            let value = if field.is_empty() {
                None
            } else {
                Some(
                    field
                        .parse::<f64>()
                        .map_err(|_| at(&format_args!("row {} has {field:?} as {name}", i + 2)))?,
                )
            };
            row.push(value);
        }
        if row.first().is_none_or(Option::is_none) {
            return Err(at(&format_args!("row {} has no {}", i + 2, columns[0])));
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The cells of an experiment that have not finished and say why ([`read_unfinished`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unfinished {
    /// Every failed cell, grid order: its failure record, or, where its `summary.json` is
    /// there but the records are damaged, `damaged records (<why, naming the file>)`.
    pub failed: Vec<(String, String)>,
    /// The damaged ones among them ([`Records::Damaged`]), with why: left out of tables and
    /// figures, and run again by the next sweep.
    pub damaged: Vec<(String, String)>,
}

/// The failed and the damaged cells of `experiment` under `root`, in one pass over the
/// cells' records.
pub fn read_unfinished(experiment: &Experiment, root: &Path) -> Unfinished {
    let mut unfinished = Unfinished::default();
    for cell in experiment.iter() {
        let id = cell.id();
        match records_of(root, cell) {
            Records::Complete => {}
            Records::Damaged(why) => {
                unfinished
                    .failed
                    .push((id.to_string(), format!("damaged records ({why})")));
                unfinished.damaged.push((id.to_string(), why));
            }
            Records::Missing => {
                let record = std::fs::read_to_string(failure_file(root, id))
                    .ok()
                    .and_then(|text| serde_json::from_str::<FailureRecord>(&text).ok());
                if let Some(r) = record {
                    unfinished.failed.push((r.cell_id, r.error));
                }
            }
        }
    }
    unfinished
}

/// The git revisions that the finished cells of `experiment` were computed at (the
/// `git_revision` of each one's `config.json`), sorted, each once.
pub fn read_revisions(experiment: &Experiment, root: &Path) -> Vec<String> {
    let revisions: std::collections::BTreeSet<String> = experiment
        .iter()
        .filter(|cell| records_of(root, *cell).is_complete())
        .filter_map(|cell| {
            let text = std::fs::read_to_string(cell_dir(root, cell.id()).join(CONFIG)).ok()?;
            let value: serde_json::Value = serde_json::from_str(&text).ok()?;
            Some(value.get("git_revision")?.as_str()?.to_string())
        })
        .collect();
    revisions.into_iter().collect()
}

/// The summaries of the finished cells among `cells` (UFM or deep: the summary type follows
/// from the cells' configuration type and the outcome asked for), in grid order. A cell whose
/// records are missing or damaged ([`cell_records`]) is left out; [`read_unfinished`] names it.
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
        .filter(|cell| cell_records(root, &cell.id, C::KIND).is_complete())
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
