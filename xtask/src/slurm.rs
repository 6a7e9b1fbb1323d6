//! `cargo xtask slurm`: an sbatch job-array script whose task `i` runs cell `i` of an
//! experiment (`cargo xtask sweep --cell $SLURM_ARRAY_TASK_ID`) into a shared results folder.

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
    /// Backend the tasks run on: flex, wgpu or cuda (compiled into `--binary`).
    #[arg(long, default_value = "cuda", value_parser = crate::choice::backend_kind())]
    backend: BackendKind,
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
    /// Data directory of the deep cells' datasets, passed to every task (default: the tasks'
    /// $SCL_DATA_DIR, else `datasets/cache` under `--workdir`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Seconds before the time limit at which Slurm warns a task (`--signal=B:USR1@S`): the
    /// cell then saves a checkpoint and the task requeues itself. Slurm may send the warning
    /// up to a minute earlier than asked.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=65535))]
    signal_lead: u32,
    /// Replace a base key of the cells (repeatable), passed to every task and to the report
    /// command the script names.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
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
    /// Data directory passed to the tasks, if any.
    pub data_dir: Option<&'a Path>,
    /// Seconds between Slurm's warning and the time limit.
    pub signal_lead: u32,
    /// `--set key=value` arguments passed to the tasks.
    pub sets: &'a [String],
}

/// `text` as one shell word: unchanged when it holds only characters the shell leaves alone,
/// else in single quotes.
fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// A path as one shell word.
fn shell_path(path: &Path) -> String {
    shell_word(&path.display().to_string())
}

/// The sbatch script text.
pub fn render(p: &SlurmPlan<'_>) -> String {
    let n = p.experiment.len();
    let folder = p.experiment.folder_name();
    let root = p.out.join(&folder);
    let mut selection = p
        .profile
        .map(|x| format!(" --profile {}", shell_word(x)))
        .unwrap_or_default();
    for set in p.sets {
        selection.push_str(&format!(" --set {}", shell_word(set)));
    }
    let data_dir = p
        .data_dir
        .map(|d| format!(" --data-dir {}", shell_path(d)))
        .unwrap_or_default();
    let binary = shell_path(p.binary);
    let experiment_file = shell_path(p.experiment_file);
    let out = shell_path(p.out);
    let sweep = format!(
        "{binary} sweep --experiment {experiment_file}{selection} --backend {} --out {out}{data_dir}",
        p.backend,
    );
    let build = match p.backend {
        b if b.is_cpu() => String::new(),
        b => format!(" --features {b}"),
    };
    let array_limit = p
        .max_concurrent
        .map(|m| format!("%{m}"))
        .unwrap_or_default();
    let mut s = String::new();
    let mut line = |text: String| {
        s.push_str(&text);
        s.push('\n');
    };
    line("#!/bin/bash".into());
    line(format!(
        "# Slurm job array for experiment {folder}: {n} cells, task i runs cell i."
    ));
    line("# Written by `cargo xtask slurm`. Before submitting, build the binary once:".into());
    line(format!("#   cargo build --release -p xtask{build}"));
    line(format!("# then: sbatch {}", shell_path(p.script)));
    line(
        "# A finished cell is skipped and an interrupted one resumes from its last checkpoint,"
            .into(),
    );
    line(
        "# so resubmitting this script completes whatever is missing. Merge the report at any time:"
            .into(),
    );
    line(format!(
        "#   {binary} report --experiment {experiment_file}{selection} --out {out}"
    ));
    line(format!(
        "# {} s before the time limit Slurm sends USR1 (--signal): the cell saves a checkpoint and",
        p.signal_lead
    ));
    line(
        "# stops, and the task requeues itself to resume from it. A task that Slurm requeues or"
            .into(),
    );
    line(
        "# preempts gets SIGTERM: the cell saves a checkpoint and resumes when the task runs again"
            .into(),
    );
    line(
        "# (--requeue). Every run of task i appends to .slurm/task-i.out in the results folder."
            .into(),
    );
    line(format!("#SBATCH --job-name=scl-{folder}"));
    line(format!(
        "#SBATCH --array=0-{}{array_limit}",
        n.saturating_sub(1)
    ));
    if let Some(part) = p.partition {
        line(format!("#SBATCH --partition={part}"));
    }
    if p.gpus_per_task > 0 {
        line(format!("#SBATCH --gpus-per-task={}", p.gpus_per_task));
    }
    line("#SBATCH --ntasks=1".into());
    line(format!("#SBATCH --cpus-per-task={}", p.cpus_per_task));
    line(format!("#SBATCH --time={}", p.time));
    line(format!("#SBATCH --chdir={}", p.workdir.display()));
    line(format!(
        "#SBATCH --output={}/task-%a.out",
        slurm_dir(&root).display()
    ));
    line("#SBATCH --open-mode=append".into());
    line(format!("#SBATCH --signal=B:USR1@{}", p.signal_lead));
    line("#SBATCH --requeue".into());
    line("set -uo pipefail".into());
    line(format!("cd {}", shell_path(p.workdir)));
    line(
        "echo \"== task $SLURM_ARRAY_TASK_ID of job $SLURM_ARRAY_JOB_ID, run \
         $((${SLURM_RESTART_COUNT:-0} + 1)), on $(hostname) at $(date -u +%FT%TZ)\""
            .into(),
    );
    line("# Slurm exposes the task's GPU as device 0 (CUDA_VISIBLE_DEVICES).".into());
    line(format!("{sweep} --cell \"$SLURM_ARRAY_TASK_ID\" &"));
    line("cell=$!".into());
    line(
        "# USR1 (the time limit is near): the cell checkpoints and stops, then the task requeues."
            .into(),
    );
    line(
        "# SIGTERM (requeue, preemption, scancel) reaches the cell from Slurm itself: only wait."
            .into(),
    );
    line("requeue=0 status=1".into());
    line("trap 'trapped=1 requeue=1; kill -TERM \"$cell\" 2>/dev/null' USR1".into());
    line("trap 'trapped=1' TERM".into());
    line("# A trapped signal ends `wait` early; wait again for the cell's own exit status.".into());
    line("trapped=1".into());
    line("while [ \"$trapped\" = 1 ]; do".into());
    line("  trapped=0".into());
    line("  wait \"$cell\"".into());
    line("  code=$?".into());
    line("  [ \"$code\" = 127 ] || status=$code".into());
    line("done".into());
    line("if [ \"$requeue\" = 1 ]; then".into());
    line(
        "  echo \"== the cell stopped (exit $status); requeueing the task to resume from its \
         checkpoint\""
            .into(),
    );
    line("  scontrol requeue \"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\"".into());
    line("fi".into());
    line("exit \"$status\"".into());
    s
}

/// Whether `text` is a time limit Slurm accepts (`--time`): `M`, `M:S`, `H:M:S`, `D-H`,
/// `D-H:M`, `D-H:M:S` with decimal numbers, or `UNLIMITED` / `INFINITE`; and not zero.
pub fn is_slurm_time(text: &str) -> bool {
    if ["unlimited", "infinite"].contains(&text.to_ascii_lowercase().as_str()) {
        return true;
    }
    let number = |t: &str| !t.is_empty() && t.len() <= 9 && t.bytes().all(|b| b.is_ascii_digit());
    let (days, rest) = match text.split_once('-') {
        Some((d, r)) if number(d) => (Some(d), r),
        Some(_) => return false,
        None => (None, text),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    (1..=3).contains(&parts.len())
        && parts.iter().all(|p| number(p))
        && days
            .into_iter()
            .chain(parts.iter().copied())
            .any(|p| p.bytes().any(|b| b != b'0'))
}

/// One sentence for the first value that cannot be written into the script as given: a
/// control character anywhere (a newline would start a line of its own, an `#SBATCH` option
/// or a command), a partition that is not a Slurm name, a time Slurm does not read, no CPU,
/// or whitespace in a path that an `#SBATCH` line carries (Slurm splits those lines into
/// words).
fn check_values(args: &SlurmArgs, workdir: &Path) -> Result<(), ConfigError> {
    let path = |p: &Path| p.display().to_string();
    let mut texts: Vec<(&str, String)> = vec![
        ("--experiment", path(&args.experiment)),
        ("--time", args.time.clone()),
        ("--out", path(&args.out)),
        ("--binary", path(&args.binary)),
        ("--workdir", path(workdir)),
    ];
    let optional = [
        ("--profile", args.profile.clone()),
        ("--partition", args.partition.clone()),
        ("--script", args.script.as_deref().map(path)),
        ("--data-dir", args.data_dir.as_deref().map(path)),
    ];
    texts.extend(optional.into_iter().filter_map(|(f, t)| Some((f, t?))));
    texts.extend(args.set.iter().map(|s| ("--set", s.clone())));
    for (flag, text) in &texts {
        if text.chars().any(char::is_control) {
            return Err(ConfigError::new(format!(
                "{flag} {text:?} is not allowed: it holds a control character such as a \
                 newline, which would start a line of its own in the script"
            )));
        }
    }
    if let Some(partition) = &args.partition
        && (partition.is_empty()
            || !partition
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.,".contains(c)))
    {
        return Err(ConfigError::new(format!(
            "--partition {partition:?} is not allowed: a partition is letters, digits, '_', '-' \
             and '.' (several separated by ',')"
        )));
    }
    if !is_slurm_time(&args.time) {
        return Err(ConfigError::new(format!(
            "--time {:?} is not allowed: Slurm takes minutes, M:S, H:M:S, D-H, D-H:M, D-H:M:S \
             (not zero) or UNLIMITED",
            args.time
        )));
    }
    if args.cpus_per_task == 0 {
        return Err(ConfigError::new(
            "--cpus-per-task 0 is not allowed: it must be at least 1",
        ));
    }
    for (flag, text) in [("--workdir", path(workdir)), ("--out", path(&args.out))] {
        if text.chars().any(char::is_whitespace) {
            return Err(ConfigError::new(format!(
                "{flag} {text:?} is not allowed: the script's #SBATCH lines carry it, and Slurm \
                 splits those lines at spaces; use a path without whitespace"
            )));
        }
    }
    Ok(())
}

/// Writes the script.
pub fn run(args: SlurmArgs) -> anyhow::Result<ExitCode> {
    let backend = args.backend;
    if args.max_concurrent == Some(0) {
        return Ok(config_error(&ConfigError::new(
            "--max-concurrent 0 is not allowed: it must be at least 1",
        )));
    }
    let workdir = match &args.workdir {
        Some(w) => w.clone(),
        None => std::env::current_dir()?,
    };
    if let Err(e) = check_values(&args, &workdir) {
        return Ok(config_error(&e));
    }
    let experiment =
        match crate::sweep::load_experiment(&args.experiment, args.profile.as_deref(), &args.set) {
            Ok(e) => e,
            Err(e) => return Ok(config_error(&e)),
        };
    if experiment
        .folder_name()
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
    {
        return Ok(config_error(&ConfigError::new(format!(
            "the experiment name {:?} is not allowed in a Slurm script: it holds whitespace or \
             a control character, and the script's #SBATCH lines carry it",
            experiment.folder_name()
        ))));
    }
    let root = experiment_root(&experiment, &args.out);
    if let Err(e) = check_results_dir(&experiment, &root) {
        return Ok(config_error(&e));
    }
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
        data_dir: args.data_dir.as_deref(),
        signal_lead: args.signal_lead,
        sets: &args.set,
    });
    // sbatch does not create the folder of --output.
    std::fs::create_dir_all(slurm_dir(&root))?;
    if let Some(parent) = script.parent() {
        std::fs::create_dir_all(parent)?;
    }
    scl_fs::write(&script, &text)?;
    say!(
        "{}: {} array tasks; submit with `sbatch {}`",
        script.display(),
        experiment.len(),
        script.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::is_slurm_time;

    #[test]
    fn slurm_time_limits_are_the_forms_sbatch_reads() {
        for good in [
            "30",
            "30:00",
            "24:00:00",
            "2-0",
            "2-12",
            "1-12:30",
            "1-00:00:01",
            "UNLIMITED",
            "infinite",
        ] {
            assert!(is_slurm_time(good), "{good}");
        }
        for bad in [
            "",
            "abc",
            "0",
            "00:00:00",
            "1:2:3:4",
            "1-",
            "-1",
            "1-2-3",
            "1:",
            ":30",
            "1.5",
            "24:00:00\n#SBATCH --wrap=x",
            "1 h",
            "1234567890",
        ] {
            assert!(!is_slurm_time(bad), "{bad:?}");
        }
    }
}
