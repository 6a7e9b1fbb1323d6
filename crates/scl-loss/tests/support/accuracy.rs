//! The f32 accuracy suite: SupCon cases whose loss and gradient, computed in f32 by an
//! implementation, must match the plain-f64 evaluation of the same f32 inputs
//! ([`super::exact`]) within [`TOLERANCE`]. Shared by the CPU unit tests (reference and the
//! fused kernel on every instruction set) and the wgpu tests of the workspace. Include it
//! beside `exact.rs` (as the sibling module `exact`); it names the crate `scl_loss`.
//!
//! The criterion, with `L` and `g` the f64 loss and gradient:
//!
//! ```text
//! |loss32 - L| <= 1e-5 * max(1, |L|),    max_k |grad32_k - g_k| <= 1e-5 * max(1e-3, max_k |g_k|)
//! ```

use super::exact::{Spec, loss_and_grad};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::{Rng, SeedableRng, rngs::StdRng};
use scl_loss::{ContrastMode, Implementation, NoPositivePolicy, SupConLoss, SupConLossConfig};

/// The tolerance of [`Case::check`], relative as in the module documentation.
pub const TOLERANCE: f64 = 1e-5;

/// One input of the suite.
#[derive(Debug, Clone)]
pub struct Case {
    /// What the case covers, for messages.
    pub name: String,
    /// `[batch, views, dim]`.
    pub shape: [usize; 3],
    /// Labels, or `None` (SimCLR).
    pub labels: Option<Vec<i64>>,
    /// The features, `shape` row-major.
    pub features: Vec<f32>,
    /// The loss options.
    pub spec: Spec,
}

impl Case {
    /// The f64 loss and gradient of this case's (f32) features.
    pub fn exact(&self) -> (f64, Vec<f64>) {
        let x: Vec<f64> = self.features.iter().map(|&v| f64::from(v)).collect();
        loss_and_grad(&x, self.shape, self.labels.as_deref(), self.spec)
    }

    /// The loss of this case's options, computed by `implementation`.
    pub fn loss(&self, implementation: Implementation) -> SupConLoss {
        SupConLossConfig::new()
            .with_temperature(self.spec.temperature)
            .with_base_temperature(self.spec.base_temperature)
            .with_contrast_mode(if self.spec.all_views_anchor {
                ContrastMode::All
            } else {
                ContrastMode::One
            })
            .with_no_positive(if self.spec.exclude {
                NoPositivePolicy::Exclude
            } else {
                NoPositivePolicy::CountAsZero
            })
            .with_normalize(self.spec.normalize)
            .with_implementation(implementation)
            .init()
    }

    /// Loss and feature gradient in f32 on the autodiff `device`, through the public API.
    pub fn run(&self, device: &Device, implementation: Implementation) -> (f64, Vec<f64>) {
        self.run_with(device, implementation, |loss, f, labels| {
            loss.forward(f, labels)
        })
    }

    /// [`Case::run`] with the loss computed by `compute` from the loss options, the features
    /// and the labels (e.g. `loss.reduce(supcon_fused_composed(..))`).
    pub fn run_with(
        &self,
        device: &Device,
        implementation: Implementation,
        compute: impl Fn(&SupConLoss, Tensor<3>, Option<Tensor<1, Int>>) -> Tensor<1>,
    ) -> (f64, Vec<f64>) {
        let f = Tensor::<3>::from_data(TensorData::new(self.features.clone(), self.shape), device)
            .require_grad();
        let labels = self
            .labels
            .as_ref()
            .map(|l| Tensor::<1, Int>::from_data(TensorData::new(l.clone(), [l.len()]), device));
        let out = compute(&self.loss(implementation), f.clone(), labels);
        let host = |t: Tensor<3>| t.try_into_vec_as::<f64>().unwrap_or_default();
        // A loss without any pair is a constant 0: no graph, no gradient.
        let grad = if out.is_tracked() {
            let grads = out.backward();
            f.grad(&grads).map(host)
        } else {
            None
        };
        let grad = grad.unwrap_or_else(|| vec![0.0; self.features.len()]);
        (out.try_into_vec_as::<f64>().unwrap_or_default()[0], grad)
    }

    /// `(loss deviation, gradient deviation)`, relative as in the module documentation, when
    /// both are within [`TOLERANCE`]; else a sentence naming the case and `who`.
    pub fn check(
        &self,
        who: &str,
        exact: &(f64, Vec<f64>),
        loss: f64,
        grad: &[f64],
    ) -> Result<(f64, f64), String> {
        let deviations = deviations(exact, loss, grad);
        match deviations {
            Some((l, g)) if l <= TOLERANCE && g <= TOLERANCE => Ok((l, g)),
            _ => Err(format!(
                "{who} on {}: loss {loss} vs f64 {}, deviations (loss, gradient) {deviations:?} \
                 beyond {TOLERANCE}",
                self.name, exact.0
            )),
        }
    }
}

/// The relative deviations of the module documentation; `None` when a value is not finite
/// or the gradient has the wrong length.
pub fn deviations(exact: &(f64, Vec<f64>), loss: f64, grad: &[f64]) -> Option<(f64, f64)> {
    let (want, want_grad) = exact;
    if !loss.is_finite() || grad.len() != want_grad.len() {
        return None;
    }
    let loss_dev = (loss - want).abs() / want.abs().max(1.0);
    let scale = want_grad
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(1e-3);
    let mut grad_dev = 0.0f64;
    for (a, b) in grad.iter().zip(want_grad) {
        let d = (a - b).abs() / scale;
        if !d.is_finite() {
            return None;
        }
        grad_dev = grad_dev.max(d);
    }
    Some((loss_dev, grad_dev))
}

/// Labels over 4 classes, 5:1:1:1 (class 0 the majority).
fn imbalanced(n: usize) -> Vec<i64> {
    (0..n)
        .map(|i| if i % 7 < 5 { 0 } else { 1 + (i % 3) as i64 })
        .collect()
}

/// Half the samples in classes of two, the other half each its own class (a singleton).
fn with_singletons(n: usize) -> Vec<i64> {
    (0..n as i64)
        .map(|i| if i < n as i64 / 2 { i / 2 } else { i })
        .collect()
}

/// `classes` classes of (nearly) equal size, in turn.
fn balanced(n: usize, classes: i64) -> Vec<i64> {
    (0..n as i64).map(|i| i % classes).collect()
}

/// How the features of a case are drawn.
#[derive(Clone, Copy)]
enum Draw {
    /// Uniform in `[-1, 1)`.
    Uniform,
    /// Uniform directions of norm `r`.
    Sphere(f32),
    /// Near an orthogonal frame: class `c`'s samples at `e_c` (coordinate `c mod dim`) plus
    /// uniform noise of size `eps`, normalised (a UFM+ optimum, where the gradient is a small
    /// difference of large terms).
    NearFrame(f32),
}

fn draw(shape: [usize; 3], labels: Option<&[i64]>, how: Draw, seed: u64) -> Vec<f32> {
    let [batch, views, dim] = shape;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut x: Vec<f32> = (0..batch * views * dim)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    for (r, row) in x.chunks_mut(dim).enumerate() {
        match how {
            Draw::Uniform => {}
            Draw::Sphere(radius) => {
                let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                row.iter_mut().for_each(|v| *v *= radius / norm);
            }
            Draw::NearFrame(eps) => {
                let sample = r / views;
                let class = labels.map_or(sample as i64, |l| l[sample]);
                row.iter_mut().for_each(|v| *v *= eps);
                row[class as usize % dim] += 1.0;
                let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                row.iter_mut().for_each(|v| *v /= norm);
            }
        }
    }
    x
}

/// The suite. `max_n` leaves out cases with more samples (a slow backend runs a subset).
pub fn cases(max_n: usize) -> Vec<Case> {
    let spec = |temperature: f64, normalize: bool| Spec {
        temperature,
        base_temperature: 0.07,
        all_views_anchor: true,
        normalize,
        exclude: false,
    };
    let mut out = Vec::new();
    let mut add =
        |name: &str, shape: [usize; 3], labels: Option<Vec<i64>>, how: Draw, spec: Spec| {
            if shape[0] > max_n {
                return;
            }
            let seed = 1000 + out.len() as u64;
            let features = draw(shape, labels.as_deref(), how, seed);
            out.push(Case {
                name: format!(
                    "{name} {shape:?} tau={} normalize={} all-views={} exclude={}",
                    spec.temperature, spec.normalize, spec.all_views_anchor, spec.exclude
                ),
                shape,
                labels,
                features,
                spec,
            });
        };
    let u = Draw::Uniform;
    // L2 normalisation inside the loss.
    add(
        "tiny",
        [4, 1, 3],
        Some(vec![0, 0, 1, 1]),
        u,
        spec(1.0, true),
    );
    add(
        "singletons",
        [257, 1, 3],
        Some(with_singletons(257)),
        u,
        spec(0.05, true),
    );
    add(
        "imbalanced",
        [257, 1, 8],
        Some(imbalanced(257)),
        u,
        spec(0.1, true),
    );
    add(
        "sharp",
        [32, 1, 8],
        Some(balanced(32, 4)),
        u,
        spec(0.005, true),
    );
    add(
        "imbalanced",
        [64, 1, 128],
        Some(imbalanced(64)),
        u,
        spec(0.1, true),
    );
    add(
        "sharp imbalanced",
        [257, 1, 3],
        Some(imbalanced(257)),
        u,
        spec(0.005, true),
    );
    add(
        "two views",
        [200, 2, 64],
        Some(balanced(200, 10)),
        u,
        spec(0.1, true),
    );
    add(
        "large",
        [1031, 2, 16],
        Some(imbalanced(1031)),
        u,
        spec(0.1, true),
    );
    add(
        "large sharp",
        [1031, 1, 128],
        Some(imbalanced(1031)),
        u,
        spec(0.005, true),
    );
    add(
        "near the OF",
        [120, 2, 16],
        Some(balanced(120, 10)),
        Draw::NearFrame(0.05),
        spec(0.1, true),
    );
    add(
        "near the OF",
        [90, 2, 8],
        Some(imbalanced(90)),
        Draw::NearFrame(0.01),
        spec(1.0, true),
    );
    // Raw features (the model normalises, or does not).
    add(
        "raw",
        [64, 1, 128],
        Some(imbalanced(64)),
        u,
        spec(1.0, false),
    );
    add(
        "raw three views",
        [16, 3, 16],
        Some(balanced(16, 3)),
        u,
        spec(0.5, false),
    );
    add(
        "unit rows",
        [128, 2, 32],
        Some(balanced(128, 8)),
        Draw::Sphere(1.0),
        spec(0.07, false),
    );
    add(
        "raw sharp",
        [31, 2, 8],
        Some(imbalanced(31)),
        Draw::Sphere(1.0),
        spec(0.005, false),
    );
    // Extreme logits: norms of 100 at tau = 0.005 give logits up to 2e6.
    add(
        "extreme logits",
        [6, 2, 4],
        Some(vec![0, 0, 1, 1, 2, 0]),
        Draw::Sphere(100.0),
        spec(0.005, false),
    );
    add(
        "extreme logits",
        [40, 1, 16],
        Some(imbalanced(40)),
        Draw::Sphere(30.0),
        spec(0.01, false),
    );
    // Contrast mode one, SimCLR, the exclude policy.
    let one = |t, n| Spec {
        all_views_anchor: false,
        ..spec(t, n)
    };
    add(
        "mode one",
        [100, 2, 16],
        Some(imbalanced(100)),
        u,
        one(0.1, true),
    );
    add(
        "mode one three views",
        [33, 3, 8],
        Some(with_singletons(33)),
        u,
        one(0.5, false),
    );
    add("SimCLR", [50, 2, 32], None, u, spec(0.2, true));
    add("SimCLR mode one", [50, 3, 8], None, u, one(0.05, true));
    let exclude = |t, n| Spec {
        exclude: true,
        ..spec(t, n)
    };
    add(
        "exclude singletons",
        [40, 1, 4],
        Some(with_singletons(40)),
        u,
        exclude(0.1, true),
    );
    add(
        "exclude three views",
        [21, 3, 8],
        Some(with_singletons(21)),
        u,
        exclude(0.3, false),
    );
    out
}

/// One implementation under test: its name and what it computes for a case (loss, gradient).
pub type Path<'a> = (&'a str, &'a dyn Fn(&Case) -> (f64, Vec<f64>));

/// Runs every case of [`cases`]`(max_n)` through every `(name, path)` and prints one row per
/// case with each path's deviations; returns the sentences of the failures.
pub fn run_suite(max_n: usize, paths: &[Path<'_>]) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases(max_n) {
        let start = std::time::Instant::now();
        let exact = case.exact();
        let mut row = format!("{:<78}", case.name);
        for (who, path) in paths {
            let (loss, grad) = path(&case);
            let shown = deviations(&exact, loss, &grad)
                .map_or("non-finite".into(), |(l, g)| format!("{l:.1e}/{g:.1e}"));
            row += &format!(" {who}={shown}");
            if let Err(e) = case.check(who, &exact, loss, &grad) {
                failures.push(e);
            }
        }
        eprintln!("{row} ({:.1} s)", start.elapsed().as_secs_f64());
    }
    failures
}
