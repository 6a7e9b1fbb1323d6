//! Supervised contrastive (SupCon) loss for Burn, on whatever device the features live on.
//!
//! The loss follows the semantics of the de-facto reference, `SupConLoss` of
//! HobbitLong/SupContrast (Khosla et al., 2020), so numbers can be compared with PyTorch code:
//!
//! - features `[batch, views, dim]`; the views are concatenated *view-major*
//!   (`[view 0 of every sample, view 1 of every sample, ..]`), as `torch.cat(torch.unbind(f, 1))`;
//! - labels `[batch]`, or none for SimCLR (the positives of an anchor are then its other views);
//! - `contrast_mode`: every view is an anchor ([`ContrastMode::All`]) or only view 0
//!   ([`ContrastMode::One`]); the contrast set is always every view of every sample;
//! - self-pairs are excluded from the numerator and the denominator; positives stay in the
//!   denominator (the `L_out` form);
//! - per anchor, the mean over its positives of `-log softmax`, scaled by
//!   `temperature / base_temperature`; the reduced loss is the mean over anchors.
//!
//! What this crate adds: optional L2 normalisation inside the loss, a log-sum-exp that is
//! taken over the non-self entries only (so temperatures of 0.005 and logits of 1e6 stay
//! finite), and an explicit [`NoPositivePolicy`] for anchors that have no positive; fused
//! kernels behind the backend extension [`SupConBackend`] ([`fused`]) on Burn's Flex backend
//! and, with the cargo feature `wgpu` or `cuda`, on Burn's CubeCL backends; the checks every
//! fused path passes, public so that other devices can run them ([`check`]); and a peak-heap
//! meter ([`memory`]).
//!
//! # Example
//!
//! ```
//! use burn::tensor::{Device, Int, Tensor};
//! use scl_loss::SupConLossConfig;
//!
//! let device = Device::flex().autodiff();
//! // Four samples, two views each, embedding dimension 3.
//! let features = Tensor::<3>::random(
//!     [4, 2, 3],
//!     burn::tensor::Distribution::Normal(0.0, 1.0),
//!     &device,
//! )
//! .require_grad();
//! let labels = Tensor::<1, Int>::from_ints([0, 0, 1, 1], &device);
//! let loss = SupConLossConfig::new()
//!     .with_temperature(0.1)
//!     .with_normalize(true)
//!     .init()
//!     .forward(features.clone(), Some(labels));
//! let grads = loss.backward();
//! assert!(features.grad(&grads).is_some());
//! ```
#![warn(missing_docs)]

pub mod check;
pub mod fused;
pub mod memory;
mod reference;

pub use fused::{SupConBackend, has_kernel, supcon_fused, supcon_fused_composed};
pub use reference::supcon_reference;

use burn::config::Config;
use burn::tensor::{Device, Int, Tensor};

/// Which implementation computes the loss.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Implementation {
    /// The fused path where the features' device has a kernel ([`has_kernel`]), else the
    /// reference.
    Auto,
    /// Plain tensor ops with the `[anchors, contrast]` logits in memory
    /// ([`supcon_reference`]).
    Reference,
    /// The fused path ([`supcon_fused`]); on a device without a kernel its log-sum-exp is
    /// the reference's (the same values, with the logits in memory).
    Fused,
}

/// Which views act as anchors.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum ContrastMode {
    /// Every view of every sample is an anchor (SupContrast's `'all'`).
    All,
    /// Only view 0 of every sample is an anchor (SupContrast's `'one'`).
    One,
}

/// What to do with an anchor that has no positive in the batch.
///
/// Such anchors appear when a class has a single sample and a single view, or in SimCLR mode
/// with one view. Their loss term is undefined (a mean over an empty set).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum NoPositivePolicy {
    /// The anchor contributes 0 and still counts in the mean over anchors, as SupContrast
    /// does since it clamps the number of positives to 1.
    CountAsZero,
    /// The anchor is left out of the mean: the loss is averaged over anchors that have at
    /// least one positive (0 when there is none).
    Exclude,
}

/// Why a [`SupConLossConfig`] is not valid.
#[derive(Debug, Clone, PartialEq)]
pub enum SupConConfigError {
    /// `temperature` is not a finite number above 0.
    Temperature(f64),
    /// `base_temperature` is not a finite number above 0.
    BaseTemperature(f64),
}

impl std::fmt::Display for SupConConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Temperature(t) => write!(
                f,
                "temperature = {t} is not allowed: it must be a finite number above 0"
            ),
            Self::BaseTemperature(t) => write!(
                f,
                "base_temperature = {t} is not allowed: it must be a finite number above 0"
            ),
        }
    }
}

impl std::error::Error for SupConConfigError {}

/// Configuration of the supervised contrastive loss.
#[derive(Config, Debug)]
pub struct SupConLossConfig {
    /// Softmax temperature `tau` dividing the similarities.
    /// 0.07: SupContrast's default (the paper under reproduction uses 0.1).
    #[config(default = 0.07)]
    pub temperature: f64,
    /// The loss is multiplied by `temperature / base_temperature`.
    /// 0.07: SupContrast's default; set it equal to `temperature` for the unscaled loss.
    #[config(default = 0.07)]
    pub base_temperature: f64,
    /// Which views are anchors. `All`: SupContrast's default.
    #[config(default = "ContrastMode::All")]
    pub contrast_mode: ContrastMode,
    /// L2-normalise the features along `dim` inside the loss.
    /// false: SupContrast expects the model to normalise.
    #[config(default = false)]
    pub normalize: bool,
    /// Anchors without positives. `CountAsZero`: what SupContrast does.
    #[config(default = "NoPositivePolicy::CountAsZero")]
    pub no_positive: NoPositivePolicy,
    /// Which implementation computes the loss. `Auto`: fused where the backend has a kernel.
    #[config(default = "Implementation::Auto")]
    pub implementation: Implementation,
}

impl SupConLossConfig {
    /// Checks the configuration and builds the loss.
    ///
    /// # Errors
    /// When a temperature is not a finite positive number.
    pub fn try_init(&self) -> Result<SupConLoss, SupConConfigError> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(SupConConfigError::Temperature(self.temperature));
        }
        if !(self.base_temperature.is_finite() && self.base_temperature > 0.0) {
            return Err(SupConConfigError::BaseTemperature(self.base_temperature));
        }
        Ok(SupConLoss {
            temperature: self.temperature,
            base_temperature: self.base_temperature,
            contrast_mode: self.contrast_mode,
            normalize: self.normalize,
            no_positive: self.no_positive,
            implementation: self.implementation,
        })
    }

    /// Builds the loss.
    ///
    /// # Panics
    /// When the configuration is invalid; see [`SupConLossConfig::try_init`].
    pub fn init(&self) -> SupConLoss {
        self.try_init().unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The supervised contrastive loss. Build it with [`SupConLossConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct SupConLoss {
    /// Softmax temperature.
    pub temperature: f64,
    /// The loss is scaled by `temperature / base_temperature`.
    pub base_temperature: f64,
    /// Which views are anchors.
    pub contrast_mode: ContrastMode,
    /// L2-normalise the features inside the loss.
    pub normalize: bool,
    /// Anchors without positives.
    pub no_positive: NoPositivePolicy,
    /// Which implementation computes the loss.
    pub implementation: Implementation,
}

/// Per-anchor losses and which anchors have a positive.
#[derive(Debug, Clone)]
pub struct SupConTerms {
    /// Loss of every anchor, `[anchors]`, view-major; 0 for anchors without positives.
    pub loss: Tensor<1>,
    /// 1 where the anchor has at least one positive, else 0, `[anchors]`.
    pub has_positive: Tensor<1>,
}

impl SupConLoss {
    /// The loss reduced to a scalar: the mean over anchors, following [`NoPositivePolicy`].
    ///
    /// # Shapes
    /// - `features`: `[batch, views, dim]`
    /// - `labels`: `[batch]` (`None`: SimCLR, every sample its own class)
    /// - output: `[1]`
    ///
    /// # Panics
    /// When `labels` does not have `batch` entries.
    pub fn forward(&self, features: Tensor<3>, labels: Option<Tensor<1, Int>>) -> Tensor<1> {
        self.reduce(self.terms(features, labels))
    }

    /// Reduces per-anchor terms to the loss, a scalar `[1]`: the mean over anchors, following
    /// [`NoPositivePolicy`]. [`SupConLoss::forward`] is `reduce(terms(..))`.
    pub fn reduce(&self, terms: SupConTerms) -> Tensor<1> {
        match self.no_positive {
            NoPositivePolicy::CountAsZero => terms.loss.mean(),
            NoPositivePolicy::Exclude => {
                // The count carries no gradient; its reciprocal is exact (see `exact_recip`).
                let count = terms.has_positive.sum().clamp_min(1.0);
                terms.loss.sum() * exact_recip(count)
            }
        }
    }

    /// The loss of every anchor, view-major (`[view 0 anchors, view 1 anchors, ..]`); anchors
    /// without positives get 0 whatever the policy.
    ///
    /// # Shapes
    /// - `features`: `[batch, views, dim]`
    /// - `labels`: `[batch]`
    /// - output: `[batch * anchor_views]`, `anchor_views` = `views` for `All`, 1 for `One`.
    ///
    /// # Panics
    /// When `labels` does not have `batch` entries.
    pub fn forward_no_reduction(
        &self,
        features: Tensor<3>,
        labels: Option<Tensor<1, Int>>,
    ) -> Tensor<1> {
        self.terms(features, labels).loss
    }

    /// Per-anchor losses together with the mask of anchors that have a positive.
    ///
    /// # Panics
    /// When `labels` does not have `batch` entries.
    pub fn terms(&self, features: Tensor<3>, labels: Option<Tensor<1, Int>>) -> SupConTerms {
        if self.uses_fused(&features.device()) {
            supcon_fused(features, labels, self)
        } else {
            supcon_reference(features, labels, self)
        }
    }

    /// Whether this loss takes the fused path for features on `device`.
    pub fn uses_fused(&self, device: &Device) -> bool {
        match self.implementation {
            Implementation::Auto => has_kernel(device),
            Implementation::Reference => false,
            Implementation::Fused => true,
        }
    }
}

/// L2-normalises along the last dimension; rows of norm below `1e-12` are divided by
/// `1e-12` instead (as `torch.nn.functional.normalize` does), so zero rows stay zero.
///
/// Written as `x * (1 / norm)` with the reciprocal taken by a division of constants, not as
/// `x / norm`: Burn's autodiff differentiates `a / b` with respect to `a` through the
/// backend's `float_recip(b)`, which a backend may compute with the processor's approximate
/// reciprocal (`vrcpps`: 12 correct bits with AVX2, 14 with AVX-512; Burn's older ndarray
/// backend did, putting errors of up to 5e-4 of the largest entry into the gradient of every
/// loss that normalises). Here every backward step is a product, a sum, a square root or an
/// exact division.
pub fn l2_normalize<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let norm = x
        .clone()
        .powi_scalar(2)
        .sum_dim(D - 1)
        .sqrt()
        .clamp_min(1e-12);
    x * exact_recip(norm)
}

/// `1 / x` elementwise, as a division whose gradient (with respect to `x`) is the exact
/// `-1 / x^2` on every backend: `ones / x` differentiates the divisor with a true division.
/// See [`l2_normalize`] for why `Tensor::recip` and `a / x` are avoided.
pub(crate) fn exact_recip<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.ones_like().div(x)
}

// The test support files shared with other crates' tests name this crate `scl_loss`.
#[cfg(test)]
extern crate self as scl_loss;
#[cfg(test)]
mod tests;
