//! The fused kernel for the CPU: tiled, multi-threaded with rayon, memory `O(N d + N)`.
//!
//! It computes the one part of SupCon that needs pairwise work, the masked log-sum-exp of
//! every anchor row, and its gradient. Notation: `Nc` contrast rows `z_j` (every view of
//! every sample, view-major), the first `Na` of which are anchors; `s_ij = z_i . z_j / tau`;
//!
//! ```text
//! LSE_i = log sum_{a != i} exp(s_ia),      p_ia = exp(s_ia - LSE_i)  (p_ii = 0)
//! d/dz_k sum_i g_i LSE_i = (1 / tau) * ( g_k R_k [k < Na] + C_k ),
//! R_k = sum_a p_ka z_a,                    C_k = sum_i g_i p_ik z_i
//! ```
//!
//! Two passes over tiles of the similarity matrix, neither of which stores more than one
//! `ROWS x COLS` tile per thread; a transposed copy of the features (`O(N d)`) feeds the
//! similarity GEMMs:
//!
//! 1. forward, anchor-parallel: online log-sum-exp of every anchor row (running max and sum);
//! 2. backward, parallel over contrast rows `k`: since the similarities are symmetric,
//!    `p_ik` for the column term is read off row `k` of the tile as `exp(s_ki - LSE_i)`, so
//!    one tile gives both terms: `grad_k = (1/tau) sum_j w_kj z_j` with
//!    `w_kj = [k < Na] g_k p_kj + [j < Na] g_j p_jk`.
//!
//! Counting `2 N^2 d` flops per similarity product (`N = Nc`, all rows anchors), pass 1 does
//! one product and pass 2 two (the similarities and the weighted sum): three in all.
//!
//! Numerics: similarities are computed in `f32` by a GEMM on tiles; the self entry of each
//! anchor row is excluded before the running maximum, so every row's sum holds a term
//! `exp(0) = 1` and its log is finite; the tile sums of exponentials are accumulated in
//! `f64`. The exponential is [`exp_f32`], a branch-free polynomial with relative error below
//! `3e-7`, written so that the compiler vectorises it.

use rayon::prelude::*;

/// Anchor rows per tile: 64 rows x 256 columns of f32 is 64 KiB, which stays in L2.
const ROWS: usize = 64;
/// Contrast columns per tile.
const COLS: usize = 256;

/// The shape of one fused problem.
#[derive(Debug, Clone)]
pub struct Problem<'a> {
    /// Contrast rows, `[n_contrast, dim]` row-major, view-major order.
    pub z: &'a [f32],
    /// Number of contrast rows.
    pub n_contrast: usize,
    /// Number of anchors (the first rows).
    pub n_anchor: usize,
    /// Feature dimension.
    pub dim: usize,
    /// Softmax temperature.
    pub temperature: f32,
}

/// The log-sum-exp over the non-self entries of every anchor row, `[n_anchor]`, in units of
/// `1 / tau`. With a single contrast row there is no entry and the value is `-inf`.
pub fn lse(p: &Problem<'_>) -> Vec<f32> {
    check(p);
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
    lse
}

/// Gradient of `sum_i upstream[i] * LSE_i` with respect to the contrast rows, `[n_contrast,
/// dim]`, from the values [`lse`] returned.
pub fn lse_backward(p: &Problem<'_>, lse: &[f32], upstream: &[f32]) -> Vec<f32> {
    check(p);
    assert_eq!(lse.len(), p.n_anchor, "one log-sum-exp per anchor");
    assert_eq!(
        upstream.len(),
        p.n_anchor,
        "one upstream gradient per anchor"
    );
    let d = p.dim;
    let g = upstream;
    let inv_tau = 1.0 / p.temperature;
    let zt = transpose(p);
    let (na, nc) = (p.n_anchor, p.n_contrast);
    let mut grad = vec![0.0f32; nc * d];
    // One pass over row blocks k: w_kj = [k < Na] p_kj g_k + [j < Na] p_jk g_j, using the
    // symmetry s_kj = s_jk, then grad_k = (1 / tau) sum_j w_kj z_j.
    grad.par_chunks_mut(ROWS * d)
        .enumerate()
        .for_each(|(block, out)| {
            let k0 = block * ROWS;
            let rows = out.len() / d;
            let mut tile = vec![0.0f32; ROWS * COLS];
            // Rows that are not anchors only have column terms, from anchor columns.
            let col_end = if k0 >= na { na } else { nc };
            for j0 in (0..col_end).step_by(COLS) {
                let cols = COLS.min(col_end - j0);
                similarities(p, &zt, k0, rows, j0, cols, &mut tile);
                let anchor_cols = na.saturating_sub(j0).min(cols);
                for r in 0..rows {
                    let k = k0 + r;
                    let row = &mut tile[r * cols..(r + 1) * cols];
                    let (head, tail) = row.split_at_mut(anchor_cols);
                    let (gj, lj) = (&g[j0..j0 + anchor_cols], &lse[j0..j0 + anchor_cols]);
                    if k < na {
                        let (gk, lk) = (g[k], lse[k]);
                        for ((s, &gj), &lj) in head.iter_mut().zip(gj).zip(lj) {
                            *s = gk * exp_f32(*s - lk) + gj * exp_f32(*s - lj);
                        }
                        tail.iter_mut().for_each(|s| *s = gk * exp_f32(*s - lk));
                    } else {
                        for ((s, &gj), &lj) in head.iter_mut().zip(gj).zip(lj) {
                            *s = gj * exp_f32(*s - lj);
                        }
                        tail.iter_mut().for_each(|s| *s = 0.0);
                    }
                    if (j0..j0 + cols).contains(&k) {
                        row[k - j0] = 0.0;
                    }
                }
                // out[rows, d] += tile[rows, cols] * z[j0.., d]
                gemm(rows, cols, d, (&tile, cols, 1), (&p.z[j0 * d..], d, 1), out);
            }
            out.iter_mut().for_each(|v| *v *= inv_tau);
        });
    grad
}

fn check(p: &Problem<'_>) {
    assert_eq!(
        p.z.len(),
        p.n_contrast * p.dim,
        "z holds n_contrast * dim values"
    );
    assert!(p.n_anchor <= p.n_contrast, "anchors are contrast rows");
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
