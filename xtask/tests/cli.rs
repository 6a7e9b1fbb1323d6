//! The command line: wrong options and configurations stop with one sentence, exit code 2,
//! and no run directory.

use std::path::Path;
use std::process::Command;

const GOOD: &str = r#"
[experiment]
name = "cli"
[base]
num_classes = 4
n_majority = 6
temperature = 1.0
steps = 2
lr = 0.1
optimizer = "adam"
log_every = 1
relu = true
seed = 0
[grid]
ratio = [1, 2]
"#;

fn xtask(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the xtask binary starts");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sweep_with(text: &str, extra: &[&str]) -> (i32, String, bool) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), text).unwrap();
    let mut args = vec!["sweep", "--experiment", "exp.toml", "--out", "runs"];
    args.extend_from_slice(extra);
    let (code, err) = xtask(dir.path(), &args);
    let wrote = dir.path().join("runs").exists();
    (code, err, wrote)
}

#[test]
fn config_errors_exit_2_with_one_sentence_and_write_nothing() {
    let cases = [
        (
            GOOD.replace("temperature = 1.0", "temperature = 0.0"),
            "temperature = 0 is not allowed: it must be a finite number above 0",
        ),
        (
            GOOD.replace("temperature = 1.0", "temperature = -1.0"),
            "temperature = -1 is not allowed",
        ),
        (
            GOOD.replace("ratio = [1, 2]", "ratio = [1, 0.5]"),
            "ratio = 0.5 is not allowed: it must be a finite number of at least 1",
        ),
        (
            GOOD.replace("num_classes = 4", "num_classes = 4\ndim = 2"),
            "dim = 2 is not allowed: it must be at least num_classes = 4",
        ),
        (
            GOOD.replace("seed = 0", "seed = 0\nbatchsize = 3"),
            "unknown key `batchsize` in [base]: the allowed keys are num_classes, dim,",
        ),
        (
            GOOD.replace("steps = 2", "steps = 0"),
            "steps = 0 is not allowed: it must be at least 1",
        ),
        (
            GOOD.replace("lr = 0.1", "lr = 50.0"),
            "lr = 50 is not allowed: it must be a number above 0 and at most 10",
        ),
        (
            GOOD.replace("num_classes = 4", "num_classes = 100000"),
            "num_classes = 100000, n_majority = 6 and dim = 200000 are not allowed together: \
             the run would hold about",
        ),
        (
            KILLABLE.replace(
                "mlp_widths = [32, 16]",
                "mlp_widths = [32, 16]\nprojection = 0",
            ),
            "projection = 0 is not allowed: it must be at least 1",
        ),
        (
            KILLABLE.replace("lr = 0.05\nbatch_size", "lr = 1e3\nbatch_size"),
            "lr = 1000 is not allowed: it must be a number above 0 and at most 10",
        ),
    ];
    for (text, expected) in cases {
        let (code, err, wrote) = sweep_with(&text, &[]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        assert_eq!(err.trim().lines().count(), 1, "one sentence: {err:?}");
        assert!(
            !wrote,
            "a configuration error must not create the results folder"
        );
    }
}

#[test]
fn an_unknown_or_missing_backend_exits_2() {
    let (code, err, wrote) = sweep_with(GOOD, &["--backend", "tpu"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("backend tpu is not allowed: the allowed backends are flex, wgpu, cuda"),
        "{err}"
    );
    assert!(!wrote);
    if !cfg!(feature = "cuda") {
        let (code, err, _) = sweep_with(GOOD, &["--backend", "cuda"]);
        assert_eq!(code, 2);
        assert!(
            err.contains("rebuild with the cargo feature `cuda`"),
            "{err}"
        );
    }
}

#[test]
fn bench_ufm_bad_options_exit_2_with_one_sentence_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 3] = [
        (
            &["--ratios", "10,0.5"],
            "--ratios 0.5 is not allowed: each ratio must be a finite number of at least 1",
        ),
        (
            &["--classes", "1"],
            "--classes 1 is not allowed: it must be at least 2",
        ),
        (&["--steps", "0"], "steps = 0 is not allowed"),
    ];
    for (options, expected) in cases {
        let mut args = vec!["bench", "ufm", "--out", "paired.csv"];
        args.extend_from_slice(options);
        let (code, err) = xtask(dir.path(), &args);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        assert_eq!(err.trim().lines().count(), 1, "one sentence: {err:?}");
        assert!(!dir.path().join("paired.csv").exists());
    }
}

#[test]
fn a_good_sweep_writes_cells_and_a_report_and_skips_them_the_second_time() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), GOOD).unwrap();
    let args = [
        "sweep",
        "--experiment",
        "exp.toml",
        "--out",
        "runs",
        "--jobs",
        "2",
    ];
    let (code, err) = xtask(dir.path(), &args);
    assert_eq!(code, 0, "{err}");
    let root = dir.path().join("runs/cli");
    let cells: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir() && e.file_name().to_string_lossy().starts_with("ufm-"))
        .collect();
    assert_eq!(cells.len(), 2);
    for c in &cells {
        for f in ["config.json", "metrics.csv", "summary.json"] {
            assert!(
                c.path().join(f).is_file(),
                "{} lacks {f}",
                c.path().display()
            );
        }
    }
    assert!(
        std::fs::read_to_string(root.join("report.md"))
            .unwrap()
            .contains("| 4 | 2 | yes | full | 1 |")
    );
    let (code, err) = xtask(dir.path(), &args);
    assert_eq!(code, 0);
    assert!(
        err.contains("0 cells ran, 2 were already finished"),
        "{err}"
    );
}

#[test]
fn train_runs_refuses_to_overwrite_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("run.toml"),
        "dataset = \"sklearn-digits\"\nmodel = \"mlp\"\nmlp_widths = [32, 16]\nepochs = 2\n",
    )
    .unwrap();
    let args = ["train", "--config", "run.toml", "--out", "out"];
    // Nothing to resume in an empty (or missing) folder: one sentence, not a new run.
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    for out in ["empty", "missing"] {
        let (code, err) = xtask(
            dir.path(),
            &["train", "--config", "run.toml", "--out", out, "--resume"],
        );
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(&format!(
                "--resume is not allowed here: {out} holds no checkpoint to continue from"
            )),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!dir.path().join(out).join("config.json").exists());
    }
    let (code, err) = xtask(dir.path(), &args);
    assert_eq!(code, 0, "{err}");
    assert!(dir.path().join("out/summary.json").exists());
    assert!(
        dir.path()
            .join("out/checkpoints/epoch-0002/state.json")
            .exists()
    );
    // Evaluated at the listed epochs and the last: metrics rows for epochs 1, 3 and 4.
    std::fs::write(
        dir.path().join("listed.toml"),
        "dataset = \"sklearn-digits\"\nmodel = \"mlp\"\nmlp_widths = [32, 16]\nepochs = 4\n\
         eval_epochs = [1, 3]\n",
    )
    .unwrap();
    let (code, err) = xtask(
        dir.path(),
        &["train", "--config", "listed.toml", "--out", "listed"],
    );
    assert_eq!(code, 0, "{err}");
    let metrics = std::fs::read_to_string(dir.path().join("listed/metrics.csv")).unwrap();
    let epochs: Vec<&str> = metrics
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(epochs, ["1", "3", "4"], "{metrics}");
    // A second run into the same directory must say how to continue instead of overwriting.
    let (code, err) = xtask(dir.path(), &args);
    assert_eq!(code, 2);
    assert!(
        err.contains("already holds checkpoints: pass --resume"),
        "{err}"
    );
    let mut resume = args.to_vec();
    resume.push("--resume");
    let (code, err) = xtask(dir.path(), &resume);
    assert_eq!(code, 0, "{err}");
    // A wrong key is one sentence and exit code 2.
    std::fs::write(
        dir.path().join("bad.toml"),
        "dataset = \"mnist\"\nmodel = \"mlp\"\nepochs = 1\nepoch = 2\n",
    )
    .unwrap();
    let (code, err) = xtask(
        dir.path(),
        &["train", "--config", "bad.toml", "--out", "o2"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("unknown field `epoch`"), "{err}");
    assert!(!dir.path().join("o2").exists());
    // --set replaces a key of the file, with the file's checks.
    let (code, err) = xtask(
        dir.path(),
        &[
            "train", "--config", "run.toml", "--out", "o3", "--set", "epochs=1", "--set", "seed=7",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("o3/config.json")).unwrap())
            .unwrap();
    assert_eq!(record["config"]["epochs"], 1, "{record}");
    assert_eq!(record["config"]["seed"], 7, "{record}");
    let metrics = std::fs::read_to_string(dir.path().join("o3/metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 2, "one evaluated epoch: {metrics}");
    for (set, expected) in [
        (
            "epoch=2",
            "--set epoch=2 is not allowed: epoch is not a key of a deep run",
        ),
        (
            "epochs=0",
            "epochs = 0 is not allowed: it must be at least 1",
        ),
        ("epochs", "--set epochs is not allowed: write key=value"),
    ] {
        let (code, err) = xtask(
            dir.path(),
            &["train", "--config", "run.toml", "--out", "o4", "--set", set],
        );
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        assert_eq!(err.trim().lines().count(), 1, "one sentence: {err:?}");
        assert!(!dir.path().join("o4").exists());
    }
}

#[test]
fn set_replaces_base_keys_of_a_sweep_and_its_report() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), GOOD).unwrap();
    let sweep = |extra: &[&str]| {
        let mut args = vec!["sweep", "--experiment", "exp.toml"];
        args.extend_from_slice(extra);
        xtask(dir.path(), &args)
    };
    let (code, err) = sweep(&["--set", "steps=3", "--set", "temperature=0.5"]);
    assert_eq!(code, 0, "{err}");
    let root = dir.path().join("runs/cli");
    let cells = finished(&root);
    assert_eq!(cells.len(), 2);
    for (id, _) in &cells {
        let config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join(id).join("config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(config["config"]["steps"], 3, "{config}");
        assert_eq!(config["config"]["temperature"], 0.5, "{config}");
    }
    // The same sets find the same cells (the report merges them); without them the cells are
    // other ones.
    let (code, err) = sweep(&["--set", "steps=3", "--set", "temperature=0.5"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("0 cells ran, 2 were already finished"),
        "{err}"
    );
    let (code, err) = xtask(
        dir.path(),
        &[
            "report",
            "--experiment",
            "exp.toml",
            "--set",
            "steps=3",
            "--set",
            "temperature=0.5",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let dry_run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .current_dir(dir.path())
            .args(["sweep", "--experiment", "exp.toml", "--dry-run"])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let with = dry_run(&["--set", "steps=3", "--set", "temperature=0.5"]);
    let without = dry_run(&[]);
    for (id, _) in &cells {
        assert!(with.contains(&format!("done     {id}")), "{with}");
        assert!(!without.contains(id.as_str()), "{without}");
    }
    assert_eq!(without.matches("pending").count(), 2, "{without}");
    // Wrong uses: one sentence, exit 2, nothing written.
    for (set, expected) in [
        (
            "ratio=3",
            "--set ratio=3 is not allowed: ratio is a grid axis; --set replaces base keys only",
        ),
        (
            "epochs=3",
            "--set epochs=3 is not allowed: no cell of this experiment has the key epochs",
        ),
        ("steps=0", "steps = 0 is not allowed: it must be at least 1"),
        ("=3", "--set =3 is not allowed: the key before = is empty"),
    ] {
        let (code, err, wrote) = sweep_with(GOOD, &["--set", set]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        assert_eq!(err.trim().lines().count(), 1, "one sentence: {err:?}");
        assert!(!wrote, "{set}: nothing may be written");
    }
}

#[test]
fn train_stopped_mid_epoch_resumes_to_the_uninterrupted_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let config = "dataset = \"sklearn-digits\"\nmodel = \"mlp\"\nmlp_widths = [32, 16]\n\
                  imbalance = { kind = \"step\", ratio = 10, n_majority = 60 }\n\
                  batch_size = 50\nepochs = 6\neval_every = 2\nseed = 1\nlinear_probe = true\n";
    std::fs::write(dir.path().join("run.toml"), config).unwrap();
    // The test hook asks for a stop after step 10 exactly as Ctrl-C would, in the second
    // epoch (330 examples make 6 or 7 batches of 50).
    std::fs::write(
        dir.path().join("cut.toml"),
        format!("{config}interrupt_at_step = 10\n"),
    )
    .unwrap();
    let (code, err) = xtask(
        dir.path(),
        &["train", "--config", "run.toml", "--out", "whole"],
    );
    assert_eq!(code, 0, "{err}");
    let cut = ["train", "--config", "cut.toml", "--out", "cut"];
    let (code, err) = xtask(dir.path(), &cut);
    assert_eq!(code, 130, "{err}");
    assert!(
        err.contains("interrupted at step 10; checkpoint saved in"),
        "{err}"
    );
    assert!(err.contains("--out cut --resume"), "{err}");
    let latest = std::fs::read_to_string(dir.path().join("cut/checkpoints/latest")).unwrap();
    assert!(latest.starts_with("epoch-0001-batch-"), "{latest}");
    assert!(!dir.path().join("cut/summary.json").exists());
    let mut resume = cut.to_vec();
    resume.push("--resume");
    let (code, err) = xtask(dir.path(), &resume);
    assert_eq!(code, 0, "{err}");
    let metrics =
        |run: &str| std::fs::read_to_string(dir.path().join(run).join("metrics.csv")).unwrap();
    let whole = metrics("whole");
    assert_eq!(whole.lines().count(), 4, "{whole}");
    // The linear probe ran at every evaluated epoch: its two columns are filled.
    assert!(
        whole
            .lines()
            .skip(1)
            .all(|l| l.split(',').rev().take(2).all(|v| v.parse::<f64>().is_ok())),
        "{whole}"
    );
    assert_eq!(
        metrics("cut"),
        whole,
        "a run stopped mid-epoch must resume exactly"
    );

    // A stop asked for at the last batch of an epoch (step 6 of 6) ends that epoch first:
    // the checkpoint is at the epoch's end, and the run resumes from it.
    std::fs::write(
        dir.path().join("edge.toml"),
        format!("{config}interrupt_at_step = 6\n"),
    )
    .unwrap();
    let edge = ["train", "--config", "edge.toml", "--out", "edge"];
    let (code, err) = xtask(dir.path(), &edge);
    assert_eq!(code, 130, "{err}");
    assert!(err.contains("interrupted at step 6;"), "{err}");
    let latest = std::fs::read_to_string(dir.path().join("edge/checkpoints/latest")).unwrap();
    assert_eq!(latest.trim(), "epoch-0001", "{err}");
    let mut resume = edge.to_vec();
    resume.push("--resume");
    let (code, err) = xtask(dir.path(), &resume);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        metrics("edge"),
        whole,
        "a run stopped at an epoch's end must resume exactly"
    );
}

#[test]
fn a_sweep_interrupted_with_sigint_checkpoints_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), KILLABLE).unwrap();
    assert!(
        killable_sweep(dir.path(), "whole")
            .status()
            .unwrap()
            .success()
    );
    let expected = results(&dir.path().join("whole/kill"));

    let root = dir.path().join("cut/kill");
    let log = std::fs::File::create(dir.path().join("cut.log")).unwrap();
    let mut child = killable_sweep(dir.path(), "cut")
        .stderr(log)
        .spawn()
        .unwrap();
    let id = wait_for_partial_checkpoint(&root, &mut child);
    // SIGINT to the sweep alone, not to its cell's process: the sweep passes the stop on.
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    let err = std::fs::read_to_string(dir.path().join("cut.log")).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains("1 stopped (1 of them at a saved checkpoint)"),
        "{err}"
    );
    assert!(err.contains("Run the same command again"), "{err}");
    assert!(err.contains(&format!("{id}: interrupted at step")), "{err}");
    assert!(!root.join(format!(".failed-{id}.json")).exists());
    assert!(finished(&root).len() < 4, "nothing was left to interrupt");
    let latest = root.join(format!(".partial-{id}/checkpoints/latest"));
    let saved = std::fs::read_to_string(&latest).unwrap();
    assert!(
        root.join(format!(".partial-{id}/checkpoints"))
            .join(saved.trim())
            .join("state.json")
            .exists()
    );

    assert!(
        killable_sweep(dir.path(), "cut")
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(results(&root), expected);
}

/// The bad inputs of the runner: each one sentence, exit code 2, nothing written.
#[test]
fn runner_bad_inputs_exit_2_and_write_nothing() {
    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        (
            GOOD.replace(
                "ratio = [1, 2]",
                "ratio = [1, 2]\n[zip]\nseed = [0, 1]\nlr = [0.1]",
            ),
            vec![],
            "zip axis lr has 1 values where seed has 2: zipped axes need equal lengths",
        ),
        (
            GOOD.replace("ratio = [1, 2]", "ratio = [1, 2]\nwidth = [3]"),
            vec![],
            "unknown key `width` in [grid]",
        ),
        (
            GOOD.replace("ratio = [1, 2]", "ratio = []"),
            vec![],
            "grid axis ratio is empty: give it at least one value",
        ),
        (
            GOOD.to_string(),
            vec!["--devices", "3"],
            "device 3 does not exist: backend flex runs on the CPU, device 0 only",
        ),
        (
            GOOD.to_string(),
            vec!["--cell", "7"],
            "cell 7 does not exist: the experiment has cells 0 to 1",
        ),
        (
            GOOD.to_string(),
            vec!["--devices", "0,0"],
            "--devices lists device 0 twice: give each device once",
        ),
    ];
    for (text, extra, expected) in cases {
        let (code, err, wrote) = sweep_with(&text, &extra);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        assert_eq!(err.trim().lines().count(), 1, "one sentence: {err:?}");
        // `--cell` of a missing index may create the (empty) experiment folder only if it
        // got past the checks; it must not.
        assert!(!wrote, "{expected}: nothing may be written");
    }

    // Names that cannot be one folder, and a misspelt key in a profile nobody selected.
    let long = "a".repeat(300);
    for (name, expected) in [
        (long.as_str(), "it is 300 bytes long"),
        ("a\nb", "it contains a control character"),
    ] {
        let text = GOOD.replace("name = \"cli\"", &format!("name = {name:?}"));
        let (code, err, wrote) = sweep_with(&text, &[]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        assert_eq!(err.trim().lines().count(), 1, "one sentence: {err:?}");
        assert!(!wrote, "{expected}: nothing may be written");
    }
    let text = format!("{GOOD}\n[profiles.big.base]\nstepz = 9\n");
    let (code, err, wrote) = sweep_with(&text, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unknown key `stepz` in [profiles.big.base]"),
        "{err}"
    );
    assert!(!wrote);

    // The experiment's folder, or its `.logs`, is a file.
    for (file, expected) in [
        (
            "runs/cli",
            "runs/cli is a file, but it is the experiment's results folder",
        ),
        (
            "runs/cli/.logs",
            "runs/cli/.logs is a file, but it is the folder of the cells' logs",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("exp.toml"), GOOD).unwrap();
        let path = dir.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "").unwrap();
        let (code, err) = xtask(dir.path(), &["sweep", "--experiment", "exp.toml"]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        assert_eq!(err.trim().lines().count(), 1, "one sentence: {err:?}");
    }

    // A results folder under a file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), GOOD).unwrap();
    let (code, err) = xtask(
        dir.path(),
        &[
            "sweep",
            "--experiment",
            "exp.toml",
            "--out",
            "exp.toml/runs",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--out exp.toml/runs is not allowed: exp.toml is a file, not a folder"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err:?}");

    // A results folder holding another configuration under a cell's id: a finished run whose
    // stored configuration differs in one value (as after editing a file by hand).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), GOOD).unwrap();
    let (code, err) = xtask(dir.path(), &["sweep", "--experiment", "exp.toml"]);
    assert_eq!(code, 0, "{err}");
    let root = dir.path().join("runs/cli");
    let (first, _) = finished(&root).into_iter().next().unwrap();
    let config = root.join(&first).join("config.json");
    let mut stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    // Rewritten unchanged, the run is accepted (and skipped).
    std::fs::write(&config, stored.to_string()).unwrap();
    let (code, err) = xtask(dir.path(), &["sweep", "--experiment", "exp.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("0 cells ran, 2 were already finished"),
        "{err}"
    );
    stored["config"]["steps"] = serde_json::json!(3);
    std::fs::write(&config, stored.to_string()).unwrap();
    let before = std::fs::read_to_string(root.join("report.md")).unwrap();
    let (code, err) = xtask(dir.path(), &["sweep", "--experiment", "exp.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "{first} holds a run of a different configuration under the same cell id"
        )),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("report.md")).unwrap(),
        before,
        "nothing written"
    );
}

#[test]
fn a_dry_run_lists_cells_whose_dataset_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let text = KILLABLE.replace("sklearn-digits", "mnist");
    std::fs::write(dir.path().join("exp.toml"), text).unwrap();
    let empty = dir.path().join("no-data");
    std::fs::create_dir(&empty).unwrap();
    let data = empty.to_str().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(dir.path())
        .args([
            "sweep",
            "--experiment",
            "exp.toml",
            "--dry-run",
            "--data-dir",
            data,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listed.lines().count(), 4, "{listed}");
    assert!(listed.lines().all(|l| l.contains("pending")), "{listed}");

    // Running it stops before anything is written, naming the download command.
    let (code, err) = xtask(
        dir.path(),
        &["sweep", "--experiment", "exp.toml", "--data-dir", data],
    );
    assert_eq!(code, 3, "a missing dataset exits with the data code: {err}");
    assert!(err.contains("train-images-idx3-ubyte.gz"), "{err}");
    assert!(err.contains("cargo xtask data fetch mnist"), "{err}");
    // `train` too: the file, the fetch command, exit code 3.
    std::fs::write(
        dir.path().join("run.toml"),
        "dataset = \"mnist\"\nmodel = \"mlp\"\nepochs = 1\n",
    )
    .unwrap();
    let (code, err) = xtask(
        dir.path(),
        &[
            "train",
            "--config",
            "run.toml",
            "--out",
            "t",
            "--data-dir",
            data,
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("train-images-idx3-ubyte.gz"), "{err}");
    assert!(err.contains("cargo xtask data fetch mnist"), "{err}");
    assert!(!dir.path().join("runs").exists());
}

#[test]
fn a_deep_imbalance_or_batch_larger_than_the_data_exits_2_before_writing() {
    let text = KILLABLE.replace("n_majority = 60 }", "n_majority = 100000 }");
    let (code, err, wrote) = sweep_with(&text, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("class 0 has 143 examples, step-R10 asks for 100000"),
        "{err}"
    );
    assert!(err.contains("error: cell sklearn-digits-mlp"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err:?}");
    assert!(!wrote, "nothing may be written");
    // `train` asks the same check before it writes anything.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("run.toml"),
        "dataset = \"sklearn-digits\"\nmodel = \"mlp\"\nepochs = 1\n\
         imbalance = { kind = \"step\", ratio = 10, n_majority = 100000 }\n",
    )
    .unwrap();
    let (code, err) = xtask(dir.path(), &["train", "--config", "run.toml", "--out", "t"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("class 0 has 143 examples, step-R10 asks for 100000"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err:?}");
    assert!(!dir.path().join("t").exists(), "nothing may be written");

    // 5 x 60 + 5 x 6 = 330 examples after the imbalance: a batch of 331 would leave every
    // epoch without a batch.
    let text = KILLABLE.replace("batch_size = 50", "batch_size = 331");
    let (code, err, wrote) = sweep_with(&text, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(
            "batch_size = 331 is not allowed: the training set has 330 examples and incomplete \
             batches are dropped"
        ),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err:?}");
    assert!(!wrote, "nothing may be written");
}

/// The id of a process that has ended (a temporary named after it was left by a dead writer).
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// Sets a file's modification time `secs` seconds into the past.
fn age(path: &Path, secs: u64) {
    let then = std::time::SystemTime::now() - std::time::Duration::from_secs(secs);
    let f = std::fs::File::open(path).unwrap();
    f.set_modified(then).unwrap();
}

#[test]
fn temporaries_of_killed_writers_are_removed_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), GOOD).unwrap();
    let (code, err) = xtask(dir.path(), &["sweep", "--experiment", "exp.toml"]);
    assert_eq!(code, 0, "{err}");
    let root = dir.path().join("runs/cli");
    let cells: Vec<String> = finished(&root).into_iter().map(|(id, _)| id).collect();
    assert_eq!(cells.len(), 2);
    // What a process killed while writing leaves: the staging folder and failure-record
    // temporary of a cell that must run again, a half-written figure and report.
    let pid = dead_pid();
    let rerun = &cells[0];
    std::fs::remove_dir_all(root.join(rerun)).unwrap();
    let staging = root.join(format!(".{rerun}.tmp-{pid}-0"));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("summary.json"), "{}").unwrap();
    let record = root.join(format!("..failed-{rerun}.tmp-{pid}-1.json"));
    std::fs::write(&record, "").unwrap();
    let figure = root.join(format!("figures/.old.tmp-{pid}-2.png"));
    let report = root.join(format!(".report.tmp-{pid}-3.md"));
    // Another machine may be writing this one right now (its process id means nothing here):
    // it is fresh, so it stays.
    let fresh = root.join(format!("figures/.new.tmp-{pid}-4.png"));
    for f in [&figure, &report, &fresh] {
        std::fs::write(f, "").unwrap();
    }
    age(&figure, 120);
    age(&report, 120);
    let (code, err) = xtask(dir.path(), &["sweep", "--experiment", "exp.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("1 cells ran, 1 were already finished"),
        "{err}"
    );
    // The cell's own leftovers are removed by the process that runs it (noted in its log),
    // the report's by the sweep.
    let log = std::fs::read_to_string(root.join(format!(".logs/{rerun}.log"))).unwrap();
    for (gone, said) in [
        (&staging, &log),
        (&record, &log),
        (&figure, &err),
        (&report, &err),
    ] {
        assert!(!gone.exists(), "{} is still there: {err}", gone.display());
        let shown = gone.strip_prefix(dir.path()).unwrap().display().to_string();
        assert!(
            said.contains(&format!(
                "note: removed {shown}, left by a process that stopped"
            )),
            "{shown} not named: {said}"
        );
    }
    assert!(fresh.exists(), "a fresh temporary was removed: {err}");
    assert!(root.join(rerun).join("summary.json").is_file());
}

/// Every file or folder under `root` whose name contains one of `marks`.
fn leftovers_under(root: &Path, marks: &[&str]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if marks.iter().any(|m| name.contains(m)) {
                found.push(e.path());
            } else if e.path().is_dir() {
                stack.push(e.path());
            }
        }
    }
    found
}

/// A tmpfs of `kib` KiB mounted on a new folder, unmounted when dropped; `None` where this
/// process may not mount one (not root, or in a container without the right).
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(kib: usize) -> Option<Self> {
        Self::mount_with(kib, "rw")
    }

    /// [`SmallDisk::mount`] with mount options (`rw`, `ro`).
    fn mount_with(kib: usize, options: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={kib}k,{options}"),
                "tmpfs",
            ])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_disk_names_every_cell_it_could_not_record_and_leaves_no_temporaries() {
    let Some(disk) = SmallDisk::mount(400) else {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root and the right to mount)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), KILLABLE).unwrap();
    let out = disk.0.path().to_str().unwrap();
    let (code, err) = xtask(
        dir.path(),
        &["sweep", "--experiment", "exp.toml", "--out", out],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    let root = disk.0.path().join("kill");
    let done: Vec<String> = finished(&root).into_iter().map(|(id, _)| id).collect();
    assert!(done.len() < 4, "the disk did not fill up: {err}");
    // Every cell is either finished or named, with its error, in the last lines.
    let ids = cell_ids(dir.path());
    assert_eq!(ids.len(), 4);
    for id in &ids {
        assert!(
            done.contains(id) || err.contains(&format!("  failed {id}: ")),
            "{id} is neither finished nor named: {err}"
        );
    }
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") || last.starts_with("not recorded: "),
        "the last line must say what went wrong: {err}"
    );
    // No cell process panicked on its full log, and every reason says what happened.
    for line in err.lines().filter(|l| l.starts_with("  failed ")) {
        assert!(
            line.contains("No space left on device"),
            "a failure without its reason: {line}\n{err}"
        );
    }
    assert!(!err.contains("exit status: 101"), "{err}");
    let leftovers = leftovers_under(&root, &[".tmp-", ".lock-"]);
    assert!(
        leftovers.is_empty(),
        "temporaries or locks left: {leftovers:?}\n{err}"
    );
}

/// An experiment of two UFM cells and two deep cells with checkpoints every 2 epochs.
const KILLABLE: &str = r#"
[experiment]
name = "kill"
[base]
num_classes = 4
n_majority = 30
temperature = 1.0
steps = 150
lr = 0.05
optimizer = "adam"
log_every = 50
seed = 0
ratio = 10
[grid]
relu = [true, false]
[parts.digits]
kind = "deep"
[parts.digits.base]
dataset = "sklearn-digits"
model = "mlp"
mlp_widths = [32, 16]
epochs = 16
eval_every = 2
lr = 0.05
batch_size = 50
seed = 0
imbalance = { kind = "step", ratio = 10, n_majority = 60 }
[parts.digits.grid]
final_activation = ["relu", "none"]
"#;

fn finished(root: &Path) -> Vec<(String, std::time::SystemTime)> {
    let mut v: Vec<_> = std::fs::read_dir(root)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let s = e.path().join("summary.json");
                    let t = std::fs::metadata(&s).ok()?.modified().ok()?;
                    Some((e.file_name().to_string_lossy().into_owned(), t))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every summary of `root` without its wall-clock seconds, by cell id.
fn results(root: &Path) -> std::collections::BTreeMap<String, serde_json::Value> {
    finished(root)
        .into_iter()
        .map(|(id, _)| {
            let mut v: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(root.join(&id).join("summary.json")).unwrap(),
            )
            .unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            (id, v)
        })
        .collect()
}

/// `xtask sweep` of `KILLABLE` (written to `dir/exp.toml`) into `dir/<out>`, one cell at a
/// time, output discarded.
fn killable_sweep(dir: &Path, out: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.current_dir(dir)
        .args([
            "sweep",
            "--experiment",
            "exp.toml",
            "--jobs",
            "1",
            "--out",
            out,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c
}

/// Waits until a deep cell of the running sweep `child` has a checkpoint in its
/// `.partial-<id>` folder under `root`, and returns that id.
fn wait_for_partial_checkpoint(root: &Path, child: &mut std::process::Child) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let partial = std::fs::read_dir(root).ok().and_then(|d| {
            d.filter_map(|e| e.ok()).find_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let id = name.strip_prefix(".partial-")?.to_string();
                e.path().join("checkpoints/latest").exists().then_some(id)
            })
        });
        if let Some(id) = partial {
            return id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sweep ended too early"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn a_sweep_killed_with_sigkill_resumes_to_the_uninterrupted_results() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), KILLABLE).unwrap();
    let (code, err) = xtask(
        dir.path(),
        &[
            "sweep",
            "--experiment",
            "exp.toml",
            "--jobs",
            "2",
            "--out",
            "whole",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let expected = results(&dir.path().join("whole/kill"));
    assert_eq!(expected.len(), 4);

    // Kill the sweep once the first deep cell has a checkpoint but has not finished.
    let root = dir.path().join("cut/kill");
    let mut child = killable_sweep(dir.path(), "cut").spawn().unwrap();
    wait_for_partial_checkpoint(&root, &mut child);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = finished(&root);
    // The first checkpoint of the interrupted cell, which a resumed run keeps as it is.
    let (partial, first_checkpoint) = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.strip_prefix(".partial-")?.to_string();
            let state = e.path().join("checkpoints/epoch-0002/state.json");
            Some((id, std::fs::metadata(state).ok()?.modified().ok()?))
        })
        .expect("the interrupted cell has its epoch-2 checkpoint");
    assert_eq!(
        before.len(),
        2,
        "the two UFM cells had finished: {before:?}"
    );
    // The cell's process notices that its parent died, saves a checkpoint at its current
    // step and stops: nothing finishes later.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(
        finished(&root),
        before,
        "an orphaned cell process kept running"
    );
    let log = std::fs::read_to_string(root.join(format!(".logs/{partial}.log"))).unwrap();
    assert!(
        log.contains("interrupted at step") && log.contains("checkpoint saved in"),
        "the orphaned cell did not checkpoint: {log}"
    );

    let status = killable_sweep(dir.path(), "cut").status().unwrap();
    assert!(status.success());
    let after = finished(&root);
    for (id, t) in &before {
        let again = after.iter().find(|(i, _)| i == id).unwrap();
        assert_eq!(&again.1, t, "{id} ran again after it had finished");
    }
    let kept = root
        .join(&partial)
        .join("checkpoints/epoch-0002/state.json");
    assert_eq!(
        std::fs::metadata(kept).unwrap().modified().unwrap(),
        first_checkpoint,
        "the interrupted cell resumed from its checkpoint instead of starting again"
    );
    assert_eq!(results(&root), expected);

    // Killed again and rerun at once: the cell process of the killed sweep still holds its
    // lock for a moment; the rerun waits for it to let go instead of skipping the cell, and
    // ends complete, with no temporary file or folder of the dead processes left.
    let root = dir.path().join("fast/kill");
    let mut child = killable_sweep(dir.path(), "fast").spawn().unwrap();
    wait_for_partial_checkpoint(&root, &mut child);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    rerun_to_the_end(dir.path(), "fast", &expected);

    // Killed at several moments in a row, each rerun started at once: a cell finished once
    // is never computed again, and the last run ends with the uninterrupted results.
    let root = dir.path().join("many/kill");
    let mut seen: Vec<(String, std::time::SystemTime)> = Vec::new();
    for delay_ms in [150, 700, 1300, 400, 2000] {
        let mut child = killable_sweep(dir.path(), "many").spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let now = finished(&root);
        for (id, t) in &seen {
            let again = now
                .iter()
                .find(|(i, _)| i == id)
                .expect("a finished cell vanished");
            assert_eq!(&again.1, t, "{id} was computed twice");
        }
        seen = now;
    }
    rerun_to_the_end(dir.path(), "many", &expected);
    for (id, t) in &seen {
        let again = finished(&root).into_iter().find(|(i, _)| i == id).unwrap();
        assert_eq!(&again.1, t, "{id} was computed twice");
    }
}

/// Runs the `KILLABLE` sweep into `dir/<out>` to its end and checks it: success, the results
/// of an uninterrupted sweep, and no temporary, partial folder or lock left anywhere.
fn rerun_to_the_end(
    dir: &Path,
    out: &str,
    expected: &std::collections::BTreeMap<String, serde_json::Value>,
) {
    let root = dir.join(out).join("kill");
    let run = killable_sweep(dir, out)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "the rerun failed: {err}");
    assert_eq!(&results(&root), expected, "{err}");
    // A killed cell's temporaries are removed by the rerun under the cell's lock. A report or
    // figure temporary of a sweep killed while writing the report is removed only once it
    // has been left unchanged for `scl_fs::ABANDONED_AFTER` (a writer on another node of a
    // shared folder must not lose its file): aged past that, the next `report` removes it.
    let left = leftovers_under(&root, &[".tmp-", ".partial-", ".lock-"]);
    for path in &left {
        let name = path.file_name().unwrap().to_string_lossy();
        let in_report = path.parent() == Some(root.as_path())
            || path.parent() == Some(root.join("figures").as_path());
        let pid = scl_fs::parse_temporary(&name).map(|t| t.pid);
        assert!(
            in_report && pid.is_some_and(|p| !scl_fs::process_is_running(p)),
            "left behind: {left:?}\n{err}"
        );
        age(path, 120);
    }
    if !left.is_empty() {
        let report = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .current_dir(dir)
            .args(["report", "--experiment", "exp.toml", "--out", out])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&report.stderr);
        assert!(report.status.success(), "report failed: {err}");
        let left = leftovers_under(&root, &[".tmp-", ".partial-", ".lock-"]);
        assert!(
            left.is_empty(),
            "left behind after `report`: {left:?}\n{err}"
        );
    }
}

/// Counts the distinct colours of a PNG (a blank or one-colour image has 1).
fn png_colours(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
    assert!(img.width() >= 400 && img.height() >= 300);
    let colours: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    colours.len()
}

#[test]
fn two_cell_processes_into_one_folder_merge_into_one_report_with_figures() {
    let dir = tempfile::tempdir().unwrap();
    let text = KILLABLE
        .replace("epochs = 16", "epochs = 4")
        .replace("steps = 150", "steps = 60");
    std::fs::write(dir.path().join("exp.toml"), text).unwrap();
    let cell = |i: &str| {
        Command::new(env!("CARGO_BIN_EXE_xtask"))
            .current_dir(dir.path())
            .args([
                "sweep",
                "--experiment",
                "exp.toml",
                "--out",
                "shared",
                "--cell",
                i,
            ])
            .output()
            .unwrap()
    };
    // Cells 0 and 1 (UFM, ReLU and none) at the same time, then 2 and 3 (deep) at the same time.
    for pair in [["0", "1"], ["2", "3"]] {
        let outs: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = pair.iter().map(|i| s.spawn(move || cell(i))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for o in outs {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
    }
    let (code, err) = xtask(
        dir.path(),
        &["report", "--experiment", "exp.toml", "--out", "shared"],
    );
    assert_eq!(code, 0, "{err}");
    let root = dir.path().join("shared/kill");
    let report = std::fs::read_to_string(root.join("report.md")).unwrap();
    assert!(report.contains("4 of 4 cells finished"), "{report}");
    for (id, _) in finished(&root) {
        assert!(report.contains(&id), "the report lacks {id}");
    }
    let mut figures = 0;
    for group in ["ufm", "sklearn-digits-mlp"] {
        for what in ["of_distance", "nc1", "mean_cosine", "gram"] {
            let png = root.join(format!("figures/{group}-{what}.png"));
            assert!(report.contains(&format!("figures/{group}-{what}.png")));
            let colours = png_colours(&png);
            assert!(colours > 20, "{} has {colours} colours", png.display());
            figures += 1;
        }
    }
    assert_eq!(figures, 8);
    assert!(report.contains("Balanced test accuracy, final ReLU vs none"));
}

#[test]
fn the_slurm_script_matches_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), KILLABLE).unwrap();
    let (code, err) = xtask(
        dir.path(),
        &[
            "slurm",
            "--experiment",
            "exp.toml",
            "--partition",
            "gpu",
            "--max-concurrent",
            "2",
            "--workdir",
            "/cluster/project",
            "--binary",
            "target/release/xtask",
            "--out",
            "results",
            "--script",
            "job.sbatch",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let script = std::fs::read_to_string(dir.path().join("job.sbatch")).unwrap();
    let snapshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/slurm.sbatch");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&snapshot, &script).unwrap();
    }
    assert_eq!(
        script,
        std::fs::read_to_string(&snapshot).unwrap(),
        "rerun with UPDATE_SNAPSHOTS=1 after an intended change"
    );
}

#[test]
fn slurm_values_that_would_change_the_script_exit_2_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), KILLABLE).unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--partition", "gpu\n#SBATCH --wrap=touch /tmp/PWNED"],
            "--partition \"gpu\\n#SBATCH --wrap=touch /tmp/PWNED\" is not allowed: it holds a \
             control character",
        ),
        (
            &["--partition", "gpu;rm"],
            "--partition \"gpu;rm\" is not allowed",
        ),
        (
            &["--time", "abc"],
            "--time \"abc\" is not allowed: Slurm takes minutes",
        ),
        (&["--time", "0"], "--time \"0\" is not allowed"),
        (
            &["--cpus-per-task", "0"],
            "--cpus-per-task 0 is not allowed",
        ),
        (
            &["--set", "epochs=2\nrm -rf x"],
            "--set \"epochs=2\\nrm -rf x\" is not allowed",
        ),
        (&["--workdir", "/a b"], "--workdir \"/a b\" is not allowed"),
        (
            &["--data-dir", "d\rx"],
            "--data-dir \"d\\rx\" is not allowed",
        ),
    ];
    for (extra, sentence) in cases {
        let mut args = vec![
            "slurm",
            "--experiment",
            "exp.toml",
            "--script",
            "job.sbatch",
        ];
        args.extend_from_slice(extra);
        let (code, err) = xtask(dir.path(), &args);
        assert_eq!(code, 2, "{extra:?}: {err}");
        assert!(err.contains(sentence), "{extra:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{extra:?}: {err}");
        assert!(!dir.path().join("job.sbatch").exists(), "{extra:?}");
        assert!(!dir.path().join("runs").exists(), "{extra:?}");
    }
}

#[test]
fn help_lists_the_allowed_values_of_enumerated_options_and_keys() {
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let sweep = help(&["sweep", "--help"]);
    assert!(
        sweep.contains("[possible values: flex, wgpu, cuda]"),
        "{sweep}"
    );
    for line in [
        "schedule: shuffle, batch-binding, fixed, class-balanced",
        "model: mlp, small-cnn, resnet18, densenet",
        "loss: scl, ce",
        "imbalance.kind: step, long-tail, none",
    ] {
        assert!(sweep.contains(line), "{line} missing from:\n{sweep}");
    }
    let imbalance = help(&["data", "imbalance", "--help"]);
    assert!(
        imbalance.contains("mnist, fashion-mnist, cifar10") && imbalance.contains("long-tail"),
        "{imbalance}"
    );
    // A value outside the list: the library's sentence, exit 2.
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = xtask(dir.path(), &["data", "imbalance", "svhn"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown dataset `svhn`; known datasets: mnist"),
        "{err}"
    );
    let (code, err) = xtask(
        dir.path(),
        &["data", "imbalance", "mnist", "--kind", "zipf"],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("--kind zipf is not allowed: the allowed kinds are step, long-tail, none"),
        "{err}"
    );
}

#[test]
fn data_check_finds_mnist_where_torchvision_keeps_it() {
    let shared = std::env::var_os("SCL_SHARED_DATASETS").map(std::path::PathBuf::from);
    let Some(shared) = shared.filter(|d| d.join("mnist").is_dir()) else {
        assert!(
            std::env::var_os("SCL_REQUIRE_SHARED_DATA").is_none(),
            "SCL_REQUIRE_SHARED_DATA is set but SCL_SHARED_DATASETS holds no mnist"
        );
        eprintln!("skipped: no shared datasets (SCL_SHARED_DATASETS)");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let raw = root.path().join("MNIST/raw");
    std::fs::create_dir_all(&raw).unwrap();
    for e in std::fs::read_dir(shared.join("mnist")).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().ends_with(".gz") {
            std::fs::copy(e.path(), raw.join(e.file_name())).unwrap();
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["data", "check", "--data-dir"])
        .arg(root.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mnist = text
        .split("\n== ")
        .find(|s| s.starts_with("mnist "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        mnist.contains(&format!(
            "found in torchvision's folder {} (md5 ok)",
            raw.display()
        )),
        "{mnist}"
    );
    let total = mnist
        .lines()
        .find(|l| l.contains("total"))
        .unwrap_or_default();
    assert_eq!(
        total.split_whitespace().collect::<Vec<_>>(),
        ["total", "60000", "10000"],
        "{mnist}"
    );
}

/// `KILLABLE` with longer deep cells (about a second each here), so that restarted processes
/// meet cells in progress.
fn stress_killable() -> String {
    KILLABLE.replace("epochs = 16", "epochs = 40")
}

/// The ids of the cells of `dir/exp.toml`, grid order.
fn cell_ids(dir: &Path) -> Vec<String> {
    let listed = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(dir)
        .args(["sweep", "--experiment", "exp.toml", "--dry-run"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect()
}

/// How often the outputs in `logs` say that cell `id` was computed to its end (a sweep's
/// `finished <id>: ...` or `--cell`'s `<id>: finished ...`).
fn times_computed(logs: &[String], id: &str) -> usize {
    logs.iter()
        .flat_map(|l| l.lines())
        .filter(|l| {
            l.starts_with(&format!("finished {id}:")) || l.contains(&format!(" {id}: finished "))
        })
        .count()
}

/// One round of the stress test in `dir/<out>`: a sweep killed with its cell processes after
/// `kill_after` (or once a deep cell has a checkpoint), locks planted on the unfinished
/// cells, then two sweeps and two `--cell N` per cell at once, and a last sweep. Returns the
/// standard error of every process of the round.
#[cfg(target_os = "linux")]
fn stress_round(
    dir: &Path,
    out: &str,
    ids: &[String],
    kill_after: Option<std::time::Duration>,
) -> Vec<String> {
    use std::os::unix::process::CommandExt;
    let root = dir.join(out).join("kill");
    let sweep = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
        c.current_dir(dir)
            .args(["sweep", "--experiment", "exp.toml", "--out", out])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        c
    };
    let mut first = sweep(&["--jobs", "2"]);
    first.stderr(std::process::Stdio::null()).process_group(0);
    let mut first = first.spawn().unwrap();
    match kill_after {
        Some(delay) => std::thread::sleep(delay),
        None => {
            wait_for_partial_checkpoint(&root, &mut first);
        }
    }
    let group = format!("-{}", first.id());
    let _ = Command::new("kill").args(["-9", "--", &group]).status();
    first.wait().unwrap();
    // Planted over whatever the killed processes left: locks that name no owner, a process
    // that has ended, and a live process that is not a cell process (pid 1).
    std::fs::create_dir_all(&root).unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    // The live process's lock goes on the first unfinished cell (a round that waited for a
    // checkpoint always has one), the others on the next ones.
    let planted = [
        format!("{host} 1"),
        String::new(),
        "garbage \u{1}".to_string(),
        format!("{host} 99999999"),
    ];
    let unfinished = ids
        .iter()
        .filter(|id| !root.join(id).join("summary.json").exists());
    for (id, content) in unfinished.zip(&planted) {
        std::fs::write(root.join(format!(".lock-{id}")), content).unwrap();
    }
    let mut children = vec![
        sweep(&["--jobs", "2"]).spawn().unwrap(),
        sweep(&["--jobs", "2"]).spawn().unwrap(),
    ];
    for i in 0..ids.len() {
        for _ in 0..2 {
            children.push(sweep(&["--cell", &i.to_string()]).spawn().unwrap());
        }
    }
    let mut logs = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let code = out.status.code().unwrap_or(-1);
        // 0, or 1 for a process that met a cell another process held for longer than it
        // waited (on a loaded machine).
        let busy =
            err.contains("busy: another process") || err.contains("skipped: another process");
        assert!(code == 0 || (code == 1 && busy), "exit {code}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        logs.push(err);
    }
    // The supervised cell processes write to their logs.
    if let Ok(entries) = std::fs::read_dir(root.join(".logs")) {
        for e in entries.flatten() {
            logs.push(std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    // A last sweep finishes what busy processes left (usually nothing).
    let last = sweep(&[]).output().unwrap();
    let err = String::from_utf8_lossy(&last.stderr).into_owned();
    assert!(last.status.success(), "{err}");
    assert!(err.contains(" 0 failed"), "{err}");
    logs.push(err);
    logs
}

#[cfg(target_os = "linux")]
#[test]
fn concurrent_restarts_with_planted_locks_compute_each_cell_once_and_lose_no_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), stress_killable()).unwrap();
    let ids = cell_ids(dir.path());
    assert_eq!(ids.len(), 4);
    let mut foreign_named = false;
    let kills = [None, Some(300), Some(800), Some(1500)];
    for (round, kill) in kills.into_iter().enumerate() {
        let out = format!("o{round}");
        let delay = kill.map(std::time::Duration::from_millis);
        let logs = stress_round(dir.path(), &out, &ids, delay);
        let all = logs.join("\n");
        foreign_named |= all.contains("holds no lock on it (not a cell process of this project)");
        let root = dir.path().join(&out).join("kill");
        for id in &ids {
            let n = times_computed(&logs, id);
            assert!(n <= 1, "round {round}: {id} was computed {n} times:\n{all}");
            let cell = root.join(id);
            for file in ["config.json", "metrics.csv", "summary.json"] {
                assert!(
                    cell.join(file).is_file(),
                    "round {round}: {id} lost {file}:\n{all}"
                );
            }
            if id.contains("digits") {
                assert!(
                    cell.join("checkpoints/epoch-0040/files.json").is_file(),
                    "round {round}: {id} lost its last checkpoint:\n{all}"
                );
            }
        }
        // A report or figure temporary of the sweep killed while writing its report stays
        // until it has aged (`rerun_to_the_end` shows `report` removing it); nothing else.
        let left: Vec<_> = leftovers_under(&root, &[".tmp-", ".partial-", ".lock-"])
            .into_iter()
            .filter(|path| {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let in_report = path.parent() == Some(root.as_path())
                    || path.parent() == Some(root.join("figures").as_path());
                let pid = scl_fs::parse_temporary(&name).map(|t| t.pid);
                !(in_report && pid.is_some_and(|p| !scl_fs::process_is_running(p)))
            })
            .collect();
        assert!(
            left.is_empty(),
            "round {round}: left behind: {left:?}\n{all}"
        );
    }
    // In some round the live process's lock met a cell that had not finished.
    assert!(
        foreign_named,
        "a lock naming a live foreign process was never named"
    );
}

#[test]
fn a_finished_cell_with_incomplete_or_damaged_records_is_named_and_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("exp.toml"),
        KILLABLE.replace("epochs = 16", "epochs = 4"),
    )
    .unwrap();
    let sweep = ["sweep", "--experiment", "exp.toml", "--out", "o"];
    let (code, err) = xtask(dir.path(), &sweep);
    assert_eq!(code, 0, "{err}");
    let root = dir.path().join("o/kill");
    let expected = results(&root);
    let ids = cell_ids(dir.path());
    assert_eq!(ids.len(), 4);
    let file = |i: usize, name: &str| root.join(&ids[i]).join(name);
    // A summary that names its cell and nothing else; a UFM metrics file cut in the middle of
    // a row; a deep summary with one metric turned into a string; deep metrics that are garbage.
    std::fs::write(
        file(0, "summary.json"),
        format!("{{\"cell_id\": \"{}\"}}", ids[0]),
    )
    .unwrap();
    let metrics = std::fs::read_to_string(file(1, "metrics.csv")).unwrap();
    std::fs::write(file(1, "metrics.csv"), &metrics[..metrics.len() * 2 / 3]).unwrap();
    let summary = std::fs::read_to_string(file(2, "summary.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&summary).unwrap();
    v["outcome"]["metrics"][0]["balanced_accuracy"] = serde_json::Value::String("0.9".into());
    std::fs::write(file(2, "summary.json"), v.to_string()).unwrap();
    std::fs::write(file(3, "metrics.csv"), "epoch,step\n\u{0}\u{1}garbage,,,\n").unwrap();

    let listed = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(dir.path())
        .args([
            "sweep",
            "--experiment",
            "exp.toml",
            "--out",
            "o",
            "--dry-run",
        ])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert_eq!(listed.matches("damaged").count(), 4, "{listed}");

    // The report leaves them out of its tables and figures, says why, and warns.
    let (code, err) = xtask(
        dir.path(),
        &["report", "--experiment", "exp.toml", "--out", "o"],
    );
    assert_eq!(code, 0, "{err}");
    let report = std::fs::read_to_string(root.join("report.md")).unwrap();
    assert!(report.contains("0 of 4 cells finished"), "{report}");
    for (i, name) in [
        (0, "summary.json"),
        (1, "metrics.csv"),
        (2, "summary.json"),
        (3, "metrics.csv"),
    ] {
        let shown = file(i, name)
            .strip_prefix(dir.path())
            .unwrap()
            .display()
            .to_string();
        assert!(
            err.contains(&format!(
                "warning: cell {} is left out of the report: {shown}",
                ids[i]
            )),
            "{shown} not named: {err}"
        );
        assert!(
            report.contains(&format!("- `{}`: damaged records ({shown}", ids[i])),
            "{report}"
        );
    }

    // The next sweep names each file, runs the four cells again and ends where it began.
    let (code, err) = xtask(dir.path(), &sweep);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.matches("; cell ").count(), 4, "{err}");
    assert!(
        err.contains("4 cells ran, 0 were already finished"),
        "{err}"
    );
    assert_eq!(results(&root), expected);

    // A finished cell that lost its config.json runs again too.
    std::fs::remove_file(file(0, "config.json")).unwrap();
    let (code, err) = xtask(dir.path(), &sweep);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("config.json: No such file"), "{err}");
    assert!(
        err.contains("1 cells ran, 3 were already finished"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn an_out_folder_is_judged_by_the_file_system_not_its_mode_bits() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), GOOD).unwrap();
    let out = dir.path().join("locked");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o555)).unwrap();
    // Whether this process may write there anyway (root may): the sweep must agree.
    let writable = std::fs::File::create(out.join("probe")).is_ok();
    let _ = std::fs::remove_file(out.join("probe"));
    let (code, err) = xtask(
        dir.path(),
        &["sweep", "--experiment", "exp.toml", "--out", "locked"],
    );
    if writable {
        assert_eq!(code, 0, "a writable folder was refused: {err}");
    } else {
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("--out locked is not allowed: locked cannot be written"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();

    // A read-only mount (where this process may mount one): one sentence, the error once.
    let Some(disk) = SmallDisk::mount_with(64, "ro") else {
        eprintln!("skipped the read-only mount: cannot mount a tmpfs here");
        return;
    };
    let ro = disk.0.path().to_str().unwrap();
    let (code, err) = xtask(
        dir.path(),
        &["sweep", "--experiment", "exp.toml", "--out", ro],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cannot be written (Read-only file system"),
        "{err}"
    );
    assert_eq!(err.matches("Read-only file system").count(), 1, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[cfg(unix)]
#[test]
fn a_signal_during_validation_ends_the_sweep_at_once() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let text = KILLABLE
        .replace("dataset = \"sklearn-digits\"", "dataset = \"mnist\"")
        .replace("n_majority = 60 }", "n_majority = 600 }");
    std::fs::write(dir.path().join("exp.toml"), text).unwrap();
    // A dataset file whose md5 takes seconds to compute: validation is still hashing it when
    // the signal comes.
    let data = dir.path().join("data/mnist");
    std::fs::create_dir_all(&data).unwrap();
    let big = std::fs::File::create(data.join("train-images-idx3-ubyte.gz")).unwrap();
    big.set_len(6 << 30).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(dir.path())
        .args([
            "sweep",
            "--experiment",
            "exp.toml",
            "--out",
            "o",
            "--data-dir",
            "data",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(15),
        "the first SIGTERM was not obeyed: {status}"
    );
    assert!(!dir.path().join("o").exists(), "nothing may be written");
}

#[test]
fn a_listing_read_only_in_part_ends_quietly() {
    use std::io::BufRead;
    // 3000 cells: more lines than a pipe holds, so the listing meets the closed pipe.
    let seeds: Vec<String> = (0..3000).map(|s| s.to_string()).collect();
    let text = GOOD.replace(
        "ratio = [1, 2]",
        &format!("ratio = [1]\nseed = [{}]", seeds.join(", ")),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(dir.path())
        .args(["sweep", "--experiment", "exp.toml", "--dry-run"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line, as `| head -1` does, and close the pipe.
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("pending"), "{first}");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn report_redraws_a_committed_experiment_from_its_records() {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let records = repository.join("docs/results/ufm-plateau");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ufm-plateau");
    std::fs::create_dir_all(&root).unwrap();
    let mut cells = 0;
    for entry in std::fs::read_dir(&records).unwrap().flatten() {
        // Cell folders only: a redraw into docs/results leaves figures/ there (ignored by git).
        if !entry.path().join("summary.json").is_file() {
            continue;
        }
        let to = root.join(entry.file_name());
        std::fs::create_dir_all(&to).unwrap();
        for file in ["config.json", "metrics.csv", "summary.json"] {
            std::fs::copy(entry.path().join(file), to.join(file)).unwrap();
        }
        cells += 1;
    }
    assert_eq!(cells, 40);
    let experiment = repository.join("experiments/ufm-plateau.toml");
    let (code, err) = xtask(
        dir.path(),
        &[
            "report",
            "--experiment",
            experiment.to_str().unwrap(),
            "--out",
            dir.path().to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
    let report = std::fs::read_to_string(root.join("report.md")).unwrap();
    assert!(report.contains("40 of 40 cells finished"), "{report}");
    // One figure per metric and Adam epsilon, each drawn (not blank) and named in the report.
    let figures: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("figures"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(figures.len(), 6, "{figures:?}");
    for png in &figures {
        assert!(png_colours(png) > 20, "{} is blank", png.display());
        let name = png.file_name().unwrap().to_string_lossy().into_owned();
        assert!(report.contains(&name), "{name} is not in the report");
    }
    // The table of the committed records is the one the report writes.
    assert_eq!(
        std::fs::read_to_string(root.join("results.csv")).unwrap(),
        std::fs::read_to_string(records.join("results.csv")).unwrap()
    );
}
