//! The training loop: data, model and optimiser set up, epochs of optimiser steps, a stop at the current step on interrupt, and the metrics file.

use super::*;

/// The SCL loss of one batch: `images` are `[N * V, C, H, W]` with the `V` views of each of
/// the `N` samples next to each other (sample-major, as `scl_data::SclBatcher` assembles
/// them), `labels` are `[N]`; the model's embeddings, `[N * V, d]`, go to `loss` as
/// `[N, V, d]`.
///
/// # Panics
/// When the image count is not `N * V`.
pub fn scl_batch_loss(
    model: &SclModel,
    images: Tensor<4>,
    labels: Tensor<1, Int>,
    views: usize,
    loss: &SupConLoss,
) -> Tensor<1> {
    let n = labels.dims()[0];
    let z = model.embed(images);
    let d = z.dims()[1];
    loss.forward(z.reshape([n, views, d]), Some(labels))
}

/// The SGD of a run: momentum with its dampening (0 by default, PyTorch's) and weight decay
/// added to the gradient before the momentum, as PyTorch's SGD does.
pub(super) fn sgd_config(cfg: &DeepConfig) -> SgdConfig {
    let momentum = (cfg.momentum > 0.0).then(|| {
        MomentumConfig::new()
            .with_momentum(cfg.momentum)
            .with_dampening(cfg.dampening)
    });
    let wd = (cfg.weight_decay > 0.0).then(|| WeightDecayConfig::new(cfg.weight_decay as f32));
    SgdConfig::new()
        .with_momentum(momentum)
        .with_weight_decay(wd)
}

/// Trains one deep-network run into `opts.run_dir`.
///
/// # Errors
/// [`RunError::Config`] for a wrong configuration or a dataset that cannot be read;
/// [`RunError::NonFinite`] when the loss stops being finite (the last checkpoint stays
/// loadable); [`RunError::Interrupted`] after a stop was asked for ([`crate::interrupt`]) and
/// a checkpoint saved; [`RunError::Io`] when a file cannot be written.
pub fn train_deep(
    cfg: &DeepConfig,
    opts: &DeepRunOptions,
    device: &Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<DeepOutcome, RunError> {
    let start = std::time::Instant::now();
    check(cfg)?;
    let manifest = Manifest::named(&cfg.dataset).map_err(|e| ConfigError::new(e.to_string()))?;
    let load_opts = LoadOptions::offline(opts.data_dir.clone());
    // Reading the data fails only on the data; an imbalance the data cannot give is a
    // configuration error.
    let data_err = |e: scl_data::DataError| RunError::Config(ConfigError::new(e.to_string()));
    let full_train = scl_data::load(&manifest, Split::Train, &load_opts)?;
    let test = scl_data::load(&manifest, Split::Test, &load_opts)?;
    let k = full_train.num_classes();
    let selection = cfg
        .imbalance
        .select(full_train.labels(), k, cfg.data_seed)
        .map_err(data_err)?;
    let train = full_train.subset(&selection.indices);
    let minority = class_minority(&selection.counts);

    let shape = train.shape();
    let batcher_for = |views: ViewPreset| {
        SclBatcher::new(
            views.views(&manifest),
            shape,
            train.max_value(),
            manifest.mean.clone(),
            manifest.std.clone(),
            cfg.seed,
        )
        .map_err(data_err)
    };
    let train_batcher = batcher_for(cfg.views)?;
    let eval_batcher = batcher_for(ViewPreset::Single)?;
    let out_shape = train_batcher.output_shape();

    let schedule = Schedule::new(
        train.labels(),
        k,
        &BatchingConfig::new(cfg.schedule, cfg.batch_size),
        cfg.seed,
    )
    .map_err(|e| ConfigError::new(format!("schedule: {e}")))?;

    std::fs::create_dir_all(opts.run_dir.join("checkpoints")).map_err(io(&opts.run_dir))?;
    for path in scl_fs::remove_temporaries(&opts.run_dir, true, &scl_fs::is_abandoned) {
        eprintln!(
            "note: removed {}, left by a process that stopped while writing it",
            path.display()
        );
    }
    // config.json is written when the run starts and kept when it resumes the same
    // configuration (with the revision it started at).
    let started = records::read_config_record::<DeepConfig>(&opts.run_dir, &opts.label)
        .is_ok_and(|r| r.config == *cfg && r.cell_id == opts.label.cell_id);
    if !started {
        let record = ConfigRecord::new(
            &opts.label,
            opts.backend,
            &crate::provenance::git_revision(),
            cfg,
        );
        records::write_config_record(&opts.run_dir, &record)?;
    }

    // Burn draws initial weights from the backend's process-wide generator: seed it and
    // initialise under one lock, so runs on other threads cannot interleave their draws.
    let model: SclModel = {
        static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
        device.seed(cfg.seed);
        // Parameters are initialised lazily, on first use: force the draws now, inside the
        // lock, by taking the record.
        let record = model_config(cfg, out_shape, k).init(device).into_record();
        model_config(cfg, out_shape, k)
            .init(device)
            .load_record(record)
    };
    let run = Run {
        cfg,
        opts,
        train: &train,
        test: &test,
        minority: &minority,
        schedule,
        train_batcher,
        eval_batcher,
        loss: SupConLossConfig::new()
            .with_temperature(cfg.temperature)
            .with_base_temperature(cfg.base_temperature)
            .try_init()
            .map_err(|e| ConfigError::new(e.to_string()))?,
        device,
    };
    let wd = (cfg.weight_decay > 0.0).then(|| WeightDecayConfig::new(cfg.weight_decay as f32));
    let (metrics, model) = match cfg.optimizer {
        OptimizerKind::Sgd => {
            let optim = sgd_config(cfg).init();
            run.optimise(model, optim, &mut progress)?
        }
        OptimizerKind::Adam => {
            let optim = AdamConfig::new().with_weight_decay(wd).init();
            run.optimise(model, optim, &mut progress)?
        }
    };
    let outcome = DeepOutcome {
        dataset_title: manifest.title.clone(),
        class_counts: selection.counts.clone(),
        minority: minority.clone(),
        metrics,
    };
    let finished = opts.stop_after_epochs.is_none_or(|_| {
        outcome
            .metrics
            .last()
            .is_some_and(|m| m.epoch == cfg.epochs)
    });
    if finished {
        if let Some(path) = &opts.export_safetensors {
            export_safetensors(&model, path)?;
        }
        let summary = Summary::new(
            &opts.label.cell_id,
            opts.backend,
            start.elapsed().as_secs_f64(),
            cfg,
            outcome.clone(),
        );
        records::write_summary(&opts.run_dir, &summary)?;
    }
    Ok(outcome)
}

/// Writes `model`'s parameters and batch-norm running statistics to the SafeTensors file
/// `path` (replacing it; Burn's store writes a temporary file and renames it), in eval mode,
/// each tensor under its module path (e.g. `backbone.Mlp.layers.0.linear.weight`).
///
/// # Errors
/// [`RunError::Io`] naming `path` when it cannot be written.
pub fn export_safetensors(model: &SclModel, path: &Path) -> Result<(), RunError> {
    use burn::store::{ModuleSnapshot, SafetensorsStore};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let mut store = SafetensorsStore::from_file(path).overwrite(true);
    model.valid().save_into(&mut store).map_err(io(path))
}

impl Run<'_> {
    pub(super) fn optimise(
        &self,
        mut model: SclModel,
        mut optim: ModuleOptimizer,
        progress: &mut impl FnMut(usize, usize),
    ) -> Result<(Vec<EpochMetrics>, SclModel), RunError> {
        let cfg = self.cfg;
        let ckpt_root = self.opts.run_dir.join("checkpoints");
        let mut state = State {
            epochs_done: 0,
            step: 0,
            batch_in_epoch: 0,
            loss_sum: 0.0,
            metrics: Vec::new(),
            step_losses: Vec::new(),
            window: (0.0, 0),
            config: cfg.clone(),
            model_format: MODEL_FORMAT,
        };
        if self.opts.resume
            && let Some((loaded, m, o)) = self.load_latest(&ckpt_root, &model, &optim)?
        {
            state = State {
                model_format: MODEL_FORMAT,
                ..loaded
            };
            model = m;
            optim = o;
        }
        let ce = CrossEntropyLossConfig::new().init(self.device);
        // Every epoch of a schedule has the same number of batches.
        let per_epoch = self.schedule.epoch(0).len();
        let mut saved_at_epoch_end: Option<PathBuf> = None;
        for (epochs_this_call, epoch) in (state.epochs_done..cfg.epochs).enumerate() {
            if self
                .opts
                .stop_after_epochs
                .is_some_and(|n| epochs_this_call >= n)
            {
                break;
            }
            // A checkpoint saved on interrupt continues its epoch where it stopped.
            let (mut loss_sum, mut batches) = (
                std::mem::take(&mut state.loss_sum),
                std::mem::take(&mut state.batch_in_epoch),
            );
            if crate::interrupt::requested() {
                // The epoch that just ended saved its checkpoint already: stop there.
                if let Some(dir) = saved_at_epoch_end.take() {
                    return Err(RunError::Interrupted {
                        step: state.step,
                        checkpoint: Some(dir.display().to_string()),
                    });
                }
                return Err(self.interrupted(&ckpt_root, state, batches, loss_sum, &model, &optim));
            }
            saved_at_epoch_end = None;
            let lr = cfg.lr_at(epoch);
            let batcher = self.train_batcher.clone();
            let train = self.train.clone();
            let e = epoch as u64;
            let loader = Loader::new(
                self.schedule.clone(),
                Position {
                    epoch: e,
                    batch: batches,
                },
                e + 1,
                2,
                4,
                move |indices: &[usize]| batcher.assemble(&items_of(&train, indices), e),
            );
            for loaded in loader {
                let batch = loaded.item.to_device(self.device);
                let n = batch.indices.len();
                let v = batch.views;
                let loss = match cfg.loss {
                    LossKind::Scl => {
                        scl_batch_loss(&model, batch.images, batch.labels, v, &self.loss)
                    }
                    LossKind::Ce => {
                        let logits = model.logits(batch.images);
                        let targets = batch
                            .labels
                            .unsqueeze_dim::<2>(1)
                            .repeat_dim(1, v)
                            .reshape([n * v]);
                        ce.forward(logits, targets).reshape([1])
                    }
                };
                let loss = if cfg.inject_nan_at_step == Some(state.step) {
                    loss * f32::NAN
                } else {
                    loss
                };
                let value: f64 = loss.clone().into_scalar::<f64>();
                if !value.is_finite() {
                    // The logged losses up to here show how the run got there.
                    self.write_metrics(&state.metrics, &state.step_losses)?;
                    return Err(RunError::NonFinite { step: state.step });
                }
                loss_sum += value;
                batches += 1;
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(lr, model, grads);
                state.step += 1;
                state.window.0 += value;
                state.window.1 += 1;
                if cfg.log_every.is_some_and(|n| state.step.is_multiple_of(n)) {
                    let (sum, count) = std::mem::take(&mut state.window);
                    state.step_losses.push(StepLoss {
                        epoch: epoch + 1,
                        step: state.step,
                        lr,
                        loss: sum / count as f64,
                    });
                }
                if cfg.interrupt_at_step == Some(state.step) {
                    crate::interrupt::request();
                }
                // After the epoch's last batch the epoch ends first (evaluated if due), and the
                // stop is taken at the next epoch's start: a checkpoint is never at a batch
                // past its epoch's end.
                if crate::interrupt::requested() && batches < per_epoch {
                    return Err(
                        self.interrupted(&ckpt_root, state, batches, loss_sum, &model, &optim)
                    );
                }
            }
            state.epochs_done = epoch + 1;
            progress(state.epochs_done, cfg.epochs);
            if cfg.is_evaluated(state.epochs_done) {
                let metrics = self.evaluate(
                    &model,
                    state.epochs_done,
                    state.step,
                    lr,
                    loss_sum / batches.max(1) as f64,
                )?;
                state.metrics.push(metrics);
                self.write_metrics(&state.metrics, &state.step_losses)?;
                saved_at_epoch_end =
                    Some(self.save_checkpoint(&ckpt_root, &state, &model, &optim)?);
            }
        }
        Ok((state.metrics, model))
    }

    /// Writes `metrics.csv` (columns [`crate::run_files::DEEP_COLUMNS`]): one row per
    /// evaluated epoch and, with `log_every`, one per logged step (only `epoch`, `step`, `lr`
    /// and `train_loss` filled), in step order, a logged step before the evaluated epoch that
    /// ends at the same step.
    pub(super) fn write_metrics(
        &self,
        metrics: &[EpochMetrics],
        losses: &[StepLoss],
    ) -> Result<(), RunError> {
        let of = |g: Option<scl_geometry::GeometryReport>| {
            g.map(|r| r.of_distance.to_string()).unwrap_or_default()
        };
        let step_rows = losses.iter().map(|l| {
            let mut row = vec![String::new(); crate::run_files::DEEP_COLUMNS.len()];
            row[0] = l.epoch.to_string();
            row[1] = l.step.to_string();
            row[2] = l.lr.to_string();
            row[3] = l.loss.to_string();
            ((l.step, 0), row)
        });
        let epoch_rows = metrics.iter().map(|m| {
            ((m.step, 1), {
                let g = &m.geometry.overall;
                let probe = |f: fn(&ProbeReport) -> f64| {
                    m.probe
                        .as_ref()
                        .map(|p| f(p).to_string())
                        .unwrap_or_default()
                };
                vec![
                    m.epoch.to_string(),
                    m.step.to_string(),
                    m.lr.to_string(),
                    m.train_loss.to_string(),
                    g.of_distance.to_string(),
                    g.etf_distance.to_string(),
                    g.nc1.to_string(),
                    g.mean_cosine.to_string(),
                    g.norm_ratio.to_string(),
                    of(m.geometry.majority),
                    of(m.geometry.minority),
                    m.ncc_accuracy.to_string(),
                    m.balanced_accuracy.to_string(),
                    probe(|p| p.accuracy),
                    probe(|p| p.balanced_accuracy),
                ]
            })
        });
        let mut keyed: Vec<((usize, u8), Vec<String>)> = step_rows.chain(epoch_rows).collect();
        keyed.sort_by_key(|(key, _)| *key);
        let rows = keyed.into_iter().map(|(_, row)| row).collect();
        let path = self.opts.run_dir.join(crate::run_files::METRICS);
        Ok(crate::run_files::write_rows(
            &path,
            &crate::run_files::DEEP_COLUMNS,
            rows,
        )?)
    }

    /// Saves a checkpoint at the current position (`batches` of epoch `state.epochs_done`
    /// done) and returns the error that says where it is; an error saving it is returned
    /// instead.
    pub(super) fn interrupted(
        &self,
        root: &Path,
        mut state: State,
        batches: usize,
        loss_sum: f64,
        model: &SclModel,
        optim: &ModuleOptimizer,
    ) -> RunError {
        state.batch_in_epoch = batches;
        state.loss_sum = loss_sum;
        let saved = self
            .save_checkpoint(root, &state, model, optim)
            .and_then(|dir| {
                self.write_metrics(&state.metrics, &state.step_losses)?;
                Ok(dir)
            });
        match saved {
            Ok(dir) => RunError::Interrupted {
                step: state.step,
                checkpoint: Some(dir.display().to_string()),
            },
            Err(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;

    /// A module of one weight vector, for optimiser steps.
    #[derive(Module, Debug)]
    struct Weights {
        w: Param<Tensor<1>>,
    }

    #[test]
    fn sgd_steps_follow_pytorchs_update_formula() {
        let device = Device::flex().autodiff();
        let x = [0.5f32, -1.0, 2.0];
        let theta0 = [0.3f32, -0.2, 0.1];
        let (lr, mu, wd) = (0.1f64, 0.9f64, 0.01f64);
        for dampening in [0.0, 0.1] {
            let mut cfg: DeepConfig =
                toml::from_str("dataset = \"sklearn-digits\"\nmodel = \"mlp\"\nepochs = 1")
                    .unwrap();
            cfg.momentum = mu;
            cfg.weight_decay = wd;
            cfg.dampening = dampening;
            let tau = dampening;
            let mut optim = sgd_config(&cfg).init();
            let mut module = Weights {
                w: Param::from_tensor(Tensor::<1>::from_floats(theta0, &device)),
            };
            // PyTorch's SGD: g = grad + wd * theta; b1 = g1, b = mu * b + (1 - tau) * g;
            // theta -= lr * b. The loss sum(x * w) has gradient x.
            let mut theta: Vec<f64> = theta0.iter().map(|&v| f64::from(v)).collect();
            let mut b = [0.0f64; 3];
            for step in 0..3 {
                let xt = Tensor::<1>::from_floats(x, &device);
                let loss = (module.w.val() * xt).sum();
                let grads = GradientsParams::from_grads(loss.backward(), &module);
                module = optim.step(lr, module, grads);
                for i in 0..3 {
                    let g = f64::from(x[i]) + wd * theta[i];
                    b[i] = if step == 0 {
                        g
                    } else {
                        mu * b[i] + (1.0 - tau) * g
                    };
                    theta[i] -= lr * b[i];
                }
            }
            let got: Vec<f32> = module.w.val().try_into_vec_as::<f32>().unwrap();
            for (g, e) in got.iter().zip(&theta) {
                assert!(
                    (f64::from(*g) - e).abs() < 1e-6,
                    "dampening {dampening:?}: {got:?} against {theta:?}"
                );
            }
        }
    }
}
