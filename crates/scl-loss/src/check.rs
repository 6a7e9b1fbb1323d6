//! Checks of the fused SupCon paths ([`crate::SupConBackend`]) against the reference loss on
//! the same device: the grid of sizes and options every fused path of this crate is
//! tested on (sizes that are not multiples of any tile or cube size, every temperature,
//! contrast mode, no-positive policy, singleton classes, SimCLR) and the comparison of a loss
//! value and its feature gradient.
//!
//! The CPU kernel's unit tests, the wgpu tests and the GPU check (`scl-gpu-check`) all run
//! these, on whatever device they are given.
//!
//! # Example
//!
//! ```
//! use burn::tensor::Device;
//! use scl_loss::check::{awkward_sizes, fused_vs_reference};
//! use scl_loss::{ContrastMode, NoPositivePolicy};
//!
//! let device = Device::flex().autodiff();
//! awkward_sizes(&[31], 0, |shape, labels, tau, seed| {
//!     let deviations = fused_vs_reference(
//!         &device,
//!         shape,
//!         Some(labels),
//!         tau,
//!         ContrastMode::All,
//!         NoPositivePolicy::CountAsZero,
//!         seed,
//!     );
//!     assert!(deviations.is_ok(), "{deviations:?}");
//! });
//! ```

use crate::{ContrastMode, Implementation, NoPositivePolicy, SupConLoss, SupConLossConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// The tolerance of [`compare`]: relative to the reference value and to the largest reference
/// gradient entry.
pub const TOLERANCE: f64 = 1e-4;

/// `(value deviation, gradient deviation)`, each relative (to the reference value and to the
/// largest reference gradient entry), when both are within [`TOLERANCE`]; else a sentence
/// naming `what` and the first entry outside it.
///
/// Floors, for results that are 0 by cancellation (two samples of one class): what is left
/// is f32 round-off of the cancelling terms. In the value those are per-anchor terms of size
/// `(tau / base_tau) / tau = 1 / base_tau` (unit features); in the gradient the mean over
/// `n_anchor` anchors divides them by `n_anchor`. Each floor is 1% of that size.
pub fn compare(
    what: &str,
    (value, grad): (f64, &[f64]),
    (v_ref, g_ref): (f64, &[f64]),
    base_temperature: f64,
    n_anchor: usize,
) -> Result<(f64, f64), String> {
    if !(value.is_finite() && v_ref.is_finite()) {
        return Err(format!("{what}: value {value} vs {v_ref}"));
    }
    let floor = 1e-2 / base_temperature;
    let value_dev = (value - v_ref).abs() / v_ref.abs().max(floor);
    if value_dev > TOLERANCE {
        return Err(format!("{what}: value {value} vs {v_ref}"));
    }
    let g_floor = floor / n_anchor.max(1) as f64;
    let g_scale = g_ref
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(g_floor);
    if grad.len() != g_ref.len() {
        return Err(format!(
            "{what}: gradient sizes {} vs {}",
            grad.len(),
            g_ref.len()
        ));
    }
    let mut grad_dev = 0.0f64;
    for (k, (a, b)) in grad.iter().zip(g_ref).enumerate() {
        let dev = (a - b).abs() / g_scale;
        if dev.is_nan() || dev > TOLERANCE {
            return Err(format!(
                "{what}: gradient {k}: {a} vs {b} (scale {g_scale})"
            ));
        }
        grad_dev = grad_dev.max(dev);
    }
    Ok((value_dev, grad_dev))
}

/// Labels over 4 classes, 5:1:1:1 (class 0 the majority).
pub fn imbalanced(n: usize) -> Vec<i64> {
    (0..n)
        .map(|i| if i % 7 < 5 { 0 } else { 1 + (i % 3) as i64 })
        .collect()
}

/// The sizes every kernel is checked on: `n` in `ns` (not multiples of any tile or cube
/// size), `d` in {3, 8, 128}, temperatures {0.005, 0.1, 1}, imbalanced labels, one view.
/// Calls `check(shape, labels, temperature, seed)` with seeds `seed + 1, seed + 2, ..`.
pub fn awkward_sizes(
    ns: &[usize],
    mut seed: u64,
    mut check: impl FnMut([usize; 3], &[i64], f64, u64),
) {
    for &n in ns {
        for d in [3usize, 8, 128] {
            for tau in [0.005, 0.1, 1.0] {
                seed += 1;
                check([n, 1, d], &imbalanced(n), tau, seed);
            }
        }
    }
}

/// The options every kernel is checked on, at 11 samples with 1 and 3 views: each contrast
/// mode and no-positive policy given, with labels that leave a class with one member, with all
/// labels distinct, and without labels (SimCLR). Calls `check(shape, labels, mode, policy,
/// seed)` with seeds `seed + 1, ..` (each shape twice per seed: 3 views, then 1).
pub fn every_option<M: Copy, P: Copy>(
    modes: [M; 2],
    policies: [P; 2],
    mut seed: u64,
    mut check: impl FnMut([usize; 3], Option<&[i64]>, M, P, u64),
) {
    let one_member: Vec<i64> = vec![0, 0, 1, 2, 2, 2, 3, 0, 2, 2, 0];
    let distinct: Vec<i64> = (0..11).collect();
    for mode in modes {
        for policy in policies {
            for y in [Some(&one_member[..]), Some(&distinct[..]), None] {
                seed += 1;
                check([11, 3, 8], y, mode, policy, seed);
                check([11, 1, 8], y, mode, policy, seed);
            }
        }
    }
}

/// The loss with features normalised inside it, as the parity grid uses it.
pub fn loss(
    temperature: f64,
    mode: ContrastMode,
    policy: NoPositivePolicy,
    imp: Implementation,
) -> SupConLoss {
    SupConLossConfig::new()
        .with_temperature(temperature)
        .with_contrast_mode(mode)
        .with_no_positive(policy)
        .with_normalize(true)
        .with_implementation(imp)
        .init()
}

/// Loss value and feature gradient on `device` (an autodiff device; see
/// `burn::tensor::Device::autodiff`).
///
/// # Panics
/// When `device` does not track gradients.
pub fn value_and_grad(
    device: &Device,
    values: &[f32],
    shape: [usize; 3],
    labels: Option<&[i64]>,
    loss: &SupConLoss,
) -> (f64, Vec<f64>) {
    assert!(
        device.is_autodiff(),
        "value_and_grad needs an autodiff device (Device::autodiff)"
    );
    let f = Tensor::<3>::from_data(TensorData::new(values.to_vec(), shape), device).require_grad();
    let l =
        labels.map(|l| Tensor::<1, Int>::from_data(TensorData::new(l.to_vec(), [l.len()]), device));
    let out = loss.forward(f.clone(), l);
    // A loss without any pair (one sample, one view) is a constant 0: no graph, no gradient.
    let grad = if out.is_tracked() {
        let grads = out.backward();
        f.grad(&grads)
            .map(|g| g.try_into_vec_as::<f64>().unwrap_or_default())
    } else {
        None
    };
    let grad = grad.unwrap_or_else(|| vec![0.0; values.len()]);
    (out.try_into_vec_as::<f64>().unwrap_or_default()[0], grad)
}

/// `len` features uniform in [-1, 1) from `seed`.
pub fn random_features(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// The fused loss against the reference on the same (autodiff) `device`, for random features
/// of `shape` from `seed`: the deviations of [`compare`], or its sentence.
pub fn fused_vs_reference(
    device: &Device,
    shape: [usize; 3],
    labels: Option<&[i64]>,
    temperature: f64,
    mode: ContrastMode,
    policy: NoPositivePolicy,
    seed: u64,
) -> Result<(f64, f64), String> {
    let values = random_features(shape.iter().product(), seed);
    let reference = loss(temperature, mode, policy, Implementation::Reference);
    let fused = loss(temperature, mode, policy, Implementation::Fused);
    let want = value_and_grad(device, &values, shape, labels, &reference);
    let got = value_and_grad(device, &values, shape, labels, &fused);
    let what = format!(
        "{shape:?} tau={temperature} {mode:?} {policy:?} labels={}",
        labels.is_some()
    );
    let n_anchor = match mode {
        ContrastMode::All => shape[0] * shape[1],
        ContrastMode::One => shape[0],
    };
    compare(
        &what,
        (got.0, &got.1),
        (want.0, &want.1),
        reference.base_temperature,
        n_anchor,
    )
}
