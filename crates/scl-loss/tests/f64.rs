//! Tests in f64: hand-derived values, an independent transcription of SupContrast, finite
//! differences, and f32-vs-f64 agreement at extreme logits.
//!
//! Burn keeps one default float dtype per device, and every Flex device (autodiff or not)
//! shares it for the whole process, so this binary sets Flex's default to f64 before any
//! tensor exists. The losses here are the reference (the definition).

use burn::tensor::{Device, FloatDType};
use scl_loss::*;
use std::sync::Once;

#[path = "support/naive.rs"]
mod naive;
use naive::supcontrast_naive;
#[path = "support/exact.rs"]
mod exact;

fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut device = Device::flex();
        device
            .configure(FloatDType::F64)
            .expect("the f64 test binary sets its dtype before any tensor exists");
    });
}
use burn::tensor::{Int, Tensor, TensorData};

/// Flex without gradients.
const F64: bool = false;
/// Flex with gradients.
const AD_F64: bool = true;

fn device(autodiff: bool) -> Device {
    if autodiff {
        Device::flex().autodiff()
    } else {
        Device::flex()
    }
}

fn features(autodiff: bool, values: &[f64], shape: [usize; 3]) -> Tensor<3> {
    let t = Tensor::from_data(TensorData::new(values.to_vec(), shape), &device(autodiff));
    assert_eq!(
        t.dtype(),
        burn::tensor::DType::F64,
        "the f64 tests run in f64"
    );
    t
}

fn labels(autodiff: bool, values: &[i64]) -> Tensor<1, Int> {
    Tensor::from_data(
        TensorData::new(values.to_vec(), [values.len()]),
        &device(autodiff),
    )
}

fn scalar(t: Tensor<1>) -> f64 {
    t.try_into_vec_as::<f64>().unwrap()[0]
}

fn vector(t: Tensor<1>) -> Vec<f64> {
    t.try_into_vec_as::<f64>().unwrap()
}

fn loss_config(t: f64, base: f64, mode: ContrastMode, policy: NoPositivePolicy) -> SupConLoss {
    SupConLossConfig::new()
        .with_temperature(t)
        .with_base_temperature(base)
        .with_contrast_mode(mode)
        .with_no_positive(policy)
        .with_implementation(Implementation::Reference)
        .init()
}

/// The central finite difference of `eval` along coordinate `k` at `values`, step 1e-6 (its
/// truncation error is O(h^2) = 1e-12, well under the 1e-7 the tests allow).
fn central_difference(values: &[f64], k: usize, eval: impl Fn(&[f64]) -> f64) -> f64 {
    let h = 1e-6;
    let mut plus = values.to_vec();
    let mut minus = values.to_vec();
    plus[k] += h;
    minus[k] -= h;
    (eval(&plus) - eval(&minus)) / (2.0 * h)
}
#[test]
fn three_samples_give_the_hand_derived_value() {
    init();
    // z0 = z1 = e1, z2 = e2, labels [0, 0, 1], tau = 1. Anchors 0 and 1: one positive with
    // similarity 1, one negative with similarity 0: -log(e / (e + 1)) = log(1 + e^-1).
    // Anchor 2 has no positive.
    let f = features(F64, &[1.0, 0.0, 1.0, 0.0, 0.0, 1.0], [3, 1, 2]);
    let y = labels(F64, &[0, 0, 1]);
    let per_anchor = (1.0 + (-1.0f64).exp()).ln();

    let zero = loss_config(1.0, 1.0, ContrastMode::All, NoPositivePolicy::CountAsZero);
    let v = scalar(zero.forward(f.clone(), Some(y.clone())));
    assert!((v - 2.0 * per_anchor / 3.0).abs() < 1e-12, "{v}");
    let terms = vector(zero.forward_no_reduction(f.clone(), Some(y.clone())));
    assert!((terms[0] - per_anchor).abs() < 1e-12 && terms[2] == 0.0);

    let exclude = loss_config(1.0, 1.0, ContrastMode::All, NoPositivePolicy::Exclude);
    let v = scalar(exclude.forward(f, Some(y)));
    assert!((v - per_anchor).abs() < 1e-12, "{v}");
}

#[test]
fn temperature_and_base_temperature_enter_as_derived() {
    init();
    // Same points, tau = 0.5, base = 2: logits 2 and 0, per-anchor -log(e^2/(e^2+1)) scaled
    // by tau/base = 0.25.
    let f = features(F64, &[1.0, 0.0, 1.0, 0.0, 0.0, 1.0], [3, 1, 2]);
    let y = labels(F64, &[0, 0, 1]);
    let loss = loss_config(0.5, 2.0, ContrastMode::All, NoPositivePolicy::Exclude);
    let v = scalar(loss.forward(f, Some(y)));
    let expected = 0.25 * (1.0 + (-2.0f64).exp()).ln();
    assert!((v - expected).abs() < 1e-12, "{v} vs {expected}");
}

#[test]
fn normalisation_inside_the_loss_removes_the_feature_scale() {
    init();
    let scaled = features(F64, &[2.0, 0.0, 3.0, 0.0, 0.0, 5.0], [3, 1, 2]);
    let y = labels(F64, &[0, 0, 1]);
    let mut loss = loss_config(1.0, 1.0, ContrastMode::All, NoPositivePolicy::Exclude);
    loss.normalize = true;
    let v = scalar(loss.forward(scaled, Some(y)));
    assert!((v - (1.0 + (-1.0f64).exp()).ln()).abs() < 1e-12, "{v}");
}

#[test]
fn simclr_mode_takes_the_other_view_as_the_only_positive() {
    init();
    // Two samples, two views: sample 0 views e1, e1; sample 1 views e2, e2. View-major order
    // [s0v0, s1v0, s0v1, s1v1]. Each anchor: positive similarity 1, two negatives 0.
    // -log(e / (e + 2)) = log(1 + 2/e).
    let f = features(F64, &[1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0], [2, 2, 2]);
    let loss = loss_config(1.0, 1.0, ContrastMode::All, NoPositivePolicy::CountAsZero);
    let v = scalar(loss.forward(f, None));
    assert!((v - (1.0 + 2.0 / 1.0f64.exp()).ln()).abs() < 1e-12, "{v}");
}

#[test]
fn contrast_mode_one_uses_view_zero_as_anchors_only() {
    init();
    // Sample 0: views e1 and (e1+e2)/sqrt2; sample 1: views e2, e2. Mode one: anchors are the
    // view-0 rows s0v0 = e1 and s1v0 = e2, contrast = all four rows.
    let r = std::f64::consts::FRAC_1_SQRT_2;
    let values = [1.0, 0.0, r, r, 0.0, 1.0, 0.0, 1.0];
    let f = features(F64, &values, [2, 2, 2]);
    let loss = loss_config(1.0, 1.0, ContrastMode::One, NoPositivePolicy::CountAsZero);
    let terms = vector(loss.forward_no_reduction(f, None));
    assert_eq!(terms.len(), 2);
    // Anchor e1: contrast s1v0 = e2 (0), s0v1 (r, the positive), s1v1 = e2 (0).
    let a0 = -(r - (r.exp() + 2.0).ln());
    // Anchor e2: contrast s0v0 = e1 (0), s0v1 (r), s1v1 = e2 (1, the positive).
    let a1 = -(1.0 - (1.0 + r.exp() + 1.0f64.exp()).ln());
    assert!(
        (terms[0] - a0).abs() < 1e-12 && (terms[1] - a1).abs() < 1e-12,
        "{terms:?}"
    );
}

#[test]
fn matches_an_independent_supcontrast_transcription_for_every_option() {
    init();
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let mut rng = StdRng::seed_from_u64(7);
    for (batch, views, dim) in [(5, 1, 3), (6, 2, 4), (7, 3, 2), (2, 2, 5)] {
        for mode in [ContrastMode::All, ContrastMode::One] {
            for with_labels in [true, false] {
                let values: Vec<f64> = (0..batch * views * dim)
                    .map(|_| rng.random_range(-1.0..1.0))
                    .collect();
                let y: Vec<i64> = (0..batch).map(|_| rng.random_range(0..3)).collect();
                let (t, base) = (0.3, 0.2);
                let expected = supcontrast_naive(
                    &values,
                    [batch, views, dim],
                    with_labels.then_some(&y[..]),
                    t,
                    base,
                    mode,
                );
                let loss = loss_config(t, base, mode, NoPositivePolicy::CountAsZero);
                let got = vector(loss.forward_no_reduction(
                    features(F64, &values, [batch, views, dim]),
                    with_labels.then(|| labels(F64, &y)),
                ));
                assert_eq!(got.len(), expected.len());
                for (g, e) in got.iter().zip(&expected) {
                    assert!(
                        (g - e).abs() < 1e-10,
                        "{batch}x{views}x{dim} {mode:?} labels={with_labels}: {got:?} vs {expected:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn gradient_matches_central_finite_differences() {
    init();
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let mut rng = StdRng::seed_from_u64(11);
    let shape = [5, 2, 3];
    let values: Vec<f64> = (0..30).map(|_| rng.random_range(-1.0..1.0)).collect();
    let y = [0, 1, 0, 2, 1];
    for mode in [ContrastMode::All, ContrastMode::One] {
        for policy in [NoPositivePolicy::CountAsZero, NoPositivePolicy::Exclude] {
            let mut loss = loss_config(0.5, 0.7, mode, policy);
            loss.normalize = true;
            let f = features(AD_F64, &values, shape).require_grad();
            let out = loss.forward(f.clone(), Some(labels(AD_F64, &y)));
            let grads = out.backward();
            let analytic = f.grad(&grads).unwrap().try_into_vec_as::<f64>().unwrap();
            let eval =
                |v: &[f64]| scalar(loss.forward(features(F64, v, shape), Some(labels(F64, &y))));
            for (k, want) in analytic.iter().enumerate() {
                let numeric = central_difference(&values, k, eval);
                assert!(
                    (numeric - want).abs() < 1e-7,
                    "{mode:?} {policy:?} coordinate {k}: {numeric} vs {want}"
                );
            }
        }
    }
}

#[test]
fn the_f64_yardstick_matches_the_transcription_and_finite_differences() {
    // `support/exact.rs`, against which the f32 accuracy suite measures every implementation:
    // its value against the SupContrast transcription (on features normalised here when the
    // spec normalises), its gradient against central differences of its own value.
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let mut rng = StdRng::seed_from_u64(23);
    for (batch, views, dim) in [(6, 1, 3), (5, 2, 4), (4, 3, 2)] {
        for all_views_anchor in [true, false] {
            for normalize in [false, true] {
                for exclude in [false, true] {
                    for with_labels in [true, false] {
                        let shape = [batch, views, dim];
                        let values: Vec<f64> = (0..batch * views * dim)
                            .map(|_| rng.random_range(-1.0..1.0))
                            .collect();
                        let y: Vec<i64> = (0..batch).map(|i| [0, 1, 0, 2, 1, 3][i]).collect();
                        let y = with_labels.then_some(&y[..]);
                        let spec = exact::Spec {
                            temperature: 0.4,
                            base_temperature: 0.3,
                            all_views_anchor,
                            normalize,
                            exclude,
                        };
                        let what = format!("{shape:?} {spec:?} labels={with_labels}");
                        let (value, grad) = exact::loss_and_grad(&values, shape, y, spec);
                        let unit: Vec<f64> = if normalize {
                            values
                                .chunks(dim)
                                .flat_map(|r| {
                                    let n = r.iter().map(|v| v * v).sum::<f64>().sqrt();
                                    r.iter().map(move |v| v / n)
                                })
                                .collect()
                        } else {
                            values.clone()
                        };
                        let mode = if all_views_anchor {
                            ContrastMode::All
                        } else {
                            ContrastMode::One
                        };
                        let terms = supcontrast_naive(&unit, shape, y, 0.4, 0.3, mode);
                        // Anchors without positives give 0 in the transcription (`-0`).
                        let counted = if exclude {
                            (0..terms.len())
                                .filter(|&i| {
                                    let sample = i % batch;
                                    let class = y.map_or(sample as i64, |l| l[sample]);
                                    let same = (0..batch)
                                        .filter(|&j| y.map_or(j as i64, |l| l[j]) == class)
                                        .count();
                                    same * views > 1
                                })
                                .count()
                                .max(1)
                        } else {
                            terms.len()
                        };
                        let want = terms.iter().sum::<f64>() / counted as f64;
                        assert!((value - want).abs() < 1e-12, "{what}: {value} vs {want}");
                        for (k, want) in grad.iter().enumerate() {
                            let numeric = central_difference(&values, k, |v| {
                                exact::loss_and_grad(v, shape, y, spec).0
                            });
                            assert!(
                                (numeric - want).abs() < 1e-7,
                                "{what} coordinate {k}: {numeric} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
