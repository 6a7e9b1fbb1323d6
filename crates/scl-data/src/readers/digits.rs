//! The sklearn digits (1797 8x8 images, values 0..16), embedded in the `smartcore` crate.
//! The split is ours, deterministic and stratified: within each class, in file order, every
//! 5th image (ranks 4, 9, 14, ...) is a test image.

use crate::{DataError, ImageSet, Split};

/// Every 5th image of each class (ranks 4, 9, 14, ...) is held out for testing.
pub const TEST_EVERY: usize = 5;

/// Loads a split of the embedded digits as an [`ImageSet`] with `max_value` 16.
pub fn load_digits(split: Split, class_names: &[String]) -> Result<ImageSet, DataError> {
    let data = smartcore::dataset::digits::load_dataset();
    let (n, d) = (data.num_samples, data.num_features);
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let mut seen = vec![0usize; class_names.len()];
    for i in 0..n {
        let class = data.target[i].round() as usize;
        let rank = seen.get(class).copied().unwrap_or(0);
        if let Some(s) = seen.get_mut(class) {
            *s += 1;
        }
        let is_test = rank % TEST_EVERY == TEST_EVERY - 1;
        if is_test != (split == Split::Test) {
            continue;
        }
        for &v in &data.data[i * d..(i + 1) * d] {
            // The embedded values are whole numbers 0..=16 stored as f32.
            pixels.push(v.round().clamp(0.0, 16.0) as u8);
        }
        let label = data.target[i].round() as usize;
        if label >= class_names.len() {
            return Err(DataError::LabelOutOfRange {
                path: "smartcore::dataset::digits".into(),
                index: i,
                label,
                num_classes: class_names.len(),
            });
        }
        labels.push(label);
    }
    ImageSet::new([1, 8, 8], 16, class_names.to_vec(), pixels, labels)
}
