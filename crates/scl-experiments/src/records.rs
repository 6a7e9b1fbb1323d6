//! The records of a sweep's cells: each cell's folder holds the run contract's records
//! (`config.json`, `metrics.csv`, `summary.json`, [`scl_types::records`], written by the
//! training layer); this module says whether they make a finished cell, reads the summaries
//! back for reports, and keeps the failure record of a cell that failed.

use std::path::Path;

use scl_types::config::UfmConfig;
use scl_types::deep::DeepConfig;
pub use scl_types::records::{
    ConfigRecord, DeepSummary, RunConfig, RunKind, RunLabel, Summary, UfmSummary, write_json,
};
use scl_types::records::{parse_summary, read_config_record};
pub use scl_types::run_files::UfmMetricsRow as MetricsRow;
pub use scl_types::ufm::UfmCellOutcome;
use serde::{Deserialize, Serialize};

use crate::experiment::{Cell, CellConfig, CellKind, CellRef, Experiment};
use crate::layout::{CONFIG, METRICS, SUMMARY, cell_dir, failure_file};

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
        CellKind::Ufm => UfmConfig::finished_summary(&dir, id, &text).map(drop),
        CellKind::Deep => DeepConfig::finished_summary(&dir, id, &text).map(drop),
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

/// The checks every kind shares: summary and `config.json` parse into the records of kind
/// `C`, both name the cell, and they hold the same configuration. Returns the summary.
fn check_records<C: RunConfig>(
    dir: &Path,
    id: &str,
    text: &str,
) -> Result<Summary<C, C::Outcome>, String> {
    let summary: Summary<C, C::Outcome> = parse_summary(dir, text)?;
    if summary.cell_id != id {
        return Err(format!(
            "{}: it is the summary of cell {}",
            dir.join(SUMMARY).display(),
            summary.cell_id
        ));
    }
    let label = RunLabel {
        cell_id: id.to_string(),
        ..RunLabel::default()
    };
    let record: ConfigRecord<C> = read_config_record(dir, &label)?;
    if record.cell_id != id {
        return Err(format!(
            "{}: it is the configuration of cell {}",
            dir.join(CONFIG).display(),
            record.cell_id
        ));
    }
    if serde_json::to_value(&summary.config).ok() != serde_json::to_value(&record.config).ok() {
        return Err(format!(
            "{}: its configuration differs from the one in {SUMMARY}",
            dir.join(CONFIG).display()
        ));
    }
    Ok(summary)
}

pub(crate) fn check_ufm(dir: &Path, id: &str, text: &str) -> Result<UfmSummary, String> {
    let summary: UfmSummary = check_records(dir, id, text)?;
    let path = dir.join(METRICS);
    let rows = read_metrics_strict(&path, &scl_types::run_files::UFM_COLUMNS)?;
    let last = summary.outcome.last;
    match rows.last() {
        Some(row) if row[0] == Some(last.step as f64) && row[1] == Some(last.loss) => Ok(summary),
        Some(_) => Err(format!(
            "{}: its last row is not the summary's final step {} (loss {})",
            path.display(),
            last.step,
            last.loss
        )),
        None => Err(format!("{}: it has no rows", path.display())),
    }
}

pub(crate) fn check_deep(dir: &Path, id: &str, text: &str) -> Result<DeepSummary, String> {
    let summary: DeepSummary = check_records(dir, id, text)?;
    let path = dir.join(METRICS);
    let columns = scl_types::run_files::DEEP_COLUMNS;
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
    Ok(summary)
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
    fn revision<C: RunConfig>(root: &Path, cell: &Cell<C>) -> Option<String> {
        let label = RunLabel {
            cell_id: cell.id.clone(),
            ..RunLabel::default()
        };
        read_config_record::<C>(&cell_dir(root, &cell.id), &label)
            .ok()
            .map(|r| r.git_revision)
    }
    let revisions: std::collections::BTreeSet<String> = experiment
        .iter()
        .filter(|cell| records_of(root, *cell).is_complete())
        .filter_map(|cell| match cell {
            CellRef::Ufm(c) => revision(root, c),
            CellRef::Deep(c) => revision(root, c),
        })
        .collect();
    revisions.into_iter().collect()
}

/// The summaries of the finished cells among `cells` (UFM or deep: the summary type follows
/// from the cells' configuration type), in grid order. A cell whose records are missing or
/// damaged ([`cell_records`]) is left out; [`read_unfinished`] names it.
///
/// ```no_run
/// # use scl_experiments::experiment::Experiment;
/// # use scl_experiments::records::{DeepSummary, UfmSummary, read_summaries};
/// # fn f(experiment: &Experiment, root: &std::path::Path) {
/// let ufm: Vec<UfmSummary> = read_summaries(&experiment.cells, root);
/// let deep: Vec<DeepSummary> = read_summaries(&experiment.deep_cells, root);
/// # }
/// ```
pub fn read_summaries<C>(cells: &[Cell<C>], root: &Path) -> Vec<Summary<C, C::Outcome>>
where
    C: CellConfig + RunConfig,
{
    cells
        .iter()
        .filter_map(|cell| {
            let dir = cell_dir(root, &cell.id);
            let text = std::fs::read_to_string(dir.join(SUMMARY)).ok()?;
            C::finished_summary(&dir, &cell.id, &text).ok()
        })
        .collect()
}

/// Reads the overall columns of `<root>/<id>/metrics.csv` of a UFM cell; empty when the file
/// is missing or lacks those columns.
pub fn read_metrics_csv(root: &Path, id: &str) -> Vec<MetricsRow> {
    scl_types::run_files::read_ufm_metrics(&cell_dir(root, id).join(METRICS))
}
