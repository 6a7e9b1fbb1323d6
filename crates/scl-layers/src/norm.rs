//! Batch normalisation in training mode as one operation with its own backward.
//!
//! Burn's `BatchNorm` builds the training forward from about ten tensor operations (two
//! transposed copies for the statistics, broadcast subtraction, division, product, sum), and
//! autodiff differentiates each: some twenty passes over the activation per layer. Here the
//! forward is two passes (the statistics per channel, then the normalised output) and the
//! backward two (the sums `sum dy` and `sum dy x_hat` per channel, then the input gradient):
//!
//! ```text
//! x_hat = (x - mean) / sqrt(var + eps),   y = gamma x_hat + beta      (biased var, as Burn)
//! dbeta = sum dy,   dgamma = sum dy x_hat,
//! dx = gamma / (M sqrt(var + eps)) (M dy - dbeta - x_hat dgamma)      (M values per channel)
//! ```
//!
//! The default methods of [`crate::LayerBackend`] compute these formulas with tensor
//! operations (any backend); Flex in `f32` uses the host loops of this module, parallel over
//! channels for the sums and over `(image, channel)` planes for the elementwise passes.

use rayon::prelude::*;

/// `sum f(v)` over `values` in f64, in eight independent partial sums (so that the loop
/// vectorises instead of waiting on one chain of additions), then added in a fixed order.
#[inline]
fn sum_lanes(values: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += f(f64::from(v));
        }
    }
    rest.iter()
        .fold(acc.iter().sum::<f64>(), |t, &v| t + f(f64::from(v)))
}

/// `(sum g, sum g (x - mean))` over a plane, in f64, as [`sum_lanes`].
#[inline]
fn sum_lanes_pair(g: &[f32], x: &[f32], mean: f64) -> (f64, f64) {
    let (mut acc, mut acc_x) = ([0.0f64; 8], [0.0f64; 8]);
    let (gc, xc) = (g.chunks_exact(8), x.chunks_exact(8));
    let (g_rest, x_rest) = (gc.remainder(), xc.remainder());
    for (gs, xs) in gc.zip(xc) {
        for i in 0..8 {
            let gv = f64::from(gs[i]);
            acc[i] += gv;
            acc_x[i] += gv * (f64::from(xs[i]) - mean);
        }
    }
    let start = (acc.iter().sum::<f64>(), acc_x.iter().sum::<f64>());
    g_rest
        .iter()
        .zip(x_rest)
        .fold(start, |(s, sx), (&gv, &xv)| {
            let gv = f64::from(gv);
            (s + gv, sx + gv * (f64::from(xv) - mean))
        })
}

/// Per-channel mean and biased variance of `x` (`[N, C, S]` flattened), in f64.
pub fn statistics(x: &[f32], n: usize, c: usize, s: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(x.len(), n * c * s, "input size");
    let m = (n * s).max(1) as f64;
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let planes = || (0..n).map(move |b| &x[(b * c + ch) * s..(b * c + ch + 1) * s]);
            let mean = planes().map(|p| sum_lanes(p, |v| v)).sum::<f64>() / m;
            let var = planes()
                .map(|p| sum_lanes(p, |v| (v - mean) * (v - mean)))
                .sum::<f64>()
                / m;
            (mean, var)
        })
        .unzip()
}

/// `y = gamma (x - mean) / sqrt(var + eps) + beta`, per channel.
pub fn normalise(
    x: &[f32],
    shape: [usize; 3],
    (mean, var): (&[f64], &[f64]),
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
) -> Vec<f32> {
    let [n, c, s] = shape;
    assert_eq!(x.len(), n * c * s, "input size");
    let coef: Vec<(f32, f32)> = (0..c)
        .map(|ch| {
            let scale = f64::from(gamma[ch]) / (var[ch] + epsilon).sqrt();
            (
                scale as f32,
                (f64::from(beta[ch]) - mean[ch] * scale) as f32,
            )
        })
        .collect();
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(s.max(1))
        .zip(x.par_chunks(s.max(1)))
        .enumerate()
        .for_each(|(plane, (out, inp))| {
            let (a, b) = coef[plane % c];
            for (o, &v) in out.iter_mut().zip(inp) {
                *o = v * a + b;
            }
        });
    y
}

/// The gradients `(dx, dgamma, dbeta)` from the output gradient `dy`.
pub fn backward(
    x: &[f32],
    dy: &[f32],
    shape: [usize; 3],
    (mean, var): (&[f64], &[f64]),
    gamma: &[f32],
    epsilon: f64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let [n, c, s] = shape;
    assert_eq!(x.len(), n * c * s, "input size");
    assert_eq!(dy.len(), x.len(), "output gradient size");
    let m = (n * s).max(1) as f64;
    let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (v + epsilon).sqrt()).collect();
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mut sum_dy, mut sum_dy_centred) = (0.0f64, 0.0f64);
            for b in 0..n {
                let range = (b * c + ch) * s..(b * c + ch + 1) * s;
                let (g, gx) = sum_lanes_pair(&dy[range.clone()], &x[range], mean[ch]);
                sum_dy += g;
                sum_dy_centred += gx;
            }
            (sum_dy, sum_dy_centred * inv_std[ch])
        })
        .collect();
    // dx = k (M dy - dbeta - x_hat dgamma) with k = gamma inv_std / M, written as
    // dx = a dy + b x + d per channel.
    let coef: Vec<(f32, f32, f32)> = (0..c)
        .map(|ch| {
            let k = f64::from(gamma[ch]) * inv_std[ch] / m;
            let (dbeta, dgamma) = sums[ch];
            let slope = -k * dgamma * inv_std[ch];
            (
                (k * m) as f32,
                slope as f32,
                (-k * dbeta - slope * mean[ch]) as f32,
            )
        })
        .collect();
    let mut dx = vec![0.0f32; x.len()];
    dx.par_chunks_mut(s.max(1))
        .zip(x.par_chunks(s.max(1)).zip(dy.par_chunks(s.max(1))))
        .enumerate()
        .for_each(|(plane, (out, (xs, gs)))| {
            let (a, b, d) = coef[plane % c];
            for ((o, &v), &g) in out.iter_mut().zip(xs).zip(gs) {
                *o = a * g + b * v + d;
            }
        });
    let dgamma = sums.iter().map(|s| s.1 as f32).collect();
    let dbeta = sums.iter().map(|s| s.0 as f32).collect();
    (dx, dgamma, dbeta)
}

#[cfg(test)]
mod tests {
    use super::{backward, normalise, statistics};
    use rand::{Rng, SeedableRng, rngs::StdRng};

    #[test]
    fn the_gradient_matches_central_differences_of_a_weighted_sum() {
        // L = sum(w * y): dL/dx by the formulas against (L(x + h e) - L(x - h e)) / 2h in f64.
        // Planes shorter than the eight partial sums, and longer with a remainder.
        for (n, c, s) in [(3usize, 2usize, 5usize), (2, 2, 19)] {
            check_against_differences(n, c, s);
        }
    }

    fn check_against_differences(n: usize, c: usize, s: usize) {
        let mut rng = StdRng::seed_from_u64(2);
        let x: Vec<f32> = (0..n * c * s)
            .map(|_| rng.random_range(-2.0..2.0))
            .collect();
        let w: Vec<f32> = (0..n * c * s)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let gamma = [1.5f32, -0.7];
        let beta = [0.2f32, 0.1];
        let eps = 1e-5;
        let loss = |x: &[f64]| -> f64 {
            let mut total = 0.0;
            for ch in 0..c {
                let vals: Vec<(usize, f64)> = (0..n)
                    .flat_map(|b| (0..s).map(move |i| (b * c + ch) * s + i))
                    .map(|k| (k, x[k]))
                    .collect();
                let m = vals.len() as f64;
                let mean = vals.iter().map(|v| v.1).sum::<f64>() / m;
                let var = vals.iter().map(|v| (v.1 - mean).powi(2)).sum::<f64>() / m;
                for (k, v) in vals {
                    let y = f64::from(gamma[ch]) * (v - mean) / (var + eps).sqrt()
                        + f64::from(beta[ch]);
                    total += f64::from(w[k]) * y;
                }
            }
            total
        };
        let (mean, var) = statistics(&x, n, c, s);
        let y = normalise(&x, [n, c, s], (&mean, &var), &gamma, &beta, eps);
        let x64: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        let direct: f64 = y
            .iter()
            .zip(&w)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        assert!(
            (direct - loss(&x64)).abs() < 1e-4,
            "{direct} vs {}",
            loss(&x64)
        );
        let (dx, dgamma, dbeta) = backward(&x, &w, [n, c, s], (&mean, &var), &gamma, eps);
        let h = 1e-4;
        for k in 0..x.len() {
            let (mut up, mut down) = (x64.clone(), x64.clone());
            up[k] += h;
            down[k] -= h;
            let want = (loss(&up) - loss(&down)) / (2.0 * h);
            assert!(
                (f64::from(dx[k]) - want).abs() < 1e-3 * want.abs().max(1.0),
                "dx[{k}] = {} vs {want}",
                dx[k]
            );
        }
        for ch in 0..c {
            // dbeta = sum of w over the channel; dgamma = sum of w x_hat.
            let idx: Vec<usize> = (0..n)
                .flat_map(|b| (0..s).map(move |i| (b * c + ch) * s + i))
                .collect();
            let sum_w: f64 = idx.iter().map(|&k| f64::from(w[k])).sum();
            let sum_wx: f64 = idx
                .iter()
                .map(|&k| f64::from(w[k]) * (x64[k] - mean[ch]) / (var[ch] + eps).sqrt())
                .sum();
            assert!((f64::from(dbeta[ch]) - sum_w).abs() < 1e-5);
            assert!((f64::from(dgamma[ch]) - sum_wx).abs() < 1e-4);
        }
    }
}
