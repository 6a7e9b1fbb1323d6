//! Reports of experiment sweeps: `report.md` with tables and PNG figures, rendered from
//! whatever cells of an experiment have finished in its results folder.
//!
//! The report is a pure function of the results folder: cells run by a sweep, by separate
//! `--cell` processes (Slurm array tasks) or on another machine and copied in are merged
//! the same way; failed cells are listed with their recorded error.
//!
//! ```text
//! runs/<experiment>/
//!   report.md
//!   results.csv                         one row per finished cell: grid values, final metrics
//!   figures/<setting>-of_distance.png   OF distance along training, ReLU | no ReLU, one curve per R
//!   figures/<setting>-nc1.png           NC1, log scale
//!   figures/<setting>-mean_cosine.png   mean off-diagonal cosine of the class means
//!   figures/<setting>-gram.png          Gram matrices of the class means at the largest R
//! ```
//!
//! # Example
//!
//! ```no_run
//! use std::path::Path;
//! use scl_experiments::experiment::Experiment;
//!
//! let experiment = Experiment::load(Path::new("experiments/quick.toml"), Some("smoke"))?;
//! let report = scl_report::write_report(&experiment, Path::new("runs"))?;
//! println!("{} with {} figures", report.markdown.display(), report.figures.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod compare;
pub mod figures;
pub mod markdown;
pub mod results;

use std::path::{Path, PathBuf};

pub use figures::Figure;
use scl_experiments::experiment::Experiment;
use scl_experiments::layout::experiment_root;
use scl_experiments::records::{read_revisions, read_summaries, read_unfinished};

/// What [`write_report`] wrote.
#[derive(Debug, Clone)]
pub struct Report {
    /// `<root>/<experiment>/report.md`.
    pub markdown: PathBuf,
    /// The figures it embeds.
    pub figures: Vec<Figure>,
    /// Finished cells.
    pub finished: usize,
    /// Failed cells (with a failure record and no summary, or with damaged records).
    pub failed: Vec<(String, String)>,
    /// Cells whose `summary.json` is there but whose records are damaged: left out of the
    /// tables and figures (and listed among the failed cells), with why, naming the file.
    pub damaged: Vec<(String, String)>,
    /// Temporary files and folders abandoned by stopped processes that were removed first
    /// (see [`scl_experiments::layout::remove_abandoned_temporaries`]).
    pub removed_temporaries: Vec<PathBuf>,
}

/// An error of writing a report: the file and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportError(pub String);

impl std::fmt::Display for ReportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReportError {}

/// Reads the finished cells and failure records of `experiment` under `results_root` and
/// writes `report.md` and its figures (each through a temporary file and a rename).
///
/// # Errors
/// A [`ReportError`] naming the file that could not be written.
pub fn write_report(experiment: &Experiment, results_root: &Path) -> Result<Report, ReportError> {
    let root = experiment_root(experiment, results_root);
    std::fs::create_dir_all(&root).map_err(|e| ReportError(format!("{}: {e}", root.display())))?;
    let removed_temporaries = scl_experiments::layout::remove_abandoned_temporaries(&root);
    let summaries = read_summaries(&experiment.cells, &root);
    let deep = read_summaries(&experiment.deep_cells, &root);
    let scl_experiments::records::Unfinished { failed, damaged } =
        read_unfinished(experiment, &root);
    let figures =
        figures::draw_figures(experiment, &root, &summaries, &deep).map_err(ReportError)?;
    let revisions = read_revisions(experiment, &root);
    let text =
        markdown::render_report(experiment, &summaries, &deep, &failed, &figures, &revisions);
    let path = root.join("report.md");
    scl_fs::write(&path, text).map_err(|e| ReportError(e.to_string()))?;
    let table = results::render_results_csv(experiment, &summaries, &deep);
    scl_fs::write(&root.join("results.csv"), table).map_err(|e| ReportError(e.to_string()))?;
    Ok(Report {
        markdown: path,
        figures,
        finished: summaries.len() + deep.len(),
        failed,
        damaged,
        removed_temporaries,
    })
}
