//! The two switches of a network that runs and records name: how its convolutions start
//! ([`WeightInit`]) and whether its final layer has a ReLU ([`FinalActivation`]). The networks
//! themselves are scl-models'.

use serde::{Deserialize, Serialize};

/// How a network's convolutions start (batch norm starts at scale 1, shift 0, and linear layers
/// uniform in `±1/sqrt(fan_in)`, PyTorch's default, either way).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightInit {
    /// Burn's default for every convolution: uniform in `±1/sqrt(fan_in)` (PyTorch's default
    /// for a layer that sets nothing).
    #[default]
    Burn,
    /// The authors' networks: ResNet-18's convolutions Kaiming-normal with fan_out, standard
    /// deviation `sqrt(2 / (out_channels k^2))` (torchvision's ResNet); DenseNet's
    /// Kaiming-normal with fan_in, `sqrt(2 / (in_channels k^2))` (PyTorch's `kaiming_normal_`);
    /// the MLP and the small CNN, which the paper does not have, as [`WeightInit::Burn`].
    Authors,
}

impl WeightInit {
    /// Every initialisation, in the order option lists show them.
    pub const ALL: [Self; 2] = [Self::Burn, Self::Authors];
}

/// The paper's switch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FinalActivation {
    /// A ReLU on the final layer: non-negative embeddings (UFM+).
    #[default]
    Relu,
    /// No activation on the final layer.
    None,
}

impl FinalActivation {
    /// Every final activation, in the order option lists show them.
    pub const ALL: [Self; 2] = [Self::Relu, Self::None];
}
