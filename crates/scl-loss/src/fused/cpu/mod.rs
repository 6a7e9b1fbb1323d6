//! The fused kernel for the CPU: register-blocked SIMD micro-kernels (AVX-512, AVX2 + FMA, or
//! portable Rust), multi-threaded with rayon, memory `O(N d + N)`.
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
//! Two passes over the similarity matrix, parallel over blocks of rows (96 with AVX-512), each
//! block visiting the columns in chunks of 256 that stay in L2:
//!
//! 1. forward, over anchor rows: the similarities of a `12 x 32` tile (AVX-512; `6 x 16` with
//!    AVX2) are accumulated in registers and consumed there by an online log-sum-exp (a
//!    running maximum and sum per row and lane), so no similarity is ever stored;
//! 2. backward, over contrast rows `k`: since the similarities are symmetric, `p_jk` for the
//!    column term is read off row `k` of the tile as `exp(s_kj - LSE_j)`, so one tile gives
//!    both terms, `w_kj = [k < Na] g_k p_kj + [j < Na] g_j p_jk`; the `12 x 256` weights of
//!    a chunk are written once and multiplied by the chunk's rows of `z` in a second
//!    register-blocked product, `grad_k = (1/tau) sum_j w_kj z_j`.
//!
//! Counting `2 N^2 d` flops per similarity product (`N = Nc`, all rows anchors), pass 1 does
//! one product and pass 2 two (the similarities and the weighted sum): three in all; the
//! exponentials (one per similarity in the forward, two in the backward) come on top.
//!
//! The instruction set is detected at run time ([`Isa::detect`]); [`lse_with`] and
//! [`lse_backward_with`] take one explicitly (the tests run every available one). The
//! operands are packed once per call: the columns in panels of 32 (`[panel][d][32]`, zero
//! padded: `O(N d)`), a block's rows (`[panel][d][12]`).
//!
//! Numerics: similarities are computed in `f32` with FMA; the self entry of each anchor row
//! is set to `-inf` before the running maximum, so every row's sum holds a term `exp(0) = 1`
//! and its log is finite; padded columns are `-inf` too. The per-lane sums are `f32` (at
//! most `N / 16` terms, each at most 1) and are combined in `f64`. The exponential is
//! [`exp_f32`] (Cephes' polynomial, relative error below `3e-7`), vectorised with the same
//! constants. Non-anchor rows and padding carry `g = 0` and `LSE = +inf` in the backward,
//! so that their weights are exactly 0 without branches.

mod kernel;
mod simd;

pub use kernel::{ISA_VARIABLE, Isa, with_isa};
pub use simd::exp_f32;

use kernel::{BackCtx, Ctx, PANELS};
use rayon::prelude::*;

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
/// `1 / tau`, on the fastest instruction set of this processor. With a single contrast row
/// there is no entry and the value is `-inf`.
///
/// # Panics
/// When `z` does not hold `n_contrast * dim` values or `n_anchor > n_contrast`.
pub fn lse(p: &Problem<'_>) -> Vec<f32> {
    lse_with(p, Isa::detect())
}

/// [`lse`] on the instruction set `isa`.
///
/// # Panics
/// As [`lse`], and when the processor does not have `isa`.
pub fn lse_with(p: &Problem<'_>, isa: Isa) -> Vec<f32> {
    check(p, isa);
    if p.n_contrast < 2 {
        return vec![f32::NEG_INFINITY; p.n_anchor];
    }
    let ctx = context(p, isa);
    let rows = isa.mr() * PANELS;
    let mut out = vec![0.0f32; p.n_anchor];
    out.par_chunks_mut(rows)
        .enumerate()
        .for_each(|(block, o)| kernel::forward(isa, &ctx, block * rows, o));
    out
}

/// Gradient of `sum_i upstream[i] * LSE_i` with respect to the contrast rows, `[n_contrast,
/// dim]`, from the values [`lse`] returned.
///
/// # Panics
/// As [`lse`], and when `lse` or `upstream` does not have `n_anchor` values.
pub fn lse_backward(p: &Problem<'_>, lse: &[f32], upstream: &[f32]) -> Vec<f32> {
    lse_backward_with(p, lse, upstream, Isa::detect())
}

/// [`lse_backward`] on the instruction set `isa`.
///
/// # Panics
/// As [`lse_backward`], and when the processor does not have `isa`.
pub fn lse_backward_with(p: &Problem<'_>, lse: &[f32], upstream: &[f32], isa: Isa) -> Vec<f32> {
    check(p, isa);
    assert_eq!(lse.len(), p.n_anchor, "one log-sum-exp per anchor");
    assert_eq!(
        upstream.len(),
        p.n_anchor,
        "one upstream gradient per anchor"
    );
    let (n, na, d) = (p.n_contrast, p.n_anchor, p.dim);
    let mut grad = vec![0.0f32; n * d];
    if n < 2 || d == 0 {
        return grad;
    }
    let nr = isa.nr();
    let padded = n.div_ceil(nr) * nr;
    let mut g = vec![0.0f32; padded];
    let mut l = vec![f32::INFINITY; padded];
    g[..na].copy_from_slice(upstream);
    l[..na].copy_from_slice(lse);
    let dp = d.div_ceil(nr) * nr;
    let zp = if dp == d {
        std::borrow::Cow::Borrowed(p.z)
    } else {
        let mut zp = vec![0.0f32; n * dp];
        for (dst, src) in zp.chunks_exact_mut(dp).zip(p.z.chunks_exact(d)) {
            dst[..d].copy_from_slice(src);
        }
        std::borrow::Cow::Owned(zp)
    };
    let back = BackCtx {
        ctx: context(p, isa),
        zp,
        dp,
        g,
        l,
    };
    let rows = isa.mr() * PANELS;
    grad.par_chunks_mut(rows * d)
        .enumerate()
        .for_each(|(block, o)| kernel::backward(isa, &back, block * rows, o));
    grad
}

/// The FMA throughput of this processor on `isa` with every thread of rayon's pool busy, in
/// GFLOP/s (a multiply-add counts 2): independent chains of vector FMAs, the ceiling that no
/// GEMM on `isa` can pass. `cargo xtask bench loss` reports it next to the nominal peak.
///
/// # Panics
/// When the processor does not have `isa`.
pub fn measure_fma_peak(isa: Isa) -> f64 {
    assert!(isa.is_available(), "this processor does not have {isa}");
    // About 0.1 s per thread on AVX-512 at 2.6 GHz; the first round warms the clocks up.
    let iters = 16_000_000;
    let _ = rayon::broadcast(|_| kernel::fma_rate(isa, iters / 4));
    rayon::broadcast(|_| kernel::fma_rate(isa, iters))
        .into_iter()
        .sum::<f64>()
        / 1e9
}

fn check(p: &Problem<'_>, isa: Isa) {
    assert_eq!(
        p.z.len(),
        p.n_contrast * p.dim,
        "z holds n_contrast * dim values"
    );
    assert!(p.n_anchor <= p.n_contrast, "anchors are contrast rows");
    assert!(
        isa.is_available(),
        "the CPU kernel for {isa} needs a processor that has it"
    );
}

/// The shared inputs, with the columns packed in panels of `NR` (`[panel][d][NR]`).
fn context<'a>(p: &Problem<'a>, isa: Isa) -> Ctx<'a> {
    let (n, d, nr) = (p.n_contrast, p.dim, isa.nr());
    let mut packed = vec![0.0f32; n.div_ceil(nr) * d * nr];
    for (j, row) in p.z.chunks_exact(d.max(1)).enumerate().take(n) {
        let (panel, c) = (j / nr, j % nr);
        for (k, &v) in row.iter().enumerate() {
            packed[(panel * d + k) * nr + c] = v;
        }
    }
    Ctx {
        z: p.z,
        n,
        na: p.n_anchor,
        d,
        inv_tau: 1.0 / p.temperature,
        packed,
    }
}

#[cfg(test)]
mod tests {
    use super::{Isa, Problem, exp_f32, lse_backward_with, lse_with};
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// The log-sum-exps and the gradient of `sum_i g_i LSE_i` in plain f64 loops, written
    /// from the formulas in the module documentation.
    fn naive(p: &Problem<'_>, g: &[f32]) -> (Vec<f64>, Vec<f64>) {
        let (n, na, d) = (p.n_contrast, p.n_anchor, p.dim);
        let tau = f64::from(p.temperature);
        let z = |i: usize| &p.z[i * d..(i + 1) * d];
        let s = |i: usize, j: usize| {
            z(i).iter()
                .zip(z(j))
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum::<f64>()
                / tau
        };
        let lse: Vec<f64> = (0..na)
            .map(|i| {
                let m = (0..n)
                    .filter(|&a| a != i)
                    .map(|a| s(i, a))
                    .fold(f64::NEG_INFINITY, f64::max);
                m + (0..n)
                    .filter(|&a| a != i)
                    .map(|a| (s(i, a) - m).exp())
                    .sum::<f64>()
                    .ln()
            })
            .collect();
        let mut grad = vec![0.0f64; n * d];
        for i in 0..na {
            for j in (0..n).filter(|&j| j != i) {
                let w = f64::from(g[i]) * (s(i, j) - lse[i]).exp() / tau;
                for t in 0..d {
                    grad[j * d + t] += w * f64::from(z(i)[t]);
                    grad[i * d + t] += w * f64::from(z(j)[t]);
                }
            }
        }
        (lse, grad)
    }

    #[test]
    fn every_instruction_set_matches_plain_f64_on_awkward_sizes() {
        let isas: Vec<Isa> = Isa::ALL.into_iter().filter(|i| i.is_available()).collect();
        eprintln!("instruction sets checked: {isas:?}");
        let mut rng = StdRng::seed_from_u64(11);
        let mut cases = 0;
        for n in [1usize, 2, 31, 257, 613] {
            for d in [3usize, 8, 128] {
                for tau in [0.005f32, 0.1, 1.0] {
                    // All rows anchors (contrast mode all), then half (contrast mode one with
                    // two views); the features are unit vectors, as the loss normalises them,
                    // except at tau = 1, where their norms vary up to 3.
                    for na in [n, n.div_ceil(2)] {
                        let mut z: Vec<f32> =
                            (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect();
                        for row in z.chunks_mut(d) {
                            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                            let target = if tau == 1.0 {
                                rng.random_range(0.1..3.0)
                            } else {
                                1.0
                            };
                            row.iter_mut().for_each(|v| *v *= target / norm);
                        }
                        let g: Vec<f32> = (0..na).map(|_| rng.random_range(-1.0..1.0)).collect();
                        let p = Problem {
                            z: &z,
                            n_contrast: n,
                            n_anchor: na,
                            dim: d,
                            temperature: tau,
                        };
                        let (want_lse, want_grad) = naive(&p, &g);
                        for &isa in &isas {
                            let what = format!("{isa} n={n} na={na} d={d} tau={tau}");
                            let lse = lse_with(&p, isa);
                            for (a, b) in lse.iter().zip(&want_lse) {
                                let ok = if n < 2 {
                                    *a == f32::NEG_INFINITY
                                } else {
                                    (f64::from(*a) - b).abs() <= 1e-4 * b.abs().max(1.0)
                                };
                                assert!(ok, "{what}: lse {a} vs {b}");
                            }
                            if n < 2 {
                                continue;
                            }
                            // The gradient from the f64 log-sum-exps, so that only the
                            // backward is under test here.
                            let lse64: Vec<f32> = want_lse.iter().map(|&v| v as f32).collect();
                            let grad = lse_backward_with(&p, &lse64, &g, isa);
                            let scale = want_grad
                                .iter()
                                .fold(0.0f64, |m, v| m.max(v.abs()))
                                .max(1e-12);
                            for (k, (a, b)) in grad.iter().zip(&want_grad).enumerate() {
                                let dev = (f64::from(*a) - b).abs() / scale;
                                assert!(
                                    dev <= 1e-4,
                                    "{what}: gradient {k}: {a} vs {b} (scale {scale})"
                                );
                            }
                            cases += 1;
                        }
                    }
                }
            }
        }
        // 4 sizes with pairs x 3 dimensions x 3 temperatures x 2 anchor counts.
        assert_eq!(cases, 72 * isas.len());
    }

    #[test]
    fn a_pair_gets_a_softmax_weight_of_exactly_one_on_every_instruction_set() {
        // With two contrast rows each row's only entry is the other, so p_01 = p_10 = 1
        // exactly when s_01 and s_10 are the same f32 (which the backward's column term
        // relies on); with g = (1, 0) the gradient is then exactly (z_1, z_0) / tau.
        let mut rng = StdRng::seed_from_u64(5);
        let d = 128;
        let z: Vec<f32> = (0..2 * d).map(|_| rng.random_range(-1.0..1.0)).collect();
        let tau = 0.07f32;
        let p = Problem {
            z: &z,
            n_contrast: 2,
            n_anchor: 2,
            dim: d,
            temperature: tau,
        };
        for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
            let lse = lse_with(&p, isa);
            assert_eq!(lse[0], lse[1], "{isa}");
            let grad = lse_backward_with(&p, &lse, &[1.0, 0.0], isa);
            let want: Vec<f32> = z[d..]
                .iter()
                .chain(&z[..d])
                .map(|v| v * (1.0 / tau))
                .collect();
            assert_eq!(grad, want, "{isa}");
        }
    }

    #[test]
    fn instruction_sets_are_forced_by_name_or_per_thread() {
        assert_eq!("avx2".parse::<Isa>(), Ok(Isa::Avx2));
        assert_eq!(" portable\n".parse::<Isa>(), Ok(Isa::Portable));
        let e = "sse".parse::<Isa>().unwrap_err();
        assert!(
            e.starts_with("SCL_CPU_ISA = sse is not allowed: use avx512, avx2 or portable"),
            "{e}"
        );
        let before = Isa::detect();
        let inside = super::with_isa(Isa::Portable, || {
            std::thread::spawn(Isa::detect)
                .join()
                .map(|other| (Isa::detect(), other))
        });
        // Forced on this thread only (another thread sees the process-wide choice);
        // restored afterwards.
        let (here, other) = inside.unwrap();
        assert_eq!((here, other), (Isa::Portable, before));
        assert_eq!(Isa::detect(), before);
        let caught = std::panic::catch_unwind(|| {
            super::with_isa(Isa::Portable, || panic!("inside"));
        });
        assert!(caught.is_err());
        assert_eq!(Isa::detect(), before, "restored after a panic");
    }

    #[test]
    fn a_row_with_one_contrast_row_has_no_entries() {
        let z = [0.5f32, -0.5];
        let p = Problem {
            z: &z,
            n_contrast: 1,
            n_anchor: 1,
            dim: 2,
            temperature: 0.1,
        };
        assert_eq!(lse_with(&p, Isa::Portable), vec![f32::NEG_INFINITY]);
        assert_eq!(
            lse_backward_with(&p, &[0.0], &[1.0], Isa::Portable),
            vec![0.0, 0.0]
        );
    }

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
