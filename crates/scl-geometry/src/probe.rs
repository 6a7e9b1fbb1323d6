//! Linear probe: a multinomial logistic regression trained on frozen embeddings, the usual
//! second measure of representation quality next to nearest-class-mean accuracy.
//!
//! The features are standardised with the training set's per-dimension mean and standard
//! deviation, a bias column is appended, and the softmax cross-entropy plus
//! `weight_decay / 2 * ||W||^2` (bias not penalised) is minimised by accelerated gradient
//! descent (FISTA with backtracking on the step size and a restart whenever the loss rises)
//! for a fixed number of iterations from zero weights. Everything is deterministic: the same
//! inputs give the same report bit for bit. The matrix products go through `nalgebra`
//! (`matrixmultiply`'s kernels), so a probe on 50 000 x 512 embeddings with 10 classes takes
//! seconds to a minute on one core.
//!
//! # Example
//!
//! ```
//! use scl_geometry::Embeddings;
//! use scl_geometry::probe::{ProbeConfig, linear_probe};
//!
//! // Two classes separated along the first axis.
//! let train = Embeddings::new(4, 2, vec![1.0, 0.3, 2.0, -0.2, -1.0, 0.1, -2.0, 0.4]).unwrap();
//! let test = Embeddings::new(2, 2, vec![1.5, 0.0, -1.5, 0.0]).unwrap();
//! let r = linear_probe(&train, &[0, 0, 1, 1], &test, &[0, 1], 2, &ProbeConfig::default()).unwrap();
//! assert_eq!(r.accuracy, 1.0);
//! ```

use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

use crate::{Embeddings, GeometryError};

/// How the probe is trained.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProbeConfig {
    /// Accelerated gradient iterations (300 by default).
    pub iterations: usize,
    /// L2 penalty on the weights, not on the bias (1e-4 by default).
    pub weight_decay: f64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            iterations: 300,
            weight_decay: 1e-4,
        }
    }
}

/// What a probe measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Accuracy on the test embeddings.
    pub accuracy: f64,
    /// Mean of the per-class test accuracies over the classes present in the test set.
    pub balanced_accuracy: f64,
    /// Test accuracy of each class (NaN for a class without test examples).
    pub per_class_accuracy: Vec<f64>,
    /// Accuracy on the training embeddings.
    pub train_accuracy: f64,
    /// Final training objective (mean cross-entropy plus the penalty).
    pub train_loss: f64,
}

fn check_labels(x: &Embeddings, labels: &[usize], k: usize) -> Result<(), GeometryError> {
    if labels.len() != x.rows() {
        return Err(GeometryError::LabelCount {
            labels: labels.len(),
            rows: x.rows(),
        });
    }
    if let Some((row, &label)) = labels.iter().enumerate().find(|(_, l)| **l >= k) {
        return Err(GeometryError::LabelOutOfRange {
            label,
            row,
            num_classes: k,
        });
    }
    Ok(())
}

/// The standardised design matrix `[n, d + 1]` (last column 1).
fn design(x: &Embeddings, mean: &[f64], scale: &[f64]) -> DMatrix<f64> {
    let d = x.dim();
    DMatrix::from_fn(x.rows(), d + 1, |i, j| {
        if j == d {
            1.0
        } else {
            (x.row(i)[j] - mean[j]) / scale[j]
        }
    })
}

/// Row-wise softmax of `logits` in place; returns the mean cross-entropy of `labels`.
fn softmax_loss(logits: &mut DMatrix<f64>, labels: &[usize]) -> f64 {
    let (n, k) = logits.shape();
    let mut loss = 0.0;
    for i in 0..n {
        let max = (0..k)
            .map(|c| logits[(i, c)])
            .fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        for c in 0..k {
            let e = (logits[(i, c)] - max).exp();
            logits[(i, c)] = e;
            sum += e;
        }
        for c in 0..k {
            logits[(i, c)] /= sum;
        }
        loss -= logits[(i, labels[i])].max(f64::MIN_POSITIVE).ln();
    }
    loss / n as f64
}

struct Objective<'a> {
    x: &'a DMatrix<f64>,
    labels: &'a [usize],
    weight_decay: f64,
}

impl Objective<'_> {
    fn penalty(&self, w: &DMatrix<f64>) -> f64 {
        let d = w.nrows() - 1;
        0.5 * self.weight_decay * w.rows(0, d).norm_squared()
    }

    fn value(&self, w: &DMatrix<f64>) -> f64 {
        let mut p = self.x * w;
        softmax_loss(&mut p, self.labels) + self.penalty(w)
    }

    fn value_and_gradient(&self, w: &DMatrix<f64>) -> (f64, DMatrix<f64>) {
        let n = self.x.nrows();
        let mut p = self.x * w;
        let loss = softmax_loss(&mut p, self.labels) + self.penalty(w);
        for (i, &y) in self.labels.iter().enumerate() {
            p[(i, y)] -= 1.0;
        }
        let mut g = self.x.tr_mul(&p) / n as f64;
        let d = w.nrows() - 1;
        g.rows_mut(0, d)
            .zip_apply(&w.rows(0, d), |gi, wi| *gi += self.weight_decay * wi);
        (loss, g)
    }
}

/// Predictions of `x` (design matrix) under `w`, as accuracies against `labels`:
/// (overall, balanced, per class).
fn accuracies(
    x: &DMatrix<f64>,
    w: &DMatrix<f64>,
    labels: &[usize],
    k: usize,
) -> (f64, f64, Vec<f64>) {
    let logits = x * w;
    let predicted = (0..labels.len()).map(|i| {
        (0..k)
            .max_by(|&a, &b| logits[(i, a)].total_cmp(&logits[(i, b)]))
            .unwrap_or(0)
    });
    crate::accuracies(labels, predicted, k)
}

/// Trains a linear classifier on `train` and measures it on `test`.
///
/// # Errors
/// [`GeometryError::LabelCount`] or [`GeometryError::LabelOutOfRange`] for labels that do not
/// fit their embeddings, [`GeometryError::DimensionMismatch`] when the two sets have different
/// dimensions, [`GeometryError::TooFewClasses`] for fewer than two classes, and
/// [`GeometryError::EmptyClass`] (class 0) when the training set is empty.
pub fn linear_probe(
    train: &Embeddings,
    train_labels: &[usize],
    test: &Embeddings,
    test_labels: &[usize],
    num_classes: usize,
    cfg: &ProbeConfig,
) -> Result<ProbeReport, GeometryError> {
    if num_classes < 2 {
        return Err(GeometryError::TooFewClasses(num_classes));
    }
    check_labels(train, train_labels, num_classes)?;
    check_labels(test, test_labels, num_classes)?;
    if train.dim() != test.dim() {
        return Err(GeometryError::DimensionMismatch {
            train: train.dim(),
            test: test.dim(),
        });
    }
    let (n, d, k) = (train.rows(), train.dim(), num_classes);
    if n == 0 {
        return Err(GeometryError::EmptyClass(0));
    }
    let mut mean = vec![0.0; d];
    for i in 0..n {
        for (m, v) in mean.iter_mut().zip(train.row(i)) {
            *m += v / n as f64;
        }
    }
    let mut scale = vec![0.0; d];
    for i in 0..n {
        for ((s, v), m) in scale.iter_mut().zip(train.row(i)).zip(&mean) {
            *s += (v - m).powi(2) / n as f64;
        }
    }
    for s in &mut scale {
        *s = if *s > 1e-24 { s.sqrt() } else { 1.0 };
    }
    let x = design(train, &mean, &scale);
    let objective = Objective {
        x: &x,
        labels: train_labels,
        weight_decay: cfg.weight_decay,
    };

    // FISTA with backtracking and adaptive restart. The softmax Hessian is at most
    // (1/2) X^T X / n + weight_decay; its trace bounds the curvature, and the
    // backtracking only ever raises the estimate, so starting at a tenth of it is safe.
    let trace = x.norm_squared() / n as f64;
    let mut lipschitz = (0.05 * trace + cfg.weight_decay).max(1e-12);
    let mut w = DMatrix::<f64>::zeros(d + 1, k);
    let mut y = w.clone();
    let mut t = 1.0f64;
    let mut previous = f64::INFINITY;
    for _ in 0..cfg.iterations {
        let (f_y, g_y) = objective.value_and_gradient(&y);
        let (w_next, f_next) = loop {
            let candidate = &y - &g_y * (1.0 / lipschitz);
            let step = &candidate - &y;
            let f = objective.value(&candidate);
            let bound = f_y + g_y.dot(&step) + 0.5 * lipschitz * step.norm_squared();
            if f <= bound + 1e-12 * f_y.abs() || lipschitz > 1e12 {
                break (candidate, f);
            }
            lipschitz *= 2.0;
        };
        if f_next > previous {
            // The momentum overshot: restart from the last iterate.
            t = 1.0;
            y = w.clone();
            continue;
        }
        let t_next = 0.5 * (1.0 + (1.0 + 4.0 * t * t).sqrt());
        y = &w_next + (&w_next - &w) * ((t - 1.0) / t_next);
        w = w_next;
        t = t_next;
        previous = f_next;
    }
    let train_loss = objective.value(&w);
    let (train_accuracy, _, _) = accuracies(&x, &w, train_labels, k);
    let (accuracy, balanced_accuracy, per_class_accuracy) =
        accuracies(&design(test, &mean, &scale), &w, test_labels, k);
    Ok(ProbeReport {
        accuracy,
        balanced_accuracy,
        per_class_accuracy,
        train_accuracy,
        train_loss,
    })
}
