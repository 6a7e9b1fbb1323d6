//! Image folders: `<root>/<split>/<class>/*.png|jpg`, from a directory or straight from a
//! `.tar.gz` of that layout (such as the lossy-JPEG CIFAR-10 copy). Images are decoded with
//! the `image` crate on all cores and stored as `CxHxW` bytes.
//!
//! Why not burn-dataset's `ImageFolderDataset`: it only reads directories, stores each pixel
//! as an enum (several times the memory of a byte), and has no fixed class order; here the
//! class order can come from the manifest, so labels match the official ones.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::{DataError, ImageSet};

/// True for the file names this reader decodes.
fn is_image(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".png") || lower.ends_with(".jpg") || lower.ends_with(".jpeg")
}

/// Decodes one image file's bytes to `CxHxW` bytes of the expected shape.
///
/// # Errors
/// [`DataError::Image`] when the bytes do not decode, [`DataError::ImageShape`] when the
/// size differs from `shape` (channels are converted: 1 = grey, 3 = RGB).
pub fn decode_image(bytes: &[u8], path: &Path, shape: [usize; 3]) -> Result<Vec<u8>, DataError> {
    let [c, h, w] = shape;
    let img = image::load_from_memory(bytes).map_err(|e| DataError::Image {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if img.height() as usize != h || img.width() as usize != w {
        return Err(DataError::ImageShape {
            path: path.to_path_buf(),
            found: format!(
                "{}x{}x{}",
                img.color().channel_count(),
                img.height(),
                img.width()
            ),
            expected: format!("{c}x{h}x{w}"),
        });
    }
    match c {
        1 => Ok(img.to_luma8().into_raw()),
        3 => {
            let rgb = img.to_rgb8().into_raw();
            // HWC to CHW.
            let mut out = vec![0u8; 3 * h * w];
            for (p, px) in rgb.chunks_exact(3).enumerate() {
                for ch in 0..3 {
                    out[ch * h * w + p] = px[ch];
                }
            }
            Ok(out)
        }
        other => Err(DataError::ImageShape {
            path: path.to_path_buf(),
            found: format!("{}x{}x{}", img.color().channel_count(), h, w),
            expected: format!("{other}x{h}x{w} (only 1 or 3 channels are supported)"),
        }),
    }
}

/// Files grouped by class folder name, each list sorted by file name.
type Listing = BTreeMap<String, Vec<(PathBuf, Vec<u8>)>>;

/// Assigns labels and decodes. `class_names = None` takes the sorted folder names.
fn assemble(
    origin: &Path,
    mut listing: Listing,
    class_names: Option<&[String]>,
    shape: [usize; 3],
) -> Result<ImageSet, DataError> {
    let names: Vec<String> = match class_names {
        Some(names) => {
            if let Some(stray) = listing.keys().find(|k| !names.contains(k)) {
                return Err(DataError::Layout {
                    path: origin.join(stray),
                    message: format!(
                        "class folder `{stray}` is not one of the dataset's classes ({})",
                        names.join(", ")
                    ),
                });
            }
            names.to_vec()
        }
        None => listing.keys().cloned().collect(),
    };
    if names.is_empty() {
        return Err(DataError::Layout {
            path: origin.to_path_buf(),
            message: "no class folders found".into(),
        });
    }
    let mut files = Vec::new();
    for (label, name) in names.iter().enumerate() {
        let mut class_files = listing.remove(name).unwrap_or_default();
        if class_files.is_empty() {
            return Err(DataError::EmptyClass {
                path: origin.join(name),
            });
        }
        class_files.sort_by(|a, b| a.0.cmp(&b.0));
        files.extend(class_files.into_iter().map(|(p, b)| (label, p, b)));
    }
    let decoded: Vec<Vec<u8>> = files
        .par_iter()
        .map(|(_, path, bytes)| decode_image(bytes, path, shape))
        .collect::<Result<_, _>>()?;
    let labels = files.iter().map(|(l, _, _)| *l).collect();
    ImageSet::new(shape, 255, names, decoded.concat(), labels)
}

/// Reads `<root>/<split>/<class>/*.png|jpg` from a directory. Other files are ignored.
///
/// # Errors
/// [`DataError::Layout`] when the split folder is missing or a class folder is not a known
/// class, [`DataError::EmptyClass`] for a class without images, and the errors of
/// [`decode_image`].
pub fn read_image_folder(
    root: &Path,
    split: &str,
    class_names: Option<&[String]>,
    shape: [usize; 3],
) -> Result<ImageSet, DataError> {
    let split_dir = root.join(split);
    let read_dir = |dir: &Path| std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e));
    if !split_dir.is_dir() {
        return Err(DataError::Layout {
            path: split_dir,
            message: format!("no `{split}` folder (expected <root>/{split}/<class>/*.png|jpg)"),
        });
    }
    let mut listing = Listing::new();
    for class_entry in read_dir(&split_dir)? {
        let class_entry = class_entry.map_err(|e| DataError::io(&split_dir, e))?;
        let class_path = class_entry.path();
        if !class_path.is_dir() {
            continue;
        }
        let class = class_entry.file_name().to_string_lossy().to_string();
        let files = listing.entry(class).or_default();
        for file in read_dir(&class_path)? {
            let file = file.map_err(|e| DataError::io(&class_path, e))?;
            let name = file.file_name().to_string_lossy().to_string();
            if is_image(&name) {
                let path = file.path();
                let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
                files.push((path, bytes));
            }
        }
    }
    assemble(&split_dir, listing, class_names, shape)
}

/// Reads the same layout straight from a `.tar.gz` archive. Members are matched on their last
/// three path components, `<split>/<class>/<file>`, so an archive with a leading folder (as
/// GitHub's archives have) works too.
pub fn read_image_folder_archive(
    archive: &Path,
    split: &str,
    class_names: Option<&[String]>,
    shape: [usize; 3],
) -> Result<ImageSet, DataError> {
    let listing = list_archive(archive, split, true)?;
    assemble(&archive.join(split), listing, class_names, shape)
}

/// Per-class image counts of a split in an archive, without decoding anything.
pub fn count_archive(
    archive: &Path,
    split: &str,
    class_names: &[String],
) -> Result<Vec<usize>, DataError> {
    let listing = list_archive(archive, split, false)?;
    if let Some(stray) = listing.keys().find(|k| !class_names.contains(k)) {
        return Err(DataError::Layout {
            path: archive.join(split).join(stray),
            message: format!("class folder `{stray}` is not one of the dataset's classes"),
        });
    }
    Ok(class_names
        .iter()
        .map(|c| listing.get(c).map_or(0, Vec::len))
        .collect())
}

fn list_archive(archive: &Path, split: &str, with_bytes: bool) -> Result<Listing, DataError> {
    let file = std::fs::File::open(archive).map_err(|e| DataError::io(archive, e))?;
    let archive_err = |message: String| DataError::Archive {
        path: archive.to_path_buf(),
        message,
    };
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let mut listing = Listing::new();
    let mut saw_split = false;
    for entry in tar.entries().map_err(|e| archive_err(e.to_string()))? {
        let mut entry = entry.map_err(|e| archive_err(e.to_string()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| archive_err(e.to_string()))?
            .into_owned();
        let parts: Vec<String> = path
            .components()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .collect();
        if parts.len() < 3 || parts[parts.len() - 3] != split {
            continue;
        }
        saw_split = true;
        let (class, name) = (&parts[parts.len() - 2], &parts[parts.len() - 1]);
        if !is_image(name) {
            continue;
        }
        let mut bytes = Vec::new();
        if with_bytes {
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| archive_err(format!("{}: {e}", path.display())))?;
        }
        listing
            .entry(class.clone())
            .or_default()
            .push((archive.join(&path), bytes));
    }
    if !saw_split {
        return Err(DataError::Layout {
            path: archive.to_path_buf(),
            message: format!("archive holds no `{split}/<class>/<image>` members"),
        });
    }
    Ok(listing)
}
