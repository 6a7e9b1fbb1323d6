//! The network a deep run trains ([`model_config`]) and whether it fits this machine's
//! memory ([`check_memory`]): both need the network's sizes, which scl-models knows.

use super::*;

/// Bytes a logged row takes in memory, at most: an epoch's metrics with its geometry
/// (the larger of the two kinds of row the run keeps).
pub const LOGGED_ROW_BYTES: f64 = std::mem::size_of::<EpochMetrics>() as f64;

/// Checks `cfg` ([`DeepConfig::validate`]) and then its sizes against this machine's memory
/// ([`check_memory`]).
///
/// # Errors
/// A [`ConfigError`] sentence naming the key.
pub fn check(cfg: &DeepConfig) -> Result<(), ConfigError> {
    cfg.validate()?;
    check_memory(cfg)
}

/// The model's parameters, their gradients and the optimiser's state (16 bytes per
/// parameter in f32), one batch's activations (`batch_size x views` examples,
/// [`SclModelConfig::activation_count`] values each, 8 bytes with their gradients) and the
/// logged rows the run keeps (one per logged step and per evaluated epoch) against this
/// machine's memory, before anything is allocated: one sentence naming the keys.
pub fn check_memory(cfg: &DeepConfig) -> Result<(), ConfigError> {
    let manifest =
        Manifest::named(&cfg.dataset).map_err(|e| ConfigError::new(format!("dataset: {e}")))?;
    let (shape, num_classes) = (manifest.image_shape, manifest.num_classes);
    let train_examples = manifest.split_size(Split::Train);
    let Some(available) = scl_types::machine_memory_bytes() else {
        return Ok(());
    };
    let available_f = available as f64;
    let model = model_config(cfg, shape, num_classes);
    let parameters = model.parameter_count();
    let needed = 16.0 * parameters;
    if needed > available_f {
        let keys = match cfg.model {
            ModelKind::Mlp => format!("mlp_widths = {:?}", cfg.mlp_widths),
            ModelKind::SmallCnn => format!("embedding = {}", cfg.embedding),
            ModelKind::Resnet18 => format!("resnet_width = {}", cfg.resnet_width),
            ModelKind::Densenet => "the DenseNet-BC configuration".to_string(),
        };
        let keys = match cfg.projection {
            Some(p) => format!("{keys} with projection = {p}"),
            None => keys,
        };
        return Err(ConfigError::new(format!(
            "{keys} is not allowed: the model would have about {parameters:.1e} parameters, \
             {} GiB with their gradients and the optimiser's state, more than this \
             machine's {} GiB of memory; lower it",
            scl_types::gib_text(needed),
            scl_types::gib_text(available_f)
        )));
    }
    let views: u32 = if cfg.views == ViewPreset::Single {
        1
    } else {
        2
    };
    let activations =
        8.0 * cfg.batch_size as f64 * f64::from(views) * model.activation_count(shape);
    if needed + activations > available_f {
        return Err(ConfigError::new(format!(
            "batch_size = {} is not allowed: with {views} views of each example a batch \
             would keep about {} GiB of activations, more than this machine's {} GiB of \
             memory beside the model; lower batch_size",
            cfg.batch_size,
            scl_types::gib_text(activations),
            scl_types::gib_text(available_f)
        )));
    }
    let steps = cfg.epochs as f64 * (train_examples as f64 / cfg.batch_size as f64).ceil();
    let rows = cfg.log_every.map_or(0.0, |n| steps / n as f64) + cfg.evaluated_count() as f64;
    let kept = rows * LOGGED_ROW_BYTES;
    if kept > available_f / 2.0 {
        return Err(ConfigError::new(format!(
            "epochs = {} is not allowed with log_every = {}: the run would keep about \
             {rows:.1e} logged rows ({} evaluated epochs), {} GiB, more than half this \
             machine's {} GiB of memory; lower epochs or log less often",
            cfg.epochs,
            cfg.log_every
                .map_or_else(|| "(absent)".to_string(), |n| n.to_string()),
            cfg.evaluated_count(),
            scl_types::gib_text(kept),
            scl_types::gib_text(available_f)
        )));
    }
    Ok(())
}

/// The model configuration for images of `shape` (after the views' transforms).
pub fn model_config(cfg: &DeepConfig, shape: [usize; 3], num_classes: usize) -> SclModelConfig {
    let architecture = match cfg.model {
        ModelKind::Mlp => Architecture::Mlp(MlpConfig::new(
            shape.iter().product(),
            cfg.mlp_widths.clone(),
        )),
        ModelKind::SmallCnn => Architecture::SmallCnn(
            SmallCnnConfig::new(shape[0])
                .with_embedding(cfg.embedding)
                .with_head_norm(cfg.cnn_head == CnnHead::LinearBn),
        ),
        ModelKind::Resnet18 => Architecture::Resnet18(
            ResNet18Config::new()
                .with_in_channels(shape[0])
                .with_width(cfg.resnet_width)
                .with_init(cfg.init),
        ),
        ModelKind::Densenet => Architecture::Densenet(
            DenseNetConfig::new()
                .with_in_channels(shape[0])
                .with_init(cfg.init),
        ),
    };
    SclModelConfig::new(architecture, num_classes)
        .with_final_activation(cfg.final_activation)
        .with_projection(cfg.projection)
}

#[cfg(test)]
mod tests {
    use super::*;

    trait Check {
        fn check(&self) -> Result<(), ConfigError>;
    }
    impl Check for DeepConfig {
        fn check(&self) -> Result<(), ConfigError> {
            check(self)
        }
    }

    #[test]
    fn batches_and_logs_no_machine_holds_are_one_sentence() {
        if scl_types::machine_memory_bytes().is_none() {
            return;
        }
        let base = "dataset = \"sklearn-digits\"\nmodel = \"mlp\"\n";
        let cfg =
            |extra: &str| -> DeepConfig { toml::from_str(&format!("{base}{extra}")).unwrap() };
        let err = cfg("epochs = 1\nbatch_size = 100000000000")
            .check()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("batch_size = 100000000000 is not allowed: with 2 views"),
            "{err}"
        );
        let err = cfg("epochs = 1000000000000\nlog_every = 1")
            .check()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("epochs = 1000000000000 is not allowed with log_every = 1"),
            "{err}"
        );
        // The sizes the experiment files use pass.
        assert!(
            cfg("epochs = 200\nlog_every = 1\nbatch_size = 1024")
                .check()
                .is_ok()
        );
    }

    #[test]
    fn the_batch_norm_head_belongs_to_the_small_cnn() {
        let cfg = |text: &str| -> DeepConfig {
            toml::from_str(&format!("dataset = \"sklearn-digits\"\nepochs = 1\n{text}")).unwrap()
        };
        let cnn = cfg("model = \"small-cnn\"\ncnn_head = \"linear-bn\"");
        assert!(cnn.check().is_ok());
        let SclModelConfig { architecture, .. } = model_config(&cnn, [1, 8, 8], 10);
        assert!(matches!(architecture, Architecture::SmallCnn(c) if c.head_norm));
        let err = cfg("model = \"mlp\"\ncnn_head = \"linear-bn\"")
            .check()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cnn_head = linear-bn is not allowed with model = mlp"),
            "{err}"
        );
        // The default head is not written, so cells without the key keep their ids.
        let plain = serde_json::to_string(&cfg("model = \"small-cnn\"")).unwrap();
        assert!(!plain.contains("cnn_head"), "{plain}");
    }

    #[test]
    fn model_sizes_no_machine_holds_are_one_sentence_before_anything_is_allocated() {
        let base = "dataset = \"sklearn-digits\"\nepochs = 1\n";
        let cases = [
            (
                "model = \"mlp\"\nmlp_widths = [100000000]",
                "mlp_widths = [100000000]",
            ),
            (
                "model = \"mlp\"\nprojection = 1000000000",
                "mlp_widths = [256, 128] with projection = 1000000000",
            ),
            (
                "model = \"small-cnn\"\nembedding = 1000000000",
                "embedding = 1000000000",
            ),
            (
                "model = \"resnet18\"\nresnet_width = 1000000",
                "resnet_width = 1000000",
            ),
        ];
        for (text, key) in cases {
            let cfg: DeepConfig = toml::from_str(&format!("{base}{text}")).unwrap();
            if scl_types::machine_memory_bytes().is_none() {
                assert!(cfg.check().is_ok());
                continue;
            }
            let err = cfg.check().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("{key} is not allowed: the model would have about")),
                "{err}"
            );
            assert!(err.contains("GiB of memory"), "{err}");
        }
        // The default sizes pass.
        let cfg: DeepConfig = toml::from_str(&format!("{base}model = \"resnet18\"")).unwrap();
        cfg.check().unwrap();
    }
}
