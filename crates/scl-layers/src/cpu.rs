//! The gradients of a 2-D convolution on the CPU, for `f32` in NCHW layout: im2col / col2im
//! around one tuned GEMM per chunk of images (the `gemm` crate: AVX-512, AVX2 + FMA or
//! portable kernels picked at run time; multi-threaded with rayon).
//!
//! Notation: input `x` `[N, C, H, W]`, weight `w` `[O, C, KH, KW]`, output gradient `g`
//! `[N, O, Ho, Wo]`; `K = C KH KW` (a column of the unfolded input), `P = Ho Wo`. For a chunk
//! of `nb` images, `cols` `[K, nb P]` is the unfolded input (`cols[(c, i, j), (b, y, x)] =
//! x[b, c, y sh + i dh - ph, x sw + j dw - pw]`, 0 outside the image) and `gc` `[O, nb P]`
//! the chunk's output gradient. Then
//!
//! ```text
//! dw  += gc cols^T            (one GEMM per chunk, M = O, N = K, K = nb P)
//! dcols = w^T gc              (one GEMM per chunk, M = K, N = nb P, K = O)
//! dx    = col2im(dcols)       (each input plane gathers its own rows: no write conflicts)
//! ```
//!
//! A chunk holds enough images that `nb P >= 1024` (deep layers have small planes; one GEMM
//! per image would stream `dw` through memory once per image), capped so that `cols` stays
//! under 32 MiB.

use rayon::prelude::*;

/// The geometry of one convolution (groups = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    /// Images.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height and width.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub o: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride (height, width).
    pub stride: [usize; 2],
    /// Zero padding on each side (height, width).
    pub padding: [usize; 2],
    /// Dilation (height, width).
    pub dilation: [usize; 2],
}

impl ConvShape {
    /// Output height and width.
    pub fn output(&self) -> [usize; 2] {
        let out = |size: usize, k: usize, s: usize, p: usize, d: usize| {
            (size + 2 * p).saturating_sub(d * (k - 1) + 1) / s + 1
        };
        [
            out(
                self.h,
                self.kernel[0],
                self.stride[0],
                self.padding[0],
                self.dilation[0],
            ),
            out(
                self.w,
                self.kernel[1],
                self.stride[1],
                self.padding[1],
                self.dilation[1],
            ),
        ]
    }

    /// `K = C KH KW`, the length of one unfolded column.
    pub fn k(&self) -> usize {
        self.c * self.kernel[0] * self.kernel[1]
    }

    /// Images per chunk (see the module documentation).
    fn chunk(&self) -> usize {
        let [ho, wo] = self.output();
        let p = (ho * wo).max(1);
        let want = 1024usize.div_ceil(p);
        let cap = ((32 << 20) / 4 / (self.k() * p).max(1)).max(1);
        want.min(cap).clamp(1, self.n.max(1))
    }

    fn check(&self, x: Option<&[f32]>, w: Option<&[f32]>, g: &[f32]) {
        assert!(
            self.kernel[0] > 0 && self.kernel[1] > 0 && self.stride[0] > 0 && self.stride[1] > 0,
            "kernel and stride must be positive"
        );
        assert!(
            self.dilation[0] > 0 && self.dilation[1] > 0,
            "dilation must be positive"
        );
        let [ho, wo] = self.output();
        assert_eq!(g.len(), self.n * self.o * ho * wo, "output gradient size");
        if let Some(x) = x {
            assert_eq!(x.len(), self.n * self.c * self.h * self.w, "input size");
        }
        if let Some(w) = w {
            assert_eq!(w.len(), self.o * self.k(), "weight size");
        }
    }
}

/// The gradient with respect to the weight, `[O, C, KH, KW]` flattened.
///
/// # Panics
/// When a slice does not have the size `shape` gives it.
pub fn weight_grad(shape: &ConvShape, x: &[f32], g: &[f32]) -> Vec<f32> {
    shape.check(Some(x), None, g);
    let (k, o) = (shape.k(), shape.o);
    let mut dw = vec![0.0f32; o * k];
    let nb = shape.chunk();
    let mut cols = Vec::new();
    let mut gc = Vec::new();
    for (index, b0) in (0..shape.n).step_by(nb).enumerate() {
        let b1 = (b0 + nb).min(shape.n);
        let t = im2col(shape, x, b0, b1, &mut cols);
        gather_output_grad(shape, g, b0, b1, &mut gc);
        // dw[O, K] (+)= gc[O, t] cols[K, t]^T
        crate::gemm::sgemm(
            crate::gemm::Dims { m: o, n: k, k: t },
            (&mut dw, k),
            index > 0,
            (&gc, t, 1),
            (&cols, 1, t),
        );
    }
    dw
}

/// The gradient with respect to the input, `[N, C, H, W]` flattened.
///
/// # Panics
/// When a slice does not have the size `shape` gives it.
pub fn input_grad(shape: &ConvShape, w: &[f32], g: &[f32]) -> Vec<f32> {
    shape.check(None, Some(w), g);
    let (k, o) = (shape.k(), shape.o);
    let plane = shape.h * shape.w;
    let mut dx = vec![0.0f32; shape.n * shape.c * plane];
    let nb = shape.chunk();
    let mut gc = Vec::new();
    let mut dcols = Vec::new();
    for b0 in (0..shape.n).step_by(nb) {
        let b1 = (b0 + nb).min(shape.n);
        gather_output_grad(shape, g, b0, b1, &mut gc);
        let [ho, wo] = shape.output();
        let t = (b1 - b0) * ho * wo;
        dcols.clear();
        dcols.resize(k * t, 0.0);
        // dcols[K, t] = w[O, K]^T gc[O, t]
        crate::gemm::sgemm(
            crate::gemm::Dims { m: k, n: t, k: o },
            (&mut dcols, t),
            false,
            (w, 1, k),
            (&gc, t, 1),
        );
        col2im(
            shape,
            &dcols,
            &mut dx[b0 * shape.c * plane..b1 * shape.c * plane],
        );
    }
    dx
}

/// Rows `(c, i, j)` of `cols` for images `b0..b1`; returns the row length `(b1 - b0) P`.
fn im2col(shape: &ConvShape, x: &[f32], b0: usize, b1: usize, cols: &mut Vec<f32>) -> usize {
    let [ho, wo] = shape.output();
    let [kh, kw] = shape.kernel;
    let (p, t) = (ho * wo, (b1 - b0) * ho * wo);
    cols.clear();
    cols.resize(shape.k() * t, 0.0);
    let (h, w, c) = (shape.h, shape.w, shape.c);
    cols.par_chunks_mut(t).enumerate().for_each(|(row, out)| {
        let (ch, i, j) = (row / (kh * kw), (row / kw) % kh, row % kw);
        for b in b0..b1 {
            let src = &x[(b * c + ch) * h * w..(b * c + ch + 1) * h * w];
            let dst = &mut out[(b - b0) * p..(b - b0 + 1) * p];
            for y in 0..ho {
                let Some(iy) = source(
                    y,
                    i,
                    shape.stride[0],
                    shape.padding[0],
                    shape.dilation[0],
                    h,
                ) else {
                    continue;
                };
                let line = &src[iy * w..(iy + 1) * w];
                let dst = &mut dst[y * wo..(y + 1) * wo];
                let [sw, pw, dw] = [shape.stride[1], shape.padding[1], shape.dilation[1]];
                if sw == 1 && dw == 1 {
                    // Contiguous: the valid run of x is one copy.
                    let (lo, hi) = valid_run(wo, j, pw, w);
                    if lo < hi {
                        let start = lo + j - pw;
                        dst[lo..hi].copy_from_slice(&line[start..start + (hi - lo)]);
                    }
                } else {
                    for (xo, d) in dst.iter_mut().enumerate() {
                        if let Some(ix) = source(xo, j, sw, pw, dw, w) {
                            *d = line[ix];
                        }
                    }
                }
            }
        }
    });
    t
}

/// The rows of `dcols` (a chunk of images) added into the planes of the chunk's `dx` that
/// they came from.
fn col2im(shape: &ConvShape, dcols: &[f32], dx: &mut [f32]) {
    let [ho, wo] = shape.output();
    let [kh, kw] = shape.kernel;
    let (h, w, c, p) = (shape.h, shape.w, shape.c, ho * wo);
    let t = dcols.len() / shape.k().max(1);
    dx.par_chunks_mut(h * w)
        .enumerate()
        .for_each(|(index, plane)| {
            let (b, ch) = (index / c, index % c);
            for i in 0..kh {
                for j in 0..kw {
                    let row = &dcols[((ch * kh + i) * kw + j) * t + b * p..][..p];
                    for y in 0..ho {
                        let Some(iy) = source(
                            y,
                            i,
                            shape.stride[0],
                            shape.padding[0],
                            shape.dilation[0],
                            h,
                        ) else {
                            continue;
                        };
                        let line = &mut plane[iy * w..(iy + 1) * w];
                        let src = &row[y * wo..(y + 1) * wo];
                        let [sw, pw, dw] = [shape.stride[1], shape.padding[1], shape.dilation[1]];
                        if sw == 1 && dw == 1 {
                            let (lo, hi) = valid_run(wo, j, pw, w);
                            if lo < hi {
                                let start = lo + j - pw;
                                for (d, s) in
                                    line[start..start + (hi - lo)].iter_mut().zip(&src[lo..hi])
                                {
                                    *d += s;
                                }
                            }
                        } else {
                            for (xo, s) in src.iter().enumerate() {
                                if let Some(ix) = source(xo, j, sw, pw, dw, w) {
                                    line[ix] += s;
                                }
                            }
                        }
                    }
                }
            }
        });
}

/// `gc[o, (b - b0) P + q] = g[b, o, q]` for images `b0..b1`.
fn gather_output_grad(shape: &ConvShape, g: &[f32], b0: usize, b1: usize, gc: &mut Vec<f32>) {
    let [ho, wo] = shape.output();
    let (p, o) = (ho * wo, shape.o);
    let t = (b1 - b0) * p;
    gc.clear();
    gc.resize(o * t, 0.0);
    gc.par_chunks_mut(t).enumerate().for_each(|(oc, row)| {
        for b in b0..b1 {
            row[(b - b0) * p..(b - b0 + 1) * p]
                .copy_from_slice(&g[(b * o + oc) * p..(b * o + oc + 1) * p]);
        }
    });
}

/// The input coordinate that output coordinate `out` reads at kernel offset `k`, if inside.
#[inline]
fn source(
    out: usize,
    k: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    size: usize,
) -> Option<usize> {
    (out * stride + k * dilation)
        .checked_sub(pad)
        .filter(|&i| i < size)
}

/// For stride 1 and dilation 1: the output columns `lo..hi` whose input column
/// `x + j - pad` lies in `0..size`.
#[inline]
fn valid_run(wo: usize, j: usize, pad: usize, size: usize) -> (usize, usize) {
    let lo = pad.saturating_sub(j).min(wo);
    let hi = (size + pad).saturating_sub(j).min(wo);
    (lo, hi.max(lo))
}

#[cfg(test)]
mod tests {
    use super::{ConvShape, input_grad, weight_grad};
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// Both gradients from the definition, in f64 loops.
    fn naive(s: &ConvShape, x: &[f32], w: &[f32], g: &[f32]) -> (Vec<f64>, Vec<f64>) {
        let [ho, wo] = s.output();
        let [kh, kw] = s.kernel;
        let mut dx = vec![0.0f64; x.len()];
        let mut dw = vec![0.0f64; w.len()];
        for b in 0..s.n {
            for o in 0..s.o {
                for y in 0..ho {
                    for xo in 0..wo {
                        let go = f64::from(g[((b * s.o + o) * ho + y) * wo + xo]);
                        for c in 0..s.c {
                            for i in 0..kh {
                                for j in 0..kw {
                                    let iy = (y * s.stride[0] + i * s.dilation[0]) as isize
                                        - s.padding[0] as isize;
                                    let ix = (xo * s.stride[1] + j * s.dilation[1]) as isize
                                        - s.padding[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize
                                    {
                                        continue;
                                    }
                                    let xi =
                                        ((b * s.c + c) * s.h + iy as usize) * s.w + ix as usize;
                                    let wi = ((o * s.c + c) * kh + i) * kw + j;
                                    dx[xi] += go * f64::from(w[wi]);
                                    dw[wi] += go * f64::from(x[xi]);
                                }
                            }
                        }
                    }
                }
            }
        }
        (dx, dw)
    }

    /// `(n, c, h, w, o, kernel, stride, padding, dilation)`.
    type Case = (
        usize,
        usize,
        usize,
        usize,
        usize,
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
    );

    fn close(what: &str, got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let scale = want.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(
                (f64::from(*a) - b).abs() <= 1e-5 * scale,
                "{what}: entry {i}: {a} vs {b} (scale {scale})"
            );
        }
    }

    #[test]
    fn both_gradients_match_the_definition_on_awkward_shapes() {
        let mut rng = StdRng::seed_from_u64(3);
        // (n, c, h, w, o, kernel, stride, padding, dilation): 3x3 with padding, stride 2,
        // 1x1, batch 1, channel counts that are no multiple of a vector width, non-square
        // inputs and kernels, dilation, a plane smaller than the kernel's reach, and enough
        // images with small planes to span several chunks.
        let cases: [Case; 9] = [
            (2, 3, 8, 8, 5, [3, 3], [1, 1], [1, 1], [1, 1]),
            (3, 5, 9, 7, 6, [3, 3], [2, 2], [1, 1], [1, 1]),
            (1, 7, 6, 10, 3, [1, 1], [1, 1], [0, 0], [1, 1]),
            (2, 4, 7, 7, 9, [1, 1], [2, 2], [0, 0], [1, 1]),
            (1, 2, 5, 9, 4, [3, 2], [1, 2], [2, 0], [1, 1]),
            (2, 3, 9, 9, 2, [3, 3], [1, 1], [2, 2], [2, 2]),
            (2, 3, 2, 3, 4, [3, 3], [1, 1], [1, 1], [1, 1]),
            (3, 3, 11, 11, 8, [7, 7], [2, 2], [3, 3], [1, 1]),
            (300, 3, 2, 2, 5, [3, 3], [2, 2], [1, 1], [1, 1]),
        ];
        for (n, c, h, w, o, kernel, stride, padding, dilation) in cases {
            let s = ConvShape {
                n,
                c,
                h,
                w,
                o,
                kernel,
                stride,
                padding,
                dilation,
            };
            let [ho, wo] = s.output();
            let x: Vec<f32> = (0..n * c * h * w)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let wt: Vec<f32> = (0..o * s.k())
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let g: Vec<f32> = (0..n * o * ho * wo)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let (dx, dw) = naive(&s, &x, &wt, &g);
            close(&format!("{s:?} input"), &input_grad(&s, &wt, &g), &dx);
            close(&format!("{s:?} weight"), &weight_grad(&s, &x, &g), &dw);
        }
    }
}

#[cfg(test)]
mod timing {
    use super::{ConvShape, input_grad, weight_grad};
    use std::time::Instant;

    /// `cargo test -p scl-layers --release -- --ignored --nocapture`: GFLOP/s of both
    /// gradients at ResNet-18's stage shapes and of the bare GEMM (a measurement, no assertion).
    #[test]
    #[ignore]
    fn gradient_throughput() {
        let gflop = |s: &ConvShape| {
            let [ho, wo] = s.output();
            2.0 * (s.n * s.o * ho * wo * s.k()) as f64 / 1e9
        };
        for (c, hw, o, stride) in [
            (64, 32, 64, 1),
            (128, 16, 128, 1),
            (256, 8, 256, 1),
            (512, 4, 512, 1),
            (64, 32, 128, 2),
        ] {
            let s = ConvShape {
                n: 128,
                c,
                h: hw,
                w: hw,
                o,
                kernel: [3, 3],
                stride: [stride, stride],
                padding: [1, 1],
                dilation: [1, 1],
            };
            let [ho, wo] = s.output();
            let x = vec![0.5f32; s.n * c * hw * hw];
            let w = vec![0.25f32; o * s.k()];
            let g = vec![0.1f32; s.n * o * ho * wo];
            let t = Instant::now();
            let dx = input_grad(&s, &w, &g);
            let tx = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let dw = weight_grad(&s, &x, &g);
            let tw = t.elapsed().as_secs_f64();
            assert!(dx[0].is_finite() && dw[0].is_finite());
            eprintln!(
                "C {c} -> {o}, {hw}x{hw}, stride {stride}: input grad {tx:.3} s ({:.1} GFLOP/s), weight grad {tw:.3} s ({:.1} GFLOP/s)",
                gflop(&s) / tx,
                gflop(&s) / tw
            );
        }
        for (m, n, k) in [(576, 1024, 64), (64, 576, 1024), (1024, 1024, 1024)] {
            let a = vec![0.5f32; m * k];
            let b = vec![0.5f32; k * n];
            let mut c = vec![0.0f32; m * n];
            let t = Instant::now();
            for _ in 0..10 {
                crate::gemm::sgemm(
                    crate::gemm::Dims { m, n, k },
                    (&mut c, n),
                    false,
                    (&a, k, 1),
                    (&b, n, 1),
                );
            }
            let secs = t.elapsed().as_secs_f64() / 10.0;
            eprintln!(
                "gemm {m}x{n}x{k}: {:.1} GFLOP/s",
                2.0 * (m * n * k) as f64 / secs / 1e9
            );
        }
    }
}
