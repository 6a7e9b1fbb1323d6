//! The fused SupCon operation on Burn's CubeCL backends (wgpu, CUDA), and on their fusion
//! wrapper.
//!
//! The anchors are processed in chunks of `rows` rows, chosen so that one `[rows, Nc]` block
//! of similarities holds at most [`CHUNK_ELEMENTS`] values (256 MiB in f32): memory is
//! `O(N d + rows N)`, never `N x N` once `N` exceeds 8192. Per chunk:
//!
//! - forward: the block `Z_chunk Z^T` by Burn's matmul (CubeCL's tuned GEMM, tensor cores
//!   where present), then [`masked_row_lse_kernel`], one cube per row: the `1/tau` scale,
//!   the self mask, an online max and sum per unit, and a tree reduction in shared memory;
//! - backward: the block again, then [`softmax_weights_kernel`], which overwrites it in
//!   place with `g_i exp(s_ia - LSE_i)` (0 on the self entry); two GEMMs give the row terms
//!   `W Z` and the column terms `W^T Z_chunk`.
//!
//! So each similarity block is written once and read once by the kernel; the exponentials,
//! the mask and the reduction never make a separate pass over memory.

use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::{CubeCount, CubeDim};

use self::kernels::{UNITS, masked_row_lse_kernel, softmax_weights_kernel};

use super::SupConBackend;

/// Largest number of similarities held at once (one chunk of anchor rows): 2^26 = 256 MiB
/// in f32.
pub const CHUNK_ELEMENTS: usize = 1 << 26;

/// The two CubeCL kernels (a module of their own: CubeCL's `Tensor` is not Burn's).
// `#[cube(launch)]` generates undocumented helper items next to each documented kernel.
#[allow(missing_docs)]
pub mod kernels {
    use cubecl::prelude::*;

    /// Units per cube in both kernels (a power of two, for the tree reduction).
    pub const UNITS: u32 = 256;

    /// Stands for `-inf` (WGSL has no infinity literal); `exp(x - SENTINEL)` is never evaluated
    /// with a real `x` above it, and `exp(SENTINEL - x)` is 0.
    const SENTINEL: f32 = -3.0e38;

    /// One cube per row of `dots` (`[rows, Nc]`, raw dot products): writes
    /// `lse[row_offset + r] = log sum_{j != row_offset + r} exp(dots[r, j] * inv_tau)`.
    #[cube(launch)]
    pub fn masked_row_lse_kernel<F: Float>(
        dots: &Tensor<F>,
        lse: &mut Tensor<F>,
        row_offset: u32,
        inv_tau: f32,
        #[comptime] units: u32,
    ) {
        let r = CUBE_POS_X as usize;
        let cols = dots.shape(1);
        let own = r + row_offset as usize;
        let scale = F::cast_from(inv_tau);
        let mut max = F::new(SENTINEL);
        let mut sum = F::new(0.0);
        let mut j = UNIT_POS_X as usize;
        while j < cols {
            if j != own {
                let s = dots[r * cols + j] * scale;
                if s > max {
                    sum *= F::exp(max - s);
                    max = s;
                }
                sum += F::exp(s - max);
            }
            j += units as usize;
        }
        let mut shared_max = SharedMemory::<F>::new(units as usize);
        let mut shared_sum = SharedMemory::<F>::new(units as usize);
        let u = UNIT_POS_X as usize;
        shared_max[u] = max;
        shared_sum[u] = sum;
        sync_cube();
        // From the runtime cube size (equal to `units`): a comptime value cannot be mutated.
        let mut stride = (CUBE_DIM_X / 2) as usize;
        while stride > 0 {
            if u < stride {
                let a = shared_max[u];
                let b = shared_max[u + stride];
                let m = F::max(a, b);
                shared_sum[u] =
                    shared_sum[u] * F::exp(a - m) + shared_sum[u + stride] * F::exp(b - m);
                shared_max[u] = m;
            }
            sync_cube();
            stride /= 2;
        }
        if u == 0 {
            lse[own] = shared_max[0] + F::ln(shared_sum[0]);
        }
    }

    /// One cube per row of `dots` (`[rows, Nc]`, raw dot products), in place:
    /// `dots[r, j] = grad[i] exp(dots[r, j] * inv_tau - lse[i])` with `i = row_offset + r`, and
    /// 0 where `j = i`.
    #[cube(launch)]
    pub fn softmax_weights_kernel<F: Float>(
        dots: &mut Tensor<F>,
        lse: &Tensor<F>,
        grad: &Tensor<F>,
        row_offset: u32,
        inv_tau: f32,
        #[comptime] units: u32,
    ) {
        let r = CUBE_POS_X as usize;
        let cols = dots.shape(1);
        let own = r + row_offset as usize;
        let scale = F::cast_from(inv_tau);
        let l = lse[own];
        let g = grad[own];
        let mut j = UNIT_POS_X as usize;
        while j < cols {
            let at = r * cols + j;
            if j == own {
                dots[at] = F::new(0.0);
            } else {
                dots[at] = g * F::exp(dots[at] * scale - l);
            }
            j += units as usize;
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

/// Bytes reserved by the CubeCL memory pool of `device` (for benchmarks: the pool keeps its
/// pages, so the growth over a run is its high-water mark).
pub fn device_memory_reserved<R: CubeRuntime>(device: &R::Device) -> u64 {
    R::client(device)
        .memory_usage()
        .map_or(0, |usage| usage.bytes_reserved)
}

/// Returns the unused pages of the CubeCL memory pool of `device` to the driver, so that the
/// reserved bytes measured next start from what live tensors hold.
pub fn device_memory_cleanup<R: CubeRuntime>(device: &R::Device) {
    R::client(device).memory_cleanup();
}

fn tensor<B: burn::tensor::backend::Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

fn primitive<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

/// The forward with an explicit chunk size (the trait method uses [`chunk_rows`]); public so
/// that tests can force several chunks on small problems.
pub fn lse_chunked<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    z: CubeTensor<R>,
    n_anchor: usize,
    temperature: f64,
    rows: usize,
) -> CubeTensor<R> {
    type B<R, F, I, BT> = CubeBackend<R, F, I, BT>;
    let z = tensor::<B<R, F, I, BT>, 2>(z);
    let device = z.device();
    let zt = z.clone().transpose();
    let lse = primitive(Tensor::<B<R, F, I, BT>, 1>::empty([n_anchor], &device));
    let inv_tau = (1.0 / temperature) as f32;
    for i0 in (0..n_anchor).step_by(rows.max(1)) {
        let r = rows.min(n_anchor - i0);
        let dots = into_contiguous(primitive(z.clone().narrow(0, i0, r).matmul(zt.clone())));
        masked_row_lse_kernel::launch::<F, R>(
            &dots.client,
            CubeCount::Static(r as u32, 1, 1),
            CubeDim::new_1d(UNITS),
            dots.clone().into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            i0 as u32,
            inv_tau,
            UNITS,
        );
    }
    lse
}

/// The backward with an explicit chunk size; see [`lse_chunked`].
pub fn lse_backward_chunked<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    z: CubeTensor<R>,
    lse: CubeTensor<R>,
    grad: CubeTensor<R>,
    temperature: f64,
    rows: usize,
) -> CubeTensor<R> {
    type B<R, F, I, BT> = CubeBackend<R, F, I, BT>;
    let z = tensor::<B<R, F, I, BT>, 2>(z);
    let [n_contrast, dim] = z.dims();
    let n_anchor = lse.meta.shape()[0];
    let device = z.device();
    let lse = into_contiguous(lse);
    let grad = into_contiguous(grad);
    let zt = z.clone().transpose();
    let inv_tau = (1.0 / temperature) as f32;
    let mut columns = Tensor::<B<R, F, I, BT>, 2>::zeros([n_contrast, dim], &device);
    let mut row_terms = Vec::new();
    for i0 in (0..n_anchor).step_by(rows.max(1)) {
        let r = rows.min(n_anchor - i0);
        let chunk = z.clone().narrow(0, i0, r);
        let dots = into_contiguous(primitive(chunk.clone().matmul(zt.clone())));
        softmax_weights_kernel::launch::<F, R>(
            &dots.client,
            CubeCount::Static(r as u32, 1, 1),
            CubeDim::new_1d(UNITS),
            dots.clone().into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            grad.clone().into_tensor_arg(),
            i0 as u32,
            inv_tau,
            UNITS,
        );
        let weights = tensor::<B<R, F, I, BT>, 2>(dots);
        row_terms.push(weights.clone().matmul(z.clone()));
        columns = columns + weights.transpose().matmul(chunk);
    }
    if n_anchor < n_contrast {
        row_terms.push(Tensor::zeros([n_contrast - n_anchor, dim], &device));
    }
    let rows_term = Tensor::cat(row_terms, 0);
    primitive((rows_term + columns).mul_scalar(inv_tau))
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> SupConBackend
    for CubeBackend<R, F, I, BT>
{
    fn supcon_lse(z: FloatTensor<Self>, n_anchor: usize, temperature: f64) -> FloatTensor<Self> {
        let n_contrast = z.meta.shape()[0];
        lse_chunked::<R, F, I, BT>(z, n_anchor, temperature, chunk_rows(n_contrast, n_anchor))
    }

    fn supcon_lse_backward(
        z: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        temperature: f64,
    ) -> FloatTensor<Self> {
        let n_contrast = z.meta.shape()[0];
        let n_anchor = lse.meta.shape()[0];
        lse_backward_chunked::<R, F, I, BT>(
            z,
            lse,
            grad,
            temperature,
            chunk_rows(n_contrast, n_anchor),
        )
    }

    fn supcon_fused_available() -> bool {
        true
    }
}

/// The fusion wrapper (`burn::backend::Wgpu` and `Cuda` with Burn's default features): the
/// operation is registered as a custom operation on the fusion stream, which runs the inner
/// backend's implementation on the resolved tensors.
mod fusion {
    use super::*;
    use burn_fusion::stream::{Operation, OperationStreams};
    use burn_fusion::{Fusion, FusionBackend, FusionRuntime};
    use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};

    #[derive(Clone, Debug)]
    struct LseOp<B> {
        desc: CustomOpIr,
        temperature: f64,
        _backend: core::marker::PhantomData<B>,
    }

    impl<B: FusionBackend + SupConBackend> Operation<B::FusionRuntime> for LseOp<B> {
        fn execute(
            &self,
            handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
        ) {
            let ([z], [lse]) = self.desc.as_fixed();
            let n_anchor = lse.shape[0];
            let z = handles.get_float_tensor::<B>(z);
            let out = B::supcon_lse(z, n_anchor, self.temperature);
            handles.register_float_tensor::<B>(&lse.id, out);
        }
    }

    #[derive(Clone, Debug)]
    struct LseBackwardOp<B> {
        desc: CustomOpIr,
        temperature: f64,
        _backend: core::marker::PhantomData<B>,
    }

    impl<B: FusionBackend + SupConBackend> Operation<B::FusionRuntime> for LseBackwardOp<B> {
        fn execute(
            &self,
            handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
        ) {
            let ([z, lse, grad], [out]) = self.desc.as_fixed();
            let z = handles.get_float_tensor::<B>(z);
            let lse = handles.get_float_tensor::<B>(lse);
            let grad = handles.get_float_tensor::<B>(grad);
            let result = B::supcon_lse_backward(z, lse, grad, self.temperature);
            handles.register_float_tensor::<B>(&out.id, result);
        }
    }

    impl<B: FusionBackend + SupConBackend> SupConBackend for Fusion<B> {
        fn supcon_lse(
            z: FloatTensor<Self>,
            n_anchor: usize,
            temperature: f64,
        ) -> FloatTensor<Self> {
            let client = z.client.clone();
            let dtype = z.dtype;
            let streams = OperationStreams::with_inputs([&z]);
            let out = TensorIr::uninit(client.create_empty_handle(), [n_anchor].into(), dtype);
            let desc = CustomOpIr::new("supcon_lse", &[z.into_ir()], &[out]);
            client
                .register(
                    streams,
                    OperationIr::Custom(desc.clone()),
                    LseOp::<B> {
                        desc,
                        temperature,
                        _backend: core::marker::PhantomData,
                    },
                )
                .output()
        }

        fn supcon_lse_backward(
            z: FloatTensor<Self>,
            lse: FloatTensor<Self>,
            grad: FloatTensor<Self>,
            temperature: f64,
        ) -> FloatTensor<Self> {
            let client = z.client.clone();
            let dtype = z.dtype;
            let shape = z.shape.clone();
            let streams = OperationStreams::with_inputs([&z, &lse, &grad]);
            let out = TensorIr::uninit(client.create_empty_handle(), shape, dtype);
            let desc = CustomOpIr::new(
                "supcon_lse_backward",
                &[z.into_ir(), lse.into_ir(), grad.into_ir()],
                &[out],
            );
            client
                .register(
                    streams,
                    OperationIr::Custom(desc.clone()),
                    LseBackwardOp::<B> {
                        desc,
                        temperature,
                        _backend: core::marker::PhantomData,
                    },
                )
                .output()
        }

        fn supcon_fused_available() -> bool {
            B::supcon_fused_available()
        }
    }
}
