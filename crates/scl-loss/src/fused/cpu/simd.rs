//! Vector operations for the CPU kernel, one implementation per instruction set, and the
//! register-blocked GEMM micro-kernel written once over them.
//!
//! Each instruction set is a zero-sized token ([`Avx512`], [`Avx2`], [`Portable`]) that can only
//! be made where the processor has the instructions (`new` detects them at run time), so the
//! operations on it are safe methods. Code that should be compiled for an instruction set is
//! an `#[inline(always)]` generic function over [`Simd`], instantiated inside a function with
//! the matching `#[target_feature]` (see `kernel.rs`): the intrinsics are then inlined into it.
//!
//! The kernel's unsafe code lives here, apart from the calls of the `#[target_feature]` entry
//! points in `kernel.rs` (each right after making the token): the intrinsics (sound because
//! the token proves the feature) and the raw loads of [`tile_gemm`]'s inner loop (sound
//! because of the length assertions at its top).
#![allow(unsafe_code)]

/// One instruction set's vector type and the operations the kernel needs.
///
/// The methods take the token by value: holding one proves the instructions exist.
pub(super) trait Simd: Copy + Send + Sync {
    /// `f32` lanes per vector.
    const LANES: usize;
    /// The vector type.
    type V: Copy;
    /// All lanes 0.
    fn zero(self) -> Self::V;
    /// All lanes `x`.
    fn splat(self, x: f32) -> Self::V;
    /// The first `LANES` values of `s`.
    ///
    /// # Panics
    /// When `s` is shorter than `LANES`.
    fn load(self, s: &[f32]) -> Self::V;
    /// Writes `v` to the first `LANES` values of `s`.
    ///
    /// # Panics
    /// When `s` is shorter than `LANES`.
    fn store(self, s: &mut [f32], v: Self::V);
    /// `LANES` values from `p`.
    ///
    /// # Safety
    /// `p .. p + LANES` must be readable `f32`s.
    unsafe fn load_ptr(self, p: *const f32) -> Self::V;
    /// `a * b + c`, rounded once where the instruction set has FMA.
    fn fmadd(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a + b`.
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a - b`.
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b`.
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise maximum; a NaN in `b` is returned.
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// Whether `a > b` in any lane.
    fn any_gt(self, a: Self::V, b: Self::V) -> bool;
    /// Lane-wise [`exp_f32`] (same algorithm, same constants).
    fn exp(self, x: Self::V) -> Self::V;
}

/// The constants of [`exp_f32`], shared by the vector versions.
mod expc {
    pub const LOG2E: f32 = std::f32::consts::LOG2_E;
    pub const LN2_HI: f32 = 0.693_359_4;
    pub const LN2_LO: f32 = -2.121_944_4e-4;
    /// 1.5 * 2^23: adding and subtracting it rounds to an integer.
    pub const ROUND: f32 = 12_582_912.0;
    pub const LO: f32 = -87.3;
    pub const HI: f32 = 88.7;
    /// The degree-6 polynomial's coefficients, highest first (Cephes' `expf`).
    pub const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];
}

/// `exp(x)` for `f32`, branch-free so that loops over it vectorise.
///
/// Cody-Waite range reduction `x = n ln2 + r`, `|r| <= ln2 / 2`, then the degree-6 minimax
/// polynomial of Cephes' `expf` (relative error below 3e-7 over the whole range), and the
/// scaling by `2^n` through the exponent bits. Inputs below -87.3 give 0, above 88.7 give
/// `inf`; NaN gives NaN (through the comparison selects).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    use expc::*;
    let clamped = x.clamp(LO, HI);
    // t = n + ROUND exactly, so the low mantissa bits of t hold the integer n: read them
    // with a bit cast instead of a float-to-int conversion, which would not vectorise.
    let t = clamped * LOG2E + ROUND;
    let n = t - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let r2 = r * r;
    let poly = (((((P[0] * r + P[1]) * r + P[2]) * r + P[3]) * r + P[4]) * r + P[5]) * r2 + r + 1.0;
    let exponent = t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127);
    let scale = f32::from_bits(exponent << 23);
    let y = poly * scale;
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

/// Plain Rust on arrays of 8 lanes, which the compiler vectorises for whatever the build
/// targets (SSE2 on x86-64, NEON on aarch64): the fallback on every machine.
#[derive(Debug, Clone, Copy)]
pub(super) struct Portable;

impl Simd for Portable {
    const LANES: usize = 8;
    type V = [f32; 8];
    #[inline(always)]
    fn zero(self) -> Self::V {
        [0.0; 8]
    }
    #[inline(always)]
    fn splat(self, x: f32) -> Self::V {
        [x; 8]
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> Self::V {
        s[..8].try_into().expect("eight lanes")
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], v: Self::V) {
        s[..8].copy_from_slice(&v);
    }
    #[inline(always)]
    unsafe fn load_ptr(self, p: *const f32) -> Self::V {
        // SAFETY: the caller guarantees eight readable values at `p`.
        unsafe { std::ptr::read_unaligned(p.cast::<[f32; 8]>()) }
    }
    #[inline(always)]
    fn fmadd(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
    #[inline(always)]
    fn add(self, a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] + b[i])
    }
    #[inline(always)]
    fn sub(self, a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] - b[i])
    }
    #[inline(always)]
    fn mul(self, a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] * b[i])
    }
    #[inline(always)]
    fn max(self, a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| if a[i] > b[i] { a[i] } else { b[i] })
    }
    #[inline(always)]
    fn any_gt(self, a: Self::V, b: Self::V) -> bool {
        a.iter().zip(&b).any(|(x, y)| x > y)
    }
    #[inline(always)]
    fn exp(self, x: Self::V) -> Self::V {
        x.map(exp_f32)
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Simd, expc::*};
    use std::arch::x86_64::*;

    /// AVX-512F: 16 lanes, 32 registers.
    #[derive(Debug, Clone, Copy)]
    pub struct Avx512(());

    impl Avx512 {
        /// The token, where the processor has AVX-512F.
        pub fn new() -> Option<Self> {
            is_x86_feature_detected!("avx512f").then_some(Self(()))
        }
    }

    /// AVX2 with FMA: 8 lanes, 16 registers.
    #[derive(Debug, Clone, Copy)]
    pub struct Avx2(());

    impl Avx2 {
        /// The token, where the processor has AVX2 and FMA.
        pub fn new() -> Option<Self> {
            (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
                .then_some(Self(()))
        }
    }

    // SAFETY (every `unsafe` block in the two impls below): a token exists only where
    // `new` found the instruction set, so the intrinsics can run; the loads and stores from
    // slices are preceded by a length assertion.
    impl Simd for Avx512 {
        const LANES: usize = 16;
        type V = __m512;
        #[inline(always)]
        fn zero(self) -> __m512 {
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        fn splat(self, x: f32) -> __m512 {
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        fn load(self, s: &[f32]) -> __m512 {
            assert!(s.len() >= 16, "a vector load needs 16 values");
            unsafe { _mm512_loadu_ps(s.as_ptr()) }
        }
        #[inline(always)]
        fn store(self, s: &mut [f32], v: __m512) {
            assert!(s.len() >= 16, "a vector store needs 16 values");
            unsafe { _mm512_storeu_ps(s.as_mut_ptr(), v) }
        }
        #[inline(always)]
        unsafe fn load_ptr(self, p: *const f32) -> __m512 {
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        fn fmadd(self, a: __m512, b: __m512, c: __m512) -> __m512 {
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn add(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        fn sub(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_sub_ps(a, b) }
        }
        #[inline(always)]
        fn mul(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        fn max(self, a: __m512, b: __m512) -> __m512 {
            // MAXPS returns its second operand when either is NaN.
            unsafe { _mm512_max_ps(a, b) }
        }
        #[inline(always)]
        fn any_gt(self, a: __m512, b: __m512) -> bool {
            unsafe { _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, b) != 0 }
        }
        #[inline(always)]
        fn exp(self, x: __m512) -> __m512 {
            unsafe {
                // max(lo, x) keeps a NaN x (second operand), min(hi, .) too.
                let c = _mm512_min_ps(_mm512_set1_ps(HI), _mm512_max_ps(_mm512_set1_ps(LO), x));
                let t = _mm512_fmadd_ps(c, _mm512_set1_ps(LOG2E), _mm512_set1_ps(ROUND));
                let n = _mm512_sub_ps(t, _mm512_set1_ps(ROUND));
                let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), c);
                let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
                let mut p = _mm512_set1_ps(P[0]);
                for &coef in &P[1..] {
                    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(coef));
                }
                let r2 = _mm512_mul_ps(r, r);
                let p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0)));
                let bits = _mm512_sub_epi32(
                    _mm512_castps_si512(t),
                    _mm512_set1_epi32(ROUND.to_bits() as i32 - 127),
                );
                let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(bits));
                let y = _mm512_mul_ps(p, scale);
                let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(LO));
                let above = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, _mm512_set1_ps(HI));
                let y = _mm512_mask_blend_ps(below, y, _mm512_setzero_ps());
                _mm512_mask_blend_ps(above, y, _mm512_set1_ps(f32::INFINITY))
            }
        }
    }

    impl Simd for Avx2 {
        const LANES: usize = 8;
        type V = __m256;
        #[inline(always)]
        fn zero(self) -> __m256 {
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        fn splat(self, x: f32) -> __m256 {
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        fn load(self, s: &[f32]) -> __m256 {
            assert!(s.len() >= 8, "a vector load needs 8 values");
            unsafe { _mm256_loadu_ps(s.as_ptr()) }
        }
        #[inline(always)]
        fn store(self, s: &mut [f32], v: __m256) {
            assert!(s.len() >= 8, "a vector store needs 8 values");
            unsafe { _mm256_storeu_ps(s.as_mut_ptr(), v) }
        }
        #[inline(always)]
        unsafe fn load_ptr(self, p: *const f32) -> __m256 {
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        fn fmadd(self, a: __m256, b: __m256, c: __m256) -> __m256 {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn add(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        fn sub(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        fn mul(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        fn max(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_max_ps(a, b) }
        }
        #[inline(always)]
        fn any_gt(self, a: __m256, b: __m256) -> bool {
            unsafe { _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(a, b)) != 0 }
        }
        #[inline(always)]
        fn exp(self, x: __m256) -> __m256 {
            unsafe {
                let c = _mm256_min_ps(_mm256_set1_ps(HI), _mm256_max_ps(_mm256_set1_ps(LO), x));
                let t = _mm256_fmadd_ps(c, _mm256_set1_ps(LOG2E), _mm256_set1_ps(ROUND));
                let n = _mm256_sub_ps(t, _mm256_set1_ps(ROUND));
                let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), c);
                let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
                let mut p = _mm256_set1_ps(P[0]);
                for &coef in &P[1..] {
                    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(coef));
                }
                let r2 = _mm256_mul_ps(r, r);
                let p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
                let bits = _mm256_sub_epi32(
                    _mm256_castps_si256(t),
                    _mm256_set1_epi32(ROUND.to_bits() as i32 - 127),
                );
                let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(bits));
                let y = _mm256_mul_ps(p, scale);
                let below = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(LO));
                let above = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(HI));
                let y = _mm256_blendv_ps(y, _mm256_setzero_ps(), below);
                _mm256_blendv_ps(y, _mm256_set1_ps(f32::INFINITY), above)
            }
        }
    }
}

/// The register-blocked GEMM micro-kernel: for `r < MR`, `v < NV` and every lane `l`,
///
/// ```text
/// acc[r][v][l] += sum_{k < depth} a[k * AKS + r * ARS] * b[k * ldb + v * LANES + l]
/// ```
///
/// `MR x NV` vectors of accumulators stay in registers (AVX-512: 12 x 2 of 32 registers;
/// AVX2: 6 x 2 of 16), each step loads `NV` vectors of `b` and broadcasts `MR` values of `a`.
/// The strides of `a` are constants so that its `MR` addresses are one register plus
/// constant displacements.
///
/// # Panics
/// When `a` or `b` is too short for `depth` steps.
#[inline(always)]
pub(super) fn tile_gemm<
    S: Simd,
    const MR: usize,
    const NV: usize,
    const AKS: usize,
    const ARS: usize,
>(
    s: S,
    mut acc: [[S::V; NV]; MR],
    depth: usize,
    a: &[f32],
    b: &[f32],
    ldb: usize,
) -> [[S::V; NV]; MR] {
    if depth == 0 {
        return acc;
    }
    assert!(
        a.len() > (depth - 1) * AKS + (MR - 1) * ARS,
        "tile_gemm: a too short"
    );
    assert!(
        b.len() >= (depth - 1) * ldb + NV * S::LANES,
        "tile_gemm: b too short"
    );
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    for k in 0..depth {
        // SAFETY: k < depth, r < MR and v < NV, so every offset is within the lengths
        // asserted above.
        unsafe {
            let bk = pb.add(k * ldb);
            let bv: [S::V; NV] = std::array::from_fn(|v| s.load_ptr(bk.add(v * S::LANES)));
            let ak = pa.add(k * AKS);
            for (r, row) in acc.iter_mut().enumerate() {
                let av = s.splat(*ak.add(r * ARS));
                for (x, &bx) in row.iter_mut().zip(&bv) {
                    *x = s.fmadd(av, bx, *x);
                }
            }
        }
    }
    acc
}

/// Independent FMA chains one thread runs at once in [`fma_chains`]: enough to cover the FMA
/// latency (4-5 cycles) on two FMA units, few enough that the chains and the two constants fit
/// in AVX2's 16 vector registers. With 16 chains the compiler spilled two of them to the stack
/// on AVX2, and the chains through memory measured 109 GFLOP/s where the two cores of an
/// AVX2 machine do 180.
pub(super) const FMA_CHAINS: usize = 12;

/// Independent FMA chains on one thread for `iters` steps: `FMA_CHAINS * LANES * 2` flops a
/// step. What [`super::measure_fma_peak`] times; the result only keeps the work from being
/// optimised away.
#[inline(always)]
pub(super) fn fma_chains<S: Simd>(s: S, iters: usize) -> f32 {
    let mut acc = [s.zero(); FMA_CHAINS];
    let (a, b) = (s.splat(0.999_9), s.splat(1e-4));
    for _ in 0..iters {
        for x in &mut acc {
            *x = s.fmadd(*x, a, b);
        }
    }
    let mut out = vec![0.0f32; S::LANES];
    let total = acc.iter().fold(s.zero(), |t, &x| s.add(t, x));
    s.store(&mut out, total);
    out.iter().sum()
}
