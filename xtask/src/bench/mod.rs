//! `cargo xtask bench loss|train|ufm`: benchmarks that print a table; `loss` and `train`
//! write their own section of `docs/benchmarks.md` (and a JSON file beside it), `ufm` its
//! paired rows as CSV.

mod loss;
mod train;
mod ufm;

use scl_train::backend::BackendRuntime;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use scl_train::backend::BackendKind;

/// Arguments of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: Bench,
}

#[derive(clap::Subcommand, Debug)]
enum Bench {
    /// SupCon forward + backward, reference vs fused, per backend and batch size.
    Loss(loss::LossArgs),
    /// One SCL training step of every scl-models network per backend, beside PyTorch's.
    Train(train::TrainBenchArgs),
    /// Full-batch UFM+ cells in scl-train and in PyTorch from the same starting features,
    /// seed by seed: what each optimiser reaches.
    Ufm(ufm::UfmBenchArgs),
}

/// Runs the benchmark named on the command line.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.what {
        Bench::Loss(args) => loss::run(args),
        Bench::Train(args) => train::run(args),
        Bench::Ufm(args) => ufm::run(args),
    }
}

/// The backends to measure: those named, each compiled in, else `default`.
fn backends(named: &[BackendKind], default: Vec<BackendKind>) -> Result<Vec<BackendKind>, String> {
    if named.is_empty() {
        return Ok(default);
    }
    named
        .iter()
        .map(|&b| {
            b.check_available().map_err(|e| format!("{e}"))?;
            Ok(b)
        })
        .collect()
}

/// The Python that runs PyTorch's reference scripts: `~/.venv-torch/bin/python3` when it
/// exists, else `python3`.
fn default_python() -> PathBuf {
    if let Some(home) = std::env::var_os("HOME") {
        let venv = Path::new(&home).join(".venv-torch/bin/python3");
        if venv.exists() {
            return venv;
        }
    }
    PathBuf::from("python3")
}

/// Runs PyTorch's reference `script` (in `benches/reference/`) with `flags` (each `--flag
/// value`), `switches` and `--out <temporary>`, its progress lines on standard error; the JSON
/// it wrote, or one sentence saying why there is none.
fn run_reference<T: serde::de::DeserializeOwned>(
    python: &Path,
    script: &str,
    flags: &[(&str, String)],
    switches: &[&str],
) -> Result<T, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../benches/reference")
        .join(script);
    let out = std::env::temp_dir().join(format!(
        "scl-bench-{}-{}.json",
        script.file_stem().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let status = Command::new(python)
        .arg(&script)
        .args(
            flags
                .iter()
                .flat_map(|(flag, value)| [*flag, value.as_str()]),
        )
        .args(switches)
        .arg("--out")
        .arg(&out)
        // Standard output is the benchmark's table.
        .stdout(std::io::stderr())
        .status();
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    match status {
        Err(e) => Err(format!("{} could not be started ({e})", python.display())),
        Ok(s) if !s.success() => Err(format!(
            "{} {} failed ({s})",
            python.display(),
            script.display()
        )),
        Ok(_) => {
            serde_json::from_str(&text).map_err(|e| format!("its output could not be read ({e})"))
        }
    }
}

fn markers(name: &str) -> (String, String) {
    (
        format!("<!-- cargo xtask bench {name}: begin (generated; edit outside the markers) -->"),
        format!("<!-- cargo xtask bench {name}: end -->"),
    )
}

/// `page` with the generated section of benchmark `name` replaced by `section` (appended when
/// absent), so the hand-written parts of docs/benchmarks.md and the other benchmarks'
/// sections stay.
fn splice(page: &str, section: &str, name: &str) -> String {
    let (begin, end) = markers(name);
    let block = format!("{begin}\n{section}{end}\n");
    match (page.find(&begin), page.find(&end)) {
        (Some(a), Some(b)) if a < b => {
            format!(
                "{}{block}{}",
                &page[..a],
                page[b + end.len()..].trim_start_matches('\n')
            )
        }
        _ if page.trim().is_empty() => format!("# Benchmarks\n\n{block}"),
        _ => format!("{}\n\n{block}", page.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::{markers, splice};

    #[test]
    fn the_generated_section_is_replaced_and_the_rest_kept() {
        let (begin, end) = markers("loss");
        let first = splice("", "table 1\n", "loss");
        assert!(first.starts_with("# Benchmarks") && first.contains("table 1"));
        let page = format!("{first}\n## GPU\nhand-written\n");
        let second = splice(&page, "table 2\n", "loss");
        assert!(second.contains("table 2") && !second.contains("table 1"));
        assert!(second.contains("## GPU\nhand-written"));
        assert_eq!(second.matches(&begin).count(), 1);
        assert_eq!(second.matches(&end).count(), 1);
        // Another benchmark's section is added beside it and leaves it alone.
        let third = splice(&second, "steps\n", "train");
        assert!(third.contains("table 2") && third.contains("steps"));
        let fourth = splice(&third, "steps 2\n", "train");
        assert!(fourth.contains("table 2") && fourth.contains("steps 2"));
        assert!(!fourth.contains("steps\n"));
    }
}
