//! A 2-D convolution and batch normalisation for Burn whose backward is fast on the CPU, as a
//! backend extension.
//!
//! Burn's autodiff differentiates a convolution with two more convolutions: the input gradient
//! as a transposed convolution, the weight gradient as a convolution of the input by the output
//! gradient (a kernel the size of a whole output plane). On Burn's CPU backend both are far
//! slower than the forward. [`LayerBackend`] gives Burn's Flex backend (for `f32`) the
//! unfold-and-multiply form of [`cpu`]: one tuned GEMM per chunk of images for the forward and
//! for each gradient, the chunks spread over the cores; batch normalisation in training mode
//! as one operation with its own backward ([`norm`]); and DenseNet's channel concatenation
//! with contiguous gradient parts. On every other device (and for other float types) the
//! functions here call Burn's own operations, so they run everywhere.
//!
//! Use [`conv2d`] where you would call `burn::tensor::module::conv2d`, [`forward`] where you
//! would call `Conv2d::forward` (same module, same records), and [`batch_norm`] where you would
//! call `BatchNorm::forward`:
//!
//! ```
//! use burn::nn::PaddingConfig2d;
//! use burn::nn::conv::Conv2dConfig;
//! use burn::tensor::{Device, Distribution, Tensor};
//!
//! let device = Device::flex().autodiff();
//! let conv = Conv2dConfig::new([3, 8], [3, 3])
//!     .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
//!     .init(&device);
//! let x = Tensor::<4>::random([2, 3, 16, 16], Distribution::Default, &device).require_grad();
//! let y = scl_layers::forward(&conv, x.clone());
//! let grads = y.sum().backward();
//! assert_eq!(x.grad(&grads).unwrap().dims(), [2, 3, 16, 16]);
//! ```
//!
//! [`profile`] counts the time spent in the convolutions' forward and both gradients, for
//! `cargo xtask bench train`'s breakdown.
#![warn(missing_docs)]

mod autodiff;
pub mod cpu;
#[cfg(feature = "flex")]
mod flex;
mod gemm;
pub mod norm;
pub mod profile;
mod reference;

pub use reference::{
    reference_batch_norm, reference_batch_norm_backward, reference_batch_norm_inference,
};

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch, DispatchDevice, backend_extension,
};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Device, Tensor};

use crate::profile::Part;

/// Three float tensors of one backend (batch normalisation's outputs and gradients).
pub type Three<B> = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

/// The operations of this crate as a Burn backend extension: implemented for Flex (the host
/// kernels of [`cpu`] and [`norm`], for `f32` tensors with one group and symmetric padding)
/// and for `Autodiff` over it (the backward that calls them).
///
/// Call them through [`conv2d`], [`forward`], [`batch_norm`] and [`concat_channels`], which
/// check that the tensors qualify and otherwise take Burn's own operations.
#[backend_extension(Flex: cfg(feature = "flex"), Autodiff)]
pub trait LayerBackend: Backend {
    /// The forward convolution without bias, `[N, O, Ho, Wo]`.
    fn scl_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self>;

    /// The forward convolution with the bias `[O]` added, `[N, O, Ho, Wo]`.
    fn scl_conv2d_with_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self>;

    /// The gradient with respect to the input, `[N, C, H, W]` (not differentiable itself).
    fn scl_conv2d_input_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self>;

    /// The gradient with respect to the weight, `[O, C, KH, KW]` (not differentiable itself).
    fn scl_conv2d_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self>;

    /// Batch normalisation in training mode: `(y, mean, var)` for `x` `[N, C, S]`, `gamma`
    /// and `beta` `[C]`; `mean` and the biased `var` are `[C]` (see [`norm`]) and carry no
    /// gradient.
    fn scl_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// The gradients `(dx, dgamma, dbeta)` of [`LayerBackend::scl_batch_norm`]'s output `y`
    /// from its gradient `output_grad`, with the forward's `mean` and `var` (not
    /// differentiable itself).
    fn scl_batch_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// Batch normalisation in inference mode, with the running statistics: `y = gamma (x -
    /// mean) / sqrt(var + eps) + beta` for `x` `[N, C, S]`; `gamma`, `beta`, `mean` and `var`
    /// are `[C]`. Not differentiable: [`batch_norm`] calls it only on devices without
    /// autodiff.
    fn scl_batch_norm_inference(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self>;

    /// `a` `[N, Ca, H, W]` and `b` `[N, Cb, H, W]` joined along the channels,
    /// `[N, Ca + Cb, H, W]`; on an autodiff backend its gradient comes from
    /// [`LayerBackend::scl_split_channels`].
    fn scl_concat_channels(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `t` `[N, C, H, W]` cut along the channels into `[N, at, H, W]` and `[N, C - at, H, W]`,
    /// two contiguous tensors (not differentiable itself).
    fn scl_split_channels(
        t: FloatTensor<Self>,
        at: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// Whether tensors on `device` run this crate's host kernels: Flex with the cargo feature
/// `flex` (an autodiff device answers for the device it wraps).
pub fn has_host_kernels(device: &Device) -> bool {
    fn of(device: &DispatchDevice) -> bool {
        match device {
            #[cfg(feature = "flex")]
            DispatchDevice::Flex(_) => true,
            DispatchDevice::Autodiff(inner) => of(inner),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
    of(device.as_dispatch())
}

/// Whether every tensor is `f32` and on a device with the host kernels.
fn on_host_kernels(device: &Device, dtypes: &[DType]) -> bool {
    has_host_kernels(device) && dtypes.iter().all(|d| *d == DType::F32)
}

/// Batch normalisation with `bn`'s parameters, as `bn.forward(x)` (`x` is `[N, C, ...]`): in
/// training mode (an autodiff device and `bn`'s training flag on, as Burn decides) the batch
/// statistics, updating the running statistics as Burn's `BatchNorm::forward` does; otherwise
/// the running statistics. On Flex in `f32` both run on the host loops of [`norm`], with the
/// backward of [`LayerBackend::scl_batch_norm_backward`]; elsewhere this is `bn.forward(x)`.
pub fn batch_norm<const D: usize>(bn: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    let training = device.is_autodiff() && bn.training.is_enabled();
    let dtypes = [x.dtype(), bn.gamma.dtype(), bn.beta.dtype()];
    // Frozen batch norms on an autodiff device keep Burn's differentiable inference path.
    if D < 2 || !on_host_kernels(&device, &dtypes) || (device.is_autodiff() && !training) {
        return bn.forward(x);
    }
    let dims = x.dims();
    let (n, c) = (dims[0], dims[1]);
    let s = dims[2..].iter().product::<usize>();
    let x = x.reshape([n, c, s]).into_dispatch();
    if !training {
        let stat = |state: &burn::module::RunningState<Tensor<1>>| {
            state.value().to_device(&device).into_dispatch()
        };
        let y = <Dispatch as LayerBackend>::scl_batch_norm_inference(
            x,
            bn.gamma.val().into_dispatch(),
            bn.beta.val().into_dispatch(),
            stat(&bn.running_mean),
            stat(&bn.running_var),
            bn.epsilon,
        );
        return Tensor::<3>::from_dispatch(y).reshape(dims);
    }
    let (y, mean, var) = <Dispatch as LayerBackend>::scl_batch_norm(
        x,
        bn.gamma.val().into_dispatch(),
        bn.beta.val().into_dispatch(),
        bn.epsilon,
    );
    let running = |state: &burn::module::RunningState<Tensor<1>>, batch: Tensor<1>| {
        let value = state
            .value_sync()
            .to_device(&device)
            .mul_scalar(1.0 - bn.momentum)
            .add(batch.detach().mul_scalar(bn.momentum));
        state.update(value.detach());
    };
    running(&bn.running_mean, Tensor::from_dispatch(mean));
    running(&bn.running_var, Tensor::from_dispatch(var));
    Tensor::<3>::from_dispatch(y).reshape(dims)
}

/// `Tensor::cat(vec![a, b], 1)` for `[N, C, H, W]` tensors (DenseNet's concatenation), whose
/// gradient parts on Flex come from [`LayerBackend::scl_split_channels`]: two contiguous
/// tensors, where Burn's slices of the gradient are strided views that make every later
/// operation on them (the sum with the layer's other gradient first) walk element by element.
pub fn concat_channels(a: Tensor<4>, b: Tensor<4>) -> Tensor<4> {
    if !on_host_kernels(&a.device(), &[a.dtype(), b.dtype()]) {
        return Tensor::cat(vec![a, b], 1);
    }
    Tensor::from_dispatch(<Dispatch as LayerBackend>::scl_concat_channels(
        a.into_dispatch(),
        b.into_dispatch(),
    ))
}

/// A 2-D convolution (`x` `[N, C, H, W]`, `weight` `[O, C / groups, KH, KW]`, `bias` `[O]`),
/// as `burn::tensor::module::conv2d`; on Flex in `f32` with one group and the same padding on
/// both sides of each dimension, through [`LayerBackend`] (the host GEMM kernels and their
/// gradients).
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    let mut dtypes = vec![x.dtype(), weight.dtype()];
    dtypes.extend(bias.as_ref().map(|b| b.dtype()));
    let symmetric = options.padding.iter().all(|(begin, end)| begin == end);
    if !(symmetric && options.groups == 1 && on_host_kernels(&x.device(), &dtypes)) {
        return burn::tensor::module::conv2d(x, weight, bias, options);
    }
    let (x, weight) = (x.into_dispatch(), weight.into_dispatch());
    Tensor::from_dispatch(match bias {
        Some(bias) => <Dispatch as LayerBackend>::scl_conv2d_with_bias(
            x,
            weight,
            bias.into_dispatch(),
            options,
        ),
        None => <Dispatch as LayerBackend>::scl_conv2d(x, weight, options),
    })
}

/// `conv.forward(x)` through [`conv2d`]: the same result, with the gradients of
/// [`LayerBackend`] where they apply. Padding that is not the same on both sides of a
/// dimension (`Same` with an even kernel, uneven `Explicit`) takes Burn's `Conv2d::forward`.
pub fn forward(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let padding = match conv.padding {
        PaddingConfig2d::Valid => Some([0, 0]),
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            Some([top, left])
        }
        _ => None,
    };
    match padding {
        Some(padding) => conv2d(
            x,
            conv.weight.val(),
            conv.bias.as_ref().map(|b| b.val()),
            ConvOptions::new(conv.stride, padding, conv.dilation, conv.groups),
        ),
        None => conv.forward(x),
    }
}

#[cfg(test)]
mod tests;
