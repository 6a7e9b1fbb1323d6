//! The IDX format of MNIST and Fashion-MNIST: a big-endian magic number `0x0000_08nn`
//! (`08` = unsigned bytes, `nn` = number of dimensions), one big-endian `u32` per dimension,
//! then the data. Files may be gzip-compressed (as published) or raw.

use std::path::Path;

use super::read_maybe_gzip;
use crate::{DataError, ImageSet};

/// A parsed IDX array of unsigned bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions, outermost first (`[n, rows, cols]` for images, `[n]` for labels).
    pub dims: Vec<usize>,
    /// The data in row-major order; its length is the product of `dims`.
    pub data: Vec<u8>,
}

/// Parses an (uncompressed) IDX array of unsigned bytes with `expected_dims` dimensions.
///
/// # Errors
/// [`DataError::BadMagic`] for another magic number, [`DataError::Truncated`] when the
/// header or the data is short, [`DataError::TrailingBytes`] when the file is longer than its
/// header says, [`DataError::Layout`] when the dimensions overflow.
pub fn parse_idx(bytes: &[u8], expected_dims: usize, path: &Path) -> Result<IdxArray, DataError> {
    let expected_magic = 0x0000_0800u32 | expected_dims as u32;
    if bytes.len() < 4 {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: 4,
            found: bytes.len(),
        });
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if magic != expected_magic {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            found: magic,
            expected: expected_magic,
            expected_dims,
        });
    }
    let header = 4 + 4 * expected_dims;
    if bytes.len() < header {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: header,
            found: bytes.len(),
        });
    }
    let dims: Vec<usize> = (0..expected_dims)
        .map(|d| {
            let at = 4 + 4 * d;
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize
        })
        .collect();
    let size = dims
        .iter()
        .try_fold(1usize, |acc, d| acc.checked_mul(*d))
        .ok_or_else(|| DataError::Layout {
            path: path.to_path_buf(),
            message: format!("IDX dimensions {dims:?} overflow"),
        })?;
    let found = bytes.len() - header;
    if found < size {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: size,
            found,
        });
    }
    if found > size {
        return Err(DataError::TrailingBytes {
            path: path.to_path_buf(),
            expected: size,
            extra: found - size,
        });
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Parses an image IDX array and a label IDX array (both uncompressed) into an [`ImageSet`].
///
/// # Errors
/// Everything [`parse_idx`] reports, [`DataError::CountMismatch`] when the two disagree on
/// the number of examples, [`DataError::ImageShape`] when the images are not `height x
/// width`, and [`DataError::LabelOutOfRange`] for a label `>= class_names.len()`.
pub fn parse_idx_pair(
    images: &[u8],
    labels: &[u8],
    images_path: &Path,
    labels_path: &Path,
    shape: [usize; 3],
    class_names: &[String],
) -> Result<ImageSet, DataError> {
    let images_arr = parse_idx(images, 3, images_path)?;
    let labels_arr = parse_idx(labels, 1, labels_path)?;
    let (n_images, n_labels) = (images_arr.dims[0], labels_arr.dims[0]);
    if n_images != n_labels {
        return Err(DataError::CountMismatch {
            images: images_path.to_path_buf(),
            labels: labels_path.to_path_buf(),
            n_images,
            n_labels,
        });
    }
    let [c, h, w] = shape;
    if c != 1 || images_arr.dims[1] != h || images_arr.dims[2] != w {
        return Err(DataError::ImageShape {
            path: images_path.to_path_buf(),
            found: format!("1x{}x{}", images_arr.dims[1], images_arr.dims[2]),
            expected: format!("{c}x{h}x{w}"),
        });
    }
    let num_classes = class_names.len();
    let mut out = Vec::with_capacity(n_labels);
    for (index, &label) in labels_arr.data.iter().enumerate() {
        let label = label as usize;
        if label >= num_classes {
            return Err(DataError::LabelOutOfRange {
                path: labels_path.to_path_buf(),
                index,
                label,
                num_classes,
            });
        }
        out.push(label);
    }
    ImageSet::new(shape, 255, class_names.to_vec(), images_arr.data, out)
}

/// Reads an image IDX file and its label IDX file (each gzip or raw).
pub fn read_idx_pair(
    images_path: &Path,
    labels_path: &Path,
    shape: [usize; 3],
    class_names: &[String],
) -> Result<ImageSet, DataError> {
    let images = read_maybe_gzip(images_path)?;
    let labels = read_maybe_gzip(labels_path)?;
    parse_idx_pair(
        &images,
        &labels,
        images_path,
        labels_path,
        shape,
        class_names,
    )
}

/// Reads only the labels of a label IDX file (gzip or raw), checking their range.
pub fn read_idx_labels(path: &Path, num_classes: usize) -> Result<Vec<usize>, DataError> {
    let bytes = read_maybe_gzip(path)?;
    let arr = parse_idx(&bytes, 1, path)?;
    arr.data
        .iter()
        .enumerate()
        .map(|(index, &l)| {
            if (l as usize) < num_classes {
                Ok(l as usize)
            } else {
                Err(DataError::LabelOutOfRange {
                    path: path.to_path_buf(),
                    index,
                    label: l as usize,
                    num_classes,
                })
            }
        })
        .collect()
}

/// Serialises an IDX array of unsigned bytes (the exact official layout, uncompressed).
/// Used by tests and by anyone who wants to write a dataset in this format.
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    out.extend_from_slice(&(0x0000_0800u32 | dims.len() as u32).to_be_bytes());
    for d in dims {
        out.extend_from_slice(&(*d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}
