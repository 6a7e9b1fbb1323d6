//! End-to-end tests of the workspace: one test binary, one module per area.

mod datasets;
mod deep_training;
mod experiment_files;
mod fused_wgpu;
mod quick_sweep;
mod tidy;
mod ufm_batching;
mod validator_vs_optimisation;

use std::path::Path;

use scl_experiments::experiment::Experiment;
use scl_experiments::runner::{SweepOptions, SweepOutcome, run_sweep};
use scl_train::backend::BackendKind;

/// Runs the `smoke` profile of `experiments/<file>` on the CPU into a fresh temporary
/// folder; checks that no cell failed and every cell finished.
fn run_smoke(file: &str) -> (Experiment, SweepOutcome, tempfile::TempDir) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../experiments")
        .join(file);
    let experiment = Experiment::load(&path, Some("smoke"))
        .unwrap_or_else(|e| panic!("{file} and its smoke profile parse: {e}"));
    let out = tempfile::tempdir().unwrap();
    let outcome = run_sweep(
        &experiment,
        &SweepOptions {
            results_root: out.path().to_path_buf(),
            backend: BackendKind::Flex,
            jobs: 2,
            devices: Vec::new(),
            progress: false,
            data_dir: None,
            launcher: None,
            save_embeddings: false,
        },
    )
    .unwrap();
    scl_report::write_report(&experiment, out.path()).unwrap();
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    assert_eq!(outcome.summaries.len(), experiment.cells.len());
    (experiment, outcome, out)
}
