//! A short SCL training of ResNet-18 (CIFAR stem, final ReLU, L2-normalised 512-d
//! embedding) on CIFAR-10-shaped images, timed per step: the same model, loss, optimiser and
//! views as `benches/reference/supcon_torch.py`, so the two can be compared on one GPU.
//!
//! Settings (the paper's CIFAR-10 runs, `experiments/paper-cifar10.toml`): SupCon with
//! tau = 0.1 and base temperature 0.07, SGD with learning rate 0.1, momentum 0.9 and weight
//! decay 5e-4. Two views per image: the image and its vertical flip (the paper's plotted
//! runs), made on the device. Every step uploads its batch, runs forward, backward and the
//! optimiser, and reads the loss back, which waits for the device.

use scl_train::backend::BackendRuntime;
use std::path::Path;
use std::time::Instant;

use burn::optim::GradientsParams;
use burn::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};
use scl_data::readers::cifar::{CifarVariant, PIXELS, parse_cifar_records};
use scl_models::{Architecture, ResNet18Config, SclModel, SclModelConfig};
use scl_train::backend::BackendKind;
use scl_train::deep::scl_batch_loss;

use super::{Budget, TrainResult};

/// Images in memory: labels, channel-major pixel bytes and CIFAR-10's per-channel
/// normalisation (from its manifest, as the training crate uses it).
pub struct Images {
    labels: Vec<usize>,
    pixels: Vec<u8>,
    mean: [f32; 3],
    std: [f32; 3],
    /// What they are, for the report.
    pub description: String,
}

/// CIFAR-10's per-channel mean and standard deviation, from its manifest.
fn normalisation() -> ([f32; 3], [f32; 3]) {
    let manifest = scl_data::Manifest::named("cifar10").expect("cifar10 is a built-in manifest");
    let three = |v: &[f32]| [v[0], v[1], v[2]];
    (three(&manifest.mean), three(&manifest.std))
}

impl Images {
    /// Reads a file of CIFAR-10 binary records (`cifar10-train-subset.bin` of the bundle, or an
    /// official `data_batch_N.bin`) with scl-data's reader.
    ///
    /// # Errors
    /// A sentence when the file cannot be read, is empty or is not a whole number of records
    /// with CIFAR-10 labels.
    pub fn read(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        if bytes.is_empty() {
            return Err(format!("{} is empty", path.display()));
        }
        let (mut pixels, mut labels) = (Vec::new(), Vec::new());
        parse_cifar_records(
            &bytes,
            path,
            CifarVariant::Cifar10,
            &mut pixels,
            &mut labels,
        )
        .map_err(|e| e.to_string())?;
        let (mean, std) = normalisation();
        Ok(Self {
            description: format!(
                "real images: {} CIFAR-10 training images from {}",
                labels.len(),
                path.display()
            ),
            labels,
            pixels,
            mean,
            std,
        })
    }

    /// `n` seeded pseudo-random 32x32 RGB images, labels `i mod 10` (throughput does not
    /// depend on pixel values).
    pub fn synthetic(n: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let pixels = (0..n * PIXELS).map(|_| rng.random::<u8>()).collect();
        let (mean, std) = normalisation();
        Self {
            labels: (0..n).map(|i| i % 10).collect(),
            pixels,
            mean,
            std,
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
        let mut x = Vec::with_capacity(batch * PIXELS);
        let mut y = Vec::with_capacity(batch);
        for k in 0..batch {
            let i = (step * batch + k) % self.len();
            y.push(self.labels[i] as i64);
            let image = &self.pixels[i * PIXELS..(i + 1) * PIXELS];
            for (c, plane) in image.chunks_exact(PIXELS / 3).enumerate() {
                x.extend(
                    plane
                        .iter()
                        .map(|&p| (f32::from(p) / 255.0 - self.mean[c]) / self.std[c]),
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

fn train(
    kind: BackendKind,
    spec: &Spec,
    images: &Images,
    budget: Budget,
    device: &Device,
) -> TrainResult {
    device.seed(0);
    let mut model: SclModel =
        SclModelConfig::new(Architecture::Resnet18(ResNet18Config::new()), 10).init(device);
    let mut optim = crate::paper_step::optimizer();
    let loss = crate::paper_step::loss();
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
        let x = Tensor::<4>::from_data(TensorData::new(x, [n, 3, 32, 32]), device);
        let y = Tensor::<1, Int>::from_data(TensorData::new(y, [n]), device);
        // Views: the image and its vertical flip, next to each other (sample-major), and the
        // loss of the training crate's SCL step.
        let views = Tensor::stack::<5>(vec![x.clone(), x.flip([2])], 1).reshape([2 * n, 3, 32, 32]);
        let value = scl_batch_loss(&model, views, y, 2, &loss);
        let grads = GradientsParams::from_grads(value.backward(), &model);
        model = optim.step(0.1, model, grads);
        let v: f64 = value.into_scalar::<f64>();
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

/// Trains on device 0 of `kind` for `spec.steps` steps or until `budget` runs out.
pub fn run(
    kind: BackendKind,
    spec: &Spec,
    images: &Images,
    budget: Budget,
) -> Result<TrainResult, String> {
    let device = kind.device(0).map_err(|e| e.to_string())?;
    Ok(train(kind, spec, images, budget, &device.autodiff()))
}
