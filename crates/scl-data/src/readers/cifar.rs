//! The official CIFAR binary versions. CIFAR-10 records are 1 label byte + 3072 pixel bytes;
//! CIFAR-100 records are 1 coarse label byte, 1 fine label byte + 3072 pixel bytes. Pixels are
//! the red, green and blue 32x32 planes in row-major order, i.e. already `CxHxW`.
//!
//! The published archives are read directly (no unpacking): `cifar-10-binary.tar.gz` holds
//! `cifar-10-batches-bin/data_batch_{1..5}.bin` and `test_batch.bin`;
//! `cifar-100-binary.tar.gz` holds `cifar-100-binary/train.bin` and `test.bin`.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{DataError, ImageSet, Split};

/// Pixel bytes per CIFAR image (3 x 32 x 32).
pub const PIXELS: usize = 3 * 32 * 32;

/// Which CIFAR-100 label set to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cifar100Labels {
    /// The 100 fine classes (the usual choice).
    #[default]
    Fine,
    /// The 20 coarse superclasses.
    Coarse,
}

/// The two binary layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CifarVariant {
    /// CIFAR-10: one label byte per record, 10 classes.
    Cifar10,
    /// CIFAR-100: coarse and fine label bytes per record.
    Cifar100(Cifar100Labels),
}

impl CifarVariant {
    /// Bytes per record.
    pub fn record_len(self) -> usize {
        match self {
            Self::Cifar10 => 1 + PIXELS,
            Self::Cifar100(_) => 2 + PIXELS,
        }
    }

    /// Number of classes of the chosen label set.
    pub fn num_classes(self) -> usize {
        match self {
            Self::Cifar10 => 10,
            Self::Cifar100(Cifar100Labels::Fine) => 100,
            Self::Cifar100(Cifar100Labels::Coarse) => 20,
        }
    }

    /// The archive members of a split, in the order their records are concatenated.
    pub fn members(self, split: Split) -> Vec<String> {
        match (self, split) {
            (Self::Cifar10, Split::Train) => (1..=5)
                .map(|i| format!("cifar-10-batches-bin/data_batch_{i}.bin"))
                .collect(),
            (Self::Cifar10, Split::Test) => vec!["cifar-10-batches-bin/test_batch.bin".into()],
            (Self::Cifar100(_), Split::Train) => vec!["cifar-100-binary/train.bin".into()],
            (Self::Cifar100(_), Split::Test) => vec!["cifar-100-binary/test.bin".into()],
        }
    }
}

/// Parses the records of one CIFAR binary file, appending pixels (`CxHxW` per image) and
/// labels to the given vectors.
///
/// # Errors
/// [`DataError::RecordLength`] when the length is not a whole number of records,
/// [`DataError::LabelOutOfRange`] for a label outside the chosen label set.
pub fn parse_cifar_records(
    bytes: &[u8],
    path: &Path,
    variant: CifarVariant,
    pixels: &mut Vec<u8>,
    labels: &mut Vec<usize>,
) -> Result<(), DataError> {
    let record = variant.record_len();
    if !bytes.len().is_multiple_of(record) {
        return Err(DataError::RecordLength {
            path: path.to_path_buf(),
            len: bytes.len(),
            record,
            remainder: bytes.len() % record,
        });
    }
    let num_classes = variant.num_classes();
    pixels.reserve(bytes.len() / record * PIXELS);
    for (index, rec) in bytes.chunks_exact(record).enumerate() {
        let label = match variant {
            CifarVariant::Cifar10 | CifarVariant::Cifar100(Cifar100Labels::Coarse) => rec[0],
            CifarVariant::Cifar100(Cifar100Labels::Fine) => rec[1],
        } as usize;
        if label >= num_classes {
            return Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                index,
                label,
                num_classes,
            });
        }
        labels.push(label);
        pixels.extend_from_slice(&rec[record - PIXELS..]);
    }
    Ok(())
}

/// Reads the members of a split from a CIFAR binary `.tar.gz` archive (as published).
pub(crate) fn read_members(
    archive: &Path,
    wanted: &[String],
) -> Result<HashMap<String, Vec<u8>>, DataError> {
    let file = std::fs::File::open(archive).map_err(|e| DataError::io(archive, e))?;
    let archive_err = |message: String| DataError::Archive {
        path: archive.to_path_buf(),
        message,
    };
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let mut found = HashMap::new();
    let entries = tar.entries().map_err(|e| archive_err(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| archive_err(e.to_string()))?;
        let name = entry
            .path()
            .map_err(|e| archive_err(e.to_string()))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if wanted.contains(&name) {
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| archive_err(format!("{name}: {e}")))?;
            found.insert(name, bytes);
            if found.len() == wanted.len() {
                break;
            }
        }
    }
    if let Some(missing) = wanted.iter().find(|w| !found.contains_key(*w)) {
        return Err(archive_err(format!("member `{missing}` is missing")));
    }
    Ok(found)
}

/// Reads one split of a CIFAR binary archive into an [`ImageSet`].
pub fn read_cifar_archive(
    archive: &Path,
    variant: CifarVariant,
    split: Split,
    class_names: &[String],
) -> Result<ImageSet, DataError> {
    let members = variant.members(split);
    let mut found = read_members(archive, &members)?;
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for m in &members {
        let bytes = found
            .remove(m)
            .expect("read_members returns every wanted member");
        parse_cifar_records(&bytes, &archive.join(m), variant, &mut pixels, &mut labels)?;
    }
    ImageSet::new([3, 32, 32], 255, class_names.to_vec(), pixels, labels)
}
