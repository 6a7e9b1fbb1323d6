//! The one error type of this crate: every variant names the file (or dataset) and says what
//! is wrong in terms a user can act on.

use std::path::PathBuf;

/// Everything that can go wrong while locating, verifying, downloading, reading or
/// subsampling a dataset. Readers return it instead of panicking.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An operating-system error while reading or writing `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file ends before the data its header promises.
    #[error("{path}: truncated: expected {expected} bytes of data after the header, found {found}")]
    Truncated {
        /// The file concerned.
        path: PathBuf,
        /// Bytes the header promises.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// The file is longer than its header says.
    #[error("{path}: {extra} unexpected bytes after the {expected} bytes the header describes")]
    TrailingBytes {
        /// The file concerned.
        path: PathBuf,
        /// Bytes the header describes.
        expected: usize,
        /// Bytes beyond that.
        extra: usize,
    },
    /// An IDX file whose first four bytes are not an IDX magic number of the expected kind.
    #[error(
        "{path}: not an IDX file of unsigned bytes with {expected_dims} dimension(s): magic number is {found:#010x}, expected {expected:#010x}"
    )]
    BadMagic {
        /// The file concerned.
        path: PathBuf,
        /// The magic number found.
        found: u32,
        /// The magic number expected.
        expected: u32,
        /// The number of dimensions expected.
        expected_dims: usize,
    },
    /// An image file and its label file disagree on the number of examples.
    #[error("{images} holds {n_images} images but {labels} holds {n_labels} labels")]
    CountMismatch {
        /// The image file.
        images: PathBuf,
        /// The label file.
        labels: PathBuf,
        /// Images in it.
        n_images: usize,
        /// Labels in it.
        n_labels: usize,
    },
    /// A label outside `0..num_classes`.
    #[error("{path}: label {label} of example {index} is outside the class range 0..{num_classes}")]
    LabelOutOfRange {
        /// The file concerned.
        path: PathBuf,
        /// Index of the example.
        index: usize,
        /// The label found.
        label: usize,
        /// The number of classes of the dataset.
        num_classes: usize,
    },
    /// A CIFAR binary file whose length is not a multiple of the record length.
    #[error(
        "{path}: {len} bytes is not a whole number of {record}-byte CIFAR records ({remainder} bytes left over)"
    )]
    RecordLength {
        /// The file concerned.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The record length of the format.
        record: usize,
        /// `len % record`.
        remainder: usize,
    },
    /// A gzip stream that cannot be decompressed.
    #[error("{path}: corrupted gzip stream: {message}")]
    Gzip {
        /// The file concerned.
        path: PathBuf,
        /// What the decoder said.
        message: String,
    },
    /// A tar archive that cannot be read.
    #[error("{path}: unreadable tar archive: {message}")]
    Archive {
        /// The archive concerned.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A file that is present but whose md5 differs from the manifest's.
    #[error(
        "{path}: md5 mismatch: expected {expected}, found {found} (the file is damaged or a different version; delete it and fetch it again)"
    )]
    Checksum {
        /// The file concerned.
        path: PathBuf,
        /// The md5 in the manifest.
        expected: String,
        /// The md5 of the file.
        found: String,
    },
    /// An image that cannot be decoded.
    #[error("{path}: unreadable image: {message}")]
    Image {
        /// The image (or `archive/entry`).
        path: PathBuf,
        /// What the decoder said.
        message: String,
    },
    /// An image whose size or channel count differs from the dataset's.
    #[error("{path}: image is {found}, the dataset's images are {expected}")]
    ImageShape {
        /// The image (or `archive/entry`).
        path: PathBuf,
        /// Its shape, as `CxHxW`.
        found: String,
        /// The expected shape, as `CxHxW`.
        expected: String,
    },
    /// A class folder with no image in it.
    #[error("{path}: class folder holds no .png or .jpg image")]
    EmptyClass {
        /// The folder.
        path: PathBuf,
    },
    /// An image-folder split with a layout this reader does not understand.
    #[error("{path}: {message}")]
    Layout {
        /// The folder or archive.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A pickled batch of the CIFAR python version that is not what it should be.
    #[error("{path}: not a CIFAR python batch: {message}")]
    Pickle {
        /// The file (or `archive/member`).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A folder (or another non-file) where a dataset file should be.
    #[error(
        "{path} is not a file (a folder or another kind of entry is in its place); remove it and put the dataset file there"
    )]
    NotAFile {
        /// The entry concerned.
        path: PathBuf,
    },
    /// Dataset files are missing and could not be downloaded.
    #[error("{0}")]
    Missing(String),
    /// A download failed.
    #[error("downloading {url}: {message}")]
    Download {
        /// The address tried.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A manifest that cannot be parsed or is inconsistent.
    #[error("manifest {name}: {message}")]
    Manifest {
        /// The manifest's file name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A dataset name that no manifest has.
    #[error("unknown dataset `{name}`; known datasets: {known}")]
    UnknownDataset {
        /// The name given.
        name: String,
        /// The names that exist, comma separated.
        known: String,
    },
    /// An imbalance specification that cannot be applied.
    #[error("imbalance: {0}")]
    Imbalance(String),
    /// A transform that cannot be applied to the dataset's images.
    #[error("transform: {0}")]
    Transform(String),
}

impl DataError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
