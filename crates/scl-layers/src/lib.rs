//! A 2-D convolution for Burn whose backward is fast on the CPU, as a backend extension.
//!
//! Burn's autodiff differentiates a convolution with two more convolutions: the input gradient
//! as a transposed convolution, the weight gradient as a convolution of the input by the output
//! gradient (a kernel the size of a whole output plane). On Burn's CPU backends both are far
//! slower than the forward. [`LayerBackend`] lets a backend supply its own convolution and two
//! gradients; this crate gives Burn's Flex and ndarray backends (for `f32`) the
//! unfold-and-multiply form of [`cpu`]: one tuned GEMM per chunk of images for the forward and
//! for each gradient, the chunks spread over the cores. Every other
//! backend keeps Burn's own ops (the trait's default methods), so code written over
//! `B: LayerBackend` runs everywhere.
//!
//! Use [`conv2d`] where you would call `burn::tensor::module::conv2d`, or [`forward`] where
//! you would call `Conv2d::forward` (same module, same records):
//!
//! ```
//! use burn::backend::{Autodiff, Flex};
//! use burn::nn::PaddingConfig2d;
//! use burn::nn::conv::Conv2dConfig;
//! use burn::tensor::{Distribution, Tensor};
//!
//! type B = Autodiff<Flex>;
//! let device = Default::default();
//! let conv = Conv2dConfig::new([3, 8], [3, 3])
//!     .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
//!     .init::<B>(&device);
//! let x = Tensor::<B, 4>::random([2, 3, 16, 16], Distribution::Default, &device).require_grad();
//! let y = scl_layers::forward(&conv, x.clone());
//! let grads = y.sum().backward();
//! assert_eq!(x.grad(&grads).unwrap().dims(), [2, 3, 16, 16]);
//! ```
//!
//! [`profile`] counts the time spent in the convolutions' forward and both gradients, for
//! `cargo xtask bench train`'s breakdown.
#![warn(missing_docs)]

pub mod cpu;
mod gemm;
pub mod norm;
pub mod profile;

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::{ConvOptions, FloatTensor};
use burn::tensor::{Tensor, TensorData, TensorMetadata, TensorPrimitive};

use crate::profile::Part;

/// A Burn backend whose 2-D convolution gradients may have a faster implementation than Burn's.
///
/// Every method has a default body (Burn's own op), so `impl LayerBackend for MyBackend {}` is
/// all a backend without a kernel needs. This crate implements it for `Flex` and `NdArray`
/// (the CPU kernels of [`cpu`] for `f32` tensors), `Autodiff<B>` (the backward that calls
/// them), and with the feature `cubecl` for Burn's GPU backends (Burn's ops).
pub trait LayerBackend: Backend {
    /// The forward convolution, `[N, O, Ho, Wo]` (Burn's `conv2d`).
    fn scl_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, bias, options)
    }

    /// The gradient with respect to the input, `[N, C, H, W]`.
    fn scl_conv2d_input_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, output_grad, options)
    }

    /// The gradient with respect to the weight, `[O, C, KH, KW]`.
    fn scl_conv2d_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, output_grad, options)
    }

    /// Batch normalisation in training mode: `[y, mean, var]` for `x` `[N, C, S]`, `gamma`
    /// and `beta` `[C]`; `mean` and the biased `var` are `[C]` (see [`norm`]).
    fn scl_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> [FloatTensor<Self>; 3] {
        reference_batch_norm::<Self>(x, gamma, beta, epsilon)
    }

    /// The gradients `[dx, dgamma, dbeta]` of [`LayerBackend::scl_batch_norm`]'s output `y`
    /// from its gradient `output_grad`, with the forward's `mean` and `var`.
    fn scl_batch_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        epsilon: f64,
    ) -> [FloatTensor<Self>; 3] {
        reference_batch_norm_backward::<Self>(x, gamma, mean, var, output_grad, epsilon)
    }

    /// Batch normalisation in inference mode, with the running statistics: `y = gamma (x -
    /// mean) / sqrt(var + eps) + beta` for `x` `[N, C, S]`; `gamma`, `beta`, `mean` and `var`
    /// are `[C]`.
    fn scl_batch_norm_inference(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        reference_batch_norm_inference::<Self>(x, gamma, beta, mean, var, epsilon)
    }

    /// `a` `[N, Ca, H, W]` and `b` `[N, Cb, H, W]` joined along the channels,
    /// `[N, Ca + Cb, H, W]` (Burn's `cat`); on an autodiff backend its gradient comes from
    /// [`LayerBackend::scl_split_channels`].
    fn scl_concat_channels(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_cat(vec![a, b], 1)
    }

    /// `t` `[N, C, H, W]` cut along the channels into `[N, at, H, W]` and `[N, C - at, H, W]`
    /// (default: Burn's slices, which on Flex are strided views of `t`).
    fn scl_split_channels(t: FloatTensor<Self>, at: usize) -> [FloatTensor<Self>; 2] {
        reference_split_channels::<Self>(t, at)
    }
}

fn float<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

fn primitive<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

/// The default body of [`LayerBackend::scl_batch_norm`]: the formulas of [`norm`] in tensor
/// operations, on any backend.
pub fn reference_batch_norm<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    epsilon: f64,
) -> [FloatTensor<B>; 3] {
    let x = float::<B, 3>(x);
    let [n, c, s] = x.dims();
    let rows = x.clone().swap_dims(0, 1).reshape([c, n * s]);
    let mean = rows.clone().mean_dim(1);
    let var = (rows - mean.clone()).square().mean_dim(1);
    let std = var.clone().add_scalar(epsilon).sqrt();
    let scale = float::<B, 1>(gamma).reshape([c, 1]) * (std.ones_like() / std);
    let shift = float::<B, 1>(beta).reshape([c, 1]) - mean.clone() * scale.clone();
    let y = x * scale.reshape([1, c, 1]) + shift.reshape([1, c, 1]);
    [
        primitive(y),
        primitive(mean.reshape([c])),
        primitive(var.reshape([c])),
    ]
}

/// The default body of [`LayerBackend::scl_batch_norm_inference`], in tensor operations (the
/// formula of Burn's `BatchNorm` in inference mode).
pub fn reference_batch_norm_inference<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    mean: FloatTensor<B>,
    var: FloatTensor<B>,
    epsilon: f64,
) -> FloatTensor<B> {
    let x = float::<B, 3>(x);
    let c = x.dims()[1];
    let channel = |t: FloatTensor<B>| float::<B, 1>(t).reshape([1, c, 1]);
    let std = channel(var).add_scalar(epsilon).sqrt();
    primitive((x - channel(mean)) / std * channel(gamma) + channel(beta))
}

/// The default body of [`LayerBackend::scl_batch_norm_backward`], in tensor operations.
pub fn reference_batch_norm_backward<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    mean: FloatTensor<B>,
    var: FloatTensor<B>,
    output_grad: FloatTensor<B>,
    epsilon: f64,
) -> [FloatTensor<B>; 3] {
    let x = float::<B, 3>(x);
    let dy = float::<B, 3>(output_grad);
    let [n, c, s] = x.dims();
    let m = (n * s) as f64;
    let std = float::<B, 1>(var).add_scalar(epsilon).sqrt();
    let inv_std = std.ones_like() / std;
    let x_hat = (x - float::<B, 1>(mean).reshape([1, c, 1])) * inv_std.clone().reshape([1, c, 1]);
    let per_channel = |t: Tensor<B, 3>| t.sum_dim(0).sum_dim(2).reshape([c]);
    let dbeta = per_channel(dy.clone());
    let dgamma = per_channel(dy.clone() * x_hat.clone());
    let k = (float::<B, 1>(gamma) * inv_std).div_scalar(m);
    let dx = k.reshape([1, c, 1])
        * (dy.mul_scalar(m)
            - dbeta.clone().reshape([1, c, 1])
            - x_hat * dgamma.clone().reshape([1, c, 1]));
    [primitive(dx), primitive(dgamma), primitive(dbeta)]
}

/// Batch normalisation with `bn`'s parameters: in training mode (an autodiff backend) through
/// [`LayerBackend::scl_batch_norm`], updating the running statistics as Burn's
/// `BatchNorm::forward` does; otherwise `bn.forward(x)` (the running statistics). `x` is
/// `[N, C, ...]`.
pub fn batch_norm<B: LayerBackend, const D: usize>(
    bn: &BatchNorm<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    let device = x.device();
    if D < 2 {
        return bn.forward(x);
    }
    let dims = x.dims();
    let (n, c) = (dims[0], dims[1]);
    let s = dims[2..].iter().product::<usize>();
    if !B::ad_enabled(&device) {
        let stat = |state: &burn::module::RunningState<Tensor<B, 1>>| {
            primitive(state.value().to_device(&device))
        };
        let y = B::scl_batch_norm_inference(
            primitive(x.reshape([n, c, s])),
            primitive(bn.gamma.val()),
            primitive(bn.beta.val()),
            stat(&bn.running_mean),
            stat(&bn.running_var),
            bn.epsilon,
        );
        return float::<B, 3>(y).reshape(dims);
    }
    let [y, mean, var] = B::scl_batch_norm(
        primitive(x.reshape([n, c, s])),
        primitive(bn.gamma.val()),
        primitive(bn.beta.val()),
        bn.epsilon,
    );
    let running = |state: &burn::module::RunningState<Tensor<B, 1>>, batch: FloatTensor<B>| {
        let value = state
            .value_sync()
            .to_device(&device)
            .mul_scalar(1.0 - bn.momentum)
            .add(float::<B, 1>(batch).detach().mul_scalar(bn.momentum));
        state.update(value.detach());
    };
    running(&bn.running_mean, mean);
    running(&bn.running_var, var);
    float::<B, 3>(y).reshape(dims)
}

/// `Tensor::cat(vec![a, b], 1)` for `[N, C, H, W]` tensors (DenseNet's concatenation), whose
/// gradient parts come from [`LayerBackend::scl_split_channels`]: on the CPU backends two
/// contiguous tensors, where Burn's slices of the gradient are strided views that make every
/// later operation on them (the sum with the layer's other gradient first) walk element by
/// element.
pub fn concat_channels<B: LayerBackend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> Tensor<B, 4> {
    float::<B, 4>(B::scl_concat_channels(primitive(a), primitive(b)))
}

/// A 2-D convolution (`x` `[N, C, H, W]`, `weight` `[O, C / groups, KH, KW]`, `bias` `[O]`)
/// whose gradients come from [`LayerBackend`].
pub fn conv2d<B: LayerBackend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    options: ConvOptions<2>,
) -> Tensor<B, 4> {
    Tensor::from_primitive(TensorPrimitive::Float(B::scl_conv2d(
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
        bias.map(|b| b.into_primitive().tensor()),
        options,
    )))
}

/// `conv.forward(x)` through [`conv2d`]: the same result, with the gradients of
/// [`LayerBackend`]. Padding that is not the same on both sides of a dimension (`Same` with an
/// even kernel, uneven `Explicit`) takes Burn's `Conv2d::forward`.
pub fn forward<B: LayerBackend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
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

/// The shape of the CPU kernels, when they apply: `f32` tensors, one group.
fn cpu_shape<B: Backend>(
    x: &FloatTensor<B>,
    weight: &FloatTensor<B>,
    options: &ConvOptions<2>,
) -> Option<cpu::ConvShape> {
    use burn::tensor::DType;
    if x.dtype() != DType::F32 || weight.dtype() != DType::F32 || options.groups != 1 {
        return None;
    }
    let [n, c, h, w] = x.shape().dims();
    let [o, ci, kh, kw] = weight.shape().dims();
    (ci == c).then_some(cpu::ConvShape {
        n,
        c,
        h,
        w,
        o,
        kernel: [kh, kw],
        stride: options.stride,
        padding: options.padding,
        dilation: options.dilation,
    })
}

fn host<B: Backend>(t: FloatTensor<B>) -> Vec<f32> {
    Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(t))
        .into_data()
        .into_vec::<f32>()
        .expect("an f32 tensor reads as f32")
}

/// `f` of the values of the `f32` tensor `t` in row-major order: on Flex a view of its
/// storage when it is contiguous (no copy; the tensor is usually shared with the autodiff
/// graph's checkpoint, where reading it out would copy it), else a host copy.
fn with_values<B: Backend, R>(t: FloatTensor<B>, f: impl FnOnce(&[f32]) -> R) -> R {
    #[cfg(feature = "flex")]
    {
        let any: &dyn std::any::Any = &t;
        if let Some(values) = any
            .downcast_ref::<burn::backend::flex::FlexTensor>()
            .and_then(|flex| flex.as_slice::<f32>())
        {
            return f(values);
        }
    }
    f(&host::<B>(t))
}

/// [`LayerBackend::scl_conv2d`] on the CPU kernel for a CPU backend.
fn cpu_conv2d<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    options: ConvOptions<2>,
) -> FloatTensor<B> {
    let shape = cpu_shape::<B>(&x, &weight, &options)
        .filter(|_| bias.as_ref().is_none_or(|b| is_f32::<B>(&[b])));
    let Some(shape) = shape else {
        return B::conv2d(x, weight, bias, options);
    };
    let device = B::float_device(&x);
    let bias = bias.map(host::<B>);
    let y = with_values::<B, _>(x, |x| {
        with_values::<B, _>(weight, |w| cpu::forward(&shape, x, w, bias.as_deref()))
    });
    let [ho, wo] = shape.output();
    tensor_of::<B, 4>(y, [shape.n, shape.o, ho, wo], &device)
}

/// [`LayerBackend::scl_conv2d_input_grad`] on the CPU kernel for a CPU backend.
fn cpu_input_grad<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    output_grad: FloatTensor<B>,
    options: ConvOptions<2>,
) -> FloatTensor<B> {
    let Some(shape) = cpu_shape::<B>(&x, &weight, &options) else {
        return B::conv2d_x_backward(x, weight, output_grad, options);
    };
    let device = B::float_device(&x);
    let dx = with_values::<B, _>(weight, |w| {
        with_values::<B, _>(output_grad, |g| cpu::input_grad(&shape, w, g))
    });
    tensor_of::<B, 4>(dx, [shape.n, shape.c, shape.h, shape.w], &device)
}

/// [`LayerBackend::scl_conv2d_weight_grad`] on the CPU kernel for a CPU backend.
fn cpu_weight_grad<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    output_grad: FloatTensor<B>,
    options: ConvOptions<2>,
) -> FloatTensor<B> {
    let Some(shape) = cpu_shape::<B>(&x, &weight, &options) else {
        return B::conv2d_weight_backward(x, weight, output_grad, options);
    };
    let device = B::float_device(&x);
    let dw = with_values::<B, _>(x, |x| {
        with_values::<B, _>(output_grad, |g| cpu::weight_grad(&shape, x, g))
    });
    tensor_of::<B, 4>(
        dw,
        [shape.o, shape.c, shape.kernel[0], shape.kernel[1]],
        &device,
    )
}

fn is_f32<B: Backend>(tensors: &[&FloatTensor<B>]) -> bool {
    tensors
        .iter()
        .all(|t| t.dtype() == burn::tensor::DType::F32)
}

fn tensor_of<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> FloatTensor<B> {
    Tensor::<B, D>::from_data(TensorData::new(values, shape), device)
        .into_primitive()
        .tensor()
}

/// [`LayerBackend::scl_batch_norm`] on the host loops of [`norm`], for a CPU backend.
fn cpu_batch_norm<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    epsilon: f64,
) -> [FloatTensor<B>; 3] {
    if !is_f32::<B>(&[&x, &gamma, &beta]) {
        return reference_batch_norm::<B>(x, gamma, beta, epsilon);
    }
    let [n, c, s] = x.shape().dims();
    let device = B::float_device(&x);
    let (y, mean, var) = with_values::<B, _>(x, |x| {
        let (mean, var) = norm::statistics(x, n, c, s);
        let y = norm::normalise(
            x,
            [n, c, s],
            (&mean, &var),
            &host::<B>(gamma),
            &host::<B>(beta),
            epsilon,
        );
        (y, mean, var)
    });
    let narrow = |v: &[f64]| v.iter().map(|&m| m as f32).collect::<Vec<f32>>();
    [
        tensor_of::<B, 3>(y, [n, c, s], &device),
        tensor_of::<B, 1>(narrow(&mean), [c], &device),
        tensor_of::<B, 1>(narrow(&var), [c], &device),
    ]
}

/// [`LayerBackend::scl_batch_norm_backward`] on the host loops of [`norm`].
fn cpu_batch_norm_backward<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    mean: FloatTensor<B>,
    var: FloatTensor<B>,
    output_grad: FloatTensor<B>,
    epsilon: f64,
) -> [FloatTensor<B>; 3] {
    if !is_f32::<B>(&[&x, &gamma, &mean, &var, &output_grad]) {
        return reference_batch_norm_backward::<B>(x, gamma, mean, var, output_grad, epsilon);
    }
    let [n, c, s] = x.shape().dims();
    let device = B::float_device(&x);
    let widen = |t: FloatTensor<B>| {
        host::<B>(t)
            .into_iter()
            .map(f64::from)
            .collect::<Vec<f64>>()
    };
    let (mean, var) = (widen(mean), widen(var));
    let gamma = host::<B>(gamma);
    let (dx, dgamma, dbeta) = with_values::<B, _>(x, |x| {
        with_values::<B, _>(output_grad, |g| {
            norm::backward(x, g, [n, c, s], (&mean, &var), &gamma, epsilon)
        })
    });
    [
        tensor_of::<B, 3>(dx, [n, c, s], &device),
        tensor_of::<B, 1>(dgamma, [c], &device),
        tensor_of::<B, 1>(dbeta, [c], &device),
    ]
}

/// [`LayerBackend::scl_batch_norm_inference`] on the host loops of [`norm`], for a CPU
/// backend.
fn cpu_batch_norm_inference<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    mean: FloatTensor<B>,
    var: FloatTensor<B>,
    epsilon: f64,
) -> FloatTensor<B> {
    if !is_f32::<B>(&[&x, &gamma, &beta, &mean, &var]) {
        return reference_batch_norm_inference::<B>(x, gamma, beta, mean, var, epsilon);
    }
    let [n, c, s] = x.shape().dims();
    let device = B::float_device(&x);
    let widen = |t: FloatTensor<B>| host::<B>(t).into_iter().map(f64::from).collect::<Vec<_>>();
    let (mean, var) = (widen(mean), widen(var));
    let (gamma, beta) = (host::<B>(gamma), host::<B>(beta));
    let y = with_values::<B, _>(x, |x| {
        norm::normalise(x, [n, c, s], (&mean, &var), &gamma, &beta, epsilon)
    });
    tensor_of::<B, 3>(y, [n, c, s], &device)
}

/// [`LayerBackend::scl_split_channels`] as two contiguous host copies, for a CPU backend.
fn cpu_split_channels<B: Backend>(t: FloatTensor<B>, at: usize) -> [FloatTensor<B>; 2] {
    let dims = t.shape().dims::<4>();
    if !is_f32::<B>(&[&t]) || at > dims[1] {
        return reference_split_channels::<B>(t, at);
    }
    let [n, c, h, w] = dims;
    let plane = h * w;
    let device = B::float_device(&t);
    let (first, second) = with_values::<B, _>(t, |values| {
        let mut first = Vec::with_capacity(n * at * plane);
        let mut second = Vec::with_capacity(n * (c - at) * plane);
        for image in values.chunks(c * plane) {
            first.extend_from_slice(&image[..at * plane]);
            second.extend_from_slice(&image[at * plane..]);
        }
        (first, second)
    });
    [
        tensor_of::<B, 4>(first, [n, at, h, w], &device),
        tensor_of::<B, 4>(second, [n, c - at, h, w], &device),
    ]
}

/// The default body of [`LayerBackend::scl_split_channels`] (Burn's slices).
fn reference_split_channels<B: Backend>(t: FloatTensor<B>, at: usize) -> [FloatTensor<B>; 2] {
    let t = float::<B, 4>(t);
    let c = t.dims()[1];
    [
        primitive(t.clone().narrow(1, 0, at)),
        primitive(t.narrow(1, at, c - at)),
    ]
}

/// The methods of [`LayerBackend`] that run the host kernels, for a CPU backend's impl.
#[allow(unused_macros)]
macro_rules! cpu_layer_methods {
    () => {
        fn scl_split_channels(t: FloatTensor<Self>, at: usize) -> [FloatTensor<Self>; 2] {
            cpu_split_channels::<Self>(t, at)
        }

        fn scl_conv2d(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            bias: Option<FloatTensor<Self>>,
            options: ConvOptions<2>,
        ) -> FloatTensor<Self> {
            cpu_conv2d::<Self>(x, weight, bias, options)
        }

        fn scl_conv2d_input_grad(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            output_grad: FloatTensor<Self>,
            options: ConvOptions<2>,
        ) -> FloatTensor<Self> {
            cpu_input_grad::<Self>(x, weight, output_grad, options)
        }

        fn scl_conv2d_weight_grad(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            output_grad: FloatTensor<Self>,
            options: ConvOptions<2>,
        ) -> FloatTensor<Self> {
            cpu_weight_grad::<Self>(x, weight, output_grad, options)
        }

        fn scl_batch_norm(
            x: FloatTensor<Self>,
            gamma: FloatTensor<Self>,
            beta: FloatTensor<Self>,
            epsilon: f64,
        ) -> [FloatTensor<Self>; 3] {
            cpu_batch_norm::<Self>(x, gamma, beta, epsilon)
        }

        fn scl_batch_norm_backward(
            x: FloatTensor<Self>,
            gamma: FloatTensor<Self>,
            mean: FloatTensor<Self>,
            var: FloatTensor<Self>,
            output_grad: FloatTensor<Self>,
            epsilon: f64,
        ) -> [FloatTensor<Self>; 3] {
            cpu_batch_norm_backward::<Self>(x, gamma, mean, var, output_grad, epsilon)
        }

        fn scl_batch_norm_inference(
            x: FloatTensor<Self>,
            gamma: FloatTensor<Self>,
            beta: FloatTensor<Self>,
            mean: FloatTensor<Self>,
            var: FloatTensor<Self>,
            epsilon: f64,
        ) -> FloatTensor<Self> {
            cpu_batch_norm_inference::<Self>(x, gamma, beta, mean, var, epsilon)
        }
    };
}

#[cfg(feature = "flex")]
impl LayerBackend for burn::backend::Flex {
    cpu_layer_methods!();
}

#[cfg(feature = "ndarray")]
mod ndarray_impl {
    use super::*;
    use burn::backend::NdArray;
    use burn::backend::ndarray::{
        FloatNdArrayElement, IntNdArrayElement, NdArrayTensor, QuantElement, SharedArray,
    };

    impl<E: FloatNdArrayElement, I: IntNdArrayElement, Q: QuantElement> LayerBackend
        for NdArray<E, I, Q>
    where
        NdArrayTensor: From<SharedArray<E>>,
        NdArrayTensor: From<SharedArray<I>>,
    {
        cpu_layer_methods!();
    }
}

#[cfg(feature = "cubecl")]
mod cube_impl {
    use super::LayerBackend;
    use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
    use burn_fusion::{Fusion, FusionBackend};

    impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> LayerBackend
        for CubeBackend<R, F, I, BT>
    {
    }

    impl<B: FusionBackend + LayerBackend> LayerBackend for Fusion<B> {}
}

/// The autodiff wrapper: the forward runs the inner backend's convolution and checkpoints the
/// input and the weight (as Burn's own convolution does); the backward calls the inner
/// backend's [`LayerBackend`] gradients, and Burn's bias gradient.
impl<B: LayerBackend, C: CheckpointStrategy> LayerBackend for Autodiff<B, C> {
    fn scl_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct WithBias;
        #[derive(Debug)]
        struct NoBias;

        fn grads_of<B: LayerBackend>(
            x: FloatTensor<B>,
            weight: FloatTensor<B>,
            grad: FloatTensor<B>,
            options: ConvOptions<2>,
            want: [bool; 2],
        ) -> [Option<FloatTensor<B>>; 2] {
            let input = want[0].then(|| {
                profile::timed(Part::InputGrad, || {
                    B::scl_conv2d_input_grad(
                        x.clone(),
                        weight.clone(),
                        grad.clone(),
                        options.clone(),
                    )
                })
            });
            let weight = want[1].then(|| {
                profile::timed(Part::WeightGrad, || {
                    B::scl_conv2d_weight_grad(x, weight, grad, options)
                })
            });
            [input, weight]
        }

        impl<B: LayerBackend> Backward<B, 3> for WithBias {
            type State = (NodeId, NodeId, NodeId, ConvOptions<2>);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_x, node_weight, node_bias] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (x, weight, bias, options) = ops.state;
                let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x);
                let weight = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(weight);
                let bias = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(bias);
                if let Some(node) = node_bias {
                    grads.register::<B>(
                        node.id,
                        B::conv2d_bias_backward(x.clone(), bias, grad.clone()),
                    );
                }
                let [dx, dw] = grads_of::<B>(
                    x,
                    weight,
                    grad,
                    options,
                    [node_x.is_some(), node_weight.is_some()],
                );
                if let (Some(node), Some(dx)) = (node_x, dx) {
                    grads.register::<B>(node.id, dx);
                }
                if let (Some(node), Some(dw)) = (node_weight, dw) {
                    grads.register::<B>(node.id, dw);
                }
            }
        }

        impl<B: LayerBackend> Backward<B, 2> for NoBias {
            type State = (NodeId, NodeId, ConvOptions<2>);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_x, node_weight] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (x, weight, options) = ops.state;
                let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x);
                let weight = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(weight);
                let [dx, dw] = grads_of::<B>(
                    x,
                    weight,
                    grad,
                    options,
                    [node_x.is_some(), node_weight.is_some()],
                );
                if let (Some(node), Some(dx)) = (node_x, dx) {
                    grads.register::<B>(node.id, dx);
                }
                if let (Some(node), Some(dw)) = (node_weight, dw) {
                    grads.register::<B>(node.id, dw);
                }
            }
        }

        let forward = |x, weight, bias, options| {
            profile::timed(Part::Forward, || B::scl_conv2d(x, weight, bias, options))
        };
        match bias {
            Some(bias) => match WithBias
                .prepare::<C>([x.node.clone(), weight.node.clone(), bias.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(mut prep) => {
                    let state = (
                        prep.checkpoint(&x),
                        prep.checkpoint(&weight),
                        prep.checkpoint(&bias),
                        options.clone(),
                    );
                    prep.finish(
                        state,
                        forward(x.primitive, weight.primitive, Some(bias.primitive), options),
                    )
                }
                OpsKind::UnTracked(prep) => prep.finish(forward(
                    x.primitive,
                    weight.primitive,
                    Some(bias.primitive),
                    options,
                )),
            },
            None => match NoBias
                .prepare::<C>([x.node.clone(), weight.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(mut prep) => {
                    let state = (
                        prep.checkpoint(&x),
                        prep.checkpoint(&weight),
                        options.clone(),
                    );
                    prep.finish(state, forward(x.primitive, weight.primitive, None, options))
                }
                OpsKind::UnTracked(prep) => {
                    prep.finish(forward(x.primitive, weight.primitive, None, options))
                }
            },
        }
    }

    fn scl_concat_channels(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct ConcatBackward;

        impl<B: LayerBackend> Backward<B, 2> for ConcatBackward {
            type State = usize;

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [node_a, node_b] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let [da, db] = B::scl_split_channels(grad, ops.state);
                for (node, g) in [(node_a, da), (node_b, db)] {
                    if let Some(node) = node {
                        grads.register::<B>(node.id, g);
                    }
                }
            }
        }

        let at = a.primitive.shape().dims::<4>()[1];
        match ConcatBackward
            .prepare::<C>([a.node.clone(), b.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                prep.finish(at, B::scl_concat_channels(a.primitive, b.primitive))
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::scl_concat_channels(a.primitive, b.primitive))
            }
        }
    }

    fn scl_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> [FloatTensor<Self>; 3] {
        #[derive(Debug)]
        struct NormBackward;

        impl<B: LayerBackend> Backward<B, 3> for NormBackward {
            type State = ([FloatTensor<B>; 4], f64);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [node_x, node_gamma, node_beta] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let ([x, gamma, mean, var], epsilon) = ops.state;
                let [dx, dgamma, dbeta] = profile::timed(Part::NormBackward, || {
                    B::scl_batch_norm_backward(x, gamma, mean, var, grad, epsilon)
                });
                for (node, g) in [(node_x, dx), (node_gamma, dgamma), (node_beta, dbeta)] {
                    if let Some(node) = node {
                        grads.register::<B>(node.id, g);
                    }
                }
            }
        }

        let forward = |x, gamma, beta| {
            profile::timed(Part::NormForward, || {
                B::scl_batch_norm(x, gamma, beta, epsilon)
            })
        };
        let [y, mean, var] = match NormBackward
            .prepare::<C>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let [y, mean, var] =
                    forward(x.primitive.clone(), gamma.primitive.clone(), beta.primitive);
                let state = (
                    [x.primitive, gamma.primitive, mean.clone(), var.clone()],
                    epsilon,
                );
                [
                    prep.finish(state, y),
                    Self::from_inner(mean),
                    Self::from_inner(var),
                ]
            }
            OpsKind::UnTracked(prep) => {
                let [y, mean, var] = forward(x.primitive, gamma.primitive, beta.primitive);
                [
                    prep.finish(y),
                    Self::from_inner(mean),
                    Self::from_inner(var),
                ]
            }
        };
        [y, mean, var]
    }
}

#[cfg(test)]
mod tests;
