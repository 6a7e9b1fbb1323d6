//! Every experiment file in `experiments/` parses, with and without its `smoke` profile, and
//! the smoke profile expands to at least one cell; every run configuration there
//! (`train-*.toml`, for `cargo xtask train`) parses and passes validation.

#[test]
fn every_experiment_file_parses_and_its_smoke_profile_has_cells() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    let (runs, files): (Vec<_>, Vec<_>) = files.into_iter().partition(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("train-"))
    });
    assert!(!runs.is_empty(), "no train-*.toml in experiments/");
    for file in runs {
        let text = std::fs::read_to_string(&file).unwrap();
        let config: scl_train::deep::DeepConfig =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {}", file.display(), e.message()));
        config
            .validate()
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
    for file in files {
        let full = scl_experiments::experiment::Experiment::load(&file, None)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let smoke = scl_experiments::experiment::Experiment::load(&file, Some("smoke"))
            .unwrap_or_else(|e| panic!("{} --profile smoke: {e}", file.display()));
        assert!(
            !smoke.is_empty(),
            "{}: the smoke profile has no cell",
            file.display()
        );
        assert!(smoke.len() <= full.len(), "{}", file.display());
    }
}
