//! `cargo xtask bench train`: one SCL training step (forward, backward, SGD update) of every
//! scl-models network on each backend, side by side with PyTorch's CPU step for the same
//! network, loss and optimiser (`benches/reference/train_step_torch.py`, run in the same
//! invocation); writes its section of `docs/benchmarks.md` and `docs/benchmarks-train.json`.

use scl_train::backend::BackendRuntime;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Distribution;
use scl_loss::memory::measure_peak;
use scl_models::{
    Architecture, DenseNetConfig, MlpConfig, ResNet18Config, SclModel, SclModelConfig,
    SmallCnnConfig,
};
use scl_train::backend::BackendKind;
use scl_train::deep::scl_batch_loss;
use serde::{Deserialize, Serialize};

use crate::loss_timing::{host, median};

/// The networks, by the names the command line and PyTorch's script use.
const NETWORKS: [&str; 4] = ["mlp", "cnn", "resnet18", "densenet"];

/// Arguments of `cargo xtask bench train`.
#[derive(clap::Args, Debug)]
pub struct TrainBenchArgs {
    /// Networks to measure: mlp, cnn, resnet18, densenet.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "mlp,cnn,resnet18,densenet"
    )]
    networks: Vec<String>,
    /// Images per batch for each network (each image gives two views).
    #[arg(long, default_value = "mlp=256,cnn=64,resnet18=64,densenet=64")]
    batch: String,
    /// Backends (default: every compiled one that finds a device).
    #[arg(long, value_delimiter = ',', value_parser = crate::choice::backend_kind())]
    backends: Vec<BackendKind>,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// The Python that runs PyTorch's reference (default: ~/.venv-torch/bin/python3 when it
    /// exists, else python3).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Leave PyTorch out.
    #[arg(long)]
    no_torch: bool,
    /// Where to write benchmarks.md and benchmarks-train.json.
    #[arg(long, default_value = "docs")]
    out: PathBuf,
}

/// One measured cell: a network on a backend.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StepRow {
    network: String,
    #[serde(default)]
    backend: String,
    batch: usize,
    forward_seconds: f64,
    backward_seconds: f64,
    optimizer_seconds: f64,
    step_seconds: f64,
    images_per_second: f64,
    peak_memory_mib: f64,
    #[serde(default)]
    profile_seconds: std::collections::BTreeMap<String, f64>,
}

/// What PyTorch's script wrote.
#[derive(Debug, Deserialize)]
struct TorchRun {
    available: bool,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    torch: Option<String>,
    #[serde(default)]
    rows: Vec<serde_json::Value>,
}

/// The model of `network` with scl-models' defaults, and the shape of its input images.
fn model_config(network: &str) -> (SclModelConfig, [usize; 3]) {
    let (architecture, shape) = match network {
        "mlp" => (
            Architecture::Mlp(MlpConfig::new(784, vec![256, 128])),
            [1, 28, 28],
        ),
        "cnn" => (Architecture::SmallCnn(SmallCnnConfig::new(1)), [1, 28, 28]),
        "resnet18" => (Architecture::Resnet18(ResNet18Config::new()), [3, 32, 32]),
        _ => (Architecture::Densenet(DenseNetConfig::new()), [3, 32, 32]),
    };
    (SclModelConfig::new(architecture, 10), shape)
}

/// Timed SCL steps of one network on one backend.
struct Steps<'a> {
    backend: BackendKind,
    network: &'a str,
    batch: usize,
    steps: usize,
    warmup: usize,
}

impl Steps<'_> {
    /// The steps on `device` (an autodiff device of the backend), with their peak memory.
    fn run(self, device: &Device) -> StepRow {
        let cpu = self.backend.is_cpu();
        self.backend.device_memory_cleanup(device);
        let before = self.backend.device_memory_reserved(device);
        let (mut row, heap) = measure_peak(|| self.measure(device));
        let memory = if cpu {
            heap as f64
        } else {
            self.backend
                .device_memory_reserved(device)
                .saturating_sub(before) as f64
        };
        row.peak_memory_mib = memory / (1024.0 * 1024.0);
        row
    }

    fn measure(&self, device: &Device) -> StepRow {
        device.seed(0);
        let (config, [c, h, w]) = model_config(self.network);
        let mut model: SclModel = config.init(device);
        let mut optim = crate::paper_step::optimizer();
        let loss = crate::paper_step::loss();
        let n = self.batch;
        let x = Tensor::<4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), device);
        let labels: Vec<i64> = (0..n as i64).map(|i| i % 10).collect();
        let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), device);
        let sync = || {
            let _ = device.sync();
        };
        let mut times = Vec::new();
        for step in 0..self.warmup + self.steps {
            if step == self.warmup {
                scl_layers::profile::reset();
            }
            let t0 = Instant::now();
            // Two views, the image and its vertical flip, next to each other.
            let views = Tensor::stack::<5>(vec![x.clone(), x.clone().flip([2])], 1).reshape([
                2 * n,
                c,
                h,
                w,
            ]);
            let value = scl_batch_loss(&model, views, y.clone(), 2, &loss);
            sync();
            let t1 = Instant::now();
            let grads = GradientsParams::from_grads(value.backward(), &model);
            sync();
            let t2 = Instant::now();
            model = optim.step(0.1, model, grads);
            sync();
            let t3 = Instant::now();
            if step >= self.warmup {
                times.push([t1 - t0, t2 - t1, t3 - t2, t3 - t0].map(|d| d.as_secs_f64()));
            }
        }
        let med = |i: usize| median(times.iter().map(|t| t[i]).collect());
        // Where a step's time goes: the convolutions' parts, the rest (mean over the timed
        // steps).
        let conv = scl_layers::profile::totals();
        let per_step = |s: f64| s / self.steps as f64;
        let mean_step = times.iter().map(|t| t[3]).sum::<f64>() / self.steps as f64;
        let parts = [
            ("convolution forward", per_step(conv.forward)),
            ("convolution input gradient", per_step(conv.input_grad)),
            ("convolution weight gradient", per_step(conv.weight_grad)),
            ("batch norm forward", per_step(conv.norm_forward)),
            ("batch norm backward", per_step(conv.norm_backward)),
        ];
        let rest = mean_step - parts.iter().map(|p| p.1).sum::<f64>();
        let profile_seconds = parts
            .into_iter()
            .chain([("everything else", rest)])
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        StepRow {
            network: self.network.to_string(),
            backend: self.backend.name().to_string(),
            batch: n,
            forward_seconds: med(0),
            backward_seconds: med(1),
            optimizer_seconds: med(2),
            step_seconds: med(3),
            images_per_second: (2 * n) as f64 / med(3),
            profile_seconds,
            ..Default::default()
        }
    }
}

/// `mlp=256,cnn=64` as a batch size per network (every network in `networks` needs one).
fn parse_batches(text: &str, networks: &[String]) -> Result<Vec<(String, usize)>, String> {
    let mut given = Vec::new();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, value) = part.split_once('=').ok_or_else(|| {
            format!("--batch {part} is not allowed: write network=images, e.g. resnet18=64")
        })?;
        let name = name.trim();
        if !NETWORKS.contains(&name) {
            return Err(format!(
                "--batch names network {name}, which is not allowed: the networks are {}",
                NETWORKS.join(", ")
            ));
        }
        let value: usize = value
            .trim()
            .parse()
            .ok()
            .filter(|&v| v >= 2)
            .ok_or_else(|| {
                format!("--batch {part} is not allowed: the batch must be a whole number >= 2")
            })?;
        given.push((name.to_string(), value));
    }
    networks
        .iter()
        .map(|n| {
            given
                .iter()
                .rev()
                .find(|(g, _)| g == n)
                .cloned()
                .ok_or_else(|| format!("--batch gives no batch size for network {n}"))
        })
        .collect()
}

/// Runs the benchmark.
pub fn run(args: TrainBenchArgs) -> anyhow::Result<ExitCode> {
    let checked = (|| {
        for n in &args.networks {
            if !NETWORKS.contains(&n.as_str()) {
                return Err(format!(
                    "network {n} is not allowed: the networks are {}",
                    NETWORKS.join(", ")
                ));
            }
        }
        if args.steps == 0 {
            return Err("--steps 0 is not allowed: time at least one step".to_string());
        }
        let default: Vec<BackendKind> = scl_train::backend::compiled_in()
            .into_iter()
            .filter(|b| b.probe().is_ok())
            .collect();
        let backends = super::backends(&args.backends, default)?;
        Ok((parse_batches(&args.batch, &args.networks)?, backends))
    })();
    let (batches, backends) = match checked {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let torch = if args.no_torch {
        TorchRun {
            available: false,
            reason: Some("left out (--no-torch)".into()),
            torch: None,
            rows: Vec::new(),
        }
    } else {
        run_torch(&args, &batches)
    };
    let mut rows = Vec::new();
    for &(ref network, batch) in &batches {
        for &backend in &backends {
            eprintln!("== {backend}: {network}, batch {batch} x 2 views");
            let task = Steps {
                backend,
                network,
                batch,
                steps: args.steps,
                warmup: args.warmup,
            };
            let row = task.run(&backend.device(0)?.autodiff());
            eprintln!(
                "   {:.1} images/s ({:.3} s per step: forward {:.3}, backward {:.3}, update {:.3})",
                row.images_per_second,
                row.step_seconds,
                row.forward_seconds,
                row.backward_seconds,
                row.optimizer_seconds
            );
            rows.push(row);
        }
    }
    let torch_rows: Vec<StepRow> = torch
        .rows
        .iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect();
    let md = render(&args, &rows, &torch, &torch_rows);
    print!("{md}");
    std::fs::create_dir_all(&args.out)?;
    let page = args.out.join("benchmarks.md");
    let old = std::fs::read_to_string(&page).unwrap_or_default();
    scl_fs::write(&page, super::splice(&old, &md, "train"))?;
    scl_fs::write(
        &args.out.join("benchmarks-train.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "machine": host(),
            "steps": args.steps,
            "warmup": args.warmup,
            "rows": rows,
            "torch": {
                "available": torch.available, "reason": torch.reason, "version": torch.torch,
                "rows": torch_rows,
            },
        }))?,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Runs PyTorch's script with the same networks, batches and steps; its JSON, or why not.
fn run_torch(args: &TrainBenchArgs, batches: &[(String, usize)]) -> TorchRun {
    let missing = |reason: String| TorchRun {
        available: false,
        reason: Some(reason),
        torch: None,
        rows: Vec::new(),
    };
    let python = args.python.clone().unwrap_or_else(super::default_python);
    eprintln!(
        "== PyTorch ({}): the same networks and steps",
        python.display()
    );
    let networks: Vec<&str> = batches.iter().map(|b| b.0.as_str()).collect();
    let sizes: Vec<String> = batches.iter().map(|(n, b)| format!("{n}={b}")).collect();
    let flags = [
        ("--networks", networks.join(",")),
        ("--batch", sizes.join(",")),
        ("--steps", args.steps.to_string()),
        ("--warmup", args.warmup.to_string()),
        ("--threads", crate::loss_timing::cores().to_string()),
    ];
    super::run_reference(&python, "train_step_torch.py", &flags, &[]).unwrap_or_else(missing)
}

/// The ratio targets per network (ours / PyTorch's images per second).
fn target(network: &str) -> Option<f64> {
    match network {
        "cnn" => Some(1.0),
        "resnet18" | "densenet" => Some(0.5),
        _ => None,
    }
}

fn render(
    args: &TrainBenchArgs,
    rows: &[StepRow],
    torch: &TorchRun,
    torch_rows: &[StepRow],
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## One SCL training step per network (`cargo xtask bench train`)\n\n\
         Forward (two views per image: the image and its vertical flip; L2-normalised \
         embedding; SupCon tau = 0.1, base 0.07), backward and an SGD update (lr 0.1, momentum \
         0.9, weight decay 5e-4) of scl-models' networks with their default sizes, on random \
         inputs; median of {} steps after {} untimed. images/s counts both views. Memory: on \
         the CPU backends the peak live heap from building the model to the last step, beyond \
         what was live before; PyTorch: the growth of the peak resident set over the same \
         span. Machine: {}. PyTorch: {}.\n",
        args.steps,
        args.warmup,
        host(),
        match (&torch.torch, &torch.reason) {
            (Some(v), _) if torch.available => format!(
                "{v}, CPU, eager, {} threads, `benches/reference/train_step_torch.py` run by this \
                 command",
                crate::loss_timing::cores()
            ),
            (_, Some(why)) => format!("not measured: {why}"),
            _ => "not measured".to_string(),
        }
    );
    let _ = writeln!(
        md,
        "| network | batch x views | backend | forward s | backward s | update s | step s | images/s | peak MiB | PyTorch images/s | PyTorch MiB | speed vs PyTorch | memory vs PyTorch |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let find_torch = |network: &str| torch_rows.iter().find(|t| t.network == network);
    for r in rows {
        let t = find_torch(&r.network);
        let _ = writeln!(
            md,
            "| {} | {} x 2 | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} | {:.0} | {} | {} | {} | {} |",
            r.network,
            r.batch,
            r.backend,
            r.forward_seconds,
            r.backward_seconds,
            r.optimizer_seconds,
            r.step_seconds,
            r.images_per_second,
            r.peak_memory_mib,
            t.map_or("-".into(), |t| format!("{:.1}", t.images_per_second)),
            t.map_or("-".into(), |t| format!("{:.0}", t.peak_memory_mib)),
            t.map_or("-".into(), |t| format!(
                "{:.2}x",
                r.images_per_second / t.images_per_second
            )),
            t.map_or("-".into(), |t| format!(
                "{:.2}x",
                r.peak_memory_mib / t.peak_memory_mib.max(1e-9)
            )),
        );
    }
    render_profile(
        &mut md,
        "Where a step's time goes here (seconds per step; the convolutions and batch norms \
         timed inside scl-layers, the rest by difference):",
        rows,
    );
    if !torch_rows.is_empty() {
        let _ = writeln!(
            md,
            "\nPyTorch's own split (forward / backward / update, seconds): {}\n",
            torch_rows
                .iter()
                .map(|t| format!(
                    "{} {:.3} / {:.3} / {:.3}",
                    t.network, t.forward_seconds, t.backward_seconds, t.optimizer_seconds
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
        render_profile(
            &mut md,
            "PyTorch's step by operator kind (torch.profiler, self CPU seconds of one step):",
            torch_rows,
        );
    }
    let _ = writeln!(md, "\nTargets on the CPU (recorded, not asserted):\n");
    for r in rows.iter().filter(|r| r.backend == "flex") {
        let (Some(goal), Some(t)) = (target(&r.network), find_torch(&r.network)) else {
            continue;
        };
        let ratio = r.images_per_second / t.images_per_second;
        let _ = writeln!(
            md,
            "- {} at least {goal}x PyTorch's images/s: {ratio:.2}x, {}",
            r.network,
            if ratio >= goal { "met" } else { "not met" }
        );
        if r.network == "resnet18" {
            let m = r.peak_memory_mib / t.peak_memory_mib.max(1e-9);
            let _ = writeln!(
                md,
                "- resnet18 peak memory at most 1.5x PyTorch's: {m:.2}x, {}",
                if m <= 1.5 { "met" } else { "not met" }
            );
        }
    }
    md
}

/// A table of seconds per part of a step, one row per measured cell.
fn render_profile(md: &mut String, title: &str, rows: &[StepRow]) {
    let mut kinds: Vec<&String> = rows.iter().flat_map(|t| t.profile_seconds.keys()).collect();
    kinds.sort();
    kinds.dedup();
    if kinds.is_empty() {
        return;
    }
    let _ = writeln!(md, "\n{title}\n");
    let _ = writeln!(
        md,
        "| network | {} |",
        kinds
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(md, "|---|{}", "---|".repeat(kinds.len()));
    for t in rows {
        let label = if t.backend.is_empty() {
            t.network.clone()
        } else {
            format!("{} ({})", t.network, t.backend)
        };
        let cells: Vec<String> = kinds
            .iter()
            .map(|k| {
                t.profile_seconds
                    .get(*k)
                    .map_or("-".into(), |s| format!("{s:.3}"))
            })
            .collect();
        let _ = writeln!(md, "| {label} | {} |", cells.join(" | "));
    }
}
