use burn::backend::Dispatch;
use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::LayerBackend;

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().unwrap()
}

/// Output, input gradient, weight gradient and bias gradient of `sum(conv(x) * g)`, through
/// Burn's `Conv2d::forward` or through [`crate::forward`].
fn run(
    device: &Device,
    conv: &Conv2d,
    x: &[f32],
    shape: [usize; 4],
    g_seed: u64,
    ours: bool,
) -> [Vec<f32>; 4] {
    let x = Tensor::<4>::from_data(TensorData::new(x.to_vec(), shape), device).require_grad();
    let y = if ours {
        crate::forward(conv, x.clone())
    } else {
        conv.forward(x.clone())
    };
    let mut rng = StdRng::seed_from_u64(g_seed);
    let dims = y.dims();
    let g: Vec<f32> = (0..dims.iter().product())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let g = Tensor::<4>::from_data(TensorData::new(g, dims), device);
    let grads = (y.clone() * g).sum().backward();
    let host = |t: Option<Vec<f32>>| t.unwrap_or_default();
    [
        values(y),
        host(x.grad(&grads).map(values)),
        host(conv.weight.grad(&grads).map(values)),
        host(conv.bias.as_ref().and_then(|b| b.grad(&grads)).map(values)),
    ]
}

fn check_device(device: &Device, name: &str) {
    let mut rng = StdRng::seed_from_u64(7);
    // (batch, in, out, height, width, kernel, stride, padding, bias): 3x3 with padding,
    // stride 2, 1x1 (stride 1 and 2), batch 1, channel counts that are no multiple of a vector
    // width, non-square inputs and kernels, the 7x7 stride-2 stem, valid padding; 3x3 with
    // padding on 1x1 and 2x2 planes (the last stages of a ResNet-18 on 8x8 images), where
    // some kernel offsets read no position of the plane at all.
    let cases = [
        (
            2,
            3,
            4,
            1,
            1,
            [3, 3],
            [1, 1],
            PaddingConfig2d::Explicit(1, 1, 1, 1),
            false,
        ),
        (
            2,
            3,
            4,
            2,
            2,
            [3, 3],
            [1, 1],
            PaddingConfig2d::Explicit(1, 1, 1, 1),
            true,
        ),
        (
            2,
            3,
            8,
            8,
            8,
            [3, 3],
            [1, 1],
            PaddingConfig2d::Explicit(1, 1, 1, 1),
            false,
        ),
        (
            3,
            5,
            7,
            9,
            7,
            [3, 3],
            [2, 2],
            PaddingConfig2d::Explicit(1, 1, 1, 1),
            true,
        ),
        (
            1,
            7,
            3,
            6,
            10,
            [1, 1],
            [1, 1],
            PaddingConfig2d::Valid,
            false,
        ),
        (2, 4, 9, 7, 7, [1, 1], [2, 2], PaddingConfig2d::Valid, true),
        (
            1,
            2,
            4,
            5,
            9,
            [3, 2],
            [1, 2],
            PaddingConfig2d::Explicit(2, 0, 2, 0),
            true,
        ),
        (
            2,
            3,
            6,
            11,
            11,
            [7, 7],
            [2, 2],
            PaddingConfig2d::Explicit(3, 3, 3, 3),
            false,
        ),
        (4, 3, 5, 6, 6, [3, 3], [1, 1], PaddingConfig2d::Valid, true),
    ];
    for (n, c, o, h, w, kernel, stride, padding, bias) in cases {
        let conv: Conv2d = Conv2dConfig::new([c, o], kernel)
            .with_stride(stride)
            .with_padding(padding.clone())
            .with_bias(bias)
            .init(device);
        let x: Vec<f32> = (0..n * c * h * w)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let burn = run(device, &conv, &x, [n, c, h, w], 11, false);
        let ours = run(device, &conv, &x, [n, c, h, w], 11, true);
        for (what, (a, b)) in [
            "output",
            "input gradient",
            "weight gradient",
            "bias gradient",
        ]
        .iter()
        .zip(ours.iter().zip(&burn))
        {
            assert_eq!(a.len(), b.len(), "{name} {what}: sizes");
            let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            for (i, (u, v)) in a.iter().zip(b).enumerate() {
                assert!(
                    (u - v).abs() <= 1e-5 * scale,
                    "{name} {what} n={n} c={c} o={o} {h}x{w} kernel {kernel:?} stride \
                     {stride:?} {padding:?}: entry {i}: {u} vs Burn's {v} (scale {scale})"
                );
            }
        }
    }
}

#[test]
fn value_and_every_gradient_match_burns_conv2d_on_flex() {
    assert!(crate::has_host_kernels(&Device::flex().autodiff()));
    check_device(&Device::flex().autodiff(), "flex");
}

/// Value and gradients of `sum(cat(a, b) * g) + sum(a * h)` (the first input also used
/// elsewhere, as DenseNet's running feature map is), through Burn's `cat` or
/// [`crate::concat_channels`]; with `b` left out of the graph when `b_grad` is false.
fn run_concat(
    device: &Device,
    shapes: ([usize; 4], [usize; 4]),
    b_grad: bool,
    ours: bool,
) -> [Vec<f32>; 3] {
    let mut rng = StdRng::seed_from_u64(13);
    let mut random = |dims: [usize; 4]| {
        let values: Vec<f32> = (0..dims.iter().product())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        Tensor::<4>::from_data(TensorData::new(values, dims), device)
    };
    let a = random(shapes.0).require_grad();
    let b = random(shapes.1);
    let b = if b_grad { b.require_grad() } else { b };
    let [n, ca, h, w] = shapes.0;
    let g = random([n, ca + shapes.1[1], h, w]);
    let extra = random(shapes.0);
    let y = if ours {
        crate::concat_channels(a.clone(), b.clone())
    } else {
        Tensor::cat(vec![a.clone(), b.clone()], 1)
    };
    let grads = ((y.clone() * g).sum() + (a.clone() * extra).sum()).backward();
    let host = |t: Option<Tensor<4>>| t.map(values).unwrap_or_default();
    [values(y), host(a.grad(&grads)), host(b.grad(&grads))]
}

fn check_concat(device: &Device, name: &str) {
    // Batch 1 and 3, one channel on either side, planes of 1x1 and non-square.
    let cases = [
        ([2, 5, 4, 4], [2, 3, 4, 4], true),
        ([1, 1, 3, 7], [1, 6, 3, 7], true),
        ([3, 7, 1, 1], [3, 1, 1, 1], false),
    ];
    for (sa, sb, b_grad) in cases {
        let burn = run_concat(device, (sa, sb), b_grad, false);
        let ours = run_concat(device, (sa, sb), b_grad, true);
        for (what, (u, v)) in ["value", "gradient of a", "gradient of b"]
            .iter()
            .zip(ours.iter().zip(&burn))
        {
            assert_eq!(u, v, "{name} concat {sa:?} {sb:?}: {what}");
        }
        assert_eq!(burn[2].is_empty(), !b_grad, "{name}: b's gradient");
    }
    // Without autodiff: the same values.
    let inner = device.clone().inner();
    let a = Tensor::<4>::ones([2, 3, 2, 2], &inner);
    let b = Tensor::<4>::zeros([2, 1, 2, 2], &inner);
    let want = values(Tensor::cat(vec![a.clone(), b.clone()], 1));
    let got = values(crate::concat_channels(a, b));
    assert_eq!(got, want, "{name}: concat without autodiff");
}

#[test]
fn concat_channels_matches_burns_cat_on_flex() {
    check_concat(&Device::flex().autodiff(), "flex");
}

#[test]
fn uneven_padding_takes_burns_forward() {
    let device = Device::flex().autodiff();
    let conv: Conv2d = Conv2dConfig::new([2, 3], [2, 2])
        .with_padding(PaddingConfig2d::Same)
        .init(&device);
    let x = Tensor::<4>::ones([1, 2, 5, 5], &device);
    let want = values(conv.forward(x.clone()));
    let got = values(crate::forward(&conv, x));
    assert_eq!(got, want);
}

/// Output, input and parameter gradients, and running statistics of `sum(bn(x) * g)`,
/// through Burn's `BatchNorm::forward` or [`crate::batch_norm`]; then the output of the
/// module in inference mode (`valid()`, the running statistics just updated) on `x`.
fn run_norm<const D: usize>(
    device: &Device,
    x: &[f32],
    shape: [usize; D],
    ours: bool,
) -> [Vec<f32>; 7] {
    use burn::nn::{BatchNorm, BatchNormConfig};
    let c = shape[1];
    let mut bn: BatchNorm = BatchNormConfig::new(c).init(device);
    // Non-trivial affine parameters.
    let mut rng = StdRng::seed_from_u64(5);
    let gamma: Vec<f32> = (0..c).map(|_| rng.random_range(0.5..1.5)).collect();
    let beta: Vec<f32> = (0..c).map(|_| rng.random_range(-0.5..0.5)).collect();
    bn.gamma =
        burn::module::Param::from_tensor(Tensor::from_data(TensorData::new(gamma, [c]), device));
    bn.beta =
        burn::module::Param::from_tensor(Tensor::from_data(TensorData::new(beta, [c]), device));
    let bn = bn.train();
    let x_inference =
        Tensor::<D>::from_data(TensorData::new(x.to_vec(), shape), &device.clone().inner());
    let x = Tensor::<D>::from_data(TensorData::new(x.to_vec(), shape), device).require_grad();
    let y = if ours {
        crate::batch_norm(&bn, x.clone())
    } else {
        bn.forward(x.clone())
    };
    let g: Vec<f32> = (0..shape.iter().product())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let g = Tensor::<D>::from_data(TensorData::new(g, shape), device);
    let grads = (y.clone() * g).sum().backward();
    let valid = bn.valid();
    let y_inference = if ours {
        crate::batch_norm(&valid, x_inference)
    } else {
        valid.forward(x_inference)
    };
    [
        values(y),
        values(x.grad(&grads).unwrap()),
        values(bn.gamma.grad(&grads).unwrap()),
        values(bn.beta.grad(&grads).unwrap()),
        values(bn.running_mean.value()),
        values(bn.running_var.value()),
        values(y_inference),
    ]
}

fn check_norm(device: &Device, name: &str) {
    let mut rng = StdRng::seed_from_u64(9);
    let compare = |what: &str, ours: [Vec<f32>; 7], burn: [Vec<f32>; 7]| {
        let parts = [
            "output",
            "input gradient",
            "gamma gradient",
            "beta gradient",
        ];
        let parts = parts
            .iter()
            .chain(&["running mean", "running variance", "inference output"]);
        for (part, (a, b)) in parts.zip(ours.iter().zip(&burn)) {
            assert_eq!(a.len(), b.len(), "{name} {what} {part}: sizes");
            let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            for (i, (u, v)) in a.iter().zip(b).enumerate() {
                assert!(
                    (u - v).abs() <= 2e-5 * scale,
                    "{name} {what} {part}: entry {i}: {u} vs Burn's {v} (scale {scale})"
                );
            }
        }
    };
    // Four-dimensional (odd channel count, non-square planes, batch 1 with a plane of 1 x 3),
    // and two-dimensional as the MLP uses it. Values with an offset, so that the mean matters.
    for shape in [[3usize, 5, 4, 6], [1, 3, 1, 3], [2, 7, 9, 9]] {
        let x: Vec<f32> = (0..shape.iter().product())
            .map(|_| rng.random_range(-1.0..3.0))
            .collect();
        compare(
            &format!("{shape:?}"),
            run_norm::<4>(device, &x, shape, true),
            run_norm::<4>(device, &x, shape, false),
        );
    }
    let x: Vec<f32> = (0..13 * 6).map(|_| rng.random_range(-1.0..3.0)).collect();
    compare(
        "[13, 6]",
        run_norm::<2>(device, &x, [13, 6], true),
        run_norm::<2>(device, &x, [13, 6], false),
    );
}

#[test]
fn batch_norm_matches_burns_on_flex_values_gradients_and_running_statistics() {
    check_norm(&Device::flex().autodiff(), "flex");
}

#[test]
fn the_reference_batch_norm_matches_the_host_loops() {
    // The formulas in tensor operations (what other devices run) against the host loops.
    let device = Device::flex();
    let mut rng = StdRng::seed_from_u64(4);
    let (n, c, s) = (3usize, 4usize, 10usize);
    let tensor = |shape: [usize; 3], rng: &mut StdRng| {
        let v: Vec<f32> = (0..shape.iter().product())
            .map(|_| rng.random_range(-1.0..2.0))
            .collect();
        Tensor::<3>::from_data(TensorData::new(v, shape), &device)
    };
    let channel = |rng: &mut StdRng, range: std::ops::Range<f32>| {
        let v: Vec<f32> = (0..c).map(|_| rng.random_range(range.clone())).collect();
        Tensor::<1>::from_data(TensorData::new(v, [c]), &device)
    };
    let x = tensor([n, c, s], &mut rng);
    let gamma = channel(&mut rng, -1.0..2.0);
    let beta = channel(&mut rng, -1.0..2.0);
    let dy = tensor([n, c, s], &mut rng);
    // Running statistics of the shape the module keeps (`var` > 0).
    let running_mean = channel(&mut rng, -1.0..2.0);
    let running_var = channel(&mut rng, 0.2..2.0);
    let d = |t: &Tensor<3>| t.clone().into_dispatch();
    let d1 = |t: &Tensor<1>| t.clone().into_dispatch();

    let (y, mean, var) =
        <Dispatch as LayerBackend>::scl_batch_norm(d(&x), d1(&gamma), d1(&beta), 1e-5);
    let (y, mean, var) = (
        Tensor::<3>::from_dispatch(y),
        Tensor::<1>::from_dispatch(mean),
        Tensor::<1>::from_dispatch(var),
    );
    let (dx, dgamma, dbeta) = <Dispatch as LayerBackend>::scl_batch_norm_backward(
        d(&x),
        d1(&gamma),
        d1(&mean),
        d1(&var),
        d(&dy),
        1e-5,
    );
    let inference = <Dispatch as LayerBackend>::scl_batch_norm_inference(
        d(&x),
        d1(&gamma),
        d1(&beta),
        d1(&running_mean),
        d1(&running_var),
        1e-5,
    );
    let ours = [
        values(y),
        values(mean),
        values(var),
        values(Tensor::<3>::from_dispatch(dx)),
        values(Tensor::<1>::from_dispatch(dgamma)),
        values(Tensor::<1>::from_dispatch(dbeta)),
        values(Tensor::<3>::from_dispatch(inference)),
    ];

    let (y, mean, var) = crate::reference_batch_norm(x.clone(), gamma.clone(), beta.clone(), 1e-5);
    let (dx, dgamma, dbeta) = crate::reference_batch_norm_backward(
        x.clone(),
        gamma.clone(),
        mean.clone(),
        var.clone(),
        dy,
        1e-5,
    );
    let inference =
        crate::reference_batch_norm_inference(x, gamma, beta, running_mean, running_var, 1e-5);
    let reference = [
        values(y),
        values(mean),
        values(var),
        values(dx),
        values(dgamma),
        values(dbeta),
        values(inference),
    ];
    for (a, b) in ours.iter().zip(&reference) {
        assert_eq!(a.len(), b.len());
        for (u, v) in a.iter().zip(b) {
            assert!((u - v).abs() <= 1e-5 * v.abs().max(1.0), "{u} vs {v}");
        }
    }
}
