//! Running the cells of an experiment: a pool of workers (threads, or child processes that
//! follow [`ChildProtocol`](crate::child::ChildProtocol)), cell locks, progress bars, and the
//! run directories of finished cells.
//!
//! A cell is computed in a temporary folder and renamed into place only when every file is
//! written, so a finished cell directory is never partial and a finished cell never runs again.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use scl_train::RunError;
use scl_train::backend::{BackendKind, BackendRuntime};
use scl_train::config::ConfigError;
use scl_train::ufm::UfmOutcome;

use crate::child::{CellRequest, CellStatus, Launcher, run_child};
use crate::experiment::{Cell, CellRef, DeepCell, Experiment};
use crate::layout::{
    CONFIG, cell_dir, experiment_root, failure_file, logs_dir, partial_dir, remove_cell_temporaries,
};
use crate::lock::lock_cell;
use crate::records::{
    DeepSummary, Records, RunConfig, RunLabel, UfmSummary, read_summaries, record_failure,
    records_of,
};
use scl_types::records::read_config_record;

/// How to run a sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Folder under which `<experiment>/` is written.
    pub results_root: PathBuf,
    /// Backend to run the cells on.
    pub backend: BackendKind,
    /// Cells run at once (at least 1).
    pub jobs: usize,
    /// Device indices of the backend; worker slot `i` runs its cells on
    /// `devices[i % devices.len()]`. Empty means device 0.
    pub devices: Vec<usize>,
    /// Draw progress bars (when false, one line per finished cell is printed instead).
    pub progress: bool,
    /// Data directory of the deep cells' datasets (`None`: `$SCL_DATA_DIR`, else
    /// `datasets/cache`).
    pub data_dir: Option<PathBuf>,
    /// Run every cell in a child process made by this launcher (`None`: on a thread of this
    /// process).
    pub launcher: Option<Launcher>,
    /// Deep cells also write their evaluated embeddings and labels as NumPy files
    /// (`<cell>/embeddings/`, [`scl_train::deep::DeepRunOptions::save_embeddings`]).
    pub save_embeddings: bool,
}

/// The result of a sweep.
#[derive(Debug, Clone)]
pub struct SweepOutcome {
    /// Summaries of every finished UFM cell of the experiment (run now or earlier), grid order.
    pub summaries: Vec<UfmSummary>,
    /// Summaries of every finished deep cell, grid order.
    pub deep_summaries: Vec<DeepSummary>,
    /// Cells run by this call.
    pub ran: usize,
    /// Cells skipped because they had finished (before this call, or in another process
    /// while it ran).
    pub skipped: usize,
    /// Cells skipped because another process holds their lock (running elsewhere).
    pub busy: Vec<String>,
    /// Cells that failed, with their error.
    pub failed: Vec<(String, String)>,
    /// Cells stopped by an interrupt ([`scl_train::interrupt`]), with what they saved. After an
    /// interrupt no further cell starts.
    pub interrupted: Vec<(String, String)>,
}

/// Checks that every run directory already under `root` (finished or partial) was made by the
/// same resolved configuration as the cell of that id now; nothing is written.
///
/// # Errors
/// A one-sentence [`ConfigError`] naming the directory, when a stored configuration differs
/// or cannot be read, or when the results folder or its `.logs` is a file.
pub fn check_results_dir(experiment: &Experiment, root: &Path) -> Result<(), ConfigError> {
    for (dir, what) in [
        (root.to_path_buf(), "the experiment's results folder"),
        (logs_dir(root), "the folder of the cells' logs"),
    ] {
        if dir.exists() && !dir.is_dir() {
            return Err(ConfigError::new(format!(
                "{} is a file, but it is {what}: move the file away or choose another results folder",
                dir.display()
            )));
        }
    }
    for cell in experiment.iter() {
        let id = cell.id();
        for dir in [cell_dir(root, id), partial_dir(root, id)] {
            if !dir.join(CONFIG).exists() {
                continue;
            }
            let same = match cell {
                CellRef::Ufm(c) => same_config(&dir, c),
                CellRef::Deep(c) => same_config(&dir, c),
            };
            if !same {
                return Err(ConfigError::new(format!(
                    "{} holds a run of a different configuration under the same cell id: \
                     move it away or choose another results folder",
                    dir.display()
                )));
            }
        }
    }
    Ok(())
}

/// Whether `dir/config.json` records `cell`'s configuration: read back as its type (so fields
/// added later with defaults compare equal) and compared as JSON.
fn same_config<C: RunConfig>(dir: &Path, cell: &Cell<C>) -> bool {
    let label = RunLabel {
        cell_id: cell.id.clone(),
        ..RunLabel::default()
    };
    read_config_record::<C>(dir, &label).is_ok_and(|record| {
        serde_json::to_value(&record.config).ok() == serde_json::to_value(&cell.config).ok()
    })
}

/// How long a cell waits for the lock another process holds before it counts as busy: the
/// cell processes of a sweep killed a moment ago notice at once that their parent is gone,
/// save a checkpoint at their current step and release their locks (a deep cell whose step
/// takes longer than this is counted busy, and the next run of the same command resumes it).
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs cell `index` of `experiment` in this process on `device` (resuming a deep cell from
/// its newest checkpoint), unless it has finished or another process is running it (after
/// waiting up to [`LOCK_WAIT`] for that process to let go).
///
/// `progress(done, total)` follows the cell. A failure is recorded in
/// `<root>/.failed-<id>.json` (removed again when the cell later finishes) and returned.
///
/// # Errors
/// [`RunError::Config`] for an index outside the grid or a device that does not exist;
/// otherwise the cell's error.
pub fn run_cell(
    experiment: &Experiment,
    index: usize,
    opts: &SweepOptions,
    device: usize,
    mut progress: impl FnMut(u64, u64),
) -> Result<CellStatus, RunError> {
    let cell = experiment.cell(index).ok_or_else(|| {
        ConfigError::new(format!(
            "cell {index} does not exist: the experiment has cells 0 to {}",
            experiment.len().saturating_sub(1)
        ))
    })?;
    opts.backend.check_device(device)?;
    let root = experiment_root(experiment, &opts.results_root);
    std::fs::create_dir_all(&root).map_err(scl_fs::at(&root))?;
    let id = cell.id().to_string();
    if records_of(&root, cell).is_complete() {
        return Ok(CellStatus::AlreadyFinished);
    }
    let waited_since = Instant::now();
    let _lock = loop {
        if let Some(lock) = lock_cell(&root, &id)? {
            break lock;
        }
        if records_of(&root, cell).is_complete() {
            return Ok(CellStatus::AlreadyFinished);
        }
        if waited_since.elapsed() >= LOCK_WAIT || scl_train::interrupt::requested() {
            return Ok(CellStatus::Busy);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    if records_of(&root, cell).is_complete() {
        return Ok(CellStatus::AlreadyFinished);
    }
    for path in remove_cell_temporaries(&root, &id) {
        eprintln!(
            "note: removed {}, left by a process that stopped while writing it",
            path.display()
        );
    }
    let (total, _) = cell.length();
    let total = total as u64;
    let result = match cell {
        CellRef::Ufm(cell) => run_ufm_cell(cell, experiment, &root, opts.backend, device, |s| {
            progress(s as u64, total)
        })
        .map(|summary| {
            format!(
                "OF distance {:.4}, loss gap {:.2e}, {:.1}s",
                summary.outcome.last.geometry.overall.of_distance,
                summary.outcome.loss_gap,
                summary.seconds
            )
        }),
        CellRef::Deep(cell) => {
            let data_dir = scl_data::DataDir::resolve(opts.data_dir.as_deref());
            run_deep_cell(cell, experiment, &root, opts, device, &data_dir, |e| {
                progress(e as u64, total)
            })
            .map(|(seconds, last)| match last {
                Some((of, balanced)) => {
                    format!("OF distance {of:.4}, balanced accuracy {balanced:.3}, {seconds:.1}s")
                }
                None => "no evaluated epoch".to_string(),
            })
        }
    };
    match result {
        Ok(line) => {
            let _ = std::fs::remove_file(failure_file(&root, &id));
            Ok(CellStatus::Finished(line))
        }
        Err(e @ RunError::Interrupted { .. }) => Ok(CellStatus::Interrupted(e.to_string())),
        Err(e) => {
            record_failure(&root, &id, &e.to_string());
            Err(e)
        }
    }
}

/// Runs every unfinished cell of `experiment`, up to `opts.jobs` at once, each on a thread or
/// in a child process (`opts.launcher`).
///
/// A failed cell is recorded and does not stop the others. The report is not written here
/// (the `scl-report` crate renders it from the results folder).
///
/// # Errors
/// A [`ConfigError`] when the backend is not available, a device does not exist, or the
/// results folder holds another configuration under a cell's id; an I/O error message when
/// the results folder cannot be written.
pub fn run_sweep(experiment: &Experiment, opts: &SweepOptions) -> Result<SweepOutcome, RunError> {
    opts.backend.check_available()?;
    let devices = if opts.devices.is_empty() {
        vec![0]
    } else {
        opts.devices.clone()
    };
    for &d in &devices {
        opts.backend.check_device(d)?;
    }
    let root = experiment_root(experiment, &opts.results_root);
    check_results_dir(experiment, &root)?;
    // Each cell's records are read once: finished cells are skipped, damaged ones named and
    // rerun.
    let pending: Vec<usize> = experiment
        .iter()
        .enumerate()
        .filter(|(_, cell)| match records_of(&root, *cell) {
            Records::Complete => false,
            Records::Damaged(why) => {
                eprintln!("warning: {why}; cell {} runs again", cell.id());
                true
            }
            Records::Missing => true,
        })
        .map(|(i, _)| i)
        .collect();
    let skipped = experiment.len() - pending.len();
    std::fs::create_dir_all(&root).map_err(scl_fs::at(&root))?;

    let pool = Pool::new(experiment, opts, &root, pending.len());
    let next = AtomicUsize::new(0);
    let jobs = opts.jobs.max(1).min(pending.len().max(1));
    std::thread::scope(|scope| {
        for slot in 0..jobs {
            let device = devices[slot % devices.len()];
            let (pool, next, pending) = (&pool, &next, &pending);
            scope.spawn(move || {
                while !scl_train::interrupt::requested() {
                    let Some(&index) = pending.get(next.fetch_add(1, Ordering::SeqCst)) else {
                        break;
                    };
                    pool.run(index, device);
                }
            });
        }
    });
    let tally = pool.finish();
    Ok(SweepOutcome {
        ran: tally.ran,
        skipped: skipped + tally.finished_elsewhere,
        busy: tally.busy,
        failed: tally.failed,
        interrupted: tally.interrupted,
        summaries: read_summaries(&experiment.cells, &root),
        deep_summaries: read_summaries(&experiment.deep_cells, &root),
    })
}

/// What the workers of a sweep have done so far.
#[derive(Default)]
struct Tally {
    ran: usize,
    /// Cells another process finished after this sweep had planned them.
    finished_elsewhere: usize,
    busy: Vec<String>,
    failed: Vec<(String, String)>,
    interrupted: Vec<(String, String)>,
}

/// The state the workers of one sweep share: progress bars and the tally.
struct Pool<'a> {
    experiment: &'a Experiment,
    opts: &'a SweepOptions,
    root: &'a Path,
    multi: MultiProgress,
    overall: ProgressBar,
    running: AtomicUsize,
    tally: Mutex<Tally>,
}

impl<'a> Pool<'a> {
    fn new(
        experiment: &'a Experiment,
        opts: &'a SweepOptions,
        root: &'a Path,
        pending: usize,
    ) -> Self {
        let multi = MultiProgress::with_draw_target(if opts.progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let overall = multi.add(ProgressBar::new(pending as u64));
        overall.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} cells done, {msg}{elapsed} elapsed, ETA {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        overall.set_prefix(experiment.folder_name());
        Self {
            experiment,
            opts,
            root,
            multi,
            overall,
            running: AtomicUsize::new(0),
            tally: Mutex::new(Tally::default()),
        }
    }

    /// Runs cell `index` on `device` (in this process or a child) under its own progress bar,
    /// and counts how it ended.
    fn run(&self, index: usize, device: usize) {
        let cell = self.experiment.cell(index).expect("pending cells exist");
        let id = cell.id().to_string();
        let (len, unit) = cell.length();
        let bar = self
            .multi
            .insert_before(&self.overall, ProgressBar::new(len as u64));
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "  {{prefix:48}} [{{bar:20}}] {unit} {{pos}}/{{len}} {{elapsed}}"
            ))
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{id} (device {device})"));
        self.set_running(self.running.fetch_add(1, Ordering::SeqCst) + 1);
        let result = match &self.opts.launcher {
            None => run_cell(self.experiment, index, self.opts, device, |done, _| {
                bar.set_position(done)
            })
            .map_err(|e| e.to_string()),
            Some(launcher) => {
                let request = CellRequest {
                    cell: index,
                    device,
                };
                run_child(launcher, self.root, request, &id, |done| {
                    bar.set_position(done)
                })
            }
        };
        self.set_running(self.running.fetch_sub(1, Ordering::SeqCst) - 1);
        bar.finish_and_clear();
        self.multi.remove(&bar);
        self.overall.inc(1);
        self.count(id, result);
    }

    fn set_running(&self, now: usize) {
        self.overall.set_message(format!("{now} running, "));
    }

    /// Adds a cell's result to the tally, with a line for what needs one.
    fn count(&self, id: String, result: Result<CellStatus, String>) {
        let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(CellStatus::Finished(line)) => {
                tally.ran += 1;
                if !self.opts.progress {
                    eprintln!("finished {id}: {line}");
                }
            }
            Ok(CellStatus::AlreadyFinished) => tally.finished_elsewhere += 1,
            Ok(CellStatus::Interrupted(what)) => {
                let _ = self.multi.println(format!("cell {id} {what}"));
                tally.interrupted.push((id, what));
            }
            Ok(CellStatus::Busy) => {
                let holder = crate::lock::lock_holder(self.root, &id)
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
                let _ = self.multi.println(format!(
                    "cell {id} skipped: another process{holder} has been running it for over {} s",
                    LOCK_WAIT.as_secs()
                ));
                tally.busy.push(id);
            }
            Err(e) => {
                let _ = self.multi.println(format!("cell {id} failed: {e}"));
                tally.failed.push((id, e));
            }
        }
    }

    fn finish(self) -> Tally {
        self.overall.finish_and_clear();
        self.tally.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

/// The label a cell's records carry.
fn label_of(experiment: &Experiment, id: &str, axes: &[(String, String)]) -> RunLabel {
    RunLabel {
        cell_id: id.to_string(),
        experiment: experiment.name.clone(),
        axes: axes.to_vec(),
    }
}

/// Runs a deep cell in `<root>/.partial-<id>` (resuming from its newest checkpoint if an
/// earlier sweep was interrupted) and renames it to `<root>/<id>` when it has finished. The
/// training layer writes the cell's records; this reads its summary back.
fn run_deep_cell(
    cell: &DeepCell,
    experiment: &Experiment,
    root: &Path,
    sweep: &SweepOptions,
    device: usize,
    data_dir: &scl_data::DataDir,
    progress: impl FnMut(usize),
) -> Result<(f64, Option<(f64, f64)>), RunError> {
    let backend = sweep.backend;
    let start = Instant::now();
    let work = partial_dir(root, &cell.id);
    let opts = scl_train::deep::DeepRunOptions {
        run_dir: work.clone(),
        label: label_of(experiment, &cell.id, &cell.axes),
        data_dir: data_dir.clone(),
        resume: true,
        backend,
        stop_after_epochs: None,
        save_embeddings: sweep.save_embeddings,
        export_safetensors: None,
    };
    let outcome = backend.train_deep(device, &cell.config, &opts, progress)?;
    scl_fs::move_dir_into_place(&work, &cell_dir(root, &cell.id))?;
    let last = outcome
        .metrics
        .last()
        .map(|m| (m.geometry.overall.of_distance, m.balanced_accuracy));
    Ok((start.elapsed().as_secs_f64(), last))
}

/// Runs a UFM cell and writes its records into a staged folder renamed into place.
fn run_ufm_cell(
    cell: &Cell,
    experiment: &Experiment,
    root: &Path,
    backend: BackendKind,
    device: usize,
    progress: impl FnMut(usize),
) -> Result<UfmSummary, RunError> {
    let start = Instant::now();
    let outcome: UfmOutcome = backend.run_ufm(device, &cell.config, progress)?;
    let seconds = start.elapsed().as_secs_f64();
    let staged = scl_fs::StagedDir::new_in(root, &cell.id)?;
    let label = label_of(experiment, &cell.id, &cell.axes);
    let summary = scl_train::ufm::write_records(
        staged.path(),
        &label,
        backend,
        &cell.config,
        &outcome,
        seconds,
    )?;
    // An unfinished folder of that name (from another tool) is replaced.
    staged.commit(&cell_dir(root, &cell.id))?;
    Ok(summary)
}

/// Whether progress bars make sense: stderr is a terminal.
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}
