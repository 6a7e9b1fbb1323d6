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

use scl_train::config::{ConfigError, UFM_KEYS, UFM_OPTIONAL_KEYS, UfmConfig};
use scl_train::deep::DeepConfig;

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

/// What the cells of a grid run (`kind` in an experiment file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CellKind {
    /// The unconstrained-features model ([`UfmConfig`]).
    Ufm,
    /// A deep network trained on a dataset ([`DeepConfig`]).
    Deep,
}

impl CellKind {
    /// Every kind, in the order cells of a file run.
    pub const ALL: [CellKind; 2] = [CellKind::Ufm, CellKind::Deep];

    /// The name written in experiment files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ufm => "ufm",
            Self::Deep => "deep",
        }
    }

    /// The `kind` key of `table` (default `ufm`); `place` says where it is, for the error.
    fn read(table: &Table, place: &str) -> Result<Self, ConfigError> {
        let Some(name) = string_value(table, "kind")? else {
            return Ok(Self::Ufm);
        };
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                ConfigError::new(format!(
                    "kind = \"{name}\"{place} is not allowed: the allowed kinds are \"ufm\", \"deep\""
                ))
            })
    }
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

/// A configuration that a cell runs: what grid expansion and the runner need of it.
pub trait CellConfig: Serialize + serde::de::DeserializeOwned + Clone {
    /// The kind of cell it makes.
    const KIND: CellKind;

    /// Every key an experiment file may set.
    fn keys() -> &'static [&'static str];

    /// The keys that must be set (in `[base]` or as an axis).
    fn required_keys() -> Vec<&'static str>;

    /// Checks the resolved configuration.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key and what is allowed.
    fn check(&self) -> Result<(), ConfigError>;

    /// A stable, readable id: the main settings, then a hash of the whole configuration.
    fn cell_id(&self) -> String;
}

impl CellConfig for UfmConfig {
    const KIND: CellKind = CellKind::Ufm;

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
    const KIND: CellKind = CellKind::Deep;

    fn keys() -> &'static [&'static str] {
        scl_train::deep::DEEP_KEYS
    }

    fn required_keys() -> Vec<&'static str> {
        scl_train::deep::DEEP_REQUIRED_KEYS.to_vec()
    }

    fn check(&self) -> Result<(), ConfigError> {
        self.validate()
    }

    /// `<dataset>-<model>-<imbalance>-<relu|norelu>-<schedule>-<loss>-s<seed>-<hash>`.
    fn cell_id(&self) -> String {
        let config = self;
        let json = serde_json::to_string(config).expect("a DeepConfig serialises to JSON");
        format!(
            "{}-{}-{}-{}-{}-{}-s{}-{:08x}",
            config.dataset,
            serde_plain(&config.model),
            config.imbalance.label(),
            match config.final_activation {
                scl_models::FinalActivation::Relu => "relu",
                scl_models::FinalActivation::None => "norelu",
            },
            config.schedule.name(),
            serde_plain(&config.loss),
            config.seed,
            fnv1a(json.as_bytes()) as u32
        )
    }
}

impl Experiment {
    /// The folder, under a results root, that holds this experiment's runs.
    pub fn folder_name(&self) -> String {
        match &self.profile {
            Some(p) => format!("{}-{p}", self.name),
            None => self.name.clone(),
        }
    }

    /// Number of cells of every kind.
    pub fn len(&self) -> usize {
        self.cells.len() + self.deep_cells.len()
    }

    /// True when the grid has no cell.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every cell id, UFM cells first.
    pub fn ids(&self) -> Vec<&str> {
        self.iter().map(CellRef::id).collect()
    }

    /// The cell at `index` of the whole grid (UFM cells first, as in [`Self::ids`]).
    pub fn cell(&self, index: usize) -> Option<CellRef<'_>> {
        match self.cells.get(index) {
            Some(c) => Some(CellRef::Ufm(c)),
            None => self
                .deep_cells
                .get(index - self.cells.len())
                .map(CellRef::Deep),
        }
    }

    /// Every cell, in grid order (UFM cells first).
    pub fn iter(&self) -> impl Iterator<Item = CellRef<'_>> {
        self.cells
            .iter()
            .map(CellRef::Ufm)
            .chain(self.deep_cells.iter().map(CellRef::Deep))
    }

    /// Reads and expands an experiment file.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file and the wrong key.
    pub fn load(path: &Path, profile: Option<&str>) -> Result<Self, ConfigError> {
        Self::load_with(path, profile, &[])
    }

    /// [`Experiment::load`] with `sets` (key and value overrides, e.g. from a command line)
    /// replacing
    /// base keys of every grid whose cells have that key.
    ///
    /// # Errors
    /// As [`Experiment::load`]; also a key no grid has, or one that is a grid axis.
    pub fn load_with(
        path: &Path,
        profile: Option<&str>,
        sets: &[(String, Value)],
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(format!(
                "cannot read experiment file {}: {e}",
                path.display()
            ))
        })?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "experiment".into());
        Self::parse_with(&text, &stem, profile, sets)
            .map_err(|e| ConfigError::new(format!("{}: {}", path.display(), e.message())))
    }

    /// Parses and expands experiment text; `default_name` is used when the file names none.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the wrong key.
    pub fn parse(
        text: &str,
        default_name: &str,
        profile: Option<&str>,
    ) -> Result<Self, ConfigError> {
        Self::parse_with(text, default_name, profile, &[])
    }

    /// [`Experiment::parse`] with `sets` replacing base keys (see [`Experiment::load_with`]).
    ///
    /// # Errors
    /// As [`Experiment::load_with`].
    pub fn parse_with(
        text: &str,
        default_name: &str,
        profile: Option<&str>,
        sets: &[(String, Value)],
    ) -> Result<Self, ConfigError> {
        let mut used = vec![false; sets.len()];
        let table: Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::new(format!("invalid TOML: {e}")))?;
        check_keys(
            &table,
            &["experiment", "base", "grid", "zip", "profiles", "parts"],
            "the top level",
        )?;

        let header = sub_table(&table, "experiment")?.unwrap_or_default();
        check_keys(&header, &["name", "kind", "description"], "[experiment]")?;
        let name = string_value(&header, "name")?.unwrap_or_else(|| default_name.to_string());
        check_folder_name("name", &name)?;
        if let Some(p) = profile {
            check_folder_name("the profile", p)?;
        }
        let kind = CellKind::read(&header, "")?;
        let description = string_value(&header, "description")?.unwrap_or_default();
        let profiles = sub_table(&table, "profiles")?.unwrap_or_default();
        check_profile_keys(&table, &profiles, kind)?;
        let chosen = match profile {
            None => None,
            Some(p) => {
                let Some(Value::Table(chosen)) = profiles.get(p) else {
                    let known: Vec<&String> = profiles.keys().collect();
                    return Err(ConfigError::new(format!(
                        "profile \"{p}\" is not defined: the profiles of this file are {known:?}"
                    )));
                };
                check_keys(
                    chosen,
                    &["base", "grid", "zip", "parts"],
                    &format!("[profiles.{p}]"),
                )?;
                Some((p, chosen.clone()))
            }
        };

        let mut experiment = Self {
            name,
            description,
            profile: profile.map(str::to_string),
            cells: Vec::new(),
            deep_cells: Vec::new(),
        };
        // The main grid, unless the file only has parts.
        if table.contains_key("base")
            || table.contains_key("grid")
            || table.contains_key("zip")
            || !table.contains_key("parts")
        {
            let base = sub_table(&table, "base")?.unwrap_or_default();
            let grid = sub_table(&table, "grid")?.unwrap_or_default();
            let zip = sub_table(&table, "zip")?.unwrap_or_default();
            let over = chosen
                .as_ref()
                .map(|(p, t)| (format!("[profiles.{p}]"), t.clone()));
            experiment.add_grid(kind, (base, grid, zip), over, (sets, &mut used), "")?;
        }
        for (part, value) in sub_table(&table, "parts")?.unwrap_or_default() {
            let Value::Table(part_table) = value else {
                return Err(ConfigError::new(format!(
                    "parts.{part} is not allowed as a value: it must be a table ([parts.{part}])"
                )));
            };
            let place = format!("[parts.{part}]");
            check_keys(&part_table, &["kind", "base", "grid", "zip"], &place)?;
            let part_kind = CellKind::read(&part_table, &format!(" of {place}"))?;
            let base = sub_table(&part_table, "base")?.unwrap_or_default();
            let grid = sub_table(&part_table, "grid")?.unwrap_or_default();
            let zip = sub_table(&part_table, "zip")?.unwrap_or_default();
            let over = match &chosen {
                Some((p, t)) => {
                    let parts = sub_table(t, "parts")?.unwrap_or_default();
                    match parts.get(&part) {
                        Some(Value::Table(o)) => {
                            check_keys(
                                o,
                                &["base", "grid", "zip"],
                                &format!("[profiles.{p}.parts.{part}]"),
                            )?;
                            Some((format!("[profiles.{p}.parts.{part}]"), o.clone()))
                        }
                        _ => None,
                    }
                }
                None => None,
            };
            experiment.add_grid(
                part_kind,
                (base, grid, zip),
                over,
                (sets, &mut used),
                &format!(" of {place}"),
            )?;
        }
        if let Some((p, t)) = &chosen {
            for part in sub_table(t, "parts")?.unwrap_or_default().keys() {
                let parts = sub_table(&table, "parts")?.unwrap_or_default();
                if !parts.contains_key(part) {
                    return Err(ConfigError::new(format!(
                        "[profiles.{p}.parts.{part}] overrides a part that does not exist: the parts are {:?}",
                        parts.keys().collect::<Vec<_>>()
                    )));
                }
            }
        }
        if let Some(((key, value), _)) = sets.iter().zip(&used).find(|(_, used)| !**used) {
            return Err(ConfigError::new(format!(
                "the override {key}={value} is not allowed: no cell of this experiment has the key {key}"
            )));
        }
        if experiment.is_empty() {
            return Err(ConfigError::new(
                "the experiment has no cell: give it a [grid] or a [parts.NAME] with settings",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = experiment.ids().into_iter().find(|id| !seen.insert(*id)) {
            return Err(ConfigError::new(format!(
                "two cells resolve to the same configuration ({dup}): remove the duplicate axis value"
            )));
        }
        Ok(experiment)
    }

    /// Expands one grid of `kind` (with a profile's overrides) and appends its cells.
    fn add_grid(
        &mut self,
        kind: CellKind,
        (mut base, mut grid, mut zip): (Table, Table, Table),
        over: Option<(String, Table)>,
        (sets, used): (&[(String, Value)], &mut [bool]),
        place: &str,
    ) -> Result<(), ConfigError> {
        if let Some((_, o)) = &over {
            for (k, v) in sub_table(o, "base")?.unwrap_or_default() {
                base.insert(k, v);
            }
            for (k, v) in sub_table(o, "grid")?.unwrap_or_default() {
                grid.insert(k, v);
            }
            if let Some(z) = sub_table(o, "zip")? {
                zip = z;
            }
        }
        let keys: &[&str] = match kind {
            CellKind::Ufm => UfmConfig::keys(),
            CellKind::Deep => DeepConfig::keys(),
        };
        check_keys(&base, keys, &format!("[base]{place}"))?;
        check_keys(&grid, keys, &format!("[grid]{place}"))?;
        check_keys(&zip, keys, &format!("[zip]{place}"))?;
        for ((key, value), used) in sets.iter().zip(used.iter_mut()) {
            if !keys.contains(&key.as_str()) {
                continue;
            }
            if grid.contains_key(key) || zip.contains_key(key) {
                return Err(ConfigError::new(format!(
                    "the override {key}={value} is not allowed: {key} is a grid axis{place}; an \
                     override replaces base keys only (change the axis in the file or in a profile)"
                )));
            }
            base.insert(key.clone(), value.clone());
            *used = true;
        }

        let mut axes: Vec<(String, Vec<Value>)> = Vec::new();
        for (key, value) in &grid {
            let Value::Array(values) = value else {
                return Err(ConfigError::new(format!(
                    "grid axis {key} is not allowed as a single value: write a list, e.g. {key} = [{value}]"
                )));
            };
            if values.is_empty() {
                return Err(ConfigError::new(format!(
                    "grid axis {key} is empty: give it at least one value"
                )));
            }
            axes.push((key.clone(), values.clone()));
        }
        // The zipped keys, one combined axis after the product axes.
        let mut zipped: Vec<(String, Vec<Value>)> = Vec::new();
        for (key, value) in &zip {
            if grid.contains_key(key) {
                return Err(ConfigError::new(format!(
                    "{key} is both a [grid] and a [zip] axis{place}: keep it in one of them"
                )));
            }
            let Value::Array(values) = value else {
                return Err(ConfigError::new(format!(
                    "zip axis {key} is not allowed as a single value: write a list, e.g. {key} = [{value}]"
                )));
            };
            if let Some((first, len)) = zipped.first().map(|(k, v)| (k, v.len()))
                && values.len() != len
            {
                return Err(ConfigError::new(format!(
                    "zip axis {key} has {} values where {first} has {len}: zipped axes need equal lengths",
                    values.len()
                )));
            }
            if values.is_empty() {
                return Err(ConfigError::new(format!(
                    "zip axis {key} is empty: give it at least one value"
                )));
            }
            zipped.push((key.clone(), values.clone()));
        }
        let zip_len = zipped.first().map_or(1, |(_, v)| v.len());

        let total: usize = axes.iter().map(|(_, v)| v.len()).product::<usize>() * zip_len;
        for index in 0..total {
            let mut settings = base.clone();
            let mut chosen = Vec::new();
            let z = index % zip_len;
            let mut rest = index / zip_len;
            for (key, values) in axes.iter().rev() {
                let v = &values[rest % values.len()];
                rest /= values.len();
                settings.insert(key.clone(), v.clone());
                chosen.push((key.clone(), display_value(v)));
            }
            chosen.reverse();
            for (key, values) in &zipped {
                settings.insert(key.clone(), values[z].clone());
                chosen.push((key.clone(), display_value(&values[z])));
            }
            match kind {
                CellKind::Ufm => push(&mut self.cells, settings, chosen)?,
                CellKind::Deep => push(&mut self.deep_cells, settings, chosen)?,
            }
        }
        Ok(())
    }
}

fn where_of(axes: &[(String, String)]) -> String {
    if axes.is_empty() {
        String::new()
    } else {
        let parts: Vec<String> = axes.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        format!(" (in the cell {})", parts.join(", "))
    }
}

/// Checks the keys of every profile, selected or not, so that a misspelt key is found the
/// first time the file is used rather than the first time its profile is: the tables of a
/// profile, the keys of its grids against their kind's, and the parts it overrides.
fn check_profile_keys(table: &Table, profiles: &Table, kind: CellKind) -> Result<(), ConfigError> {
    let parts = sub_table(table, "parts")?.unwrap_or_default();
    let keys_of = |kind: CellKind| -> &'static [&'static str] {
        match kind {
            CellKind::Ufm => UfmConfig::keys(),
            CellKind::Deep => DeepConfig::keys(),
        }
    };
    let check_grids = |t: &Table, keys: &[&str], place: &str| -> Result<(), ConfigError> {
        for section in ["base", "grid", "zip"] {
            if let Some(sub) = sub_table(t, section)? {
                check_keys(&sub, keys, &format!("[{place}.{section}]"))?;
            }
        }
        Ok(())
    };
    for (p, value) in profiles {
        let Value::Table(profile) = value else {
            return Err(ConfigError::new(format!(
                "profiles.{p} is not allowed as a value: it must be a table ([profiles.{p}])"
            )));
        };
        let place = format!("profiles.{p}");
        check_keys(
            profile,
            &["base", "grid", "zip", "parts"],
            &format!("[{place}]"),
        )?;
        check_grids(profile, keys_of(kind), &place)?;
        for (part, over) in sub_table(profile, "parts")?.unwrap_or_default() {
            let Some(Value::Table(part_table)) = parts.get(&part) else {
                return Err(ConfigError::new(format!(
                    "[{place}.parts.{part}] overrides a part that does not exist: the parts are {:?}",
                    parts.keys().collect::<Vec<_>>()
                )));
            };
            let Value::Table(over) = over else {
                return Err(ConfigError::new(format!(
                    "{place}.parts.{part} is not allowed as a value: it must be a table"
                )));
            };
            let part_place = format!("{place}.parts.{part}");
            check_keys(&over, &["base", "grid", "zip"], &format!("[{part_place}]"))?;
            let part_kind = CellKind::read(part_table, &format!(" of [parts.{part}]"))?;
            check_grids(&over, keys_of(part_kind), &part_place)?;
        }
    }
    Ok(())
}

/// Turns the merged settings of one cell into a validated configuration: every key of
/// `required` present, the table deserialised, `validate` passed; errors name the cell.
/// The longest experiment name or profile, in bytes: the folder `<name>-<profile>` and the
/// temporaries written beside it stay well inside the 255 bytes most file systems allow.
pub const MAX_FOLDER_NAME: usize = 100;

/// The experiment's name (and profile) become a folder under the results root: one path
/// component, not hidden (hidden names are the runner's own), without separators or control
/// characters, at most [`MAX_FOLDER_NAME`] bytes.
fn check_folder_name(what: &str, name: &str) -> Result<(), ConfigError> {
    /// At most 60 characters of a long name, for messages.
    fn shorten(name: &str) -> String {
        if name.chars().count() <= 60 {
            name.to_string()
        } else {
            format!("{}...", name.chars().take(60).collect::<String>())
        }
    }
    let bad = if name.is_empty() {
        Some("it is empty".to_string())
    } else if name == "." || name == ".." || name.starts_with('.') {
        Some("it starts with a dot".to_string())
    } else if name.contains(['/', '\\', '\0']) {
        Some("it contains a path separator".to_string())
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character (a newline, a tab)".to_string())
    } else if name.len() > MAX_FOLDER_NAME {
        Some(format!("it is {} bytes long", name.len()))
    } else {
        None
    };
    match bad {
        None => Ok(()),
        Some(why) => Err(ConfigError::new(format!(
            "{what} {:?} is not allowed: {why}; it names the results folder, so it must be \
             one folder name (1 to {MAX_FOLDER_NAME} bytes, not starting with '.', without '/', \
             '\\' or control characters)",
            shorten(name)
        ))),
    }
}

/// Resolves one cell's settings into a configuration and appends the cell to `cells`.
fn push<C: CellConfig>(
    cells: &mut Vec<Cell<C>>,
    settings: Table,
    axes: Vec<(String, String)>,
) -> Result<(), ConfigError> {
    let config: C = resolve(settings, &axes, &C::required_keys(), C::check)?;
    cells.push(Cell {
        index: cells.len(),
        id: config.cell_id(),
        axes,
        config,
    });
    Ok(())
}

fn resolve<T: serde::de::DeserializeOwned>(
    settings: Table,
    axes: &[(String, String)],
    required: &[&str],
    validate: impl FnOnce(&T) -> Result<(), ConfigError>,
) -> Result<T, ConfigError> {
    let where_ = where_of(axes);
    if let Some(key) = required.iter().find(|k| !settings.contains_key(**k)) {
        return Err(ConfigError::new(format!(
            "{key} is missing{where_}: set it in [base] or as a [grid] axis"
        )));
    }
    let config: T = Value::Table(settings)
        .try_into()
        .map_err(|e: toml::de::Error| {
            ConfigError::new(format!("{}{where_}", e.message().trim()))
        })?;
    validate(&config).map_err(|e| ConfigError::new(format!("{}{where_}", e.message())))?;
    Ok(config)
}

/// Serde's name of a unit enum value (`relu`, `mlp`, `scl`), for ids and tables.
pub fn serde_plain<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn display_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// 64-bit FNV-1a, a hash that does not change between Rust releases.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn sub_table(table: &Table, key: &str) -> Result<Option<Table>, ConfigError> {
    match table.get(key) {
        None => Ok(None),
        Some(Value::Table(t)) => Ok(Some(t.clone())),
        Some(_) => Err(ConfigError::new(format!(
            "{key} is not allowed as a value: it must be a table ([{key}])"
        ))),
    }
}

fn string_value(table: &Table, key: &str) -> Result<Option<String>, ConfigError> {
    match table.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(ConfigError::new(format!(
            "{key} = {v} is not allowed: it must be a string"
        ))),
    }
}

fn check_keys(table: &Table, allowed: &[&str], place: &str) -> Result<(), ConfigError> {
    for key in table.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(ConfigError::new(format!(
                "unknown key `{key}` in {place}: the allowed keys are {}",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        [experiment]
        name = "t"
        [base]
        n_majority = 10
        temperature = 1.0
        steps = 5
        lr = 0.1
        optimizer = "adam"
        log_every = 1
        num_classes = 4
        [grid]
        ratio = [1, 10]
        relu = [true, false]
        seed = [0, 1, 2]
        [profiles.smoke.grid]
        seed = [7]
    "#;

    #[test]
    fn the_grid_is_the_product_of_its_axes_with_the_last_axis_fastest() {
        let e = Experiment::parse(BASE, "x", None).unwrap();
        assert_eq!(e.cells.len(), 12);
        assert_eq!(e.cells[1].axes[2], ("seed".to_string(), "1".to_string()));
        assert_eq!(
            e.cells[3].axes[1],
            ("relu".to_string(), "false".to_string())
        );
        assert_eq!(e.cells[6].config.ratio, 10.0);
        let ids: std::collections::HashSet<_> = e.cells.iter().map(|c| &c.id).collect();
        assert_eq!(ids.len(), 12, "ids are unique");
    }

    #[test]
    fn a_profile_replaces_axes_and_the_ids_stay_stable() {
        let e = Experiment::parse(BASE, "x", Some("smoke")).unwrap();
        assert_eq!(e.cells.len(), 4);
        assert!(e.cells.iter().all(|c| c.config.seed == 7));
        assert_eq!(e.folder_name(), "t-smoke");
        let again = Experiment::parse(BASE, "x", Some("smoke")).unwrap();
        assert_eq!(e.cells[2].id, again.cells[2].id);
        assert!(
            e.cells[0].id.starts_with("ufm-K4-R1-relu-s7-"),
            "{}",
            e.cells[0].id
        );
    }

    #[test]
    fn wrong_settings_name_the_key_and_the_allowed_values() {
        let unknown = BASE.replace("lr = 0.1", "lr = 0.1\nlearning_rate = 3");
        let e = Experiment::parse(&unknown, "x", None).unwrap_err();
        assert!(
            e.message().starts_with(
                "unknown key `learning_rate` in [base]: the allowed keys are num_classes"
            ),
            "{e}"
        );

        let cold = BASE.replace("temperature = 1.0", "temperature = 0.0");
        let e = Experiment::parse(&cold, "x", None).unwrap_err();
        assert!(
            e.message()
                .starts_with("temperature = 0 is not allowed: it must be a finite number above 0"),
            "{e}"
        );

        let small = BASE.replace("ratio = [1, 10]", "ratio = [0.5]");
        let e = Experiment::parse(&small, "x", None).unwrap_err();
        assert!(e.message().starts_with("ratio = 0.5 is not allowed"), "{e}");

        let narrow = BASE.replace("num_classes = 4", "num_classes = 4\ndim = 3");
        let e = Experiment::parse(&narrow, "x", None).unwrap_err();
        assert!(
            e.message()
                .starts_with("dim = 3 is not allowed: it must be at least num_classes = 4"),
            "{e}"
        );

        let e = Experiment::parse(BASE, "x", Some("huge")).unwrap_err();
        assert!(e.message().contains("\"smoke\""), "{e}");

        let empty = BASE.replace("seed = [0, 1, 2]", "seed = []");
        assert!(
            Experiment::parse(&empty, "x", None)
                .unwrap_err()
                .message()
                .contains("seed is empty")
        );
    }

    const DEEP: &str = r#"
        [experiment]
        name = "d"
        [base]
        n_majority = 10
        temperature = 1.0
        steps = 5
        lr = 0.1
        optimizer = "adam"
        log_every = 1
        num_classes = 4
        ratio = 1
        relu = true
        seed = 0
        [parts.net]
        kind = "deep"
        [parts.net.base]
        dataset = "sklearn-digits"
        model = "mlp"
        epochs = 3
        [parts.net.grid]
        final_activation = ["relu", "none"]
        schedule = ["shuffle", "batch-binding"]
        [profiles.smoke.parts.net.grid]
        schedule = ["batch-binding"]
    "#;

    #[test]
    fn parts_add_deep_cells_after_the_main_grid_and_profiles_reach_them() {
        let e = Experiment::parse(DEEP, "x", None).unwrap();
        assert_eq!((e.cells.len(), e.deep_cells.len()), (1, 4));
        let ids: Vec<&str> = e.deep_cells.iter().map(|c| c.id.as_str()).collect();
        assert!(
            ids[0].starts_with("sklearn-digits-mlp-none-relu-shuffle-scl-s0-"),
            "{ids:?}"
        );
        assert!(
            ids[3].starts_with("sklearn-digits-mlp-none-norelu-batch-binding-scl-s0-"),
            "{ids:?}"
        );
        let smoke = Experiment::parse(DEEP, "x", Some("smoke")).unwrap();
        assert_eq!(smoke.deep_cells.len(), 2);
        assert_eq!(smoke.ids().len(), 3);
    }

    #[test]
    fn deep_settings_errors_name_the_key() {
        let bad = DEEP.replace("epochs = 3", "epochs = 3\nepoch = 4");
        let e = Experiment::parse(&bad, "x", None).unwrap_err();
        assert!(
            e.message()
                .starts_with("unknown key `epoch` in [base] of [parts.net]"),
            "{e}"
        );
        let bad = DEEP.replace("model = \"mlp\"", "model = \"vgg\"");
        let e = Experiment::parse(&bad, "x", None).unwrap_err();
        assert!(e.message().contains("unknown variant `vgg`"), "{e}");
        let bad = DEEP.replace("dataset = \"sklearn-digits\"", "dataset = \"imagenet\"");
        let e = Experiment::parse(&bad, "x", None).unwrap_err();
        assert!(e.message().contains("unknown dataset `imagenet`"), "{e}");
        let bad = DEEP.replace("kind = \"deep\"", "kind = \"gan\"");
        let e = Experiment::parse(&bad, "x", None).unwrap_err();
        assert!(
            e.message()
                .contains("the allowed kinds are \"ufm\", \"deep\""),
            "{e}"
        );
        let bad = DEEP.replace(
            "[profiles.smoke.parts.net.grid]",
            "[profiles.smoke.parts.other.grid]",
        );
        let e = Experiment::parse(&bad, "x", Some("smoke")).unwrap_err();
        assert!(
            e.message().contains("overrides a part that does not exist"),
            "{e}"
        );
    }

    /// The expansion of a grid as text: index, id and axis values of every cell.
    fn expansion(e: &Experiment) -> String {
        let mut out = format!("{} ({} cells)\n", e.folder_name(), e.len());
        let axes = e
            .cells
            .iter()
            .map(|c| (c.index, &c.id, &c.axes))
            .chain(e.deep_cells.iter().map(|c| (c.index, &c.id, &c.axes)));
        for (i, id, axes) in axes {
            let values: Vec<String> = axes.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("{i:>3} {id} {}\n", values.join(" ")));
        }
        out
    }

    const ZIPPED: &str = r#"
        [experiment]
        name = "z"
        [base]
        n_majority = 10
        temperature = 1.0
        steps = 5
        optimizer = "adam"
        log_every = 1
        num_classes = 4
        [grid]
        ratio = [1, 10]
        relu = [true, false]
        [zip]
        seed = [0, 1, 2]
        lr = [0.1, 0.05, 0.01]
        [profiles.smoke.base]
        steps = 2
        [profiles.smoke.grid]
        ratio = [10]
        [profiles.smoke.zip]
        seed = [5]
        lr = [0.2]
    "#;

    #[test]
    fn an_unknown_key_in_a_profile_that_is_not_selected_is_refused() {
        for (profile, place) in [
            ("[profiles.big.base]\nstepz = 5\n", "[profiles.big.base]"),
            ("[profiles.big.grid]\nseedz = [1]\n", "[profiles.big.grid]"),
            ("[profiles.big]\nbasee = 1\n", "[profiles.big]"),
        ] {
            let text = format!("{BASE}\n{profile}");
            for selected in [None, Some("smoke")] {
                let e = Experiment::parse(&text, "x", selected).unwrap_err();
                assert!(
                    e.message().starts_with("unknown key `") && e.message().contains(place),
                    "{selected:?}: {e}"
                );
            }
        }
    }

    #[test]
    fn an_experiment_name_that_is_not_one_folder_name_is_refused() {
        let long = "a".repeat(300);
        for name in [
            "../../escape",
            "/abs/path",
            "",
            ".hidden",
            "a/b",
            "a\\b",
            "a\nb",
            "tab\there",
            long.as_str(),
        ] {
            let text = format!(
                "[experiment]\nname = {name:?}\n{}",
                &BASE[BASE.find("[base]").unwrap()..]
            );
            let e = Experiment::parse(&text, "x", None).unwrap_err();
            assert!(e.message().starts_with("name "), "{name:?}: {e}");
            assert!(e.message().contains("not allowed"), "{name:?}: {e}");
        }
        let text = format!(
            "[experiment]\nname = \"ok name-1.2\"\n{}",
            &BASE[BASE.find("[base]").unwrap()..]
        );
        assert_eq!(
            Experiment::parse(&text, "x", None).unwrap().name,
            "ok name-1.2"
        );
    }

    #[test]
    fn grid_expansions_match_their_snapshots() {
        let quick = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/quick.toml"),
        )
        .unwrap();
        let cases = [
            ("product", BASE, None),
            ("product-smoke", BASE, Some("smoke")),
            ("zip", ZIPPED, None),
            ("zip-smoke", ZIPPED, Some("smoke")),
            ("parts", DEEP, None),
            ("parts-smoke", DEEP, Some("smoke")),
            ("quick-smoke", quick.as_str(), Some("smoke")),
        ];
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/snapshots");
        for (name, text, profile) in cases {
            let got = expansion(&Experiment::parse(text, "x", profile).unwrap());
            let path = dir.join(format!("grid-{name}.txt"));
            if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &got).unwrap();
            }
            let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!("{}: {e} (UPDATE_SNAPSHOTS=1 writes it)", path.display())
            });
            assert_eq!(
                got, want,
                "{name}: rerun with UPDATE_SNAPSHOTS=1 after an intended change"
            );
        }
    }

    #[test]
    fn zipped_axes_move_together_and_a_bad_zip_is_one_sentence() {
        let e = Experiment::parse(ZIPPED, "x", None).unwrap();
        assert_eq!(e.cells.len(), 12);
        for c in &e.cells {
            let pairs = [(0, 0.1), (1, 0.05), (2, 0.01)];
            assert!(
                pairs.contains(&(c.config.seed, c.config.lr)),
                "{:?}",
                c.axes
            );
        }
        let both = ZIPPED.replace("relu = [true, false]", "relu = [true, false]\nseed = [0]");
        let e = Experiment::parse(&both, "x", None).unwrap_err();
        assert!(
            e.message()
                .contains("seed is both a [grid] and a [zip] axis"),
            "{e}"
        );
    }
}
