//! The run contract: the records every run leaves in its folder, whatever its kind.
//!
//! - `config.json` ([`ConfigRecord`]), written when the run starts: the run's kind, the cell
//!   and experiment it computes, the backend, the git revision and the resolved configuration.
//! - `metrics.csv`, written as the run goes: one row per logged step of a UFM run, one per
//!   evaluated epoch (and logged step) of a deep run ([`crate::run_files`]).
//! - `summary.json` ([`Summary`]), written last, so that its presence marks a finished run:
//!   the kind, the cell, the backend, the seconds, the configuration and the outcome.
//!
//! Both records have the same fields for every kind of run; `kind` says which configuration
//! and outcome types `config` and `outcome` hold ([`RunConfig`]). The training layer
//! (`scl-train`) writes the three files, once each; sweeps and reports read them through
//! [`read_config_record`] and [`read_summary`].
//!
//! Records written before the contract existed (no `schema` field: the UFM summary with its
//! outcome flat beside the configuration, the deep `config.json` without the cell's name) are
//! read and upgraded in memory, so their results folders still report and resume.

use std::path::Path;

use scl_fs::FsError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::backend::BackendKind;
use crate::config::UfmConfig;
use crate::deep::{DeepConfig, DeepOutcome};
use crate::run_files::{CONFIG, SUMMARY};
use crate::ufm::UfmCellOutcome;

/// The version of the record schema this crate writes.
pub const SCHEMA: u32 = 2;

/// The kind of a run: which configuration and outcome its records hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunKind {
    /// Free features of the unconstrained-features model ([`UfmConfig`]).
    Ufm,
    /// A deep network trained on a dataset ([`DeepConfig`]).
    Deep,
}

impl RunKind {
    /// Every kind.
    pub const ALL: [Self; 2] = [Self::Ufm, Self::Deep];
}

/// The configuration of one kind of run, with the outcome type its summary keeps.
pub trait RunConfig: Serialize + DeserializeOwned + Clone {
    /// The kind the records name.
    const KIND: RunKind;
    /// What the run's summary keeps of its result.
    type Outcome: Serialize + DeserializeOwned + Clone;
}

impl RunConfig for UfmConfig {
    const KIND: RunKind = RunKind::Ufm;
    type Outcome = UfmCellOutcome;
}

impl RunConfig for DeepConfig {
    const KIND: RunKind = RunKind::Deep;
    type Outcome = DeepOutcome;
}

/// What a run computes, in the words of the experiment it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunLabel {
    /// The cell id (for a run outside a sweep: the run folder's name).
    pub cell_id: String,
    /// The experiment's name (for a run outside a sweep: `train`).
    pub experiment: String,
    /// The values of the experiment's grid axes that make this cell, in grid order.
    pub axes: Vec<(String, String)>,
}

/// `config.json`: what the run is, written before it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigRecord<C> {
    /// The record schema ([`SCHEMA`]).
    pub schema: u32,
    /// The kind of run.
    pub kind: RunKind,
    /// The cell id.
    pub cell_id: String,
    /// The experiment's name.
    pub experiment: String,
    /// The axis values of the cell.
    pub axes: Vec<(String, String)>,
    /// The backend the run uses.
    pub backend: BackendKind,
    /// `git rev-parse HEAD` of the working tree, with `-dirty` when it had changes.
    pub git_revision: String,
    /// The resolved configuration.
    pub config: C,
}

impl<C: RunConfig> ConfigRecord<C> {
    /// The record of a run of `config` labelled `label` on `backend` at `git_revision`.
    pub fn new(label: &RunLabel, backend: BackendKind, git_revision: &str, config: &C) -> Self {
        Self {
            schema: SCHEMA,
            kind: C::KIND,
            cell_id: label.cell_id.clone(),
            experiment: label.experiment.clone(),
            axes: label.axes.clone(),
            backend,
            git_revision: git_revision.to_string(),
            config: config.clone(),
        }
    }
}

/// `summary.json`: what the run produced, written when it has finished. `C` is the
/// configuration type, `O` the outcome type ([`RunConfig::Outcome`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary<C, O> {
    /// The record schema ([`SCHEMA`]).
    pub schema: u32,
    /// The kind of run.
    pub kind: RunKind,
    /// The cell id.
    pub cell_id: String,
    /// The backend the run ran on.
    pub backend: BackendKind,
    /// Wall-clock seconds the run took (a resumed deep run counts only its last part).
    pub seconds: f64,
    /// The resolved configuration (copied here so that a report needs only this file).
    pub config: C,
    /// What the run produced.
    pub outcome: O,
}

/// The summary of a UFM run.
pub type UfmSummary = Summary<UfmConfig, UfmCellOutcome>;

/// The summary of a deep-network run: counts, minority classes and the metrics of every
/// evaluated epoch.
pub type DeepSummary = Summary<DeepConfig, DeepOutcome>;

impl<C: RunConfig> Summary<C, C::Outcome> {
    /// The summary of a finished run of `config`.
    pub fn new(
        cell_id: &str,
        backend: BackendKind,
        seconds: f64,
        config: &C,
        outcome: C::Outcome,
    ) -> Self {
        Self {
            schema: SCHEMA,
            kind: C::KIND,
            cell_id: cell_id.to_string(),
            backend,
            seconds,
            config: config.clone(),
            outcome,
        }
    }
}

/// Writes `value` as pretty JSON to `path`, atomically.
///
/// # Errors
/// An [`FsError`] when the file cannot be written.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), FsError> {
    let text = serde_json::to_string_pretty(value).expect("run records serialise to JSON");
    scl_fs::write(path, text)
}

/// Writes `dir/config.json`.
///
/// # Errors
/// An [`FsError`] when the file cannot be written.
pub fn write_config_record<C: RunConfig>(
    dir: &Path,
    record: &ConfigRecord<C>,
) -> Result<(), FsError> {
    write_json(&dir.join(CONFIG), record)
}

/// Writes `dir/summary.json`.
///
/// # Errors
/// An [`FsError`] when the file cannot be written.
pub fn write_summary<C: RunConfig>(
    dir: &Path,
    summary: &Summary<C, C::Outcome>,
) -> Result<(), FsError> {
    write_json(&dir.join(SUMMARY), summary)
}

/// Reads `path` as JSON, with the error naming the file.
fn read_value(path: &Path) -> Result<Map<String, Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_value(path, &text)
}

fn parse_value(path: &Path, text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(format!("{}: it is not a JSON object", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The configuration inside a record of schema 1, upgraded: a deep run's without `dampening`
/// ran with Burn's ([`DeepConfig::upgrade_json`]).
fn upgrade_config<C: RunConfig>(record: &mut Map<String, Value>) {
    if C::KIND == RunKind::Deep
        && let Some(Value::Object(config)) = record.get_mut("config")
    {
        DeepConfig::upgrade_json(config);
    }
}

/// Checks the `kind` of a record of schema 2 against the kind asked for.
fn check_kind(path: &Path, map: &Map<String, Value>, kind: RunKind) -> Result<(), String> {
    let found: RunKind = serde_json::from_value(map.get("kind").cloned().unwrap_or(Value::Null))
        .map_err(|e| format!("{}: kind: {e}", path.display()))?;
    if found != kind {
        return Err(format!(
            "{}: it is the record of a {} run, not of a {} run",
            path.display(),
            crate::config::serde_plain(&found),
            crate::config::serde_plain(&kind)
        ));
    }
    Ok(())
}

/// Reads `dir/config.json` of a run of kind `C`. A record without `schema` (written before
/// the run contract) is upgraded: its `kind` set, and where it lacks the run's name (a deep
/// run's), `label` supplies it.
///
/// # Errors
/// One sentence naming the file: unreadable, not a record of this kind, or incomplete.
pub fn read_config_record<C: RunConfig>(
    dir: &Path,
    label: &RunLabel,
) -> Result<ConfigRecord<C>, String> {
    let path = dir.join(CONFIG);
    let mut map = read_value(&path)?;
    if map.contains_key("schema") {
        check_kind(&path, &map, C::KIND)?;
    } else {
        // Schema 1: UFM records had every field but `kind` and `schema`; deep records had
        // `kind = "deep"`, the dataset's title and counts, and no name of the run.
        if let Some(kind) = map.get("kind").and_then(Value::as_str)
            && kind != crate::config::serde_plain(&C::KIND)
        {
            return Err(format!(
                "{}: it is the record of a {kind} run, not of a {} run",
                path.display(),
                crate::config::serde_plain(&C::KIND)
            ));
        }
        map.insert("schema".into(), Value::from(SCHEMA));
        map.insert(
            "kind".into(),
            serde_json::to_value(C::KIND).expect("a kind"),
        );
        map.remove("class_counts");
        map.remove("dataset_title");
        upgrade_config::<C>(&mut map);
        let named = serde_json::to_value(label).expect("a label serialises");
        if let Value::Object(named) = named {
            for (key, value) in named {
                map.entry(key).or_insert(value);
            }
        }
    }
    serde_json::from_value(Value::Object(map)).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses `text`, the content of `dir/summary.json`, as the summary of a run of kind `C`. A
/// summary without `schema` (written before the run contract, its outcome flat beside the
/// other fields) is upgraded.
///
/// # Errors
/// One sentence naming the file: not JSON, not a summary of this kind, or incomplete.
pub fn parse_summary<C: RunConfig>(
    dir: &Path,
    text: &str,
) -> Result<Summary<C, C::Outcome>, String> {
    let path = dir.join(SUMMARY);
    let mut map = parse_value(&path, text)?;
    if map.contains_key("schema") {
        check_kind(&path, &map, C::KIND)?;
    } else {
        let mut upgraded = Map::new();
        for key in ["cell_id", "backend", "seconds", "config"] {
            if let Some(value) = map.remove(key) {
                upgraded.insert(key.into(), value);
            }
        }
        upgraded.insert("schema".into(), Value::from(SCHEMA));
        upgraded.insert(
            "kind".into(),
            serde_json::to_value(C::KIND).expect("a kind"),
        );
        upgraded.insert("outcome".into(), Value::Object(map));
        upgrade_config::<C>(&mut upgraded);
        map = upgraded;
    }
    serde_json::from_value(Value::Object(map)).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads `dir/summary.json` of a run of kind `C` ([`parse_summary`]).
///
/// # Errors
/// One sentence naming the file.
pub fn read_summary<C: RunConfig>(dir: &Path) -> Result<Summary<C, C::Outcome>, String> {
    let path = dir.join(SUMMARY);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_summary(dir, &text)
}

#[cfg(test)]
mod tests;
