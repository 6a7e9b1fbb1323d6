//! Tests of the deep configuration: its keys, evaluated epochs and validation.

use super::*;

#[test]
fn deep_keys_are_exactly_the_fields_of_the_config() {
    // Experiment files check keys against DEEP_KEYS before serde sees them; the two lists
    // must not drift. Every optional field is set so that it serialises.
    let mut cfg: DeepConfig =
        toml::from_str("dataset = \"mnist\"\nmodel = \"mlp\"\nepochs = 1").unwrap();
    cfg.projection = Some(8);
    cfg.inject_nan_at_step = Some(1);
    cfg.interrupt_at_step = Some(1);
    cfg.linear_probe = true;
    cfg.dampening = 0.1;
    cfg.eval_epochs = Some(vec![1]);
    cfg.cnn_head = CnnHead::LinearBn;
    cfg.init = WeightInit::Authors;
    cfg.log_every = Some(1);
    let value = serde_json::to_value(&cfg).unwrap();
    let mut fields: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut keys = DEEP_KEYS.to_vec();
    fields.sort_unstable();
    keys.sort_unstable();
    assert_eq!(fields, keys);
    for key in DEEP_REQUIRED_KEYS {
        assert!(DEEP_KEYS.contains(key), "{key}");
    }
}

#[test]
fn eval_epochs_replace_eval_every_and_the_last_epoch_is_always_evaluated() {
    let base = "dataset = \"sklearn-digits\"\nmodel = \"mlp\"\nepochs = 12\n";
    let cfg = |extra: &str| -> DeepConfig { toml::from_str(&format!("{base}{extra}")).unwrap() };
    let every = cfg("eval_every = 5");
    let evaluated: Vec<usize> = (1..=12).filter(|&e| every.is_evaluated(e)).collect();
    assert_eq!(evaluated, [5, 10, 12]);
    assert_eq!(every.evaluated_count(), 3);
    let listed = cfg("eval_every = 5\neval_epochs = [1, 3, 3, 9]");
    let evaluated: Vec<usize> = (1..=12).filter(|&e| listed.is_evaluated(e)).collect();
    assert_eq!(evaluated, [1, 3, 9, 12]);
    assert_eq!(listed.evaluated_count(), 4);
    assert!(listed.validate().is_ok());
    let err = cfg("eval_epochs = [0, 3]")
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("eval_epochs = [0, 3] is not allowed: epochs count from 1"),
        "{err}"
    );
    // A list longer than the run (a profile that shortens it): the rest is never reached.
    let short = cfg("eval_epochs = [1, 3, 20, 350]");
    assert!(short.validate().is_ok());
    let evaluated: Vec<usize> = (1..=12).filter(|&e| short.is_evaluated(e)).collect();
    assert_eq!(evaluated, [1, 3, 12]);
    assert_eq!(short.evaluated_count(), 3);
}

#[test]
fn a_schedule_whose_rate_grows_past_the_limit_is_refused() {
    let base = "dataset = \"sklearn-digits\"\nmodel = \"mlp\"\nepochs = 100\n";
    let cfg = |extra: &str| -> DeepConfig { toml::from_str(&format!("{base}{extra}")).unwrap() };
    let err = cfg("lr_milestones = [10, 20]\nlr_gamma = 1e300")
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("lr_gamma = 1e300 is not allowed: with lr = 0.1 and 2 milestones"),
        "{err}"
    );
    // Milestones after the last epoch are never reached; a gamma below 1 only lowers it.
    assert!(
        cfg("lr_milestones = [200]\nlr_gamma = 1e300")
            .validate()
            .is_ok()
    );
    assert!(
        cfg("lr_milestones = [10, 20]\nlr_gamma = 0.1")
            .validate()
            .is_ok()
    );
    assert!(
        cfg("lr_milestones = [10, 20]\nlr_gamma = 2")
            .validate()
            .is_ok()
    );
}
