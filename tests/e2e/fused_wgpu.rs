//! The CubeCL kernels of the fused SupCon loss, run through Burn's wgpu backend (on a machine
//! without a GPU: Mesa's lavapipe Vulkan driver on the CPU): against the plain-f64 evaluation
//! of the same inputs (the accuracy suite, 1e-5), and against the reference loss on the same
//! backend on awkward sizes and every option (values and gradients, 1e-4 in f32).
//!
//! Without a Vulkan adapter these tests skip with a message; CI installs
//! `mesa-vulkan-drivers` and sets `SCL_REQUIRE_WGPU=1`, so there they must run.

use burn::backend::wgpu::{CubeBackend, WgpuRuntime};
use burn::backend::{Autodiff, Flex, Wgpu};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use rand::{Rng, SeedableRng, rngs::StdRng};
use scl_loss::fused::cube::{lse_backward_chunked, lse_chunked};
use scl_loss::fused::{reference_lse, reference_lse_backward};
use scl_loss::{ContrastMode, Implementation, NoPositivePolicy};

type Reference = Autodiff<Flex>;

use scl_loss::check;

#[path = "../../crates/scl-loss/tests/support/exact.rs"]
mod exact;

#[path = "../../crates/scl-loss/tests/support/accuracy.rs"]
mod accuracy;

/// Whether a wgpu adapter exists; panics when `SCL_REQUIRE_WGPU` is set and none does.
fn wgpu_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let found = std::panic::catch_unwind(|| {
            Tensor::<Wgpu, 1>::zeros([1], &Default::default()).into_data()
        })
        .is_ok();
        if !found {
            assert!(
                std::env::var_os("SCL_REQUIRE_WGPU").is_none(),
                "SCL_REQUIRE_WGPU is set but wgpu found no adapter \
                 (install mesa-vulkan-drivers for lavapipe)"
            );
            eprintln!("skipped: no wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
        }
        found
    })
}

/// Fused (picked by `auto`) against the reference on wgpu; panics with the comparison's
/// sentence.
fn check(
    shape: [usize; 3],
    labels: Option<&[i64]>,
    temperature: f64,
    mode: ContrastMode,
    policy: NoPositivePolicy,
    seed: u64,
) {
    assert!(
        check::loss(temperature, mode, policy, Implementation::Auto).uses_fused::<Autodiff<Wgpu>>(),
        "auto picks the kernel on wgpu"
    );
    if let Err(e) =
        check::fused_vs_reference::<Autodiff<Wgpu>>(shape, labels, temperature, mode, policy, seed)
    {
        panic!("{e}");
    }
}

#[test]
fn wgpu_kernel_matches_the_reference_on_awkward_sizes() {
    if !wgpu_available() {
        return;
    }
    check::awkward_sizes(&[1, 2, 31, 257, 1031], 100, |shape, y, tau, seed| {
        check(
            shape,
            Some(y),
            tau,
            ContrastMode::All,
            NoPositivePolicy::CountAsZero,
            seed,
        )
    });
}

#[test]
fn wgpu_kernel_matches_the_reference_on_every_option() {
    if !wgpu_available() {
        return;
    }
    check::every_option(
        [ContrastMode::All, ContrastMode::One],
        [NoPositivePolicy::CountAsZero, NoPositivePolicy::Exclude],
        500,
        |shape, y, mode, policy, seed| check(shape, y, 0.1, mode, policy, seed),
    );
    let y = check::imbalanced(300);
    check(
        [300, 2, 16],
        Some(&y),
        0.1,
        ContrastMode::One,
        NoPositivePolicy::Exclude,
        599,
    );
}

/// The f32 accuracy suite on wgpu: the CubeCL kernels (picked by `auto`) and the reference in
/// plain tensor ops, each against the plain-f64 evaluation of the same inputs, within 1e-5.
///
/// Cases of up to 257 samples: on lavapipe the whole suite takes about 14 minutes, most of it
/// in the two N = 1031 cases (every new shape compiles and tunes its kernels); those passed
/// there too (worst gradient deviation 4.6e-6) and run on the CPU paths in the unit tests.
/// `SCL_WGPU_ACCURACY_ALL=1` runs them all.
#[test]
fn wgpu_paths_match_f64_within_1e5_in_f32() {
    if !wgpu_available() {
        return;
    }
    let max_n = if std::env::var_os("SCL_WGPU_ACCURACY_ALL").is_some() {
        usize::MAX
    } else {
        257
    };
    let reference = |c: &accuracy::Case| c.run::<Autodiff<Wgpu>>(Implementation::Reference);
    let fused = |c: &accuracy::Case| c.run::<Autodiff<Wgpu>>(Implementation::Auto);
    let failures = accuracy::run_suite(max_n, &[("reference", &reference), ("fused", &fused)]);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Several chunks of anchor rows (the N = 65536 layout, on a small problem): the kernels
/// without the fusion wrapper, against the reference op on the same wgpu device.
#[test]
fn wgpu_kernel_in_several_chunks_matches_the_reference_op() {
    if !wgpu_available() {
        return;
    }
    type Raw = CubeBackend<WgpuRuntime, f32, i32, u32>;
    let device = Default::default();
    let (n_contrast, n_anchor, d, tau) = (203usize, 150usize, 24usize, 0.07);
    let mut rng = StdRng::seed_from_u64(7);
    let z: Vec<f32> = (0..n_contrast * d)
        .map(|_| rng.random_range(-0.3f32..0.3))
        .collect();
    let g: Vec<f32> = (0..n_anchor)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let z = Tensor::<Raw, 2>::from_data(TensorData::new(z, [n_contrast, d]), &device);
    let g = Tensor::<Raw, 1>::from_data(TensorData::new(g, [n_anchor]), &device);
    let want_lse = reference_lse(z.clone(), n_anchor, tau);
    let want_grad = reference_lse_backward(z.clone(), want_lse.clone(), g.clone(), tau);
    let host = |t: Vec<f32>| t.into_iter().map(f64::from).collect::<Vec<_>>();
    let want_lse = host(want_lse.into_data().to_vec().unwrap());
    let want_grad = host(want_grad.into_data().to_vec().unwrap());
    for rows in [1usize, 7, 64, 150] {
        let prim = |t: Tensor<Raw, 2>| t.into_primitive().tensor();
        let lse = lse_chunked::<WgpuRuntime, f32, i32, u32>(prim(z.clone()), n_anchor, tau, rows);
        let grad = lse_backward_chunked::<WgpuRuntime, f32, i32, u32>(
            prim(z.clone()),
            lse.clone(),
            g.clone().into_primitive().tensor(),
            tau,
            rows,
        );
        let lse = Tensor::<Raw, 1>::from_primitive(TensorPrimitive::Float(lse));
        let grad = Tensor::<Raw, 2>::from_primitive(TensorPrimitive::Float(grad));
        let lse = host(lse.into_data().to_vec().unwrap());
        let grad = host(grad.into_data().to_vec().unwrap());
        for (a, b) in lse.iter().zip(&want_lse) {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                "rows {rows}: lse {a} vs {b}"
            );
        }
        let scale = want_grad.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        for (a, b) in grad.iter().zip(&want_grad) {
            assert!(
                (a - b).abs() <= 1e-4 * scale,
                "rows {rows}: gradient {a} vs {b}"
            );
        }
    }
}

/// Un-normalised features of norm 100 and temperature 0.005 (logits up to 2e6): finite, and
/// equal to the reference.
#[test]
fn wgpu_kernel_keeps_extreme_logits_finite() {
    if !wgpu_available() {
        return;
    }
    let (batch, views, dim) = (6usize, 2usize, 4usize);
    let mut rng = StdRng::seed_from_u64(3);
    let mut values: Vec<f32> = (0..batch * views * dim)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    for row in values.chunks_mut(dim) {
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v *= 100.0 / n);
    }
    let y = [0i64, 0, 1, 1, 2, 0];
    let mk = |imp| {
        let mut l = check::loss(0.005, ContrastMode::All, NoPositivePolicy::CountAsZero, imp);
        l.normalize = false;
        l
    };
    let (v_ref, _) = check::value_and_grad::<Reference>(
        &values,
        [batch, views, dim],
        Some(&y),
        &mk(Implementation::Reference),
    );
    let (v, g) = check::value_and_grad::<Autodiff<Wgpu>>(
        &values,
        [batch, views, dim],
        Some(&y),
        &mk(Implementation::Fused),
    );
    assert!(v.is_finite() && g.iter().all(|x| x.is_finite()), "{v}");
    assert!(v_ref > 1e3, "the test reaches large losses: {v_ref}");
    assert!((v - v_ref).abs() <= 1e-4 * v_ref, "{v} vs {v_ref}");
}
