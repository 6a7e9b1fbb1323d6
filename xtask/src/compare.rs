//! `cargo xtask compare-backends`: the same cells on several backends, one cell at a time
//! each (so throughput is not shared), then a table of the loss at every logged point, the
//! final geometry and the throughput, with the differences between backends.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use scl_train::ConfigError;
use scl_train::backend::BackendKind;
use scl_train::experiment::Experiment;
use scl_train::sweep::{
    Launcher, SweepOptions, experiment_root, read_deep_summaries, read_metrics_csv, read_summaries,
    run_sweep, stderr_is_terminal,
};

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
    /// Backends to compare, comma-separated (e.g. `ndarray,wgpu`); the first is the baseline.
    #[arg(long, value_delimiter = ',', required = true)]
    backends: Vec<String>,
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

/// What one backend measured for one cell.
struct Measured {
    /// (step or epoch, loss) at every logged point.
    losses: Vec<(usize, f64)>,
    of_distance: f64,
    nc1: f64,
    mean_cosine: f64,
    balanced_accuracy: Option<f64>,
    seconds: f64,
    steps: usize,
    examples_per_step: usize,
}

fn measure(experiment: &Experiment, root: &Path) -> BTreeMap<String, Measured> {
    let mut out = BTreeMap::new();
    for s in read_summaries(experiment, root) {
        let g = s.last.geometry.overall;
        let n: usize = s.class_sizes.iter().sum();
        out.insert(
            s.cell_id.clone(),
            Measured {
                losses: read_metrics_csv(root, &s.cell_id)
                    .iter()
                    .map(|r| (r.step, r.loss))
                    .collect(),
                of_distance: g.of_distance,
                nc1: g.nc1,
                mean_cosine: g.mean_cosine,
                balanced_accuracy: None,
                seconds: s.seconds,
                steps: s.config.steps,
                examples_per_step: s.config.batch_size.unwrap_or(n),
            },
        );
    }
    for s in read_deep_summaries(experiment, root) {
        let Some(last) = s.outcome.metrics.last() else {
            continue;
        };
        let g = last.geometry.overall;
        out.insert(
            s.cell_id.clone(),
            Measured {
                losses: s
                    .outcome
                    .metrics
                    .iter()
                    .map(|m| (m.epoch, m.train_loss))
                    .collect(),
                of_distance: g.of_distance,
                nc1: g.nc1,
                mean_cosine: g.mean_cosine,
                balanced_accuracy: Some(last.balanced_accuracy),
                seconds: s.seconds,
                steps: last.step,
                examples_per_step: s.config.batch_size,
            },
        );
    }
    out
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
        seen.push(b.clone());
    }
    if args.backends.len() < 2 {
        return Ok(config_error(&ConfigError::new(
            "--backends needs at least two backends to compare, e.g. --backends ndarray,wgpu",
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
    for name in &args.backends {
        let out = base.join(name);
        match prepare(&args.experiment, args.profile.as_deref(), name, &[0], &out) {
            Ok((experiment, backend)) => plans.push((experiment, backend, out)),
            Err(code) => return Ok(code),
        }
    }
    if let Err(code) = check_datasets(&plans[0].0, args.data_dir.as_deref()) {
        return Ok(code);
    }
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
            *backend,
            out,
            args.data_dir.as_deref(),
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
    let measured: Vec<(BackendKind, BTreeMap<String, Measured>)> = plans
        .iter()
        .map(|(e, b, out)| (*b, measure(e, &experiment_root(e, out))))
        .collect();
    let text = render(&plans[0].0, &measured);
    let path = base.join("compare-backends.md");
    std::fs::create_dir_all(&base)?;
    let tmp = base.join(format!(".compare-backends.md.tmp-{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)?;
    println!("{}", path.display());
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn render(
    experiment: &Experiment,
    measured: &[(BackendKind, BTreeMap<String, Measured>)],
) -> String {
    let names: Vec<&str> = measured.iter().map(|(b, _)| b.name()).collect();
    let baseline = names[0];
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Backend comparison: {}\n\nBackends: {} (baseline {baseline}); git revision {}. Each \
         backend ran the same cells (same configurations and seeds, so the same initial \
         features and batches), one cell at a time. *max |diff|* is the largest absolute \
         difference from the baseline over the other backends.\n",
        experiment.folder_name(),
        names.join(", "),
        scl_train::sweep::git_revision()
    );
    let header = |extra: &str| {
        let cols: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        format!(
            "| {extra} | {} | max \\|diff\\| |\n|---|{}---|",
            cols.join(" | "),
            "---|".repeat(names.len())
        )
    };
    let ids = experiment.ids();
    let _ = writeln!(s, "## Loss at every logged point\n");
    for id in &ids {
        let _ = writeln!(s, "### `{id}`\n\n{}", header("step / epoch"));
        let Some(base) = measured[0].1.get(*id) else {
            let _ = writeln!(s, "\n(not finished on {baseline})\n");
            continue;
        };
        for (i, &(x, _)) in base.losses.iter().enumerate() {
            let values: Vec<Option<f64>> = measured
                .iter()
                .map(|(_, m)| m.get(*id).and_then(|m| m.losses.get(i)).map(|p| p.1))
                .collect();
            let diff = values[1..]
                .iter()
                .flatten()
                .map(|v| (v - values[0].unwrap_or(f64::NAN)).abs())
                .fold(0.0f64, f64::max);
            let cells: Vec<String> = values
                .iter()
                .map(|v| v.map_or("-".into(), |v| format!("{v:.6}")))
                .collect();
            let _ = writeln!(s, "| {x} | {} | {diff:.2e} |", cells.join(" | "));
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "## Final geometry\n\n| cell | backend | OF dist | NC1 | mean cos | bal acc | OF diff vs {baseline} |\n|---|---|---|---|---|---|---|"
    );
    for id in &ids {
        let base_of = measured[0].1.get(*id).map(|m| m.of_distance);
        for (b, m) in measured {
            let Some(m) = m.get(*id) else {
                let _ = writeln!(s, "| `{id}` | {b} | not finished | | | | |");
                continue;
            };
            let _ = writeln!(
                s,
                "| `{id}` | {b} | {:.5} | {:.3e} | {:.5} | {} | {} |",
                m.of_distance,
                m.nc1,
                m.mean_cosine,
                m.balanced_accuracy
                    .map_or("-".into(), |a| format!("{a:.4}")),
                base_of.map_or("-".into(), |o| format!("{:+.2e}", m.of_distance - o))
            );
        }
    }
    let _ = writeln!(
        s,
        "\n## Throughput\n\nSeconds are the wall-clock time of the cell's process, evaluation \
         and geometry included; examples per step are the batch (each with all its views).\n\n\
         | cell | backend | seconds | steps | ms / step | examples / s | speed vs {baseline} |\n|---|---|---|---|---|---|---|"
    );
    for id in &ids {
        let base_t = measured[0].1.get(*id).map(|m| m.seconds);
        for (b, m) in measured {
            let Some(m) = m.get(*id) else { continue };
            let per_step = m.seconds / m.steps.max(1) as f64;
            let _ = writeln!(
                s,
                "| `{id}` | {b} | {:.2} | {} | {:.2} | {:.0} | {} |",
                m.seconds,
                m.steps,
                1e3 * per_step,
                (m.examples_per_step * m.steps) as f64 / m.seconds,
                base_t.map_or("-".into(), |t| format!("{:.3}x", t / m.seconds))
            );
        }
    }
    s
}
