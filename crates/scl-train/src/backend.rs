//! Choosing a Burn backend at run time, among those compiled in.

use std::fmt;
use std::str::FromStr;

use crate::RunError;
use crate::config::{ConfigError, UfmConfig};
use crate::ufm::UfmOutcome;

/// A Burn backend, selected by name (`ndarray`, `wgpu`, `cuda`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Burn's embedded CPU backend (cargo feature `ndarray`, on by default).
    Ndarray,
    /// WebGPU through wgpu: Vulkan, Metal, DX12, or the CPU through Mesa's lavapipe
    /// (cargo feature `wgpu`).
    Wgpu,
    /// NVIDIA CUDA (cargo feature `cuda`).
    Cuda,
}

/// Every backend name, for error messages.
pub const BACKEND_NAMES: &[&str] = &["ndarray", "wgpu", "cuda"];

impl BackendKind {
    /// The name used on the command line and in run records.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ndarray => "ndarray",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        }
    }

    /// Whether this backend was compiled into the binary.
    pub fn compiled(self) -> bool {
        match self {
            Self::Ndarray => cfg!(feature = "ndarray"),
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// The backends compiled into this binary.
    pub fn compiled_in() -> Vec<BackendKind> {
        [Self::Ndarray, Self::Wgpu, Self::Cuda]
            .into_iter()
            .filter(|b| b.compiled())
            .collect()
    }

    /// An error naming the cargo feature when this backend was not compiled in.
    ///
    /// # Errors
    /// A [`ConfigError`] sentence.
    pub fn check_available(self) -> Result<(), ConfigError> {
        if self.compiled() {
            Ok(())
        } else {
            Err(ConfigError::new(format!(
                "backend {} was not compiled in: rebuild with the cargo feature `{}` \
                 (e.g. `cargo run -p xtask --features {} -- sweep ...`)",
                self.name(),
                self.name(),
                self.name()
            )))
        }
    }

    /// Runs a UFM cell on this backend's default device, with autodiff.
    ///
    /// # Errors
    /// See [`crate::ufm::run_ufm`]; a [`ConfigError`] when the backend is not compiled in.
    pub fn run_ufm(
        self,
        cfg: &UfmConfig,
        progress: impl FnMut(usize),
    ) -> Result<UfmOutcome, RunError> {
        self.check_available()?;
        match self {
            #[cfg(feature = "ndarray")]
            Self::Ndarray => {
                crate::ufm::run_ufm::<burn::backend::Autodiff<burn::backend::NdArray>>(
                    cfg,
                    &Default::default(),
                    progress,
                )
            }
            #[cfg(feature = "wgpu")]
            Self::Wgpu => crate::ufm::run_ufm::<burn::backend::Autodiff<burn::backend::Wgpu>>(
                cfg,
                &Default::default(),
                progress,
            ),
            #[cfg(feature = "cuda")]
            Self::Cuda => crate::ufm::run_ufm::<burn::backend::Autodiff<burn::backend::Cuda>>(
                cfg,
                &Default::default(),
                progress,
            ),
            #[allow(unreachable_patterns)]
            _ => unreachable!("check_available rejected a backend that is not compiled in"),
        }
    }
}

impl BackendKind {
    /// Trains a deep-network cell on this backend's default device, with autodiff.
    ///
    /// # Errors
    /// See [`crate::deep::train_deep`]; a [`ConfigError`] when the backend is not compiled in.
    pub fn train_deep(
        self,
        cfg: &crate::deep::DeepConfig,
        opts: &crate::deep::DeepRunOptions,
        mut progress: impl FnMut(usize),
    ) -> Result<crate::deep::DeepOutcome, RunError> {
        self.check_available()?;
        let progress = move |done: usize, _total: usize| progress(done);
        match self {
            #[cfg(feature = "ndarray")]
            Self::Ndarray => crate::deep::train_deep::<
                burn::backend::Autodiff<burn::backend::NdArray>,
            >(cfg, opts, &Default::default(), progress),
            #[cfg(feature = "wgpu")]
            Self::Wgpu => crate::deep::train_deep::<burn::backend::Autodiff<burn::backend::Wgpu>>(
                cfg,
                opts,
                &Default::default(),
                progress,
            ),
            #[cfg(feature = "cuda")]
            Self::Cuda => crate::deep::train_deep::<burn::backend::Autodiff<burn::backend::Cuda>>(
                cfg,
                opts,
                &Default::default(),
                progress,
            ),
            #[allow(unreachable_patterns)]
            _ => unreachable!("check_available rejected a backend that is not compiled in"),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ndarray" => Ok(Self::Ndarray),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda),
            other => Err(ConfigError::new(format!(
                "backend {other} is not allowed: the allowed backends are {}",
                BACKEND_NAMES.join(", ")
            ))),
        }
    }
}
