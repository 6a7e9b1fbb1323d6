//! Fused vs reference SupCon on one backend: the grid of the workspace's wgpu parity tests
//! (awkward sizes, every option; `scl_loss::check`) plus one large
//! case, each against the reference loss on the same backend, values and gradients.

use scl_train::backend::BackendRuntime;
use std::time::Instant;

use burn::tensor::Device;
use scl_loss::{ContrastMode, NoPositivePolicy};
use scl_train::backend::BackendKind;

use scl_train::backend::guarded;

use super::{Budget, ParityResult};

// The grid and the comparison of the workspace's tests.
use scl_loss::check::{self as parity, fused_vs_reference};

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

fn check(device: &Device, case: &Case) -> Result<(f64, f64), String> {
    let (shape, labels, tau, mode, policy, seed) = case;
    fused_vs_reference(
        device,
        *shape,
        labels.as_deref(),
        *tau,
        *mode,
        *policy,
        *seed,
    )
}

/// The parity cases on one backend until the budget runs out.
struct Parity {
    kind: BackendKind,
    large: usize,
    budget: Budget,
}

impl Parity {
    /// The cases on `device` (an autodiff device of the backend).
    fn run(self, device: &Device) -> ParityResult {
        let start = Instant::now();
        let mut result = ParityResult {
            backend: self.kind.name().into(),
            tolerance: parity::TOLERANCE,
            ..Default::default()
        };
        let all = cases(self.large);
        for (i, case) in all.iter().enumerate() {
            if self.budget.left() <= 0.0 {
                result.skipped = all.len() - i;
                break;
            }
            result.cases += 1;
            match guarded(|| check(device, case)).and_then(|r| r) {
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
}

/// Runs the parity cases on device 0 of `kind` until `budget` runs out.
pub fn run(kind: BackendKind, large: usize, budget: Budget) -> Result<ParityResult, String> {
    let task = Parity {
        kind,
        large,
        budget,
    };
    let device = kind.device(0).map_err(|e| e.to_string())?;
    Ok(task.run(&device.autodiff()))
}
