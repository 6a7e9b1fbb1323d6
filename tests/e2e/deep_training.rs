//! Deep-network training on a tiny real subset (the embedded sklearn digits, STEP-imbalanced):
//! the loss and the OF distance fall, a run resumed from a checkpoint ends with exactly the
//! metrics of an uninterrupted one, and a non-finite loss stops the run with the last
//! checkpoint still loadable, and a damaged checkpoint gives way to the previous intact one.

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::record::{BinFileRecorder, FullPrecisionSettings};
use scl_data::DataDir;
use scl_models::SclModel;
use scl_train::RunError;
use scl_train::deep::{DeepConfig, DeepOutcome, DeepRunOptions, train_deep};

type B = Autodiff<Flex>;

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
    let opts = DeepRunOptions {
        run_dir: dir.to_path_buf(),
        data_dir: DataDir::resolve(None),
        resume,
        backend: "flex".into(),
        stop_after_epochs: stop,
    };
    train_deep::<B>(cfg, &opts, &Default::default(), |_, _| {})
}

#[test]
fn a_short_run_lowers_loss_and_of_distance_and_resumes_exactly() {
    let cfg = tiny();
    let whole = tempfile::tempdir().unwrap();
    let full = run(&cfg, whole.path(), false, None).unwrap();
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
    let dir = tempfile::tempdir().unwrap();
    let err = run(&cfg, dir.path(), false, None).unwrap_err();
    assert!(matches!(err, RunError::NonFinite { step: 80 }), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("checkpoints/latest")).unwrap(),
        "epoch-0004"
    );
    assert!(!dir.path().join("summary.json").exists());
    // The checkpoint loads into a fresh model.
    let model: SclModel<B> = cfg.model_config([1, 8, 8], 10).init(&Default::default());
    model
        .load_file(
            dir.path().join("checkpoints/epoch-0004/model"),
            &BinFileRecorder::<FullPrecisionSettings>::new(),
            &Default::default(),
        )
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
    let model = ckpt.join("epoch-0008/model.bin");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    let resumed = run(&cfg, dir.path(), true, None).unwrap();
    assert_eq!(resumed.metrics, full.metrics);

    // A state edited to a position the run cannot have reached is damaged too, even in a
    // checkpoint without a file list (written by an earlier version).
    let dir = tempfile::tempdir().unwrap();
    run(&cfg, dir.path(), false, Some(4)).unwrap();
    let only = dir.path().join("checkpoints/epoch-0004");
    std::fs::remove_file(only.join("files.json")).unwrap();
    let state = std::fs::read_to_string(only.join("state.json")).unwrap();
    let edited = state.replacen("\"epochs_done\": 4,", "\"epochs_done\": 500,", 1);
    assert_ne!(edited, state, "state.json: {state}");
    std::fs::write(only.join("state.json"), edited).unwrap();
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
        dir.path().join("checkpoints/epoch-0004/optimizer.bin"),
        b"garbage",
    )
    .unwrap();
    let msg = run(&cfg, dir.path(), true, None).unwrap_err().to_string();
    assert!(
        msg.contains("no intact checkpoint in ")
            && msg.contains("epoch-0004/optimizer.bin is 7 bytes, the checkpoint recorded "),
        "{msg}"
    );
}
