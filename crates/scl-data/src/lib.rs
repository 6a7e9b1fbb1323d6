//! Datasets for supervised contrastive learning under class imbalance: checksummed readers
//! for MNIST, Fashion-MNIST, CIFAR-10/100 (official binary versions, and the python versions
//! as torchvision downloads them: data a PyTorch user already has is found in torchvision's
//! layout under the data directory), image folders (from a directory or a `.tar.gz`) and the
//! embedded sklearn digits; the paper's imbalance
//! constructions; and Burn `Dataset`/`Batcher` implementations that build two-view batches.
//!
//! ```
//! use scl_data::{Imbalance, LoadOptions, Manifest, Split, DataDir, load};
//!
//! // The sklearn digits are embedded: no download, no data directory needed.
//! let manifest = Manifest::named("sklearn-digits")?;
//! let opts = LoadOptions::offline(DataDir::resolve(None));
//! let train = load(&manifest, Split::Train, &opts)?;
//! assert_eq!(train.len(), 1442);
//!
//! // STEP imbalance R = 10 on the second half of the classes, deterministic in the seed.
//! let step = Imbalance::Step { ratio: 10.0, n_majority: Some(100), minority: None };
//! let selection = step.select(train.labels(), train.num_classes(), 0)?;
//! let imbalanced = train.subset(&selection.indices);
//! assert_eq!(imbalanced.class_counts(), [100, 100, 100, 100, 100, 10, 10, 10, 10, 10]);
//! # Ok::<(), scl_data::DataError>(())
//! ```
//!
//! Cargo features (all on by default): `burn` (the `Dataset` implementation and the batcher),
//! `download` (fetching missing files), `digits` (the embedded sklearn digits). Without them the
//! readers, manifests, checksums and imbalance constructions remain.
//!
//! Errors are [`DataError`] values that name the file and what is wrong; readers never panic
//! on bad input and never leave partial files behind.
#![warn(missing_docs)]

#[cfg(feature = "burn")]
pub mod batcher;
mod dataset;
mod error;
pub mod imbalance;
mod load;
mod manifest;
pub mod readers;
pub mod store;
pub mod transform;

#[cfg(feature = "burn")]
pub use batcher::{HostBatch, SclBatch, SclBatcher};
pub use dataset::{ImageItem, ImageSet};
pub use error::DataError;
pub use imbalance::{Imbalance, ImbalanceKind, Selection, count_table};
pub use load::{LoadOptions, Split, load, split_counts};
pub use manifest::{FileEntry, Format, Manifest, Torchvision, TorchvisionFile};
pub use readers::cifar::Cifar100Labels;
pub use store::{DataDir, Fetch, Source};
pub use transform::{Transform, ViewPreset};

#[cfg(all(test, feature = "burn", feature = "download", feature = "digits"))]
mod tests;
