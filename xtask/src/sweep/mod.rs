//! `cargo xtask sweep`: every unfinished cell of an experiment, each in a child process (up to
//! `--jobs` at once, one per device with `--devices`), then the report; or one cell alone
//! with `--cell I` (what a Slurm array task runs).

mod cell;

pub use cell::child_args;
use cell::run_one;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::ffi::OsString;
use std::sync::Arc;

use scl_experiments::child::{CellRequest, CellStatus, ChildProtocol, Launcher};
use scl_experiments::experiment::Experiment;
use scl_experiments::layout::{experiment_root, failure_file, partial_dir};
use scl_experiments::records::{Records, records_of};
use scl_experiments::runner::{
    SweepOptions, check_results_dir, run_cell, run_sweep, stderr_is_terminal,
};
use scl_train::backend::{BackendKind, BackendRuntime};
use scl_train::{ConfigError, RunError};

/// Arguments of `cargo xtask sweep`.
#[derive(clap::Args, Debug, Clone)]
pub struct SweepArgs {
    /// Experiment file.
    #[arg(long, default_value = "experiments/quick.toml")]
    pub experiment: PathBuf,
    /// Profile of the experiment file to apply (e.g. `smoke`).
    #[arg(long)]
    pub profile: Option<String>,
    /// Backend: flex (the CPU), wgpu or cuda (the last one needs its cargo feature, and wgpu
    /// is in the default build).
    #[arg(long, default_value = "flex", value_parser = crate::choice::backend_kind())]
    pub backend: BackendKind,
    /// Device indices of the backend, comma-separated (e.g. `0,1`); one cell runs on each at
    /// a time unless `--jobs` says otherwise. Default: device 0.
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<usize>,
    /// Cells run at once (default: the number of devices given, else the CPU cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Results root; the experiment writes `<out>/<experiment>/`.
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
    /// List the cells and which have finished; run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run only cell I (its index in `--dry-run`), in this process; no report is written
    /// (`cargo xtask report` merges the finished cells).
    #[arg(long)]
    pub cell: Option<usize>,
    /// Device of `--cell` (default 0).
    #[arg(long)]
    pub device: Option<usize>,
    /// Data directory of the datasets of deep cells (default: $SCL_DATA_DIR, else
    /// datasets/cache).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Replace a base key of the experiment's cells, as if written in the file (repeatable):
    /// `--set lr=0.1 --set epochs=5`. A grid axis cannot be set this way.
    #[arg(long = "set", value_name = "KEY=VALUE", long_help = crate::choice::set_help(
        "Replace a base key of the experiment's cells, as if written in the file (repeatable): \
         `--set lr=0.1 --set epochs=5`. A grid axis cannot be set this way."))]
    pub set: Vec<String>,
    /// Deep cells also write the embeddings and labels of every evaluated epoch as NumPy
    /// files, `<cell>/embeddings/epoch-NNNN-{train,test}[-labels].npy`.
    #[arg(long)]
    pub save_embeddings: bool,
    /// Internal: this process is a cell started by a sweep (progress lines on stdout; exits
    /// when its stdin closes).
    #[arg(long, hide = true)]
    pub supervised: bool,
}

impl Default for SweepArgs {
    fn default() -> Self {
        Self {
            experiment: "experiments/quick.toml".into(),
            profile: None,
            backend: BackendKind::Flex,
            devices: Vec::new(),
            jobs: None,
            out: "runs".into(),
            dry_run: false,
            cell: None,
            device: None,
            data_dir: None,
            set: Vec::new(),
            save_embeddings: false,
            supervised: false,
        }
    }
}

/// Prints `error: <sentence>` and returns exit code 2.
pub fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

/// The exit code of a command that stopped on its data: a dataset missing, damaged or
/// unreadable.
pub const DATA_EXIT: u8 = 3;

/// Prints `error: <sentence>` with the command that fetches the dataset `name` (when one is
/// known), and returns exit code 3.
pub fn data_error(e: &dyn std::fmt::Display, name: Option<&str>) -> ExitCode {
    match name {
        Some(name) => eprintln!("error: {e}\n(`cargo xtask data fetch {name}` downloads it)"),
        None => eprintln!("error: {e}"),
    }
    ExitCode::from(DATA_EXIT)
}

/// The checks shared by `sweep` and `compare-backends`: the backend and its devices exist, the
/// experiment parses, the results folder holds no other configuration under a cell id.
/// Nothing is written.
///
/// # Errors
/// The exit code 2 after printing one sentence.
pub fn prepare(
    experiment: &Path,
    profile: Option<&str>,
    sets: &[String],
    backend: BackendKind,
    devices: &[usize],
    out: &Path,
) -> Result<(Experiment, BackendKind), ExitCode> {
    backend.check_available().map_err(|e| config_error(&e))?;
    for (i, &d) in devices.iter().enumerate() {
        backend.check_device(d).map_err(|e| config_error(&e))?;
        if devices[..i].contains(&d) {
            return Err(config_error(&ConfigError::new(format!(
                "--devices lists device {d} twice: give each device once"
            ))));
        }
    }
    check_out_dir(out).map_err(|e| config_error(&e))?;
    let experiment = load_experiment(experiment, profile, sets).map_err(|e| config_error(&e))?;
    scl_experiments::feasibility::check_memory(&experiment).map_err(|e| infeasible(&e))?;
    check_results_dir(&experiment, &experiment_root(&experiment, out))
        .map_err(|e| config_error(&e))?;
    Ok((experiment, backend))
}

/// Loads an experiment file with a profile and `--set` overrides; the library's sentences
/// about an override name the flag.
///
/// # Errors
/// The sentence of the first malformed override or of the file.
pub fn load_experiment(
    path: &Path,
    profile: Option<&str>,
    sets: &[String],
) -> Result<Experiment, ConfigError> {
    let sets = parse_sets(sets)?;
    Experiment::load_with(path, profile, &sets).map_err(|e| {
        ConfigError::new(e.message().replacen("the override ", "--set ", 1).replacen(
            "an override replaces",
            "--set replaces",
            1,
        ))
    })
}

/// The `--set key=value` arguments, parsed.
///
/// # Errors
/// The sentence of the first malformed one.
pub fn parse_sets(sets: &[String]) -> Result<Vec<(String, toml::Value)>, ConfigError> {
    sets.iter().map(|s| parse_set(s)).collect()
}

/// One `--set key=value` argument as a key and a TOML value: the value is read as TOML
/// (`lr=0.1`, `relu=true`, `mlp_widths=[64, 32]`, `imbalance={ kind = "step", ratio = 10 }`)
/// and, where it is not valid TOML, taken as a string (`dataset=mnist`).
///
/// # Errors
/// A sentence when `arg` has no `=` or an empty key.
pub fn parse_set(arg: &str) -> Result<(String, toml::Value), ConfigError> {
    let Some((key, text)) = arg.split_once('=') else {
        return Err(ConfigError::new(format!(
            "--set {arg} is not allowed: write key=value, e.g. --set lr=0.1"
        )));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(ConfigError::new(format!(
            "--set {arg} is not allowed: the key before = is empty"
        )));
    }
    let text = text.trim();
    let value = format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()));
    Ok((key.to_string(), value))
}

/// `--out` must be a folder, or a path whose nearest existing parent is a writable folder.
fn check_out_dir(out: &Path) -> Result<(), ConfigError> {
    // A relative path ends in "", the current folder, which is not checked.
    let Some(existing) = out
        .ancestors()
        .find(|p| !p.as_os_str().is_empty() && p.exists())
    else {
        return Ok(());
    };
    let shown = out.display();
    match std::fs::metadata(existing) {
        Ok(m) if !m.is_dir() => Err(ConfigError::new(format!(
            "--out {shown} is not allowed: {} is a file, not a folder",
            existing.display()
        ))),
        Ok(_) => match probe_writable(existing) {
            Ok(()) => Ok(()),
            Err(e) => Err(ConfigError::new(format!(
                "--out {shown} is not allowed: {} cannot be written ({e})",
                existing.display()
            ))),
        },
        Err(e) => Err(ConfigError::new(format!(
            "--out {shown} is not allowed: {} cannot be read ({e})",
            existing.display()
        ))),
    }
}

/// Whether files can be created in `dir`, asked of the file system (mode bits say nothing
/// about root, a read-only mount or access lists): a probe file is created and removed.
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".scl-write-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// The deep cells of `experiment` must be able to run on the data before anything runs
/// ([`scl_experiments::feasibility::check_experiment`]; a dry run needs no data).
///
/// # Errors
/// The exit code 3 ([`DATA_EXIT`]) after printing what is missing and how to get it; 2 after
/// naming a cell that asks more of the data than it has.
pub fn check_datasets(
    experiment: &Experiment,
    data_dir: Option<&Path>,
    check_sizes: bool,
) -> Result<(), ExitCode> {
    let data_dir = scl_data::DataDir::resolve(data_dir);
    scl_experiments::feasibility::check_experiment(experiment, &data_dir, check_sizes)
        .map_err(|e| infeasible(&e))
}

/// The exit code and message of an infeasible run: 3 for the data, 2 for the configuration.
pub fn infeasible(e: &scl_experiments::feasibility::Infeasible) -> ExitCode {
    use scl_experiments::feasibility::Infeasible;
    match e {
        Infeasible::Data { dataset, source } => data_error(source, Some(dataset)),
        Infeasible::Config(e) => config_error(e),
    }
}

/// Runs the sweep (or one cell); configuration errors exit with code 2 before anything is
/// written.
pub fn run(args: SweepArgs) -> anyhow::Result<ExitCode> {
    if args.jobs == Some(0) {
        return Ok(config_error(&ConfigError::new(
            "--jobs 0 is not allowed: it must be at least 1",
        )));
    }
    let mut devices = args.devices.clone();
    if let Some(d) = args.device {
        if args.cell.is_none() {
            return Ok(config_error(&ConfigError::new(
                "--device is only for --cell: give a sweep its devices with --devices",
            )));
        }
        devices = vec![d];
    }
    let (experiment, backend) = match prepare(
        &args.experiment,
        args.profile.as_deref(),
        &args.set,
        args.backend,
        &devices,
        &args.out,
    ) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    let root = experiment_root(&experiment, &args.out);
    if args.dry_run {
        for (index, cell) in experiment.iter().enumerate() {
            let id = cell.id();
            let records = records_of(&root, cell);
            let state = if records.is_complete() {
                "done   "
            } else if matches!(records, Records::Damaged(_)) {
                "damaged"
            } else if partial_dir(&root, id).exists() {
                "partial"
            } else if failure_file(&root, id).exists() {
                "failed "
            } else {
                "pending"
            };
            say!("{index:>4}  {state}  {id}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Err(code) = check_datasets(&experiment, args.data_dir.as_deref(), args.cell.is_none()) {
        return Ok(code);
    }
    let opts = SweepOptions {
        results_root: args.out.clone(),
        backend,
        jobs: 1,
        devices: devices.clone(),
        progress: stderr_is_terminal(),
        data_dir: args.data_dir.clone(),
        launcher: None,
        save_embeddings: args.save_embeddings,
    };
    crate::stop_cleanly_on_signals();
    if let Some(index) = args.cell {
        return Ok(run_one(&experiment, index, &opts, &args));
    }
    let jobs = args.jobs.unwrap_or(if devices.is_empty() {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    } else {
        devices.len()
    });
    eprintln!(
        "sweep {}: {} cells on {backend}, {jobs} at once, results in {}",
        experiment.folder_name(),
        experiment.len(),
        root.display()
    );
    let opts = SweepOptions {
        jobs,
        launcher: Some(Launcher {
            program: std::env::current_exe()?,
            args: child_args(
                &args.experiment,
                args.profile.as_deref(),
                &args.set,
                backend,
                &args.out,
                args.data_dir.as_deref(),
                args.save_embeddings,
            ),
        }),
        ..opts
    };
    let outcome = match run_sweep(&experiment, &opts) {
        Ok(o) => o,
        Err(RunError::Config(e)) => return Ok(config_error(&e)),
        Err(e) => return Err(e.into()),
    };
    // The cells are accounted for before the report is written: a report that cannot be
    // written (a full disk) must not hide which cells failed or were not recorded.
    let report = scl_report::write_report(&experiment, &args.out);
    let report_line = match &report {
        Ok(r) => {
            note_removed(&r.removed_temporaries);
            warn_damaged(&r.damaged);
            format!(
                "report: {} ({} figures)",
                r.markdown.display(),
                r.figures.len()
            )
        }
        Err(_) => "the report could not be written (below)".to_string(),
    };
    if scl_train::interrupt::requested() {
        // A deep cell stops at a checkpoint; a UFM cell has none and starts again.
        let saved = outcome
            .interrupted
            .iter()
            .filter(|(_, what)| what.contains("checkpoint saved"))
            .count();
        eprintln!(
            "interrupted: {} cells ran to the end, {} stopped ({saved} of them at a saved \
             checkpoint), the rest did not start; {report_line}. Run the same command again to \
             continue.",
            outcome.ran,
            outcome.interrupted.len(),
        );
        for (id, what) in &outcome.interrupted {
            eprintln!("  {id}: {what}");
        }
        return Ok(ExitCode::from(scl_train::interrupt::EXIT_CODE));
    }
    eprintln!(
        "{} cells ran, {} were already finished, {} failed{}; {report_line}",
        outcome.ran,
        outcome.skipped,
        outcome.failed.len(),
        if outcome.busy.is_empty() {
            String::new()
        } else {
            format!(", {} running in another process", outcome.busy.len())
        },
    );
    for (id, e) in &outcome.failed {
        eprintln!("  failed {id}: {e}");
    }
    let unrecorded: Vec<&str> = outcome
        .failed
        .iter()
        .filter(|(id, _)| !failure_file(&root, id).is_file())
        .map(|(id, _)| id.as_str())
        .collect();
    if !unrecorded.is_empty() {
        eprintln!(
            "not recorded: {} failed cells have no failure record in {} (it could not be \
             written): {}",
            unrecorded.len(),
            root.display(),
            unrecorded.join(", ")
        );
    }
    if !outcome.busy.is_empty() {
        eprintln!(
            "not finished here: {} cells are being run by another process ({}); run the same \
             command again once it has ended",
            outcome.busy.len(),
            outcome.busy.join(", ")
        );
    }
    if let Err(e) = report {
        eprintln!("error: {e}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(if outcome.failed.is_empty() && outcome.busy.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Warns about each cell left out of the report because its records are damaged.
pub fn warn_damaged(damaged: &[(String, String)]) {
    for (id, why) in damaged {
        eprintln!(
            "warning: cell {id} is left out of the report: {why}; the next sweep runs it again"
        );
    }
}

/// Says which temporaries of stopped processes were removed before the report was written.
pub fn note_removed(paths: &[PathBuf]) {
    for path in paths {
        eprintln!(
            "note: removed {}, left by a process that stopped while writing it",
            path.display()
        );
    }
}
