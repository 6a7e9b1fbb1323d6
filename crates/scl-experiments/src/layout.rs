//! Where a sweep keeps its results: one folder per experiment under a results root, one
//! folder per finished cell, and hidden files for the cells in progress or failed.
//!
//! ```text
//! <results root>/<experiment>/          (the experiment's folder name, with its profile)
//!   report.md, figures/                 written by scl-report
//!   <cell-id>/config.json               resolved configuration, backend, git revision
//!   <cell-id>/metrics.csv               one row per logged step (UFM) or evaluated epoch (deep)
//!   <cell-id>/summary.json              final numbers; with the two above complete and
//!                                       agreeing, the cell has finished (`records::cell_records`)
//!   .partial-<cell-id>/                 a deep cell in progress (checkpoints), renamed when done
//!   .failed-<cell-id>.json              why the cell's last attempt failed
//!   .lock-<cell-id>                     OS-locked by the process running the cell (`host pid`)
//!   .<name>.tmp-<pid>-<n>[.ext]         a file or folder being written (`scl_fs`); one left by
//!                                       a killed process is removed by the next run
//!   .logs/<cell-id>.log                 the stderr of the cell's processes, appended
//!   .slurm/                             logs of cluster job-array tasks
//! ```
//!
//! Every name is built here and nowhere else.

use std::path::{Path, PathBuf};

use crate::experiment::Experiment;

/// The run-directory file that holds the resolved configuration.
pub use scl_types::run_files::CONFIG;
/// The run-directory file that holds the logged metrics.
pub use scl_types::run_files::METRICS;
/// The run-directory file that holds the final numbers; it marks a finished cell.
pub use scl_types::run_files::SUMMARY;

/// The results folder of `experiment` under a results root.
pub fn experiment_root(experiment: &Experiment, results_root: &Path) -> PathBuf {
    results_root.join(experiment.folder_name())
}

/// The folder of finished cell `id`.
pub fn cell_dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
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

/// Removes what a process that stopped while writing cell `id` left behind: the cell's staging
/// folder, the temporary of its failure record, and every temporary inside its `.partial-`
/// folder (checkpoints, metrics). Call it only while holding the cell's lock: no other
/// process writes these then. Returns the paths removed.
pub fn remove_cell_temporaries(root: &Path, id: &str) -> Vec<PathBuf> {
    let failure = failure_file(root, id);
    let failure_stem = failure
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut removed =
        scl_fs::remove_temporaries(root, false, &|_, t| t.stem == id || t.stem == failure_stem);
    removed.extend(scl_fs::remove_temporaries(
        &partial_dir(root, id),
        true,
        &|_, _| true,
    ));
    removed
}

/// Removes the temporaries directly in an experiment's folder and in its `figures/` that were
/// abandoned ([`scl_fs::is_abandoned`]: their process is not running on this machine and they
/// have not changed for a minute), such as a report figure or a cell's staging folder of a
/// process killed while writing. Returns the paths removed.
pub fn remove_abandoned_temporaries(root: &Path) -> Vec<PathBuf> {
    let mut removed = scl_fs::remove_temporaries(root, false, &scl_fs::is_abandoned);
    removed.extend(scl_fs::remove_temporaries(
        &root.join("figures"),
        false,
        &scl_fs::is_abandoned,
    ));
    removed
}

/// The folder of the cells' logs.
pub fn logs_dir(root: &Path) -> PathBuf {
    root.join(".logs")
}

/// The log of cell `id`: the stderr of every process that ran it, appended in turn.
pub fn log_file(root: &Path, id: &str) -> PathBuf {
    logs_dir(root).join(format!("{id}.log"))
}

/// The folder of the logs of cluster job-array tasks.
pub fn slurm_dir(root: &Path) -> PathBuf {
    root.join(".slurm")
}
