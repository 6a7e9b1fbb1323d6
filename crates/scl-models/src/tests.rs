//! Shapes, non-negativity with the ReLU switch, and record round trips for every model.

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::Distribution;

use super::*;

fn configs() -> Vec<(&'static str, Architecture, [usize; 4], usize)> {
    vec![
        (
            "mlp",
            Architecture::Mlp(MlpConfig::new(64, vec![32, 16])),
            [4, 1, 8, 8],
            16,
        ),
        (
            "small-cnn",
            Architecture::SmallCnn(SmallCnnConfig::new(1).with_embedding(24)),
            [3, 1, 28, 28],
            24,
        ),
        (
            "small-cnn with a batch-norm head",
            Architecture::SmallCnn(
                SmallCnnConfig::new(1)
                    .with_embedding(24)
                    .with_head_norm(true),
            ),
            [3, 1, 28, 28],
            24,
        ),
        // A narrow ResNet-18 keeps the test fast; the structure is the same as width 64.
        (
            "resnet18",
            Architecture::Resnet18(ResNet18Config::new().with_width(4)),
            [2, 3, 32, 32],
            32,
        ),
        (
            "densenet",
            Architecture::Densenet(DenseNetConfig::new()),
            [2, 3, 32, 32],
            142,
        ),
    ]
}

#[test]
fn every_model_has_the_documented_shapes_and_dimensions() {
    let device = Device::flex();
    for (name, arch, input, dim) in configs() {
        for projection in [None, Some(7)] {
            let model = SclModelConfig::new(arch.clone(), 10)
                .with_projection(projection)
                .init(&device);
            let x = Tensor::<4>::random(input, Distribution::Normal(0.0, 1.0), &device);
            let expected = projection.unwrap_or(dim);
            assert_eq!(model.embedding_dim(), expected, "{name}");
            assert_eq!(
                model.embed(x.clone()).dims(),
                [input[0], expected],
                "{name}"
            );
            assert_eq!(model.logits(x).dims(), [input[0], 10], "{name}");
        }
    }
    // The paper's DenseNet embedding: 64 -> 136 -> 68 -> 140 -> 70 -> 142.
    assert_eq!(DenseNetConfig::new().output_dim(), 142);
    assert_eq!(ResNet18Config::new().init(&device).output_dim(), 512);
}

#[test]
fn relu_switch_makes_embeddings_non_negative_and_none_does_not() {
    let device = Device::flex();
    for (name, arch, input, _) in configs() {
        for projection in [None, Some(7)] {
            let x = Tensor::<4>::random(input, Distribution::Normal(0.0, 1.0), &device);
            let relu = SclModelConfig::new(arch.clone(), 3)
                .with_projection(projection)
                .init(&device);
            let z = relu.embed(x.clone()).try_into_vec_as::<f32>().unwrap();
            assert!(
                z.iter().all(|v| *v >= 0.0),
                "{name} {projection:?}: negative entry with ReLU"
            );
            // Rows are unit vectors, or exactly zero when the ReLU zeroed every coordinate
            // (normalisation then leaves the zero row, as F.normalize does).
            let d = z.len() / input[0];
            let norms: Vec<f32> = z
                .chunks(d)
                .map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt())
                .collect();
            assert!(
                norms.iter().all(|n| (n - 1.0).abs() < 1e-4 || *n == 0.0),
                "{name}: row norms {norms:?}"
            );
            // The same weights without the switch: the ReLU is the only difference, so the
            // outputs differ exactly where a pre-activation was negative. (Where pooling
            // follows the switch, as in ResNet and DenseNet, pooled values may all be
            // positive even without it, so "some entry is negative" is not a property.)
            let none = SclModelConfig::new(arch.clone(), 3)
                .with_projection(projection)
                .with_final_activation(FinalActivation::None)
                .init(&device)
                .load_record(relu.clone().into_record());
            let with = relu.features(x.clone()).try_into_vec_as::<f32>().unwrap();
            let without = none.features(x).try_into_vec_as::<f32>().unwrap();
            if projection.is_some()
                || matches!(arch, Architecture::Mlp(_) | Architecture::SmallCnn(_))
            {
                // The switch is the last operation: ReLU(without) == with.
                for (w, n) in with.iter().zip(&without) {
                    assert!(
                        (w - n.max(0.0)).abs() < 1e-5,
                        "{name} {projection:?}: {w} vs relu({n})"
                    );
                }
            } else {
                // Pooling follows the switch: removing a ReLU can only lower a pooled value.
                for (w, n) in with.iter().zip(&without) {
                    assert!(*n <= w + 1e-5, "{name}: {n} without vs {w} with");
                }
            }
        }
    }
}

#[test]
fn a_saved_record_loads_to_the_same_outputs() {
    let device = Device::flex();
    for (name, arch, input, _) in configs() {
        let config = SclModelConfig::new(arch, 5);
        let model = config.init(&device);
        let x = Tensor::<4>::random(input, Distribution::Normal(0.0, 1.0), &device);
        let before = model.embed(x.clone()).into_data();
        let bytes = model.into_record().into_bytes().unwrap();
        // A fresh model (different random weights) takes the saved record.
        let record = ModuleRecord::from_bytes(bytes).unwrap();
        let loaded = config.init(&device).try_load_record(record).unwrap();
        let after = loaded.embed(x).into_data();
        after.assert_eq(&before, true);
        eprintln!("{name}: record round trip ok");
    }
}

#[test]
fn the_parameter_count_from_a_configuration_is_the_built_models() {
    let device = Device::flex();
    for (name, architecture, _, _) in configs() {
        for projection in [None, Some(24)] {
            let config = SclModelConfig::new(architecture.clone(), 10).with_projection(projection);
            let built = config.init(&device).num_params() as f64;
            assert_eq!(
                config.parameter_count(),
                built,
                "{name}, projection {projection:?}"
            );
        }
    }
    // Sizes no machine can hold still give a number, at once.
    let huge = SclModelConfig::new(
        Architecture::Mlp(MlpConfig::new(784, vec![100_000_000])),
        10,
    );
    assert!(huge.parameter_count() > 7.8e10);
}

/// The weights of every 4-D parameter (the convolutions), flattened, with their shapes.
fn conv_weights<M: Module>(module: &M) -> Vec<([usize; 4], Vec<f32>)> {
    struct Convs(Vec<([usize; 4], Vec<f32>)>);
    impl burn::module::ModuleVisitor for Convs {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            if D == 4 {
                let t = param.val();
                let dims = t.dims();
                let v = t.try_into_vec_as::<f32>().unwrap();
                self.0.push(([dims[0], dims[1], dims[2], dims[3]], v));
            }
        }
    }
    let mut convs = Convs(Vec::new());
    module.visit(&mut convs);
    convs.0
}

/// Mean and standard deviation.
fn moments(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = v
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

#[test]
fn the_authors_initialisation_has_kaimings_statistics() {
    let device = Device::flex();
    // ResNet-18 (torchvision): Kaiming-normal on fan_out = out_channels k^2.
    let resnet = ResNet18Config::new()
        .with_width(16)
        .with_init(WeightInit::Authors)
        .init(&device);
    // DenseNet (the authors' kaiming_normal_): on fan_in = in_channels k^2.
    let densenet = DenseNetConfig::new()
        .with_init(WeightInit::Authors)
        .init(&device);
    let mut checked = 0;
    for (convs, fan_out) in [
        (conv_weights(&resnet), true),
        (conv_weights(&densenet), false),
    ] {
        for ([o, i, kh, kw], w) in convs.into_iter().filter(|(_, w)| w.len() >= 4096) {
            let fan = if fan_out { o * kh * kw } else { i * kh * kw };
            let expected = (2.0 / fan as f64).sqrt();
            let (mean, std) = moments(&w);
            // n >= 4096 normal draws: the sample deviation is within a few percent.
            assert!(
                (std / expected - 1.0).abs() < 0.06,
                "[{o}, {i}, {kh}, {kw}]: std {std} against {expected}"
            );
            assert!(
                mean.abs() < 4.0 * expected / (w.len() as f64).sqrt(),
                "mean {mean}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} convolutions checked");
    // Burn's default: uniform in +-1/sqrt(fan_in), standard deviation 1/sqrt(3 fan_in).
    let plain = ResNet18Config::new().with_width(16).init(&device);
    for ([_, i, kh, kw], w) in conv_weights(&plain)
        .into_iter()
        .filter(|(_, w)| w.len() >= 4096)
    {
        let bound = 1.0 / ((i * kh * kw) as f64).sqrt();
        assert!(w.iter().all(|&x| f64::from(x).abs() <= bound + 1e-6));
        let (_, std) = moments(&w);
        assert!(
            (std / (bound / 3f64.sqrt()) - 1.0).abs() < 0.06,
            "std {std}"
        );
    }
}
