//! One safe entry to the `gemm` crate's single-precision product, with the bounds of every
//! operand checked before the call.

/// The sizes of `C[m, n] = A[m, k] B[k, n]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

/// `dst = (accumulate ? dst : 0) + lhs rhs`, multi-threaded when `parallel`.
///
/// `dst` is row-major with row stride `dst.1`; `lhs` and `rhs` are `(values, row stride,
/// column stride)`, so a transposed operand is the same slice with its strides swapped.
///
/// # Panics
/// When an operand is too short for its dimensions and strides.
pub(crate) fn sgemm(
    d: Dims,
    dst: (&mut [f32], usize),
    accumulate: bool,
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
    parallel: bool,
) {
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| {
        (rows.max(1) - 1) * rs + (cols.max(1) - 1) * cs
    };
    if d.m == 0 || d.n == 0 {
        return;
    }
    assert!(
        last(d.m, d.n, dst.1, 1) < dst.0.len(),
        "gemm: dst too short"
    );
    if d.k == 0 {
        if !accumulate {
            for r in 0..d.m {
                dst.0[r * dst.1..r * dst.1 + d.n].fill(0.0);
            }
        }
        return;
    }
    assert!(
        last(d.m, d.k, lhs.1, lhs.2) < lhs.0.len(),
        "gemm: lhs too short"
    );
    assert!(
        last(d.k, d.n, rhs.1, rhs.2) < rhs.0.len(),
        "gemm: rhs too short"
    );
    let stride = |v: usize| isize::try_from(v).expect("a stride fits in isize");
    // SAFETY: every index the product reads or writes, `row * rs + col * cs` for rows and
    // columns within the dimensions, was checked above to lie inside its slice; `dst` is
    // borrowed mutably and cannot alias `lhs` or `rhs`.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            d.m,
            d.n,
            d.k,
            dst.0.as_mut_ptr(),
            1,
            stride(dst.1),
            accumulate,
            lhs.0.as_ptr(),
            stride(lhs.2),
            stride(lhs.1),
            rhs.0.as_ptr(),
            stride(rhs.2),
            stride(rhs.1),
            1.0,
            1.0,
            false,
            false,
            false,
            if parallel {
                gemm::Parallelism::Rayon(0)
            } else {
                gemm::Parallelism::None
            },
        );
    }
}
