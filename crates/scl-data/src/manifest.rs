//! Dataset manifests: the TOML files under this crate's `manifests/` (file names, official
//! URLs, md5s, classes, image shape, the paper's normalisation). They are embedded in the
//! crate, so a program built from it knows every dataset without the repository at hand.

use serde::{Deserialize, Serialize};

use crate::DataError;

/// How a dataset's files are laid out, i.e. which reader reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Four IDX files (train/test images and labels), gzip-compressed or raw (MNIST layout).
    Idx,
    /// The official `cifar-10-binary.tar.gz` (`cifar-10-batches-bin/*.bin`).
    Cifar10Binary,
    /// The official `cifar-100-binary.tar.gz` (`cifar-100-binary/{train,test}.bin`).
    Cifar100Binary,
    /// A tar.gz of an image-folder layout, `<split>/<class>/*.png|jpg`.
    ImageFolderArchive,
    /// The sklearn digits embedded in the `smartcore` crate; no files.
    EmbeddedDigits,
}

/// One file of a dataset as published.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// What the file holds: `train-images`, `train-labels`, `test-images`, `test-labels` or
    /// `archive`.
    pub role: String,
    /// The file name in the dataset's folder.
    pub name: String,
    /// Size in bytes of the published file.
    pub bytes: u64,
    /// md5 of the published file (lower-case hex).
    pub md5: String,
    /// Where it can be downloaded, tried in order; empty when there is no stable address.
    pub urls: Vec<String>,
    /// For a gzip file (`name` ending in `.gz`): md5 of its decompressed content, so that an
    /// unpacked copy under the name without `.gz` is accepted in its place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_md5: Option<String>,
}

impl FileEntry {
    /// The name and md5 of the unpacked copy that may stand in for this file: `name` without
    /// `.gz`, when the manifest gives its md5.
    pub fn unpacked(&self) -> Option<(&str, &str)> {
        let raw = self.raw_md5.as_deref()?;
        Some((self.name.strip_suffix(".gz")?, raw))
    }
}

/// A dataset manifest (one `manifests/<name>.toml` of this crate).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Short name, also the folder name under the data directory.
    pub name: String,
    /// Name for tables and reports (for lossy copies it says so).
    pub title: String,
    /// The layout of the files.
    pub format: Format,
    /// Number of classes (of the default label set).
    pub num_classes: usize,
    /// Class names in label order.
    pub class_names: Vec<String>,
    /// CIFAR-100 only: the 20 coarse class names.
    #[serde(default)]
    pub coarse_class_names: Vec<String>,
    /// `[channels, height, width]` of every image.
    pub image_shape: [usize; 3],
    /// Per-channel mean of the pixels scaled to `[0, 1]`, as the paper normalises.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation, as the paper normalises.
    pub std: Vec<f32>,
    /// True when the pixels are not the original ones (a lossy re-encoding).
    pub lossy: bool,
    /// Examples in the training split.
    pub train_size: usize,
    /// Examples in the test split.
    pub test_size: usize,
    /// How to cite the data.
    pub citation: String,
    /// The files, as published.
    pub files: Vec<FileEntry>,
    /// Where torchvision keeps the same dataset under its `root`, read when the data
    /// directory holds it that way instead of in `<data dir>/<name>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torchvision: Option<Torchvision>,
}

/// torchvision's layout of a dataset under its `root` (the data directory here), so that
/// data a PyTorch user already downloaded is read in place, verified like the manifest's own
/// files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Torchvision {
    /// The folder under the data directory: `MNIST/raw` (the manifest's own IDX files, gzip
    /// or unpacked), `cifar-10-batches-py` (the pickled batches of the python version).
    pub folder: String,
    /// The files of that folder when they are not the manifest's own (the CIFAR python
    /// batches): role `train` (in the order their examples are concatenated) or `test`.
    /// Other files there (`batches.meta`) are not read.
    #[serde(default)]
    pub files: Vec<TorchvisionFile>,
    /// The archive torchvision downloads (`cifar-10-python.tar.gz`), read directly when it
    /// lies in the data directory or the dataset's folder; its members are `folder/<file>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<FileEntry>,
}

/// One file of torchvision's folder of a dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorchvisionFile {
    /// `train` or `test`.
    pub role: String,
    /// The file name in the folder.
    pub name: String,
    /// Its md5 (lower-case hex), as torchvision checks it.
    pub md5: String,
}

impl TorchvisionFile {
    /// The file as an entry of the verification code (no size, no download address).
    pub fn entry(&self) -> FileEntry {
        FileEntry {
            role: self.role.clone(),
            name: self.name.clone(),
            bytes: 0,
            md5: self.md5.clone(),
            urls: Vec::new(),
            raw_md5: None,
        }
    }
}

const BUILTIN: &[(&str, &str)] = &[
    ("mnist.toml", include_str!("../manifests/mnist.toml")),
    (
        "fashion-mnist.toml",
        include_str!("../manifests/fashion-mnist.toml"),
    ),
    ("cifar10.toml", include_str!("../manifests/cifar10.toml")),
    ("cifar100.toml", include_str!("../manifests/cifar100.toml")),
    (
        "cifar10-jpeg-lossy.toml",
        include_str!("../manifests/cifar10-jpeg-lossy.toml"),
    ),
    (
        "sklearn-digits.toml",
        include_str!("../manifests/sklearn-digits.toml"),
    ),
];

impl Manifest {
    /// Parses and checks a manifest; `name` is used in error messages.
    pub fn parse(name: &str, text: &str) -> Result<Self, DataError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| DataError::Manifest {
            name: name.to_string(),
            message: e.message().to_string(),
        })?;
        manifest.check().map_err(|message| DataError::Manifest {
            name: name.to_string(),
            message,
        })?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), String> {
        if self.class_names.len() != self.num_classes {
            return Err(format!(
                "{} class names for {} classes",
                self.class_names.len(),
                self.num_classes
            ));
        }
        let channels = self.image_shape[0];
        if self.mean.len() != channels || self.std.len() != channels {
            return Err(format!(
                "mean and std need one value per channel ({channels})"
            ));
        }
        if self.std.iter().any(|s| *s <= 0.0) {
            return Err("std values must be positive".into());
        }
        let roles: &[&str] = match self.format {
            Format::Idx => &["train-images", "train-labels", "test-images", "test-labels"],
            Format::Cifar10Binary | Format::Cifar100Binary | Format::ImageFolderArchive => {
                &["archive"]
            }
            Format::EmbeddedDigits => &[],
        };
        for role in roles {
            if !self.files.iter().any(|f| f.role == *role) {
                return Err(format!("no file with role `{role}`"));
            }
        }
        if let Some(tv) = &self.torchvision {
            let python = matches!(self.format, Format::Cifar10Binary | Format::Cifar100Binary);
            match self.format {
                Format::Idx if tv.files.is_empty() && tv.archive.is_none() => {}
                Format::Idx => {
                    return Err("torchvision: an IDX dataset's torchvision folder holds the manifest's own files; list no `files` or `archive`".into());
                }
                _ if python => {
                    for role in ["train", "test"] {
                        if !tv.files.iter().any(|f| f.role == role) {
                            return Err(format!("torchvision: no file with role `{role}`"));
                        }
                    }
                    if let Some(f) = tv
                        .files
                        .iter()
                        .find(|f| !["train", "test"].contains(&f.role.as_str()))
                    {
                        return Err(format!(
                            "torchvision: {} has role `{}`; the roles are train and test",
                            f.name, f.role
                        ));
                    }
                }
                _ => {
                    return Err(format!(
                        "torchvision: the format {:?} has no torchvision layout here",
                        self.format
                    ));
                }
            }
        }
        let torchvision_files = self.torchvision.iter().flat_map(|tv| {
            tv.files
                .iter()
                .map(TorchvisionFile::entry)
                .chain(tv.archive.clone())
        });
        for file in self.files.iter().cloned().chain(torchvision_files) {
            let file = &file;
            if file.md5.len() != 32 || !file.md5.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "{}: md5 `{}` is not 32 hex digits",
                    file.name, file.md5
                ));
            }
            if let Some(raw) = &file.raw_md5 {
                if !file.name.ends_with(".gz") {
                    return Err(format!(
                        "{}: raw_md5 is only for gzip files (a name ending in .gz)",
                        file.name
                    ));
                }
                if raw.len() != 32 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!(
                        "{}: raw_md5 `{raw}` is not 32 hex digits",
                        file.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every manifest shipped with the crate (one per file in `manifests/`), in a fixed order.
    pub fn builtin() -> Vec<Manifest> {
        Self::parsed_builtin().to_vec()
    }

    /// The files torchvision's folder of this dataset holds: its own list, else (IDX) the
    /// manifest's files; empty without a torchvision layout.
    pub fn torchvision_files(&self) -> Vec<FileEntry> {
        match &self.torchvision {
            Some(tv) if !tv.files.is_empty() => {
                tv.files.iter().map(TorchvisionFile::entry).collect()
            }
            Some(_) => self.files.clone(),
            None => Vec::new(),
        }
    }

    /// The names of the built-in manifests, in the order of [`Manifest::builtin`].
    pub fn builtin_names() -> Vec<&'static str> {
        Self::parsed_builtin()
            .iter()
            .map(|m| m.name.as_str())
            .collect()
    }

    /// The built-in manifests, parsed once per process (`named` is called per cell).
    fn parsed_builtin() -> &'static [Manifest] {
        static PARSED: std::sync::OnceLock<Vec<Manifest>> = std::sync::OnceLock::new();
        PARSED.get_or_init(|| {
            BUILTIN
                .iter()
                .map(|(name, text)| {
                    Manifest::parse(name, text)
                        .unwrap_or_else(|e| panic!("built-in manifest is invalid: {e}"))
                })
                .collect()
        })
    }

    /// The built-in manifest called `name`.
    ///
    /// # Errors
    /// [`DataError::UnknownDataset`] naming the known datasets.
    pub fn named(name: &str) -> Result<Manifest, DataError> {
        let all = Self::parsed_builtin();
        let known = all
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        all.iter()
            .find(|m| m.name == name)
            .cloned()
            .ok_or(DataError::UnknownDataset {
                name: name.to_string(),
                known,
            })
    }

    /// The file with the given role.
    pub fn file(&self, role: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.role == role)
    }

    /// Number of examples in a split.
    pub fn split_size(&self, split: crate::Split) -> usize {
        match split {
            crate::Split::Train => self.train_size,
            crate::Split::Test => self.test_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_manifest_parses_and_names_are_unique() {
        let all = Manifest::builtin();
        assert_eq!(all.len(), BUILTIN.len());
        let mut names: Vec<_> = all.iter().map(|m| m.name.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
        let cifar100 = Manifest::named("cifar100").unwrap();
        assert_eq!(cifar100.class_names.len(), 100);
        assert_eq!(cifar100.coarse_class_names.len(), 20);
    }

    #[test]
    fn unknown_dataset_names_the_known_ones() {
        let err = Manifest::named("imagenet").unwrap_err().to_string();
        assert!(err.contains("unknown dataset `imagenet`"), "{err}");
        assert!(err.contains("mnist") && err.contains("cifar10"), "{err}");
    }

    #[test]
    fn inconsistent_manifest_is_rejected_with_its_name() {
        let text =
            include_str!("../manifests/mnist.toml").replace("num_classes = 10", "num_classes = 9");
        let err = Manifest::parse("broken.toml", &text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("broken.toml") && err.contains("10 class names for 9 classes"),
            "{err}"
        );
    }
}
