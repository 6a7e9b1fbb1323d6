//! Per-image transforms on `CxHxW` bytes, each a configurable step, and the views of a
//! contrastive batch built from them.
//!
//! Randomness is explicit: a transform draws from the generator it is given, and the batcher
//! derives that generator from (seed, epoch, example index, view), so a batch is the same
//! whichever worker thread builds it.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::{DataError, Manifest};

/// One step applied to an image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Transform {
    /// Pads every side with `padding` zeros (torchvision `Pad`).
    Pad {
        /// Pixels added on each side.
        padding: usize,
    },
    /// Pads every side with `padding` zeros, then crops a `size x size` window at a uniformly
    /// random position (torchvision `RandomCrop(size, padding)`).
    RandomCrop {
        /// Side of the crop.
        size: usize,
        /// Zero padding added on each side before cropping.
        padding: usize,
    },
    /// Mirrors left-right with probability `p`.
    HorizontalFlip {
        /// Probability of flipping.
        p: f64,
    },
    /// Mirrors top-bottom with probability `p` (`p = 1`: the paper's second view without
    /// augmentation).
    VerticalFlip {
        /// Probability of flipping.
        p: f64,
    },
}

impl Transform {
    /// The shape of the output for an input of `shape`.
    ///
    /// # Errors
    /// [`DataError::Transform`] when a crop is larger than the padded image or a probability
    /// is outside `[0, 1]`.
    pub fn output_shape(&self, shape: [usize; 3]) -> Result<[usize; 3], DataError> {
        let [c, h, w] = shape;
        match *self {
            Self::Pad { padding } => Ok([c, h + 2 * padding, w + 2 * padding]),
            Self::RandomCrop { size, padding } => {
                if size == 0 || size > h + 2 * padding || size > w + 2 * padding {
                    return Err(DataError::Transform(format!(
                        "random-crop size {size} does not fit a {h}x{w} image padded by {padding}"
                    )));
                }
                Ok([c, size, size])
            }
            Self::HorizontalFlip { p } | Self::VerticalFlip { p } => {
                if !(0.0..=1.0).contains(&p) {
                    return Err(DataError::Transform(format!(
                        "flip probability must be in [0, 1], got {p}"
                    )));
                }
                Ok(shape)
            }
        }
    }

    /// Applies the transform to `img` (`CxHxW` bytes of `shape`); returns the new image and
    /// its shape. Call [`Transform::output_shape`] first to validate the parameters.
    pub fn apply(
        &self,
        img: &[u8],
        shape: [usize; 3],
        rng: &mut impl Rng,
    ) -> (Vec<u8>, [usize; 3]) {
        let [c, h, w] = shape;
        match *self {
            Self::Pad { padding } => (
                crop_padded(img, shape, padding, 0, 0, h + 2 * padding, w + 2 * padding),
                [c, h + 2 * padding, w + 2 * padding],
            ),
            Self::RandomCrop { size, padding } => {
                let top = rng.random_range(0..=h + 2 * padding - size);
                let left = rng.random_range(0..=w + 2 * padding - size);
                (
                    crop_padded(img, shape, padding, top, left, size, size),
                    [c, size, size],
                )
            }
            Self::HorizontalFlip { p } => {
                if rng.random_bool(p) {
                    let mut out = img.to_vec();
                    for row in out.chunks_exact_mut(w) {
                        row.reverse();
                    }
                    (out, shape)
                } else {
                    (img.to_vec(), shape)
                }
            }
            Self::VerticalFlip { p } => {
                if rng.random_bool(p) {
                    let mut out = Vec::with_capacity(img.len());
                    for plane in img.chunks_exact(h * w) {
                        for row in plane.chunks_exact(w).rev() {
                            out.extend_from_slice(row);
                        }
                    }
                    (out, shape)
                } else {
                    (img.to_vec(), shape)
                }
            }
        }
    }
}

/// The `out_h x out_w` window at (`top`, `left`) of the image zero-padded by `pad`.
fn crop_padded(
    img: &[u8],
    [c, h, w]: [usize; 3],
    pad: usize,
    top: usize,
    left: usize,
    out_h: usize,
    out_w: usize,
) -> Vec<u8> {
    let mut out = vec![0u8; c * out_h * out_w];
    for ch in 0..c {
        for y in 0..out_h {
            let sy = (top + y) as isize - pad as isize;
            if sy < 0 || sy >= h as isize {
                continue;
            }
            for x in 0..out_w {
                let sx = (left + x) as isize - pad as isize;
                if sx >= 0 && sx < w as isize {
                    out[(ch * out_h + y) * out_w + x] =
                        img[(ch * h + sy as usize) * w + sx as usize];
                }
            }
        }
    }
    out
}

/// Applies a list of transforms in order.
pub fn apply_all(
    transforms: &[Transform],
    img: &[u8],
    shape: [usize; 3],
    rng: &mut impl Rng,
) -> (Vec<u8>, [usize; 3]) {
    let mut cur = (img.to_vec(), shape);
    for t in transforms {
        cur = t.apply(&cur.0, cur.1, rng);
    }
    cur
}

/// The output shape of a list of transforms, validating each.
pub fn chain_shape(transforms: &[Transform], shape: [usize; 3]) -> Result<[usize; 3], DataError> {
    transforms.iter().try_fold(shape, |s, t| t.output_shape(s))
}

/// Ready-made view sets following the paper's code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ViewPreset {
    /// The plotted runs of the paper (`noAugment`): view 1 the image, view 2 its vertical flip.
    VerticalFlip,
    /// The paper's `--augmentation`: view 1 the image, view 2 augmented (crop, flip).
    Augment,
    /// Standard SupCon: two independently augmented views.
    TwoAugmented,
    /// One view, no augmentation (cross-entropy training, evaluation).
    Single,
}

/// The transforms that bring a dataset to the paper's input size (Fashion-MNIST: pad to 32).
pub fn base_transforms(manifest: &Manifest) -> Vec<Transform> {
    match manifest.name.as_str() {
        "fashion-mnist" => vec![Transform::Pad { padding: 2 }],
        _ => Vec::new(),
    }
}

/// The paper's augmentation for a dataset: CIFAR random crop 32 with padding 4 and horizontal
/// flip; MNIST pad-and-crop 28 (pad 2); Fashion-MNIST (already padded to 32) random crop 32
/// with padding 2; other datasets random crop of their size with padding 1/8 of it and a
/// horizontal flip.
pub fn augment_transforms(manifest: &Manifest) -> Vec<Transform> {
    let side = manifest.image_shape[1];
    match manifest.name.as_str() {
        "mnist" => vec![Transform::RandomCrop {
            size: 28,
            padding: 2,
        }],
        "fashion-mnist" => vec![Transform::RandomCrop {
            size: 32,
            padding: 2,
        }],
        "sklearn-digits" => vec![Transform::RandomCrop {
            size: 8,
            padding: 1,
        }],
        _ => vec![
            Transform::RandomCrop {
                size: side,
                padding: (side / 8).max(1),
            },
            Transform::HorizontalFlip { p: 0.5 },
        ],
    }
}

impl ViewPreset {
    /// Every preset, in the order option lists show them.
    pub const ALL: [Self; 4] = [
        Self::VerticalFlip,
        Self::Augment,
        Self::TwoAugmented,
        Self::Single,
    ];

    /// The transforms of each view for a dataset.
    pub fn views(self, manifest: &Manifest) -> Vec<Vec<Transform>> {
        let base = base_transforms(manifest);
        let with = |extra: Vec<Transform>| base.iter().cloned().chain(extra).collect::<Vec<_>>();
        match self {
            Self::VerticalFlip => {
                vec![base.clone(), with(vec![Transform::VerticalFlip { p: 1.0 }])]
            }
            Self::Augment => vec![base.clone(), with(augment_transforms(manifest))],
            Self::TwoAugmented => vec![
                with(augment_transforms(manifest)),
                with(augment_transforms(manifest)),
            ],
            Self::Single => vec![base],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn ramp(shape: [usize; 3]) -> Vec<u8> {
        (0..shape.iter().product::<usize>())
            .map(|i| i as u8)
            .collect()
    }

    #[test]
    fn flips_mirror_rows_and_columns() {
        let mut rng = StdRng::seed_from_u64(0);
        // One channel, 2x3: [[0,1,2],[3,4,5]].
        let img = ramp([1, 2, 3]);
        let (h, _) = Transform::HorizontalFlip { p: 1.0 }.apply(&img, [1, 2, 3], &mut rng);
        assert_eq!(h, [2, 1, 0, 5, 4, 3]);
        let (v, _) = Transform::VerticalFlip { p: 1.0 }.apply(&img, [1, 2, 3], &mut rng);
        assert_eq!(v, [3, 4, 5, 0, 1, 2]);
        let (same, _) = Transform::VerticalFlip { p: 0.0 }.apply(&img, [1, 2, 3], &mut rng);
        assert_eq!(same, img);
    }

    #[test]
    fn pad_then_crop_keeps_shape_and_content_shifts() {
        let mut rng = StdRng::seed_from_u64(3);
        let img = ramp([2, 4, 4]);
        let (padded, s) = Transform::Pad { padding: 1 }.apply(&img, [2, 4, 4], &mut rng);
        assert_eq!(s, [2, 6, 6]);
        assert_eq!(padded[0], 0);
        assert_eq!(padded[7], img[0]); // (1,1) of the padded first plane
        for _ in 0..20 {
            let (crop, s) = Transform::RandomCrop {
                size: 4,
                padding: 1,
            }
            .apply(&img, [2, 4, 4], &mut rng);
            assert_eq!(s, [2, 4, 4]);
            // Every non-zero value of the crop comes from the image; the crop is a shift.
            assert!(crop.iter().filter(|&&v| v != 0).all(|v| img.contains(v)));
        }
    }

    #[test]
    fn impossible_parameters_are_reported() {
        let err = Transform::RandomCrop {
            size: 40,
            padding: 4,
        }
        .output_shape([3, 28, 28])
        .unwrap_err();
        assert!(err.to_string().contains("random-crop size 40"), "{err}");
        let err = Transform::HorizontalFlip { p: 1.5 }
            .output_shape([1, 2, 2])
            .unwrap_err();
        assert!(err.to_string().contains("[0, 1], got 1.5"), "{err}");
    }

    #[test]
    fn presets_give_the_paper_sizes() {
        let fashion = Manifest::named("fashion-mnist").unwrap();
        for preset in [
            ViewPreset::VerticalFlip,
            ViewPreset::Augment,
            ViewPreset::TwoAugmented,
        ] {
            let views = preset.views(&fashion);
            assert_eq!(views.len(), 2);
            for v in &views {
                assert_eq!(chain_shape(v, [1, 28, 28]).unwrap(), [1, 32, 32]);
            }
        }
        let cifar = Manifest::named("cifar10").unwrap();
        assert_eq!(
            chain_shape(&ViewPreset::Augment.views(&cifar)[1], [3, 32, 32]).unwrap(),
            [3, 32, 32]
        );
    }
}
