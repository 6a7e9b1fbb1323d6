//! The paper's imbalance constructions, applied to a split by deterministic subsampling.
//!
//! - STEP-R: majority classes keep `n_majority` examples, minority classes
//!   `floor(n_majority / R)`. Minority = the second half of the classes by default (classes
//!   5..9 of 10, as in the paper's code), or any list.
//! - Long-tail ("exp", the LDAM-DRW convention): `n_c = floor(n_max * (1/R)^(c/(K-1)))`.
//! - Explicit per-class counts.
//!
//! Which examples are kept: per class in label order, the class's indices (in dataset order)
//! are shuffled by one seeded generator and the first `n_c` kept; the result is sorted, so the
//! same seed always gives the same indices.

use std::fmt::Write as _;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::DataError;

/// The paper's default number of examples of a majority class (CIFAR-10, MNIST).
pub const PAPER_N_MAJORITY: usize = 5000;

/// How to unbalance a split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Imbalance {
    /// Keep every example.
    None,
    /// STEP imbalance with ratio `R = n_majority / n_minority`.
    Step {
        /// The imbalance ratio R (at least 1).
        ratio: f64,
        /// Examples per majority class; default `min(5000, smallest class)`.
        #[serde(default)]
        n_majority: Option<usize>,
        /// The minority classes; default [`step_minority_classes`], the last `floor(K / 2)`.
        #[serde(default)]
        minority: Option<Vec<usize>>,
    },
    /// Long-tail (exponential) imbalance with ratio `R = n_0 / n_{K-1}`.
    LongTail {
        /// The imbalance ratio R (at least 1).
        ratio: f64,
        /// Examples of class 0; default `min(5000, smallest class)`.
        #[serde(default)]
        n_max: Option<usize>,
    },
    /// Exactly these many examples per class.
    Counts {
        /// One count per class.
        counts: Vec<usize>,
    },
}

/// The kinds of [`Imbalance`], by the name experiment files give them (`kind = "..."`): the
/// one place they are spelled outside serde's own derive (a test holds the two equal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImbalanceKind {
    /// [`Imbalance::Step`].
    Step,
    /// [`Imbalance::LongTail`].
    LongTail,
    /// [`Imbalance::None`].
    None,
    /// [`Imbalance::Counts`].
    Counts,
}

impl ImbalanceKind {
    /// Every kind, in the order option lists show them.
    pub const ALL: [Self; 4] = [Self::Step, Self::LongTail, Self::None, Self::Counts];

    /// The name in experiment files (`imbalance = { kind = "long-tail", ... }`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Step => "step",
            Self::LongTail => "long-tail",
            Self::None => "none",
            Self::Counts => "counts",
        }
    }

    /// The imbalance of this kind from a ratio and the size of the largest class (`None`: the
    /// kind's default); `Option::None` for [`ImbalanceKind::Counts`], which needs its counts.
    pub fn with_ratio(self, ratio: f64, n_max: Option<usize>) -> Option<Imbalance> {
        match self {
            Self::Step => Some(Imbalance::Step {
                ratio,
                n_majority: n_max,
                minority: None,
            }),
            Self::LongTail => Some(Imbalance::LongTail { ratio, n_max }),
            Self::None => Some(Imbalance::None),
            Self::Counts => None,
        }
    }
}

impl std::fmt::Display for ImbalanceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ImbalanceKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!(
                    "kind {s} is not allowed: the allowed kinds are {}",
                    Self::ALL.map(Self::name).join(", ")
                )
            })
    }
}

/// The outcome of [`Imbalance::select`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Kept example indices, ascending.
    pub indices: Vec<usize>,
    /// Examples per class before subsampling.
    pub available: Vec<usize>,
    /// Examples per class after.
    pub counts: Vec<usize>,
}

fn check_ratio(ratio: f64) -> Result<(), DataError> {
    if !ratio.is_finite() || ratio < 1.0 {
        return Err(DataError::Imbalance(format!(
            "the imbalance ratio R must be a number >= 1, got {ratio}"
        )));
    }
    Ok(())
}

fn default_n(available: &[usize]) -> usize {
    available
        .iter()
        .copied()
        .min()
        .unwrap_or(0)
        .min(PAPER_N_MAJORITY)
}

/// The minority classes of STEP imbalance over `k` classes, the one rule every STEP run of
/// the workspace uses (deep datasets and the unconstrained-features model alike): the last
/// `floor(K / 2)` classes. For K = 10 these are classes 5 to 9, the authors' split (majority
/// 0 to 4); for an odd K the majority has one class more (K = 5: minority 3 and 4).
pub fn step_minority_classes(k: usize) -> std::ops::Range<usize> {
    k - k / 2..k
}

/// The examples a minority class keeps under STEP imbalance with `ratio` R over `n_majority`
/// examples per majority class: `floor(n_majority / R)`.
pub fn step_minority_size(n_majority: usize, ratio: f64) -> usize {
    (n_majority as f64 / ratio).floor() as usize
}

impl Imbalance {
    /// Its kind.
    pub fn kind(&self) -> ImbalanceKind {
        match self {
            Self::None => ImbalanceKind::None,
            Self::Step { .. } => ImbalanceKind::Step,
            Self::LongTail { .. } => ImbalanceKind::LongTail,
            Self::Counts { .. } => ImbalanceKind::Counts,
        }
    }

    /// A short label for tables and file names, e.g. `step-R10` or `long-tail-R100`.
    pub fn label(&self) -> String {
        let kind = self.kind().name();
        match self {
            Self::Step { ratio, .. } | Self::LongTail { ratio, .. } => format!("{kind}-R{ratio}"),
            Self::None | Self::Counts { .. } => kind.to_string(),
        }
    }

    /// The number of examples each class keeps, given how many each has.
    ///
    /// # Errors
    /// [`DataError::Imbalance`] when R < 1, a minority class index is out of range, a class
    /// would keep zero examples, or a class has fewer examples than asked for.
    pub fn target_counts(&self, available: &[usize]) -> Result<Vec<usize>, DataError> {
        let k = available.len();
        let counts = match self {
            Self::None => available.to_vec(),
            Self::Step {
                ratio,
                n_majority,
                minority,
            } => {
                check_ratio(*ratio)?;
                let n = n_majority.unwrap_or_else(|| default_n(available));
                let minority: Vec<usize> = minority
                    .clone()
                    .unwrap_or_else(|| step_minority_classes(k).collect());
                if let Some(bad) = minority.iter().find(|c| **c >= k) {
                    return Err(DataError::Imbalance(format!(
                        "minority class {bad} does not exist; classes are 0..{k}"
                    )));
                }
                let n_min = step_minority_size(n, *ratio);
                (0..k)
                    .map(|c| if minority.contains(&c) { n_min } else { n })
                    .collect()
            }
            Self::LongTail { ratio, n_max } => {
                check_ratio(*ratio)?;
                let n = n_max.unwrap_or_else(|| default_n(available));
                (0..k)
                    .map(|c| {
                        if k == 1 {
                            n
                        } else {
                            // The same expression as LDAM-DRW's `img_max * imb_factor**(c/(K-1))`.
                            (n as f64 * (1.0 / ratio).powf(c as f64 / (k - 1) as f64)).floor()
                                as usize
                        }
                    })
                    .collect()
            }
            Self::Counts { counts } => {
                if counts.len() != k {
                    return Err(DataError::Imbalance(format!(
                        "{} counts given for {k} classes",
                        counts.len()
                    )));
                }
                counts.clone()
            }
        };
        for (c, (&want, &have)) in counts.iter().zip(available).enumerate() {
            if want == 0 {
                return Err(DataError::Imbalance(format!(
                    "class {c} would keep 0 examples under {}; lower R or raise the class size",
                    self.label()
                )));
            }
            if want > have {
                return Err(DataError::Imbalance(format!(
                    "class {c} has {have} examples, {} asks for {want}",
                    self.label()
                )));
            }
        }
        Ok(counts)
    }

    /// Chooses the examples to keep from a split with these labels (`< num_classes`).
    pub fn select(
        &self,
        labels: &[usize],
        num_classes: usize,
        seed: u64,
    ) -> Result<Selection, DataError> {
        let mut by_class = vec![Vec::new(); num_classes];
        for (i, &l) in labels.iter().enumerate() {
            let slot = by_class.get_mut(l).ok_or_else(|| {
                DataError::Imbalance(format!(
                    "label {l} of example {i} is not below {num_classes}"
                ))
            })?;
            slot.push(i);
        }
        let available: Vec<usize> = by_class.iter().map(Vec::len).collect();
        let counts = self.target_counts(&available)?;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut indices = Vec::with_capacity(counts.iter().sum());
        for (mut members, &n) in by_class.into_iter().zip(&counts) {
            members.shuffle(&mut rng);
            indices.extend_from_slice(&members[..n]);
        }
        indices.sort_unstable();
        Ok(Selection {
            indices,
            available,
            counts,
        })
    }
}

/// A plain-text table of per-class counts before and after subsampling.
pub fn count_table(class_names: &[String], available: &[usize], selected: &[usize]) -> String {
    let width = class_names
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!(
        "{:>5}  {:<width$}  {:>9}  {:>8}\n",
        "label", "class", "available", "selected"
    );
    for (c, name) in class_names.iter().enumerate() {
        let _ = writeln!(
            out,
            "{c:>5}  {name:<width$}  {:>9}  {:>8}",
            available.get(c).copied().unwrap_or(0),
            selected.get(c).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(
        out,
        "{:>5}  {:<width$}  {:>9}  {:>8}",
        "",
        "total",
        available.iter().sum::<usize>(),
        selected.iter().sum::<usize>()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn step_on_cifar_sizes_matches_the_paper() {
        // The paper: 5000 per majority class, floor(5000 / R) per minority class 5..9.
        let counts = Imbalance::Step {
            ratio: 100.0,
            n_majority: None,
            minority: None,
        }
        .target_counts(&[5000; 10])
        .unwrap();
        assert_eq!(counts, [5000, 5000, 5000, 5000, 5000, 50, 50, 50, 50, 50]);
    }

    #[test]
    fn long_tail_on_cifar_sizes_matches_ldam() {
        // LDAM-DRW's IMBALANCECIFAR10 with imb_factor 0.01 gives these counts (published in
        // many papers): 5000 2997 1796 1077 645 387 232 139 83 50.
        let counts = Imbalance::LongTail {
            ratio: 100.0,
            n_max: None,
        }
        .target_counts(&[5000; 10])
        .unwrap();
        assert_eq!(counts, [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]);
    }

    #[test]
    fn ratio_below_one_and_empty_classes_are_errors() {
        let low = Imbalance::Step {
            ratio: 0.5,
            n_majority: None,
            minority: None,
        };
        let msg = low.target_counts(&[10; 4]).unwrap_err().to_string();
        assert!(msg.contains("R must be a number >= 1, got 0.5"), "{msg}");
        let empty = Imbalance::Step {
            ratio: 100.0,
            n_majority: Some(50),
            minority: None,
        };
        let msg = empty.target_counts(&[60; 4]).unwrap_err().to_string();
        assert!(msg.contains("class 2 would keep 0 examples"), "{msg}");
        let too_many = Imbalance::Counts {
            counts: vec![5, 70],
        };
        let msg = too_many.target_counts(&[60; 2]).unwrap_err().to_string();
        assert!(msg.contains("class 1 has 60 examples"), "{msg}");
    }

    #[test]
    fn count_table_lists_every_class_and_totals() {
        let names = vec!["cat".to_string(), "dog".to_string()];
        let table = count_table(&names, &[10, 20], &[10, 2]);
        assert!(table.contains("cat") && table.contains("dog"));
        assert!(table.lines().last().unwrap().contains("30") && table.contains("12"));
    }

    fn labels_strategy() -> impl Strategy<Value = (Vec<usize>, usize)> {
        (1usize..8).prop_flat_map(|k| {
            (
                prop::collection::vec(60usize..120, k).prop_map(move |sizes| {
                    let mut labels = Vec::new();
                    for (c, n) in sizes.iter().enumerate() {
                        labels.extend(std::iter::repeat_n(c, *n));
                    }
                    // Interleave the classes deterministically.
                    labels.sort_by_key(|l| (l * 7919) % 13);
                    labels
                }),
                Just(k),
            )
        })
    }

    proptest! {
        #[test]
        fn step_counts_follow_the_formula((labels, k) in labels_strategy(), ratio in 1.0f64..50.0, seed in any::<u64>()) {
            let imb = Imbalance::Step { ratio, n_majority: Some(50), minority: None };
            let sel = imb.select(&labels, k, seed);
            let n_min = (50.0 / ratio).floor() as usize;
            if n_min == 0 {
                prop_assert!(sel.is_err());
            } else {
                let sel = sel.unwrap();
                for c in 0..k {
                    let expected = if c >= k - k / 2 { n_min } else { 50 };
                    prop_assert_eq!(sel.counts[c], expected);
                    prop_assert_eq!(sel.indices.iter().filter(|&&i| labels[i] == c).count(), expected);
                }
                prop_assert!(sel.indices.windows(2).all(|w| w[0] < w[1]));
            }
        }

        #[test]
        fn long_tail_counts_follow_the_formula((labels, k) in labels_strategy(), ratio in 1.0f64..60.0, seed in any::<u64>()) {
            let imb = Imbalance::LongTail { ratio, n_max: Some(60) };
            let sel = imb.select(&labels, k, seed).unwrap();
            for c in 0..k {
                let expected = if k == 1 { 60 } else {
                    (60.0 * (1.0 / ratio).powf(c as f64 / (k - 1) as f64)).floor() as usize
                };
                prop_assert_eq!(sel.counts[c], expected);
                prop_assert_eq!(sel.indices.iter().filter(|&&i| labels[i] == c).count(), expected);
            }
            // Non-increasing in the class index.
            prop_assert!(sel.counts.windows(2).all(|w| w[0] >= w[1]));
        }

        #[test]
        fn same_seed_same_indices((labels, k) in labels_strategy(), seed in any::<u64>()) {
            let imb = Imbalance::Step { ratio: 3.0, n_majority: Some(40), minority: None };
            let a = imb.select(&labels, k, seed).unwrap();
            let b = imb.select(&labels, k, seed).unwrap();
            prop_assert_eq!(&a, &b);
            let c = imb.select(&labels, k, seed.wrapping_add(1)).unwrap();
            prop_assert_eq!(a.counts, c.counts);
        }
    }

    #[test]
    fn every_kind_is_named_as_serde_names_it() {
        let samples = [
            Imbalance::None,
            Imbalance::Step {
                ratio: 2.0,
                n_majority: None,
                minority: None,
            },
            Imbalance::LongTail {
                ratio: 2.0,
                n_max: None,
            },
            Imbalance::Counts { counts: vec![1] },
        ];
        let mut kinds: Vec<ImbalanceKind> = samples.iter().map(Imbalance::kind).collect();
        for imbalance in &samples {
            let value = serde_json::to_value(imbalance).unwrap();
            assert_eq!(value["kind"], imbalance.kind().name(), "{value}");
            assert_eq!(imbalance.kind().name().parse(), Ok(imbalance.kind()));
        }
        kinds.sort_by_key(|k| k.name());
        let mut all = ImbalanceKind::ALL.to_vec();
        all.sort_by_key(|k| k.name());
        assert_eq!(kinds, all, "ALL holds every kind once");
        assert!(
            "zipf"
                .parse::<ImbalanceKind>()
                .unwrap_err()
                .contains("step, long-tail, none, counts")
        );
    }
}
