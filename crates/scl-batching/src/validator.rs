//! The batch conditions of Corollary 2.1 (Kini et al.), checked on a concrete schedule.
//!
//! The graph has one node per sample and an edge between two samples that share a batch.
//! Checked and reported separately:
//!
//! - (a) for every class, its samples are connected through *same-class* edges;
//! - (b) every pair of classes shares at least one batch;
//! - samples that never share a batch with another member of their class;
//! - whether the whole co-occurrence graph is connected (the reviewers' condition 2);
//! - whether every batch contains every class (the reviewers' condition 1).
//!
//! [`Verdict::accepted`] is (a) and (b): the conditions under which, by the paper's argument,
//! the minimisers of mini-batch SCL with non-negative features must be the orthogonal frame.
//!
//! What the tests show against optimisation (`tests/e2e/validator_vs_optimisation.rs`: six
//! samples, two classes, d = 8, mini-batch UFM+ from five random starts): with (a) and (b)
//! every start reaches the OF (final OF distance 0.0000), also when some batches lack a class
//! (0.0009-0.0027), so "every batch contains every class" is *not necessary*; with (b) broken
//! every start ends 0.70-0.75 away and with (a) broken four of five starts end 0.09-0.15 away,
//! so on these examples each of (a) and (b) is *necessary*, and together they were
//! *sufficient*. These are examples, not proofs; the mini-batch experiment
//! (`experiments/ufm-batching.toml`) checks the same at larger scale.

use serde::{Deserialize, Serialize};

/// What the validator found. See the module documentation for the conditions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Classes whose samples are *not* connected through same-class edges (condition a).
    pub disconnected_classes: Vec<usize>,
    /// Pairs of classes that never share a batch (condition b).
    pub separated_class_pairs: Vec<(usize, usize)>,
    /// Samples that never share a batch with another member of their class.
    pub lonely_samples: Vec<usize>,
    /// Samples that appear in no batch at all.
    pub unseen_samples: Vec<usize>,
    /// Whether the whole co-occurrence graph is connected.
    pub graph_connected: bool,
    /// Whether every batch contains every class.
    pub every_batch_has_every_class: bool,
}

impl Verdict {
    /// Conditions (a) and (b) both hold.
    pub fn accepted(&self) -> bool {
        self.disconnected_classes.is_empty() && self.separated_class_pairs.is_empty()
    }

    /// One sentence per failed condition; empty when accepted.
    pub fn reasons(&self) -> Vec<String> {
        let mut r = Vec::new();
        if !self.disconnected_classes.is_empty() {
            r.push(format!(
                "condition (a) fails: the samples of classes {:?} are not connected through \
                 batches shared with their own class",
                self.disconnected_classes
            ));
        }
        if !self.separated_class_pairs.is_empty() {
            r.push(format!(
                "condition (b) fails: the class pairs {:?} never share a batch",
                self.separated_class_pairs
            ));
        }
        r
    }
}

struct UnionFind {
    parent: Vec<usize>,
}

impl UnionFind {
    fn new(n: usize) -> Self {
        Self {
            parent: (0..n).collect(),
        }
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[ra] = rb;
        }
    }
}

/// Checks the batches (of one epoch, or of several epochs concatenated) against `labels`.
///
/// # Panics
/// When a batch holds an index outside `labels` or a label is not below `num_classes`.
pub fn validate(labels: &[usize], num_classes: usize, batches: &[Vec<usize>]) -> Verdict {
    let n = labels.len();
    let mut same_class = UnionFind::new(n);
    let mut everything = UnionFind::new(n);
    let mut seen = vec![false; n];
    let mut has_mate = vec![false; n];
    let mut pair_met = vec![false; num_classes * num_classes];
    let mut every_batch_has_every_class = true;
    for batch in batches {
        let mut first_of_class: Vec<Option<usize>> = vec![None; num_classes];
        for &i in batch {
            assert!(i < n, "batch index {i} is outside the {n} samples");
            let c = labels[i];
            assert!(c < num_classes, "label {c} is not below {num_classes}");
            seen[i] = true;
            match first_of_class[c] {
                None => first_of_class[c] = Some(i),
                Some(j) if j != i => {
                    same_class.union(i, j);
                    has_mate[i] = true;
                    has_mate[j] = true;
                }
                Some(_) => {}
            }
            if let Some(&first) = batch.first() {
                everything.union(first, i);
            }
        }
        let present: Vec<usize> = (0..num_classes)
            .filter(|&c| first_of_class[c].is_some())
            .collect();
        if present.len() < num_classes {
            every_batch_has_every_class = false;
        }
        for &a in &present {
            for &b in &present {
                pair_met[a * num_classes + b] = true;
            }
        }
    }
    let mut class_size = vec![0usize; num_classes];
    for &c in labels {
        class_size[c] += 1;
    }
    let mut disconnected_classes = Vec::new();
    for c in 0..num_classes {
        let members: Vec<usize> = (0..n).filter(|&i| labels[i] == c).collect();
        if let Some((&first, rest)) = members.split_first() {
            let root = same_class.find(first);
            if rest.iter().any(|&i| same_class.find(i) != root) {
                disconnected_classes.push(c);
            }
        }
    }
    let mut separated_class_pairs = Vec::new();
    for a in 0..num_classes {
        for b in a + 1..num_classes {
            if class_size[a] > 0 && class_size[b] > 0 && !pair_met[a * num_classes + b] {
                separated_class_pairs.push((a, b));
            }
        }
    }
    let lonely_samples = (0..n)
        .filter(|&i| !has_mate[i] && class_size[labels[i]] > 1)
        .collect();
    let unseen_samples = (0..n).filter(|&i| !seen[i]).collect();
    let graph_connected = n == 0 || {
        let root = everything.find(0);
        (1..n).all(|i| everything.find(i) == root)
    };
    Verdict {
        disconnected_classes,
        separated_class_pairs,
        lonely_samples,
        unseen_samples,
        graph_connected,
        every_batch_has_every_class,
    }
}
