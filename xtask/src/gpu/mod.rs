//! The GPU check: what the self-contained GPU bundle runs on a machine without a Rust
//! toolchain (the binary `scl-gpu-check`; `cargo xtask gpu-bundle` builds it).
//!
//! For every GPU backend that finds a device: fused vs reference SupCon parity (values and
//! gradients), the loss benchmark of `bench loss` up to N = 65536, and a short ResNet-18 SCL
//! training at batch 512; then the same training on the CPU backend for a few steps. Each
//! section has a time limit and skips what its remaining time cannot hold, so the whole check
//! ends within its budget. Results go to `OUT/gpu-check.json` (rewritten after every section,
//! so a run cut short keeps what it measured) and `OUT/gpu-check.md`, with PyTorch's numbers
//! side by side as ratios when `--torch torch.json` (from `benches/reference/supcon_torch.py`)
//! is given. A backend without a device is reported in one sentence ("no CUDA device: ...",
//! "no Vulkan adapter: ...") and the check goes on with the others.
//!
//! Exit codes: 0 when everything that ran passed (backends without a device included), 1 when
//! a parity case failed or a section broke, 2 for a wrong option.

mod fused;
mod render;
mod train;

use scl_train::backend::BackendRuntime;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use scl_train::backend::{BackendKind, guarded};
use serde::Serialize;

use crate::loss_timing as bench;

/// Arguments of `scl-gpu-check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Folder for gpu-check.json and gpu-check.md (created).
    #[arg(long)]
    pub out: PathBuf,
    /// GPU backends to check.
    #[arg(long, value_delimiter = ',', default_value = "cuda,wgpu", value_parser = parse_backend)]
    pub backends: Vec<BackendKind>,
    /// Loss benchmark: batch sizes N.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1024,4096,8192,16384,32768,65536"
    )]
    pub sizes: Vec<usize>,
    /// Loss benchmark: largest N at which the reference (N x N matrices) runs.
    #[arg(long, default_value_t = 32768)]
    pub reference_max: usize,
    /// Loss benchmark: feature dimension d.
    #[arg(long, default_value_t = 128)]
    pub dim: usize,
    /// Loss benchmark: timed repetitions per cell (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Parity: the size of the large case (one view, d = 128), besides the small grid; 0 skips it.
    #[arg(long, default_value_t = 8192)]
    pub parity_large: usize,
    /// ResNet-18 training: images per batch on the GPU backends (two views each).
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    /// ResNet-18 training: steps on the GPU backends (the first `--warmup` are not timed).
    #[arg(long, default_value_t = 40)]
    pub steps: usize,
    /// ResNet-18 training: untimed first steps (kernel compilation, autotuning).
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Skip the ResNet-18 training on the GPU backends (on a software Vulkan driver such as
    /// lavapipe its first step, which autotunes the convolutions, takes many minutes).
    #[arg(long)]
    pub no_gpu_training: bool,
    /// ResNet-18 training on the CPU backend (flex): images per batch. Small: in the bundle
    /// build one step at batch 4 took 45 s on 2 cores.
    #[arg(long, default_value_t = 16)]
    pub cpu_batch: usize,
    /// ResNet-18 training on the CPU backend: steps, the first untimed; 0 skips it.
    #[arg(long, default_value_t = 2)]
    pub cpu_steps: usize,
    /// CIFAR-10 images in the binary record format (1 label byte, 3072 pixel bytes); without
    /// it the training runs on seeded synthetic 32x32 images.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// PyTorch's results (`supcon_torch.py --out`), shown side by side as ratios.
    #[arg(long)]
    pub torch: Option<PathBuf>,
    /// Time limits in seconds: parity, benchmark, training per GPU backend; CPU training.
    #[arg(long, value_delimiter = ',', default_value = "25,60,40,40")]
    pub limits: Vec<u64>,
}

/// One backend as the check found it.
#[derive(Serialize, Debug, Clone)]
pub struct BackendStatus {
    /// `cuda`, `wgpu` or `flex`.
    pub name: String,
    /// The devices found (empty when none).
    pub devices: Vec<String>,
    /// Why it was not checked, in one sentence; `None` when it was.
    pub unavailable: Option<String>,
}

/// Fused vs reference on one backend.
#[derive(Serialize, Debug, Default)]
pub struct ParityResult {
    /// Backend name.
    pub backend: String,
    /// Cases compared.
    pub cases: usize,
    /// Cases within tolerance.
    pub passed: usize,
    /// Cases left out when the time limit was reached.
    pub skipped: usize,
    /// Largest value deviation, relative to the reference value.
    pub max_value_deviation: f64,
    /// Largest gradient deviation, relative to the largest reference gradient entry.
    pub max_grad_deviation: f64,
    /// The tolerance both deviations are held to.
    pub tolerance: f64,
    /// One sentence per failed case.
    pub failures: Vec<String>,
    /// Wall-clock seconds, kernel compilation included.
    pub seconds: f64,
}

/// One cell of the loss benchmark.
#[derive(Serialize, Debug)]
pub struct LossRow {
    /// Backend name.
    pub backend: String,
    /// Batch size.
    pub n: usize,
    /// Feature dimension.
    pub dim: usize,
    /// Reference loss: median seconds of forward + backward, when it ran.
    pub reference_seconds: Option<f64>,
    /// Reference loss: device memory in MiB.
    pub reference_memory_mib: Option<f64>,
    /// Reference loss: achieved TFLOP/s.
    pub reference_tflops: Option<f64>,
    /// Fused loss: median seconds of forward + backward, when it ran.
    pub fused_seconds: Option<f64>,
    /// Fused loss: device memory in MiB.
    pub fused_memory_mib: Option<f64>,
    /// Fused loss: achieved TFLOP/s.
    pub fused_tflops: Option<f64>,
    /// Why a part did not run (time limit, reference size limit, error).
    pub note: Option<String>,
}

/// A short SCL training of ResNet-18.
#[derive(Serialize, Debug, Default)]
pub struct TrainResult {
    /// Backend name.
    pub backend: String,
    /// Images per batch (two views each).
    pub batch: usize,
    /// Steps run, the untimed ones included.
    pub steps: usize,
    /// Untimed first steps.
    pub warmup: usize,
    /// Seconds of the timed steps.
    pub timed_seconds: f64,
    /// Images per second over the timed steps (each image passes the network twice, once per
    /// view).
    pub images_per_second: f64,
    /// The loss at every step.
    pub loss: Vec<f64>,
    /// Seconds of every step.
    pub step_seconds: Vec<f64>,
    /// Why it stopped early or did not run.
    pub note: Option<String>,
}

/// Everything `gpu-check` measured; the content of `gpu-check.json`.
#[derive(Serialize, Debug, Default)]
pub struct CheckReport {
    /// When the check started (seconds since the Unix epoch).
    pub started_unix: u64,
    /// The git revision the binary was built from.
    pub revision: String,
    /// The host's CPU and core count.
    pub host: String,
    /// What the training ran on: real images (file, count) or synthetic ones.
    pub data: String,
    /// The backends asked for.
    pub backends: Vec<BackendStatus>,
    /// Parity per checked backend.
    pub parity: Vec<ParityResult>,
    /// The loss benchmark.
    pub loss: Vec<LossRow>,
    /// The ResNet-18 trainings (GPU backends, then the CPU).
    pub train: Vec<TrainResult>,
    /// Errors of sections that broke (a kernel panic, an out-of-memory).
    pub errors: Vec<String>,
    /// Total seconds.
    pub seconds: f64,
}

/// A deadline.
#[derive(Clone, Copy)]
pub(crate) struct Budget {
    end: Instant,
}

impl Budget {
    fn seconds(s: u64) -> Self {
        Self {
            end: Instant::now() + Duration::from_secs(s),
        }
    }

    /// Seconds left (0 when past).
    pub(crate) fn left(&self) -> f64 {
        self.end
            .saturating_duration_since(Instant::now())
            .as_secs_f64()
    }
}

/// A backend name of `--backends`, parsed once (the sentence of [`BackendKind`]'s parser).
fn parse_backend(name: &str) -> Result<BackendKind, String> {
    name.parse().map_err(|e| format!("{e}"))
}

/// The backends: each probed for devices.
fn probe(kinds: &[BackendKind]) -> Result<Vec<(BackendKind, BackendStatus)>, String> {
    let mut out = Vec::new();
    for &kind in kinds {
        let status = BackendStatus {
            name: kind.name().into(),
            devices: kind.device_names(),
            unavailable: kind.probe().err().map(|e| e.to_string()),
        };
        out.push((kind, status));
    }
    Ok(out)
}

/// Writes gpu-check.json and gpu-check.md (each to a temporary name, then renamed).
fn write(report: &CheckReport, args: &CheckArgs, torch: Option<&serde_json::Value>) {
    let json = serde_json::to_string_pretty(report).expect("serialisable");
    let md = render::markdown(report, args, torch);
    for (name, text) in [("gpu-check.json", json), ("gpu-check.md", md)] {
        if let Err(e) = scl_fs::write(&args.out.join(name), text) {
            eprintln!("warning: could not write {e}");
        }
    }
}

fn validate(args: &CheckArgs) -> Result<(), String> {
    if args.limits.len() != 4 {
        return Err(format!(
            "--limits {:?} is not allowed: give four seconds, parity,benchmark,training,cpu-training",
            args.limits
        ));
    }
    if args.batch < 2 || args.cpu_batch < 2 {
        return Err("--batch and --cpu-batch must be at least 2 (SupCon needs pairs)".into());
    }
    if args.cpu_steps == 1 {
        return Err(
            "--cpu-steps 1 is not allowed: give 0 (skip) or at least 2 (one untimed)".into(),
        );
    }
    if args.steps <= args.warmup {
        return Err(format!(
            "--steps {} is not allowed: it must exceed --warmup {}",
            args.steps, args.warmup
        ));
    }
    if let Some(p) = &args.data
        && !p.is_file()
    {
        return Err(format!("--data {} is not a file", p.display()));
    }
    Ok(())
}

/// Runs the check.
pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    if let Err(e) = validate(&args) {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(2));
    }
    let backends = match probe(&args.backends) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let images = match &args.data {
        Some(path) => match train::Images::read(path) {
            Ok(images) => images,
            Err(e) => {
                eprintln!("error: --data {}: {e}", path.display());
                return Ok(ExitCode::from(2));
            }
        },
        None => train::Images::synthetic(4096, 0),
    };
    let torch: Option<serde_json::Value> = match &args.torch {
        Some(p) if p.is_file() => std::fs::read_to_string(p)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok()),
        Some(p) => {
            eprintln!(
                "note: {} does not exist: no PyTorch column (did supcon_torch.py run?)",
                p.display()
            );
            None
        }
        None => None,
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;

    let mut report = CheckReport {
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        // The bundle has no git checkout: run.sh passes the revision it was built from.
        revision: std::env::var("SCL_REVISION")
            .unwrap_or_else(|_| scl_train::provenance::git_revision()),
        host: bench::host(),
        data: images.description.clone(),
        backends: backends.iter().map(|(_, s)| s.clone()).collect(),
        ..Default::default()
    };
    for (_, s) in &backends {
        match &s.unavailable {
            None => eprintln!("{}: {}", s.name, s.devices.join(", ")),
            Some(why) => eprintln!("{}: {why}", s.name),
        }
    }
    write(&report, &args, torch.as_ref());
    let [parity_s, bench_s, train_s, cpu_s] = [0, 1, 2, 3].map(|i| args.limits[i]);
    let usable: Vec<BackendKind> = backends
        .iter()
        .filter(|(_, s)| s.unavailable.is_none())
        .map(|(k, _)| *k)
        .collect();

    for &kind in &usable {
        eprintln!("== {kind}: fused vs reference parity ({parity_s} s at most)");
        match guarded(|| fused::run(kind, args.parity_large, Budget::seconds(parity_s)))
            .and_then(|r| r)
        {
            Ok(p) => {
                eprintln!(
                    "{kind}: {} of {} cases within {:.0e} (largest deviation: value {:.2e}, \
                     gradient {:.2e}); {} skipped",
                    p.passed,
                    p.cases,
                    p.tolerance,
                    p.max_value_deviation,
                    p.max_grad_deviation,
                    p.skipped
                );
                for f in &p.failures {
                    eprintln!("  FAILED {f}");
                }
                report.parity.push(p);
            }
            Err(e) => report.errors.push(format!("{kind} parity: {e}")),
        }
        write(&report, &args, torch.as_ref());
    }
    for &kind in &usable {
        eprintln!("== {kind}: loss benchmark ({bench_s} s at most)");
        loss_bench(kind, &args, Budget::seconds(bench_s), &mut report);
        write(&report, &args, torch.as_ref());
    }
    // The CPU steps are slow and need no autotuning: one untimed step there.
    let mut trainings: Vec<(BackendKind, train::Spec, u64)> = usable
        .iter()
        .filter(|_| !args.no_gpu_training)
        .map(|&k| {
            (
                k,
                train::Spec::new(args.batch, args.steps, args.warmup),
                train_s,
            )
        })
        .collect();
    if args.cpu_steps > 0 {
        let spec = train::Spec::new(args.cpu_batch, args.cpu_steps, 1);
        trainings.push((BackendKind::Flex, spec, cpu_s));
    }
    for (kind, spec, limit) in trainings {
        let (batch, steps) = (spec.batch, spec.steps);
        eprintln!(
            "== {kind}: ResNet-18 SCL training, batch {batch}, {steps} steps ({limit} s at most)"
        );
        match guarded(|| train::run(kind, &spec, &images, Budget::seconds(limit))).and_then(|r| r) {
            Ok(t) => {
                eprintln!(
                    "{kind}: {:.1} images/s over {} timed steps; loss {:.4} -> {:.4}",
                    t.images_per_second,
                    t.loss.len().saturating_sub(t.warmup),
                    t.loss.first().copied().unwrap_or(f64::NAN),
                    t.loss.last().copied().unwrap_or(f64::NAN)
                );
                report.train.push(t);
            }
            Err(e) => report.errors.push(format!("{kind} training: {e}")),
        }
        write(&report, &args, torch.as_ref());
    }
    report.seconds = started.elapsed().as_secs_f64();
    write(&report, &args, torch.as_ref());
    eprintln!(
        "wrote {} and {} ({:.0} s)",
        args.out.join("gpu-check.json").display(),
        args.out.join("gpu-check.md").display(),
        report.seconds
    );
    let failed = !report.errors.is_empty() || report.parity.iter().any(|p| !p.failures.is_empty());
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The loss benchmark on one backend: sizes in order, each skipped when the time its
/// predecessor took, scaled by `(N / N_prev)^2`, exceeds what is left.
fn loss_bench(kind: BackendKind, args: &CheckArgs, budget: Budget, report: &mut CheckReport) {
    let d = args.dim;
    let runs = (args.repeats + 1) as f64; // the warm-up run and the timed ones
    let mut last: Option<(usize, f64)> = None; // (n, seconds of one fused run)
    let mut last_ref: Option<(usize, f64)> = None;
    let predict = |prev: Option<(usize, f64)>, n: usize| {
        prev.map_or(0.0, |(p, t)| t * (n as f64 / p as f64).powi(2) * runs)
    };
    for &n in &args.sizes {
        let mut row = LossRow {
            backend: kind.name().into(),
            n,
            dim: d,
            reference_seconds: None,
            reference_memory_mib: None,
            reference_tflops: None,
            fused_seconds: None,
            fused_memory_mib: None,
            fused_tflops: None,
            note: None,
        };
        let mut notes = Vec::new();
        if n > args.reference_max {
            notes.push(format!(
                "reference not run above N = {}",
                args.reference_max
            ));
        } else if predict(last_ref, n) + predict(last, n) > budget.left() {
            notes.push("reference skipped: time limit".to_string());
        } else {
            match guarded(|| bench::measure_on(kind, n, d, args.repeats, false)) {
                Ok((t, m)) => {
                    row.reference_seconds = Some(t);
                    row.reference_memory_mib = Some(m);
                    row.reference_tflops =
                        Some(bench::flops(n, d, bench::REFERENCE_PASSES) / t / 1e12);
                    last_ref = Some((n, t));
                }
                Err(e) => notes.push(format!("reference failed: {}", first_line(&e))),
            }
        }
        if predict(last, n) > budget.left() {
            notes.push("fused skipped: time limit".to_string());
        } else {
            match guarded(|| bench::measure_on(kind, n, d, args.repeats, true)) {
                Ok((t, m)) => {
                    row.fused_seconds = Some(t);
                    row.fused_memory_mib = Some(m);
                    row.fused_tflops = Some(bench::flops(n, d, bench::FUSED_PASSES) / t / 1e12);
                    last = Some((n, t));
                }
                Err(e) => notes.push(format!("fused failed: {}", first_line(&e))),
            }
        }
        eprintln!(
            "{kind} N = {n}: reference {}, fused {}{}",
            row.reference_seconds
                .map_or("-".into(), |t| format!("{t:.5} s")),
            row.fused_seconds
                .map_or("-".into(), |t| format!("{t:.5} s")),
            if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join("; "))
            }
        );
        row.note = (!notes.is_empty()).then(|| notes.join("; "));
        report.loss.push(row);
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}
