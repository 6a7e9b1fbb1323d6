//! Fused vs reference SupCon on one backend: the grid of the workspace's wgpu parity tests
//! (awkward sizes, every option; `crates/scl-loss/tests/support/parity.rs`) plus one large
//! case, each against the reference loss on the same backend, values and gradients.

use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use scl_loss::{ContrastMode, NoPositivePolicy, SupConBackend};
use scl_train::backend::BackendKind;

use super::{Budget, ParityResult, guarded};

// Shared with the workspace's tests: the grid and the comparison (`parity`), and the check
// through the public API (`fused_check`). The panicking wrapper of `parity` is not used here.
#[path = "../../../crates/scl-loss/tests/support/fused_check.rs"]
mod fused_check;
#[allow(dead_code)]
#[path = "../../../crates/scl-loss/tests/support/parity.rs"]
mod parity;

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
    parity::awkward_sizes(&[1, 2, 31, 257, 1031], 100, |shape, y, tau, seed| {
        out.push((
            shape,
            Some(y.to_vec()),
            tau,
            ContrastMode::All,
            NoPositivePolicy::CountAsZero,
            seed,
        ));
    });
    parity::every_option(
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
            Some(parity::imbalanced(large)),
            0.1,
            ContrastMode::All,
            NoPositivePolicy::CountAsZero,
            900,
        ));
    }
    out
}

fn check<B: AutodiffBackend + SupConBackend>(case: &Case) -> Result<(f64, f64), String> {
    let (shape, labels, tau, mode, policy, seed) = case;
    fused_check::fused_vs_reference::<B>(*shape, labels.as_deref(), *tau, *mode, *policy, *seed)
}

fn run_on<B: AutodiffBackend + SupConBackend>(
    kind: BackendKind,
    large: usize,
    budget: Budget,
) -> ParityResult {
    let start = Instant::now();
    let mut result = ParityResult {
        backend: kind.name().into(),
        tolerance: parity::TOLERANCE,
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
