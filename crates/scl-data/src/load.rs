//! One entry point per question: [`load`] reads a split of a dataset (verifying and, if
//! allowed, downloading first); [`split_counts`] gives its per-class counts cheaply.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::readers::cifar::{self, Cifar100Labels, CifarVariant};
use crate::readers::{cifar_python, folder, idx};
use crate::store::{DataDir, Fetch, Source, locate};
use crate::{DataError, Format, ImageSet, Manifest};

/// A dataset split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// The training split.
    Train,
    /// The (balanced) test split.
    Test,
}

impl Split {
    /// `train` or `test`, as in file and folder names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Test => "test",
        }
    }
}

/// How to find and read a dataset.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Where the files are (see [`DataDir::resolve`]).
    pub data_dir: DataDir,
    /// Whether missing files may be downloaded.
    pub fetch: Fetch,
    /// CIFAR-100 only: fine (100) or coarse (20) labels.
    pub cifar100_labels: Cifar100Labels,
}

impl LoadOptions {
    /// Options for `data_dir` with downloads off and fine CIFAR-100 labels.
    pub fn offline(data_dir: DataDir) -> Self {
        Self {
            data_dir,
            fetch: Fetch::Never,
            cifar100_labels: Cifar100Labels::Fine,
        }
    }
}

fn class_names_for(manifest: &Manifest, opts: &LoadOptions) -> Vec<String> {
    if manifest.format == Format::Cifar100Binary && opts.cifar100_labels == Cifar100Labels::Coarse {
        manifest.coarse_class_names.clone()
    } else {
        manifest.class_names.clone()
    }
}

fn path_of(dir: &std::path::Path, manifest: &Manifest, role: &str) -> PathBuf {
    crate::store::located(
        dir,
        manifest
            .file(role)
            .expect("manifests are checked to have the roles of their format"),
    )
}

/// The CIFAR python files of a split, in order (torchvision's layout).
fn python_files(manifest: &Manifest, split: Split) -> Vec<String> {
    manifest
        .torchvision
        .iter()
        .flat_map(|tv| tv.files.iter())
        .filter(|f| f.role == split.as_str())
        .map(|f| f.name.clone())
        .collect()
}

/// Reads one split of a dataset into memory, after finding its files and verifying them
/// (see [`locate`]: the dataset's own folder, else torchvision's layout, else a download when
/// allowed).
///
/// # Errors
/// Every reader error, with the file it concerns; [`DataError::Missing`] when files are
/// missing; [`DataError::Checksum`] when a file is not the published one.
pub fn load(manifest: &Manifest, split: Split, opts: &LoadOptions) -> Result<ImageSet, DataError> {
    let names = class_names_for(manifest, opts);
    if manifest.format == Format::EmbeddedDigits {
        #[cfg(feature = "digits")]
        return crate::readers::digits::load_digits(split, &names);
        #[cfg(not(feature = "digits"))]
        return Err(DataError::Manifest {
            name: manifest.name.clone(),
            message: "this build of scl-data has no `digits` feature".into(),
        });
    }
    let source = locate(manifest, &opts.data_dir, opts.fetch)?;
    let variant = match manifest.format {
        Format::Cifar100Binary => CifarVariant::Cifar100(opts.cifar100_labels),
        _ => CifarVariant::Cifar10,
    };
    let dir = match source {
        Source::Own(dir) => dir,
        // torchvision's IDX files are the manifest's own, in another folder.
        Source::TorchvisionFolder(dir) if manifest.format == Format::Idx => dir,
        Source::TorchvisionFolder(dir) => {
            return cifar_python::read_cifar_python_folder(
                &dir,
                &python_files(manifest, split),
                variant,
                &names,
            );
        }
        Source::TorchvisionArchive(archive) => {
            let folder = manifest
                .torchvision
                .as_ref()
                .map_or("", |tv| tv.folder.as_str());
            return cifar_python::read_cifar_python_archive(
                &archive,
                folder,
                &python_files(manifest, split),
                variant,
                &names,
            );
        }
    };
    match manifest.format {
        Format::Idx => idx::read_idx_pair(
            &path_of(&dir, manifest, &format!("{}-images", split.as_str())),
            &path_of(&dir, manifest, &format!("{}-labels", split.as_str())),
            manifest.image_shape,
            &names,
        ),
        Format::Cifar10Binary => cifar::read_cifar_archive(
            &path_of(&dir, manifest, "archive"),
            CifarVariant::Cifar10,
            split,
            &names,
        ),
        Format::Cifar100Binary => cifar::read_cifar_archive(
            &path_of(&dir, manifest, "archive"),
            CifarVariant::Cifar100(opts.cifar100_labels),
            split,
            &names,
        ),
        Format::ImageFolderArchive => folder::read_image_folder_archive(
            &path_of(&dir, manifest, "archive"),
            split.as_str(),
            Some(&names),
            manifest.image_shape,
        ),
        Format::EmbeddedDigits => unreachable!("handled above"),
    }
}

/// Per-class counts of a split, reading as little as possible: the label file for IDX, the
/// archive listing for image folders, the records for CIFAR. Files are verified first and
/// never downloaded.
pub fn split_counts(
    manifest: &Manifest,
    split: Split,
    opts: &LoadOptions,
) -> Result<Vec<usize>, DataError> {
    let names = class_names_for(manifest, opts);
    let counts_of = |labels: &[usize]| {
        let mut c = vec![0; names.len()];
        for &l in labels {
            c[l] += 1;
        }
        c
    };
    match manifest.format {
        Format::Idx => {
            let dir = locate(manifest, &opts.data_dir, Fetch::Never)?
                .path()
                .to_path_buf();
            let labels = idx::read_idx_labels(
                &path_of(&dir, manifest, &format!("{}-labels", split.as_str())),
                names.len(),
            )?;
            Ok(counts_of(&labels))
        }
        Format::ImageFolderArchive => {
            let dir = locate(manifest, &opts.data_dir, Fetch::Never)?
                .path()
                .to_path_buf();
            folder::count_archive(&path_of(&dir, manifest, "archive"), split.as_str(), &names)
        }
        _ => {
            let offline = LoadOptions {
                fetch: Fetch::Never,
                ..opts.clone()
            };
            Ok(load(manifest, split, &offline)?.class_counts())
        }
    }
}
