//! Turning examples into the tensors of a contrastive batch: every example in every view,
//! scaled to `[0, 1]`, normalised per channel.
//!
//! Layout: images `[N * V, C, H, W]` **sample-major** (example 0 view 0, example 0 view 1,
//! example 1 view 0, ...), so a model's `[N * V, d]` output reshapes straight to the
//! `[N, V, d]` that `scl_loss::SupConLoss::forward` takes; labels `[N]`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::data::dataloader::batcher::Batcher;
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::transform::{Transform, apply_all, chain_shape};
use crate::{DataError, ImageItem};

/// A contrastive batch on a device.
#[derive(Clone, Debug)]
pub struct SclBatch {
    /// `[N * V, C, H, W]`, sample-major.
    pub images: Tensor<4>,
    /// `[N]`.
    pub labels: Tensor<1, Int>,
    /// The examples' indices in their dataset, in batch order.
    pub indices: Vec<usize>,
    /// V, the number of views.
    pub views: usize,
}

/// A batch assembled on the host (any thread), ready to become tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct HostBatch {
    /// `N * V * C * H * W` normalised values, sample-major.
    pub images: Vec<f32>,
    /// `[N * V, C, H, W]`.
    pub shape: [usize; 4],
    /// `[N]` labels.
    pub labels: Vec<i64>,
    /// The examples' dataset indices.
    pub indices: Vec<usize>,
    /// V.
    pub views: usize,
}

impl HostBatch {
    /// Moves the batch to `device`.
    pub fn to_device(&self, device: &Device) -> SclBatch {
        let n = self.labels.len();
        SclBatch {
            images: Tensor::from_data(TensorData::new(self.images.clone(), self.shape), device),
            labels: Tensor::from_data(TensorData::new(self.labels.clone(), [n]), device),
            indices: self.indices.clone(),
            views: self.views,
        }
    }
}

/// Builds contrastive batches: applies each view's transforms and normalises.
///
/// Random transforms draw from a generator seeded by (seed, epoch, example index, view), so
/// a batch does not depend on which thread builds it or in what order; call
/// [`SclBatcher::set_epoch`] at the start of each epoch for fresh augmentations.
#[derive(Clone, Debug)]
pub struct SclBatcher {
    views: Vec<Vec<Transform>>,
    input_shape: [usize; 3],
    output_shape: [usize; 3],
    max_value: f32,
    mean: Vec<f32>,
    std: Vec<f32>,
    seed: u64,
    epoch: Arc<AtomicU64>,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64 finaliser.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl SclBatcher {
    /// A batcher for images of `input_shape` with pixel values up to `max_value`.
    ///
    /// # Errors
    /// [`DataError::Transform`] when there is no view, the views end in different shapes, a
    /// transform does not fit, or `mean`/`std` do not have one positive value per channel.
    pub fn new(
        views: Vec<Vec<Transform>>,
        input_shape: [usize; 3],
        max_value: u8,
        mean: Vec<f32>,
        std: Vec<f32>,
        seed: u64,
    ) -> Result<Self, DataError> {
        if views.is_empty() {
            return Err(DataError::Transform("at least one view is needed".into()));
        }
        let shapes = views
            .iter()
            .map(|v| chain_shape(v, input_shape))
            .collect::<Result<Vec<_>, _>>()?;
        if shapes.iter().any(|s| *s != shapes[0]) {
            return Err(DataError::Transform(format!(
                "the views produce different image shapes: {shapes:?}"
            )));
        }
        let c = input_shape[0];
        if mean.len() != c || std.len() != c || std.iter().any(|s| *s <= 0.0) {
            return Err(DataError::Transform(format!(
                "normalisation needs {c} mean and {c} positive std values, got {mean:?} and {std:?}"
            )));
        }
        if max_value == 0 {
            return Err(DataError::Transform("max_value must be positive".into()));
        }
        Ok(Self {
            output_shape: shapes[0],
            views,
            input_shape,
            max_value: f32::from(max_value),
            mean,
            std,
            seed,
            epoch: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Sets the epoch that seeds the random transforms (shared by clones of this batcher).
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Relaxed);
    }

    /// `[C, H, W]` of the images it produces.
    pub fn output_shape(&self) -> [usize; 3] {
        self.output_shape
    }

    /// Number of views.
    pub fn num_views(&self) -> usize {
        self.views.len()
    }

    /// Assembles a batch on the host with the given epoch's augmentations.
    ///
    /// # Panics
    /// When an item's pixels do not have the batcher's input shape.
    pub fn assemble(&self, items: &[ImageItem], epoch: u64) -> HostBatch {
        let [c, h, w] = self.output_shape;
        let per = c * h * w;
        let v = self.views.len();
        let expected = self.input_shape.iter().product::<usize>();
        let mut images = Vec::with_capacity(items.len() * v * per);
        for item in items {
            assert_eq!(
                item.pixels.len(),
                expected,
                "example {} has {} bytes, the batcher expects {:?}",
                item.index,
                item.pixels.len(),
                self.input_shape
            );
            for (vi, transforms) in self.views.iter().enumerate() {
                let key = mix(mix(mix(self.seed) ^ epoch) ^ item.index as u64) ^ vi as u64;
                let mut rng = StdRng::seed_from_u64(mix(key));
                let (img, _) = apply_all(transforms, &item.pixels, self.input_shape, &mut rng);
                for (ch, plane) in img.chunks_exact(h * w).enumerate() {
                    let (m, s) = (self.mean[ch], self.std[ch]);
                    images.extend(
                        plane
                            .iter()
                            .map(|&p| (f32::from(p) / self.max_value - m) / s),
                    );
                }
            }
        }
        HostBatch {
            images,
            shape: [items.len() * v, c, h, w],
            labels: items.iter().map(|i| i.label as i64).collect(),
            indices: items.iter().map(|i| i.index).collect(),
            views: v,
        }
    }
}

impl Batcher<ImageItem, SclBatch> for SclBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &Device) -> SclBatch {
        self.assemble(&items, self.epoch.load(Ordering::Relaxed))
            .to_device(device)
    }
}
