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
use crate::config::{ConfigError, UfmConfig};
use crate::experiment::{Cell, DeepCell, Experiment};
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
}

/// A command that runs one cell in a child process: `program args.. --cell I --device D
/// --supervised`. The child must follow the protocol of [`ChildProtocol`].
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The executable (e.g. `std::env::current_exe()`).
    pub program: PathBuf,
    /// Arguments before `--cell`.
    pub args: Vec<std::ffi::OsString>,
}

/// How a supervised child process talks to the sweep that started it.
///
/// - It prints `progress <done> <total>` lines on stdout as its cell advances.
/// - It exits when its stdin reaches end-of-file, which happens when the parent dies (also
///   by `kill -9`), so no orphan keeps working on a cell that a restarted sweep will run.
/// - A line `stop` on its stdin asks it to checkpoint and stop, as Ctrl-C would
///   ([`crate::interrupt::request`]); it then prints its status line (`status interrupted
///   ...`, [`ChildProtocol::status_line`]) and exits with code 0.
/// - Exit code 0: the cell finished; anything else: it failed, and its error is in
///   `<root>/.failed-<id>.json` (written by [`run_cell`]) or else in its log
///   `<root>/.logs/<id>.log` (its stderr).
pub struct ChildProtocol;

impl ChildProtocol {
    /// The progress line for `done` of `total`.
    pub fn progress_line(done: u64, total: u64) -> String {
        format!("progress {done} {total}")
    }

    /// Parses a progress line.
    pub fn parse_progress(line: &str) -> Option<(u64, u64)> {
        let mut words = line.strip_prefix("progress ")?.split(' ');
        Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
    }

    /// The line that reports how the cell ended (`status <kind> [text]`).
    pub fn status_line(status: &CellStatus) -> String {
        match status {
            CellStatus::Finished(line) => format!("status finished {line}"),
            CellStatus::AlreadyFinished => "status already-finished".to_string(),
            CellStatus::Busy => "status busy".to_string(),
            CellStatus::Interrupted(what) => format!("status interrupted {what}"),
        }
    }

    /// Parses a line of [`Self::status_line`].
    pub fn parse_status(line: &str) -> Option<CellStatus> {
        let rest = line.strip_prefix("status ")?;
        let (kind, text) = rest.split_once(' ').unwrap_or((rest, ""));
        Some(match kind {
            "finished" => CellStatus::Finished(text.to_string()),
            "already-finished" => CellStatus::AlreadyFinished,
            "busy" => CellStatus::Busy,
            "interrupted" => CellStatus::Interrupted(text.to_string()),
            _ => return None,
        })
    }

    /// The line that asks a child to checkpoint and stop.
    pub const STOP: &'static str = "stop";

    /// Exits the process with code 3 as soon as stdin is closed, and turns a [`Self::STOP`]
    /// line into [`crate::interrupt::request`] (call once, in the child).
    pub fn exit_when_parent_dies() {
        std::thread::spawn(|| {
            use std::io::BufRead;
            for line in std::io::stdin().lock().lines() {
                match line {
                    Ok(l) if l.trim() == Self::STOP => crate::interrupt::request(),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            std::process::exit(3);
        });
    }
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
    /// Gram matrix of the final class means (`K` rows of `K`).
    #[serde(default)]
    pub class_mean_gram: Vec<Vec<f64>>,
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
    /// Cells skipped because another process holds their lock (running elsewhere).
    pub busy: Vec<String>,
    /// Cells that failed, with their error.
    pub failed: Vec<(String, String)>,
    /// Cells stopped by an interrupt ([`crate::interrupt`]), with what they saved. After an
    /// interrupt no further cell starts.
    pub interrupted: Vec<(String, String)>,
}

/// The results folder of `experiment` under a results root.
pub fn experiment_root(experiment: &Experiment, results_root: &Path) -> PathBuf {
    results_root.join(experiment.folder_name())
}

/// Whether cell `id` has finished (its `summary.json` exists).
pub fn is_finished(root: &Path, id: &str) -> bool {
    root.join(id).join("summary.json").exists()
}

/// Checks that every run directory already under `root` (finished or partial) was made by the
/// same resolved configuration as the cell of that id now; nothing is written.
///
/// # Errors
/// A one-sentence [`ConfigError`] naming the directory, when a stored configuration differs
/// or cannot be read.
pub fn check_results_dir(experiment: &Experiment, root: &Path) -> Result<(), ConfigError> {
    let ufm = experiment
        .cells
        .iter()
        .map(|c| (c.id.as_str(), same_config(&c.config)));
    let deep = experiment
        .deep_cells
        .iter()
        .map(|c| (c.id.as_str(), same_config(&c.config)));
    for (id, same) in ufm.chain(deep) {
        for dir in [root.join(id), root.join(format!(".partial-{id}"))] {
            let Ok(text) = std::fs::read_to_string(dir.join("config.json")) else {
                continue;
            };
            let stored = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("config").cloned());
            if !stored.is_some_and(&same) {
                return Err(ConfigError::new(format!(
                    "{} holds a run of a different configuration under the same cell id: \
                     move it away or choose another --out",
                    dir.display()
                )));
            }
        }
    }
    Ok(())
}

/// A test of a stored `config` value against `config`: read back as `T` (so fields added
/// later with defaults compare equal) and compared as JSON.
fn same_config<T: Serialize + serde::de::DeserializeOwned + 'static>(
    config: &T,
) -> Box<dyn Fn(serde_json::Value) -> bool> {
    let expected = serde_json::to_value(config).expect("configurations serialise to JSON");
    Box::new(move |stored| {
        serde_json::from_value::<T>(stored)
            .ok()
            .and_then(|c| serde_json::to_value(c).ok())
            .is_some_and(|v| v == expected)
    })
}

/// The cell at `index` of `experiment` (UFM cells first, as in [`Experiment::ids`]).
enum Job<'a> {
    Ufm(&'a Cell),
    Deep(&'a DeepCell),
}

impl Job<'_> {
    fn at(experiment: &Experiment, index: usize) -> Option<Job<'_>> {
        match experiment.cells.get(index) {
            Some(c) => Some(Job::Ufm(c)),
            None => experiment
                .deep_cells
                .get(index - experiment.cells.len())
                .map(Job::Deep),
        }
    }

    fn id(&self) -> &str {
        match self {
            Job::Ufm(c) => &c.id,
            Job::Deep(c) => &c.id,
        }
    }

    /// Progress length and unit.
    fn length(&self) -> (usize, &'static str) {
        match self {
            Job::Ufm(c) => (c.config.steps, "step"),
            Job::Deep(c) => (c.config.epochs, "epoch"),
        }
    }
}

/// A held cell lock; the lock file is removed when dropped.
struct CellLock(PathBuf);

impl Drop for CellLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

/// Takes `<root>/.lock-<id>` (created exclusively; holds `host pid`). A lock left by a dead
/// process of this host is taken over. `Ok(None)`: a live process holds it.
fn lock_cell(root: &Path, id: &str) -> Result<Option<CellLock>, RunError> {
    let path = root.join(format!(".lock-{id}"));
    let me = format!("{} {}", host_name(), std::process::id());
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(me.as_bytes()).map_err(|e| io_error(&path, e))?;
                return Ok(Some(CellLock(path)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let mut words = holder.split_whitespace();
                let (host, pid) = (words.next(), words.next());
                let stale = host == Some(host_name().as_str())
                    && pid.is_some_and(|p| !Path::new("/proc").join(p).exists());
                if !stale {
                    return Ok(None);
                }
                let _ = std::fs::remove_file(&path);
            }
            Err(e) => return Err(io_error(&path, e)),
        }
    }
    Ok(None)
}

/// What [`run_cell`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CellStatus {
    /// The cell ran to the end now; a one-line summary of its final numbers.
    Finished(String),
    /// The cell had finished before; nothing ran.
    AlreadyFinished,
    /// Another live process holds the cell's lock; nothing ran.
    Busy,
    /// A stop was asked for ([`crate::interrupt`]) while the cell ran: the
    /// [`RunError::Interrupted`] message ("interrupted at step ..."), which says what was saved.
    Interrupted(String),
}

/// Runs cell `index` of `experiment` in this process on `device` (resuming a deep cell from
/// its newest checkpoint), unless it has finished or another process is running it.
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
    let job = Job::at(experiment, index).ok_or_else(|| {
        ConfigError::new(format!(
            "--cell {index} does not exist: the experiment has cells 0 to {}",
            experiment.len().saturating_sub(1)
        ))
    })?;
    opts.backend.check_device(device)?;
    let root = experiment_root(experiment, &opts.results_root);
    std::fs::create_dir_all(&root).map_err(|e| io_error(&root, e))?;
    let id = job.id().to_string();
    if is_finished(&root, &id) {
        return Ok(CellStatus::AlreadyFinished);
    }
    let Some(_lock) = lock_cell(&root, &id)? else {
        return Ok(CellStatus::Busy);
    };
    if is_finished(&root, &id) {
        return Ok(CellStatus::AlreadyFinished);
    }
    let (total, _) = job.length();
    let total = total as u64;
    let result = match job {
        Job::Ufm(cell) => run_ufm_cell(
            cell,
            experiment,
            &root,
            opts.backend,
            device,
            &git_revision(),
            |s| progress(s as u64, total),
        )
        .map(|summary| {
            format!(
                "OF distance {:.4}, loss gap {:.2e}, {:.1}s",
                summary.last.geometry.overall.of_distance, summary.loss_gap, summary.seconds
            )
        }),
        Job::Deep(cell) => {
            let data_dir = scl_data::DataDir::resolve(opts.data_dir.as_deref());
            run_deep_cell(cell, &root, opts.backend, device, &data_dir, |e| {
                progress(e as u64, total)
            })
            .map(|summary| match summary.outcome.metrics.last() {
                Some(m) => format!(
                    "OF distance {:.4}, balanced accuracy {:.3}, {:.1}s",
                    m.geometry.overall.of_distance, m.balanced_accuracy, summary.seconds
                ),
                None => "no evaluated epoch".to_string(),
            })
        }
    };
    let failure = root.join(format!(".failed-{id}.json"));
    match result {
        Ok(line) => {
            let _ = std::fs::remove_file(&failure);
            Ok(CellStatus::Finished(line))
        }
        Err(e @ RunError::Interrupted { .. }) => Ok(CellStatus::Interrupted(e.to_string())),
        Err(e) => {
            record_failure(&root, &id, &e.to_string());
            Err(e)
        }
    }
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
    let path = root.join(format!(".failed-{id}.json"));
    let tmp = root.join(format!(".failed-{id}.json.tmp-{}", std::process::id()));
    let record = FailureRecord {
        cell_id: id.to_string(),
        error: error.to_string(),
    };
    if write_json(&tmp, &record).is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    }
}

/// The failure records of the cells of `experiment` that have not finished, grid order.
pub fn read_failures(experiment: &Experiment, root: &Path) -> Vec<(String, String)> {
    experiment
        .ids()
        .into_iter()
        .filter(|id| !is_finished(root, id))
        .filter_map(|id| {
            let text = std::fs::read_to_string(root.join(format!(".failed-{id}.json"))).ok()?;
            let r: FailureRecord = serde_json::from_str(&text).ok()?;
            Some((r.cell_id, r.error))
        })
        .collect()
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
    let pending: Vec<usize> = (0..experiment.len())
        .filter(|&i| Job::at(experiment, i).is_some_and(|j| !is_finished(&root, j.id())))
        .collect();
    let skipped = experiment.len() - pending.len();
    std::fs::create_dir_all(&root).map_err(|e| io_error(&root, e))?;

    let multi = MultiProgress::with_draw_target(if opts.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let overall = multi.add(ProgressBar::new(pending.len() as u64));
    overall.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} cells done, {msg}{elapsed} elapsed, ETA {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    overall.set_prefix(experiment.folder_name());

    let next = AtomicUsize::new(0);
    let running = AtomicUsize::new(0);
    let failed = Mutex::new(Vec::new());
    let busy = Mutex::new(Vec::new());
    let interrupted = Mutex::new(Vec::new());
    let ran = AtomicUsize::new(0);
    let jobs = opts.jobs.max(1).min(pending.len().max(1));
    std::thread::scope(|scope| {
        for slot in 0..jobs {
            let device = devices[slot % devices.len()];
            let (multi, overall, next, running, failed, busy, pending, root) = (
                &multi, &overall, &next, &running, &failed, &busy, &pending, &root,
            );
            let (interrupted, ran) = (&interrupted, &ran);
            scope.spawn(move || {
                loop {
                    if crate::interrupt::requested() {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&index) = pending.get(i) else { break };
                    let job = Job::at(experiment, index).expect("pending cells exist");
                    let id = job.id().to_string();
                    let (len, unit) = job.length();
                    let bar = multi.insert_before(overall, ProgressBar::new(len as u64));
                    bar.set_style(
                        ProgressStyle::with_template(&format!(
                            "  {{prefix:48}} [{{bar:20}}] {unit} {{pos}}/{{len}} {{elapsed}}"
                        ))
                        .expect("static template")
                        .progress_chars("=> "),
                    );
                    bar.set_prefix(format!("{id} (device {device})"));
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    overall.set_message(format!("{now} running, "));
                    let result = match &opts.launcher {
                        None => run_cell(experiment, index, opts, device, |done, _| {
                            bar.set_position(done)
                        })
                        .map_err(|e| e.to_string()),
                        Some(launcher) => run_child(launcher, root, index, &id, device, |done| {
                            bar.set_position(done)
                        }),
                    };
                    let now = running.fetch_sub(1, Ordering::SeqCst) - 1;
                    overall.set_message(format!("{now} running, "));
                    bar.finish_and_clear();
                    multi.remove(&bar);
                    overall.inc(1);
                    match result {
                        Ok(CellStatus::Finished(line)) => {
                            ran.fetch_add(1, Ordering::SeqCst);
                            if !opts.progress {
                                eprintln!("finished {id}: {line}");
                            }
                        }
                        Ok(CellStatus::AlreadyFinished) => {
                            ran.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(CellStatus::Interrupted(what)) => {
                            let _ = multi.println(format!("cell {id} {what}"));
                            interrupted
                                .lock()
                                .expect("no panics under the lock")
                                .push((id, what));
                        }
                        Ok(CellStatus::Busy) => {
                            let _ = multi.println(format!(
                                "cell {id} skipped: another process is running it"
                            ));
                            busy.lock().expect("no panics under the lock").push(id);
                        }
                        Err(e) => {
                            let _ = multi.println(format!("cell {id} failed: {e}"));
                            failed
                                .lock()
                                .expect("no worker panics while holding the lock")
                                .push((id, e));
                        }
                    }
                }
            });
        }
    });
    overall.finish_and_clear();

    let failed = failed.into_inner().expect("workers have finished");
    let busy = busy.into_inner().expect("workers have finished");
    Ok(SweepOutcome {
        ran: ran.into_inner(),
        skipped,
        busy,
        failed,
        interrupted: interrupted.into_inner().expect("workers have finished"),
        summaries: read_summaries(experiment, &root),
        deep_summaries: read_deep_summaries(experiment, &root),
    })
}

/// Runs cell `index` in a child process made by `launcher`, relaying its progress lines;
/// its stderr goes to `<root>/.logs/<id>.log`.
fn run_child(
    launcher: &Launcher,
    root: &Path,
    index: usize,
    id: &str,
    device: usize,
    mut progress: impl FnMut(u64),
) -> Result<CellStatus, String> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let logs = root.join(".logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let log_path = logs.join(format!("{id}.log"));
    let log =
        std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut child = Command::new(&launcher.program)
        .args(&launcher.args)
        .args([
            "--cell",
            &index.to_string(),
            "--device",
            &device.to_string(),
            "--supervised",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", launcher.program.display()))?;
    // The child's stdin stays open while it runs (it exits when this process dies) and
    // carries the stop request when this process is interrupted.
    let mut stdin = child.stdin.take();
    let ended = std::sync::atomic::AtomicBool::new(false);
    let mut reported = None;
    let status = std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut sent = false;
            while !ended.load(Ordering::SeqCst) {
                if !sent
                    && crate::interrupt::requested()
                    && let Some(pipe) = stdin.as_mut()
                {
                    let _ = writeln!(pipe, "{}", ChildProtocol::STOP);
                    let _ = pipe.flush();
                    sent = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        });
        if let Some(out) = child.stdout.take() {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Some((done, _)) = ChildProtocol::parse_progress(&line) {
                    progress(done);
                } else if let Some(status) = ChildProtocol::parse_status(&line) {
                    reported = Some(status);
                }
            }
        }
        let status = child.wait();
        ended.store(true, Ordering::SeqCst);
        status
    })
    .map_err(|e| format!("waiting for the cell's process: {e}"))?;
    if status.success() {
        return Ok(reported.unwrap_or(CellStatus::Finished(String::new())));
    }
    // The child records its own error; a crash (panic, signal) leaves only its log.
    let recorded = std::fs::read_to_string(root.join(format!(".failed-{id}.json")))
        .ok()
        .and_then(|t| serde_json::from_str::<FailureRecord>(&t).ok())
        .map(|r| r.error);
    let error = recorded.unwrap_or_else(|| {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail = log
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let e = format!("the cell's process ended with {status}: {tail}");
        record_failure(root, id, &e);
        e
    });
    Err(error)
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
    device: usize,
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
    let outcome = backend.train_deep(device, &cell.config, &opts, progress)?;
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

fn run_ufm_cell(
    cell: &Cell,
    experiment: &Experiment,
    root: &Path,
    backend: BackendKind,
    device: usize,
    git: &str,
    progress: impl FnMut(usize),
) -> Result<RunSummary, RunError> {
    let start = Instant::now();
    let outcome: UfmOutcome = backend.run_ufm(device, &cell.config, progress)?;
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
        class_mean_gram: outcome.final_gram.clone(),
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

/// The overall columns of one row of a UFM cell's `metrics.csv`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricsRow {
    /// Optimisation step.
    pub step: usize,
    /// Full-batch loss.
    pub loss: f64,
    /// OF distance of the class means.
    pub of_distance: f64,
    /// NC1.
    pub nc1: f64,
    /// Mean off-diagonal cosine of the class means.
    pub mean_cosine: f64,
}

/// Reads `<root>/<id>/metrics.csv` of a UFM cell (columns found by name in its header);
/// empty when the file is missing or has no such columns.
pub fn read_metrics_csv(root: &Path, id: &str) -> Vec<MetricsRow> {
    let Ok(text) = std::fs::read_to_string(root.join(id).join("metrics.csv")) else {
        return Vec::new();
    };
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(s), Some(l), Some(o), Some(n), Some(c)) = (
        col("step"),
        col("loss"),
        col("of_distance"),
        col("nc1"),
        col("mean_cosine"),
    ) else {
        return Vec::new();
    };
    lines
        .filter_map(|line| {
            let v: Vec<&str> = line.split(',').collect();
            let num = |i: usize| v.get(i)?.parse::<f64>().ok();
            Some(MetricsRow {
                step: v.get(s)?.parse().ok()?,
                loss: num(l)?,
                of_distance: num(o)?,
                nc1: num(n)?,
                mean_cosine: num(c)?,
            })
        })
        .collect()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_status_lines_round_trip() {
        for status in [
            CellStatus::Finished("OF distance 0.1, 2.0s".into()),
            CellStatus::Finished(String::new()),
            CellStatus::AlreadyFinished,
            CellStatus::Busy,
            CellStatus::Interrupted("interrupted at step 3; checkpoint saved in x y".into()),
        ] {
            let line = ChildProtocol::status_line(&status);
            assert_eq!(ChildProtocol::parse_status(&line), Some(status), "{line}");
        }
        assert_eq!(ChildProtocol::parse_status("progress 1 2"), None);
        assert_eq!(ChildProtocol::parse_status("status exploded"), None);
        assert_eq!(ChildProtocol::parse_progress("progress 3 7"), Some((3, 7)));
    }
}
