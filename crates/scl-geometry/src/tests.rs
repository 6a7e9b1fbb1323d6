use super::*;
use proptest::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

/// `per_class` copies of each column of `means` (`d x K`), plus optional noise.
fn samples_from_means(
    means: &DMatrix<f64>,
    per_class: usize,
    noise: f64,
    seed: u64,
) -> (Embeddings, Vec<usize>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (d, k) = means.shape();
    let mut data = Vec::new();
    let mut labels = Vec::new();
    for c in 0..k {
        for _ in 0..per_class {
            for r in 0..d {
                let e: f64 = rng.sample(StandardNormal);
                data.push(means[(r, c)] + noise * e);
            }
            labels.push(c);
        }
    }
    (Embeddings::new(k * per_class, d, data).unwrap(), labels)
}

/// Vertices of a simplex ETF in `R^K`: the centred standard basis.
fn simplex_etf_means(k: usize) -> DMatrix<f64> {
    simplex_etf_gram(k)
}

fn random_orthogonal(d: usize, seed: u64) -> DMatrix<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let a = DMatrix::<f64>::from_fn(d, d, |_, _| rng.sample(StandardNormal));
    a.qr().q()
}

#[test]
fn an_exact_orthogonal_frame_has_zero_of_distance() {
    let means = DMatrix::<f64>::identity(6, 4) * 2.5;
    let (x, y) = samples_from_means(&means, 3, 0.0, 0);
    let g = geometry(&x, &y, 4).unwrap();
    assert!(g.of_distance < 1e-12, "{g:?}");
    assert!(g.mean_cosine.abs() < 1e-12);
    assert!((g.norm_ratio - 1.0).abs() < 1e-12);
    assert!(
        g.nc1 < 1e-20,
        "collapsed classes have no within-class spread"
    );
    // App. D.1.2 of the paper: a centred OF is a simplex ETF.
    assert!(g.etf_distance < 1e-12, "{g:?}");
}

#[test]
fn a_simplex_etf_with_ten_classes_is_0_32_from_the_orthogonal_frame() {
    // Closed form: with A = (I - 11^T/K)/sqrt(K-1) and B = I/sqrt(K), both of unit Frobenius
    // norm, ||A - B||^2 = 2 - 2 <A, B> = 2 - 2 (K-1)/sqrt((K-1) K) = 2 - 2 sqrt((K-1)/K).
    let k = 10;
    let expected = (2.0 - 2.0 * ((k as f64 - 1.0) / k as f64).sqrt()).sqrt();
    assert!((expected - 0.32036).abs() < 1e-5);
    let (x, y) = samples_from_means(&simplex_etf_means(k), 2, 0.0, 0);
    let g = geometry(&x, &y, k).unwrap();
    assert!((g.of_distance - expected).abs() < 1e-12, "{g:?}");
    assert!(g.etf_distance < 1e-12);
    // Cosine between simplex vertices: -1/(K-1).
    assert!((g.mean_cosine + 1.0 / (k as f64 - 1.0)).abs() < 1e-12);
}

#[test]
fn identical_class_means_are_far_from_both_targets() {
    // All means equal: G = c 11^T, so ||11^T/K - I/sqrt(K)||_F = sqrt(2 - 2/sqrt(K)).
    let k = 10;
    let means = DMatrix::<f64>::from_element(3, k, 0.7);
    let (x, y) = samples_from_means(&means, 2, 0.0, 0);
    let g = geometry(&x, &y, k).unwrap();
    let expected = (2.0 - 2.0 / (k as f64).sqrt()).sqrt();
    assert!((g.of_distance - expected).abs() < 1e-12, "{g:?}");
    assert!((g.mean_cosine - 1.0).abs() < 1e-12);
}

#[test]
fn nc1_matches_a_hand_computation() {
    // Means (1, 0) and (-1, 0); deviations +-a along x. mu_G = 0, S_B = diag(1, 0),
    // S_W = diag(a^2, 0), so Tr(S_W S_B^+) = a^2.
    let a = 0.5;
    let data = vec![1.0 + a, 0.0, 1.0 - a, 0.0, -1.0 + a, 0.0, -1.0 - a, 0.0];
    let x = Embeddings::new(4, 2, data).unwrap();
    let g = geometry(&x, &[0, 0, 1, 1], 2).unwrap();
    assert!((g.nc1 - a * a).abs() < 1e-12, "{g:?}");
    // Deviations orthogonal to every between-class direction do not count (pseudo-inverse).
    let data = vec![1.0, a, 1.0, -a, -1.0, a, -1.0, -a];
    let x = Embeddings::new(4, 2, data).unwrap();
    let g = geometry(&x, &[0, 0, 1, 1], 2).unwrap();
    assert!(g.nc1.abs() < 1e-12, "{g:?}");
}

#[test]
fn norm_ratio_and_group_metrics_use_only_their_classes() {
    // Classes 0, 1 majority on orthogonal axes with norms 1 and 3; classes 2, 3 minority,
    // both on the same direction.
    let means = DMatrix::<f64>::from_column_slice(
        3,
        4,
        &[1.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 2.0],
    );
    let (x, y) = samples_from_means(&means, 2, 0.0, 0);
    let s = geometry_summary(&x, &y, 4, &[2, 3]).unwrap();
    let major = s.majority.unwrap();
    let minor = s.minority.unwrap();
    assert!((major.norm_ratio - 3.0).abs() < 1e-12);
    assert!(major.mean_cosine.abs() < 1e-12);
    assert!((minor.mean_cosine - 1.0).abs() < 1e-12);
    assert!((s.overall.norm_ratio - 3.0).abs() < 1e-12);
    // One minority class only: no minority group metrics.
    let s = geometry_summary(&x, &y, 4, &[3]).unwrap();
    assert!(s.minority.is_none());
    assert_eq!(s.majority.unwrap().num_classes, 3);
}

#[test]
fn bad_labels_are_reported_not_panicked_on() {
    let x = Embeddings::new(2, 2, vec![1.0, 0.0, 0.0, 1.0]).unwrap();
    assert_eq!(
        geometry(&x, &[0, 3], 2),
        Err(GeometryError::LabelOutOfRange {
            label: 3,
            row: 1,
            num_classes: 2
        })
    );
    assert_eq!(geometry(&x, &[0, 0], 2), Err(GeometryError::EmptyClass(1)));
    assert_eq!(
        geometry(&x, &[0], 2),
        Err(GeometryError::LabelCount { labels: 1, rows: 2 })
    );
    assert!(matches!(
        Embeddings::new(2, 2, vec![1.0; 3]),
        Err(GeometryError::BufferSize { .. })
    ));
    assert_eq!(
        Embeddings::new(1, 2, vec![1.0, f64::NAN]),
        Err(GeometryError::NonFinite { row: 0, col: 1 })
    );
}

#[test]
fn embeddings_read_a_burn_tensor() {
    let device = burn::tensor::Device::flex();
    let t = Tensor::<2>::from_floats([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], &device);
    let x = Embeddings::from_tensor(t).unwrap();
    assert_eq!((x.rows(), x.dim()), (3, 2));
    assert_eq!(x.row(2), &[5.0, 6.0]);
}

fn all_metrics(s: &GeometrySummary) -> Vec<f64> {
    let mut v = Vec::new();
    for r in [Some(s.overall), s.majority, s.minority]
        .into_iter()
        .flatten()
    {
        v.extend([
            r.of_distance,
            r.etf_distance,
            r.nc1,
            r.mean_cosine,
            r.norm_ratio,
        ]);
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_metric_is_invariant_to_rotation_and_global_scale(
        seed in 0u64..10_000,
        k in 4usize..8,
        extra_dim in 0usize..4,
        scale in 0.01f64..100.0,
    ) {
        let d = k + extra_dim;
        let mut rng = StdRng::seed_from_u64(seed);
        let means = DMatrix::<f64>::from_fn(d, k, |_, _| rng.random::<f64>());
        let (x, y) = samples_from_means(&means, 3, 0.2, seed);
        let minority: Vec<usize> = (k / 2..k).collect();
        let before = geometry_summary(&x, &y, k, &minority).unwrap();

        let q = random_orthogonal(d, seed ^ 0xABCD);
        let mut rotated = x.clone();
        rotated.map_rows(|row| {
            let v = &q * nalgebra::DVector::from_column_slice(row) * scale;
            row.copy_from_slice(v.as_slice());
        });
        let after = geometry_summary(&rotated, &y, k, &minority).unwrap();
        for (a, b) in all_metrics(&before).into_iter().zip(all_metrics(&after)) {
            prop_assert!((a - b).abs() <= 1e-8 * (1.0 + a.abs()), "{a} vs {b}");
        }
    }
}

#[test]
fn nc1_matches_an_explicit_pseudo_inverse() {
    // Independent computation: S_W and S_B as d x d matrices, S_B^+ by nalgebra's
    // SVD-based pseudo-inverse. This input (8-dimensional, 3 classes) once exposed a
    // four-digit error of nalgebra's thin SVD in an earlier NC1.
    let (seed, k, d) = (1033u64, 5usize, 8usize);
    let mut rng = StdRng::seed_from_u64(seed);
    let means = DMatrix::<f64>::from_fn(d, k, |_, _| rng.random::<f64>());
    let (x, y) = samples_from_means(&means, 3, 0.2, seed);
    for classes in [vec![2usize, 3, 4], vec![0, 1, 2, 3, 4]] {
        let m = class_means(&x, &y, &classes).unwrap();
        let c = centred_means(&m.means);
        let sb = &c * c.transpose() / classes.len() as f64;
        let mut sw = DMatrix::<f64>::zeros(d, d);
        let mut n = 0;
        for (i, &label) in y.iter().enumerate() {
            if let Some(j) = classes.iter().position(|&c| c == label) {
                let dev = nalgebra::DVector::from_column_slice(x.row(i)) - m.means.column(j);
                sw += &dev * dev.transpose();
                n += 1;
            }
        }
        sw /= n as f64;
        let pinv = sb.clone().pseudo_inverse(1e-10 * sb.norm()).unwrap();
        let expected = (sw * pinv).trace();
        let got = nc1(&x, &y, &m);
        assert!(
            (got - expected).abs() < 1e-9 * expected,
            "{got} vs {expected}"
        );
    }
}

mod linear_probe {
    use super::*;
    use crate::probe::{ProbeConfig, linear_probe};

    /// `n` Gaussian samples per class around `K` means `spread` apart on the axes of `R^d`.
    fn blobs(k: usize, d: usize, n: usize, spread: f64, seed: u64) -> (Embeddings, Vec<usize>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut data = Vec::new();
        let mut labels = Vec::new();
        for c in 0..k {
            for _ in 0..n {
                for j in 0..d {
                    let noise: f64 = rng.sample(StandardNormal);
                    data.push(noise + if j == c { spread } else { 0.0 });
                }
                labels.push(c);
            }
        }
        (Embeddings::new(k * n, d, data).unwrap(), labels)
    }

    /// The probe's objective, minimised by plain gradient descent with a small fixed step for
    /// many iterations, written out without matrices: an independent reference.
    fn reference_minimum(x: &Embeddings, labels: &[usize], k: usize, wd: f64) -> f64 {
        let (n, d) = (x.rows(), x.dim());
        let mean: Vec<f64> = (0..d)
            .map(|j| (0..n).map(|i| x.row(i)[j]).sum::<f64>() / n as f64)
            .collect();
        let sd: Vec<f64> = (0..d)
            .map(|j| {
                ((0..n).map(|i| (x.row(i)[j] - mean[j]).powi(2)).sum::<f64>() / n as f64).sqrt()
            })
            .collect();
        let z: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                let mut r: Vec<f64> = (0..d).map(|j| (x.row(i)[j] - mean[j]) / sd[j]).collect();
                r.push(1.0);
                r
            })
            .collect();
        let mut w = vec![vec![0.0; k]; d + 1];
        let objective = |w: &Vec<Vec<f64>>, grad: Option<&mut Vec<Vec<f64>>>| -> f64 {
            let mut loss = 0.0;
            let mut g = vec![vec![0.0; k]; d + 1];
            for (row, &y) in z.iter().zip(labels) {
                let logits: Vec<f64> = (0..k)
                    .map(|c| (0..=d).map(|j| row[j] * w[j][c]).sum())
                    .collect();
                let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = logits.iter().map(|l| (l - max).exp()).sum();
                loss += -(logits[y] - max - sum.ln());
                for c in 0..k {
                    let p = (logits[c] - max).exp() / sum - f64::from(u8::from(c == y));
                    for j in 0..=d {
                        g[j][c] += row[j] * p / n as f64;
                    }
                }
            }
            loss /= n as f64;
            for j in 0..d {
                for c in 0..k {
                    loss += 0.5 * wd * w[j][c] * w[j][c];
                    g[j][c] += wd * w[j][c];
                }
            }
            if let Some(out) = grad {
                *out = g;
            }
            loss
        };
        let mut g = Vec::new();
        for _ in 0..20_000 {
            objective(&w, Some(&mut g));
            for j in 0..=d {
                for c in 0..k {
                    w[j][c] -= 0.2 * g[j][c];
                }
            }
        }
        objective(&w, None)
    }

    #[test]
    fn the_probe_reaches_the_minimum_of_its_objective() {
        // Overlapping classes (spread 1.5 standard deviations), so the minimum is interior.
        let (x, y) = blobs(4, 8, 30, 1.5, 7);
        let wd = 1e-3;
        let cfg = ProbeConfig {
            iterations: 300,
            weight_decay: wd,
        };
        let r = linear_probe(&x, &y, &x, &y, 4, &cfg).unwrap();
        let best = reference_minimum(&x, &y, 4, wd);
        assert!(
            // 300 iterations reach it to 1e-15 here; 20 stop 4e-5 short.
            (r.train_loss - best).abs() < 1e-9,
            "probe {} vs gradient descent {best}",
            r.train_loss
        );
        assert!(r.train_accuracy > 0.6 && r.train_accuracy < 1.0);
    }

    #[test]
    fn separated_classes_are_classified_and_scaling_changes_nothing() {
        let (train, y_train) = blobs(4, 6, 50, 4.0, 1);
        let (test, y_test) = blobs(4, 6, 50, 4.0, 2);
        let cfg = ProbeConfig::default();
        let r = linear_probe(&train, &y_train, &test, &y_test, 4, &cfg).unwrap();
        assert!(r.accuracy > 0.95, "{r:?}");
        assert_eq!(r.per_class_accuracy.len(), 4);
        // Standardisation: an affine change of each coordinate gives the same classifier.
        let affine = |e: &Embeddings| {
            let mut e = e.clone();
            e.map_rows(|row| {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = *v * (j as f64 + 0.5) * 100.0 - 3.0 * j as f64;
                }
            });
            e
        };
        let s = linear_probe(&affine(&train), &y_train, &affine(&test), &y_test, 4, &cfg).unwrap();
        assert_eq!(s.accuracy, r.accuracy);
        assert!((s.train_loss - r.train_loss).abs() < 1e-9);
        // Deterministic.
        assert_eq!(
            linear_probe(&train, &y_train, &test, &y_test, 4, &cfg).unwrap(),
            r
        );
    }

    #[test]
    fn balanced_accuracy_sees_a_minority_class_the_overall_accuracy_hides() {
        // 200 majority examples against 4 minority ones, overlapping: the minority is
        // misclassified more often than the majority.
        let (maj, _) = blobs(1, 2, 200, 0.0, 3);
        let (min, _) = blobs(1, 2, 4, 0.0, 4);
        let mut data: Vec<f64> = (0..200).flat_map(|i| maj.row(i).to_vec()).collect();
        data.extend((0..4).flat_map(|i| min.row(i).iter().map(|v| v + 1.0).collect::<Vec<_>>()));
        let x = Embeddings::new(204, 2, data).unwrap();
        let y: Vec<usize> = (0..204).map(|i| usize::from(i >= 200)).collect();
        let r = linear_probe(&x, &y, &x, &y, 2, &ProbeConfig::default()).unwrap();
        let expected = (r.per_class_accuracy[0] + r.per_class_accuracy[1]) / 2.0;
        assert_eq!(r.balanced_accuracy, expected);
        assert!(r.balanced_accuracy < r.accuracy, "{r:?}");
    }

    #[test]
    fn wrong_inputs_are_errors_not_panics() {
        let (x, y) = blobs(2, 3, 5, 2.0, 0);
        let cfg = ProbeConfig::default();
        let narrow = Embeddings::new(1, 2, vec![0.0, 1.0]).unwrap();
        assert_eq!(
            linear_probe(&x, &y, &narrow, &[0], 2, &cfg),
            Err(GeometryError::DimensionMismatch { train: 3, test: 2 })
        );
        assert!(matches!(
            linear_probe(&x, &y, &x, &y, 1, &cfg),
            Err(GeometryError::TooFewClasses(1))
        ));
        assert!(matches!(
            linear_probe(&x, &y[1..], &x, &y, 2, &cfg),
            Err(GeometryError::LabelCount { .. })
        ));
        let mut bad = y.clone();
        bad[3] = 5;
        assert!(matches!(
            linear_probe(&x, &y, &x, &bad, 2, &cfg),
            Err(GeometryError::LabelOutOfRange {
                label: 5,
                row: 3,
                ..
            })
        ));
    }
}
