//! `cargo xtask slurm`: an sbatch job-array script whose task `i` runs cell `i` of an
//! experiment (`cargo xtask sweep --cell $SLURM_ARRAY_TASK_ID`) into a shared results folder.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use scl_experiments::experiment::Experiment;
use scl_experiments::layout::{experiment_root, slurm_dir};
use scl_experiments::runner::check_results_dir;
use scl_train::ConfigError;
use scl_train::backend::BackendKind;

use crate::sweep::config_error;

/// Arguments of `cargo xtask slurm`.
#[derive(clap::Args, Debug)]
pub struct SlurmArgs {
    /// Experiment file.
    #[arg(long)]
    experiment: PathBuf,
    /// Profile of the experiment file (e.g. `smoke`).
    #[arg(long)]
    profile: Option<String>,
    /// Backend the tasks run on: flex, ndarray, wgpu or cuda (compiled into `--binary`).
    #[arg(long, default_value = "cuda")]
    backend: String,
    /// Slurm partition (`#SBATCH --partition`); none: the cluster's default.
    #[arg(long)]
    partition: Option<String>,
    /// GPUs per task (`#SBATCH --gpus-per-task`); 0 for CPU-only tasks.
    #[arg(long, default_value_t = 1)]
    gpus_per_task: usize,
    /// CPU cores per task.
    #[arg(long, default_value_t = 4)]
    cpus_per_task: usize,
    /// Tasks running at once (`--array=0-N%M`); none: no limit.
    #[arg(long)]
    max_concurrent: Option<usize>,
    /// Wall-clock limit per task (`#SBATCH --time`).
    #[arg(long, default_value = "24:00:00")]
    time: String,
    /// Shared results root the tasks write into.
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// The prebuilt xtask binary the tasks run (build it once on the login node).
    #[arg(long, default_value = "target/release/xtask")]
    binary: PathBuf,
    /// Directory the tasks start in (default: the current directory).
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Where to write the script (default: `<out>/<experiment>/slurm.sbatch`).
    #[arg(long)]
    script: Option<PathBuf>,
}

/// The script's settings, resolved.
pub struct SlurmPlan<'a> {
    /// The expanded experiment.
    pub experiment: &'a Experiment,
    /// The experiment file as the tasks see it (relative to `workdir` or absolute).
    pub experiment_file: &'a Path,
    /// The profile, if any.
    pub profile: Option<&'a str>,
    /// Backend name.
    pub backend: BackendKind,
    /// Partition.
    pub partition: Option<&'a str>,
    /// GPUs per task.
    pub gpus_per_task: usize,
    /// CPU cores per task.
    pub cpus_per_task: usize,
    /// Array concurrency limit.
    pub max_concurrent: Option<usize>,
    /// Time limit per task.
    pub time: &'a str,
    /// Results root.
    pub out: &'a Path,
    /// The xtask binary.
    pub binary: &'a Path,
    /// Working directory of the tasks.
    pub workdir: &'a Path,
    /// Where the script is written.
    pub script: &'a Path,
}

/// The sbatch script text.
pub fn render(p: &SlurmPlan<'_>) -> String {
    let n = p.experiment.len();
    let folder = p.experiment.folder_name();
    let root = p.out.join(&folder);
    let profile = p
        .profile
        .map(|x| format!(" --profile {x}"))
        .unwrap_or_default();
    let sweep = format!(
        "{} sweep --experiment {}{profile} --backend {} --out {}",
        p.binary.display(),
        p.experiment_file.display(),
        p.backend,
        p.out.display()
    );
    let mut s = String::new();
    let _ = writeln!(s, "#!/bin/bash");
    let _ = writeln!(
        s,
        "# Slurm job array for experiment {folder}: {n} cells, task i runs cell i."
    );
    let _ = writeln!(
        s,
        "# Written by `cargo xtask slurm`. Before submitting, build the binary once:"
    );
    let _ = writeln!(
        s,
        "#   cargo build --release -p xtask{}",
        match p.backend {
            b if b.is_cpu() => String::new(),
            b => format!(" --features {b}"),
        }
    );
    let _ = writeln!(s, "# then: sbatch {}", p.script.display());
    let _ = writeln!(
        s,
        "# A finished cell is skipped and an interrupted one resumes from its last checkpoint,"
    );
    let _ = writeln!(
        s,
        "# so resubmitting this script completes whatever is missing. Merge the report at any time:"
    );
    let _ = writeln!(
        s,
        "#   {} report --experiment {}{profile} --out {}",
        p.binary.display(),
        p.experiment_file.display(),
        p.out.display()
    );
    let _ = writeln!(s, "#SBATCH --job-name=scl-{folder}");
    let _ = writeln!(
        s,
        "#SBATCH --array=0-{}{}",
        n.saturating_sub(1),
        p.max_concurrent
            .map(|m| format!("%{m}"))
            .unwrap_or_default()
    );
    if let Some(part) = p.partition {
        let _ = writeln!(s, "#SBATCH --partition={part}");
    }
    if p.gpus_per_task > 0 {
        let _ = writeln!(s, "#SBATCH --gpus-per-task={}", p.gpus_per_task);
    }
    let _ = writeln!(s, "#SBATCH --ntasks=1");
    let _ = writeln!(s, "#SBATCH --cpus-per-task={}", p.cpus_per_task);
    let _ = writeln!(s, "#SBATCH --time={}", p.time);
    let _ = writeln!(s, "#SBATCH --chdir={}", p.workdir.display());
    let _ = writeln!(
        s,
        "#SBATCH --output={}/%A_%a.out",
        slurm_dir(&root).display()
    );
    let _ = writeln!(s, "set -euo pipefail");
    let _ = writeln!(s, "cd {}", p.workdir.display());
    let _ = writeln!(
        s,
        "# Slurm exposes the task's GPU as device 0 (CUDA_VISIBLE_DEVICES)."
    );
    let _ = writeln!(s, "exec {sweep} --cell \"$SLURM_ARRAY_TASK_ID\"");
    s
}

/// Writes the script.
pub fn run(args: SlurmArgs) -> anyhow::Result<ExitCode> {
    let backend: BackendKind = match args.backend.parse() {
        Ok(b) => b,
        Err(e) => return Ok(config_error(&e)),
    };
    if args.max_concurrent == Some(0) {
        return Ok(config_error(&ConfigError::new(
            "--max-concurrent 0 is not allowed: it must be at least 1",
        )));
    }
    let experiment = match Experiment::load(&args.experiment, args.profile.as_deref()) {
        Ok(e) => e,
        Err(e) => return Ok(config_error(&e)),
    };
    let root = experiment_root(&experiment, &args.out);
    if let Err(e) = check_results_dir(&experiment, &root) {
        return Ok(config_error(&e));
    }
    let workdir = match &args.workdir {
        Some(w) => w.clone(),
        None => std::env::current_dir()?,
    };
    let script = args
        .script
        .clone()
        .unwrap_or_else(|| root.join("slurm.sbatch"));
    let text = render(&SlurmPlan {
        experiment: &experiment,
        experiment_file: &args.experiment,
        profile: args.profile.as_deref(),
        backend,
        partition: args.partition.as_deref(),
        gpus_per_task: args.gpus_per_task,
        cpus_per_task: args.cpus_per_task,
        max_concurrent: args.max_concurrent,
        time: &args.time,
        out: &args.out,
        binary: &args.binary,
        workdir: &workdir,
        script: &script,
    });
    // sbatch does not create the folder of --output.
    std::fs::create_dir_all(slurm_dir(&root))?;
    if let Some(parent) = script.parent() {
        std::fs::create_dir_all(parent)?;
    }
    scl_fs::write(&script, &text)?;
    println!(
        "{}: {} array tasks; submit with `sbatch {}`",
        script.display(),
        experiment.len(),
        script.display()
    );
    Ok(ExitCode::SUCCESS)
}
