//! Timing of SupCon forward + backward on one backend, shared by `cargo xtask bench loss`
//! and the GPU check (`scl-gpu-check`).

use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, Int, Tensor};
use scl_loss::{Implementation, SupConBackend, SupConLossConfig};
use scl_train::backend::BackendKind;

use crate::alloc_counter;

/// One measurement: median seconds and memory in MiB.
pub(crate) type Cell = (f64, f64);

/// Releases the unused pages of the device memory pool (nothing on the CPU backend).
fn device_cleanup(backend: BackendKind) {
    match backend {
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => scl_loss::fused::cube::device_memory_cleanup::<
            burn::backend::wgpu::WgpuRuntime,
        >(&Default::default()),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => scl_loss::fused::cube::device_memory_cleanup::<
            cubecl::cuda::CudaRuntime,
        >(&Default::default()),
        _ => {}
    }
}

/// Device memory reserved by the CubeCL memory pool, in bytes (0 on the CPU backend).
fn device_reserved(backend: BackendKind) -> u64 {
    match backend {
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => scl_loss::fused::cube::device_memory_reserved::<
            burn::backend::wgpu::WgpuRuntime,
        >(&Default::default()),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => scl_loss::fused::cube::device_memory_reserved::<
            cubecl::cuda::CudaRuntime,
        >(&Default::default()),
        _ => 0,
    }
}

/// Median seconds and memory (MiB beyond the inputs) of forward + backward.
fn measure<B: AutodiffBackend + SupConBackend>(
    backend: BackendKind,
    n: usize,
    d: usize,
    repeats: usize,
    fused: bool,
) -> Cell {
    let device = Default::default();
    let features =
        Tensor::<B, 3>::random([n, 1, d], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let labels = Tensor::<B, 1, Int>::from_ints(
        (0..n as i64).map(|i| i % 10).collect::<Vec<_>>().as_slice(),
        &device,
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
    device_cleanup(backend);
    let reserved_before = device_reserved(backend);
    let mut times = Vec::new();
    let mut peak = 0usize;
    for _ in 0..repeats.max(1) {
        let base = alloc_counter::reset_peak();
        let start = Instant::now();
        run();
        times.push(start.elapsed().as_secs_f64());
        peak = peak.max(alloc_counter::peak().saturating_sub(base));
    }
    let memory = match backend {
        BackendKind::Ndarray => peak as f64,
        _ => device_reserved(backend).saturating_sub(reserved_before) as f64,
    };
    (median(times), memory / (1024.0 * 1024.0))
}

/// The median of timed runs (the upper one of an even count).
///
/// # Panics
/// When `times` is empty.
pub(crate) fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Runs [`measure`] on the named backend with autodiff.
pub(crate) fn measure_on(
    backend: BackendKind,
    n: usize,
    d: usize,
    repeats: usize,
    fused: bool,
) -> Cell {
    match backend {
        #[cfg(feature = "ndarray")]
        BackendKind::Ndarray => measure::<burn::backend::Autodiff<burn::backend::NdArray>>(
            backend, n, d, repeats, fused,
        ),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            measure::<burn::backend::Autodiff<burn::backend::Wgpu>>(backend, n, d, repeats, fused)
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            measure::<burn::backend::Autodiff<burn::backend::Cuda>>(backend, n, d, repeats, fused)
        }
        #[allow(unreachable_patterns)]
        _ => unreachable!("the backend list holds compiled backends only"),
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
