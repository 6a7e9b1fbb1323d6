//! One cell of a sweep: the command line of the child process that runs it, and `--cell I`
//! (by hand, or as that child under the sweep's protocol).

use super::*;

/// The command line of a child process that runs one cell of this sweep: `sweep` with the
/// sweep's own options, then `--cell I --device D --supervised` (the flags of [`SweepArgs`]).
pub fn child_args(
    experiment: &Path,
    profile: Option<&str>,
    sets: &[String],
    backend: BackendKind,
    out: &Path,
    data_dir: Option<&Path>,
    save_embeddings: bool,
) -> Arc<dyn Fn(CellRequest) -> Vec<OsString> + Send + Sync> {
    let mut v: Vec<OsString> = vec![
        "sweep".into(),
        "--experiment".into(),
        experiment.into(),
        "--backend".into(),
        backend.name().into(),
        "--out".into(),
        out.into(),
    ];
    if let Some(p) = profile {
        v.extend(["--profile".into(), p.into()]);
    }
    if let Some(d) = data_dir {
        v.extend(["--data-dir".into(), d.into()]);
    }
    for set in sets {
        v.extend(["--set".into(), set.into()]);
    }
    if save_embeddings {
        v.push("--save-embeddings".into());
    }
    Arc::new(move |request: CellRequest| {
        let mut args = v.clone();
        args.extend([
            "--cell".into(),
            request.cell.to_string().into(),
            "--device".into(),
            request.device.to_string().into(),
            "--supervised".into(),
        ]);
        args
    })
}

/// `--cell I`: one cell in this process.
pub(super) fn run_one(
    experiment: &Experiment,
    index: usize,
    opts: &SweepOptions,
    args: &SweepArgs,
) -> ExitCode {
    if !args.supervised {
        return report_one(
            experiment,
            index,
            run_cell_at(experiment, index, opts, false),
        );
    }
    ChildProtocol::stop_when_asked_or_orphaned();
    // A full disk must not make a warning on stderr (the cell's log) end the cell.
    let relay = crate::stderr_relay::StderrRelay::start();
    let result = run_cell_at(experiment, index, opts, true);
    let code = match result {
        Ok(status) => {
            ChildProtocol::say(&ChildProtocol::status_line(&status));
            if let CellStatus::Interrupted(what) = &status {
                // In the log too: a cell whose parent died has no one else to tell.
                eprintln!("cell {index}: {what}");
            }
            ExitCode::SUCCESS
        }
        Err(RunError::Config(e)) => {
            ChildProtocol::say(&ChildProtocol::failure_line(&e.to_string()));
            config_error(&e)
        }
        Err(e) => {
            // The parent hears the reason even where the failure record and the log could
            // not be written (a full disk).
            ChildProtocol::say(&ChildProtocol::failure_line(&e.to_string()));
            eprintln!("error: cell {index} failed: {e}");
            ExitCode::FAILURE
        }
    };
    if let Some(relay) = relay {
        relay.finish();
    }
    code
}

/// Runs cell `index` on the first device given, printing progress lines for a supervising
/// sweep when `supervised`.
fn run_cell_at(
    experiment: &Experiment,
    index: usize,
    opts: &SweepOptions,
    supervised: bool,
) -> Result<CellStatus, RunError> {
    let device = opts.devices.first().copied().unwrap_or(0);
    run_cell(experiment, index, opts, device, |done, total| {
        if supervised {
            ChildProtocol::say(&ChildProtocol::progress_line(done, total));
        }
    })
}

/// The last line and exit code of `--cell I` run by hand.
fn report_one(
    experiment: &Experiment,
    index: usize,
    result: Result<CellStatus, RunError>,
) -> ExitCode {
    let id = experiment
        .ids()
        .get(index)
        .map(|s| s.to_string())
        .unwrap_or_default();
    match result {
        Ok(status) => {
            let line = match &status {
                CellStatus::Finished(line) => format!("finished {line}"),
                CellStatus::AlreadyFinished => "already finished".to_string(),
                CellStatus::Busy => format!(
                    "busy: another process has been running it for over {} s",
                    scl_experiments::runner::LOCK_WAIT.as_secs()
                ),
                CellStatus::Interrupted(what) => what.clone(),
            };
            eprintln!("cell {index} {id}: {line}");
            match status {
                CellStatus::Interrupted(_) => ExitCode::from(scl_train::interrupt::EXIT_CODE),
                // Not done here: the other process finishes it, or a rerun does.
                CellStatus::Busy => ExitCode::FAILURE,
                _ => ExitCode::SUCCESS,
            }
        }
        Err(RunError::Config(e)) => config_error(&e),
        Err(RunError::Data(e)) => data_error(&e, None),
        Err(e) => {
            eprintln!("error: cell {index} {id} failed: {e}");
            ExitCode::FAILURE
        }
    }
}
