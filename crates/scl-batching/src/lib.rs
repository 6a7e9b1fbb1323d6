//! Batch schedules for supervised contrastive learning under class imbalance, and a
//! validator for the mini-batch conditions of Kini et al. (ICLR 2024, Corollary 2.1).
//!
//! A schedule is, for every epoch, a list of batches of dataset indices. It is a pure
//! function of (labels, configuration, seed, epoch), so a run resumed at epoch `e` sees
//! exactly the batches an uninterrupted run would have seen.
//!
//! - [`ScheduleKind::Shuffle`]: a fresh permutation every epoch, cut into batches of `B`;
//! - [`ScheduleKind::BatchBinding`]: the shuffled batches plus the same `k` binding examples
//!   of every class appended to every batch (the paper's batch-binding; `k = 1`, the first
//!   example of each class in dataset order, as in the authors' code);
//! - [`ScheduleKind::Fixed`]: batches drawn once from the seed and never reshuffled;
//! - [`ScheduleKind::ClassBalanced`]: every batch holds `B / K` examples of every class,
//!   cycling through each class's own permutation (so small classes repeat within an epoch);
//!   an epoch has `ceil(N / (K floor(B / K)))` batches.
//!
//! [`Loader`] hands the batches of a schedule to a training loop, assembled on worker threads
//! with prefetch, in schedule order, resumable from a saved [`Position`].
//!
//! # Example
//!
//! ```
//! use scl_batching::{BatchingConfig, Schedule, ScheduleKind, validate};
//!
//! // Six samples of class 0, two of class 1.
//! let labels = [0, 0, 0, 0, 0, 0, 1, 1];
//! let mut config = BatchingConfig::new(ScheduleKind::BatchBinding, 3);
//! config.drop_last = false; // keep every sample in every epoch
//! let schedule = Schedule::new(&labels, 2, &config, 42).unwrap();
//! let batches = schedule.epoch(0);
//! assert!(batches.iter().all(|b| b.contains(&0) && b.contains(&6)));
//! assert!(validate(&labels, 2, &batches).accepted());
//! ```
#![warn(missing_docs)]

mod loader;
mod validator;

pub use loader::{LoadedBatch, Loader, Position};
pub use validator::{Verdict, validate};

use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

/// Which schedule to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// A fresh permutation every epoch.
    Shuffle,
    /// Shuffled batches plus fixed binding examples of every class in every batch.
    BatchBinding,
    /// Batches drawn once and reused every epoch.
    Fixed,
    /// The same number of examples of every class in every batch.
    ClassBalanced,
}

impl ScheduleKind {
    /// Every schedule, in the order option lists show them.
    pub const ALL: [Self; 4] = [
        Self::Shuffle,
        Self::BatchBinding,
        Self::Fixed,
        Self::ClassBalanced,
    ];

    /// The name written in experiment files and cell ids (the serde name).
    pub fn name(self) -> &'static str {
        match self {
            Self::Shuffle => "shuffle",
            Self::BatchBinding => "batch-binding",
            Self::Fixed => "fixed",
            Self::ClassBalanced => "class-balanced",
        }
    }
}

/// How batch-binding picks its binding examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BindingChoice {
    /// The first `k` examples of each class in dataset order (the authors' choice).
    First,
    /// `k` examples of each class drawn with the schedule's seed.
    Random,
}

/// Configuration of a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchingConfig {
    /// The schedule.
    pub kind: ScheduleKind,
    /// Batch size `B` (before the binding examples are appended).
    pub batch_size: usize,
    /// Drop the last incomplete batch. true: the authors skip batches that are not full.
    pub drop_last: bool,
    /// Binding examples per class (`k`). 1: the authors' choice.
    pub binding_per_class: usize,
    /// How the binding examples are chosen.
    pub binding_choice: BindingChoice,
    /// Leave the binding examples out of the shuffled part. false: the authors keep them.
    pub exclude_binding_from_shuffle: bool,
}

impl BatchingConfig {
    /// A configuration with the authors' defaults for everything but the kind and `B`.
    pub fn new(kind: ScheduleKind, batch_size: usize) -> Self {
        Self {
            kind,
            batch_size,
            drop_last: true,
            binding_per_class: 1,
            binding_choice: BindingChoice::First,
            exclude_binding_from_shuffle: false,
        }
    }
}

/// An invalid schedule setting, as one sentence naming it and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchingError {
    /// `batch_size` is 0.
    #[error("batch_size = 0 is not allowed: it must be at least 1")]
    BatchSize,
    /// Batch-binding asks for more binding examples than a class has.
    #[error(
        "binding_per_class = {k} is not allowed: class {class} has only {size} examples, \
         and k must be at most the size of the smallest class"
    )]
    BindingTooLarge {
        /// Requested `k`.
        k: usize,
        /// The class that is too small.
        class: usize,
        /// Its size.
        size: usize,
    },
    /// Incomplete batches are dropped and the batch is larger than the data it is drawn
    /// from, so an epoch would have no batch and training would take no step.
    #[error(
        "batch_size = {batch_size} is not allowed: the training set has {n} examples and \
         incomplete batches are dropped, so an epoch would have no batch; it must be at most {n}"
    )]
    LargerThanData {
        /// Requested `B`.
        batch_size: usize,
        /// Examples the batches are drawn from.
        n: usize,
    },
    /// A class-balanced batch cannot hold one example of every class.
    #[error(
        "batch_size = {batch_size} is not allowed for class-balanced batches: it must be at \
         least the number of classes ({num_classes})"
    )]
    BalancedTooSmall {
        /// Requested `B`.
        batch_size: usize,
        /// Number of classes.
        num_classes: usize,
    },
    /// A label is not below the number of classes.
    #[error("label {label} at index {index} is not allowed: labels must be below {num_classes}")]
    Label {
        /// The label.
        label: usize,
        /// Its index.
        index: usize,
        /// The number of classes.
        num_classes: usize,
    },
    /// A class has no example (class-balanced batches and batch-binding need every class).
    #[error("class {0} has no example: every class needs at least one for this schedule")]
    EmptyClass(usize),
}

/// A schedule bound to a dataset's labels and a seed.
#[derive(Debug, Clone)]
pub struct Schedule {
    config: BatchingConfig,
    seed: u64,
    by_class: Vec<Vec<usize>>,
    binding: Vec<usize>,
    n: usize,
}

impl Schedule {
    /// Checks the configuration against the labels.
    ///
    /// # Errors
    /// A [`BatchingError`] naming the wrong setting.
    pub fn new(
        labels: &[usize],
        num_classes: usize,
        config: &BatchingConfig,
        seed: u64,
    ) -> Result<Self, BatchingError> {
        if config.batch_size == 0 {
            return Err(BatchingError::BatchSize);
        }
        let mut by_class = vec![Vec::new(); num_classes];
        for (index, &label) in labels.iter().enumerate() {
            if label >= num_classes {
                return Err(BatchingError::Label {
                    label,
                    index,
                    num_classes,
                });
            }
            by_class[label].push(index);
        }
        let needs_every_class = matches!(
            config.kind,
            ScheduleKind::BatchBinding | ScheduleKind::ClassBalanced
        );
        if needs_every_class && let Some(c) = by_class.iter().position(Vec::is_empty) {
            return Err(BatchingError::EmptyClass(c));
        }
        let mut binding = Vec::new();
        if config.kind == ScheduleKind::BatchBinding {
            let k = config.binding_per_class;
            for (class, members) in by_class.iter().enumerate() {
                if k > members.len() {
                    return Err(BatchingError::BindingTooLarge {
                        k,
                        class,
                        size: members.len(),
                    });
                }
                match config.binding_choice {
                    BindingChoice::First => binding.extend_from_slice(&members[..k]),
                    BindingChoice::Random => {
                        let mut rng = rng_for(seed, u64::MAX, class as u64);
                        let mut pick = members.clone();
                        pick.shuffle(&mut rng);
                        binding.extend_from_slice(&pick[..k]);
                    }
                }
            }
        }
        let shuffled = match config.kind {
            ScheduleKind::Shuffle | ScheduleKind::Fixed => labels.len(),
            ScheduleKind::BatchBinding if config.exclude_binding_from_shuffle => {
                labels.len() - binding.len()
            }
            ScheduleKind::BatchBinding => labels.len(),
            ScheduleKind::ClassBalanced => usize::MAX,
        };
        if config.drop_last && config.batch_size > shuffled {
            return Err(BatchingError::LargerThanData {
                batch_size: config.batch_size,
                n: shuffled,
            });
        }
        if config.kind == ScheduleKind::ClassBalanced && config.batch_size < num_classes {
            return Err(BatchingError::BalancedTooSmall {
                batch_size: config.batch_size,
                num_classes,
            });
        }
        Ok(Self {
            config: config.clone(),
            seed,
            by_class,
            binding,
            n: labels.len(),
        })
    }

    /// The binding examples appended to every batch (empty unless batch-binding).
    pub fn binding_examples(&self) -> &[usize] {
        &self.binding
    }

    /// The batches of `epoch`, in order.
    pub fn epoch(&self, epoch: u64) -> Vec<Vec<usize>> {
        match self.config.kind {
            ScheduleKind::Shuffle => self.shuffled(epoch, &[]),
            ScheduleKind::Fixed => self.shuffled(u64::MAX - 1, &[]),
            ScheduleKind::BatchBinding => {
                let excluded: &[usize] = if self.config.exclude_binding_from_shuffle {
                    &self.binding
                } else {
                    &[]
                };
                let mut batches = self.shuffled(epoch, excluded);
                for b in &mut batches {
                    b.extend_from_slice(&self.binding);
                }
                batches
            }
            ScheduleKind::ClassBalanced => self.balanced(epoch),
        }
    }

    fn shuffled(&self, stream: u64, excluded: &[usize]) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.n).filter(|i| !excluded.contains(i)).collect();
        order.shuffle(&mut rng_for(self.seed, stream, 0));
        let b = self.config.batch_size;
        order
            .chunks(b)
            .filter(|c| !self.config.drop_last || c.len() == b)
            .map(<[usize]>::to_vec)
            .collect()
    }

    fn balanced(&self, epoch: u64) -> Vec<Vec<usize>> {
        let k = self.by_class.len();
        let per_class = self.config.batch_size / k;
        // As many batches as a plain epoch would have, rounded up.
        let batches = self.n.div_ceil(per_class * k);
        let mut streams: Vec<ClassStream> = self
            .by_class
            .iter()
            .enumerate()
            .map(|(c, members)| ClassStream::new(members, rng_for(self.seed, epoch, c as u64 + 1)))
            .collect();
        (0..batches)
            .map(|_| {
                let mut batch = Vec::with_capacity(per_class * k);
                for s in &mut streams {
                    for _ in 0..per_class {
                        batch.push(s.next());
                    }
                }
                batch
            })
            .collect()
    }
}

/// Cycles through a class's permutation, reshuffling when it is used up.
struct ClassStream {
    members: Vec<usize>,
    pos: usize,
    rng: StdRng,
}

impl ClassStream {
    fn new(members: &[usize], mut rng: StdRng) -> Self {
        let mut members = members.to_vec();
        members.shuffle(&mut rng);
        Self {
            members,
            pos: 0,
            rng,
        }
    }

    fn next(&mut self) -> usize {
        if self.pos == self.members.len() {
            self.members.shuffle(&mut self.rng);
            self.pos = 0;
        }
        self.pos += 1;
        self.members[self.pos - 1]
    }
}

/// A generator for (seed, stream, substream): each part goes through a full SplitMix64
/// round before the next is mixed in, so no two triples share a generator by accident (an
/// XOR of raw values would make `(0, 2)` and `(2, 0)` collide).
fn rng_for(seed: u64, stream: u64, sub: u64) -> StdRng {
    fn splitmix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    StdRng::seed_from_u64(splitmix(splitmix(splitmix(seed) ^ stream) ^ sub))
}

#[cfg(test)]
mod tests;
