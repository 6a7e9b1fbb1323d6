//! A Burn 0.22 project that uses the scl crates: the SupCon loss of `scl-loss` against its
//! reference on `Device::flex()`, then two epochs of burn-train with batch-binding
//! (`scl-batching` through `scl-learner`) on an `scl-models` MLP.

use std::sync::Arc;

use burn::optim::AdamConfig;
use burn::tensor::{Device, Distribution, Int, Tensor};
use burn::train::{Learner, SupervisedTraining, metric::LossMetric};
use scl_batching::{BatchingConfig, Schedule, ScheduleKind};
use scl_data::{DataDir, Imbalance, LoadOptions, Manifest, SclBatcher, Split, ViewPreset, load};
use scl_learner::{EpochLines, Objective, ScheduledLoader, SclLearner, evaluation_loader, metrics};
use scl_loss::{Implementation, SupConLossConfig};
use scl_models::{Architecture, MlpConfig, SclModelConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::flex().autodiff();
    device.seed(0);

    // The loss: the fused path (the CPU kernel on Flex) against the reference, value and
    // gradient.
    let features = Tensor::<3>::random([64, 2, 16], Distribution::Normal(0.0, 1.0), &device);
    let labels: Vec<i64> = (0..64).map(|i| i % 5).collect();
    let labels = Tensor::<1, Int>::from_ints(labels.as_slice(), &device);
    let loss_with = |implementation| {
        let x = features.clone().detach().require_grad();
        let loss = SupConLossConfig::new()
            .with_temperature(0.1)
            .with_normalize(true)
            .with_implementation(implementation)
            .init()
            .forward(x.clone(), Some(labels.clone()));
        let grad = x.grad(&loss.backward()).expect("a gradient");
        (
            loss.into_scalar::<f64>(),
            grad.try_into_vec_as::<f64>().expect("f32 values"),
        )
    };
    let (fused, fused_grad) = loss_with(Implementation::Fused);
    let (reference, reference_grad) = loss_with(Implementation::Reference);
    let scale = reference_grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
    let grad_deviation = fused_grad
        .iter()
        .zip(&reference_grad)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs() / scale));
    println!("SupCon loss: fused {fused:.6}, reference {reference:.6}");
    println!("largest gradient deviation: {grad_deviation:.2e} of the largest entry");
    if (fused - reference).abs() > 1e-4 * reference.abs() || grad_deviation > 1e-4 {
        return Err("the fused loss differs from the reference".into());
    }

    // Two epochs of burn-train with batch-binding on the embedded sklearn digits.
    let digits = Manifest::named("sklearn-digits")?;
    let opts = LoadOptions::offline(DataDir::resolve(None));
    let (full, test) = (
        load(&digits, Split::Train, &opts)?,
        load(&digits, Split::Test, &opts)?,
    );
    let step = Imbalance::Step {
        ratio: 10.0,
        n_majority: Some(60),
        minority: None,
    };
    let train = full.subset(&step.select(full.labels(), 10, 1)?.indices);
    let batcher = |views: ViewPreset| {
        let (mean, std) = (digits.mean.clone(), digits.std.clone());
        SclBatcher::new(
            views.views(&digits),
            train.shape(),
            train.max_value(),
            mean,
            std,
            0,
        )
    };
    let (views, single) = (
        batcher(ViewPreset::VerticalFlip)?,
        batcher(ViewPreset::Single)?,
    );
    let schedule = Schedule::new(
        train.labels(),
        10,
        &BatchingConfig::new(ScheduleKind::BatchBinding, 32),
        0,
    )?;
    let hook = views.clone();
    let train_loader =
        ScheduledLoader::new(schedule, train.clone(), views).on_epoch(move |e| hook.set_epoch(e));
    let valid_loader = evaluation_loader(train, test, single, 256);
    let model =
        SclModelConfig::new(Architecture::Mlp(MlpConfig::new(64, vec![64, 16])), 10).init(&device);
    let objective = Objective::SupCon(SupConLossConfig::new().with_temperature(0.1).try_init()?);
    let dir = std::env::temp_dir().join(format!("scl-downstream-{}", std::process::id()));
    let result = SupervisedTraining::new(&dir, Arc::new(train_loader), valid_loader)
        .metrics((LossMetric::new(),))
        .metrics(metrics::geometry_metrics(10))
        .renderer(Box::new(EpochLines::new()))
        .with_application_logger(None)
        .num_epochs(2)
        .launch(Learner::new(
            SclLearner::new(model, objective),
            AdamConfig::new().init(),
            3e-3,
        ));
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(error) = result.error {
        return Err(error.to_string().into());
    }
    println!("trained two epochs with batch-binding through burn-train");
    Ok(())
}
