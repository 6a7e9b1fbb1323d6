//! A short SCL training of ResNet-18 (CIFAR stem, final ReLU, L2-normalised 512-d
//! embedding) on CIFAR-10-shaped images, timed per step: the same model, loss, optimiser and
//! views as `benches/reference/supcon_torch.py`, so the two can be compared on one GPU.
//!
//! Settings (the paper's CIFAR-10 runs, `experiments/paper-cifar10.toml`): SupCon with
//! tau = 0.1 and base temperature 0.07, SGD with learning rate 0.1, momentum 0.9 and weight
//! decay 5e-4. Two views per image: the image and its vertical flip (the paper's plotted
//! runs), made on the device. Every step uploads its batch, runs forward, backward and the
//! optimiser, and reads the loss back, which waits for the device.

use std::path::Path;
use std::time::Instant;

use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, Optimizer, SgdConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use rand::{Rng, SeedableRng, rngs::StdRng};
use scl_loss::{SupConBackend, SupConLossConfig};
use scl_models::{Architecture, ResNet18Config, SclModel, SclModelConfig};
use scl_train::backend::BackendKind;

use super::{Budget, TrainResult};

/// Bytes of one CIFAR binary record: a label byte and 3 x 32 x 32 pixel bytes (channel-major).
pub const RECORD: usize = 1 + 3072;
/// CIFAR-10's per-channel mean and standard deviation (the paper's code).
const MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
const STD: [f32; 3] = [0.2023, 0.1994, 0.2010];

/// Images in memory: labels and channel-major pixel bytes.
pub struct Images {
    labels: Vec<u8>,
    pixels: Vec<u8>,
    /// What they are, for the report.
    pub description: String,
}

impl Images {
    /// Reads a file of CIFAR binary records (`cifar10-train-subset.bin` of the bundle, or an
    /// official `data_batch_N.bin`).
    ///
    /// # Errors
    /// A sentence when the file cannot be read, is empty or is not a whole number of records.
    pub fn read(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        if bytes.is_empty() || bytes.len() % RECORD != 0 {
            return Err(format!(
                "{} bytes is not a whole number of CIFAR records of {RECORD} bytes",
                bytes.len()
            ));
        }
        let n = bytes.len() / RECORD;
        let mut labels = Vec::with_capacity(n);
        let mut pixels = Vec::with_capacity(n * 3072);
        for record in bytes.chunks_exact(RECORD) {
            if record[0] > 9 {
                return Err(format!("label {} is not a CIFAR-10 class (0-9)", record[0]));
            }
            labels.push(record[0]);
            pixels.extend_from_slice(&record[1..]);
        }
        Ok(Self {
            labels,
            pixels,
            description: format!(
                "real images: {n} CIFAR-10 training images from {}",
                path.display()
            ),
        })
    }

    /// `n` seeded pseudo-random 32x32 RGB images, labels `i mod 10` (throughput does not
    /// depend on pixel values).
    pub fn synthetic(n: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let pixels = (0..n * 3072).map(|_| rng.random::<u8>()).collect();
        Self {
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
            pixels,
            description: format!(
                "synthetic images: {n} seeded random 32x32 RGB images, labels i mod 10 \
                 (no CIFAR file was given)"
            ),
        }
    }

    fn len(&self) -> usize {
        self.labels.len()
    }

    /// Batch `step` of `batch` images (wrapping around), normalised, with its labels.
    fn batch(&self, step: usize, batch: usize) -> (Vec<f32>, Vec<i64>) {
        let mut x = Vec::with_capacity(batch * 3072);
        let mut y = Vec::with_capacity(batch);
        for k in 0..batch {
            let i = (step * batch + k) % self.len();
            y.push(i64::from(self.labels[i]));
            let image = &self.pixels[i * 3072..(i + 1) * 3072];
            for (c, plane) in image.chunks_exact(1024).enumerate() {
                x.extend(
                    plane
                        .iter()
                        .map(|&p| (f32::from(p) / 255.0 - MEAN[c]) / STD[c]),
                );
            }
        }
        (x, y)
    }
}

/// What to run.
pub struct Spec {
    /// Images per batch.
    pub batch: usize,
    /// Steps, the untimed ones included.
    pub steps: usize,
    /// Untimed first steps.
    pub warmup: usize,
}

impl Spec {
    /// A spec (`steps > warmup` is checked by the caller).
    pub fn new(batch: usize, steps: usize, warmup: usize) -> Self {
        Self {
            batch,
            steps,
            warmup,
        }
    }
}

fn run_on<B: AutodiffBackend + SupConBackend>(
    kind: BackendKind,
    spec: &Spec,
    images: &Images,
    budget: Budget,
) -> TrainResult {
    let device: B::Device = Default::default();
    B::seed(&device, 0);
    let mut model: SclModel<B> =
        SclModelConfig::new(Architecture::Resnet18(ResNet18Config::new()), 10).init(&device);
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_momentum(0.9)))
        .with_weight_decay(Some(WeightDecayConfig::new(5e-4)))
        .init();
    let loss = SupConLossConfig::new()
        .with_temperature(0.1)
        .with_base_temperature(0.07)
        .init();
    let mut result = TrainResult {
        backend: kind.name().into(),
        batch: spec.batch,
        warmup: spec.warmup,
        ..Default::default()
    };
    let n = spec.batch;
    for step in 0..spec.steps {
        // Stop at the limit; the first step always runs (a slow backend may then have no
        // timed step, and the rate is taken from the untimed ones, which the note says).
        if step > 0 && budget.left() <= 0.0 {
            result.note = Some(format!(
                "stopped at the time limit after {step} of {} steps",
                spec.steps
            ));
            break;
        }
        let start = Instant::now();
        let (x, y) = images.batch(step, n);
        let x = Tensor::<B, 4>::from_data(TensorData::new(x, [n, 3, 32, 32]), &device);
        let y = Tensor::<B, 1, Int>::from_data(TensorData::new(y, [n]), &device);
        // Views: the image and its vertical flip, stacked view-major, then [n, 2, d].
        let views = Tensor::cat(vec![x.clone(), x.flip([2])], 0);
        let z = model.embed(views);
        let d = z.dims()[1];
        let z = z.reshape([2, n, d]).swap_dims(0, 1);
        let value = loss.forward(z, Some(y));
        let grads = GradientsParams::from_grads(value.backward(), &model);
        model = optim.step(0.1, model, grads);
        let v: f64 = value.into_scalar().elem();
        result.step_seconds.push(start.elapsed().as_secs_f64());
        result.loss.push(v);
        if !v.is_finite() {
            result.note = Some(format!("the loss became {v} at step {step}"));
            break;
        }
    }
    result.steps = result.loss.len();
    if result.steps <= result.warmup {
        // No timed step: the rate of the untimed ones (compilation and autotuning included).
        result.warmup = 0;
        let note = "no timed step within the limit: the rate includes the first step's \
                    compilation and autotuning";
        result.note = Some(match result.note.take() {
            Some(n) => format!("{n}; {note}"),
            None => note.to_string(),
        });
    }
    let timed = &result.step_seconds[result.warmup..];
    result.timed_seconds = timed.iter().sum();
    if result.timed_seconds > 0.0 {
        result.images_per_second = (timed.len() * n) as f64 / result.timed_seconds;
    }
    result
}

/// Trains on `kind` for `spec.steps` steps or until `budget` runs out.
pub fn run(kind: BackendKind, spec: &Spec, images: &Images, budget: Budget) -> TrainResult {
    match kind {
        #[cfg(feature = "ndarray")]
        BackendKind::Ndarray => {
            run_on::<burn::backend::Autodiff<burn::backend::NdArray>>(kind, spec, images, budget)
        }
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            run_on::<burn::backend::Autodiff<burn::backend::Wgpu>>(kind, spec, images, budget)
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            run_on::<burn::backend::Autodiff<burn::backend::Cuda>>(kind, spec, images, budget)
        }
        #[allow(unreachable_patterns)]
        _ => unreachable!("probe accepted a backend that is not compiled in"),
    }
}
