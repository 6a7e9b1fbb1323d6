use super::*;
use crate::config::{LrSchedule, OptimizerKind};

fn ufm() -> UfmConfig {
    UfmConfig {
        num_classes: 2,
        dim: None,
        n_majority: 4,
        ratio: 2.0,
        relu: true,
        temperature: 1.0,
        steps: 2,
        lr: 0.1,
        lr_schedule: LrSchedule::Constant,
        adam_epsilon: None,
        optimizer: OptimizerKind::Adam,
        seed: 0,
        log_every: 1,
        schedule: None,
        batch_size: None,
    }
}

fn deep() -> DeepConfig {
    toml::from_str("dataset = \"mnist\"\nmodel = \"mlp\"\nepochs = 1").unwrap()
}

fn label() -> RunLabel {
    RunLabel {
        cell_id: "cell".into(),
        experiment: "exp".into(),
        axes: vec![("relu".into(), "true".into())],
    }
}

fn keys(value: &impl Serialize) -> Vec<String> {
    let value = serde_json::to_value(value).unwrap();
    value.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn both_kinds_write_records_of_one_schema_and_read_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let u = ConfigRecord::new(&label(), BackendKind::Flex, "abc", &ufm());
    let d = ConfigRecord::new(&label(), BackendKind::Wgpu, "abc", &deep());
    assert_eq!(keys(&u), keys(&d));
    assert_eq!((u.kind, d.kind), (RunKind::Ufm, RunKind::Deep));
    write_config_record(dir.path(), &d).unwrap();
    let back: ConfigRecord<DeepConfig> =
        read_config_record(dir.path(), &RunLabel::default()).unwrap();
    assert_eq!(back, d);
    // A deep record is not read as a UFM one: one sentence naming the file.
    let err = read_config_record::<UfmConfig>(dir.path(), &label()).unwrap_err();
    assert!(
        err.ends_with("it is the record of a deep run, not of a ufm run"),
        "{err}"
    );

    let outcome = DeepOutcome {
        dataset_title: "MNIST".into(),
        class_counts: vec![1, 1],
        minority: vec![],
        metrics: vec![],
    };
    let s = Summary::new("cell", BackendKind::Flex, 1.5, &deep(), outcome);
    write_summary(dir.path(), &s).unwrap();
    let back: DeepSummary = read_summary(dir.path()).unwrap();
    assert_eq!((back.cell_id.as_str(), back.kind), ("cell", RunKind::Deep));
    assert_eq!(back.outcome, s.outcome);
    assert_eq!(
        keys(&back),
        [
            "backend", "cell_id", "config", "kind", "outcome", "schema", "seconds"
        ]
    );
}

#[test]
fn records_from_before_the_contract_are_upgraded_when_read() {
    let dir = tempfile::tempdir().unwrap();
    // A deep config.json of schema 1: kind "deep", the dataset's title and counts, no name.
    let mut old = serde_json::json!({
        "backend": "flex",
        "class_counts": [5, 1],
        "config": deep(),
        "dataset_title": "MNIST",
        "git_revision": "abc",
        "kind": "deep",
    });
    std::fs::write(dir.path().join(CONFIG), old.to_string()).unwrap();
    let record: ConfigRecord<DeepConfig> = read_config_record(dir.path(), &label()).unwrap();
    assert_eq!(
        record,
        ConfigRecord::new(&label(), BackendKind::Flex, "abc", &deep())
    );
    old["kind"] = "ufm".into();
    std::fs::write(dir.path().join(CONFIG), old.to_string()).unwrap();
    let err = read_config_record::<DeepConfig>(dir.path(), &label()).unwrap_err();
    assert!(
        err.ends_with("it is the record of a ufm run, not of a deep run"),
        "{err}"
    );

    // A deep summary.json of schema 1: the outcome flat beside the common fields.
    let flat = serde_json::json!({
        "cell_id": "cell",
        "config": deep(),
        "seconds": 2.0,
        "backend": "flex",
        "dataset_title": "MNIST",
        "class_counts": [5, 1],
        "minority": [1],
        "metrics": [],
    });
    let summary: DeepSummary = parse_summary(dir.path(), &flat.to_string()).unwrap();
    assert_eq!(summary.kind, RunKind::Deep);
    assert_eq!(summary.outcome.class_counts, [5, 1]);
    assert_eq!(summary.outcome.minority, [1]);
    // An incomplete one names the file.
    let err = parse_summary::<DeepConfig>(dir.path(), r#"{"cell_id": "cell"}"#).unwrap_err();
    assert!(
        err.starts_with(&dir.path().join(SUMMARY).display().to_string()),
        "{err}"
    );
}
