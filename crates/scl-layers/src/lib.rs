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

pub mod cpu;
mod gemm;
pub mod norm;
pub mod profile;

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

/// The formulas of [`norm`] in tensor operations: `(y, mean, var)` of batch normalisation in
/// training mode for `x` `[N, C, S]` (the biased variance, as Burn's `BatchNorm`). On every
/// device; what the host loops are tested against.
pub fn reference_batch_norm(
    x: Tensor<3>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> (Tensor<3>, Tensor<1>, Tensor<1>) {
    let [n, c, s] = x.dims();
    let rows = x.clone().swap_dims(0, 1).reshape([c, n * s]);
    let mean = rows.clone().mean_dim(1);
    let var = (rows - mean.clone()).square().mean_dim(1);
    let std = var.clone().add_scalar(epsilon).sqrt();
    let scale = gamma.reshape([c, 1]) * (std.ones_like() / std);
    let shift = beta.reshape([c, 1]) - mean.clone() * scale.clone();
    let y = x * scale.reshape([1, c, 1]) + shift.reshape([1, c, 1]);
    (y, mean.reshape([c]), var.reshape([c]))
}

/// Batch normalisation in inference mode in tensor operations (the formula of Burn's
/// `BatchNorm` with its running statistics), for `x` `[N, C, S]`.
pub fn reference_batch_norm_inference(
    x: Tensor<3>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    mean: Tensor<1>,
    var: Tensor<1>,
    epsilon: f64,
) -> Tensor<3> {
    let c = x.dims()[1];
    let channel = |t: Tensor<1>| t.reshape([1, c, 1]);
    let std = channel(var).add_scalar(epsilon).sqrt();
    (x - channel(mean)) / std * channel(gamma) + channel(beta)
}

/// The gradients `(dx, dgamma, dbeta)` of [`reference_batch_norm`] in tensor operations.
pub fn reference_batch_norm_backward(
    x: Tensor<3>,
    gamma: Tensor<1>,
    mean: Tensor<1>,
    var: Tensor<1>,
    output_grad: Tensor<3>,
    epsilon: f64,
) -> (Tensor<3>, Tensor<1>, Tensor<1>) {
    let dy = output_grad;
    let [n, c, s] = x.dims();
    let m = (n * s) as f64;
    let std = var.add_scalar(epsilon).sqrt();
    let inv_std = std.ones_like() / std;
    let x_hat = (x - mean.reshape([1, c, 1])) * inv_std.clone().reshape([1, c, 1]);
    let per_channel = |t: Tensor<3>| t.sum_dim(0).sum_dim(2).reshape([c]);
    let dbeta = per_channel(dy.clone());
    let dgamma = per_channel(dy.clone() * x_hat.clone());
    let k = (gamma * inv_std).div_scalar(m);
    let dx = k.reshape([1, c, 1])
        * (dy.mul_scalar(m)
            - dbeta.clone().reshape([1, c, 1])
            - x_hat * dgamma.clone().reshape([1, c, 1]));
    (dx, dgamma, dbeta)
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

#[cfg(feature = "flex")]
mod flex_impl {
    use super::*;
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;
    use burn::tensor::TensorData;

    /// The shape of the CPU kernels (`f32` tensors, one group, symmetric padding), checked
    /// again here because the trait's methods are public.
    fn cpu_shape(x: &FlexTensor, weight: &FlexTensor, options: &ConvOptions<2>) -> cpu::ConvShape {
        assert!(
            x.dtype() == DType::F32 && weight.dtype() == DType::F32,
            "scl-layers: the host convolution takes f32 tensors"
        );
        assert_eq!(
            options.groups, 1,
            "scl-layers: the host convolution has one group"
        );
        let [n, c, h, w] = x.layout().shape().dims();
        let [o, ci, kh, kw] = weight.layout().shape().dims();
        assert_eq!(
            ci, c,
            "scl-layers: weight [O, {ci}, ..] for input channels {c}"
        );
        cpu::ConvShape {
            n,
            c,
            h,
            w,
            o,
            kernel: [kh, kw],
            stride: options.stride,
            padding: options.symmetric_padding(),
            dilation: options.dilation,
        }
    }

    /// `f` of the values of the `f32` tensor `t` in row-major order: a view of its storage
    /// when it is contiguous (no copy; the tensor is usually shared with the autodiff graph's
    /// checkpoint, where reading it out would copy it), else of a contiguous copy.
    fn with_values<R>(t: &FlexTensor, f: impl FnOnce(&[f32]) -> R) -> R {
        match t.as_slice::<f32>() {
            Some(values) => f(values),
            None => f(t
                .to_contiguous()
                .as_slice::<f32>()
                .expect("scl-layers: the host kernels take f32 tensors")),
        }
    }

    fn host(t: &FlexTensor) -> Vec<f32> {
        with_values(t, <[f32]>::to_vec)
    }

    fn widen(t: &FlexTensor) -> Vec<f64> {
        with_values(t, |v| v.iter().map(|&x| f64::from(x)).collect())
    }

    fn tensor_of<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, shape))
    }

    fn dims<const D: usize>(t: &FlexTensor) -> [usize; D] {
        t.layout().shape().dims()
    }

    /// The host forward, with the bias added when there is one.
    fn conv2d_host(
        x: FlexTensor,
        weight: FlexTensor,
        bias: Option<FlexTensor>,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        let shape = cpu_shape(&x, &weight, &options);
        let bias = bias.as_ref().map(host);
        let y = with_values(&x, |x| {
            with_values(&weight, |w| cpu::forward(&shape, x, w, bias.as_deref()))
        });
        let [ho, wo] = shape.output();
        tensor_of(y, [shape.n, shape.o, ho, wo])
    }

    impl LayerBackend for Flex {
        fn scl_conv2d(x: FlexTensor, weight: FlexTensor, options: ConvOptions<2>) -> FlexTensor {
            conv2d_host(x, weight, None, options)
        }

        fn scl_conv2d_with_bias(
            x: FlexTensor,
            weight: FlexTensor,
            bias: FlexTensor,
            options: ConvOptions<2>,
        ) -> FlexTensor {
            conv2d_host(x, weight, Some(bias), options)
        }

        fn scl_conv2d_input_grad(
            x: FlexTensor,
            weight: FlexTensor,
            output_grad: FlexTensor,
            options: ConvOptions<2>,
        ) -> FlexTensor {
            let shape = cpu_shape(&x, &weight, &options);
            let dx = with_values(&weight, |w| {
                with_values(&output_grad, |g| cpu::input_grad(&shape, w, g))
            });
            tensor_of(dx, [shape.n, shape.c, shape.h, shape.w])
        }

        fn scl_conv2d_weight_grad(
            x: FlexTensor,
            weight: FlexTensor,
            output_grad: FlexTensor,
            options: ConvOptions<2>,
        ) -> FlexTensor {
            let shape = cpu_shape(&x, &weight, &options);
            let dw = with_values(&x, |x| {
                with_values(&output_grad, |g| cpu::weight_grad(&shape, x, g))
            });
            tensor_of(dw, [shape.o, shape.c, shape.kernel[0], shape.kernel[1]])
        }

        fn scl_batch_norm(
            x: FlexTensor,
            gamma: FlexTensor,
            beta: FlexTensor,
            epsilon: f64,
        ) -> Three<Self> {
            let [n, c, s] = dims(&x);
            let (y, mean, var) = with_values(&x, |x| {
                let (mean, var) = norm::statistics(x, n, c, s);
                let y = norm::normalise(
                    x,
                    [n, c, s],
                    (&mean, &var),
                    &host(&gamma),
                    &host(&beta),
                    epsilon,
                );
                (y, mean, var)
            });
            let narrow = |v: &[f64]| v.iter().map(|&m| m as f32).collect::<Vec<f32>>();
            (
                tensor_of(y, [n, c, s]),
                tensor_of(narrow(&mean), [c]),
                tensor_of(narrow(&var), [c]),
            )
        }

        fn scl_batch_norm_backward(
            x: FlexTensor,
            gamma: FlexTensor,
            mean: FlexTensor,
            var: FlexTensor,
            output_grad: FlexTensor,
            epsilon: f64,
        ) -> Three<Self> {
            let [n, c, s] = dims(&x);
            let (mean, var) = (widen(&mean), widen(&var));
            let gamma = host(&gamma);
            let (dx, dgamma, dbeta) = with_values(&x, |x| {
                with_values(&output_grad, |g| {
                    norm::backward(x, g, [n, c, s], (&mean, &var), &gamma, epsilon)
                })
            });
            (
                tensor_of(dx, [n, c, s]),
                tensor_of(dgamma, [c]),
                tensor_of(dbeta, [c]),
            )
        }

        fn scl_batch_norm_inference(
            x: FlexTensor,
            gamma: FlexTensor,
            beta: FlexTensor,
            mean: FlexTensor,
            var: FlexTensor,
            epsilon: f64,
        ) -> FlexTensor {
            let [n, c, s] = dims(&x);
            let (mean, var) = (widen(&mean), widen(&var));
            let (gamma, beta) = (host(&gamma), host(&beta));
            let y = with_values(&x, |x| {
                norm::normalise(x, [n, c, s], (&mean, &var), &gamma, &beta, epsilon)
            });
            tensor_of(y, [n, c, s])
        }

        fn scl_concat_channels(a: FlexTensor, b: FlexTensor) -> FlexTensor {
            let [n, ca, h, w] = dims(&a);
            let [nb, cb, hb, wb] = dims(&b);
            assert!(
                n == nb && h == hb && w == wb,
                "scl-layers: concatenating [{n}, {ca}, {h}, {w}] and [{nb}, {cb}, {hb}, {wb}]"
            );
            let plane = h * w;
            let mut out = Vec::with_capacity(n * (ca + cb) * plane);
            with_values(&a, |a| {
                with_values(&b, |b| {
                    for i in 0..n {
                        out.extend_from_slice(&a[i * ca * plane..(i + 1) * ca * plane]);
                        out.extend_from_slice(&b[i * cb * plane..(i + 1) * cb * plane]);
                    }
                })
            });
            tensor_of(out, [n, ca + cb, h, w])
        }

        fn scl_split_channels(t: FlexTensor, at: usize) -> (FlexTensor, FlexTensor) {
            let [n, c, h, w] = dims(&t);
            assert!(at <= c, "scl-layers: splitting {c} channels at {at}");
            let plane = h * w;
            let (first, second) = with_values(&t, |values| {
                let mut first = Vec::with_capacity(n * at * plane);
                let mut second = Vec::with_capacity(n * (c - at) * plane);
                for image in values.chunks(c * plane) {
                    first.extend_from_slice(&image[..at * plane]);
                    second.extend_from_slice(&image[at * plane..]);
                }
                (first, second)
            });
            (
                tensor_of(first, [n, at, h, w]),
                tensor_of(second, [n, c - at, h, w]),
            )
        }
    }
}

/// A tensor of the inner backend in the autodiff graph as a constant.
fn constant<B: Backend, C: CheckpointStrategy>(t: FloatTensor<B>) -> FloatTensor<Autodiff<B, C>> {
    <Autodiff<B, C> as AutodiffBackend>::from_inner(t)
}

/// The autodiff wrapper: the forward runs the inner backend's convolution and checkpoints the
/// input and the weight (as Burn's own convolution does); the backward calls the inner
/// backend's [`LayerBackend`] gradients, and Burn's bias gradient. The gradient operations
/// run on the inner backend and enter the graph as constants.
/// The autodiff convolution, with or without bias (one body for both trait methods).
fn autodiff_conv2d<B: LayerBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: Option<FloatTensor<Autodiff<B, C>>>,
    options: ConvOptions<2>,
) -> FloatTensor<Autodiff<B, C>> {
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
                B::scl_conv2d_input_grad(x.clone(), weight.clone(), grad.clone(), options.clone())
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
            let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x);
            let weight = checkpointer.retrieve_node_output::<FloatTensor<B>>(weight);
            let bias = checkpointer.retrieve_node_output::<FloatTensor<B>>(bias);
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
            let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x);
            let weight = checkpointer.retrieve_node_output::<FloatTensor<B>>(weight);
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

    let forward = |x, weight, bias: Option<FloatTensor<B>>, options| {
        profile::timed(Part::Forward, || match bias {
            Some(bias) => B::scl_conv2d_with_bias(x, weight, bias, options),
            None => B::scl_conv2d(x, weight, options),
        })
    };
    match bias {
        Some(bias) => match WithBias
            .prepare::<C>([x.node(), weight.node(), bias.node()])
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
                    forward(
                        x.into_primitive(),
                        weight.into_primitive(),
                        Some(bias.into_primitive()),
                        options,
                    ),
                )
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(
                x.into_primitive(),
                weight.into_primitive(),
                Some(bias.into_primitive()),
                options,
            )),
        },
        None => match NoBias
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (
                    prep.checkpoint(&x),
                    prep.checkpoint(&weight),
                    options.clone(),
                );
                prep.finish(
                    state,
                    forward(x.into_primitive(), weight.into_primitive(), None, options),
                )
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(
                x.into_primitive(),
                weight.into_primitive(),
                None,
                options,
            )),
        },
    }
}

impl<B: LayerBackend, C: CheckpointStrategy> LayerBackend for Autodiff<B, C> {
    fn scl_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        autodiff_conv2d::<B, C>(x, weight, None, options)
    }

    fn scl_conv2d_with_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        autodiff_conv2d::<B, C>(x, weight, Some(bias), options)
    }

    fn scl_conv2d_input_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        constant::<B, C>(B::scl_conv2d_input_grad(
            x.into_primitive(),
            weight.into_primitive(),
            output_grad.into_primitive(),
            options,
        ))
    }

    fn scl_conv2d_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        constant::<B, C>(B::scl_conv2d_weight_grad(
            x.into_primitive(),
            weight.into_primitive(),
            output_grad.into_primitive(),
            options,
        ))
    }

    fn scl_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> Three<Self> {
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
                let (dx, dgamma, dbeta) = profile::timed(Part::NormBackward, || {
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
        match NormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, gamma, beta) = (
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                );
                let (y, mean, var) = forward(x.clone(), gamma.clone(), beta);
                let state = ([x, gamma, mean.clone(), var.clone()], epsilon);
                (
                    prep.finish(state, y),
                    constant::<B, C>(mean),
                    constant::<B, C>(var),
                )
            }
            OpsKind::UnTracked(prep) => {
                let (y, mean, var) = forward(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                );
                (
                    prep.finish(y),
                    constant::<B, C>(mean),
                    constant::<B, C>(var),
                )
            }
        }
    }

    fn scl_batch_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        epsilon: f64,
    ) -> Three<Self> {
        let (dx, dgamma, dbeta) = B::scl_batch_norm_backward(
            x.into_primitive(),
            gamma.into_primitive(),
            mean.into_primitive(),
            var.into_primitive(),
            output_grad.into_primitive(),
            epsilon,
        );
        (
            constant::<B, C>(dx),
            constant::<B, C>(dgamma),
            constant::<B, C>(dbeta),
        )
    }

    fn scl_batch_norm_inference(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        constant::<B, C>(B::scl_batch_norm_inference(
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
            mean.into_primitive(),
            var.into_primitive(),
            epsilon,
        ))
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
                let (da, db) = B::scl_split_channels(grad, ops.state);
                for (node, g) in [(node_a, da), (node_b, db)] {
                    if let Some(node) = node {
                        grads.register::<B>(node.id, g);
                    }
                }
            }
        }

        let at = burn::backend::TensorMetadata::shape(a.primitive()).dims::<4>()[1];
        match ConcatBackward
            .prepare::<C>([a.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(
                at,
                B::scl_concat_channels(a.into_primitive(), b.into_primitive()),
            ),
            OpsKind::UnTracked(prep) => prep.finish(B::scl_concat_channels(
                a.into_primitive(),
                b.into_primitive(),
            )),
        }
    }

    fn scl_split_channels(
        t: FloatTensor<Self>,
        at: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (a, b) = B::scl_split_channels(t.into_primitive(), at);
        (constant::<B, C>(a), constant::<B, C>(b))
    }
}

#[cfg(test)]
mod tests;
