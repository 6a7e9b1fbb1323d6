//! Run configurations and their validation.

use serde::{Deserialize, Serialize};

/// A configuration the user got wrong: one sentence that names the key and what is allowed.
///
/// Command-line front ends exit with code 2 on this error and write nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    /// A configuration error with the given sentence.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The sentence.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The optimiser of a UFM run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam with Burn's defaults (betas 0.9, 0.999).
    Adam,
    /// SGD with momentum 0.9.
    Sgd,
}

impl OptimizerKind {
    /// Every optimiser, in the order option lists show them.
    pub const ALL: [Self; 2] = [Self::Sgd, Self::Adam];
}

/// Serde's name of a unit enum value (`relu`, `mlp`, `linear-bn`), for ids, tables and
/// messages; empty for a value that does not serialise to a string.
pub fn serde_plain<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// How a UFM run's learning rate moves over its steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// The same rate at every step.
    #[default]
    Constant,
    /// Cosine decay from the rate to 0 over the run's steps.
    Cosine,
}

impl LrSchedule {
    /// Every schedule, in the order option lists show them.
    pub const ALL: [Self; 2] = [Self::Constant, Self::Cosine];

    fn is_constant(&self) -> bool {
        *self == Self::Constant
    }

    /// The rate at `step` of `steps` for the peak rate `lr`.
    pub fn at(self, lr: f64, step: usize, steps: usize) -> f64 {
        match self {
            Self::Constant => lr,
            Self::Cosine => {
                let t = step as f64 / steps.max(1) as f64;
                lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

/// One unconstrained-features run: STEP-imbalanced classes, full-batch SupCon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UfmConfig {
    /// Number of classes `K`.
    pub num_classes: usize,
    /// Feature dimension `d` (at least `K`). Absent: `2 K`, so that every class has room for
    /// a private support even when some ReLU coordinates die.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dim: Option<usize>,
    /// Samples of each majority class (all but the last `floor(K / 2)` classes).
    pub n_majority: usize,
    /// Imbalance ratio `R >= 1`: minority classes get `floor(n_majority / R)` samples.
    pub ratio: f64,
    /// UFM+ (ReLU before the normalisation) when true, plain UFM when false.
    pub relu: bool,
    /// SupCon temperature; the loss is not rescaled (base temperature = temperature).
    pub temperature: f64,
    /// Number of full-batch optimisation steps.
    pub steps: usize,
    /// Learning rate (the peak one under `lr_schedule = "cosine"`).
    pub lr: f64,
    /// The learning rate over the steps: `constant` (absent) or `cosine`, from `lr` at step 0
    /// down to 0 at the last step, `lr (1 + cos(pi t / steps)) / 2`.
    #[serde(default, skip_serializing_if = "LrSchedule::is_constant")]
    pub lr_schedule: LrSchedule,
    /// Optimiser.
    pub optimizer: OptimizerKind,
    /// Adam's epsilon: `1e-8` is PyTorch's; absent means Burn's default, `1e-5`, with which
    /// the recorded UFM results were computed (so their cells keep their ids). The larger one
    /// damps the small gradients of tiny minority classes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adam_epsilon: Option<f64>,
    /// Seed of the initial features.
    pub seed: u64,
    /// Log the loss and geometry every this many steps (and at the last step).
    pub log_every: usize,
    /// Mini-batch schedule (`shuffle`, `batch-binding`, `fixed`, `class-balanced`); absent:
    /// full batch, the setting of Theorem 1. Each step takes the next batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<scl_batching::ScheduleKind>,
    /// Batch size of `schedule` (before batch-binding appends one example per class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
}

/// The keys a UFM cell of an experiment file accepts, for error messages: the fields of
/// [`UfmConfig`] and `imbalance`, the table `{ kind = "step", ratio, n_majority }` that
/// experiment files may give in place of `ratio` and `n_majority`.
pub const UFM_KEYS: &[&str] = &[
    "num_classes",
    "dim",
    "imbalance",
    "n_majority",
    "ratio",
    "relu",
    "temperature",
    "steps",
    "lr",
    "lr_schedule",
    "adam_epsilon",
    "optimizer",
    "seed",
    "log_every",
    "schedule",
    "batch_size",
];

/// The keys that may be left out (`imbalance` stands for two keys that may not).
pub const UFM_OPTIONAL_KEYS: &[&str] = &[
    "dim",
    "imbalance",
    "schedule",
    "batch_size",
    "lr_schedule",
    "adam_epsilon",
];

impl UfmConfig {
    /// Labels of the STEP-imbalanced UFM training set, ordered class by class.
    ///
    /// The majority classes have `n_majority` samples each, the minority classes
    /// ([`scl_data::imbalance::step_minority_classes`]: the last `floor(K / 2)`, the rule deep
    /// runs use too) `floor(n_majority / R)`.
    pub fn step_labels(&self) -> Vec<usize> {
        let mut labels = Vec::new();
        for c in 0..self.num_classes {
            labels.extend(std::iter::repeat_n(c, self.class_size(c)));
        }
        labels
    }

    /// Number of samples of class `c` under STEP imbalance.
    pub fn class_size(&self, c: usize) -> usize {
        if scl_data::imbalance::step_minority_classes(self.num_classes).contains(&c) {
            scl_data::imbalance::step_minority_size(self.n_majority, self.ratio)
        } else {
            self.n_majority
        }
    }

    /// The minority classes ([`scl_data::imbalance::step_minority_classes`]).
    pub fn minority_classes(&self) -> Vec<usize> {
        scl_data::imbalance::step_minority_classes(self.num_classes).collect()
    }

    /// The feature dimension: `dim`, or `2 K` when absent.
    pub fn dim(&self) -> usize {
        self.dim.unwrap_or(self.num_classes.saturating_mul(2))
    }

    /// Bytes a run of this configuration holds at once, roughly: the `N x d` features with
    /// their gradient and the optimiser's two moments in f32 (`16 N d`), their f64 copy for the
    /// geometry (`8 N d`), the class means and their Gram matrix (`8 K d + 8 K^2`). The loss
    /// kernel keeps no `N x N` matrix on the CPU backends.
    ///
    /// In closed form (no loop over the classes), so that it answers at once for any `K`.
    pub fn memory_estimate_bytes(&self) -> f64 {
        let minority = (self.num_classes / 2) as f64;
        let majority = (self.num_classes - self.num_classes / 2) as f64;
        let n = majority * self.class_size(0) as f64
            + minority * self.class_size(self.num_classes.saturating_sub(1)) as f64;
        let (d, k) = (self.dim() as f64, self.num_classes as f64);
        24.0 * n * d + 8.0 * k * d + 8.0 * k * k
    }

    /// Bytes of the points a run logs and keeps until it ends (one per `log_every` steps,
    /// plus the first and the last).
    pub fn logged_points_bytes(&self) -> f64 {
        let points = (self.steps / self.log_every.max(1)) as f64 + 2.0;
        points * std::mem::size_of::<crate::ufm::UfmPoint>() as f64
    }

    /// Checks every value; the error names the first wrong key and what is allowed.
    ///
    /// # Errors
    /// A [`ConfigError`] sentence.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, value: &dyn std::fmt::Display, allowed: &str| {
            Err(ConfigError::new(format!(
                "{key} = {value} is not allowed: {allowed}"
            )))
        };
        if self.num_classes < 2 {
            return bad("num_classes", &self.num_classes, "it must be at least 2");
        }
        if self.dim() < self.num_classes {
            return bad(
                "dim",
                &self.dim(),
                &format!(
                    "it must be at least num_classes = {} (d >= K)",
                    self.num_classes
                ),
            );
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad(
                "temperature",
                &self.temperature,
                "it must be a finite number above 0",
            );
        }
        if !(self.ratio.is_finite() && self.ratio >= 1.0) {
            return bad(
                "ratio",
                &self.ratio,
                "it must be a finite number of at least 1",
            );
        }
        if self.n_majority < 1 {
            return bad("n_majority", &self.n_majority, "it must be at least 1");
        }
        let minority = (self.n_majority as f64 / self.ratio).floor() as usize;
        if minority < 1 {
            return bad(
                "ratio",
                &self.ratio,
                &format!(
                    "with n_majority = {} it leaves the minority classes with no sample; \
                     it must be at most n_majority",
                    self.n_majority
                ),
            );
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr <= crate::MAX_LR) {
            return bad(
                "lr",
                &self.lr,
                &format!("it must be a number above 0 and at most {}", crate::MAX_LR),
            );
        }
        if self.steps < 1 {
            return bad("steps", &self.steps, "it must be at least 1");
        }
        if let Some(eps) = self.adam_epsilon
            && !(eps.is_finite() && eps > 0.0 && eps < 1.0)
        {
            return bad(
                "adam_epsilon",
                &eps,
                "it must be a number above 0 and below 1 (1e-8: PyTorch's)",
            );
        }
        if self.log_every < 1 {
            return bad("log_every", &self.log_every, "it must be at least 1");
        }
        if let Some(available) = crate::machine_memory_bytes() {
            let needed = self.memory_estimate_bytes();
            if needed > available as f64 {
                return Err(ConfigError::new(format!(
                    "num_classes = {}, n_majority = {} and dim = {} are not allowed together: \
                     the run would hold about {} GiB, more than this machine's {} GiB of \
                     memory; lower one of them",
                    self.num_classes,
                    self.n_majority,
                    self.dim(),
                    crate::gib_text(needed),
                    crate::gib_text(available as f64)
                )));
            }
            let points = self.logged_points_bytes();
            if needed + points > available as f64 {
                return Err(ConfigError::new(format!(
                    "steps = {} is not allowed with log_every = {}: the run would keep about \
                     {:.1e} logged points, {} GiB, more than this machine's {} GiB of memory \
                     beside the features; lower steps or log less often",
                    self.steps,
                    self.log_every,
                    (self.steps / self.log_every) as f64,
                    crate::gib_text(points),
                    crate::gib_text(available as f64)
                )));
            }
        }
        match (self.schedule, self.batch_size) {
            (None, None) => {}
            (None, Some(b)) => {
                return bad(
                    "batch_size",
                    &b,
                    "it needs a schedule (shuffle, batch-binding, fixed or class-balanced)",
                );
            }
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "schedule is set but batch_size is missing: give batch_size = B (at least 1)",
                ));
            }
            (Some(kind), Some(b)) => {
                let n: usize = (0..self.num_classes).map(|c| self.class_size(c)).sum();
                if b > n {
                    return bad(
                        "batch_size",
                        &b,
                        &format!("it must be at most the {n} training samples"),
                    );
                }
                let labels = self.step_labels();
                let batching = scl_batching::BatchingConfig::new(kind, b);
                scl_batching::Schedule::new(&labels, self.num_classes, &batching, self.seed)
                    .map_err(|e| ConfigError::new(e.to_string()))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ufm(num_classes: usize, dim: Option<usize>) -> UfmConfig {
        UfmConfig {
            num_classes,
            dim,
            n_majority: 200,
            ratio: 10.0,
            relu: true,
            temperature: 1.0,
            steps: 400,
            lr: 0.05,
            lr_schedule: LrSchedule::Constant,
            adam_epsilon: None,
            optimizer: OptimizerKind::Adam,
            seed: 0,
            log_every: 25,
            schedule: None,
            batch_size: None,
        }
    }

    #[test]
    fn the_memory_estimate_counts_every_class_without_a_loop_over_them() {
        // K = 5: classes 0 to 2 with 200 samples, 3 and 4 with 20: N = 640, d = 10.
        let small = ufm(5, None);
        let n: usize = (0..5).map(|c| small.class_size(c)).sum();
        assert_eq!(n, 640);
        assert_eq!(small.minority_classes(), [3, 4]);
        assert_eq!(
            small.memory_estimate_bytes(),
            24.0 * 640.0 * 10.0 + 8.0 * 5.0 * 10.0 + 8.0 * 25.0
        );
        // The largest K a file can give: a loop over the classes would not end; the closed
        // form answers, and validation refuses the run for its memory in one sentence.
        let huge = ufm(i64::MAX as usize, Some(i64::MAX as usize));
        assert!(huge.memory_estimate_bytes() > 1e40);
        if crate::machine_memory_bytes().is_some() {
            let err = huge.validate().unwrap_err().to_string();
            assert!(err.contains("are not allowed together"), "{err}");
            // Steps whose logged points alone would not fit.
            let mut long = ufm(4, None);
            long.steps = usize::MAX / 2;
            long.log_every = 1;
            let err = long.validate().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!(
                    "steps = {} is not allowed with log_every = 1",
                    long.steps
                )),
                "{err}"
            );
            long.log_every = long.steps;
            assert!(long.validate().is_ok());
        }
    }
}
