//! Where a sweep keeps its results: one folder per experiment under a results root, one
//! folder per finished cell, and hidden files for the cells in progress or failed.
//!
//! ```text
//! <results root>/<experiment>/          (the experiment's folder name, with its profile)
//!   report.md, figures/                 written by scl-report
//!   <cell-id>/config.json               resolved configuration, backend, git revision
//!   <cell-id>/metrics.csv               one row per logged step (UFM) or evaluated epoch (deep)
//!   <cell-id>/summary.json              final numbers; its presence marks the cell finished
//!   .partial-<cell-id>/                 a deep cell in progress (checkpoints), renamed when done
//!   .failed-<cell-id>.json              why the cell's last attempt failed
//!   .lock-<cell-id>                     held by the process running the cell (`host pid`)
//!   .logs/<cell-id>.log                 the stderr of the cell's process
//!   .slurm/                             logs of cluster job-array tasks
//! ```
//!
//! Every name is built here and nowhere else.

use std::path::{Path, PathBuf};

use crate::experiment::Experiment;

/// The run-directory file that holds the resolved configuration.
pub use scl_train::run_files::CONFIG;
/// The run-directory file that holds the logged metrics.
pub use scl_train::run_files::METRICS;
/// The run-directory file that holds the final numbers; it marks a finished cell.
pub use scl_train::run_files::SUMMARY;

/// The results folder of `experiment` under a results root.
pub fn experiment_root(experiment: &Experiment, results_root: &Path) -> PathBuf {
    results_root.join(experiment.folder_name())
}

/// The folder of finished cell `id`.
pub fn cell_dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

/// Whether cell `id` has finished (its `summary.json` exists).
pub fn is_finished(root: &Path, id: &str) -> bool {
    cell_dir(root, id).join(SUMMARY).exists()
}

/// The folder of a deep cell in progress: its checkpoints live here until it finishes.
pub fn partial_dir(root: &Path, id: &str) -> PathBuf {
    root.join(format!(".partial-{id}"))
}

/// The failure record of cell `id`.
pub fn failure_file(root: &Path, id: &str) -> PathBuf {
    root.join(format!(".failed-{id}.json"))
}

/// The lock file of cell `id`.
pub fn lock_file(root: &Path, id: &str) -> PathBuf {
    root.join(format!(".lock-{id}"))
}

/// The folder of the cells' logs.
pub fn logs_dir(root: &Path) -> PathBuf {
    root.join(".logs")
}

/// The log (stderr) of the process that ran cell `id`.
pub fn log_file(root: &Path, id: &str) -> PathBuf {
    logs_dir(root).join(format!("{id}.log"))
}

/// The folder of the logs of cluster job-array tasks.
pub fn slurm_dir(root: &Path) -> PathBuf {
    root.join(".slurm")
}
