//! The fused SupCon kernel for the CPU: tiled, multi-threaded with rayon, memory `O(N d + N)`.
//!
//! Notation: `Nc` contrast rows `z_j` (every view of every sample, view-major), the first
//! `Na` of which are anchors; `s_ij = z_i . z_j / tau`. Per anchor `i` with `P_i >= 1`
//! positives (contrast rows other than `i` with its label):
//!
//! ```text
//! loss_i = scale * ( LSE_{a != i} s_ia  -  z_i . (S_{y_i} - z_i) / (tau P_i) )
//! ```
//!
//! where `S_c` is the sum of the contrast rows of class `c` and `scale = tau / base_tau`.
//! Only the log-sum-exp needs pairwise work. Three passes over tiles of the similarity matrix,
//! none of which stores more than one `ROWS x COLS` tile per thread:
//!
//! A transposed copy of the features (`O(N d)`) feeds the similarity GEMMs.
//!
//! 1. forward, anchor-parallel: online log-sum-exp of every anchor row (running max and sum);
//! 2. backward, anchor-parallel: `R_i = sum_a p_ia z_a` with `p_ia = exp(s_ia - LSE_i)`;
//! 3. backward, contrast-parallel: `C_k = sum_i g_i p_ik z_i` (the transposed product).
//!
//! The gradient of `sum_i g_i loss_i` (upstream `g_i`, zero for anchors without positives) is
//!
//! ```text
//! dL/dz_k = (scale / tau) * ( g_k R_k + C_k - g_k (S_{y_k} - z_k) / P_k - (U_{y_k} - g_k z_k / P_k) )
//! ```
//!
//! with `U_c = sum_{anchors i of class c} g_i z_i / P_i` and the anchor-only terms present
//! only when `k < Na`. Counting `2 Nc Na d` flops per similarity product, pass 1 does one
//! product and passes 2 and 3 two each (the similarities and the weighted sum): five in all.
//!
//! Numerics: similarities are computed in `f32` by a GEMM on tiles; the self entry of each
//! anchor row is excluded before the running maximum, so every row's sum holds a term
//! `exp(0) = 1` and its log is finite; sums of exponentials, class sums and the positive term
//! are accumulated in `f64`. The exponential is [`exp_f32`], a branch-free polynomial with
//! relative error below `3e-7`, written so that the compiler vectorises it.

use rayon::prelude::*;

/// Anchor rows per tile: 64 rows x 256 columns of f32 is 64 KiB, which stays in L2.
const ROWS: usize = 64;
/// Contrast columns per tile.
const COLS: usize = 256;

/// The shape of one fused problem, with labels mapped to dense class indices.
#[derive(Debug, Clone)]
pub struct Problem<'a> {
    /// Contrast rows, `[n_contrast, dim]` row-major, view-major order.
    pub z: &'a [f32],
    /// Dense class index of every contrast row.
    pub class_of: &'a [usize],
    /// Number of classes (`class_of` values are below it).
    pub num_classes: usize,
    /// Number of contrast rows.
    pub n_contrast: usize,
    /// Number of anchors (the first rows).
    pub n_anchor: usize,
    /// Feature dimension.
    pub dim: usize,
    /// Softmax temperature.
    pub temperature: f32,
}

/// What the forward pass keeps for the backward pass: `O(N + C d)`.
#[derive(Debug, Clone)]
pub struct Saved {
    /// Log-sum-exp over the non-self entries of every anchor row (in units of `1/tau`).
    pub lse: Vec<f32>,
    /// Number of positives of every anchor.
    pub positives: Vec<usize>,
    /// Class sums `S_c`, `[num_classes, dim]`, in f64.
    pub class_sums: Vec<f64>,
}

/// Per-anchor losses, without the `tau / base_tau` scale, and the saved state.
pub fn forward(p: &Problem<'_>) -> (Vec<f64>, Saved) {
    check(p);
    let d = p.dim;
    let mut class_sums = vec![0.0f64; p.num_classes * d];
    let mut class_count = vec![0usize; p.num_classes];
    for (j, &c) in p.class_of.iter().enumerate() {
        class_count[c] += 1;
        for (s, &v) in class_sums[c * d..(c + 1) * d]
            .iter_mut()
            .zip(&p.z[j * d..(j + 1) * d])
        {
            *s += f64::from(v);
        }
    }
    let positives: Vec<usize> = (0..p.n_anchor)
        .map(|i| class_count[p.class_of[i]] - 1)
        .collect();

    let zt = transpose(p);
    let mut lse = vec![0.0f32; p.n_anchor];
    lse.par_chunks_mut(ROWS)
        .enumerate()
        .for_each(|(block, out)| {
            let i0 = block * ROWS;
            let rows = out.len();
            let mut tile = vec![0.0f32; ROWS * COLS];
            let mut max = vec![f32::NEG_INFINITY; rows];
            let mut sum = vec![0.0f64; rows];
            for j0 in (0..p.n_contrast).step_by(COLS) {
                let cols = COLS.min(p.n_contrast - j0);
                similarities(p, &zt, i0, rows, j0, cols, &mut tile);
                for r in 0..rows {
                    let row = &mut tile[r * cols..(r + 1) * cols];
                    let i = i0 + r;
                    if (j0..j0 + cols).contains(&i) {
                        row[i - j0] = f32::NEG_INFINITY;
                    }
                    let tile_max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    if tile_max == f32::NEG_INFINITY {
                        continue;
                    }
                    if tile_max > max[r] {
                        sum[r] *= f64::from(exp_f32(max[r] - tile_max));
                        max[r] = tile_max;
                    }
                    sum[r] += f64::from(sum_exp(row, max[r]));
                }
            }
            for r in 0..rows {
                out[r] = max[r] + (sum[r].ln() as f32);
            }
        });

    let losses: Vec<f64> = (0..p.n_anchor)
        .into_par_iter()
        .map(|i| {
            if positives[i] == 0 {
                return 0.0;
            }
            let c = p.class_of[i];
            let zi = &p.z[i * d..(i + 1) * d];
            let dot: f64 = zi
                .iter()
                .zip(&class_sums[c * d..(c + 1) * d])
                .map(|(&a, &s)| f64::from(a) * (s - f64::from(a)))
                .sum();
            f64::from(lse[i]) - dot / (f64::from(p.temperature) * positives[i] as f64)
        })
        .collect();
    (
        losses,
        Saved {
            lse,
            positives,
            class_sums,
        },
    )
}

/// Gradient of `sum_i upstream[i] * loss_i` with respect to the contrast rows, where
/// `loss_i` are the unscaled losses of [`forward`]; `upstream` must already be zero for
/// anchors without positives (their loss is identically 0).
pub fn backward(p: &Problem<'_>, saved: &Saved, upstream: &[f64]) -> Vec<f32> {
    check(p);
    assert_eq!(
        upstream.len(),
        p.n_anchor,
        "one upstream gradient per anchor"
    );
    let d = p.dim;
    let inv_tau = 1.0 / f64::from(p.temperature);
    let g: Vec<f32> = upstream
        .iter()
        .zip(&saved.positives)
        .map(|(&g, &n)| if n == 0 { 0.0 } else { g as f32 })
        .collect();

    // U_c = sum over anchors i of class c of g_i z_i / P_i.
    let mut u = vec![0.0f64; p.num_classes * d];
    for (i, &gi) in g.iter().enumerate() {
        if gi != 0.0 {
            let w = f64::from(gi) / saved.positives[i] as f64;
            let c = p.class_of[i];
            for (acc, &v) in u[c * d..(c + 1) * d]
                .iter_mut()
                .zip(&p.z[i * d..(i + 1) * d])
            {
                *acc += w * f64::from(v);
            }
        }
    }

    let zt = transpose(p);
    let mut grad = vec![0.0f32; p.n_contrast * d];
    // Pass 2: row terms g_k R_k for anchors, anchor-parallel.
    grad[..p.n_anchor * d]
        .par_chunks_mut(ROWS * d)
        .enumerate()
        .for_each(|(block, out)| {
            let i0 = block * ROWS;
            let rows = out.len() / d;
            let mut tile = vec![0.0f32; ROWS * COLS];
            for j0 in (0..p.n_contrast).step_by(COLS) {
                let cols = COLS.min(p.n_contrast - j0);
                similarities(p, &zt, i0, rows, j0, cols, &mut tile);
                for r in 0..rows {
                    let i = i0 + r;
                    let row = &mut tile[r * cols..(r + 1) * cols];
                    let (l, gi) = (saved.lse[i], g[i]);
                    row.iter_mut().for_each(|s| *s = gi * exp_f32(*s - l));
                    if (j0..j0 + cols).contains(&i) {
                        row[i - j0] = 0.0;
                    }
                }
                // out[rows, d] += tile[rows, cols] * z[j0.., d]
                gemm(rows, cols, d, (&tile, cols, 1), (&p.z[j0 * d..], d, 1), out);
            }
        });
    // Pass 3: column terms C_k, contrast-parallel.
    grad.par_chunks_mut(ROWS * d)
        .enumerate()
        .for_each(|(block, out)| {
            let k0 = block * ROWS;
            let rows = out.len() / d;
            let mut tile = vec![0.0f32; ROWS * COLS];
            for i0 in (0..p.n_anchor).step_by(COLS) {
                let anchors = COLS.min(p.n_anchor - i0);
                // tile[k, i] = z_k . z_i / tau: the transposed similarities.
                similarities(p, &zt, k0, rows, i0, anchors, &mut tile);
                for r in 0..rows {
                    let k = k0 + r;
                    let row = &mut tile[r * anchors..(r + 1) * anchors];
                    for (a, s) in row.iter_mut().enumerate() {
                        let i = i0 + a;
                        *s = g[i] * exp_f32(*s - saved.lse[i]);
                    }
                    if (i0..i0 + anchors).contains(&k) {
                        row[k - i0] = 0.0;
                    }
                }
                accumulate(rows, anchors, d, &tile, &p.z[i0 * d..], out);
            }
        });
    // Positive terms, and the 1/tau factor.
    grad.par_chunks_mut(d).enumerate().for_each(|(k, out)| {
        let c = p.class_of[k];
        let zk = &p.z[k * d..(k + 1) * d];
        let s = &saved.class_sums[c * d..(c + 1) * d];
        let uc = &u[c * d..(c + 1) * d];
        let anchor_w = if k < p.n_anchor && g[k] != 0.0 {
            f64::from(g[k]) / saved.positives[k] as f64
        } else {
            0.0
        };
        for t in 0..d {
            let z = f64::from(zk[t]);
            let positive = anchor_w * (s[t] - z) + (uc[t] - anchor_w * z);
            out[t] = ((f64::from(out[t]) - positive) * inv_tau) as f32;
        }
    });
    grad
}

fn check(p: &Problem<'_>) {
    assert_eq!(
        p.z.len(),
        p.n_contrast * p.dim,
        "z holds n_contrast * dim values"
    );
    assert_eq!(p.class_of.len(), p.n_contrast, "one class per contrast row");
    assert!(p.n_anchor <= p.n_contrast, "anchors are contrast rows");
    assert!(
        p.class_of.iter().all(|&c| c < p.num_classes),
        "class indices are below num_classes"
    );
}

/// `tile[r, c] = z_{i0 + r} . z_{j0 + c} / tau` for `rows x cols`.
fn similarities(
    p: &Problem<'_>,
    zt: &[f32],
    i0: usize,
    rows: usize,
    j0: usize,
    cols: usize,
    tile: &mut [f32],
) {
    let d = p.dim;
    let out = &mut tile[..rows * cols];
    out.iter_mut().for_each(|v| *v = 0.0);
    // A = z[i0.., d] (rows x d), B = zt[.., j0..] (d x cols, row stride n_contrast): reading
    // B from the transposed copy keeps the GEMM's packing contiguous.
    gemm(
        rows,
        d,
        cols,
        (&p.z[i0 * d..], d, 1),
        (&zt[j0..], p.n_contrast, 1),
        out,
    );
    let inv_tau = 1.0 / p.temperature;
    out.iter_mut().for_each(|v| *v *= inv_tau);
}

/// `z^T`, `[dim, n_contrast]`: `O(N d)` extra memory.
fn transpose(p: &Problem<'_>) -> Vec<f32> {
    let (n, d) = (p.n_contrast, p.dim);
    let mut zt = vec![0.0f32; n * d];
    for (j, row) in p.z.chunks_exact(d.max(1)).enumerate().take(n) {
        for (t, &v) in row.iter().enumerate() {
            zt[t * n + j] = v;
        }
    }
    zt
}

/// `out[rows, d] += tile[rows, cols] * z[cols, d]`, all dense row-major, through a GEMM.
///
/// Measured on the UFM (N = 2000, d = 20): the GEMM beats plain `d`-long AXPYs per tile
/// entry even at this small `d`, so there is one path only.
fn accumulate(rows: usize, cols: usize, d: usize, tile: &[f32], z: &[f32], out: &mut [f32]) {
    gemm(rows, cols, d, (tile, cols, 1), (z, d, 1), out);
}

/// `sum_j exp(row_j - m)` in f32 with eight independent partial sums, so that the loop
/// vectorises (a single running sum would force strict left-to-right order). Each tile row
/// is at most `COLS` long; the caller adds the tile sums in f64.
fn sum_exp(row: &[f32], m: f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = row.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (l, &s) in lanes.iter_mut().zip(chunk) {
            *l += exp_f32(s - m);
        }
    }
    let tail: f32 = rest.iter().map(|&s| exp_f32(s - m)).sum();
    lanes.iter().sum::<f32>() + tail
}

/// `c[m, n] += a[m, k] * b[k, n]` with (row stride, column stride) for `a` and `b`; `c` is
/// dense row-major.
fn gemm(
    m: usize,
    k: usize,
    n: usize,
    (a, rsa, csa): (&[f32], usize, usize),
    (b, rsb, csb): (&[f32], usize, usize),
    c: &mut [f32],
) {
    if m == 0 || n == 0 {
        return;
    }
    // The largest offsets the strides reach must lie inside the slices.
    assert!(
        k == 0 || (m - 1) * rsa + (k - 1) * csa < a.len(),
        "gemm: a too short"
    );
    assert!(
        k == 0 || (k - 1) * rsb + (n - 1) * csb < b.len(),
        "gemm: b too short"
    );
    assert!(c.len() >= m * n, "gemm: c too short");
    // SAFETY: the assertions above bound every element `sgemm` reads from `a` and `b` and
    // writes to `c` (row-major `m x n`) within the borrowed slices, which do not alias since
    // `c` is borrowed mutably.
    #[allow(unsafe_code)]
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            1.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// `exp(x)` for `f32`, branch-free so that loops over it vectorise.
///
/// Cody-Waite range reduction `x = n ln2 + r`, `|r| <= ln2 / 2`, then the degree-6 minimax
/// polynomial of Cephes' `expf` (relative error below 3e-7 over the whole range), and the
/// scaling by `2^n` through the exponent bits. Inputs below -87.3 give 0, above 88.7 give
/// `inf`; NaN gives NaN (through the comparison selects).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding and subtracting it rounds to an integer.
    let clamped = x.clamp(-87.3, 88.7);
    // t = n + ROUND exactly, so the low mantissa bits of t hold the integer n: read them
    // with a bit cast instead of a float-to-int conversion, which would not vectorise.
    let t = clamped * LOG2E + ROUND;
    let n = t - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let r2 = r * r;
    let poly =
        ((((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
            + 1.666_666_5e-1)
            * r
            + 0.5)
            * r2)
            + r
            + 1.0;
    let exponent = t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127);
    let scale = f32::from_bits(exponent << 23);
    let y = poly * scale;
    if x < -87.3 {
        0.0
    } else if x > 88.7 {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::exp_f32;

    #[test]
    fn the_fast_exponential_is_accurate_to_3e7_relative() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = f64::from(x).exp();
            let got = f64::from(exp_f32(x));
            assert!(
                ((got - want) / want).abs() < 3e-7,
                "exp({x}) = {got}, want {want}"
            );
            x += 0.0137;
        }
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(100.0).is_infinite());
        assert!(exp_f32(f32::NAN).is_nan());
    }
}
