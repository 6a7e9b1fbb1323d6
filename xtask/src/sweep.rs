//! `cargo xtask sweep`.

use std::path::PathBuf;
use std::process::ExitCode;

use scl_train::backend::BackendKind;
use scl_train::experiment::Experiment;
use scl_train::sweep::{SweepOptions, run_sweep, stderr_is_terminal};
use scl_train::{ConfigError, RunError};

/// Arguments of `cargo xtask sweep`.
#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    /// Experiment file.
    #[arg(long, default_value = "experiments/quick.toml")]
    experiment: PathBuf,
    /// Profile of the experiment file to apply (e.g. `smoke`).
    #[arg(long)]
    profile: Option<String>,
    /// Backend: ndarray, wgpu or cuda (the last two need their cargo feature).
    #[arg(long, default_value = "ndarray")]
    backend: String,
    /// Cells run at once (default: the number of CPU cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Results root; the experiment writes `<out>/<experiment>/`.
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// List the cells and which have finished; run nothing.
    #[arg(long)]
    dry_run: bool,
    /// Data directory of the datasets of deep cells (default: $SCL_DATA_DIR, else
    /// datasets/cache).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl Default for SweepArgs {
    fn default() -> Self {
        Self {
            experiment: "experiments/quick.toml".into(),
            profile: None,
            backend: "ndarray".into(),
            jobs: None,
            out: "runs".into(),
            dry_run: false,
            data_dir: None,
        }
    }
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

/// Runs the sweep; configuration errors exit with code 2 before anything is written.
pub fn run(args: SweepArgs) -> anyhow::Result<ExitCode> {
    let backend: BackendKind = match args.backend.parse() {
        Ok(b) => b,
        Err(e) => return Ok(config_error(&e)),
    };
    if let Err(e) = backend.check_available() {
        return Ok(config_error(&e));
    }
    if args.jobs == Some(0) {
        return Ok(config_error(&ConfigError::new(
            "--jobs 0 is not allowed: it must be at least 1",
        )));
    }
    let experiment = match Experiment::load(&args.experiment, args.profile.as_deref()) {
        Ok(e) => e,
        Err(e) => return Ok(config_error(&e)),
    };
    let root = args.out.join(experiment.folder_name());
    if args.dry_run {
        for (index, id) in experiment.ids().into_iter().enumerate() {
            let done = root.join(id).join("summary.json").exists();
            println!(
                "{index:>4}  {}  {id}",
                if done { "done   " } else { "pending" },
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    // The datasets of deep cells must be present and verified before anything runs.
    let data_dir = scl_data::DataDir::resolve(args.data_dir.as_deref());
    let mut datasets: Vec<&str> = experiment
        .deep_cells
        .iter()
        .map(|c| c.config.dataset.as_str())
        .collect();
    datasets.sort_unstable();
    datasets.dedup();
    for name in datasets {
        let checked = scl_data::Manifest::named(name)
            .and_then(|m| scl_data::store::ensure_files(&m, &data_dir, scl_data::Fetch::Never));
        if let Err(e) = checked {
            eprintln!("error: {e}\n(`cargo xtask data fetch {name}` downloads it)");
            return Ok(ExitCode::from(2));
        }
    }
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    eprintln!(
        "sweep {}: {} cells on {backend}, {jobs} at once, results in {}",
        experiment.folder_name(),
        experiment.len(),
        root.display()
    );
    let outcome = match run_sweep(
        &experiment,
        &SweepOptions {
            results_root: args.out.clone(),
            backend,
            jobs,
            progress: stderr_is_terminal(),
            data_dir: args.data_dir.clone(),
        },
    ) {
        Ok(o) => o,
        Err(RunError::Config(e)) => return Ok(config_error(&e)),
        Err(e) => return Err(e.into()),
    };
    eprintln!(
        "{} cells ran, {} were already finished, {} failed; report: {}",
        outcome.ran,
        outcome.skipped,
        outcome.failed.len(),
        outcome.report.display()
    );
    for (id, e) in &outcome.failed {
        eprintln!("  failed {id}: {e}");
    }
    Ok(if outcome.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
