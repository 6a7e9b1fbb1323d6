//! The SupCon loss and its gradient in plain f64, written from the formulas (no Burn, no
//! autodiff): the yardstick of the f32 accuracy suite. Self-contained (no crate types), so
//! that the unit tests, the f64 tests and the workspace's wgpu tests can all include it.
//!
//! Contrast rows are view-major (row `v * batch + i` is view `v` of sample `i`), the first
//! `n_anchor` of them anchors; `s_ia = z_i . z_a / tau` with `z` the (optionally
//! L2-normalised) features; per anchor with `P_i >= 1` positives
//!
//! ```text
//! l_i = -(tau / base) (1 / P_i) sum_{p in P(i)} (s_ip - LSE_i),   LSE_i = log sum_{a != i} e^{s_ia}
//! dl_i / ds_ia = (tau / base) (softmax_ia - [a in P(i)] / P_i)
//! ```
//!
//! and the loss is `sum_i l_i / D`, `D` the number of anchors (count-as-zero) or of anchors
//! with a positive, at least 1 (exclude). The normalisation's backward is
//! `dL/dx = (G - u (u . G)) / |x|` with `u = x / |x|`, and `G / 1e-12` for rows of norm below
//! `1e-12` (which are divided by `1e-12` instead).

/// The options of one evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Softmax temperature.
    pub temperature: f64,
    /// The loss is scaled by `temperature / base_temperature`.
    pub base_temperature: f64,
    /// Every view an anchor (`true`) or only view 0.
    pub all_views_anchor: bool,
    /// L2-normalise the features inside the loss.
    pub normalize: bool,
    /// Anchors without positives are left out of the mean (`true`) or count as 0.
    pub exclude: bool,
}

/// The loss and its gradient with respect to `features` (`[batch, views, dim]` row-major),
/// both in f64. `labels: None` is SimCLR (every sample its own class).
pub fn loss_and_grad(
    features: &[f64],
    [batch, views, dim]: [usize; 3],
    labels: Option<&[i64]>,
    spec: Spec,
) -> (f64, Vec<f64>) {
    let n = batch * views;
    let n_anchor = if spec.all_views_anchor { n } else { batch };
    let tau = spec.temperature;
    // Contrast row r is view r / batch of sample r % batch.
    let at = |r: usize| ((r % batch) * views + r / batch) * dim;
    let norms: Vec<f64> = (0..n)
        .map(|r| {
            let x = &features[at(r)..at(r) + dim];
            if spec.normalize {
                x.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12)
            } else {
                1.0
            }
        })
        .collect();
    let z: Vec<Vec<f64>> = (0..n)
        .map(|r| {
            features[at(r)..at(r) + dim]
                .iter()
                .map(|v| v / norms[r])
                .collect()
        })
        .collect();
    let class = |r: usize| labels.map_or((r % batch) as i64, |l| l[r % batch]);
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();

    let mut grad_z = vec![vec![0.0f64; dim]; n];
    let mut total = 0.0f64;
    let mut with_positive = 0usize;
    let mut weights = Vec::with_capacity(n_anchor);
    for i in 0..n_anchor {
        let s: Vec<f64> = (0..n).map(|a| dot(&z[i], &z[a]) / tau).collect();
        let others = (0..n).filter(|&a| a != i);
        let max = others
            .clone()
            .map(|a| s[a])
            .fold(f64::NEG_INFINITY, f64::max);
        let lse = max + others.clone().map(|a| (s[a] - max).exp()).sum::<f64>().ln();
        let positives: Vec<usize> = others.filter(|&a| class(a) == class(i)).collect();
        if positives.is_empty() || n < 2 {
            weights.push(None);
            continue;
        }
        with_positive += 1;
        let p = positives.len() as f64;
        total +=
            -(tau / spec.base_temperature) * positives.iter().map(|&a| s[a] - lse).sum::<f64>() / p;
        // dl_i / ds_ia, before the division by D.
        let w: Vec<f64> = (0..n)
            .map(|a| {
                if a == i {
                    0.0
                } else {
                    let positive = f64::from(u8::from(class(a) == class(i))) / p;
                    (tau / spec.base_temperature) * ((s[a] - lse).exp() - positive)
                }
            })
            .collect();
        weights.push(Some(w));
    }
    let denominator = if spec.exclude {
        with_positive.max(1) as f64
    } else {
        n_anchor as f64
    };
    for (i, w) in weights.iter().enumerate() {
        let Some(w) = w else { continue };
        for a in 0..n {
            let c = w[a] / (denominator * tau);
            if c == 0.0 {
                continue;
            }
            for t in 0..dim {
                grad_z[i][t] += c * z[a][t];
                grad_z[a][t] += c * z[i][t];
            }
        }
    }
    let mut grad = vec![0.0f64; features.len()];
    for r in 0..n {
        let g = &grad_z[r];
        let out = &mut grad[at(r)..at(r) + dim];
        if spec.normalize && norms[r] > 1e-12 {
            let radial = dot(&z[r], g);
            for t in 0..dim {
                out[t] = (g[t] - z[r][t] * radial) / norms[r];
            }
        } else {
            out.iter_mut().zip(g).for_each(|(o, v)| *o = v / norms[r]);
        }
    }
    (total / denominator, grad)
}
