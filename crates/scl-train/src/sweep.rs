//! Running the cells of an experiment and writing their run directories.
//!
//! Layout of the results, under a results root (default `runs/`):
//!
//! ```text
//! runs/<experiment>/
//!   report.md
//!   <cell-id>/config.json    resolved configuration, backend, git revision
//!   <cell-id>/metrics.csv    one row per logged step
//!   <cell-id>/summary.json   final numbers; its presence marks the cell as finished
//! ```
//!
//! A cell is computed in a temporary folder and renamed into place only when every file is
//! written, so a finished cell directory is never partial and a finished cell never runs again.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::RunError;
use crate::backend::BackendKind;
use crate::config::UfmConfig;
use crate::experiment::{Cell, DeepCell, Experiment};
use crate::report::write_report;
use crate::ufm::UfmOutcome;

/// How to run a sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Folder under which `<experiment>/` is written.
    pub results_root: PathBuf,
    /// Backend to run the cells on.
    pub backend: BackendKind,
    /// Cells run at once (at least 1).
    pub jobs: usize,
    /// Draw progress bars (when false, one line per finished cell is printed instead).
    pub progress: bool,
    /// Data directory of the deep cells' datasets (`None`: `$SCL_DATA_DIR`, else
    /// `datasets/cache`).
    pub data_dir: Option<PathBuf>,
}

/// What `summary.json` of a deep-network cell holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeepSummary {
    /// The cell id.
    pub cell_id: String,
    /// The resolved configuration.
    pub config: crate::deep::DeepConfig,
    /// Wall-clock seconds of the last invocation (a resumed cell counts only its last part).
    pub seconds: f64,
    /// The backend the cell ran on.
    pub backend: String,
    /// Counts, minority classes and the metrics of every evaluated epoch.
    #[serde(flatten)]
    pub outcome: crate::deep::DeepOutcome,
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

/// What `summary.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    /// The cell id.
    pub cell_id: String,
    /// The resolved configuration (copied here so a report needs only this file).
    pub config: UfmConfig,
    /// Samples per class.
    pub class_sizes: Vec<usize>,
    /// The final logged point: loss and geometry.
    pub last: crate::ufm::UfmPoint,
    /// The closed-form loss at an orthogonal frame.
    pub orthogonal_frame_loss: f64,
    /// Final loss minus the orthogonal-frame loss.
    pub loss_gap: f64,
    /// Wall-clock seconds the cell took.
    pub seconds: f64,
    /// The backend the cell ran on.
    pub backend: String,
    /// For a mini-batch run, the validator's verdict on every batch the run used.
    #[serde(default)]
    pub verdict: Option<scl_batching::Verdict>,
}

/// The result of a sweep.
#[derive(Debug, Clone)]
pub struct SweepOutcome {
    /// Summaries of every finished UFM cell of the experiment (run now or earlier), grid order.
    pub summaries: Vec<RunSummary>,
    /// Summaries of every finished deep cell, grid order.
    pub deep_summaries: Vec<DeepSummary>,
    /// Cells run by this call.
    pub ran: usize,
    /// Cells skipped because they had finished before.
    pub skipped: usize,
    /// Cells that failed, with their error.
    pub failed: Vec<(String, String)>,
    /// The report that was written.
    pub report: PathBuf,
}

/// Runs every unfinished cell of `experiment` and writes the report.
///
/// A failed cell is recorded and does not stop the others.
///
/// # Errors
/// A [`ConfigError`] when the backend is not available, or an I/O error message when the
/// results folder cannot be written.
pub fn run_sweep(experiment: &Experiment, opts: &SweepOptions) -> Result<SweepOutcome, RunError> {
    opts.backend.check_available()?;
    let root = opts.results_root.join(experiment.folder_name());
    enum Job<'a> {
        Ufm(&'a Cell),
        Deep(&'a DeepCell),
    }
    let done = |id: &str| root.join(id).join("summary.json").exists();
    let pending: Vec<Job> = experiment
        .cells
        .iter()
        .filter(|c| !done(&c.id))
        .map(Job::Ufm)
        .chain(
            experiment
                .deep_cells
                .iter()
                .filter(|c| !done(&c.id))
                .map(Job::Deep),
        )
        .collect();
    let skipped = experiment.len() - pending.len();
    std::fs::create_dir_all(&root).map_err(|e| io_error(&root, e))?;
    let data_dir = scl_data::DataDir::resolve(opts.data_dir.as_deref());

    let git = git_revision();
    let multi = MultiProgress::with_draw_target(if opts.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let overall = multi.add(ProgressBar::new(pending.len() as u64));
    overall.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} cells, {elapsed} elapsed, ETA {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    overall.set_prefix(experiment.folder_name());

    let next = AtomicUsize::new(0);
    let failed = Mutex::new(Vec::new());
    let jobs = opts.jobs.max(1).min(pending.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(job) = pending.get(i) else { break };
                    let (id, len, unit) = match job {
                        Job::Ufm(c) => (&c.id, c.config.steps, "step"),
                        Job::Deep(c) => (&c.id, c.config.epochs, "epoch"),
                    };
                    let bar = multi.insert_before(&overall, ProgressBar::new(len as u64));
                    bar.set_style(
                        ProgressStyle::with_template(&format!(
                            "  {{prefix:40}} [{{bar:20}}] {unit} {{pos}}/{{len}}"
                        ))
                        .expect("static template")
                        .progress_chars("=> "),
                    );
                    bar.set_prefix(id.clone());
                    let result = match job {
                        Job::Ufm(cell) => {
                            run_cell(cell, experiment, &root, opts.backend, &git, |s| {
                                bar.set_position(s as u64)
                            })
                            .map(|summary| {
                                format!(
                                    "OF distance {:.4}, loss gap {:.2e}, {:.1}s",
                                    summary.last.geometry.overall.of_distance,
                                    summary.loss_gap,
                                    summary.seconds
                                )
                            })
                        }
                        Job::Deep(cell) => {
                            run_deep_cell(cell, &root, opts.backend, &data_dir, |e| {
                                bar.set_position(e as u64)
                            })
                            .map(|summary| {
                                match summary.outcome.metrics.last() {
                                    Some(m) => format!(
                                        "OF distance {:.4}, balanced accuracy {:.3}, {:.1}s",
                                        m.geometry.overall.of_distance,
                                        m.balanced_accuracy,
                                        summary.seconds
                                    ),
                                    None => "no evaluated epoch".to_string(),
                                }
                            })
                        }
                    };
                    bar.finish_and_clear();
                    multi.remove(&bar);
                    overall.inc(1);
                    match result {
                        Ok(line) => {
                            if !opts.progress {
                                eprintln!("finished {id}: {line}");
                            }
                        }
                        Err(e) => {
                            let _ = multi.println(format!("cell {id} failed: {e}"));
                            failed
                                .lock()
                                .expect("no worker panics while holding the lock")
                                .push((id.clone(), e.to_string()));
                        }
                    }
                }
            });
        }
    });
    overall.finish_and_clear();

    let summaries = read_summaries(experiment, &root);
    let deep_summaries = read_deep_summaries(experiment, &root);
    let failed = failed.into_inner().expect("workers have finished");
    let report = root.join("report.md");
    write_report(experiment, &summaries, &deep_summaries, &failed, &report)
        .map_err(|e| io_error(&report, e))?;
    Ok(SweepOutcome {
        ran: pending.len() - failed.len(),
        skipped,
        failed,
        summaries,
        deep_summaries,
        report,
    })
}

/// Summaries of the finished deep cells of `experiment`, in grid order.
pub fn read_deep_summaries(experiment: &Experiment, root: &Path) -> Vec<DeepSummary> {
    read_finished(experiment.deep_cells.iter().map(|c| c.id.as_str()), root)
}

/// The `summary.json` of each cell id that has one.
fn read_finished<'a, T: serde::de::DeserializeOwned>(
    ids: impl Iterator<Item = &'a str>,
    root: &Path,
) -> Vec<T> {
    ids.filter_map(|id| {
        let text = std::fs::read_to_string(root.join(id).join("summary.json")).ok()?;
        serde_json::from_str(&text).ok()
    })
    .collect()
}

/// Runs a deep cell in `<root>/.partial-<id>` (resuming from its newest checkpoint if an
/// earlier sweep was interrupted) and renames it to `<root>/<id>` when it has finished.
fn run_deep_cell(
    cell: &DeepCell,
    root: &Path,
    backend: BackendKind,
    data_dir: &scl_data::DataDir,
    progress: impl FnMut(usize),
) -> Result<DeepSummary, RunError> {
    let start = Instant::now();
    let work = root.join(format!(".partial-{}", cell.id));
    let opts = crate::deep::DeepRunOptions {
        run_dir: work.clone(),
        data_dir: data_dir.clone(),
        resume: true,
        backend: backend.name().to_string(),
        stop_after_epochs: None,
    };
    let outcome = backend.train_deep(&cell.config, &opts, progress)?;
    let summary = DeepSummary {
        cell_id: cell.id.clone(),
        config: cell.config.clone(),
        seconds: start.elapsed().as_secs_f64(),
        backend: backend.name().to_string(),
        outcome,
    };
    let tmp = work.join("summary.json.tmp");
    write_json(&tmp, &summary)?;
    std::fs::rename(&tmp, work.join("summary.json")).map_err(|e| io_error(&work, e))?;
    let dest = root.join(&cell.id);
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(|e| io_error(&dest, e))?;
    }
    std::fs::rename(&work, &dest).map_err(|e| io_error(&dest, e))?;
    Ok(summary)
}

/// Summaries of the finished cells of `experiment`, in grid order.
pub fn read_summaries(experiment: &Experiment, root: &Path) -> Vec<RunSummary> {
    read_finished(experiment.cells.iter().map(|c| c.id.as_str()), root)
}

fn run_cell(
    cell: &Cell,
    experiment: &Experiment,
    root: &Path,
    backend: BackendKind,
    git: &str,
    progress: impl FnMut(usize),
) -> Result<RunSummary, RunError> {
    let start = Instant::now();
    let outcome: UfmOutcome = backend.run_ufm(&cell.config, progress)?;
    let seconds = start.elapsed().as_secs_f64();

    let tmp = root.join(format!(".tmp-{}-{}", cell.id, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io_error(&tmp, e))?;
    let record = RunRecord {
        cell_id: cell.id.clone(),
        experiment: experiment.name.clone(),
        axes: cell.axes.clone(),
        config: cell.config.clone(),
        backend: backend.name().to_string(),
        git_revision: git.to_string(),
    };
    write_json(&tmp.join("config.json"), &record)?;
    write_metrics_csv(&tmp.join("metrics.csv"), &outcome)?;
    let last = *outcome
        .points
        .last()
        .ok_or_else(|| RunError::Other("the run logged no point".into()))?;
    let summary = RunSummary {
        cell_id: cell.id.clone(),
        config: cell.config.clone(),
        class_sizes: outcome.class_sizes.clone(),
        last,
        orthogonal_frame_loss: outcome.orthogonal_frame_loss,
        loss_gap: last.loss - outcome.orthogonal_frame_loss,
        seconds,
        backend: backend.name().to_string(),
        verdict: outcome.verdict.clone(),
    };
    write_json(&tmp.join("summary.json"), &summary)?;
    let dest = root.join(&cell.id);
    if dest.exists() {
        // An unfinished directory from another tool: replace it.
        std::fs::remove_dir_all(&dest).map_err(|e| io_error(&dest, e))?;
    }
    std::fs::rename(&tmp, &dest).map_err(|e| io_error(&dest, e))?;
    Ok(summary)
}

/// Columns of `metrics.csv`.
pub const METRICS_HEADER: &str = "step,loss,of_distance,etf_distance,nc1,mean_cosine,norm_ratio,\
majority_of_distance,majority_mean_cosine,majority_nc1,\
minority_of_distance,minority_mean_cosine,minority_nc1";

fn write_metrics_csv(path: &Path, outcome: &UfmOutcome) -> Result<(), RunError> {
    let mut out = String::from(METRICS_HEADER);
    out.push('\n');
    for p in &outcome.points {
        let g = &p.geometry;
        let group = |r: Option<scl_geometry::GeometryReport>| match r {
            Some(r) => format!("{},{},{}", r.of_distance, r.mean_cosine, r.nc1),
            None => ",,".to_string(),
        };
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            p.step,
            p.loss,
            g.overall.of_distance,
            g.overall.etf_distance,
            g.overall.nc1,
            g.overall.mean_cosine,
            g.overall.norm_ratio,
            group(g.majority),
            group(g.minority),
        ));
    }
    write_file(path, out.as_bytes())
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RunError> {
    let text = serde_json::to_string_pretty(value).expect("run records serialise to JSON");
    write_file(path, text.as_bytes())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    let mut f = std::fs::File::create(path).map_err(|e| io_error(path, e))?;
    f.write_all(bytes).map_err(|e| io_error(path, e))?;
    f.sync_all().map_err(|e| io_error(path, e))
}

fn io_error(path: &Path, e: std::io::Error) -> RunError {
    RunError::Io(format!("{}: {e}", path.display()))
}

/// The git revision of the current directory's repository, `-dirty` when it has changes,
/// or `unknown` outside a repository.
pub fn git_revision() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "HEAD"]) {
        Some(rev) => match run(&["status", "--porcelain"]) {
            Some(s) if !s.is_empty() => format!("{rev}-dirty"),
            _ => rev,
        },
        None => "unknown".to_string(),
    }
}

/// Whether progress bars make sense: stderr is a terminal.
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}
