//! [`ImageSet`]: images of one split in memory (bytes, `CxHxW`), their labels and class
//! names; it implements Burn's `Dataset` so Burn's own data loading can use it.

use std::sync::Arc;

use crate::DataError;

/// Images of one split held in memory as bytes, with labels in `0..class_names.len()`.
#[derive(Clone, Debug)]
pub struct ImageSet {
    shape: [usize; 3],
    max_value: u8,
    class_names: Vec<String>,
    pixels: Arc<Vec<u8>>,
    labels: Vec<usize>,
    origin: Vec<usize>,
}

/// One example as Burn's data loading sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageItem {
    /// Position of the example in the [`ImageSet`] it came from.
    pub index: usize,
    /// Its class.
    pub label: usize,
    /// `CxHxW` bytes.
    pub pixels: Vec<u8>,
}

impl ImageSet {
    /// Builds a set from `CxHxW` bytes and labels, checking that they fit together.
    ///
    /// `max_value` is the value that maps to 1.0 (255 for images, 16 for the digits).
    ///
    /// # Errors
    /// [`DataError::Layout`] when the number of bytes is not `labels.len() * C * H * W` or a
    /// label is not below `class_names.len()`.
    pub fn new(
        shape: [usize; 3],
        max_value: u8,
        class_names: Vec<String>,
        pixels: Vec<u8>,
        labels: Vec<usize>,
    ) -> Result<Self, DataError> {
        let per = shape.iter().product::<usize>();
        if per == 0 || pixels.len() != labels.len() * per {
            return Err(DataError::Layout {
                path: "<in memory>".into(),
                message: format!(
                    "{} pixel bytes do not make {} images of {}x{}x{}",
                    pixels.len(),
                    labels.len(),
                    shape[0],
                    shape[1],
                    shape[2]
                ),
            });
        }
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|(_, l)| **l >= class_names.len())
        {
            return Err(DataError::LabelOutOfRange {
                path: "<in memory>".into(),
                index,
                label,
                num_classes: class_names.len(),
            });
        }
        let origin = (0..labels.len()).collect();
        Ok(Self {
            shape,
            max_value,
            class_names,
            pixels: Arc::new(pixels),
            labels,
            origin,
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the set holds no example.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// `[channels, height, width]`.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// The pixel value that maps to 1.0.
    pub fn max_value(&self) -> u8 {
        self.max_value
    }

    /// Class names in label order.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Labels in example order.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// For each example, its index in the set it was originally read as (the full split);
    /// the identity for a set that is not a subset.
    pub fn origin(&self) -> &[usize] {
        &self.origin
    }

    /// The `CxHxW` bytes of example `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        let per = self.shape.iter().product::<usize>();
        // Subsets share the full split's pixel buffer; `origin` indexes into it.
        let at = self.origin[i];
        &self.pixels[at * per..(at + 1) * per]
    }

    /// Examples per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes()];
        for &l in &self.labels {
            counts[l] += 1;
        }
        counts
    }

    /// The examples at `indices` (in that order), sharing this set's pixel memory.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> ImageSet {
        ImageSet {
            shape: self.shape,
            max_value: self.max_value,
            class_names: self.class_names.clone(),
            pixels: Arc::clone(&self.pixels),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            origin: indices.iter().map(|&i| self.origin[i]).collect(),
        }
    }
}

#[cfg(feature = "burn")]
impl burn::data::dataset::Dataset<ImageItem> for ImageSet {
    /// The example at `index`.
    ///
    /// # Panics
    /// When `index` is not below [`burn::data::dataset::Dataset::len`] (Burn's contract).
    fn get(&self, index: usize) -> Result<ImageItem, burn::data::dataset::DatasetError> {
        assert!(
            index < self.labels.len(),
            "ImageSet: index {index} of a set of {} examples",
            self.labels.len()
        );
        Ok(ImageItem {
            index,
            label: self.labels[index],
            pixels: self.image(index).to_vec(),
        })
    }

    fn len(&self) -> usize {
        self.labels.len()
    }
}
