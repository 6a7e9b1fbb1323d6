//! Checkpoints: saved under a staging name with a list of their files (sizes and md5s), verified before loading, the newest intact one used.

use super::*;

impl Run<'_> {
    /// Writes `root/epoch-NNNN` (or `epoch-NNNN-batch-BBBBB` in the middle of an epoch),
    /// points `root/latest` at it and returns its path.
    pub(super) fn save_checkpoint(
        &self,
        root: &Path,
        state: &State,
        model: &SclModel,
        optim: &ModuleOptimizer,
    ) -> Result<PathBuf, RunError> {
        let name = if state.batch_in_epoch == 0 {
            format!("epoch-{:04}", state.epochs_done)
        } else {
            format!(
                "epoch-{:04}-batch-{:05}",
                state.epochs_done, state.batch_in_epoch
            )
        };
        // Filled under a temporary name and renamed whole; `latest` moves only after that.
        let staged = scl_fs::StagedDir::new_in(root, &name)?;
        let tmp = staged.path();
        // `valid` syncs the batch norms' running statistics, so the file holds the last
        // step's update (Burn's record reads them as they were one update before).
        let _ = model.valid();
        model
            .clone()
            .save_file(tmp.join("model"))
            .map_err(io(tmp))?;
        optim.save(tmp.join("optimizer")).map_err(io(tmp))?;
        write_json(&tmp.join("state.json"), state)?;
        write_json(&tmp.join(CHECKPOINT_FILES), &FileList::of(tmp)?)?;
        let dest = root.join(&name);
        staged.commit(&dest)?;
        scl_fs::write(&root.join("latest"), &name)?;
        Ok(dest)
    }

    /// The newest intact checkpoint under `root`, with the model and optimiser loaded from
    /// it: the one `latest` names, else (with a warning naming what is wrong with each newer
    /// one) the next older intact one. `None` when there is no checkpoint.
    ///
    /// # Errors
    /// [`RunError::Config`] for a checkpoint of another configuration or of a model layout
    /// this version cannot read; [`RunError::DamagedCheckpoint`] when checkpoints exist but
    /// none is intact.
    #[allow(clippy::type_complexity)]
    pub(super) fn load_latest(
        &self,
        root: &Path,
        model: &SclModel,
        optim: &ModuleOptimizer,
    ) -> Result<Option<(State, SclModel, ModuleOptimizer)>, RunError> {
        let candidates = checkpoint_candidates(root);
        if candidates.is_empty() {
            return Ok(None);
        }
        let mut damaged = Vec::new();
        for dir in &candidates {
            match self.load_checkpoint(dir, model, optim) {
                Ok(loaded) => {
                    for why in &damaged {
                        eprintln!("warning: damaged checkpoint: {why}");
                    }
                    if !damaged.is_empty() {
                        eprintln!(
                            "warning: resuming from the intact checkpoint {}",
                            dir.display()
                        );
                    }
                    return Ok(Some(loaded));
                }
                Err(Loaded::Damaged(why)) => damaged.push(why),
                Err(Loaded::Refused(e)) => return Err(e),
            }
        }
        Err(RunError::DamagedCheckpoint(format!(
            "no intact checkpoint in {} ({}); remove the damaged ones to start the run again",
            root.display(),
            damaged.join("; ")
        )))
    }

    /// Validates and loads one checkpoint folder.
    #[allow(clippy::type_complexity)]
    pub(super) fn load_checkpoint(
        &self,
        dir: &Path,
        model: &SclModel,
        optim: &ModuleOptimizer,
    ) -> Result<(State, SclModel, ModuleOptimizer), Loaded> {
        let list = FileList::check(dir).map_err(Loaded::Damaged)?;
        let state_path = dir.join("state.json");
        let state: State = std::fs::read_to_string(&state_path)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
            .and_then(|mut value: serde_json::Value| {
                // A checkpoint written before the `dampening` key existed ran with Burn's.
                if let Some(serde_json::Value::Object(config)) = value.get_mut("config") {
                    DeepConfig::upgrade_json(config);
                }
                serde_json::from_value(value).map_err(|e| e.to_string())
            })
            .map_err(|e| Loaded::Damaged(format!("{}: {e}", state_path.display())))?;
        if state.config != *self.cfg {
            return Err(Loaded::Refused(RunError::Config(ConfigError::new(
                format!(
                    "{} holds a checkpoint of a different configuration; use another run directory",
                    self.opts.run_dir.display()
                ),
            ))));
        }
        if state.model_format < MODEL_FORMAT {
            return Err(Loaded::Refused(RunError::Config(ConfigError::new(
                format!(
                    "{} holds a checkpoint written by an earlier version (Burn 0.21's record \
                     files model.bin and optimizer.bin), which this version cannot load; start \
                     the run again in a new run directory",
                    self.opts.run_dir.display()
                ),
            ))));
        }
        self.check_position(&state)
            .map_err(|why| Loaded::Damaged(format!("{}: {why}", state_path.display())))?;
        list.names(dir, &["model.bpk", "optimizer.bpk"])
            .map_err(Loaded::Damaged)?;
        let model = model
            .clone()
            .try_load_file(dir.join("model.bpk"))
            .map_err(|e| Loaded::Damaged(format!("{}: {e}", dir.join("model.bpk").display())))?;
        let optim = optim.clone().load(dir.join("optimizer.bpk")).map_err(|e| {
            Loaded::Damaged(format!("{}: {e}", dir.join("optimizer.bpk").display()))
        })?;
        Ok((state, model, optim))
    }

    /// Whether a checkpoint's position agrees with the run: at most `epochs` epochs done, a
    /// batch inside its epoch, the step count those imply, and one metrics row per evaluated
    /// epoch so far.
    pub(super) fn check_position(&self, state: &State) -> Result<(), String> {
        let cfg = self.cfg;
        // Every epoch of a schedule has the same number of batches.
        let per_epoch = self.schedule.epoch(0).len();
        if state.epochs_done > cfg.epochs {
            return Err(format!(
                "it says {} epochs are done, but the run has {}",
                state.epochs_done, cfg.epochs
            ));
        }
        if state.batch_in_epoch > 0
            && (state.epochs_done == cfg.epochs || state.batch_in_epoch >= per_epoch)
        {
            return Err(format!(
                "it is at batch {} of epoch {}, which has {} batches",
                state.batch_in_epoch,
                state.epochs_done + 1,
                per_epoch
            ));
        }
        let step = state.epochs_done * per_epoch + state.batch_in_epoch;
        if state.step != step {
            return Err(format!(
                "it says {} steps were taken, but its position implies {step}",
                state.step
            ));
        }
        let evaluated: Vec<usize> = (1..=state.epochs_done)
            .filter(|&e| cfg.is_evaluated(e))
            .collect();
        let rows: Vec<usize> = state.metrics.iter().map(|m| m.epoch).collect();
        if rows != evaluated {
            return Err(format!(
                "it holds metrics of epochs {rows:?}, but epochs {evaluated:?} were evaluated"
            ));
        }
        Ok(())
    }
}

/// Why a checkpoint was not loaded.
pub(super) enum Loaded {
    /// It is damaged (a file missing, truncated, changed or unreadable; a position the run
    /// cannot have reached): an older one may be used instead.
    Damaged(String),
    /// It is intact but belongs to another run: nothing is resumed.
    Refused(RunError),
}

/// The checkpoint folders under `root`, the one `latest` names first, then the others from
/// the newest position to the oldest.
pub(super) fn checkpoint_candidates(root: &Path) -> Vec<PathBuf> {
    let position = |name: &str| -> Option<(usize, usize)> {
        let rest = name.strip_prefix("epoch-")?;
        let (epoch, batch) = match rest.split_once("-batch-") {
            Some((e, b)) => (e, b.parse().ok()?),
            None => (rest, 0),
        };
        Some((epoch.parse().ok()?, batch))
    };
    let mut found: Vec<((usize, usize), PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((position(&e.file_name().to_string_lossy())?, e.path())))
        .collect();
    found.sort_by_key(|(position, _)| std::cmp::Reverse(*position));
    let mut dirs: Vec<PathBuf> = found.into_iter().map(|(_, p)| p).collect();
    if let Ok(name) = std::fs::read_to_string(root.join("latest"))
        && let Some(i) = dirs.iter().position(|d| d.ends_with(name.trim()))
    {
        let named = dirs.remove(i);
        dirs.insert(0, named);
    }
    dirs
}

/// The name of the list of a checkpoint's files (sizes and md5s), written last.
pub(super) const CHECKPOINT_FILES: &str = "files.json";

/// Size and md5 of every file of a checkpoint, so that a truncated or changed file is found
/// before anything is loaded from it.
#[derive(Serialize, Deserialize)]
pub(super) struct FileList {
    files: std::collections::BTreeMap<String, FileStamp>,
}

#[derive(Serialize, Deserialize, PartialEq)]
pub(super) struct FileStamp {
    bytes: u64,
    md5: String,
}

impl FileList {
    pub(super) fn stamp(path: &Path) -> std::io::Result<FileStamp> {
        let bytes = std::fs::read(path)?;
        Ok(FileStamp {
            bytes: bytes.len() as u64,
            md5: format!("{:x}", md5::compute(&bytes)),
        })
    }

    /// The files directly in `dir` (the list itself excluded).
    pub(super) fn of(dir: &Path) -> Result<Self, RunError> {
        let mut files = std::collections::BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != CHECKPOINT_FILES && entry.file_type().is_ok_and(|t| t.is_file()) {
                files.insert(name, Self::stamp(&entry.path()).map_err(io(&entry.path()))?);
            }
        }
        Ok(Self { files })
    }

    /// Compares `dir`'s files with its list and returns the list. A checkpoint without a list,
    /// or whose list does not name its `state.json`, is incomplete (the list is written last).
    pub(super) fn check(dir: &Path) -> Result<Self, String> {
        let list_path = dir.join(CHECKPOINT_FILES);
        let text = match std::fs::read_to_string(&list_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "{} is missing (a checkpoint's list of files is written last, so without \
                     it the checkpoint cannot be trusted)",
                    list_path.display()
                ));
            }
            Err(e) => return Err(format!("{}: {e}", list_path.display())),
        };
        let list: Self =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", list_path.display()))?;
        list.names(dir, &["state.json"])?;
        for (name, recorded) in &list.files {
            let path = dir.join(name);
            let found = Self::stamp(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if found.bytes != recorded.bytes {
                return Err(format!(
                    "{} is {} bytes, the checkpoint recorded {}",
                    path.display(),
                    found.bytes,
                    recorded.bytes
                ));
            }
            if found.md5 != recorded.md5 {
                return Err(format!(
                    "{} has md5 {}, the checkpoint recorded {}",
                    path.display(),
                    found.md5,
                    recorded.md5
                ));
            }
        }
        Ok(list)
    }

    /// Fails, naming the list, unless it names every one of `files`.
    pub(super) fn names(&self, dir: &Path, files: &[&str]) -> Result<(), String> {
        match files.iter().find(|name| !self.files.contains_key(**name)) {
            Some(missing) => Err(format!(
                "{} does not list {missing}",
                dir.join(CHECKPOINT_FILES).display()
            )),
            None => Ok(()),
        }
    }
}
