//! Time spent in [`crate::conv2d`]'s forward and in its two gradients, and in
//! [`crate::batch_norm`]'s forward and backward, summed over every call
//! in the process since the last [`reset`]: where a training step's time goes, by part of the
//! convolution. On the CPU backends the calls are synchronous, so the times are complete; on
//! GPU backends they count only the work of queueing the kernels.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A part of the convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The forward convolution.
    Forward,
    /// The gradient with respect to the input.
    InputGrad,
    /// The gradient with respect to the weight.
    WeightGrad,
    /// A batch normalisation's forward (training mode).
    NormForward,
    /// A batch normalisation's backward.
    NormBackward,
}

static NANOS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

/// Seconds per part since the last [`reset`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// Forward convolutions.
    pub forward: f64,
    /// Input gradients.
    pub input_grad: f64,
    /// Weight gradients.
    pub weight_grad: f64,
    /// Batch normalisations, forward.
    pub norm_forward: f64,
    /// Batch normalisations, backward.
    pub norm_backward: f64,
}

/// Sets every total to 0.
pub fn reset() {
    for n in &NANOS {
        n.store(0, Ordering::Relaxed);
    }
}

/// The totals since the last [`reset`].
pub fn totals() -> Totals {
    let s = |i: usize| NANOS[i].load(Ordering::Relaxed) as f64 / 1e9;
    Totals {
        forward: s(0),
        input_grad: s(1),
        weight_grad: s(2),
        norm_forward: s(3),
        norm_backward: s(4),
    }
}

/// Runs `f`, adding its wall time to `part`.
pub(crate) fn timed<T>(part: Part, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    NANOS[part as usize].fetch_add(nanos, Ordering::Relaxed);
    out
}
