//! Experiment files: a TOML file that declares fixed settings and a grid of axes.
//!
//! ```toml
//! [experiment]
//! name = "quick"            # optional; default: the file name without extension
//! kind = "ufm"              # what each cell runs
//! description = "..."
//!
//! [base]                    # settings shared by every cell
//! temperature = 1.0
//!
//! [grid]                    # axes, combined by Cartesian product (first axis slowest)
//! ratio = [1, 10, 100]
//! relu = [true, false]
//!
//! [zip]                     # axes that move together (equal lengths): one more axis of
//! seed = [0, 1]             # the product, after the [grid] axes, whose i-th value sets
//! lr = [0.05, 0.1]          # every key of [zip] to its i-th entry
//!
//! [profiles.smoke.base]     # a profile overrides settings ...
//! steps = 100
//! [profiles.smoke.grid]     # ... and replaces whole axes
//! seed = [0]
//!
//! [parts.digits]            # more grids in the same file, each of its own kind
//! kind = "deep"
//! [parts.digits.base]
//! dataset = "sklearn-digits"
//! [parts.digits.grid]
//! final_activation = ["relu", "none"]
//! [profiles.smoke.parts.digits.base]
//! epochs = 2
//! ```
//!
//! Kinds: `ufm` (keys of [`UfmConfig`]) and `deep` (keys of [`DeepConfig`]).
//!
//! Every combination, merged over `[base]`, must be a complete, valid cell configuration;
//! the cells are checked before anything runs.

use std::path::Path;

use serde::Serialize;
use toml::{Table, Value};

use scl_types::config::{ConfigError, UFM_KEYS, UFM_OPTIONAL_KEYS, UfmConfig};
use scl_types::deep::DeepConfig;
use scl_types::records::RunConfig;

/// A parsed experiment file.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// Name, used as the results folder `runs/<name>` (`runs/<name>-<profile>` for a profile).
    pub name: String,
    /// Free text from the file.
    pub description: String,
    /// The profile that was applied, if any.
    pub profile: Option<String>,
    /// The unconstrained-features cells, in grid order.
    pub cells: Vec<Cell>,
    /// The deep-network cells, in grid order (after the UFM cells when both exist).
    pub deep_cells: Vec<DeepCell>,
}

/// What the cells of a grid run (`kind` in an experiment file, `ufm` or `deep`): the kind
/// of run their records name.
pub use scl_types::records::RunKind as CellKind;

/// The `kind` key of `table` (default `ufm`); `place` says where it is, for the error.
fn read_kind(table: &Table, place: &str) -> Result<CellKind, ConfigError> {
    let Some(name) = string_value(table, "kind")? else {
        return Ok(CellKind::Ufm);
    };
    CellKind::ALL
        .into_iter()
        .find(|k| serde_plain(k) == name)
        .ok_or_else(|| {
            ConfigError::new(format!(
                "kind = \"{name}\"{place} is not allowed: the allowed kinds are \"ufm\", \"deep\""
            ))
        })
}

/// Any cell of a grid, by reference: what the runner needs of a cell whatever it runs.
#[derive(Debug, Clone, Copy)]
pub enum CellRef<'a> {
    /// An unconstrained-features cell.
    Ufm(&'a Cell),
    /// A deep-network cell.
    Deep(&'a DeepCell),
}

impl<'a> CellRef<'a> {
    /// The cell's stable id.
    pub fn id(self) -> &'a str {
        match self {
            Self::Ufm(c) => &c.id,
            Self::Deep(c) => &c.id,
        }
    }

    /// What it runs.
    pub fn kind(self) -> CellKind {
        match self {
            Self::Ufm(_) => CellKind::Ufm,
            Self::Deep(_) => CellKind::Deep,
        }
    }

    /// The axis values of the cell, as written in the file.
    pub fn axes(self) -> &'a [(String, String)] {
        match self {
            Self::Ufm(c) => &c.axes,
            Self::Deep(c) => &c.axes,
        }
    }

    /// The length of its run and the unit: (steps, "step") or (epochs, "epoch").
    pub fn length(self) -> (usize, &'static str) {
        match self {
            Self::Ufm(c) => (c.config.steps, "step"),
            Self::Deep(c) => (c.config.epochs, "epoch"),
        }
    }
}

/// One point of a grid: a complete run configuration with a stable id. `Cell` (the default,
/// `Cell<UfmConfig>`) is an unconstrained-features cell, [`DeepCell`] a deep-network one.
#[derive(Debug, Clone, Serialize)]
pub struct Cell<C = UfmConfig> {
    /// Position among the cells of its kind (0-based).
    pub index: usize,
    /// Stable id from the resolved configuration; names the run directory.
    pub id: String,
    /// The axis values of this cell, as written in the file.
    pub axes: Vec<(String, String)>,
    /// The resolved configuration.
    pub config: C,
}

/// A deep-network cell.
pub type DeepCell = Cell<DeepConfig>;

/// A configuration that a cell runs: what grid expansion and the runner need of it (its
/// kind is [`RunConfig::KIND`]).
pub trait CellConfig: RunConfig {
    /// Every key an experiment file may set.
    fn keys() -> &'static [&'static str];

    /// The keys that must be set (in `[base]` or as an axis).
    fn required_keys() -> Vec<&'static str>;

    /// Rewrites the merged settings of one cell before they are read as the configuration:
    /// the `imbalance` table into the keys a UFM configuration has; nothing for other kinds.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key and what is allowed.
    fn normalise(_settings: &mut Table) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Checks the resolved configuration.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key and what is allowed.
    fn check(&self) -> Result<(), ConfigError>;

    /// The summary of a finished cell `id` in `dir`, whose `summary.json` reads `text`, once
    /// its records are checked complete and in agreement ([`crate::records::cell_records`]).
    ///
    /// # Errors
    /// Why the records are not those of a finished cell, naming the file.
    fn finished_summary(
        dir: &Path,
        id: &str,
        text: &str,
    ) -> Result<scl_types::records::Summary<Self, Self::Outcome>, String>;

    /// A stable, readable id: the main settings, then a hash of the whole configuration.
    fn cell_id(&self) -> String;
}

impl CellConfig for UfmConfig {
    /// `imbalance = { kind = "step", ratio = R, n_majority = N }`, the spelling deep cells use,
    /// becomes `ratio` and `n_majority` (the older flat spelling, still read). The
    /// unconstrained-features model has STEP imbalance only.
    fn normalise(settings: &mut Table) -> Result<(), ConfigError> {
        let Some(value) = settings.remove("imbalance") else {
            return Ok(());
        };
        for key in ["ratio", "n_majority"] {
            if settings.contains_key(key) {
                return Err(ConfigError::new(format!(
                    "imbalance and {key} are both set: give the imbalance once, as imbalance = \
                     {{ kind = \"step\", ratio = R, n_majority = N }}"
                )));
            }
        }
        let shown = value.to_string();
        let imbalance: scl_data::Imbalance = value.try_into().map_err(|e: toml::de::Error| {
            ConfigError::new(format!(
                "imbalance = {shown} is not allowed: {}",
                e.message().trim()
            ))
        })?;
        match imbalance {
            scl_data::Imbalance::Step {
                ratio,
                n_majority: Some(n),
                minority: None,
            } => {
                settings.insert("ratio".into(), Value::Float(ratio));
                let n = i64::try_from(n).map_err(|_| {
                    ConfigError::new(format!(
                        "imbalance = {shown} is not allowed: n_majority is too large"
                    ))
                })?;
                settings.insert("n_majority".into(), Value::Integer(n));
                Ok(())
            }
            _ => Err(ConfigError::new(format!(
                "imbalance = {shown} is not allowed for ufm cells: the unconstrained-features \
                 model has STEP imbalance with the last floor(K / 2) classes as minority, \
                 imbalance = {{ kind = \"step\", ratio = R, n_majority = N }}"
            ))),
        }
    }

    fn keys() -> &'static [&'static str] {
        UFM_KEYS
    }

    fn required_keys() -> Vec<&'static str> {
        UFM_KEYS
            .iter()
            .copied()
            .filter(|k| !UFM_OPTIONAL_KEYS.contains(k))
            .collect()
    }

    fn check(&self) -> Result<(), ConfigError> {
        self.validate()
    }

    fn finished_summary(
        dir: &Path,
        id: &str,
        text: &str,
    ) -> Result<scl_types::records::UfmSummary, String> {
        crate::records::check_ufm(dir, id, text)
    }

    /// `ufm-K<classes>-R<ratio>-<relu|norelu>[-<schedule><batch>]-s<seed>-<hash>`.
    fn cell_id(&self) -> String {
        let config = self;
        let json = serde_json::to_string(config).expect("a UfmConfig serialises to JSON");
        let batching = match (config.schedule, config.batch_size) {
            (Some(kind), Some(b)) => format!("-{}{b}", kind.name()),
            _ => String::new(),
        };
        format!(
            "ufm-K{}-R{}-{}{batching}-s{}-{:08x}",
            config.num_classes,
            config.ratio,
            if config.relu { "relu" } else { "norelu" },
            config.seed,
            fnv1a(json.as_bytes()) as u32
        )
    }
}

impl CellConfig for DeepConfig {
    fn keys() -> &'static [&'static str] {
        scl_types::deep::DEEP_KEYS
    }

    fn required_keys() -> Vec<&'static str> {
        scl_types::deep::DEEP_REQUIRED_KEYS.to_vec()
    }

    fn check(&self) -> Result<(), ConfigError> {
        self.validate()
    }

    fn finished_summary(
        dir: &Path,
        id: &str,
        text: &str,
    ) -> Result<scl_types::records::DeepSummary, String> {
        crate::records::check_deep(dir, id, text)
    }

    /// `<dataset>-<model>-<imbalance>-<relu|norelu>-<schedule>-<loss>-s<seed>-<hash>`.
    fn cell_id(&self) -> String {
        let config = self;
        let json = serde_json::to_string(config).expect("a DeepConfig serialises to JSON");
        // Cells computed before the `dampening` key existed ran with Burn's 0.1 and had no
        // such key: a configuration asking for 0.1 keeps their ids.
        let json = json.replacen(
            &format!(",\"dampening\":{}", scl_types::deep::BURN_DAMPENING),
            "",
            1,
        );
        format!(
            "{}-{}-{}-{}-{}-{}-s{}-{:08x}",
            config.dataset,
            serde_plain(&config.model),
            config.imbalance.label(),
            match config.final_activation {
                scl_types::model::FinalActivation::Relu => "relu",
                scl_types::model::FinalActivation::None => "norelu",
            },
            config.schedule.name(),
            serde_plain(&config.loss),
            config.seed,
            fnv1a(json.as_bytes()) as u32
        )
    }
}

mod parse;
#[cfg(test)]
mod tests;

pub use parse::MAX_FOLDER_NAME;
use parse::string_value;
#[cfg(feature = "runner")]
pub(crate) use parse::where_of;

/// Serde's name of a unit enum value (`relu`, `mlp`, `scl`), for ids and tables.
pub use scl_types::config::serde_plain;

/// 64-bit FNV-1a, a hash that does not change between Rust releases.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
