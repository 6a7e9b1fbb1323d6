//! Batch-binding with Burn's data loading: your `Dataset`, your `Batcher`, Burn's
//! `DataLoader`, and the batches chosen by `scl-batching`.
//!
//! Burn's `DataLoaderBuilder` draws batches with its own sampler (sequential or shuffled),
//! which cannot append the same binding examples to every batch. So the schedule picks the
//! indices: `scl_learner::ScheduledLoader` is a Burn `DataLoader` whose every `iter()` is the
//! next epoch of the schedule, the items of your dataset at those indices stacked by your
//! batcher. (burn-train's trainer takes the same loader: see `burn_train_digits.rs`.)
//!
//! The data: 8-dimensional points in four imbalanced classes (200, 200, 20, 20). The model: an
//! `scl-models` MLP with the final ReLU. Trained twice with the same seed, once with plain
//! shuffling and once with batch-binding (batch size 16 plus one example of every class);
//! printed: the validator's verdict on each epoch's batches and the OF distance of the class
//! means. With 20-sample minority classes and batches of 16, shuffled batches often miss the
//! minority classes; batch-binding puts every class in every batch.
//!
//! `cargo run -p scl-examples --example batch_binding_with_burn [-- EPOCHS]` (default 8).

use std::sync::Arc;

use burn::data::dataloader::DataLoader;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use scl_batching::{BatchingConfig, Schedule, ScheduleKind, validate};
use scl_geometry::{Embeddings, geometry};
use scl_learner::ScheduledLoader;
use scl_loss::SupConLossConfig;
use scl_models::{Architecture, MlpConfig, SclModel, SclModelConfig};

/// One example of your dataset.
#[derive(Clone, Debug)]
struct Point {
    x: [f32; 8],
    label: usize,
}

/// Your dataset: any Burn `Dataset` works.
struct Points(Vec<Point>);

impl Dataset<Point> for Points {
    fn get(&self, index: usize) -> Result<Point, DatasetError> {
        Ok(self.0[index].clone())
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// A batch on the device: two views `[n * 2, 1, 1, 8]` (view-major) and labels `[n]`.
#[derive(Clone, Debug)]
struct PointBatch {
    views: Tensor<4>,
    labels: Tensor<1, Int>,
}

/// Your batcher. The loader hands it the items of one scheduled batch.
#[derive(Clone)]
struct PointBatcher;

impl Batcher<Point, PointBatch> for PointBatcher {
    fn batch(&self, points: Vec<Point>, device: &Device) -> PointBatch {
        let n = points.len();
        let x: Vec<f32> = points.iter().flat_map(|p| p.x).collect();
        let x = Tensor::<2>::from_data(TensorData::new(x, [n, 8]), device);
        // The two views: the point and a scaled copy (any augmentation of yours goes here).
        let views = Tensor::cat(vec![x.clone(), x.mul_scalar(0.9)], 0).reshape([2 * n, 1, 1, 8]);
        let labels = points.iter().map(|p| p.label as i64).collect();
        PointBatch {
            views,
            labels: Tensor::from_data(TensorData::new(labels, [n]), device),
        }
    }
}

/// Four classes, 200, 200, 20, 20 points, around orthogonal centres, deterministic.
fn points() -> Points {
    let mut state = 12345u64;
    let mut noise = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 1.5
    };
    let mut out = Vec::new();
    for (class, count) in [200usize, 200, 20, 20].into_iter().enumerate() {
        for _ in 0..count {
            let mut x = [0.0f32; 8];
            x.iter_mut().for_each(|v| *v = noise());
            x[2 * class] += 2.0;
            out.push(Point { x, label: class });
        }
    }
    Points(out)
}

fn train(kind: ScheduleKind, epochs: u64, data: &Arc<Points>) -> (f64, usize) {
    let labels: Vec<usize> = data.0.iter().map(|p| p.label).collect();
    // Keep the last incomplete batch, so every sample is in every epoch and the validator's
    // verdict on one epoch's batches is about the classes meeting, not about dropped samples.
    let mut config = BatchingConfig::new(kind, 16);
    config.drop_last = false;
    let schedule = Schedule::new(&labels, 4, &config, 7).expect("valid");
    let device = Device::flex().autodiff();
    device.seed(0);
    let mut model: SclModel =
        SclModelConfig::new(Architecture::Mlp(MlpConfig::new(8, vec![32, 8])), 4).init(&device);
    let mut optim = AdamConfig::new().init();
    let loss_fn = SupConLossConfig::new().with_temperature(0.1).init();
    let mut rejected = 0;
    let loader =
        ScheduledLoader::new(schedule.clone(), data.clone(), PointBatcher).with_device(&device);
    for epoch in 0..epochs {
        if !validate(&labels, 4, &schedule.epoch(epoch)).accepted() {
            rejected += 1;
        }
        for batch in loader.iter() {
            let batch = batch.expect("the schedule's indices are in the dataset");
            let n = batch.labels.dims()[0];
            let z = model.embed(batch.views); // [2n, 8], view-major
            let z = z.reshape([2, n, 8]).swap_dims(0, 1);
            let loss = loss_fn.forward(z, Some(batch.labels));
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(5e-3, model, grads);
        }
    }
    // Geometry of the class means over the whole dataset, first view.
    let x: Vec<f32> = data.0.iter().flat_map(|p| p.x).collect();
    let x = Tensor::<4>::from_data(
        TensorData::new(x, [labels.len(), 1, 1, 8]),
        &device.clone().inner(),
    );
    let z = Embeddings::from_tensor(model.valid().embed(x)).expect("finite");
    (
        geometry(&z, &labels, 4).expect("four classes").of_distance,
        rejected,
    )
}

fn main() {
    let epochs: u64 = std::env::args()
        .nth(1)
        .map_or(Ok(8), |a| a.parse())
        .unwrap_or_else(|_| {
            eprintln!("error: EPOCHS must be a whole number");
            std::process::exit(2)
        });
    let data = Arc::new(points());
    for kind in [ScheduleKind::Shuffle, ScheduleKind::BatchBinding] {
        let (of, rejected) = train(kind, epochs, &data);
        println!(
            "{kind:?}: OF distance of the class means after {epochs} epochs {of:.3}; \
             validator rejected {rejected} of {epochs} epochs' batches"
        );
    }
}
