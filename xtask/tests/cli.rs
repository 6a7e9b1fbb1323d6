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
        err.contains("backend tpu is not allowed: the allowed backends are ndarray, wgpu, cuda"),
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
        .filter(|e| e.path().is_dir())
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
    let (code, err) = xtask(dir.path(), &args);
    assert_eq!(code, 0, "{err}");
    assert!(dir.path().join("out/summary.json").exists());
    assert!(
        dir.path()
            .join("out/checkpoints/epoch-0002/state.json")
            .exists()
    );
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
}
