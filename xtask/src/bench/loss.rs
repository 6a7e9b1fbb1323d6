//! `cargo xtask bench loss`: SupCon forward + backward, reference vs fused, on every compiled
//! backend (or those named by `--backends`), beside PyTorch's SupConLoss on the CPU measured in
//! the same run (`benches/reference/supcon_torch.py`, when PyTorch is installed); prints a
//! table and writes its section of `docs/benchmarks.md` and `docs/benchmarks.json`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use scl_loss::fused::cpu::Isa;
use scl_train::backend::BackendKind;

use crate::loss_timing::{
    Cell, FUSED_PASSES, REFERENCE_PASSES, cores, cpuinfo_field, flops, host, measure_on, median,
};

/// Arguments of `cargo xtask bench loss`.
#[derive(clap::Args, Debug)]
pub struct LossArgs {
    /// Batch sizes N.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "256,1024,4096,8192,16384"
    )]
    sizes: Vec<usize>,
    /// Backends to measure (default: every compiled one).
    #[arg(long, value_delimiter = ',', value_parser = crate::choice::backend_kind())]
    backends: Vec<BackendKind>,
    /// Feature dimension d.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Timed repetitions per cell (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Largest N at which the reference runs (it holds several N x N matrices).
    #[arg(long, default_value_t = 8192)]
    reference_max: usize,
    /// Largest N at which PyTorch's SupConLoss runs on the CPU (it forms several N x N
    /// matrices: about 8 GiB at N = 16384).
    #[arg(long, default_value_t = 16384)]
    torch_max: usize,
    /// The Python that runs PyTorch's reference (default: ~/.venv-torch/bin/python3 when it
    /// exists, else python3).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Leave PyTorch out.
    #[arg(long)]
    no_torch: bool,
    /// Where to write benchmarks.md and benchmarks.json.
    #[arg(long, default_value = "docs")]
    out: PathBuf,
}

/// PyTorch's SupConLoss on the CPU, as `supcon_torch.py --loss-only` reports it.
#[derive(Debug, Default, serde::Deserialize)]
struct TorchLoss {
    /// Why there is no PyTorch column (not installed, the script failed), if there is none.
    #[serde(skip)]
    missing: Option<String>,
    /// PyTorch's version.
    torch: Option<String>,
    /// What it ran on (`CPU (T threads)`).
    device: Option<String>,
    /// Why PyTorch could not run (its own words).
    unavailable: Option<String>,
    loss: Vec<TorchLossRow>,
}

/// One size of PyTorch's loss benchmark.
#[derive(Debug, Clone, serde::Deserialize)]
struct TorchLossRow {
    n: usize,
    seconds: Option<f64>,
    memory_mib: Option<f64>,
    note: Option<String>,
}

impl TorchLoss {
    /// Why the column is empty, or `None` when PyTorch ran.
    fn absent(&self) -> Option<String> {
        self.missing.clone().or_else(|| self.unavailable.clone())
    }

    /// The row of size `n`: `(seconds, MiB)` or why there is none.
    fn at(&self, n: usize) -> Result<(f64, f64), String> {
        if let Some(why) = self.absent() {
            return Err(why);
        }
        match self.loss.iter().find(|r| r.n == n) {
            Some(TorchLossRow {
                seconds: Some(t),
                memory_mib,
                ..
            }) => Ok((*t, memory_mib.unwrap_or(f64::NAN))),
            Some(r) => Err(r.note.clone().unwrap_or_else(|| "no time".into())),
            None => Err("not run".into()),
        }
    }
}

/// Runs PyTorch's SupConLoss on the CPU at the sizes up to `--torch-max`.
fn run_torch(args: &LossArgs) -> TorchLoss {
    let missing = |why: String| TorchLoss {
        missing: Some(why),
        ..TorchLoss::default()
    };
    if args.no_torch {
        return missing("left out (--no-torch)".into());
    }
    let sizes: Vec<String> = args
        .sizes
        .iter()
        .filter(|&&n| n <= args.torch_max)
        .map(usize::to_string)
        .collect();
    if sizes.is_empty() {
        return missing(format!("no size up to --torch-max {}", args.torch_max));
    }
    let python = args.python.clone().unwrap_or_else(super::default_python);
    eprintln!("== PyTorch ({}): SupConLoss on the CPU", python.display());
    let flags = [
        ("--device", "cpu".to_string()),
        ("--sizes", sizes.join(",")),
        ("--dim", args.dim.to_string()),
        ("--repeats", args.repeats.to_string()),
        ("--threads", cores().to_string()),
        ("--time-limit", "900".to_string()),
    ];
    super::run_reference(&python, "supcon_torch.py", &flags, &["--loss-only"])
        .unwrap_or_else(missing)
}

/// How memory is measured on a backend.
fn memory_note(backend: BackendKind) -> &'static str {
    if backend.is_cpu() {
        "peak live heap allocation during one run beyond what was live before it"
    } else {
        "growth of the device memory pool's reserved bytes over the first timed run (its high-water mark)"
    }
}

struct Row {
    backend: BackendKind,
    n: usize,
    reference: Option<Cell>,
    fused: Cell,
}

/// The floating-point peak of this machine in GFLOP/s, and how it was derived: the larger
/// of the nominal peak (cores x `cpu MHz` x FMA width, two FMA units assumed) and the FMA
/// throughput measured on every core, so that a clock above the one `/proc/cpuinfo` reports
/// (turbo) cannot flatter the kernel's share.
fn machine_peak() -> (f64, String) {
    let cores = cores();
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mhz = cpuinfo_field(&info, "cpu MHz")
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(2000.0);
    let isa = Isa::fastest();
    let avx512 = isa == Isa::Avx512;
    let flops_per_cycle = if avx512 { 64.0 } else { 32.0 };
    let model = host();
    let nominal = cores as f64 * mhz / 1000.0 * flops_per_cycle;
    let measured = scl_loss::fused::cpu::measure_fma_peak(isa);
    let peak = nominal.max(measured);
    (
        peak,
        format!(
            "{model}; nominal peak {cores} x {mhz:.0} MHz x {flops_per_cycle} f32 \
             FLOP/cycle ({} FMA: two {}-lane FMA units assumed) = {nominal:.0} GFLOP/s; \
             measured FMA throughput ({isa} FMA chains on {} threads) {measured:.0} GFLOP/s; \
             the larger, {peak:.0} GFLOP/s, is the peak used",
            if avx512 { "AVX-512" } else { "AVX2" },
            if avx512 { 16 } else { 8 },
            cores,
        ),
    )
}

/// One row of the kernel table: an instruction set and its median seconds.
struct KernelRow {
    isa: Isa,
    seconds: f64,
}

/// The CPU kernel alone (`scl_loss::fused::cpu`, forward and backward on host slices, no
/// Burn) on every instruction set this processor has, at `n` unit features of dimension `d`.
fn kernel_rows(n: usize, d: usize, repeats: usize) -> Vec<KernelRow> {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    use scl_loss::fused::cpu::{Problem, lse_backward_with, lse_with};
    let mut rng = StdRng::seed_from_u64(1);
    let mut z: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    for row in z.chunks_mut(d.max(1)) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= norm);
    }
    let g = vec![1.0 / n as f32; n];
    let p = Problem {
        z: &z,
        n_contrast: n,
        n_anchor: n,
        dim: d,
        temperature: 0.1,
    };
    Isa::ALL
        .into_iter()
        .filter(|isa| isa.is_available())
        .map(|isa| {
            let run = || {
                let lse = lse_with(&p, isa);
                std::hint::black_box(lse_backward_with(&p, &lse, &g, isa));
            };
            run();
            let seconds = median(
                (0..repeats.max(1))
                    .map(|_| {
                        let start = std::time::Instant::now();
                        run();
                        start.elapsed().as_secs_f64()
                    })
                    .collect(),
            );
            eprintln!("kernel {isa} N = {n}: {seconds:.4} s");
            KernelRow { isa, seconds }
        })
        .collect()
}

/// Runs the benchmark.
pub fn run(args: LossArgs) -> anyhow::Result<ExitCode> {
    let backends = match super::backends(&args.backends, scl_train::backend::compiled_in()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let d = args.dim;
    let (peak, peak_text) = machine_peak();
    let mut rows = Vec::new();
    for &backend in &backends {
        for &n in &args.sizes {
            let reference =
                (n <= args.reference_max).then(|| measure_on(backend, n, d, args.repeats, false));
            let fused = measure_on(backend, n, d, args.repeats, true);
            eprintln!(
                "{backend} N = {n}: reference {}, fused {:.4} s",
                reference.map_or("skipped".into(), |r| format!("{:.4} s", r.0)),
                fused.0
            );
            rows.push(Row {
                backend,
                n,
                reference,
                fused,
            });
        }
    }
    // The kernel table at the largest measured size up to 8192 (the CPU target's size).
    let kernel_n = args.sizes.iter().copied().filter(|&n| n <= 8192).max();
    let kernels = match kernel_n {
        Some(n) if backends.iter().any(|b| b.is_cpu()) => (n, kernel_rows(n, d, args.repeats)),
        _ => (0, Vec::new()),
    };
    // PyTorch last, so that nothing else runs beside it.
    let torch = run_torch(&args);
    let mut md = render(&args, &rows, peak, &peak_text, &torch);
    md.push_str(&render_kernels(kernels.0, d, &kernels.1, peak));
    md.push_str(&render_targets(&args, &rows, kernels.0, &kernels.1, peak));
    print!("{md}");
    let json: Vec<_> = rows
        .iter()
        .map(|r| {
            // PyTorch's column belongs to the CPU rows only.
            let t = r.backend.is_cpu().then(|| torch.at(r.n).ok()).flatten();
            serde_json::json!({
                "backend": r.backend.name(), "n": r.n, "dim": d,
                "reference_seconds": r.reference.map(|x| x.0),
                "reference_memory_mib": r.reference.map(|x| x.1),
                "fused_seconds": r.fused.0,
                "fused_memory_mib": r.fused.1,
                "fused_gflops": flops(r.n, d, FUSED_PASSES) / r.fused.0 / 1e9,
                "memory": memory_note(r.backend),
                "torch_cpu_seconds": t.map(|t| t.0),
                "torch_cpu_memory_mib": t.map(|t| t.1),
            })
        })
        .collect();
    std::fs::create_dir_all(&args.out)?;
    let page = args.out.join("benchmarks.md");
    let old = std::fs::read_to_string(&page).unwrap_or_default();
    scl_fs::write(&page, super::splice(&old, &md, "loss"))?;
    scl_fs::write(
        &args.out.join("benchmarks.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "machine_peak_gflops": peak, "machine": peak_text,
            "fused_passes": FUSED_PASSES, "reference_passes": REFERENCE_PASSES, "rows": json,
            "torch": {"version": torch.torch, "device": torch.device, "absent": torch.absent()},
            "cpu_kernel": {
                "n": kernels.0, "dim": d,
                "rows": kernels.1.iter().map(|k| serde_json::json!({
                    "isa": k.isa.name(), "seconds": k.seconds,
                    "gflops": flops(kernels.0, d, FUSED_PASSES) / k.seconds / 1e9,
                })).collect::<Vec<_>>(),
            }
        }))?,
    )?;
    Ok(ExitCode::SUCCESS)
}

fn render(args: &LossArgs, rows: &[Row], peak: f64, peak_text: &str, torch: &TorchLoss) -> String {
    let d = args.dim;
    let mut md = String::new();
    let torch_text = match (torch.absent(), &torch.torch, &torch.device) {
        (None, Some(v), Some(dev)) => format!(
            "PyTorch {v} on the {dev}, eager, SupContrast's SupConLoss (unfused: the N x N \
             logits, masks and log-probabilities formed in full) on the same inputs, normalised \
             inside the timed region (`benches/reference/supcon_torch.py`, run by this command; \
             memory: the growth of its peak resident set), up to N = {}",
            args.torch_max
        ),
        (why, _, _) => format!(
            "PyTorch: not measured ({})",
            why.unwrap_or_else(|| "no version reported".into())
        ),
    };
    let _ = writeln!(
        md,
        "## SupCon forward + backward (`cargo xtask bench loss`)\n\n\
         Burn backends with autodiff, f32, d = {d}, tau = 0.1, 10 classes, one view, \
         features L2-normalised inside the loss; median of {} runs after a warm-up. Memory: on \
         the CPU backends the {}; on GPU backends the {}. CPU machine: {peak_text}. GFLOP/s counts \
         2 N^2 d flops per similarity pass: {REFERENCE_PASSES} passes for the reference, \
         {FUSED_PASSES} for the fused path. {torch_text}.\n",
        args.repeats,
        memory_note(BackendKind::Flex),
        memory_note(BackendKind::Wgpu),
    );
    let _ = writeln!(
        md,
        "| backend | N | reference s | reference MiB | fused s | fused MiB | fused / reference time | reference GFLOP/s | fused GFLOP/s | fused % of CPU peak | PyTorch CPU s | PyTorch CPU MiB | fused / PyTorch time |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let fused_gflops = flops(r.n, d, FUSED_PASSES) / r.fused.0 / 1e9;
        let (rt, rm, ratio, rg) = match r.reference {
            Some((t, m)) => (
                format!("{t:.4}"),
                format!("{m:.1}"),
                format!("{:.3}", r.fused.0 / t),
                format!("{:.1}", flops(r.n, d, REFERENCE_PASSES) / t / 1e9),
            ),
            None => ("skipped".into(), "-".into(), "-".into(), "-".into()),
        };
        let share = if r.backend.is_cpu() {
            format!("{:.1}%", 100.0 * fused_gflops / peak)
        } else {
            "-".into()
        };
        let (tt, tm, tr) = match torch.at(r.n) {
            Ok((t, m)) if r.backend.is_cpu() => (
                format!("{t:.4}"),
                format!("{m:.1}"),
                format!("{:.3}", r.fused.0 / t),
            ),
            Err(why) if r.backend.is_cpu() && torch.absent().is_none() => {
                (why, "-".into(), "-".into())
            }
            _ => ("-".into(), "-".into(), "-".into()),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {rt} | {rm} | {:.4} | {:.1} | {ratio} | {rg} | {fused_gflops:.1} | {share} | {tt} | {tm} | {tr} |",
            r.backend, r.n, r.fused.0, r.fused.1,
        );
    }
    md
}

/// The CPU targets for the loss (recorded against this run's numbers, not asserted): the
/// fused path against the reference, the kernel's share of the peak, the work Burn adds
/// around the kernel, and the memory at large N.
fn render_targets(
    args: &LossArgs,
    rows: &[Row],
    kernel_n: usize,
    kernels: &[KernelRow],
    peak: f64,
) -> String {
    let d = args.dim;
    let mut lines = Vec::new();
    let cpu = |n: usize| {
        rows.iter()
            .find(|r| r.backend == BackendKind::Flex && r.n == n)
    };
    let verdict = |ok: bool| if ok { "met" } else { "not met" };
    if let Some(r) = cpu(8192)
        && let Some((t, _)) = r.reference
    {
        let speedup = t / r.fused.0;
        lines.push(format!(
            "- fused at least 5x faster than the reference at N = 8192: {speedup:.1}x, {}",
            verdict(speedup >= 5.0)
        ));
    }
    // The fastest instruction set's kernel is the one the Burn path runs.
    let fastest = kernels.iter().map(|k| k.seconds).reduce(f64::min);
    if let Some(kernel) = fastest {
        let share = flops(kernel_n, d, FUSED_PASSES) / kernel / 1e9 / peak;
        lines.push(format!(
            "- the kernel alone at least 65% of the CPU peak at N = {kernel_n}: {:.1}%, {}",
            100.0 * share,
            verdict(share >= 0.65)
        ));
        if let Some(r) = cpu(kernel_n) {
            let around = (r.fused.0 - kernel).max(0.0) / r.fused.0;
            lines.push(format!(
                "- the work around the kernel in Burn (normalisation, autodiff, copies) under \
                 10% of the fused time at N = {kernel_n}: {:.1}% ({:.4} s of {:.4} s), {}",
                100.0 * around,
                r.fused.0 - kernel,
                r.fused.0,
                verdict(around < 0.10)
            ));
        }
    }
    if let Some(r) = cpu(16384) {
        lines.push(format!(
            "- fused adds under 64 MiB at N = 16384: {:.1} MiB, {}",
            r.fused.1,
            verdict(r.fused.1 < 64.0)
        ));
    }
    if let Some(r) = cpu(65536) {
        // O(N d): a small multiple of the features' own size; one N x N f32 matrix would
        // be 16 GiB.
        let features = (r.n * d * 4) as f64 / f64::from(1 << 20);
        let multiple = r.fused.1 / features;
        lines.push(format!(
            "- N = 65536 runs within O(N d) extra memory: {:.1} MiB = {multiple:.1}x the \
             {features:.0} MiB of its features (one N x N f32 matrix: {:.0} MiB), {}",
            r.fused.1,
            (r.n * r.n * 4) as f64 / f64::from(1 << 20),
            verdict(multiple <= 16.0)
        ));
    }
    if lines.is_empty() {
        return String::new();
    }
    format!(
        "\nCPU targets (recorded, not asserted):\n\n{}\n",
        lines.join("\n")
    )
}

/// The kernel table: one row per instruction set, with its speed-up over the portable code.
fn render_kernels(n: usize, d: usize, rows: &[KernelRow], peak: f64) -> String {
    let mut md = String::new();
    if rows.is_empty() {
        return md;
    }
    let _ = writeln!(
        md,
        "\n### The CPU kernel alone, per instruction set\n\n\
         `scl_loss::fused::cpu::lse_with` + `lse_backward_with` on host slices (no Burn, no \
         autodiff, no normalisation), N = {n}, d = {d}, tau = 0.1, every row an anchor; median \
         of the same runs. The table above goes through Burn and uses the first row.\n"
    );
    let _ = writeln!(
        md,
        "| instruction set | s | GFLOP/s | % of CPU peak | speed-up over portable |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    let portable = rows
        .iter()
        .find(|r| r.isa == Isa::Portable)
        .map(|r| r.seconds);
    for r in rows {
        let gflops = flops(n, d, FUSED_PASSES) / r.seconds / 1e9;
        let _ = writeln!(
            md,
            "| {} | {:.4} | {gflops:.1} | {:.1}% | {} |",
            r.isa,
            r.seconds,
            100.0 * gflops / peak,
            portable.map_or("-".into(), |p| format!("{:.2}x", p / r.seconds)),
        );
    }
    md
}
