//! The backends a run can use, by name (`flex`, `wgpu`, `cuda`): the one place they are
//! spelled. Which of them a binary has compiled in, their devices and the runs on them are
//! scl-train's (`scl_train::backend`).

use std::fmt;
use std::str::FromStr;

use crate::config::ConfigError;

/// A Burn backend, selected by name (`flex`, `wgpu`, `cuda`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Burn's Flex CPU backend, the default (cargo feature `flex`, on by default).
    Flex,
    /// WebGPU through wgpu: Vulkan, Metal, DX12, or the CPU through Mesa's lavapipe
    /// (cargo feature `wgpu`).
    Wgpu,
    /// NVIDIA CUDA (cargo feature `cuda`).
    Cuda,
}

/// Every backend name, for error messages and option lists ([`BackendKind::name`] of
/// [`BackendKind::ALL`]).
pub const BACKEND_NAMES: [&str; 3] = {
    let mut names = [""; 3];
    let mut i = 0;
    while i < names.len() {
        names[i] = BackendKind::ALL[i].name();
        i += 1;
    }
    names
};

impl BackendKind {
    /// Every backend, compiled in or not.
    pub const ALL: [BackendKind; 3] = [Self::Flex, Self::Wgpu, Self::Cuda];

    /// The name used on the command line and in run records (the one place backends are
    /// spelled: [`FromStr`] and serde read these names back).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Flex => "flex",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        }
    }

    /// Whether this backend runs on the CPU (its memory is the process's heap).
    pub fn is_cpu(self) -> bool {
        matches!(self, Self::Flex)
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for BackendKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for BackendKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for BackendKind {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(kind) = Self::ALL.into_iter().find(|k| k.name() == s) {
            return Ok(kind);
        }
        match s {
            "ndarray" => Err(ConfigError::new(format!(
                "backend ndarray is not allowed: Burn 0.22 deprecates its ndarray backend and \
                 this build has none; use flex (Burn's CPU backend). The allowed backends are {}",
                BACKEND_NAMES.join(", ")
            ))),
            other => Err(ConfigError::new(format!(
                "backend {other} is not allowed: the allowed backends are {}",
                BACKEND_NAMES.join(", ")
            ))),
        }
    }
}
