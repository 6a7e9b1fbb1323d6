use burn::backend::{Autodiff, Flex};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::LayerBackend;

/// Output, input gradient, weight gradient and bias gradient of `sum(conv(x) * g)`, through
/// Burn's `Conv2d::forward` or through [`crate::forward`].
fn run<B: AutodiffBackend + LayerBackend>(
    conv: &Conv2d<B>,
    x: &[f32],
    shape: [usize; 4],
    g_seed: u64,
    ours: bool,
) -> [Vec<f32>; 4] {
    let device = Default::default();
    let x = Tensor::<B, 4>::from_data(TensorData::new(x.to_vec(), shape), &device).require_grad();
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
    let g = Tensor::<B, 4>::from_data(TensorData::new(g, dims), &device);
    let grads = (y.clone() * g).sum().backward();
    let host = |t: Option<Vec<f32>>| t.unwrap_or_default();
    [
        y.into_data().to_vec().unwrap(),
        host(x.grad(&grads).map(|t| t.into_data().to_vec().unwrap())),
        host(
            conv.weight
                .grad(&grads)
                .map(|t| t.into_data().to_vec().unwrap()),
        ),
        host(
            conv.bias
                .as_ref()
                .and_then(|b| b.grad(&grads))
                .map(|t| t.into_data().to_vec().unwrap()),
        ),
    ]
}

fn check_backend<B: AutodiffBackend + LayerBackend>(name: &str) {
    let mut rng = StdRng::seed_from_u64(7);
    // (batch, in, out, height, width, kernel, stride, padding, bias): 3x3 with padding,
    // stride 2, 1x1 (stride 1 and 2), batch 1, channel counts that are no multiple of a vector
    // width, non-square inputs and kernels, the 7x7 stride-2 stem, valid padding.
    let cases = [
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
    let device = Default::default();
    for (n, c, o, h, w, kernel, stride, padding, bias) in cases {
        let conv: Conv2d<B> = Conv2dConfig::new([c, o], kernel)
            .with_stride(stride)
            .with_padding(padding.clone())
            .with_bias(bias)
            .init(&device);
        let x: Vec<f32> = (0..n * c * h * w)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let burn = run(&conv, &x, [n, c, h, w], 11, false);
        let ours = run(&conv, &x, [n, c, h, w], 11, true);
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
    check_backend::<Autodiff<Flex>>("flex");
}

#[cfg(feature = "ndarray")]
#[test]
fn value_and_every_gradient_match_burns_conv2d_on_ndarray() {
    check_backend::<Autodiff<burn::backend::NdArray>>("ndarray");
}

/// Value and gradients of `sum(cat(a, b) * g) + sum(a * h)` (the first input also used
/// elsewhere, as DenseNet's running feature map is), through Burn's `cat` or
/// [`crate::concat_channels`]; with `b` left out of the graph when `b_grad` is false.
fn run_concat<B: AutodiffBackend + LayerBackend>(
    shapes: ([usize; 4], [usize; 4]),
    b_grad: bool,
    ours: bool,
) -> [Vec<f32>; 3] {
    let device = Default::default();
    let mut rng = StdRng::seed_from_u64(13);
    let mut random = |dims: [usize; 4]| {
        let values: Vec<f32> = (0..dims.iter().product())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        Tensor::<B, 4>::from_data(TensorData::new(values, dims), &device)
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
    let host = |t: Option<Tensor<B::InnerBackend, 4>>| {
        t.map(|t| t.into_data().to_vec::<f32>().unwrap())
            .unwrap_or_default()
    };
    [
        y.into_data().to_vec().unwrap(),
        host(a.grad(&grads)),
        host(b.grad(&grads)),
    ]
}

fn check_concat<B: AutodiffBackend<InnerBackend: LayerBackend> + LayerBackend>(name: &str) {
    // Batch 1 and 3, one channel on either side, planes of 1x1 and non-square.
    let cases = [
        ([2, 5, 4, 4], [2, 3, 4, 4], true),
        ([1, 1, 3, 7], [1, 6, 3, 7], true),
        ([3, 7, 1, 1], [3, 1, 1, 1], false),
    ];
    for (sa, sb, b_grad) in cases {
        let burn = run_concat::<B>((sa, sb), b_grad, false);
        let ours = run_concat::<B>((sa, sb), b_grad, true);
        for (what, (u, v)) in ["value", "gradient of a", "gradient of b"]
            .iter()
            .zip(ours.iter().zip(&burn))
        {
            assert_eq!(u, v, "{name} concat {sa:?} {sb:?}: {what}");
        }
        assert_eq!(burn[2].is_empty(), !b_grad, "{name}: b's gradient");
    }
    // Without autodiff: the same values.
    let device = Default::default();
    let a = Tensor::<B::InnerBackend, 4>::ones([2, 3, 2, 2], &device);
    let b = Tensor::<B::InnerBackend, 4>::zeros([2, 1, 2, 2], &device);
    let want: Vec<f32> = Tensor::cat(vec![a.clone(), b.clone()], 1)
        .into_data()
        .to_vec()
        .unwrap();
    let got: Vec<f32> = crate::concat_channels(a, b).into_data().to_vec().unwrap();
    assert_eq!(got, want, "{name}: concat without autodiff");
}

#[test]
fn concat_channels_matches_burns_cat_on_flex_and_ndarray() {
    check_concat::<Autodiff<Flex>>("flex");
    #[cfg(feature = "ndarray")]
    check_concat::<Autodiff<burn::backend::NdArray>>("ndarray");
}

#[test]
fn uneven_padding_takes_burns_forward() {
    type B = Autodiff<Flex>;
    let device = Default::default();
    let conv: Conv2d<B> = Conv2dConfig::new([2, 3], [2, 2])
        .with_padding(PaddingConfig2d::Same)
        .init(&device);
    let x = Tensor::<B, 4>::ones([1, 2, 5, 5], &device);
    let want: Vec<f32> = conv.forward(x.clone()).into_data().to_vec().unwrap();
    let got: Vec<f32> = crate::forward(&conv, x).into_data().to_vec().unwrap();
    assert_eq!(got, want);
}

/// Output, input and parameter gradients, and running statistics of `sum(bn(x) * g)`,
/// through Burn's `BatchNorm::forward` or [`crate::batch_norm`]; then the output of the
/// module in inference mode (`valid()`, the running statistics just updated) on `x`.
fn run_norm<B: AutodiffBackend<InnerBackend: LayerBackend> + LayerBackend, const D: usize>(
    x: &[f32],
    shape: [usize; D],
    ours: bool,
) -> [Vec<f32>; 7] {
    use burn::nn::{BatchNorm, BatchNormConfig};
    let device = Default::default();
    let c = shape[1];
    let mut bn: BatchNorm<B> = BatchNormConfig::new(c).init(&device);
    // Non-trivial affine parameters.
    let mut rng = StdRng::seed_from_u64(5);
    let gamma: Vec<f32> = (0..c).map(|_| rng.random_range(0.5..1.5)).collect();
    let beta: Vec<f32> = (0..c).map(|_| rng.random_range(-0.5..0.5)).collect();
    bn.gamma =
        burn::module::Param::from_tensor(Tensor::from_data(TensorData::new(gamma, [c]), &device));
    bn.beta =
        burn::module::Param::from_tensor(Tensor::from_data(TensorData::new(beta, [c]), &device));
    let x_inference =
        Tensor::<B::InnerBackend, D>::from_data(TensorData::new(x.to_vec(), shape), &device);
    let x = Tensor::<B, D>::from_data(TensorData::new(x.to_vec(), shape), &device).require_grad();
    let y = if ours {
        crate::batch_norm(&bn, x.clone())
    } else {
        bn.forward(x.clone())
    };
    let g: Vec<f32> = (0..shape.iter().product())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let g = Tensor::<B, D>::from_data(TensorData::new(g, shape), &device);
    let grads = (y.clone() * g).sum().backward();
    let host = |t: Tensor<B::InnerBackend, 1>| t.into_data().to_vec::<f32>().unwrap();
    let valid = burn::module::AutodiffModule::valid(&bn);
    let y_inference = if ours {
        crate::batch_norm(&valid, x_inference)
    } else {
        valid.forward(x_inference)
    };
    [
        y.into_data().to_vec().unwrap(),
        x.grad(&grads).unwrap().into_data().to_vec().unwrap(),
        host(bn.gamma.grad(&grads).unwrap()),
        host(bn.beta.grad(&grads).unwrap()),
        bn.running_mean.value().into_data().to_vec().unwrap(),
        bn.running_var.value().into_data().to_vec().unwrap(),
        y_inference.into_data().to_vec().unwrap(),
    ]
}

fn check_norm<B: AutodiffBackend<InnerBackend: LayerBackend> + LayerBackend>(name: &str) {
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
            run_norm::<B, 4>(&x, shape, true),
            run_norm::<B, 4>(&x, shape, false),
        );
    }
    let x: Vec<f32> = (0..13 * 6).map(|_| rng.random_range(-1.0..3.0)).collect();
    compare(
        "[13, 6]",
        run_norm::<B, 2>(&x, [13, 6], true),
        run_norm::<B, 2>(&x, [13, 6], false),
    );
}

#[test]
fn batch_norm_matches_burns_on_flex_values_gradients_and_running_statistics() {
    check_norm::<Autodiff<Flex>>("flex");
}

#[cfg(feature = "ndarray")]
#[test]
fn batch_norm_matches_burns_on_ndarray_values_gradients_and_running_statistics() {
    check_norm::<Autodiff<burn::backend::NdArray>>("ndarray");
}

#[test]
fn the_reference_batch_norm_matches_the_host_loops() {
    // The default methods (tensor operations, what GPU backends run) against the CPU path.
    type B = Flex;
    let device = Default::default();
    let mut rng = StdRng::seed_from_u64(4);
    let (n, c, s) = (3usize, 4usize, 10usize);
    let tensor = |len: usize, shape: Vec<usize>, rng: &mut StdRng| {
        let v: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..2.0)).collect();
        <B as burn::tensor::ops::FloatTensorOps<B>>::float_from_data(
            TensorData::new(v, shape),
            &device,
        )
    };
    let x = tensor(n * c * s, vec![n, c, s], &mut rng);
    let gamma = tensor(c, vec![c], &mut rng);
    let beta = tensor(c, vec![c], &mut rng);
    let dy = tensor(n * c * s, vec![n, c, s], &mut rng);
    let host = |t: burn::tensor::ops::FloatTensor<B>| {
        Tensor::<B, 1>::from_primitive(burn::tensor::TensorPrimitive::Float(t))
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    };
    let ours = B::scl_batch_norm(x.clone(), gamma.clone(), beta.clone(), 1e-5);
    let reference = crate::reference_batch_norm::<B>(x.clone(), gamma.clone(), beta.clone(), 1e-5);
    let back = |[_, mean, var]: [burn::tensor::ops::FloatTensor<B>; 3], reference: bool| {
        let args = (x.clone(), gamma.clone(), mean, var, dy.clone());
        if reference {
            crate::reference_batch_norm_backward::<B>(args.0, args.1, args.2, args.3, args.4, 1e-5)
        } else {
            B::scl_batch_norm_backward(args.0, args.1, args.2, args.3, args.4, 1e-5)
        }
    };
    // Inference mode with running statistics of the shape the module keeps (`var` > 0).
    let running_mean = tensor(c, vec![c], &mut rng);
    let running_var: Vec<f32> = (0..c).map(|_| rng.random_range(0.2..2.0)).collect();
    let running_var = <B as burn::tensor::ops::FloatTensorOps<B>>::float_from_data(
        TensorData::new(running_var, [c]),
        &device,
    );
    let inference = |reference: bool| {
        let args = (x.clone(), gamma.clone(), beta.clone());
        let stats = (running_mean.clone(), running_var.clone());
        if reference {
            crate::reference_batch_norm_inference::<B>(
                args.0, args.1, args.2, stats.0, stats.1, 1e-5,
            )
        } else {
            B::scl_batch_norm_inference(args.0, args.1, args.2, stats.0, stats.1, 1e-5)
        }
    };
    let ours_inference = inference(false);
    let reference_inference = inference(true);
    let ours_back = back(ours.clone(), false);
    let reference_back = back(reference.clone(), true);
    for (a, b) in ours
        .into_iter()
        .chain(ours_back)
        .chain([ours_inference])
        .zip(
            reference
                .into_iter()
                .chain(reference_back)
                .chain([reference_inference]),
        )
    {
        let (a, b) = (host(a), host(b));
        for (u, v) in a.iter().zip(&b) {
            assert!((u - v).abs() <= 1e-5 * v.abs().max(1.0), "{u} vs {v}");
        }
    }
}
