//! The whole fused loss on the host, for the CPU backend (Flex): the features read in place,
//! the `[Na]` per-anchor losses out, and in the backward one gradient tensor out.
//!
//! [`super::supcon_fused`] on a GPU backend composes the loss from about twenty tensor
//! operations around [`super::SupConBackend::supcon_lse`] (the normalisation, the view-major
//! copy, the class sums, the gather of the positive term, and the backward of each). On a CPU
//! backend each of them is a pass over `N x d` values with its own buffer and autodiff node,
//! and together they cost a fifth of the kernel's time at `N = 8192`. Here they are row loops
//! over host slices, next to the kernel, with one autodiff node for the whole loss.
//!
//! Accuracy: norms, class sums, the positive term and every backward combination are
//! accumulated in `f64` per row (they are `O(N d)`, so this costs nothing measurable), and the
//! results are rounded to `f32` once. The normalisation's backward is `(dz - z (z . dz)) / |x|`
//! with `z . dz` in `f64`: the radial part of `dz` cancels there, and in `f32` that
//! difference is where the gradient's relative error would come from.

#[cfg(feature = "flex")]
use std::sync::Arc;

#[cfg(feature = "flex")]
use burn::backend::flex::FlexTensor;
#[cfg(feature = "flex")]
use rayon::prelude::*;

#[cfg(feature = "flex")]
use super::{cpu, flex_tensor, with_f32};

/// Rows whose norm is below this are divided by it instead (as
/// `torch.nn.functional.normalize` and [`crate::l2_normalize`] do); the clamped norm is a
/// constant, so such a row's gradient is `dz / NORM_FLOOR`.
#[cfg(feature = "flex")]
const NORM_FLOOR: f64 = 1e-12;

/// What the per-anchor SupCon terms need besides the features.
#[derive(Debug, Clone, PartialEq)]
pub struct TermsProblem {
    /// Samples in the batch.
    pub batch: usize,
    /// Views per sample.
    pub views: usize,
    /// Feature dimension.
    pub dim: usize,
    /// Anchors: the first `n_anchor` contrast rows (view-major), `batch * views` or `batch`.
    pub n_anchor: usize,
    /// The class of every sample, dense in `0..num_classes`, `[batch]`.
    pub classes: Vec<usize>,
    /// Number of classes.
    pub num_classes: usize,
    /// L2-normalise every feature row first.
    pub normalize: bool,
    /// Softmax temperature `tau`.
    pub temperature: f64,
    /// The loss's factor, `temperature / base_temperature`.
    pub scale: f64,
}

impl TermsProblem {
    #[cfg(feature = "flex")]
    fn n_contrast(&self) -> usize {
        self.batch * self.views
    }

    /// The class of contrast row `r` (view-major: row `v * batch + i` is view `v` of sample
    /// `i`).
    fn class_of_row(&self, r: usize) -> usize {
        self.classes[r % self.batch]
    }

    /// Per class, the number of contrast rows.
    fn counts(&self) -> Vec<usize> {
        let mut count = vec![0usize; self.num_classes];
        self.classes.iter().for_each(|&c| count[c] += self.views);
        count
    }

    /// Per anchor: `(1 if it has a positive else 0, 1 / (tau P_i) or 0)`.
    pub fn anchor_weights(&self) -> (Vec<f32>, Vec<f64>) {
        let count = self.counts();
        (0..self.n_anchor)
            .map(|i| {
                let positives = count[self.class_of_row(i)] - 1;
                if positives > 0 {
                    (1.0, 1.0 / (self.temperature * positives as f64))
                } else {
                    (0.0, 0.0)
                }
            })
            .unzip()
    }
}

/// What the forward keeps for the backward: the view-major (normalised) contrast rows, their
/// norms, the class sums and the log-sum-exps. `O(N d)`; shared, never copied.
#[cfg(feature = "flex")]
#[derive(Debug, Clone)]
pub struct HostTerms {
    problem: Arc<TermsProblem>,
    /// `[n_contrast, dim]`, view-major, normalised when the problem says so.
    z: Arc<Vec<f32>>,
    /// The (clamped) norm of every contrast row; empty without normalisation.
    norms: Arc<Vec<f64>>,
    /// `[num_classes, dim]`: the sum of the contrast rows of every class.
    class_sums: Arc<Vec<f64>>,
    /// `[n_anchor]`.
    lse: Arc<Vec<f32>>,
}

/// The per-anchor losses `[n_anchor]` of `features` (`[batch, views, dim]`, `f32` values) and
/// what the backward needs.
///
/// `loss_i = scale * (has_i LSE_i - z_i . (S_{y_i} - z_i) / (tau P_i))`, as in
/// [`super::supcon_fused`].
///
/// # Panics
/// When `features` does not have `batch * views * dim` values, or `batch * views < 2`.
#[cfg(feature = "flex")]
pub fn forward(features: &FlexTensor, problem: &TermsProblem) -> (FlexTensor, HostTerms) {
    with_f32(features, |x| forward_values(x, problem))
}

#[cfg(feature = "flex")]
fn forward_values(x: &[f32], problem: &TermsProblem) -> (FlexTensor, HostTerms) {
    let (b, v, d) = (problem.batch, problem.views, problem.dim);
    let n = problem.n_contrast();
    assert_eq!(x.len(), n * d, "SupCon terms: features of the wrong size");
    assert!(n >= 2, "SupCon terms: fewer than two contrast rows");

    // View-major rows, normalised: one pass over the features.
    let mut z = vec![0.0f32; n * d];
    let mut norms = vec![0.0f64; if problem.normalize { n } else { 0 }];
    let rows = z.par_chunks_mut(d.max(1)).enumerate();
    if problem.normalize {
        rows.zip(norms.par_iter_mut()).for_each(|((r, row), norm)| {
            let (view, sample) = (r / b, r % b);
            let src = &x[(sample * v + view) * d..][..d];
            let length = src
                .iter()
                .map(|&t| f64::from(t) * f64::from(t))
                .sum::<f64>()
                .sqrt()
                .max(NORM_FLOOR);
            row.iter_mut()
                .zip(src)
                .for_each(|(o, &t)| *o = (f64::from(t) / length) as f32);
            *norm = length;
        });
    } else {
        rows.for_each(|(r, row)| {
            let (view, sample) = (r / b, r % b);
            row.copy_from_slice(&x[(sample * v + view) * d..][..d]);
        });
    }

    let kernel = cpu::Problem {
        z: &z,
        n_contrast: n,
        n_anchor: problem.n_anchor,
        dim: d,
        temperature: problem.temperature as f32,
    };
    let lse = cpu::lse(&kernel);

    let mut class_sums = vec![0.0f64; problem.num_classes * d];
    for (r, row) in z.chunks_exact(d.max(1)).enumerate().take(n) {
        let sum = &mut class_sums[problem.class_of_row(r) * d..][..d];
        sum.iter_mut()
            .zip(row)
            .for_each(|(s, &t)| *s += f64::from(t));
    }

    let (has, weight) = problem.anchor_weights();
    let loss: Vec<f32> = (0..problem.n_anchor)
        .into_par_iter()
        .map(|i| {
            let row = &z[i * d..][..d];
            let sum = &class_sums[problem.class_of_row(i) * d..][..d];
            // z_i . (S - z_i), the similarities to the other rows of the class.
            let positive: f64 = row
                .iter()
                .zip(sum)
                .map(|(&t, &s)| f64::from(t) * (s - f64::from(t)))
                .sum();
            let log_sum = if has[i] > 0.0 { f64::from(lse[i]) } else { 0.0 };
            (problem.scale * (log_sum - positive * weight[i])) as f32
        })
        .collect();

    let out = flex_tensor(loss, [problem.n_anchor]);
    let state = HostTerms {
        problem: Arc::new(problem.clone()),
        z: Arc::new(z),
        norms: Arc::new(norms),
        class_sums: Arc::new(class_sums),
        lse: Arc::new(lse),
    };
    (out, state)
}

/// The gradient with respect to the features (`[batch, views, dim]`) of
/// `sum_i grad_i loss_i`, from what [`forward`] kept.
///
/// With `c_i = -scale g_i / (tau P_i)` (0 without positives) and `A_c = sum of c_i z_i over
/// the anchors of class c`, the positive term's gradient on contrast row `j` is
/// `[j anchor] c_j (S_{y_j} - 2 z_j) + A_{y_j}`; the log-sum-exp's comes from the kernel with
/// upstream `scale has_i g_i`; the normalisation's backward maps the sum to the raw rows.
#[cfg(feature = "flex")]
pub fn backward(state: &HostTerms, grad: &FlexTensor) -> FlexTensor {
    with_f32(grad, |g| backward_values(state, g))
}

#[cfg(feature = "flex")]
fn backward_values(state: &HostTerms, g: &[f32]) -> FlexTensor {
    let p = &*state.problem;
    let (b, v, d) = (p.batch, p.views, p.dim);
    let n = p.n_contrast();
    let (has, weight) = p.anchor_weights();
    assert_eq!(g.len(), p.n_anchor, "SupCon terms: one gradient per anchor");

    let upstream: Vec<f32> = g
        .iter()
        .zip(&has)
        .map(|(&g, &h)| (p.scale * f64::from(g) * f64::from(h)) as f32)
        .collect();
    let kernel = cpu::Problem {
        z: &state.z,
        n_contrast: n,
        n_anchor: p.n_anchor,
        dim: d,
        temperature: p.temperature as f32,
    };
    let dz = cpu::lse_backward(&kernel, &state.lse, &upstream);

    let c: Vec<f64> = (0..p.n_anchor)
        .map(|i| -p.scale * f64::from(g[i]) * weight[i])
        .collect();
    let mut anchor_sums = vec![0.0f64; p.num_classes * d];
    for (i, &ci) in c.iter().enumerate() {
        let sum = &mut anchor_sums[p.class_of_row(i) * d..][..d];
        let row = &state.z[i * d..][..d];
        sum.iter_mut()
            .zip(row)
            .for_each(|(s, &t)| *s += ci * f64::from(t));
    }

    // Every output row gathers its contrast row (view-major) and maps it back through the
    // normalisation.
    let mut out = vec![0.0f32; n * d];
    out.par_chunks_mut(d.max(1))
        .enumerate()
        .take(n)
        .for_each(|(o, dst)| {
            let (sample, view) = (o / v, o % v);
            let r = view * b + sample;
            let class = p.class_of_row(r);
            let z = &state.z[r * d..][..d];
            let dz = &dz[r * d..][..d];
            let a = &anchor_sums[class * d..][..d];
            let s = &state.class_sums[class * d..][..d];
            let own = if r < p.n_anchor { c[r] } else { 0.0 };
            let total = |t: usize| f64::from(dz[t]) + own * (s[t] - 2.0 * f64::from(z[t])) + a[t];
            if p.normalize {
                let norm = state.norms[r];
                if norm > NORM_FLOOR {
                    let radial: f64 = (0..d).map(|t| f64::from(z[t]) * total(t)).sum();
                    for (t, o) in dst.iter_mut().enumerate() {
                        *o = ((total(t) - f64::from(z[t]) * radial) / norm) as f32;
                    }
                } else {
                    for (t, o) in dst.iter_mut().enumerate() {
                        *o = (total(t) / NORM_FLOOR) as f32;
                    }
                }
            } else {
                for (t, o) in dst.iter_mut().enumerate() {
                    *o = total(t) as f32;
                }
            }
        });
    flex_tensor(out, [b, v, d])
}
