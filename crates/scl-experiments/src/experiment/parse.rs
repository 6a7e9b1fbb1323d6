//! Reading an experiment file: keys checked, profiles and overrides applied, grids expanded
//! into cells, every cell validated.

use super::*;

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
        let kind = read_kind(&header, "")?;
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
            let part_kind = read_kind(&part_table, &format!(" of {place}"))?;
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

pub(crate) fn where_of(axes: &[(String, String)]) -> String {
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
pub(super) fn check_profile_keys(
    table: &Table,
    profiles: &Table,
    kind: CellKind,
) -> Result<(), ConfigError> {
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
            let part_kind = read_kind(part_table, &format!(" of [parts.{part}]"))?;
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
pub(super) fn check_folder_name(what: &str, name: &str) -> Result<(), ConfigError> {
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
pub(super) fn push<C: CellConfig>(
    cells: &mut Vec<Cell<C>>,
    settings: Table,
    axes: Vec<(String, String)>,
) -> Result<(), ConfigError> {
    let mut settings = settings;
    C::normalise(&mut settings)
        .map_err(|e| ConfigError::new(format!("{}{}", e.message(), where_of(&axes))))?;
    let config: C = resolve(settings, &axes, &C::required_keys(), C::check)?;
    cells.push(Cell {
        index: cells.len(),
        id: config.cell_id(),
        axes,
        config,
    });
    Ok(())
}

pub(super) fn resolve<T: serde::de::DeserializeOwned>(
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

pub(super) fn display_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(super) fn sub_table(table: &Table, key: &str) -> Result<Option<Table>, ConfigError> {
    match table.get(key) {
        None => Ok(None),
        Some(Value::Table(t)) => Ok(Some(t.clone())),
        Some(_) => Err(ConfigError::new(format!(
            "{key} is not allowed as a value: it must be a table ([{key}])"
        ))),
    }
}

pub(super) fn string_value(table: &Table, key: &str) -> Result<Option<String>, ConfigError> {
    match table.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(ConfigError::new(format!(
            "{key} = {v} is not allowed: it must be a string"
        ))),
    }
}

pub(super) fn check_keys(table: &Table, allowed: &[&str], place: &str) -> Result<(), ConfigError> {
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
