//! The CubeCL kernels of the fused SupCon loss, run through Burn's wgpu backend (on a machine
//! without a GPU: Mesa's lavapipe Vulkan driver on the CPU): against the plain-f64 evaluation
//! of the same inputs (the accuracy suite, 1e-5), and against the reference loss on the same
//! backend on awkward sizes and every option (values and gradients, 1e-4 in f32).
//!
//! Without a Vulkan adapter these tests skip with a message; CI installs
//! `mesa-vulkan-drivers` and sets `SCL_REQUIRE_WGPU=1`, so there they must run.

use burn::backend::ops::FloatTensorOps;
use burn::backend::{DispatchDevice, read_sync};
use burn::tensor::{Device, Tensor, TensorData};
use burn_cubecl::CubeBackend;
use rand::{Rng, SeedableRng, rngs::StdRng};
use scl_loss::fused::cube::{lse_backward_chunked, lse_chunked};
use scl_loss::fused::{Kernel, reference_lse, reference_lse_backward};
use scl_loss::{ContrastMode, Implementation, NoPositivePolicy};
use scl_train::backend::BackendKind;
use scl_train::backend::BackendRuntime;

use scl_loss::check;

#[path = "../../crates/scl-loss/tests/support/exact.rs"]
mod exact;

#[path = "../../crates/scl-loss/tests/support/accuracy.rs"]
mod accuracy;

/// The first wgpu adapter, with autodiff; `None` (and a message) when there is none; panics
/// when `SCL_REQUIRE_WGPU` is set and there is none.
fn wgpu() -> Option<Device> {
    static DEVICE: std::sync::OnceLock<Option<Device>> = std::sync::OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let device = BackendKind::Wgpu.device(0).ok().filter(|device| {
                std::panic::catch_unwind(|| Tensor::<1>::zeros([1], device).into_data()).is_ok()
            });
            if device.is_none() {
                assert!(
                    std::env::var_os("SCL_REQUIRE_WGPU").is_none(),
                    "SCL_REQUIRE_WGPU is set but wgpu found no adapter \
                     (install mesa-vulkan-drivers for lavapipe)"
                );
                eprintln!("skipped: no wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
            }
            device.map(Device::autodiff)
        })
        .clone()
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
    let device = wgpu().expect("checked by the caller");
    assert!(
        check::loss(temperature, mode, policy, Implementation::Auto).uses_fused(&device),
        "auto picks the kernel on wgpu"
    );
    assert_eq!(scl_loss::fused::kernel(&device), Some(Kernel::Cube));
    if let Err(e) =
        check::fused_vs_reference(&device, shape, labels, temperature, mode, policy, seed)
    {
        panic!("{e}");
    }
}

#[test]
fn wgpu_kernel_matches_the_reference_on_awkward_sizes() {
    if wgpu().is_none() {
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
    if wgpu().is_none() {
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
    let Some(device) = wgpu() else {
        return;
    };
    let max_n = if std::env::var_os("SCL_WGPU_ACCURACY_ALL").is_some() {
        usize::MAX
    } else {
        257
    };
    let reference = |c: &accuracy::Case| c.run(&device, Implementation::Reference);
    let fused = |c: &accuracy::Case| c.run(&device, Implementation::Auto);
    let failures = accuracy::run_suite(max_n, &[("reference", &reference), ("fused", &fused)]);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Several chunks of anchor rows (the N = 65536 layout, on a small problem): the kernels
/// without the fusion wrapper, against the reference op on the same wgpu device.
#[test]
fn wgpu_kernel_in_several_chunks_matches_the_reference_op() {
    let Some(device) = wgpu() else {
        return;
    };
    let DispatchDevice::Cube(cube) = device.clone().inner().as_dispatch().clone() else {
        panic!("a wgpu device is a CubeCL device: {device:?}");
    };
    let (n_contrast, n_anchor, d, tau) = (203usize, 150usize, 24usize, 0.07);
    let mut rng = StdRng::seed_from_u64(7);
    let z: Vec<f32> = (0..n_contrast * d)
        .map(|_| rng.random_range(-0.3f32..0.3))
        .collect();
    let g: Vec<f32> = (0..n_anchor)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let inner = device.clone().inner();
    let z_data = TensorData::new(z, [n_contrast, d]);
    let g_data = TensorData::new(g, [n_anchor]);
    let z = Tensor::<2>::from_data(z_data.clone(), &inner);
    let g = Tensor::<1>::from_data(g_data.clone(), &inner);
    let want_lse = reference_lse(z.clone(), n_anchor, tau);
    let want_grad = reference_lse_backward(z, want_lse.clone(), g, tau);
    let want_lse = want_lse.try_into_vec_as::<f64>().unwrap();
    let want_grad = want_grad.try_into_vec_as::<f64>().unwrap();
    let host = |t| {
        read_sync(CubeBackend::float_into_data(t))
            .unwrap()
            .convert::<f64>()
            .try_into_vec::<f64>()
            .unwrap()
    };
    for rows in [1usize, 7, 64, 150] {
        let z = CubeBackend::float_from_data(z_data.clone(), &cube);
        let g = CubeBackend::float_from_data(g_data.clone(), &cube);
        let lse = lse_chunked(z.clone(), n_anchor, tau, rows);
        let grad = lse_backward_chunked(z, lse.clone(), g, tau, rows);
        let lse = host(lse);
        let grad = host(grad);
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
    let Some(device) = wgpu() else {
        return;
    };
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
    let (v_ref, _) = check::value_and_grad(
        &Device::flex().autodiff(),
        &values,
        [batch, views, dim],
        Some(&y),
        &mk(Implementation::Reference),
    );
    let (v, g) = check::value_and_grad(
        &device,
        &values,
        [batch, views, dim],
        Some(&y),
        &mk(Implementation::Fused),
    );
    assert!(v.is_finite() && g.iter().all(|x| x.is_finite()), "{v}");
    assert!(v_ref > 1e3, "the test reaches large losses: {v_ref}");
    assert!((v - v_ref).abs() <= 1e-4 * v_ref, "{v} vs {v_ref}");
}
