//! `cargo xtask compare-backends`: the same cells on several backends, one cell at a time
//! each (so throughput is not shared), then a table of the loss at every logged point, the
//! final geometry and the throughput, with the differences between backends.

use std::path::PathBuf;
use std::process::ExitCode;

use scl_experiments::child::Launcher;
use scl_experiments::layout::experiment_root;
use scl_experiments::runner::{SweepOptions, run_sweep, stderr_is_terminal};
use scl_report::compare::{BackendRun, write_comparison};
use scl_train::ConfigError;
use scl_train::backend::BackendKind;

use crate::sweep::{check_datasets, child_args, config_error, prepare};

/// Arguments of `cargo xtask compare-backends`.
#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// Experiment file.
    #[arg(long)]
    experiment: PathBuf,
    /// Profile of the experiment file (e.g. `smoke`).
    #[arg(long)]
    profile: Option<String>,
    /// Backends to compare, comma-separated (e.g. `flex,wgpu`); the first is the baseline.
    #[arg(long, value_delimiter = ',', required = true, value_parser = crate::choice::backend_kind())]
    backends: Vec<BackendKind>,
    /// Results root; backend `b` writes `<out>/compare-<experiment>/<b>/<experiment>/`.
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// Cells at once per backend (default 1, so time per step is not shared).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Data directory of the deep cells' datasets.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Runs the comparison.
pub fn run(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let mut seen = Vec::new();
    for b in &args.backends {
        if seen.contains(b) {
            return Ok(config_error(&ConfigError::new(format!(
                "--backends names {b} twice: give each backend once"
            ))));
        }
        seen.push(*b);
    }
    if args.backends.len() < 2 {
        return Ok(config_error(&ConfigError::new(
            "--backends needs at least two backends to compare, e.g. --backends flex,wgpu",
        )));
    }
    if args.jobs == 0 {
        return Ok(config_error(&ConfigError::new(
            "--jobs 0 is not allowed: it must be at least 1",
        )));
    }
    let base = args.out.join(format!(
        "compare-{}",
        args.experiment
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    // Every backend is checked before any runs.
    let mut plans = Vec::new();
    for &backend in &args.backends {
        let out = base.join(backend.name());
        match prepare(
            &args.experiment,
            args.profile.as_deref(),
            &[],
            backend,
            &[0],
            &out,
        ) {
            Ok((experiment, backend)) => plans.push((experiment, backend, out)),
            Err(code) => return Ok(code),
        }
    }
    if let Err(code) = check_datasets(&plans[0].0, args.data_dir.as_deref(), true) {
        return Ok(code);
    }
    crate::stop_cleanly_on_signals();
    let mut failed = 0;
    for (experiment, backend, out) in &plans {
        eprintln!(
            "{backend}: {} cells, {} at once, results in {}",
            experiment.len(),
            args.jobs,
            experiment_root(experiment, out).display()
        );
        let child = child_args(
            &args.experiment,
            args.profile.as_deref(),
            &[],
            *backend,
            out,
            args.data_dir.as_deref(),
            false,
        );
        let outcome = run_sweep(
            experiment,
            &SweepOptions {
                results_root: out.clone(),
                backend: *backend,
                jobs: args.jobs,
                devices: vec![0],
                progress: stderr_is_terminal(),
                data_dir: args.data_dir.clone(),
                launcher: Some(Launcher {
                    program: std::env::current_exe()?,
                    args: child,
                }),
                save_embeddings: false,
            },
        )?;
        for (id, e) in &outcome.failed {
            eprintln!("  {backend}: failed {id}: {e}");
        }
        failed += outcome.failed.len();
        if scl_train::interrupt::requested() {
            eprintln!(
                "interrupted on {backend}: {} cells saved a checkpoint; run the same command again to continue",
                outcome.interrupted.len()
            );
            return Ok(ExitCode::from(scl_train::interrupt::EXIT_CODE));
        }
    }
    let runs: Vec<BackendRun> = plans
        .iter()
        .map(|(_, b, out)| BackendRun {
            backend: b.name().to_string(),
            results_root: out.clone(),
        })
        .collect();
    let path = base.join("compare-backends.md");
    write_comparison(&plans[0].0, &runs, &path)?;
    say!("{}", path.display());
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
