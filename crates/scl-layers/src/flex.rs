//! [`LayerBackend`] for Burn's Flex backend: the host kernels of [`crate::cpu`] and
//! [`crate::norm`] on `f32` tensors.

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
