//! A 2-D convolution and its gradients on the CPU, for `f32` in NCHW layout: im2col / col2im
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
//! yc    = w cols (+ bias)     (the forward: one GEMM per chunk, M = O, N = nb P, K = K)
//! dw  += gc cols^T            (one GEMM per chunk, M = O, N = K, K = nb P)
//! dcols = w^T gc              (one GEMM per chunk, M = K, N = nb P, K = O)
//! dx    = col2im(dcols)       (each input plane gathers its own rows: no write conflicts)
//! ```
//!
//! A chunk holds enough images that `nb P >= 1024` (deep layers have small planes; one GEMM
//! per image would stream `dw` through memory once per image), capped so that the `cols` of
//! all cores together stay under 32 MiB. The chunks are spread over the cores: each core
//! runs whole chunks with a single-threaded GEMM (for the weight gradient into its own copy
//! of `dw`, summed at the end), so the small products of narrow layers (DenseNet-BC's 12 to 48
//! output channels on 8x8 planes) pay no synchronisation inside the GEMM. Only a call with a
//! single image, or a weight gradient too large to copy per core, multi-threads inside one
//! GEMM instead.

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

    /// The input row that output row `y` reads at kernel row `i`, if inside the plane.
    fn source_row(&self, y: usize, i: usize) -> Option<usize> {
        source(
            y,
            i,
            self.stride[0],
            self.padding[0],
            self.dilation[0],
            self.h,
        )
    }

    /// `K = C KH KW`, the length of one unfolded column.
    pub fn k(&self) -> usize {
        self.c * self.kernel[0] * self.kernel[1]
    }

    /// How a call is cut: images per chunk and the number of chunk groups run side by side
    /// (one per core; 1 means the chunks run one after another, each GEMM multi-threaded).
    /// `partial` is the size in floats of what each group accumulates on its own (`dw` for
    /// the weight gradient, 0 for the input gradient). See the module documentation.
    fn plan(&self, partial: usize) -> Plan {
        let [ho, wo] = self.output();
        let p = (ho * wo).max(1);
        let n = self.n.max(1);
        let threads = rayon::current_num_threads().max(1);
        // At most 64 MiB of per-group partial results.
        let by_memory = ((64 << 20) / 4 / partial.max(1)).max(1);
        let groups = threads.min(n).min(by_memory);
        let cols_cap = (32 << 20) / 4 / groups;
        let want = 1024usize.div_ceil(p);
        let cap = (cols_cap / (self.k() * p).max(1)).max(1);
        let images = want.min(cap).clamp(1, n);
        if groups < 2 {
            return Plan { images, groups: 1 };
        }
        // A whole number of chunks per group, as even as the images allow.
        let chunks = n.div_ceil(images).max(groups).div_ceil(groups) * groups;
        Plan {
            images: n.div_ceil(chunks),
            groups,
        }
    }

    fn check(&self, x: Option<&[f32]>, w: Option<&[f32]>, g: Option<&[f32]>) {
        assert!(
            self.kernel[0] > 0 && self.kernel[1] > 0 && self.stride[0] > 0 && self.stride[1] > 0,
            "kernel and stride must be positive"
        );
        assert!(
            self.dilation[0] > 0 && self.dilation[1] > 0,
            "dilation must be positive"
        );
        let [ho, wo] = self.output();
        if let Some(g) = g {
            assert_eq!(g.len(), self.n * self.o * ho * wo, "output gradient size");
        }
        if let Some(x) = x {
            assert_eq!(x.len(), self.n * self.c * self.h * self.w, "input size");
        }
        if let Some(w) = w {
            assert_eq!(w.len(), self.o * self.k(), "weight size");
        }
    }
}

/// How [`forward`], [`weight_grad`] and [`input_grad`] cut a call (see [`ConvShape::plan`]).
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Images per chunk.
    images: usize,
    /// Chunk groups run side by side, one per core; 1: one after another.
    groups: usize,
}

impl Plan {
    /// The chunks `(b0, b1)` of group `group` of `n` images.
    fn chunks(&self, n: usize, group: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..n)
            .step_by(self.images)
            .skip(group)
            .step_by(self.groups)
            .map(move |b0| (b0, (b0 + self.images).min(n)))
    }

    /// Whether the work inside one chunk (the GEMM, im2col, col2im) runs multi-threaded.
    fn inner_parallel(&self) -> bool {
        self.groups == 1
    }
}

/// The gradient with respect to the weight, `[O, C, KH, KW]` flattened.
///
/// # Panics
/// When a slice does not have the size `shape` gives it.
pub fn weight_grad(shape: &ConvShape, x: &[f32], g: &[f32]) -> Vec<f32> {
    shape.check(Some(x), None, Some(g));
    let (k, o) = (shape.k(), shape.o);
    let plan = shape.plan(o * k);
    let group = |group: usize| {
        let mut dw = vec![0.0f32; o * k];
        let mut cols = Vec::new();
        let mut gc = Vec::new();
        for (index, (b0, b1)) in plan.chunks(shape.n, group).enumerate() {
            let parallel = plan.inner_parallel();
            let t = im2col(shape, x, (b0, b1), parallel, &mut cols);
            gather_output_grad(shape, g, (b0, b1), parallel, &mut gc);
            // dw[O, K] (+)= gc[O, t] cols[K, t]^T
            crate::gemm::sgemm(
                crate::gemm::Dims { m: o, n: k, k: t },
                (&mut dw, k),
                index > 0,
                (&gc, t, 1),
                (&cols, 1, t),
                parallel,
            );
        }
        dw
    };
    if plan.groups == 1 {
        return group(0);
    }
    let partials: Vec<Vec<f32>> = (0..plan.groups).into_par_iter().map(group).collect();
    let mut partials = partials.into_iter();
    let mut dw = partials.next().unwrap_or_else(|| vec![0.0; o * k]);
    for partial in partials {
        for (d, p) in dw.iter_mut().zip(&partial) {
            *d += p;
        }
    }
    dw
}

/// The gradient with respect to the input, `[N, C, H, W]` flattened.
///
/// # Panics
/// When a slice does not have the size `shape` gives it.
pub fn input_grad(shape: &ConvShape, w: &[f32], g: &[f32]) -> Vec<f32> {
    shape.check(None, Some(w), Some(g));
    let (k, o) = (shape.k(), shape.o);
    let image = shape.c * shape.h * shape.w;
    let mut dx = vec![0.0f32; shape.n * image];
    let plan = shape.plan(0);
    let [ho, wo] = shape.output();
    // One chunk of images: its rows of `dx` (`dx_chunk`, zero on entry) from its output
    // gradient.
    run_chunks(
        plan,
        shape.n,
        image,
        &mut dx,
        |(b0, b1), dx_chunk, [gc, dcols]| {
            let parallel = plan.inner_parallel();
            gather_output_grad(shape, g, (b0, b1), parallel, gc);
            let t = (b1 - b0) * ho * wo;
            dcols.clear();
            dcols.resize(k * t, 0.0);
            // dcols[K, t] = w[O, K]^T gc[O, t]
            crate::gemm::sgemm(
                crate::gemm::Dims { m: k, n: t, k: o },
                (dcols, t),
                false,
                (w, 1, k),
                (gc, t, 1),
                parallel,
            );
            col2im(shape, dcols, parallel, dx_chunk);
        },
    );
    dx
}

/// The convolution, `[N, O, Ho, Wo]` flattened: per chunk `yc[O, t] = w[O, K] cols[K, t]`,
/// then each image's rows put in place and the bias added.
///
/// # Panics
/// When a slice does not have the size `shape` gives it, or `bias` is not `[O]`.
pub fn forward(shape: &ConvShape, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    shape.check(Some(x), Some(w), None);
    if let Some(bias) = bias {
        assert_eq!(bias.len(), shape.o, "bias size");
    }
    let (k, o) = (shape.k(), shape.o);
    let [ho, wo] = shape.output();
    let p = ho * wo;
    let mut y = vec![0.0f32; shape.n * o * p];
    let plan = shape.plan(0);
    run_chunks(
        plan,
        shape.n,
        o * p,
        &mut y,
        |(b0, b1), y_chunk, [cols, out]| {
            let parallel = plan.inner_parallel();
            let t = im2col(shape, x, (b0, b1), parallel, cols);
            let dims = crate::gemm::Dims { m: o, n: t, k };
            if b1 - b0 == 1 {
                // One image: the product is its output already.
                crate::gemm::sgemm(dims, (y_chunk, t), false, (w, k, 1), (cols, t, 1), parallel);
            } else {
                out.clear();
                out.resize(o * t, 0.0);
                crate::gemm::sgemm(dims, (out, t), false, (w, k, 1), (cols, t, 1), parallel);
                // out[o, (b - b0) P + q] -> y[b, o, q]
                for (b, image) in y_chunk.chunks_mut(o * p).enumerate() {
                    for (oc, row) in image.chunks_mut(p).enumerate() {
                        row.copy_from_slice(&out[oc * t + b * p..][..p]);
                    }
                }
            }
            if let Some(bias) = bias {
                for image in y_chunk.chunks_mut(o * p) {
                    for (row, &b) in image.chunks_mut(p).zip(bias) {
                        row.iter_mut().for_each(|v| *v += b);
                    }
                }
            }
        },
    );
    y
}

/// A chunk's images `(b0, b1)` and its rows of the output.
type ChunkRows<'a> = ((usize, usize), &'a mut [f32]);

/// Runs `f(chunk, out_chunk, scratch)` for every chunk of `plan` over `n` images, where
/// `out_chunk` is the chunk's rows of `out` (`per_image` values per image): one chunk after
/// another, or the chunk groups side by side, each with its own two scratch buffers.
fn run_chunks<F>(plan: Plan, n: usize, per_image: usize, out: &mut [f32], f: F)
where
    F: Fn((usize, usize), &mut [f32], [&mut Vec<f32>; 2]) + Sync,
{
    if plan.groups == 1 {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (b0, b1) in plan.chunks(n, 0) {
            f(
                (b0, b1),
                &mut out[b0 * per_image..b1 * per_image],
                [&mut a, &mut b],
            );
        }
        return;
    }
    // The chunks own disjoint rows of `out`: hand each group its own chunks' rows.
    let mut per_group: Vec<Vec<ChunkRows<'_>>> = (0..plan.groups).map(|_| Vec::new()).collect();
    let mut rest: &mut [f32] = out;
    for (index, b0) in (0..n).step_by(plan.images).enumerate() {
        let b1 = (b0 + plan.images).min(n);
        let (head, tail) = std::mem::take(&mut rest).split_at_mut((b1 - b0) * per_image);
        per_group[index % plan.groups].push(((b0, b1), head));
        rest = tail;
    }
    per_group.into_par_iter().for_each(|chunks| {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (range, out_chunk) in chunks {
            f(range, out_chunk, [&mut a, &mut b]);
        }
    });
}

/// `f(index, row)` for the rows of length `len` of `values`, on every core or on this one.
fn for_each_row<F>(values: &mut [f32], len: usize, parallel: bool, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    if parallel {
        values
            .par_chunks_mut(len)
            .enumerate()
            .for_each(|(i, row)| f(i, row));
    } else {
        values
            .chunks_mut(len)
            .enumerate()
            .for_each(|(i, row)| f(i, row));
    }
}

/// Rows `(c, i, j)` of `cols` for images `b0..b1`; returns the row length `(b1 - b0) P`.
fn im2col(
    shape: &ConvShape,
    x: &[f32],
    (b0, b1): (usize, usize),
    parallel: bool,
    cols: &mut Vec<f32>,
) -> usize {
    let [ho, wo] = shape.output();
    let [kh, kw] = shape.kernel;
    let (p, t) = (ho * wo, (b1 - b0) * ho * wo);
    cols.clear();
    cols.resize(shape.k() * t, 0.0);
    let (h, w, c) = (shape.h, shape.w, shape.c);
    let same = Shift::masks(shape);
    for_each_row(cols, t, parallel, |row, out| {
        let (ch, i, j) = (row / (kh * kw), (row / kw) % kh, row % kw);
        if let Some(masks) = &same {
            // The plane shifted by the kernel offset: one flat pass per image.
            let shift = Shift::new(shape, i, j);
            let mask = &masks[j * p..(j + 1) * p];
            for b in b0..b1 {
                let src = &x[(b * c + ch) * p..(b * c + ch + 1) * p];
                let dst = &mut out[(b - b0) * p..(b - b0 + 1) * p];
                let (lo, hi) = (shift.lo, shift.hi);
                let src = &src[shift.source(lo)..shift.source(hi)];
                for ((d, &v), &m) in dst[lo..hi].iter_mut().zip(src).zip(&mask[lo..hi]) {
                    *d = if m { v } else { 0.0 };
                }
            }
            return;
        }
        for b in b0..b1 {
            let src = &x[(b * c + ch) * h * w..(b * c + ch + 1) * h * w];
            let dst = &mut out[(b - b0) * p..(b - b0 + 1) * p];
            for y in 0..ho {
                let Some(iy) = shape.source_row(y, i) else {
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
fn col2im(shape: &ConvShape, dcols: &[f32], parallel: bool, dx: &mut [f32]) {
    let [ho, wo] = shape.output();
    let [kh, kw] = shape.kernel;
    let (h, w, c, p) = (shape.h, shape.w, shape.c, ho * wo);
    let t = dcols.len() / shape.k().max(1);
    let same = Shift::masks(shape);
    for_each_row(dx, h * w, parallel, |index, plane| {
        let (b, ch) = (index / c, index % c);
        for i in 0..kh {
            for j in 0..kw {
                let row = &dcols[((ch * kh + i) * kw + j) * t + b * p..][..p];
                if let Some(masks) = &same {
                    // The row added back shifted by the kernel offset, in one flat pass.
                    let shift = Shift::new(shape, i, j);
                    let mask = &masks[j * p..(j + 1) * p];
                    let (lo, hi) = (shift.lo, shift.hi);
                    let dst = &mut plane[shift.source(lo)..shift.source(hi)];
                    for ((d, &v), &m) in dst.iter_mut().zip(&row[lo..hi]).zip(&mask[lo..hi]) {
                        *d += if m { v } else { 0.0 };
                    }
                    continue;
                }
                for y in 0..ho {
                    let Some(iy) = shape.source_row(y, i) else {
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

/// For a convolution whose output plane has the input's size with stride 1 and dilation 1
/// (3x3 with padding 1, 1x1 without: most layers), output position `q = y W + x` reads input
/// position `q + delta` at kernel offset `(i, j)`, `delta = (i - ph) W + (j - pw)`, wherever
/// row `y + i - ph` and column `x + j - pw` lie inside the plane. im2col and col2im then run
/// one flat pass over the plane per offset, with a mask for the columns that would wrap into
/// the neighbouring row, instead of one short copy per row.
struct Shift {
    /// The first output position with a valid row (and `q + delta` inside the plane).
    lo: usize,
    /// One past the last such position.
    hi: usize,
    /// The offset from an output position to the input position it reads.
    delta: isize,
}

impl Shift {
    /// Per kernel column `j`, which output positions of the plane have a valid input column
    /// (`[KW, P]`); `None` when the convolution is not of this kind.
    fn masks(shape: &ConvShape) -> Option<Vec<bool>> {
        let same = shape.stride == [1, 1]
            && shape.dilation == [1, 1]
            && shape.output() == [shape.h, shape.w];
        if !same {
            return None;
        }
        let (w, p, pw) = (shape.w, shape.h * shape.w, shape.padding[1]);
        Some(
            (0..shape.kernel[1])
                .flat_map(|j| {
                    (0..p).map(move |q| (q % w + j).checked_sub(pw).is_some_and(|x| x < w))
                })
                .collect(),
        )
    }

    fn new(shape: &ConvShape, i: usize, j: usize) -> Shift {
        let (h, w) = (shape.h as isize, shape.w as isize);
        let dy = i as isize - shape.padding[0] as isize;
        let delta = dy * w + j as isize - shape.padding[1] as isize;
        let p = h * w;
        // Valid rows: 0 <= y + dy < h; and 0 <= q + delta < p.
        let lo = ((-dy).max(0) * w).max(-delta).clamp(0, p);
        let hi = ((h - dy).min(h) * w).min(p - delta).clamp(lo, p);
        // No position reads inside the plane (a kernel offset as far as the padding on a plane
        // that small, e.g. 1 x 1): an empty range whose source is in bounds too.
        let (lo, hi, delta) = if lo < hi { (lo, hi, delta) } else { (0, 0, 0) };
        Shift {
            lo: lo as usize,
            hi: hi as usize,
            delta,
        }
    }

    /// The input position that output position `q` (in `lo..=hi`) reads.
    fn source(&self, q: usize) -> usize {
        (q as isize + self.delta) as usize
    }
}

/// `gc[o, (b - b0) P + q] = g[b, o, q]` for images `b0..b1`.
fn gather_output_grad(
    shape: &ConvShape,
    g: &[f32],
    (b0, b1): (usize, usize),
    parallel: bool,
    gc: &mut Vec<f32>,
) {
    let [ho, wo] = shape.output();
    let (p, o) = (ho * wo, shape.o);
    let t = (b1 - b0) * p;
    gc.clear();
    gc.resize(o * t, 0.0);
    for_each_row(gc, t, parallel, |oc, row| {
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
    use super::{ConvShape, forward, input_grad, weight_grad};
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// The output (with `bias`) and both gradients from the definition, in f64 loops.
    fn naive(
        s: &ConvShape,
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        g: &[f32],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let [ho, wo] = s.output();
        let [kh, kw] = s.kernel;
        let mut out = vec![0.0f64; g.len()];
        let mut dx = vec![0.0f64; x.len()];
        let mut dw = vec![0.0f64; w.len()];
        for b in 0..s.n {
            for (o, &bias_o) in bias.iter().enumerate() {
                for y in 0..ho {
                    for xo in 0..wo {
                        let yi = ((b * s.o + o) * ho + y) * wo + xo;
                        let go = f64::from(g[yi]);
                        out[yi] += f64::from(bias_o);
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
                                    out[yi] += f64::from(x[xi]) * f64::from(w[wi]);
                                    dx[xi] += go * f64::from(w[wi]);
                                    dw[wi] += go * f64::from(x[xi]);
                                }
                            }
                        }
                    }
                }
            }
        }
        (out, dx, dw)
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
    fn output_and_both_gradients_match_the_definition_on_awkward_shapes() {
        let mut rng = StdRng::seed_from_u64(3);
        // (n, c, h, w, o, kernel, stride, padding, dilation): 3x3 with padding, stride 2,
        // 1x1, batch 1, channel counts that are no multiple of a vector width, non-square
        // inputs and kernels, dilation, a plane smaller than the kernel's reach, and enough
        // images with small planes to span several chunks, evenly or not.
        let cases: [Case; 10] = [
            (2, 3, 8, 8, 5, [3, 3], [1, 1], [1, 1], [1, 1]),
            (3, 5, 9, 7, 6, [3, 3], [2, 2], [1, 1], [1, 1]),
            (1, 7, 6, 10, 3, [1, 1], [1, 1], [0, 0], [1, 1]),
            (2, 4, 7, 7, 9, [1, 1], [2, 2], [0, 0], [1, 1]),
            (1, 2, 5, 9, 4, [3, 2], [1, 2], [2, 0], [1, 1]),
            (2, 3, 9, 9, 2, [3, 3], [1, 1], [2, 2], [2, 2]),
            (2, 3, 2, 3, 4, [3, 3], [1, 1], [1, 1], [1, 1]),
            (3, 3, 11, 11, 8, [7, 7], [2, 2], [3, 3], [1, 1]),
            (300, 3, 2, 2, 5, [3, 3], [2, 2], [1, 1], [1, 1]),
            (37, 5, 6, 6, 7, [3, 3], [1, 1], [1, 1], [1, 1]),
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
            let bias: Vec<f32> = (0..o).map(|_| rng.random_range(-1.0..1.0)).collect();
            let (y, dx, dw) = naive(&s, &x, &wt, &bias, &g);
            // One core (chunks one after another, each GEMM multi-threaded), two and three
            // (chunk groups side by side, unevenly filled with three).
            for threads in [1, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("a thread pool");
                pool.install(|| {
                    let what = |part: &str| format!("{s:?} {part}, {threads} threads");
                    close(&what("output"), &forward(&s, &x, &wt, Some(&bias)), &y);
                    close(&what("input"), &input_grad(&s, &wt, &g), &dx);
                    close(&what("weight"), &weight_grad(&s, &x, &g), &dw);
                });
            }
        }
    }
}

#[cfg(test)]
mod timing {
    use super::{ConvShape, input_grad, weight_grad};
    use std::time::Instant;

    /// `cargo test -p scl-layers --release -- --ignored --nocapture`: GFLOP/s of both
    /// gradients at ResNet-18's stage shapes and at every convolution of DenseNet-BC (batch 64 x
    /// 2), with their sums, and of the bare GEMM (a measurement, no assertion).
    #[test]
    #[ignore]
    fn gradient_throughput() {
        let gflop = |s: &ConvShape| {
            let [ho, wo] = s.output();
            2.0 * (s.n * s.o * ho * wo * s.k()) as f64 / 1e9
        };
        // (network, n, c, hw, o, kernel, stride, padding): ResNet-18's stage shapes at batch
        // 64 x 2, then DenseNet-BC's (growth 12, blocks of 6 on 8x8, 4x4 and 2x2 planes).
        let mut shapes = vec![
            ("resnet18", 128, 64, 32, 64, 3, 1, 1),
            ("resnet18", 128, 128, 16, 128, 3, 1, 1),
            ("resnet18", 128, 256, 8, 256, 3, 1, 1),
            ("resnet18", 128, 512, 4, 512, 3, 1, 1),
            ("resnet18", 128, 64, 32, 128, 3, 2, 1),
            ("densenet", 128, 3, 32, 64, 7, 2, 3),
        ];
        let (mut c, mut hw) = (64, 8);
        for stage in 0..3 {
            for _ in 0..6 {
                shapes.push(("densenet", 128, c, hw, 48, 1, 1, 0));
                shapes.push(("densenet", 128, 48, hw, 12, 3, 1, 1));
                c += 12;
            }
            if stage < 2 {
                shapes.push(("densenet", 128, c, hw, c / 2, 1, 1, 0));
                c /= 2;
                hw /= 2;
            }
        }
        let mut totals = std::collections::BTreeMap::<&str, [f64; 2]>::new();
        for (network, n, c, hw, o, k, stride, pad) in shapes {
            let s = ConvShape {
                n,
                c,
                h: hw,
                w: hw,
                o,
                kernel: [k, k],
                stride: [stride, stride],
                padding: [pad, pad],
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
            let total = totals.entry(network).or_default();
            total[0] += tx;
            total[1] += tw;
            eprintln!(
                "{network}: C {c} -> {o}, {hw}x{hw}, kernel {k}, stride {stride}: input grad {tx:.4} s ({:.1} GFLOP/s), weight grad {tw:.4} s ({:.1} GFLOP/s)",
                gflop(&s) / tx,
                gflop(&s) / tw
            );
        }
        for (network, [tx, tw]) in totals {
            eprintln!("{network}: the shapes above: input grad {tx:.4} s, weight grad {tw:.4} s");
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
                    true,
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
