//! The forward and backward work of one block of rows, written once over [`Simd`] and
//! compiled per instruction set (the `*_avx512`, `*_avx2` and `*_portable` entry points).
//!
//! A block is `PANELS` panels of `MR` rows; the columns are visited in chunks of `CHUNK`, each
//! chunk in panels of `NR = NV * LANES` columns. For one (row panel, column panel) the
//! similarities `s = (z_i / tau) . z_j` are accumulated in `MR x NV` registers by
//! [`tile_gemm`] and consumed there by the epilogue (the online log-sum-exp in the forward,
//! the softmax weights in the backward): no similarity tile is written to memory except the
//! `MR x CHUNK` weights that the backward's second product reads.

#[cfg(target_arch = "x86_64")]
use super::simd::{Avx2, Avx512};
use super::simd::{Portable, Simd, tile_gemm};
use std::cell::Cell;
use std::sync::OnceLock;

/// Row panels per block: 8 x 12 rows with AVX-512. A block's packed rows (`8 MR d` floats)
/// stay in L1/L2 while a chunk of columns is visited.
pub(super) const PANELS: usize = 8;
/// Columns per chunk: 256 packed columns of `d = 128` are 128 KiB, kept in L2 while every row
/// panel of the block passes over them. A multiple of every instruction set's `NR`.
pub(super) const CHUNK: usize = 256;

/// `BIAS[16 - t .. 32 - t]` has `-inf` in lane `t` and 0 elsewhere (self-pair masking); the
/// longest vector has 16 lanes.
const SELF_BIAS: [f32; 32] = {
    let mut b = [0.0f32; 32];
    b[16] = f32::NEG_INFINITY;
    b
};
/// `PAD_BIAS[16 - valid ..]` is 0 in the first `valid` lanes and `-inf` after (columns past
/// the last one).
const PAD_BIAS: [f32; 32] = {
    let mut b = [0.0f32; 32];
    let mut i = 16;
    while i < 32 {
        b[i] = f32::NEG_INFINITY;
        i += 1;
    }
    b
};

/// Everything a block reads, shared by all threads.
pub(super) struct Ctx<'a> {
    /// Contrast rows, `[n, d]` row-major.
    pub z: &'a [f32],
    /// Contrast rows.
    pub n: usize,
    /// Anchors (the first rows).
    pub na: usize,
    /// Feature dimension.
    pub d: usize,
    /// `1 / tau`.
    pub inv_tau: f32,
    /// The columns packed in panels of `NR`: `[n.div_ceil(NR)][d][NR]`, zero padded.
    pub packed: Vec<f32>,
}

/// What the backward reads beyond [`Ctx`].
pub(super) struct BackCtx<'a> {
    /// The shared inputs.
    pub ctx: Ctx<'a>,
    /// `z` with rows padded to `dp` values (a multiple of `NR`), or `z` itself when `d` is one.
    pub zp: std::borrow::Cow<'a, [f32]>,
    /// Row stride of `zp`.
    pub dp: usize,
    /// Upstream gradient per column, 0 for non-anchors and padding: `[n padded to NR]`.
    pub g: Vec<f32>,
    /// Log-sum-exp per column, `+inf` for non-anchors and padding (so that their weight
    /// `g exp(s - lse)` is exactly 0).
    pub l: Vec<f32>,
}

/// `[rows.div_ceil(mr)][d][mr]`: rows `i0 ..` of `z`, zero padded.
fn pack_rows(ctx: &Ctx<'_>, i0: usize, rows: usize, mr: usize) -> Vec<f32> {
    let d = ctx.d;
    let panels = rows.div_ceil(mr);
    let mut out = vec![0.0f32; panels * d * mr];
    for r in 0..rows {
        let (p, q) = (r / mr, r % mr);
        let src = &ctx.z[(i0 + r) * d..(i0 + r + 1) * d];
        for (k, &v) in src.iter().enumerate() {
            out[(p * d + k) * mr + q] = v;
        }
    }
    out
}

/// The `MR x NR` similarities `(z_i . z_j) / tau` of a packed row panel `a` and column panel
/// `b`. The dot product is scaled afterwards, not folded into `a`, so that `s_ij` and `s_ji`
/// are the same `f32` (the products commute inside the FMA): the backward reads `p_jk` off
/// row `k`, and a row and column whose only other entry is each other then get a softmax
/// weight of exactly 1, as in the forward.
#[inline(always)]
fn similarities<S: Simd, const MR: usize, const NV: usize>(
    s: S,
    d: usize,
    a: &[f32],
    b: &[f32],
    inv_tau: S::V,
) -> [[S::V; NV]; MR] {
    let mut acc = tile_gemm::<S, MR, NV, MR, 1>(s, [[s.zero(); NV]; MR], d, a, b, NV * S::LANES);
    // Plain loops, not `array::map`: the compiler does not inline `map` into the
    // `#[target_feature]` entry point, and outside it every vector operation became a call
    // with its operands spilled to the stack, once per tile.
    for row in &mut acc {
        for x in row.iter_mut() {
            *x = s.mul(*x, inv_tau);
        }
    }
    acc
}

/// Adds `-inf` to the entries of an `MR x NR` tile at rows `r0 ..` and columns `j0 ..` that
/// are self pairs.
#[inline(always)]
fn mask_self<S: Simd, const MR: usize, const NV: usize>(
    s: S,
    acc: &mut [[S::V; NV]; MR],
    r0: usize,
    j0: usize,
) {
    let nr = NV * S::LANES;
    if r0 >= j0 + nr || j0 >= r0 + MR {
        return;
    }
    for (r, row) in acc.iter_mut().enumerate() {
        for (v, x) in row.iter_mut().enumerate() {
            let t = (r0 + r) as isize - (j0 + v * S::LANES) as isize;
            if (0..S::LANES as isize).contains(&t) {
                *x = s.add(*x, s.load(&SELF_BIAS[16 - t as usize..]));
            }
        }
    }
}

/// Forward: the log-sum-exp of rows `i0 .. i0 + out.len()` (anchors) into `out`.
///
/// Each row keeps a running maximum and sum per lane (the columns `j` with `j mod LANES = l`),
/// in memory between column panels; a lane's sum is rescaled only when its maximum grows.
/// The lanes are combined in `f64` at the end.
#[inline(always)]
fn forward_block<S: Simd, const MR: usize, const NV: usize>(
    s: S,
    ctx: &Ctx<'_>,
    i0: usize,
    out: &mut [f32],
) {
    let (l, nr, d, n) = (S::LANES, NV * S::LANES, ctx.d, ctx.n);
    let rows = out.len();
    let panels = rows.div_ceil(MR);
    let a_all = pack_rows(ctx, i0, rows, MR);
    let mut maxes = vec![f32::NEG_INFINITY; panels * MR * l];
    let mut sums = vec![0.0f32; panels * MR * l];
    let floor = s.splat(f32::MIN);
    let inv_tau = s.splat(ctx.inv_tau);
    for c0 in (0..n).step_by(CHUNK) {
        let c1 = (c0 + CHUNK).min(n);
        for p in 0..panels {
            let a = &a_all[p * d * MR..(p + 1) * d * MR];
            let r0 = i0 + p * MR;
            for j0 in (c0..c1).step_by(nr) {
                let b = &ctx.packed[(j0 / nr) * d * nr..(j0 / nr + 1) * d * nr];
                let mut acc = similarities::<S, MR, NV>(s, d, a, b, inv_tau);
                let valid = n - j0;
                if valid < nr {
                    for v in 0..NV {
                        let lanes = valid.saturating_sub(v * l).min(l);
                        let bias = s.load(&PAD_BIAS[16 - lanes..]);
                        for row in acc.iter_mut() {
                            row[v] = s.add(row[v], bias);
                        }
                    }
                }
                mask_self(s, &mut acc, r0, j0);
                for (r, row) in acc.iter().enumerate() {
                    let at = (p * MR + r) * l;
                    let old = s.load(&maxes[at..]);
                    let tile_max = row[1..].iter().fold(row[0], |m, &x| s.max(m, x));
                    let new = s.max(old, tile_max);
                    // Lanes still at -inf stay finite in the subtractions below.
                    let shift = s.max(new, floor);
                    let mut sum = s.load(&sums[at..]);
                    if s.any_gt(new, old) {
                        sum = s.mul(sum, s.exp(s.sub(old, shift)));
                    }
                    for &x in row {
                        sum = s.add(sum, s.exp(s.sub(x, shift)));
                    }
                    s.store(&mut maxes[at..], new);
                    s.store(&mut sums[at..], sum);
                }
            }
        }
    }
    for (r, o) in out.iter_mut().enumerate() {
        let (m, sm) = (&maxes[r * l..(r + 1) * l], &sums[r * l..(r + 1) * l]);
        let top = m.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        // Every entry -inf (dot products that overflowed to -inf): the sum is 0.
        if top == f32::NEG_INFINITY {
            *o = f32::NEG_INFINITY;
            continue;
        }
        let total: f64 = m
            .iter()
            .zip(sm)
            .map(|(&mi, &si)| f64::from(si) * (f64::from(mi) - f64::from(top)).exp())
            .sum();
        *o = top + total.ln() as f32;
    }
}

/// Backward: `out[k] = (1 / tau) sum_j w_kj z_j` for rows `k0 .. k0 + out.len() / d`, with
/// `w_kj = g_k exp(s_kj - lse_k) + g_j exp(s_kj - lse_j)` (0 on self pairs).
///
/// Per chunk and row panel the `MR x CHUNK` weights are written once and multiplied by the
/// chunk's rows of `z` (second [`tile_gemm`], `NR` output columns at a time).
#[inline(always)]
fn backward_block<S: Simd, const MR: usize, const NV: usize>(
    s: S,
    b: &BackCtx<'_>,
    k0: usize,
    out: &mut [f32],
) {
    let ctx = &b.ctx;
    let (l, nr, d, dp) = (S::LANES, NV * S::LANES, ctx.d, b.dp);
    let rows = out.len().checked_div(d).unwrap_or(0);
    let panels = rows.div_ceil(MR);
    let a_all = pack_rows(ctx, k0, rows, MR);
    let mut grad = vec![0.0f32; panels * MR * dp];
    let mut w = vec![0.0f32; MR * CHUNK];
    let inv_tau = s.splat(ctx.inv_tau);
    // Rows that are not anchors only have column terms, from anchor columns.
    let col_end = if k0 >= ctx.na { ctx.na } else { ctx.n };
    for c0 in (0..col_end).step_by(CHUNK) {
        let cols = (c0 + CHUNK).min(col_end) - c0;
        for p in 0..panels {
            let a = &a_all[p * d * MR..(p + 1) * d * MR];
            let r0 = k0 + p * MR;
            // The padded `g` and `l` make non-anchor rows' terms 0; rows past their padding
            // (the last panel of the last block) get the same (0, +inf).
            let terms: [(f32, f32); MR] = std::array::from_fn(|r| {
                let k = r0 + r;
                (
                    b.g.get(k).copied().unwrap_or(0.0),
                    b.l.get(k).copied().unwrap_or(f32::INFINITY),
                )
            });
            for j0 in (c0..c0 + cols).step_by(nr) {
                let bp = &ctx.packed[(j0 / nr) * d * nr..(j0 / nr + 1) * d * nr];
                let mut acc = similarities::<S, MR, NV>(s, d, a, bp, inv_tau);
                mask_self(s, &mut acc, r0, j0);
                let gj: [S::V; NV] = std::array::from_fn(|v| s.load(&b.g[j0 + v * l..]));
                let lj: [S::V; NV] = std::array::from_fn(|v| s.load(&b.l[j0 + v * l..]));
                for (r, row) in acc.iter().enumerate() {
                    let (gr, lr) = (s.splat(terms[r].0), s.splat(terms[r].1));
                    let wr = &mut w[r * CHUNK + (j0 - c0)..];
                    for (v, &x) in row.iter().enumerate() {
                        let col = s.mul(gj[v], s.exp(s.sub(x, lj[v])));
                        let weight = s.fmadd(gr, s.exp(s.sub(x, lr)), col);
                        s.store(&mut wr[v * l..], weight);
                    }
                }
            }
            let g = &mut grad[p * MR * dp..(p + 1) * MR * dp];
            for dt in (0..dp).step_by(nr) {
                let acc: [[S::V; NV]; MR] = std::array::from_fn(|r| {
                    std::array::from_fn(|v| s.load(&g[r * dp + dt + v * l..]))
                });
                let acc =
                    tile_gemm::<S, MR, NV, 1, CHUNK>(s, acc, cols, &w, &b.zp[c0 * dp + dt..], dp);
                for (r, row) in acc.iter().enumerate() {
                    for (v, &x) in row.iter().enumerate() {
                        s.store(&mut g[r * dp + dt + v * l..], x);
                    }
                }
            }
        }
    }
    for (r, o) in out.chunks_exact_mut(d.max(1)).enumerate() {
        for (x, &g) in o.iter_mut().zip(&grad[r * dp..]) {
            *x = g * ctx.inv_tau;
        }
    }
}

/// The instruction sets the CPU kernel is compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512F (x86-64): 16 lanes, a 12 x 32 register tile.
    Avx512,
    /// AVX2 with FMA (x86-64): 8 lanes, a 6 x 16 register tile.
    Avx2,
    /// Plain Rust that the compiler vectorises for the build target: 8 lanes, a 4 x 8 tile.
    Portable,
}

impl Isa {
    /// Every variant, fastest first.
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Portable];

    /// The instruction set the kernel runs on: the one forced on this thread by
    /// [`with_isa`], else the one named by the environment variable [`ISA_VARIABLE`]
    /// (`avx512`, `avx2` or `portable`), else the fastest this processor has.
    ///
    /// # Panics
    /// When [`ISA_VARIABLE`] names no instruction set, or one this processor does not have.
    pub fn detect() -> Isa {
        if let Some(isa) = FORCED.with(Cell::get) {
            return isa;
        }
        static FROM_ENV: OnceLock<Result<Option<Isa>, String>> = OnceLock::new();
        match FROM_ENV.get_or_init(|| match std::env::var(ISA_VARIABLE) {
            Ok(name) => name.parse::<Isa>().and_then(|isa| {
                if isa.is_available() {
                    Ok(Some(isa))
                } else {
                    Err(format!(
                        "{ISA_VARIABLE} = {name} is not allowed: this processor does not have \
                         {isa}; allowed here: {}",
                        Self::available_names()
                    ))
                }
            }),
            Err(_) => Ok(None),
        }) {
            Ok(Some(isa)) => *isa,
            Ok(None) => Self::fastest(),
            Err(e) => panic!("{e}"),
        }
    }

    /// The fastest instruction set this processor has.
    pub fn fastest() -> Isa {
        Self::ALL
            .into_iter()
            .find(|isa| isa.is_available())
            .unwrap_or(Isa::Portable)
    }

    /// The names of the instruction sets this processor has, fastest first, comma separated.
    fn available_names() -> String {
        Self::ALL
            .into_iter()
            .filter(|isa| isa.is_available())
            .map(Isa::name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether this processor has the instructions.
    pub fn is_available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Avx512::new().is_some(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Avx2::new().is_some(),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx512 | Isa::Avx2 => false,
            Isa::Portable => true,
        }
    }

    /// The lower-case name (`avx512`, `avx2`, `portable`).
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }

    /// Rows of the register tile.
    pub(super) fn mr(self) -> usize {
        match self {
            Isa::Avx512 => 12,
            Isa::Avx2 => 6,
            Isa::Portable => 4,
        }
    }

    /// Columns of the register tile (`NV * LANES`).
    pub(super) fn nr(self) -> usize {
        match self {
            Isa::Avx512 => 32,
            Isa::Avx2 => 16,
            Isa::Portable => 8,
        }
    }

    /// `f32` lanes of one vector.
    pub(super) fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2 | Isa::Portable => 8,
        }
    }
}

impl std::str::FromStr for Isa {
    type Err = String;

    /// `avx512`, `avx2` or `portable`; any other name is refused with a sentence naming it.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|isa| isa.name() == name.trim())
            .ok_or_else(|| {
                format!(
                    "{ISA_VARIABLE} = {name} is not allowed: use avx512, avx2 or portable \
                     (this processor has {})",
                    Self::available_names()
                )
            })
    }
}

/// The environment variable that forces the CPU kernel's instruction set for a whole process
/// (`avx512`, `avx2` or `portable`), e.g. to test or time the slower paths on a processor
/// that has the faster ones.
pub const ISA_VARIABLE: &str = "SCL_CPU_ISA";

thread_local! {
    static FORCED: Cell<Option<Isa>> = const { Cell::new(None) };
}

/// Runs `f` with the CPU kernel forced onto `isa` on this thread: every [`Isa::detect`] made
/// by `f` on this thread (the loss's forward and backward through Burn included) returns
/// `isa`. The previous choice is restored afterwards, also when `f` panics.
///
/// # Panics
/// When the processor does not have `isa`.
pub fn with_isa<R>(isa: Isa, f: impl FnOnce() -> R) -> R {
    assert!(
        isa.is_available(),
        "the CPU kernel for {isa} needs a processor that has it"
    );
    struct Restore(Option<Isa>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCED.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(FORCED.with(|c| c.replace(Some(isa))));
    f()
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Generates the per-instruction-set entry points of one block function and the dispatch
/// over [`Isa`].
macro_rules! entry_points {
    ($dispatch:ident, $block:ident, $ctx:ty, $avx512:ident, $avx2:ident, $portable:ident) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        fn $avx512(s: Avx512, ctx: &$ctx, row0: usize, out: &mut [f32]) {
            $block::<Avx512, 12, 2>(s, ctx, row0, out)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn $avx2(s: Avx2, ctx: &$ctx, row0: usize, out: &mut [f32]) {
            $block::<Avx2, 6, 2>(s, ctx, row0, out)
        }

        fn $portable(ctx: &$ctx, row0: usize, out: &mut [f32]) {
            $block::<Portable, 4, 1>(Portable, ctx, row0, out)
        }

        /// Runs the block on `isa`.
        ///
        /// # Panics
        /// When the processor does not have `isa`.
        pub(super) fn $dispatch(isa: Isa, ctx: &$ctx, row0: usize, out: &mut [f32]) {
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => {
                    let s = Avx512::new().expect("the processor has AVX-512F");
                    // SAFETY: the token proves that the processor has AVX-512F.
                    #[allow(unsafe_code)]
                    unsafe {
                        $avx512(s, ctx, row0, out)
                    }
                }
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => {
                    let s = Avx2::new().expect("the processor has AVX2 and FMA");
                    // SAFETY: the token proves that the processor has AVX2 and FMA.
                    #[allow(unsafe_code)]
                    unsafe {
                        $avx2(s, ctx, row0, out)
                    }
                }
                #[cfg(not(target_arch = "x86_64"))]
                Isa::Avx512 | Isa::Avx2 => panic!("{isa} exists only on x86-64"),
                Isa::Portable => $portable(ctx, row0, out),
            }
        }
    };
}

entry_points!(
    forward,
    forward_block,
    Ctx<'_>,
    forward_avx512,
    forward_avx2,
    forward_portable
);
entry_points!(
    backward,
    backward_block,
    BackCtx<'_>,
    backward_avx512,
    backward_avx2,
    backward_portable
);

/// FMA throughput of one thread on `isa`: flops per second over `iters` steps.
pub(super) fn fma_rate(isa: Isa, iters: usize) -> f64 {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn on_avx512(s: Avx512, iters: usize) -> f32 {
        super::simd::fma_chains(s, iters)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn on_avx2(s: Avx2, iters: usize) -> f32 {
        super::simd::fma_chains(s, iters)
    }
    let start = std::time::Instant::now();
    let sink = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            let s = Avx512::new().expect("the processor has AVX-512F");
            // SAFETY: the token proves that the processor has AVX-512F.
            #[allow(unsafe_code)]
            unsafe {
                on_avx512(s, iters)
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            let s = Avx2::new().expect("the processor has AVX2 and FMA");
            // SAFETY: the token proves that the processor has AVX2 and FMA.
            #[allow(unsafe_code)]
            unsafe {
                on_avx2(s, iters)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx512 | Isa::Avx2 => panic!("{isa} exists only on x86-64"),
        Isa::Portable => super::simd::fma_chains(Portable, iters),
    };
    std::hint::black_box(sink);
    (iters * super::simd::FMA_CHAINS * isa.lanes() * 2) as f64 / start.elapsed().as_secs_f64()
}
