//! The protocol between a sweep and the child processes that run its cells, and the sweep's
//! side of it (`run_child`: start one, relay its progress, pass on a stop, read how it
//! ended).

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::layout::{failure_file, log_file, logs_dir};
use crate::records::{FailureRecord, record_failure};

/// What [`run_cell`](crate::runner::run_cell) did, and what a child process reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CellStatus {
    /// The cell ran to the end now; a one-line summary of its final numbers.
    Finished(String),
    /// The cell had finished before; nothing ran.
    AlreadyFinished,
    /// Another live process holds the cell's lock; nothing ran.
    Busy,
    /// A stop was asked for ([`scl_train::interrupt`]) while the cell ran: the
    /// [`scl_train::RunError::Interrupted`] message ("interrupted at step ..."), which says what
    /// was saved.
    Interrupted(String),
}

/// What a child process is asked to do: run one cell of the experiment on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellRequest {
    /// The cell's index in the grid ([`Experiment::cell`](crate::experiment::Experiment::cell)).
    pub cell: usize,
    /// The device index on the sweep's backend.
    pub device: usize,
}

/// The command-line arguments of a child process that runs one [`CellRequest`] under
/// [`ChildProtocol`]; the program that parses them provides this.
pub type ChildArgs = dyn Fn(CellRequest) -> Vec<OsString> + Send + Sync;

/// How to start the child process that runs one cell: `program` with `args(request)`. The
/// child must follow [`ChildProtocol`].
#[derive(Clone)]
pub struct Launcher {
    /// The executable (e.g. `std::env::current_exe()`).
    pub program: PathBuf,
    /// The child's arguments for a request, in the child's own command-line syntax.
    pub args: Arc<ChildArgs>,
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let example = (self.args)(CellRequest { cell: 0, device: 0 });
        f.debug_struct("Launcher")
            .field("program", &self.program)
            .field("args (cell 0, device 0)", &example)
            .finish()
    }
}

/// How a supervised child process talks to the sweep that started it.
///
/// - It prints `progress <done> <total>` lines on stdout as its cell advances
///   ([`ChildProtocol::say`], which ignores a closed stdout).
/// - A line `stop` on its stdin asks it to checkpoint and stop, as Ctrl-C would
///   ([`scl_train::interrupt::request`]); it then prints its status line (`status interrupted
///   ...`, [`ChildProtocol::status_line`]) and exits with code 0.
/// - When its stdin reaches end-of-file, which happens when the parent dies (also by
///   `kill -9`), it stops the same way: a deep cell saves a checkpoint at its current step and
///   the process exits, so no orphan keeps working on a cell that a restarted sweep will run.
///   A cell that has not stopped [`ChildProtocol::ORPHAN_GRACE`] later is ended at once
///   (exit code 3).
/// - Exit code 0: the cell finished or stopped as asked; anything else: it failed, and it
///   printed its error (`failed <error>`, [`ChildProtocol::failure_line`]), which is also in
///   `<root>/.failed-<id>.json` (written by [`run_cell`](crate::runner::run_cell)) where the
///   disk allows; a crash (a signal) leaves only its log `<root>/.logs/<id>.log` (its stderr).
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

    /// The line that reports the cell's error (`failed <error>`), printed before a child exits
    /// with a nonzero code, so that the parent has the reason even where the failure record
    /// and the log could not be written (a full disk).
    pub fn failure_line(error: &str) -> String {
        format!("failed {}", error.replace('\n', " "))
    }

    /// Parses a line of [`Self::failure_line`].
    pub fn parse_failure(line: &str) -> Option<&str> {
        line.strip_prefix("failed ")
    }

    /// The line that asks a child to checkpoint and stop.
    pub const STOP: &'static str = "stop";

    /// How long an orphaned child (its parent gone) may take to save its checkpoint before it
    /// is ended.
    pub const ORPHAN_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

    /// Turns a [`Self::STOP`] line on stdin, and the end of stdin (the parent has died), into
    /// [`scl_train::interrupt::request`]; after the end of stdin the process exits with code 3
    /// if it is still running [`Self::ORPHAN_GRACE`] later (call once, in the child).
    pub fn stop_when_asked_or_orphaned() {
        std::thread::spawn(|| {
            use std::io::BufRead;
            for line in std::io::stdin().lock().lines() {
                match line {
                    Ok(l) if l.trim() == Self::STOP => scl_train::interrupt::request(),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            scl_train::interrupt::request();
            std::thread::sleep(Self::ORPHAN_GRACE);
            std::process::exit(3);
        });
    }

    /// Prints `line` on stdout for the parent; a stdout that is closed (the parent has died)
    /// is not an error.
    pub fn say(line: &str) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}").and_then(|_| out.flush());
    }
}

/// Runs cell `index` in a child process made by `launcher`, relaying its progress lines;
/// its stderr is appended to `<root>/.logs/<id>.log`.
pub(crate) fn run_child(
    launcher: &Launcher,
    root: &Path,
    request: CellRequest,
    id: &str,
    mut progress: impl FnMut(u64),
) -> Result<CellStatus, String> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let logs = logs_dir(root);
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let log_path = log_file(root, id);
    // Appended, never truncated: every process that runs (or finds busy or finished) the
    // cell adds to one log, so a warning of one attempt survives the next attempt's start.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut child = Command::new(&launcher.program)
        .args((launcher.args)(request))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", launcher.program.display()))?;
    // The child's stdin stays open while it runs (it checkpoints and stops when this process
    // dies) and carries the stop request when this process is interrupted.
    let mut stdin = child.stdin.take();
    let ended = std::sync::atomic::AtomicBool::new(false);
    let mut reported = None;
    let mut failure = None;
    let status = std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut sent = false;
            while !ended.load(Ordering::SeqCst) {
                if !sent
                    && scl_train::interrupt::requested()
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
                } else if let Some(error) = ChildProtocol::parse_failure(&line) {
                    failure = Some(error.to_string());
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
    // The child prints its error (and records it where the disk allows: recorded here again,
    // the same sentence, in case it could not); a crash (panic, signal) leaves only its log.
    if let Some(error) = failure {
        record_failure(root, id, &error);
        return Err(error);
    }
    let recorded = std::fs::read_to_string(failure_file(root, id))
        .ok()
        .and_then(|t| serde_json::from_str::<FailureRecord>(&t).ok())
        .map(|r| r.error);
    let error = recorded.unwrap_or_else(|| {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail = log
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("its log is empty");
        let e = format!("the cell's process ended with {status}: {tail}");
        record_failure(root, id, &e);
        e
    });
    Err(error)
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
        let line = ChildProtocol::failure_line("a: No space left on device\nsecond line");
        assert_eq!(
            ChildProtocol::parse_failure(&line),
            Some("a: No space left on device second line")
        );
    }
}
