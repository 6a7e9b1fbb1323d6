//! The plain types of supervised contrastive learning runs, without tensor code: what a run is
//! (its configuration: [`config::UfmConfig`], [`deep::DeepConfig`], the backend it runs on,
//! [`backend::BackendKind`]), what it produces ([`ufm`], [`deep`]) and the records it leaves
//! in its folder ([`records`], [`run_files`]).
//!
//! Training (`scl-train`), experiment grids (`scl-experiments`) and reports (`scl-report`)
//! share these types; only training needs Burn, so a report or a grid pulls in no tensor code.
//! Imbalance, views and datasets are described by `scl-data` (without its `burn` feature),
//! batch schedules by `scl-batching`, geometry numbers by `scl-geometry` (without its `burn`
//! feature).
//!
//! # Example
//!
//! ```
//! use scl_types::deep::DeepConfig;
//! use scl_types::records::{ConfigRecord, RunKind, RunLabel};
//! use scl_types::backend::BackendKind;
//!
//! let config: DeepConfig =
//!     toml::from_str("dataset = \"mnist\"\nmodel = \"small-cnn\"\nepochs = 30").unwrap();
//! config.validate().unwrap();
//! let label = RunLabel { cell_id: "mnist-run".into(), experiment: "train".into(), axes: vec![] };
//! let record = ConfigRecord::new(&label, BackendKind::Flex, "unknown", &config);
//! assert_eq!(record.kind, RunKind::Deep);
//! ```
#![warn(missing_docs)]

pub mod backend;
pub mod config;
pub mod deep;
pub mod model;
pub mod records;
pub mod run_files;
pub mod ufm;

pub use config::ConfigError;

/// The largest learning rate a configuration may ask for: a guard against a slip such as
/// `1e3` for `1e-3`, which would otherwise run to the end on dead or overflowing features.
pub const MAX_LR: f64 = 10.0;

/// `bytes` in GiB for a sentence: one decimal (`23.5`), or a power of ten beyond a million GiB
/// (`2.5e18`), where a configuration's estimate can go.
pub fn gib_text(bytes: f64) -> String {
    let gib = bytes / f64::from(1u32 << 30);
    if gib < 1e6 {
        format!("{gib:.1}")
    } else {
        format!("{gib:.1e}")
    }
}

/// Total memory of this machine in bytes (`MemTotal` of `/proc/meminfo`); `None` where the
/// system does not say.
pub fn machine_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}
