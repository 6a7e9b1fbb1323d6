//! Options whose value is one of a fixed list (backends, datasets, imbalance kinds): clap
//! lists the values in `--help` and shells complete them, and a wrong value gets the one
//! sentence of the library that owns the list, naming the value and what is allowed.
//!
//! A backend is parsed once, here, into [`BackendKind`] ([`backend_kind`]) and carried as
//! that; the other values stay text after parsing, so the commands hand them on unchanged.

use std::ffi::OsStr;

use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::ErrorKind;
use scl_data::ImbalanceKind;
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

    /// An imbalance construction of `data imbalance`: a kind made from a ratio
    /// ([`ImbalanceKind::with_ratio`]).
    pub fn imbalance_kind() -> Self {
        Self {
            names: ratio_kinds().iter().map(|k| k.name()).collect(),
            check: |v| match v.parse::<ImbalanceKind>() {
                Ok(kind) if ratio_kinds().contains(&kind) => Ok(()),
                _ => Err(format!(
                    "--kind {v} is not allowed: the allowed kinds are {}",
                    ratio_kinds()
                        .iter()
                        .map(|k| k.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            },
        }
    }
}

/// The imbalance kinds a ratio makes (all but `counts`).
fn ratio_kinds() -> Vec<ImbalanceKind> {
    ImbalanceKind::ALL
        .into_iter()
        .filter(|k| k.with_ratio(1.0, None).is_some())
        .collect()
}

/// A value parser that gives an [`ImbalanceKind`] made from a ratio: the names, help and
/// sentence of [`Choice::imbalance_kind`].
pub fn imbalance_kind() -> impl TypedValueParser<Value = ImbalanceKind> {
    Choice::imbalance_kind().try_map(|name| name.parse::<ImbalanceKind>())
}

/// A value parser that gives a [`BackendKind`]: the names, help and sentence of
/// [`Choice::backend`].
pub fn backend_kind() -> impl TypedValueParser<Value = BackendKind> {
    Choice::backend().try_map(|name| name.parse::<BackendKind>())
}

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

/// The serde names of `values`, joined by commas.
fn names_of<T: serde::Serialize>(values: &[T]) -> String {
    values
        .iter()
        .map(scl_train::config::serde_plain)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The values of the enumerated keys of experiment and run files, for the help of `--set`.
pub fn enumerated_keys() -> String {
    use scl_batching::ScheduleKind;
    use scl_data::ViewPreset;
    use scl_models::FinalActivation;
    use scl_train::config::OptimizerKind;
    use scl_train::deep::{CnnHead, LossKind, ModelKind};
    // Every list is the owning crate's `ALL`; the test below holds each complete.
    [
        ("dataset", scl_data::Manifest::builtin_names().join(", ")),
        ("model", names_of(&ModelKind::ALL)),
        ("cnn_head", names_of(&CnnHead::ALL)),
        ("init", names_of(&scl_models::WeightInit::ALL)),
        ("loss", names_of(&LossKind::ALL)),
        ("schedule", names_of(&ScheduleKind::ALL)),
        ("final_activation", names_of(&FinalActivation::ALL)),
        ("views", names_of(&ViewPreset::ALL)),
        ("optimizer", names_of(&OptimizerKind::ALL)),
        (
            "imbalance.kind",
            ImbalanceKind::ALL.map(ImbalanceKind::name).join(", "),
        ),
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

    /// The names serde's error for an unknown variant lists: every variant of `T`.
    fn serde_names<T: serde::de::DeserializeOwned + std::fmt::Debug>() -> Vec<String> {
        let err = serde_json::from_str::<T>("\"no such variant\"")
            .unwrap_err()
            .to_string();
        let expected = err.split("expected").nth(1).unwrap_or_default();
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_all_list_holds_every_variant() {
        use scl_batching::ScheduleKind;
        use scl_data::ViewPreset;
        use scl_models::FinalActivation;
        use scl_train::config::OptimizerKind;
        use scl_train::deep::{CnnHead, LossKind, ModelKind};
        let listed = |names: String| -> Vec<String> {
            let mut v: Vec<String> = names.split(", ").map(str::to_string).collect();
            v.sort();
            v
        };
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        let cases = [
            (names_of(&ScheduleKind::ALL), serde_names::<ScheduleKind>()),
            (names_of(&ViewPreset::ALL), serde_names::<ViewPreset>()),
            (
                names_of(&FinalActivation::ALL),
                serde_names::<FinalActivation>(),
            ),
            (
                names_of(&OptimizerKind::ALL),
                serde_names::<OptimizerKind>(),
            ),
            (names_of(&LossKind::ALL), serde_names::<LossKind>()),
            (names_of(&ModelKind::ALL), serde_names::<ModelKind>()),
            (names_of(&CnnHead::ALL), serde_names::<CnnHead>()),
            (
                names_of(&scl_models::WeightInit::ALL),
                serde_names::<scl_models::WeightInit>(),
            ),
        ];
        for (all, variants) in cases {
            assert!(variants.len() >= 2, "{variants:?}");
            assert_eq!(listed(all), sorted(variants));
        }
    }

    #[test]
    fn the_set_help_lists_the_values_experiment_files_accept() {
        let help = enumerated_keys();
        assert_eq!(help.lines().count(), 10);
        for line in help.lines() {
            let (key, values) = line.trim().split_once(": ").unwrap();
            for value in values.split(", ") {
                let mut table: toml::Table = "dataset = \"mnist\"\nmodel = \"mlp\"\nepochs = 1"
                    .parse()
                    .unwrap();
                if key == "imbalance.kind" {
                    let mut imbalance = toml::Table::new();
                    imbalance.insert("kind".into(), value.into());
                    match value {
                        "none" => {}
                        "counts" => {
                            imbalance.insert("counts".into(), vec![10; 10].into());
                        }
                        _ => {
                            imbalance.insert("ratio".into(), 2.into());
                        }
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
