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

    /// Number of devices this backend sees: 1 for `ndarray` (the CPU), the adapters wgpu
    /// enumerates (lavapipe counts as one), the CUDA devices the driver reports (0 without a
    /// driver). 0 when the backend is not compiled in. [`Self::probe`] says why there are none.
    pub fn device_count(self) -> usize {
        self.probe().unwrap_or(0)
    }

    /// The number of devices, at least 1; or one sentence saying why there is none: the
    /// backend is not compiled in, `no CUDA device: ...` (no driver library, or the driver
    /// reports none) or `no Vulkan adapter: ...`. Never panics: a driver library that fails
    /// to load is reported, not raised. Enumerated once per process.
    ///
    /// # Errors
    /// A [`ConfigError`] sentence as above.
    pub fn probe(self) -> Result<usize, ConfigError> {
        self.check_available()?;
        match self {
            Self::Ndarray => Ok(1),
            #[cfg(feature = "wgpu")]
            Self::Wgpu => match wgpu_devices().len() {
                0 => Err(ConfigError::new(
                    "no Vulkan adapter: wgpu found none (a machine without a GPU needs Mesa's \
                     lavapipe driver: apt-get install mesa-vulkan-drivers; a GPU machine needs \
                     the Vulkan loader libvulkan1 and the vendor's ICD file)",
                )),
                n => Ok(n),
            },
            #[cfg(feature = "cuda")]
            Self::Cuda => {
                static COUNT: std::sync::OnceLock<Result<usize, String>> =
                    std::sync::OnceLock::new();
                let count = COUNT.get_or_init(|| {
                    quietly(|| {
                        use burn_cubecl::cubecl::Runtime;
                        <burn_cubecl::cubecl::cuda::CudaRuntime as Runtime>::enumerate_devices(
                            0,
                            &(),
                        )
                        .len()
                    })
                });
                match count {
                    Ok(0) => Err(ConfigError::new(
                        "no CUDA device: the CUDA driver is loaded but reports no device",
                    )),
                    Ok(n) => Ok(*n),
                    Err(why) => Err(ConfigError::new(format!("no CUDA device: {why}"))),
                }
            }
            #[allow(unreachable_patterns)]
            _ => unreachable!("check_available passed"),
        }
    }

    /// Names of the devices [`Self::probe`] finds: `cpu`; wgpu's adapters by kind and index
    /// (`DiscreteGpu(0)`, or `Cpu` for a software driver such as lavapipe); `cuda:0`, ...
    /// Empty when there are none.
    pub fn device_names(self) -> Vec<String> {
        let count = self.device_count();
        match self {
            _ if count == 0 => Vec::new(),
            Self::Ndarray => vec!["cpu".to_string()],
            #[cfg(feature = "wgpu")]
            Self::Wgpu => wgpu_devices().iter().map(|d| format!("{d:?}")).collect(),
            _ => (0..count).map(|i| format!("{}:{i}", self.name())).collect(),
        }
    }

    /// An error sentence when device `index` does not exist on this backend.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the index and the devices there are.
    pub fn check_device(self, index: usize) -> Result<(), ConfigError> {
        self.check_available()?;
        let count = match self.probe() {
            Ok(count) => count,
            Err(why) => {
                return Err(ConfigError::new(format!(
                    "device {index} does not exist: backend {} finds no device on this \
                     machine ({why})",
                    self.name()
                )));
            }
        };
        if index < count {
            return Ok(());
        }
        Err(ConfigError::new(match (self, count) {
            (Self::Ndarray, _) => format!(
                "device {index} does not exist: backend ndarray runs on the CPU, device 0 only"
            ),
            _ => format!(
                "device {index} does not exist: backend {} has devices 0 to {}",
                self.name(),
                count - 1
            ),
        }))
    }

    /// Runs a UFM cell on device `device` of this backend (see [`Self::check_device`]), with
    /// autodiff.
    ///
    /// # Errors
    /// See [`crate::ufm::run_ufm`]; a [`ConfigError`] when the backend is not compiled in or
    /// the device does not exist.
    #[cfg_attr(
        not(any(feature = "ndarray", feature = "wgpu", feature = "cuda")),
        allow(unused_variables)
    )]
    pub fn run_ufm(
        self,
        device: usize,
        cfg: &UfmConfig,
        progress: impl FnMut(usize),
    ) -> Result<UfmOutcome, RunError> {
        self.check_device(device)?;
        with_backend!(self, device, |B, dev| crate::ufm::run_ufm::<B>(
            cfg, &dev, progress
        ))
    }

    /// Trains a deep-network cell on device `device` of this backend, with autodiff.
    ///
    /// # Errors
    /// See [`crate::deep::train_deep`]; a [`ConfigError`] when the backend is not compiled in
    /// or the device does not exist.
    #[cfg_attr(
        not(any(feature = "ndarray", feature = "wgpu", feature = "cuda")),
        allow(unused_variables)
    )]
    pub fn train_deep(
        self,
        device: usize,
        cfg: &crate::deep::DeepConfig,
        opts: &crate::deep::DeepRunOptions,
        mut progress: impl FnMut(usize),
    ) -> Result<crate::deep::DeepOutcome, RunError> {
        self.check_device(device)?;
        let progress = move |done: usize, _total: usize| progress(done);
        with_backend!(self, device, |B, dev| crate::deep::train_deep::<B>(
            cfg, opts, &dev, progress
        ))
    }
}

/// Runs `f`, turning a panic into its message, without printing it (the CUDA runtime panics
/// when the driver library cannot be loaded). The panic hook is process-wide: it is swapped
/// out only for the duration of `f`.
#[cfg(feature = "cuda")]
fn quietly<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> Result<T, String> {
    static HOOK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = HOOK.lock().unwrap_or_else(|e| e.into_inner());
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(f);
    std::panic::set_hook(previous);
    result.map_err(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("the CUDA runtime failed to start");
        if message.contains("dynamically load") || message.contains("libcuda") {
            "the CUDA driver library (libcuda.so) could not be loaded: no NVIDIA driver on \
             this machine"
                .to_string()
        } else {
            message.lines().next().unwrap_or(message).to_string()
        }
    })
}

/// The wgpu adapters in wgpu's enumeration order, as Burn devices (enumerated once per
/// process: it creates a wgpu instance).
#[cfg(feature = "wgpu")]
fn wgpu_devices() -> &'static [burn::backend::wgpu::WgpuDevice] {
    use burn::backend::wgpu::graphics::{AutoGraphicsApi, GraphicsApi};
    use burn::backend::wgpu::{WgpuDevice, WgpuRuntime};
    use burn_cubecl::cubecl::Runtime;
    static DEVICES: std::sync::OnceLock<Vec<WgpuDevice>> = std::sync::OnceLock::new();
    DEVICES.get_or_init(|| {
        let mut seen = [0usize; 3];
        <WgpuRuntime as Runtime>::enumerate_all_devices(&AutoGraphicsApi::backend())
            .into_iter()
            .map(|id| {
                let mut next = |t: usize| {
                    seen[t] += 1;
                    seen[t] - 1
                };
                match id.type_id {
                    0 => WgpuDevice::DiscreteGpu(next(0)),
                    1 => WgpuDevice::IntegratedGpu(next(1)),
                    2 => WgpuDevice::VirtualGpu(next(2)),
                    3 => WgpuDevice::Cpu,
                    _ => WgpuDevice::DefaultDevice,
                }
            })
            .collect()
    })
}

/// Runs `$body` with `$B` the autodiff backend of `$kind` and `$dev` its device `$index`
/// (checked before).
macro_rules! with_backend {
    ($kind:expr, $index:expr, |$B:ident, $dev:ident| $body:expr) => {
        match $kind {
            #[cfg(feature = "ndarray")]
            BackendKind::Ndarray => {
                type $B = burn::backend::Autodiff<burn::backend::NdArray>;
                let $dev = Default::default();
                let _ = $index;
                $body
            }
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => {
                type $B = burn::backend::Autodiff<burn::backend::Wgpu>;
                let $dev = wgpu_devices()[$index].clone();
                $body
            }
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => {
                type $B = burn::backend::Autodiff<burn::backend::Cuda>;
                let $dev = burn::backend::cuda::CudaDevice { index: $index };
                $body
            }
            #[allow(unreachable_patterns)]
            _ => unreachable!("check_device rejected a backend that is not compiled in"),
        }
    };
}
use with_backend;

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
