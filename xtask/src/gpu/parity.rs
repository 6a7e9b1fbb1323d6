//! Fused vs reference SupCon on one backend: the grid of the workspace's wgpu parity tests
//! (awkward sizes, every option; `crates/scl-loss/tests/support/parity.rs`) plus one large
//! case, each against the reference loss on the same backend, values and gradients.

use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use scl_loss::{
    ContrastMode, Implementation, NoPositivePolicy, SupConBackend, SupConLoss, SupConLossConfig,
};
use scl_train::backend::BackendKind;

use super::{Budget, ParityResult, guarded};

// Shared with the workspace's tests; its panicking wrapper is not used here.
#[allow(dead_code)]
#[path = "../../../crates/scl-loss/tests/support/parity.rs"]
mod grid;

/// One case: shape, labels, temperature, contrast mode, no-positive policy, seed.
type Case = (
    [usize; 3],
    Option<Vec<i64>>,
    f64,
    ContrastMode,
    NoPositivePolicy,
    u64,
);

fn cases(large: usize) -> Vec<Case> {
    let mut out: Vec<Case> = Vec::new();
    grid::awkward_sizes(&[1, 2, 31, 257, 1031], 100, |shape, y, tau, seed| {
        out.push((
            shape,
            Some(y.to_vec()),
            tau,
            ContrastMode::All,
            NoPositivePolicy::CountAsZero,
            seed,
        ));
    });
    grid::every_option(
        [ContrastMode::All, ContrastMode::One],
        [NoPositivePolicy::CountAsZero, NoPositivePolicy::Exclude],
        500,
        |shape, y, mode, policy, seed| {
            out.push((shape, y.map(<[i64]>::to_vec), 0.1, mode, policy, seed))
        },
    );
    if large > 0 {
        out.push((
            [large, 1, 128],
            Some(grid::imbalanced(large)),
            0.1,
            ContrastMode::All,
            NoPositivePolicy::CountAsZero,
            900,
        ));
    }
    out
}

fn loss(tau: f64, mode: ContrastMode, policy: NoPositivePolicy, imp: Implementation) -> SupConLoss {
    SupConLossConfig::new()
        .with_temperature(tau)
        .with_contrast_mode(mode)
        .with_no_positive(policy)
        .with_normalize(true)
        .with_implementation(imp)
        .init()
}

/// Loss value and feature gradient.
fn value_and_grad<B: AutodiffBackend + SupConBackend>(
    values: &[f32],
    shape: [usize; 3],
    labels: Option<&[i64]>,
    loss: &SupConLoss,
) -> (f64, Vec<f64>) {
    let device = Default::default();
    let f =
        Tensor::<B, 3>::from_data(TensorData::new(values.to_vec(), shape), &device).require_grad();
    let l = labels
        .map(|l| Tensor::<B, 1, Int>::from_data(TensorData::new(l.to_vec(), [l.len()]), &device));
    let out = loss.forward(f.clone(), l);
    let grads = out.backward();
    let host = |d: TensorData| d.convert::<f64>().into_vec::<f64>().unwrap_or_default();
    let grad = f
        .grad(&grads)
        .map_or(vec![0.0; values.len()], |g| host(g.into_data()));
    (host(out.into_data())[0], grad)
}

/// Pseudo-random features in [-1, 1) from a seed (SplitMix64; no generator crate needed).
fn features(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn check<B: AutodiffBackend + SupConBackend>(case: &Case) -> Result<(f64, f64), String> {
    let (shape, labels, tau, mode, policy, seed) = case;
    let values = features(shape.iter().product(), *seed);
    let reference = loss(*tau, *mode, *policy, Implementation::Reference);
    let fused = loss(*tau, *mode, *policy, Implementation::Fused);
    let labels = labels.as_deref();
    let want = value_and_grad::<B>(&values, *shape, labels, &reference);
    let got = value_and_grad::<B>(&values, *shape, labels, &fused);
    let what = format!(
        "{shape:?} tau={tau} {mode:?} {policy:?} labels={}",
        labels.is_some()
    );
    let n_anchor = match mode {
        ContrastMode::All => shape[0] * shape[1],
        ContrastMode::One => shape[0],
    };
    grid::compare(
        &what,
        (got.0, &got.1),
        (want.0, &want.1),
        reference.base_temperature,
        n_anchor,
    )
}

fn run_on<B: AutodiffBackend + SupConBackend>(
    kind: BackendKind,
    large: usize,
    budget: Budget,
) -> ParityResult {
    let start = Instant::now();
    let mut result = ParityResult {
        backend: kind.name().into(),
        tolerance: grid::TOLERANCE,
        ..Default::default()
    };
    let all = cases(large);
    for (i, case) in all.iter().enumerate() {
        if budget.left() <= 0.0 {
            result.skipped = all.len() - i;
            break;
        }
        result.cases += 1;
        match guarded(|| check::<B>(case)).and_then(|r| r) {
            Ok((v, g)) => {
                result.passed += 1;
                result.max_value_deviation = result.max_value_deviation.max(v);
                result.max_grad_deviation = result.max_grad_deviation.max(g);
            }
            Err(e) => result.failures.push(e),
        }
    }
    result.seconds = start.elapsed().as_secs_f64();
    result
}

/// Runs the parity cases on `kind` until `budget` runs out.
pub fn run(kind: BackendKind, large: usize, budget: Budget) -> ParityResult {
    match kind {
        #[cfg(feature = "ndarray")]
        BackendKind::Ndarray => {
            run_on::<burn::backend::Autodiff<burn::backend::NdArray>>(kind, large, budget)
        }
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            run_on::<burn::backend::Autodiff<burn::backend::Wgpu>>(kind, large, budget)
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            run_on::<burn::backend::Autodiff<burn::backend::Cuda>>(kind, large, budget)
        }
        #[allow(unreachable_patterns)]
        _ => unreachable!("probe accepted a backend that is not compiled in"),
    }
}
