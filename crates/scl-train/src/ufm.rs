//! The unconstrained-features model (UFM): one free embedding per training example,
//! optimised directly with the supervised contrastive loss.
//!
//! The rows of a free matrix `W [N, d]` are mapped to unit-norm features
//! `h_i = W_i / ||W_i||` (UFM) or `h_i = relu(W_i) / ||relu(W_i)||` (UFM+, the model of a ReLU
//! at the last layer), and the full-batch SupCon loss of the `h_i` is minimised. Theorem 1 of
//! Kini et al. (ICLR 2024) says that with non-negative features every minimiser is an
//! orthogonal frame, whatever the class sizes.

use burn::module::{Module, Param};
use burn::optim::{
    AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig, momentum::MomentumConfig,
};
use burn::tensor::{Device, Int, Tensor, TensorData, activation::relu};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;
use scl_batching::{BatchingConfig, Schedule, Verdict, validate};
use scl_geometry::{Embeddings, geometry_summary};
use scl_loss::{NoPositivePolicy, SupConLossConfig, l2_normalize};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, OptimizerKind, UfmConfig};
use crate::records::{self, ConfigRecord, RunLabel, Summary, UfmSummary};
use crate::run_files::{METRICS, write_ufm_metrics};
pub use scl_types::ufm::{UfmCellOutcome, UfmPoint};

/// The free features, a Burn module with one parameter.
#[derive(Module, Debug)]
pub struct FreeFeatures {
    /// The free matrix `W [N, d]`.
    pub weights: Param<Tensor<2>>,
}

impl FreeFeatures {
    /// Unit-norm features `[N, d]`, after the ReLU when `relu` is set.
    pub fn features(&self, relu_on: bool) -> Tensor<2> {
        let w = self.weights.val();
        let w = if relu_on { relu(w) } else { w };
        l2_normalize(w)
    }
}

/// The SupCon loss at an exact orthogonal frame with unit-norm features (closed form):
/// the mean over anchors of `log((n_c - 1) + (N - n_c) e^{-1/tau})`, anchors of one-sample
/// classes counting as 0 (they have no positive).
///
/// Derivation: at the OF an anchor of class `c` has `n_c - 1` positives of similarity 1 and
/// `N - n_c` negatives of similarity 0, so `-log(e^{1/tau} / ((n_c - 1) e^{1/tau} + N - n_c))`.
pub fn orthogonal_frame_loss(class_sizes: &[usize], temperature: f64) -> f64 {
    let n: usize = class_sizes.iter().sum();
    let total: f64 = class_sizes
        .iter()
        .filter(|&&nc| nc >= 2)
        .map(|&nc| {
            nc as f64 * ((nc - 1) as f64 + (n - nc) as f64 * (-1.0 / temperature).exp()).ln()
        })
        .sum();
    total / n as f64
}

/// The result of a UFM run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UfmOutcome {
    /// Every logged point, in order; the last one is the final state.
    pub points: Vec<UfmPoint>,
    /// Samples per class.
    pub class_sizes: Vec<usize>,
    /// The closed-form loss at an orthogonal frame.
    pub orthogonal_frame_loss: f64,
    /// For a mini-batch run, the validator's verdict on every batch the run used.
    pub verdict: Option<Verdict>,
    /// Gram matrix `M^T M` of the class means at the last logged point (`K` rows of `K`).
    #[serde(default)]
    pub final_gram: Vec<Vec<f64>>,
}

impl UfmOutcome {
    /// What the run's summary keeps: the last logged point, the class sizes, the loss gap to
    /// the orthogonal frame, the batches' verdict and the final Gram matrix.
    ///
    /// # Errors
    /// [`crate::RunError::Other`] when the run logged no point.
    pub fn cell_outcome(&self) -> Result<UfmCellOutcome, crate::RunError> {
        let last = *self
            .points
            .last()
            .ok_or_else(|| crate::RunError::Other("the run logged no point".into()))?;
        Ok(UfmCellOutcome {
            class_sizes: self.class_sizes.clone(),
            last,
            orthogonal_frame_loss: self.orthogonal_frame_loss,
            loss_gap: last.loss - self.orthogonal_frame_loss,
            verdict: self.verdict.clone(),
            class_mean_gram: self.final_gram.clone(),
        })
    }
}

/// Writes the records of a finished UFM run into `dir` (the run contract,
/// [`crate::records`]): `config.json`, `metrics.csv` (one row per logged point) and, last,
/// `summary.json`, whose presence marks the run finished. A UFM run keeps everything in
/// memory until it ends, so its three files are written together.
///
/// # Errors
/// [`crate::RunError::Io`] when a file cannot be written; [`crate::RunError::Other`] when the
/// run logged no point.
pub fn write_records(
    dir: &std::path::Path,
    label: &RunLabel,
    backend: crate::backend::BackendKind,
    cfg: &UfmConfig,
    outcome: &UfmOutcome,
    seconds: f64,
) -> Result<UfmSummary, crate::RunError> {
    let cell = outcome.cell_outcome()?;
    let record = ConfigRecord::new(label, backend, &crate::provenance::git_revision(), cfg);
    records::write_config_record(dir, &record)?;
    write_ufm_metrics(&dir.join(METRICS), &outcome.points)?;
    let summary = Summary::new(&label.cell_id, backend, seconds, cfg, cell);
    records::write_summary(dir, &summary)?;
    Ok(summary)
}

/// The starting features of a UFM run of `cfg` on `n` samples, row-major `[n, cfg.dim()]`:
/// drawn from a `StdRng` seeded with `cfg.seed`, on the host, so the start is the same on
/// every backend: `|N(0, 1)|` entries for UFM+ (`cfg.relu`: non-negative, every ReLU alive,
/// as features after a ReLU are), `N(0, 1)` for UFM. [`run_ufm`] starts from exactly these,
/// so another implementation handed them starts where a run of this crate does.
pub fn initial_features(cfg: &UfmConfig, n: usize) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    (0..n * cfg.dim())
        .map(|_| {
            let v: f32 = rng.sample(StandardNormal);
            if cfg.relu { v.abs() } else { v }
        })
        .collect()
}

/// Runs the UFM optimisation described by `cfg` on `device`.
///
/// `progress(step)` is called after every step. The run starts from
/// [`initial_features`] (the same on every backend).
///
/// # Errors
/// A [`ConfigError`] when the configuration is invalid, and a message when the loss or the
/// features stop being finite.
pub fn run_ufm(
    cfg: &UfmConfig,
    device: &Device,
    progress: impl FnMut(usize),
) -> Result<UfmOutcome, crate::RunError> {
    cfg.validate()?;
    let labels = cfg.step_labels();
    let schedule = match (cfg.schedule, cfg.batch_size) {
        (Some(kind), Some(b)) => Some(
            Schedule::new(
                &labels,
                cfg.num_classes,
                &BatchingConfig::new(kind, b),
                cfg.seed,
            )
            .map_err(|e| ConfigError::new(e.to_string()))?,
        ),
        _ => None,
    };
    let source = match &schedule {
        Some(s) => Batches::Schedule(s),
        None => Batches::Full,
    };
    run_ufm_with(
        cfg,
        &labels,
        &cfg.minority_classes(),
        source,
        device,
        progress,
    )
}

/// Runs the UFM on explicit `labels` (classes `0..cfg.num_classes`) and explicit batches,
/// repeated in order: the tool for hand-made schedules. `cfg.n_majority`, `cfg.ratio`,
/// `cfg.schedule` and `cfg.batch_size` are ignored; every class counts as majority.
///
/// # Errors
/// As [`run_ufm`]; a [`ConfigError`] when `batches` is empty or holds an index outside
/// `labels`.
pub fn run_ufm_on_batches(
    cfg: &UfmConfig,
    labels: &[usize],
    batches: &[Vec<usize>],
    device: &Device,
) -> Result<UfmOutcome, crate::RunError> {
    if batches.is_empty() || batches.iter().any(Vec::is_empty) {
        return Err(ConfigError::new("batches is empty: give at least one non-empty batch").into());
    }
    if let Some(i) = batches.iter().flatten().find(|&&i| i >= labels.len()) {
        return Err(ConfigError::new(format!(
            "batch index {i} is not allowed: there are only {} samples",
            labels.len()
        ))
        .into());
    }
    run_ufm_with(cfg, labels, &[], Batches::Fixed(batches), device, |_| {})
}

/// Where the training batches come from.
enum Batches<'a> {
    /// Every sample, every step.
    Full,
    /// One batch of the schedule per step, epoch after epoch.
    Schedule(&'a Schedule),
    /// The given batches, repeated in order.
    Fixed(&'a [Vec<usize>]),
}

impl Batches<'_> {
    fn epoch(&self, epoch: u64) -> Vec<Vec<usize>> {
        match self {
            Batches::Full => Vec::new(),
            Batches::Schedule(s) => s.epoch(epoch),
            Batches::Fixed(b) => b.to_vec(),
        }
    }
}

fn run_ufm_with(
    cfg: &UfmConfig,
    labels: &[usize],
    minority: &[usize],
    source: Batches<'_>,
    device: &Device,
    mut progress: impl FnMut(usize),
) -> Result<UfmOutcome, crate::RunError> {
    let n = labels.len();
    let d = cfg.dim();
    let class_sizes: Vec<usize> = (0..cfg.num_classes)
        .map(|c| labels.iter().filter(|&&l| l == c).count())
        .collect();

    let init = initial_features(cfg, n);
    let model = FreeFeatures {
        weights: Param::from_data(TensorData::new(init, [n, d]), device),
    };
    let label_tensor = Tensor::<1, Int>::from_data(
        TensorData::new(labels.iter().map(|&y| y as i64).collect(), [n]),
        device,
    );
    let loss_fn = SupConLossConfig::new()
        .with_temperature(cfg.temperature)
        .with_base_temperature(cfg.temperature)
        .with_no_positive(NoPositivePolicy::CountAsZero)
        .try_init()
        .map_err(|e| ConfigError::new(e.to_string()))?;

    let mini_batch = !matches!(source, Batches::Full);
    let problem = Problem {
        source,
        cfg,
        labels,
        label_tensor,
        loss_fn,
        minority,
    };
    let (points, used, final_gram) = match cfg.optimizer {
        OptimizerKind::Adam => {
            let adam = match cfg.adam_epsilon {
                Some(eps) => AdamConfig::new().with_epsilon(eps as f32),
                None => AdamConfig::new(),
            };
            problem.optimise(model, adam.init(), &mut progress)?
        }
        OptimizerKind::Sgd => problem.optimise(
            model,
            SgdConfig::new()
                .with_momentum(Some(MomentumConfig::new().with_momentum(0.9)))
                .init(),
            &mut progress,
        )?,
    };
    let verdict = mini_batch.then(|| validate(labels, cfg.num_classes, &used));
    Ok(UfmOutcome {
        points,
        verdict,
        final_gram,
        orthogonal_frame_loss: orthogonal_frame_loss(&class_sizes, cfg.temperature),
        class_sizes,
    })
}

/// What an optimisation returns: the logged points, the mini-batches it used and the Gram
/// matrix of the class means at the last logged point.
type Optimised = (Vec<UfmPoint>, Vec<Vec<usize>>, Vec<Vec<f64>>);

struct Problem<'a> {
    source: Batches<'a>,
    cfg: &'a UfmConfig,
    labels: &'a [usize],
    label_tensor: Tensor<1, Int>,
    loss_fn: scl_loss::SupConLoss,
    minority: &'a [usize],
}

impl Problem<'_> {
    fn optimise(
        &self,
        mut model: FreeFeatures,
        mut optimizer: ModuleOptimizer,
        progress: &mut impl FnMut(usize),
    ) -> Result<Optimised, crate::RunError> {
        let cfg = self.cfg;
        let mut points = Vec::new();
        let mut final_gram = Vec::new();
        // Mini-batch position: the batches of the current epoch, and the next one to use.
        let mut used: Vec<Vec<usize>> = Vec::new();
        let mut epoch = 0u64;
        let mut batches: Vec<Vec<usize>> = Vec::new();
        let mut next = 0usize;
        for step in 0..=cfg.steps {
            if crate::interrupt::requested() {
                return Err(crate::RunError::Interrupted {
                    step,
                    checkpoint: None,
                });
            }
            let features = model.features(cfg.relu);
            let logging = step % cfg.log_every == 0 || step == cfg.steps;
            // `implementation: auto`: the fused kernel where the backend has one (no N x N matrix).
            // Full batch: this loss is also the training loss. Mini-batch: it is the logged
            // value only, computed at logging steps.
            let full_batch = matches!(self.source, Batches::Full);
            let full_loss = (full_batch || logging).then(|| {
                self.loss_fn.forward(
                    features.clone().unsqueeze_dim(1),
                    Some(self.label_tensor.clone()),
                )
            });
            if let Some(loss) = &full_loss {
                let loss_value: f64 = loss.clone().into_scalar::<f64>();
                if !loss_value.is_finite() {
                    return Err(crate::RunError::NonFinite { step });
                }
                if logging {
                    let embeddings = Embeddings::from_tensor(features.clone().inner())
                        .map_err(|_| crate::RunError::NonFinite { step })?;
                    let geometry =
                        geometry_summary(&embeddings, self.labels, cfg.num_classes, self.minority)
                            .map_err(|e| crate::RunError::Geometry {
                                what: format!("geometry at step {step}"),
                                source: e,
                            })?;
                    let geometry = crate::defined_geometry(geometry, step)?;
                    final_gram =
                        scl_geometry::class_mean_gram(&embeddings, self.labels, cfg.num_classes)
                            .map_err(|e| crate::RunError::Geometry {
                                what: format!("gram at step {step}"),
                                source: e,
                            })?;
                    points.push(UfmPoint {
                        step,
                        loss: loss_value,
                        geometry,
                    });
                }
            }
            if step == cfg.steps {
                break;
            }
            let loss = if full_batch {
                full_loss.expect("full batch computes the loss every step")
            } else {
                {
                    while next == batches.len() {
                        batches = self.source.epoch(epoch);
                        epoch += 1;
                        next = 0;
                    }
                    let batch = batches[next].clone();
                    next += 1;
                    let device = features.device();
                    let index = Tensor::<1, Int>::from_data(
                        TensorData::new(batch.iter().map(|&i| i as i64).collect(), [batch.len()]),
                        &device,
                    );
                    let loss = self.loss_fn.forward(
                        features.select(0, index.clone()).unsqueeze_dim(1),
                        Some(self.label_tensor.clone().select(0, index)),
                    );
                    used.push(batch);
                    loss
                }
            };
            if step == cfg.steps {
                break;
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let lr = cfg.lr_schedule.at(cfg.lr, step, cfg.steps);
            model = optimizer.step(lr, model, grads);
            progress(step + 1);
        }
        Ok((points, used, final_gram))
    }
}
