//! The SCL training settings of the paper's CIFAR-10 runs (`experiments/paper-cifar10.toml`),
//! shared by the GPU check's ResNet-18 training and `cargo xtask bench train`: SupCon with
//! tau = 0.1 and base temperature 0.07; SGD with momentum 0.9 and weight decay 5e-4 (the
//! learning rate is given at each step).

use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{ModuleOptimizer, SgdConfig};
use scl_loss::{SupConLoss, SupConLossConfig};

/// SGD with momentum 0.9 and weight decay 5e-4.
pub(crate) fn optimizer() -> ModuleOptimizer {
    SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_momentum(0.9)))
        .with_weight_decay(Some(WeightDecayConfig::new(5e-4)))
        .init()
}

/// SupCon with tau = 0.1 and base temperature 0.07.
pub(crate) fn loss() -> SupConLoss {
    SupConLossConfig::new()
        .with_temperature(0.1)
        .with_base_temperature(0.07)
        .init()
}
