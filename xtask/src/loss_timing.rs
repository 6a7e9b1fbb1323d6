//! Timing of SupCon forward + backward on one backend, shared by `cargo xtask bench loss`
//! and the GPU check (`scl-gpu-check`).

use scl_train::backend::BackendRuntime;
use std::time::Instant;

use burn::tensor::{Device, Distribution, Int, Tensor};
use scl_loss::memory::measure_peak;
use scl_loss::{Implementation, SupConLossConfig};
use scl_train::backend::BackendKind;

/// One measurement: median seconds and memory in MiB.
pub(crate) type Cell = (f64, f64);

/// Median seconds and memory (MiB beyond the inputs) of SupCon forward + backward at `n`
/// samples of dimension `d`.
struct Measure {
    backend: BackendKind,
    n: usize,
    d: usize,
    repeats: usize,
    fused: bool,
}

impl Measure {
    /// Runs the measurement on `device` (an autodiff device of `backend`).
    fn run(self, device: &Device) -> Cell {
        let Self {
            backend,
            n,
            d,
            repeats,
            fused,
        } = self;
        let features =
            Tensor::<3>::random([n, 1, d], Distribution::Normal(0.0, 1.0), device).require_grad();
        let labels = Tensor::<1, Int>::from_ints(
            (0..n as i64).map(|i| i % 10).collect::<Vec<_>>().as_slice(),
            device,
        );
        // tau = 0.1 as in the paper; unscaled loss; features normalised inside the loss.
        let loss = SupConLossConfig::new()
            .with_temperature(0.1)
            .with_base_temperature(0.1)
            .with_normalize(true)
            .with_implementation(if fused {
                Implementation::Fused
            } else {
                Implementation::Reference
            })
            .init();
        // Reading the gradient back waits for the device, so GPU times are complete.
        let run = || {
            let value = loss.forward(features.clone(), Some(labels.clone()));
            let grads = value.backward();
            let g = features.grad(&grads).expect("a gradient");
            let _ = g.into_data();
        };
        run(); // warm-up: kernel compilation, autotuning, thread pools
        backend.device_memory_cleanup(device);
        let reserved_before = backend.device_memory_reserved(device);
        let mut times = Vec::new();
        let mut peak = 0usize;
        for _ in 0..repeats.max(1) {
            let (seconds, heap) = measure_peak(|| {
                let start = Instant::now();
                run();
                start.elapsed().as_secs_f64()
            });
            times.push(seconds);
            peak = peak.max(heap);
        }
        let memory = if backend.is_cpu() {
            peak as f64
        } else {
            backend
                .device_memory_reserved(device)
                .saturating_sub(reserved_before) as f64
        };
        (median(times), memory / (1024.0 * 1024.0))
    }
}

/// The median of timed runs (the upper one of an even count).
///
/// # Panics
/// When `times` is empty.
pub(crate) fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Median seconds and memory of SupCon forward + backward on device 0 of `backend`.
///
/// # Panics
/// When the backend has no device 0 (the caller lists only backends that probed one).
pub(crate) fn measure_on(
    backend: BackendKind,
    n: usize,
    d: usize,
    repeats: usize,
    fused: bool,
) -> Cell {
    let task = Measure {
        backend,
        n,
        d,
        repeats,
        fused,
    };
    match backend.device(0) {
        Ok(device) => task.run(&device.autodiff()),
        Err(e) => panic!("{e}"),
    }
}

/// Similarity passes of `2 N^2 d` flops: the reference does one matmul forward and two in
/// the backward; the fused path one forward and two backward (the similarities again and the
/// weighted sum; the CPU kernel gets both gradient terms from one tile by symmetry, the
/// CubeCL path computes `W Z` and `W^T Z` separately, i.e. one pass more).
pub(crate) const REFERENCE_PASSES: f64 = 3.0;
pub(crate) const FUSED_PASSES: f64 = 3.0;

/// Flops of `passes` similarity passes at `n` samples of dimension `d`.
pub(crate) fn flops(n: usize, d: usize, passes: f64) -> f64 {
    passes * 2.0 * (n * n * d) as f64
}

/// A field of `/proc/cpuinfo` (`cpu MHz`, `model name`), of its first processor.
pub(crate) fn cpuinfo_field(info: &str, key: &str) -> Option<String> {
    info.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split(':').nth(1))
        .map(|v| v.trim().to_string())
}

/// The CPU's model name and core count, e.g. `Intel(R) Xeon(R) Processor, 2 cores`.
pub(crate) fn host() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo_field(&info, "model name").unwrap_or_else(|| "unknown CPU".into());
    format!("{model}, {} cores", cores())
}

/// Cores this process may use.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
