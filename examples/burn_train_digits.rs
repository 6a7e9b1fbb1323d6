//! SCL with batch-binding in your own Burn project, trained by burn-train's trainer: the
//! sklearn digits (embedded, no download), STEP-imbalanced (R = 10), an MLP with the final
//! ReLU, the SupCon loss, one binding example per class appended to every batch, and the
//! geometry of the class means as burn-train metrics of every epoch (OF distance, ETF
//! distance, NC1, mean cosine, balanced nearest-class-mean accuracy with the training means).
//! Checkpoints go to `DIR/checkpoint/`; `RESUME` continues from that epoch's checkpoint.
//!
//! `cargo run -p scl-examples --example burn_train_digits [-- DIR [EPOCHS [RESUME]]]`
//! (default `runs/burn-train-digits`, 6 epochs).

use std::sync::Arc;

use burn::train::{Learner, SupervisedTraining, metric::LossMetric};
use burn::{optim::AdamConfig, tensor::Device};
use scl_batching::{BatchingConfig, Position, Schedule, ScheduleKind};
use scl_data::{DataDir, Imbalance, LoadOptions, Manifest, SclBatcher, Split, ViewPreset, load};
use scl_learner::*;
use scl_loss::SupConLossConfig;
use scl_models::{Architecture, MlpConfig, SclModelConfig};

fn main() {
    let (dir, epochs, resume) = arguments().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    if let Err(e) = run(&dir, epochs, resume) {
        eprintln!("error: {e}");
        std::process::exit(1)
    }
    println!("trained {epochs} epochs; metrics and checkpoints in {dir}");
}

// Written as a project would write it, one step per line (rustfmt would spread it over 52).
#[rustfmt::skip]
fn run(dir: &str, epochs: usize, resume: Option<usize>) -> Result<(), Box<dyn std::error::Error>> {
    // -- your project's code from here: 29 lines (and the 8 `use` lines above) --
    let device = Device::flex().autodiff();
    let digits = Manifest::named("sklearn-digits")?;
    let opts = LoadOptions::offline(DataDir::resolve(None));
    let (full, test) = (load(&digits, Split::Train, &opts)?, load(&digits, Split::Test, &opts)?);
    let step = Imbalance::Step { ratio: 10.0, n_majority: Some(100), minority: None };
    let train = full.subset(&step.select(full.labels(), 10, 1)?.indices);
    let batcher = |views: ViewPreset| {
        let (mean, std) = (digits.mean.clone(), digits.std.clone());
        SclBatcher::new(views.views(&digits), train.shape(), train.max_value(), mean, std, 0)
    };
    let (views, single) = (batcher(ViewPreset::VerticalFlip)?, batcher(ViewPreset::Single)?);
    let binding = BatchingConfig::new(ScheduleKind::BatchBinding, 64);
    let schedule = Schedule::new(train.labels(), 10, &binding, 0)?;
    let hook = views.clone();
    let train_loader = ScheduledLoader::new(schedule, train.clone(), views)
        .start_at(Position { epoch: resume.unwrap_or(0) as u64, batch: 0 })
        .on_epoch(move |e| hook.set_epoch(e));
    let valid_loader = evaluation_loader(train, test, single, 256);
    let mlp = Architecture::Mlp(MlpConfig::new(64, vec![128, 32]));
    let model = SclModelConfig::new(mlp, 10).init(&device);
    let objective = Objective::SupCon(SupConLossConfig::new().with_temperature(0.1).try_init()?);
    let mut training = SupervisedTraining::new(dir, Arc::new(train_loader), valid_loader)
        .metrics((LossMetric::new(),)).metrics(metrics::geometry_metrics(10))
        .with_default_checkpointers().renderer(Box::new(EpochLines::new())).num_epochs(epochs);
    if let Some(epoch) = resume {
        training = training.checkpoint(epoch);
    }
    let learner = SclLearner::new(model, objective);
    let result = training.launch(Learner::new(learner, AdamConfig::new().init(), 1e-3));
    // -- to here --
    result.error.map_or(Ok(()), |e| Err(e.to_string().into()))
}

/// `[DIR [EPOCHS [RESUME]]]`.
fn arguments() -> Result<(String, usize, Option<usize>), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, what: &str| -> Result<Option<usize>, String> {
        args.get(i)
            .map(|a| {
                a.parse()
                    .map_err(|_| format!("{what} must be a whole number, not `{a}`"))
            })
            .transpose()
    };
    let dir = args
        .first()
        .cloned()
        .unwrap_or_else(|| "runs/burn-train-digits".into());
    let epochs = number(1, "EPOCHS")?.unwrap_or(6);
    let resume = number(2, "RESUME")?;
    if resume.is_some_and(|r| r >= epochs) {
        return Err(format!("RESUME must be below EPOCHS ({epochs})"));
    }
    Ok((dir, epochs, resume))
}
