//! Options whose value is one of a fixed list (backends, datasets, imbalance kinds): clap
//! lists the values in `--help` and shells complete them, and a wrong value gets the one
//! sentence of the library that owns the list, naming the value and what is allowed.
//!
//! The values stay text after parsing, so the commands hand them on unchanged (to child
//! processes, to sbatch scripts) and parse them where they are used.

use std::ffi::OsStr;

use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::ErrorKind;
use scl_train::backend::{BACKEND_NAMES, BackendKind};

/// A value parser for one of `names`; `check` gives the sentence for any other value.
#[derive(Clone)]
pub struct Choice {
    names: Vec<&'static str>,
    check: fn(&str) -> Result<(), String>,
}

impl Choice {
    /// A backend: flex, wgpu or cuda (`scl_train::backend::BACKEND_NAMES`).
    pub fn backend() -> Self {
        Self {
            names: BACKEND_NAMES.to_vec(),
            check: |v| {
                v.parse::<BackendKind>()
                    .map(drop)
                    .map_err(|e| e.to_string())
            },
        }
    }

    /// A built-in dataset (`scl_data::Manifest::builtin_names`).
    pub fn dataset() -> Self {
        Self {
            names: scl_data::Manifest::builtin_names(),
            check: |v| {
                scl_data::Manifest::named(v)
                    .map(drop)
                    .map_err(|e| e.to_string())
            },
        }
    }

    /// A built-in dataset or `all`.
    pub fn dataset_or_all() -> Self {
        let mut names = scl_data::Manifest::builtin_names();
        names.push("all");
        Self {
            names,
            check: |v| {
                if v == "all" {
                    return Ok(());
                }
                scl_data::Manifest::named(v)
                    .map(drop)
                    .map_err(|e| format!("{e}, or `all`"))
            },
        }
    }

    /// An imbalance construction of `data imbalance`.
    pub fn imbalance_kind() -> Self {
        Self {
            names: IMBALANCE_KINDS.to_vec(),
            check: |v| {
                if IMBALANCE_KINDS.contains(&v) {
                    Ok(())
                } else {
                    Err(format!(
                        "--kind {v} is not allowed: the allowed kinds are {}",
                        IMBALANCE_KINDS.join(", ")
                    ))
                }
            },
        }
    }
}

/// The `--kind` values of `data imbalance` (the `kind` of an experiment file's `imbalance`).
pub const IMBALANCE_KINDS: [&str; 3] = ["step", "long-tail", "none"];

impl TypedValueParser for Choice {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<String, clap::Error> {
        let text = value.to_str().ok_or_else(|| {
            clap::Error::raw(
                ErrorKind::InvalidUtf8,
                format!("{} is not UTF-8 text\n", value.to_string_lossy()),
            )
            .with_cmd(cmd)
        })?;
        (self.check)(text).map_err(|sentence| {
            clap::Error::raw(ErrorKind::InvalidValue, format!("{sentence}\n")).with_cmd(cmd)
        })?;
        Ok(text.to_string())
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(self.names.iter().map(|n| PossibleValue::new(*n))))
    }
}

/// The long help of a `--set` option: `first` and the allowed values of the enumerated keys.
pub fn set_help(first: &str) -> String {
    format!(
        "{first}\n\nThe keys that take one of a list of values, and the values:\n{}",
        enumerated_keys()
    )
}

/// The values of the enumerated keys of experiment and run files, for the help of `--set`.
pub fn enumerated_keys() -> String {
    use scl_batching::ScheduleKind;
    use scl_data::ViewPreset;
    use scl_models::FinalActivation;
    use scl_train::config::OptimizerKind;
    use scl_train::deep::{LossKind, ModelKind};
    // Every variant, each list checked complete by a match the compiler holds exhaustive.
    fn schedules() -> [ScheduleKind; 4] {
        match ScheduleKind::Shuffle {
            ScheduleKind::Shuffle
            | ScheduleKind::BatchBinding
            | ScheduleKind::Fixed
            | ScheduleKind::ClassBalanced => {}
        }
        [
            ScheduleKind::Shuffle,
            ScheduleKind::BatchBinding,
            ScheduleKind::Fixed,
            ScheduleKind::ClassBalanced,
        ]
    }
    fn models() -> [ModelKind; 4] {
        match ModelKind::Mlp {
            ModelKind::Mlp | ModelKind::SmallCnn | ModelKind::Resnet18 | ModelKind::Densenet => {}
        }
        [
            ModelKind::Mlp,
            ModelKind::SmallCnn,
            ModelKind::Resnet18,
            ModelKind::Densenet,
        ]
    }
    fn losses() -> [LossKind; 2] {
        match LossKind::Scl {
            LossKind::Scl | LossKind::Ce => {}
        }
        [LossKind::Scl, LossKind::Ce]
    }
    fn activations() -> [FinalActivation; 2] {
        match FinalActivation::Relu {
            FinalActivation::Relu | FinalActivation::None => {}
        }
        [FinalActivation::Relu, FinalActivation::None]
    }
    fn optimizers() -> [OptimizerKind; 2] {
        match OptimizerKind::Sgd {
            OptimizerKind::Sgd | OptimizerKind::Adam => {}
        }
        [OptimizerKind::Sgd, OptimizerKind::Adam]
    }
    fn views() -> [ViewPreset; 4] {
        match ViewPreset::Single {
            ViewPreset::VerticalFlip
            | ViewPreset::Augment
            | ViewPreset::TwoAugmented
            | ViewPreset::Single => {}
        }
        [
            ViewPreset::VerticalFlip,
            ViewPreset::Augment,
            ViewPreset::TwoAugmented,
            ViewPreset::Single,
        ]
    }
    fn names<T: serde::Serialize>(values: &[T]) -> String {
        values
            .iter()
            .map(|v| {
                serde_json::to_value(v)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .expect("an enumerated key serialises to a string")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
    [
        ("dataset", scl_data::Manifest::builtin_names().join(", ")),
        ("model", names(&models())),
        ("loss", names(&losses())),
        ("schedule", names(&schedules())),
        ("final_activation", names(&activations())),
        ("views", names(&views())),
        ("optimizer", names(&optimizers())),
        ("imbalance.kind", IMBALANCE_KINDS.join(", ")),
    ]
    .iter()
    .map(|(key, values)| format!("  {key}: {values}"))
    .collect::<Vec<_>>()
    .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_value_is_accepted_and_others_get_the_librarys_sentence() {
        let cmd = clap::Command::new("t");
        for choice in [
            Choice::backend(),
            Choice::dataset(),
            Choice::dataset_or_all(),
            Choice::imbalance_kind(),
        ] {
            let listed: Vec<String> = choice
                .possible_values()
                .unwrap()
                .map(|p| p.get_name().to_string())
                .collect();
            assert!(listed.len() >= 3, "{listed:?}");
            for name in &listed {
                // A backend that is not compiled in is named here and refused later, with
                // the cargo feature to rebuild with.
                assert_eq!(
                    choice.parse_ref(&cmd, None, OsStr::new(name)).unwrap(),
                    *name
                );
            }
            let err = choice
                .parse_ref(&cmd, None, OsStr::new("nope"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("nope"), "{err}");
            for name in &listed {
                assert!(err.contains(name.as_str()), "{name} missing from: {err}");
            }
        }
    }

    #[test]
    fn the_set_help_lists_the_values_experiment_files_accept() {
        let help = enumerated_keys();
        assert_eq!(help.lines().count(), 8);
        for line in help.lines() {
            let (key, values) = line.trim().split_once(": ").unwrap();
            for value in values.split(", ") {
                let mut table: toml::Table = "dataset = \"mnist\"\nmodel = \"mlp\"\nepochs = 1"
                    .parse()
                    .unwrap();
                if key == "imbalance.kind" {
                    let mut imbalance = toml::Table::new();
                    imbalance.insert("kind".into(), value.into());
                    if value != "none" {
                        imbalance.insert("ratio".into(), 2.into());
                    }
                    table.insert("imbalance".into(), imbalance.into());
                } else {
                    table.insert(key.into(), value.into());
                }
                let parsed: Result<scl_train::deep::DeepConfig, _> = table.try_into();
                assert!(
                    parsed.is_ok(),
                    "{key} = {value} is listed but refused: {parsed:?}"
                );
            }
        }
    }
}
