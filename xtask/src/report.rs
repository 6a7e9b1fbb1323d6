//! `cargo xtask report`: `report.md` and its PNG figures from whatever cells of an experiment
//! have finished (run by a sweep, by `--cell` processes or Slurm array tasks).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::sweep::config_error;

/// Arguments of `cargo xtask report`.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Experiment file.
    #[arg(long, default_value = "experiments/quick.toml")]
    experiment: PathBuf,
    /// Profile of the experiment file (e.g. `smoke`).
    #[arg(long)]
    profile: Option<String>,
    /// Results root; the report goes to `<out>/<experiment>/report.md`.
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// The `--set key=value` arguments the sweep ran with (they change the cells' ids).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// Writes the report.
pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let experiment =
        match crate::sweep::load_experiment(&args.experiment, args.profile.as_deref(), &args.set) {
            Ok(e) => e,
            Err(e) => return Ok(config_error(&e)),
        };
    let root = scl_experiments::layout::experiment_root(&experiment, &args.out);
    if !root.is_dir() {
        return Ok(config_error(&scl_train::ConfigError::new(format!(
            "{} does not exist: run `cargo xtask sweep --experiment {}{}` first, or pass the --out it used",
            root.display(),
            args.experiment.display(),
            args.profile
                .as_ref()
                .map(|p| format!(" --profile {p}"))
                .unwrap_or_default()
        ))));
    }
    let report = scl_report::write_report(&experiment, &args.out)?;
    crate::sweep::note_removed(&report.removed_temporaries);
    crate::sweep::warn_damaged(&report.damaged);
    say!(
        "{}: {} of {} cells finished, {} failed, {} figures",
        report.markdown.display(),
        report.finished,
        experiment.len(),
        report.failed.len(),
        report.figures.len()
    );
    Ok(ExitCode::SUCCESS)
}
