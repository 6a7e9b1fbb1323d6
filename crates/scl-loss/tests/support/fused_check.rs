//! Fused vs reference on one Burn backend, through the public API: the check of the wgpu
//! tests (`tests/e2e/fused_wgpu.rs`) and of the GPU bundle (`xtask/src/gpu/fused.rs`).
//! Include it beside `parity.rs` (as the sibling module `parity`), which holds the comparison.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng, rngs::StdRng};
use scl_loss::{
    ContrastMode, Implementation, NoPositivePolicy, SupConBackend, SupConLoss, SupConLossConfig,
};

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

/// Loss value and feature gradient on backend `B` (its default device).
pub fn value_and_grad<B: AutodiffBackend + SupConBackend>(
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

/// `len` features uniform in [-1, 1) from `seed`.
pub fn random_features(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// The fused loss against the reference on the same backend `B`, for random features of
/// `shape` from `seed`: the deviations of [`super::parity::compare`], or its sentence.
pub fn fused_vs_reference<B: AutodiffBackend + SupConBackend>(
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
    let want = value_and_grad::<B>(&values, shape, labels, &reference);
    let got = value_and_grad::<B>(&values, shape, labels, &fused);
    let what = format!(
        "{shape:?} tau={temperature} {mode:?} {policy:?} labels={}",
        labels.is_some()
    );
    let n_anchor = match mode {
        ContrastMode::All => shape[0] * shape[1],
        ContrastMode::One => shape[0],
    };
    super::parity::compare(
        &what,
        (got.0, &got.1),
        (want.0, &want.1),
        reference.base_temperature,
        n_anchor,
    )
}
