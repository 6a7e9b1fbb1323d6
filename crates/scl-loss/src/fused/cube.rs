//! The fused SupCon operation on Burn's CubeCL backend (every runtime it compiles for: wgpu,
//! CUDA), and through the `#[backend_extension]` macro on its fusion wrapper.
//!
//! The anchors are processed in chunks of `rows` rows, chosen so that one `[rows, Nc]` block
//! of similarities holds at most [`CHUNK_ELEMENTS`] values (256 MiB in f32): memory is
//! `O(N d + rows N)`, never `N x N` once `N` exceeds 8192. Per chunk:
//!
//! - forward: the block `Z_chunk Z^T` by CubeCL's matmul (its tuned GEMM, tensor cores where
//!   present), then [`masked_row_lse_kernel()`], one cube per row: the `1/tau` scale, the
//!   self mask, an online max and sum per unit, and a tree reduction in shared memory;
//! - backward: the block again, then [`softmax_weights_kernel()`], which overwrites it in
//!   place with `g_i exp(s_ia - LSE_i)` (0 on the self entry); two GEMMs give the row terms
//!   `W Z` and the column terms `W^T Z_chunk`.
//!
//! So each similarity block is written once and read once by the kernel; the exponentials,
//! the mask and the reduction never make a separate pass over memory. The float type of the
//! kernels is the tensors' (chosen when they are launched).

use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{DType, FloatDType, Scalar, Shape, Slice};
use burn_cubecl::CubeBackend;
// The CubeCL that burn-cubecl is built with (the kernels' macros name `cubecl::`).
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::{CubeCount, CubeDim};

pub use self::kernels::{masked_row_lse_kernel, softmax_weights_kernel};

use super::SupConBackend;

/// Largest number of similarities held at once (one chunk of anchor rows): 2^26 = 256 MiB
/// in f32.
pub const CHUNK_ELEMENTS: usize = 1 << 26;

/// Units per cube in both kernels, at most (a power of two, for the tree reduction).
pub const UNITS: u32 = 256;

/// The two CubeCL kernels (a module of their own: CubeCL's `Tensor` is not Burn's).
// `#[cube(launch)]` generates undocumented helper items next to each documented kernel.
#[allow(missing_docs)]
pub mod kernels {
    use super::cubecl;
    use cubecl::prelude::*;

    /// One cube per row of `dots` (`[rows, Nc]`, raw dot products, contiguous): writes
    /// `lse[row_offset + r] = log sum_{j != row_offset + r} exp(dots[r, j] * inv_tau)`.
    ///
    /// `sentinel` stands for `-inf` (WGSL has no infinity literal); it is chosen on the host per
    /// float type (-3e38, or -6e4 for f16, whose largest value is 65504) and cast in the
    /// kernel. The launch uses `CubeDim::new_1d(units)` with `units` a power of two.
    ///
    /// The float type `F` is an argument of the launch (`#[define(F)]`, an `ElemType`), the
    /// tensors' type.
    #[cube(launch)]
    pub fn masked_row_lse_kernel<F: Float>(
        dots: &Tensor<F>,
        lse: &mut Tensor<F>,
        row_offset: u32,
        inv_tau: f32,
        sentinel: f32,
        #[comptime] units: u32,
        #[define(F)] _dtype: ElemType,
    ) {
        let r = CUBE_POS_X as usize;
        let u = UNIT_POS_X as usize;
        // A constant of the launch, so the loops below stay in uniform control flow around
        // `sync_cube`.
        let step = CUBE_DIM_X as usize;
        let cols = dots.shape(1);
        let own = r + row_offset as usize;
        let scale = F::cast_from(inv_tau);
        let floor = F::cast_from(sentinel);

        let mut max = floor;
        let mut sum = F::new(0.0_f32);
        let mut j = u;
        while j < cols {
            if j != own {
                let s = dots[r * cols + j] * scale;
                if s > max {
                    sum *= (max - s).exp();
                    max = s;
                }
                sum += (s - max).exp();
            }
            j += step;
        }

        // Shared memory of `units` entries (a compile-time size).
        let cap = units as usize;
        let mut shared_max = Shared::<[F]>::new_slice(cap);
        let mut shared_sum = Shared::<[F]>::new_slice(cap);
        shared_max[u] = max;
        shared_sum[u] = sum;
        sync_cube();

        let mut stride = step / 2;
        while stride > 0 {
            if u < stride {
                let a = shared_max[u];
                let b = shared_max[u + stride];
                let mut m = a;
                if b > a {
                    m = b;
                }
                shared_sum[u] =
                    shared_sum[u] * (a - m).exp() + shared_sum[u + stride] * (b - m).exp();
                shared_max[u] = m;
            }
            sync_cube();
            stride /= 2;
        }
        if u == 0 {
            lse[own] = shared_max[0] + shared_sum[0].ln();
        }
    }

    /// One cube per row of `dots` (`[rows, Nc]`, raw dot products, contiguous), in place:
    /// `dots[r, j] = grad[i] exp(dots[r, j] * inv_tau - lse[i])` with `i = row_offset + r`, and
    /// 0 where `j = i`. `lse` and `grad` must have the dtype of `dots` (one `F`).
    #[cube(launch)]
    pub fn softmax_weights_kernel<F: Float>(
        dots: &mut Tensor<F>,
        lse: &Tensor<F>,
        grad: &Tensor<F>,
        row_offset: u32,
        inv_tau: f32,
        #[define(F)] _dtype: ElemType,
    ) {
        let r = CUBE_POS_X as usize;
        let step = CUBE_DIM_X as usize;
        let cols = dots.shape(1);
        let own = r + row_offset as usize;
        let scale = F::cast_from(inv_tau);
        let l = lse[own];
        let g = grad[own];
        let mut j = UNIT_POS_X as usize;
        while j < cols {
            let at = r * cols + j;
            if j == own {
                dots[at] = F::new(0.0_f32);
            } else {
                dots[at] = g * (dots[at] * scale - l).exp();
            }
            j += step;
        }
    }
}

/// Anchor rows per chunk for `n_contrast` columns: at most [`CHUNK_ELEMENTS`] similarities,
/// at most 32768 rows (one cube each, below every API's grid limit), at least one.
pub fn chunk_rows(n_contrast: usize, n_anchor: usize) -> usize {
    (CHUNK_ELEMENTS / n_contrast.max(1))
        .clamp(1, 32_768)
        .min(n_anchor.max(1))
}

/// Units per cube for `tensor`'s device: [`UNITS`], or the largest power of two the device
/// allows if that is fewer.
fn units_for(tensor: &CubeTensor) -> u32 {
    let hardware = &tensor.client.properties().hardware;
    let limit = UNITS
        .min(hardware.max_cube_dim.0)
        .min(hardware.max_units_per_cube)
        .max(1);
    1 << (31 - limit.leading_zeros()) // largest power of two <= limit
}

/// The `-inf` stand-in for `dtype` (finite in that type, so `sentinel - sentinel = 0`).
fn sentinel_for(dtype: DType) -> f32 {
    match dtype {
        DType::F16 => -6.0e4, // the largest f16 is 65504
        _ => -3.0e38,         // f32, f64, bf16 (whose largest is about 3.39e38)
    }
}

/// Rows `start..start + len` of a 2-D tensor (a view; no copy).
fn rows(tensor: CubeTensor, start: usize, len: usize) -> CubeTensor {
    let cols = tensor.meta.shape()[1];
    CubeBackend::float_slice(
        tensor,
        &[
            Slice::new(start as isize, Some((start + len) as isize), 1),
            Slice::new(0, Some(cols as isize), 1),
        ],
    )
}

/// The forward with an explicit chunk size (the trait method uses [`chunk_rows`]); public so
/// that tests can force several chunks on small problems.
///
/// `z`: `[n_contrast, dim]`; returns `[n_anchor]` of `z`'s dtype.
pub fn lse_chunked(
    z: CubeTensor,
    n_anchor: usize,
    temperature: f64,
    rows_per_chunk: usize,
) -> CubeTensor {
    type B = CubeBackend;
    let dtype = z.dtype;
    let elem = dtype_to_storage_type(dtype);
    let units = units_for(&z);
    let sentinel = sentinel_for(dtype);
    let inv_tau = (1.0 / temperature) as f32;
    // A view (the strides swapped); the matmul reads it as it lies.
    let zt = B::float_transpose(z.clone());
    // Uninitialised, contiguous: every entry is written by one cube of one chunk.
    let lse = empty_device_contiguous_dtype(
        z.client.clone(),
        z.device.clone(),
        Shape::new([n_anchor]),
        dtype,
    );
    for i0 in (0..n_anchor).step_by(rows_per_chunk.max(1)) {
        let r = rows_per_chunk.min(n_anchor - i0);
        // Row-major (the kernels index `r * cols + j`), and plain storage where the matmul left
        // a tiled layout, which a kernel argument cannot be.
        let dots = into_contiguous(B::float_matmul(rows(z.clone(), i0, r), zt.clone()));
        // 32-bit addresses suffice: a chunk has at most 2^26 elements.
        masked_row_lse_kernel::launch(
            &dots.client,
            CubeCount::Static(r as u32, 1, 1),
            CubeDim::new_1d(units),
            dots.clone().into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            i0 as u32,
            inv_tau,
            sentinel,
            units,
            elem,
        );
    }
    lse
}

/// The backward with an explicit chunk size; see [`lse_chunked`].
///
/// `z`: `[n_contrast, dim]`; `lse`, `grad`: `[n_anchor]` (same dtype as `z`); returns
/// `[n_contrast, dim]` of `z`'s dtype.
pub fn lse_backward_chunked(
    z: CubeTensor,
    lse: CubeTensor,
    grad: CubeTensor,
    temperature: f64,
    rows_per_chunk: usize,
) -> CubeTensor {
    type B = CubeBackend;
    let dtype = z.dtype;
    debug_assert_eq!(
        lse.dtype, dtype,
        "supcon_lse_backward: lse dtype differs from z"
    );
    debug_assert_eq!(
        grad.dtype, dtype,
        "supcon_lse_backward: grad dtype differs from z"
    );
    let elem = dtype_to_storage_type(dtype);
    let units = units_for(&z);
    let n_contrast = z.meta.shape()[0];
    let dim = z.meta.shape()[1];
    let n_anchor = lse.meta.shape()[0];
    let device = z.device.clone();
    // The kernel indexes `lse[i]` / `grad[i]` directly: make them plain rows.
    let lse = into_contiguous(lse);
    let grad = into_contiguous(grad);
    let inv_tau = (1.0 / temperature) as f32;
    let zt = B::float_transpose(z.clone());
    let mut columns = B::float_zeros(
        Shape::new([n_contrast, dim]),
        &device,
        FloatDType::from(dtype),
    );
    let mut row_terms = Vec::new();
    for i0 in (0..n_anchor).step_by(rows_per_chunk.max(1)) {
        let r = rows_per_chunk.min(n_anchor - i0);
        let chunk = rows(z.clone(), i0, r);
        let dots = into_contiguous(B::float_matmul(chunk.clone(), zt.clone()));
        softmax_weights_kernel::launch(
            &dots.client,
            CubeCount::Static(r as u32, 1, 1),
            CubeDim::new_1d(units),
            dots.clone().into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            grad.clone().into_tensor_arg(),
            i0 as u32,
            inv_tau,
            elem,
        );
        let weights = dots;
        row_terms.push(B::float_matmul(weights.clone(), z.clone()));
        columns = B::float_add(columns, B::float_matmul(B::float_transpose(weights), chunk));
    }
    if n_anchor < n_contrast {
        row_terms.push(B::float_zeros(
            Shape::new([n_contrast - n_anchor, dim]),
            &device,
            FloatDType::from(dtype),
        ));
    }
    let rows_term = if row_terms.len() == 1 {
        row_terms.pop().unwrap()
    } else {
        B::float_cat(row_terms, 0)
    };
    B::float_mul_scalar(
        B::float_add(rows_term, columns),
        Scalar::from(1.0 / temperature),
    )
}

/// The kernels for every CubeCL runtime. Burn's fusion wrapper over it (what a wgpu or CUDA
/// device runs) gets its implementation from the `#[backend_extension]` macro, `Autodiff` over
/// that from the crate's generic one.
impl SupConBackend for CubeBackend {
    fn supcon_lse(z: FloatTensor<Self>, n_anchor: usize, temperature: f64) -> FloatTensor<Self> {
        let n_contrast = z.meta.shape()[0];
        lse_chunked(z, n_anchor, temperature, chunk_rows(n_contrast, n_anchor))
    }

    fn supcon_lse_backward(
        z: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        temperature: f64,
    ) -> FloatTensor<Self> {
        let n_contrast = z.meta.shape()[0];
        let n_anchor = lse.meta.shape()[0];
        lse_backward_chunked(z, lse, grad, temperature, chunk_rows(n_contrast, n_anchor))
    }
}
