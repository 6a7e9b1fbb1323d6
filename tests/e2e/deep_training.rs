//! Deep-network training on a tiny real subset (the embedded sklearn digits, STEP-imbalanced):
//! the loss and the OF distance fall, a run resumed from a checkpoint ends with exactly the
//! metrics of an uninterrupted one, and a non-finite loss stops the run with the last
//! checkpoint still loadable, and a damaged checkpoint gives way to the previous intact one.

use burn::module::Module;
use burn::tensor::Device;
use scl_data::DataDir;
use scl_models::SclModel;
use scl_train::RunError;
use scl_train::deep::{DeepConfig, DeepOutcome, DeepRunOptions, train_deep};

fn tiny() -> DeepConfig {
    toml::from_str(
        r#"
        dataset = "sklearn-digits"
        imbalance = { kind = "step", ratio = 10, n_majority = 100 }
        model = "mlp"
        mlp_widths = [64, 32]
        batch_size = 32
        epochs = 12
        eval_every = 4
        lr = 0.05
        seed = 3
        "#,
    )
    .unwrap()
}

fn run(
    cfg: &DeepConfig,
    dir: &std::path::Path,
    resume: bool,
    stop: Option<usize>,
) -> Result<DeepOutcome, RunError> {
    run_saving(cfg, dir, resume, stop, false, None)
}

fn run_saving(
    cfg: &DeepConfig,
    dir: &std::path::Path,
    resume: bool,
    stop: Option<usize>,
    save_embeddings: bool,
    export_safetensors: Option<std::path::PathBuf>,
) -> Result<DeepOutcome, RunError> {
    let opts = DeepRunOptions {
        run_dir: dir.to_path_buf(),
        label: scl_train::records::RunLabel {
            cell_id: "run".into(),
            experiment: "e2e".into(),
            axes: vec![],
        },
        data_dir: DataDir::resolve(None),
        resume,
        backend: scl_train::backend::BackendKind::Flex,
        stop_after_epochs: stop,
        save_embeddings,
        export_safetensors,
    };
    train_deep(cfg, &opts, &Device::flex().autodiff(), |_, _| {})
}

#[test]
fn a_short_run_lowers_loss_and_of_distance_and_resumes_exactly() {
    let cfg = tiny();
    let whole = tempfile::tempdir().unwrap();
    let exported = whole.path().join("export/model.safetensors");
    let full = run_saving(
        &cfg,
        whole.path(),
        false,
        None,
        false,
        Some(exported.clone()),
    )
    .unwrap();
    assert_eq!(
        full.class_counts,
        [100, 100, 100, 100, 100, 10, 10, 10, 10, 10]
    );
    assert_eq!(full.metrics.len(), 3);
    let (first, last) = (&full.metrics[0], &full.metrics[2]);
    assert!(
        last.train_loss < first.train_loss,
        "loss {} -> {}",
        first.train_loss,
        last.train_loss
    );
    let of = |m: &scl_train::deep::EpochMetrics| m.geometry.overall.of_distance;
    assert!(
        of(last) < of(first),
        "OF distance {} -> {}",
        of(first),
        of(last)
    );
    for f in [
        "config.json",
        "metrics.csv",
        "summary.json",
        "checkpoints/latest",
        "checkpoints/epoch-0012/state.json",
    ] {
        assert!(whole.path().join(f).is_file(), "{f} missing");
    }

    // The exported SafeTensors file reads back: its tensors, by module path, and a fresh
    // model that loads them computes what the final checkpoint's model computes.
    {
        use burn::store::{ModuleSnapshot, ModuleStore, SafetensorsStore};
        use burn::tensor::{Distribution, Tensor};
        let mut store = SafetensorsStore::from_file(&exported);
        let names: Vec<String> = store.get_all_tensors().unwrap().keys().cloned().collect();
        assert!(
            names.iter().any(|n| n == "classifier.weight"),
            "no classifier.weight in {names:?}"
        );
        assert!(
            names.iter().any(|n| n.ends_with("running_var")),
            "no batch-norm statistics in {names:?}"
        );
        let device = Device::flex();
        let mut from_file: SclModel =
            scl_train::deep::model_config(&cfg, [1, 8, 8], 10).init(&device);
        let applied = from_file.load_from(&mut store).unwrap();
        assert!(applied.errors.is_empty(), "{:?}", applied.errors);
        let from_checkpoint: SclModel = scl_train::deep::model_config(&cfg, [1, 8, 8], 10)
            .init(&device)
            .try_load_file(whole.path().join("checkpoints/epoch-0012/model.bpk"))
            .unwrap();
        let x = Tensor::<4>::random([7, 1, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let a = from_file
            .valid()
            .embed(x.clone())
            .try_into_vec_as::<f32>()
            .unwrap();
        let b = from_checkpoint
            .valid()
            .embed(x)
            .try_into_vec_as::<f32>()
            .unwrap();
        assert_eq!(
            a, b,
            "the exported weights differ from the final checkpoint's"
        );
    }

    // Stop after 4 epochs (one checkpoint), then resume to the end in the same directory.
    let split = tempfile::tempdir().unwrap();
    let partial = run(&cfg, split.path(), false, Some(4)).unwrap();
    assert_eq!(partial.metrics.len(), 1);
    assert!(
        !split.path().join("summary.json").exists(),
        "an unfinished run has no summary"
    );
    let resumed = run(&cfg, split.path(), true, None).unwrap();
    assert_eq!(
        resumed.metrics, full.metrics,
        "a resumed run must match an uninterrupted one exactly"
    );
}

#[test]
fn a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint() {
    let mut cfg = tiny();
    // An epoch has 17 batches of 32 (550 examples, the partial batch dropped): step 80 is in
    // epoch 5, after the checkpoint of epoch 4.
    cfg.inject_nan_at_step = Some(80);
    cfg.log_every = Some(10);
    let dir = tempfile::tempdir().unwrap();
    let err = run(&cfg, dir.path(), false, None).unwrap_err();
    assert!(matches!(err, RunError::NonFinite { step: 80 }), "{err}");
    // metrics.csv keeps the losses logged up to the failing step, past the last checkpoint.
    let rows = csv_rows(&dir.path().join("metrics.csv"));
    let steps: Vec<&str> = rows.iter().map(|r| r["step"].as_str()).collect();
    assert_eq!(
        steps,
        ["10", "20", "30", "40", "50", "60", "68", "70", "80"],
        "logged steps, and the evaluated epoch 4 at step 68"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("checkpoints/latest")).unwrap(),
        "epoch-0004"
    );
    assert!(!dir.path().join("summary.json").exists());
    // The checkpoint loads into a fresh model.
    let model: SclModel = scl_train::deep::model_config(&cfg, [1, 8, 8], 10).init(&Device::flex());
    model
        .try_load_file(dir.path().join("checkpoints/epoch-0004/model.bpk"))
        .expect("the last checkpoint loads");
}

#[test]
fn a_damaged_checkpoint_falls_back_to_the_previous_intact_one() {
    let cfg = tiny();
    let whole = tempfile::tempdir().unwrap();
    let full = run(&cfg, whole.path(), false, None).unwrap();

    // Checkpoints at epochs 4 and 8; the newest is truncated: the run resumes from epoch 4 and
    // still ends exactly as the uninterrupted one.
    let dir = tempfile::tempdir().unwrap();
    run(&cfg, dir.path(), false, Some(8)).unwrap();
    let ckpt = dir.path().join("checkpoints");
    let model = ckpt.join("epoch-0008/model.bpk");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    let resumed = run(&cfg, dir.path(), true, None).unwrap();
    assert_eq!(resumed.metrics, full.metrics);

    // A newest checkpoint without its file list, or with a list that names nothing, is not
    // trusted (its model zeroed in part would otherwise load): the run falls back to epoch 4.
    for list in [None, Some("{\"files\": {}}")] {
        let dir = tempfile::tempdir().unwrap();
        run(&cfg, dir.path(), false, Some(8)).unwrap();
        let newest = dir.path().join("checkpoints/epoch-0008");
        match list {
            None => std::fs::remove_file(newest.join("files.json")).unwrap(),
            Some(text) => std::fs::write(newest.join("files.json"), text).unwrap(),
        }
        let model = newest.join("model.bpk");
        let mut bytes = std::fs::read(&model).unwrap();
        let n = bytes.len();
        bytes[n / 2..(n / 2 + 4000).min(n)].fill(0);
        std::fs::write(&model, &bytes).unwrap();
        let resumed = run(&cfg, dir.path(), true, None).unwrap();
        assert_eq!(resumed.metrics, full.metrics, "list {list:?}");
    }

    // A state edited to a position the run cannot have reached is damaged too, even when its
    // file list is rewritten to match.
    let dir = tempfile::tempdir().unwrap();
    run(&cfg, dir.path(), false, Some(4)).unwrap();
    let only = dir.path().join("checkpoints/epoch-0004");
    let state = std::fs::read_to_string(only.join("state.json")).unwrap();
    let edited = state.replacen("\"epochs_done\": 4,", "\"epochs_done\": 500,", 1);
    assert_ne!(edited, state, "state.json: {state}");
    std::fs::write(only.join("state.json"), &edited).unwrap();
    let list = std::fs::read_to_string(only.join("files.json")).unwrap();
    let mut list: serde_json::Value = serde_json::from_str(&list).unwrap();
    list["files"]["state.json"] = serde_json::json!({
        "bytes": edited.len(),
        "md5": format!("{:x}", md5::compute(edited.as_bytes())),
    });
    std::fs::write(only.join("files.json"), list.to_string()).unwrap();
    let err = run(&cfg, dir.path(), true, None).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RunError::DamagedCheckpoint(_)), "{msg}");
    assert!(
        msg.contains("epoch-0004/state.json: it says 500 epochs are done, but the run has 12"),
        "{msg}"
    );

    // With its file list, any change to a file is found before loading: named with the file.
    let dir = tempfile::tempdir().unwrap();
    run(&cfg, dir.path(), false, Some(4)).unwrap();
    std::fs::write(
        dir.path().join("checkpoints/epoch-0004/optimizer.bpk"),
        b"garbage",
    )
    .unwrap();
    let msg = run(&cfg, dir.path(), true, None).unwrap_err().to_string();
    assert!(
        msg.contains("no intact checkpoint in ")
            && msg.contains("epoch-0004/optimizer.bpk is 7 bytes, the checkpoint recorded "),
        "{msg}"
    );
}

#[test]
fn a_checkpoint_of_the_burn_0_21_build_is_refused_with_one_sentence() {
    // A checkpoint as the Burn 0.21 build wrote it: model.bin and optimizer.bin (its record
    // format), state.json of format 2, and a file list that matches.
    let cfg = tiny();
    let dir = tempfile::tempdir().unwrap();
    run(&cfg, dir.path(), false, Some(4)).unwrap();
    let ckpt = dir.path().join("checkpoints/epoch-0004");
    for (new, old) in [
        ("model.bpk", "model.bin"),
        ("optimizer.bpk", "optimizer.bin"),
    ] {
        std::fs::rename(ckpt.join(new), ckpt.join(old)).unwrap();
    }
    let state_path = ckpt.join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state["model_format"] = 2.into();
    std::fs::write(&state_path, serde_json::to_string(&state).unwrap()).unwrap();
    let mut files = serde_json::Map::new();
    for name in ["model.bin", "optimizer.bin", "state.json"] {
        let bytes = std::fs::read(ckpt.join(name)).unwrap();
        files.insert(
            name.to_string(),
            serde_json::json!({"bytes": bytes.len(), "md5": format!("{:x}", md5::compute(&bytes))}),
        );
    }
    std::fs::write(
        ckpt.join("files.json"),
        serde_json::json!({ "files": files }).to_string(),
    )
    .unwrap();

    let err = run(&cfg, dir.path(), true, None).unwrap_err();
    assert!(matches!(err, RunError::Config(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("holds a checkpoint written by an earlier version (Burn 0.21's record files")
            && msg.contains("start the run again in a new run directory"),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1, "{msg}");
}

/// The rows of a CSV file as column -> field maps.
fn csv_rows(path: &std::path::Path) -> Vec<std::collections::BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|l| {
            header
                .iter()
                .zip(l.split(','))
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

#[test]
fn logged_step_losses_and_saved_embeddings_survive_a_resume_and_read_back() {
    let mut cfg = tiny();
    cfg.log_every = Some(5);
    let whole = tempfile::tempdir().unwrap();
    let full = run_saving(&cfg, whole.path(), false, None, true, None).unwrap();
    let split = tempfile::tempdir().unwrap();
    run_saving(&cfg, split.path(), false, Some(4), true, None).unwrap();
    run_saving(&cfg, split.path(), true, None, true, None).unwrap();
    let metrics = |dir: &std::path::Path| std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert_eq!(
        metrics(split.path()),
        metrics(whole.path()),
        "a resumed run logs the same step losses"
    );

    // 12 epochs of 17 steps: 40 logged steps (5, 10, ..., 200) and 3 evaluated epochs.
    let rows = csv_rows(&whole.path().join("metrics.csv"));
    assert_eq!(rows.len(), 43);
    let logged: Vec<_> = rows
        .iter()
        .filter(|r| r["of_distance"].is_empty())
        .collect();
    assert_eq!(logged.len(), 40);
    for (i, r) in logged.iter().enumerate() {
        let step = 5 * (i + 1);
        assert_eq!(r["step"], step.to_string());
        assert_eq!(r["epoch"], (step.div_ceil(17)).to_string(), "step {step}");
        let loss: f64 = r["train_loss"].parse().unwrap();
        assert!(loss.is_finite() && loss > 0.0, "step {step}: {loss}");
    }
    let evaluated: Vec<_> = rows
        .iter()
        .filter(|r| !r["of_distance"].is_empty())
        .collect();
    let steps: Vec<&str> = evaluated.iter().map(|r| r["step"].as_str()).collect();
    assert_eq!(steps, ["68", "136", "204"]);

    // The embeddings of every evaluated epoch read back, and give the geometry the run
    // measured.
    let k = 10;
    for (m, epoch) in full.metrics.iter().zip([4, 8, 12]) {
        let file = |name: &str| {
            whole
                .path()
                .join(format!("embeddings/epoch-{epoch:04}-{name}"))
        };
        let z = scl_geometry::io::read_embeddings(&file("train.npy")).unwrap();
        let labels = scl_geometry::io::read_labels(&file("train-labels.npy")).unwrap();
        assert_eq!((z.rows(), z.dim()), (550, 32));
        let labels: Vec<usize> = labels.iter().map(|&c| c as usize).collect();
        let mut counts = vec![0; k];
        labels.iter().for_each(|&c| counts[c] += 1);
        assert_eq!(counts, full.class_counts);
        let g = scl_geometry::geometry(&z, &labels, k).unwrap();
        assert_eq!(
            g.of_distance, m.geometry.overall.of_distance,
            "epoch {epoch}"
        );
        let test = scl_geometry::io::read_embeddings(&file("test.npy")).unwrap();
        let test_labels = scl_geometry::io::read_labels(&file("test-labels.npy")).unwrap();
        assert_eq!(test.rows(), test_labels.len());
        assert!(test.rows() > 0);
    }
    assert!(
        !whole
            .path()
            .join("embeddings/epoch-0001-train.npy")
            .exists()
    );
}
