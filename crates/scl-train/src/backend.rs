//! Choosing a Burn backend at run time, among those compiled in.
//!
//! This is the one place in the workspace that names concrete backends: every command,
//! benchmark and check runs its backend-generic code through [`BackendKind::run`] with a
//! [`BackendTask`]. Adding a backend is one variant here, one arm in [`BackendKind::run`], and
//! its device enumeration.

use std::fmt;
use std::str::FromStr;

use crate::config::{ConfigError, UfmConfig};
use crate::ufm::UfmOutcome;
use crate::{RunError, TrainBackend};

/// A Burn backend, selected by name (`flex`, `ndarray`, `wgpu`, `cuda`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Burn's Flex CPU backend, the default (cargo feature `flex`, on by default).
    Flex,
    /// Burn's older ndarray CPU backend (cargo feature `ndarray`, on by default), kept for
    /// comparisons with earlier results.
    Ndarray,
    /// WebGPU through wgpu: Vulkan, Metal, DX12, or the CPU through Mesa's lavapipe
    /// (cargo feature `wgpu`).
    Wgpu,
    /// NVIDIA CUDA (cargo feature `cuda`).
    Cuda,
}

/// Work written once over the backend type, run on a backend chosen at run time by
/// [`BackendKind::run`] (a closure cannot be generic over a type, so the work is a value of a
/// type that implements this trait).
///
/// # Example
///
/// ```
/// use burn::tensor::{ElementConversion, Tensor};
/// use scl_train::TrainBackend;
/// use scl_train::backend::{BackendKind, BackendTask};
///
/// /// The sum of a vector of ones, on any backend.
/// struct SumOfOnes(usize);
///
/// impl BackendTask for SumOfOnes {
///     type Output = f32;
///     fn run<B: TrainBackend>(self, device: B::Device) -> f32 {
///         Tensor::<B, 1>::ones([self.0], &device).sum().into_scalar().elem()
///     }
/// }
///
/// assert_eq!(BackendKind::Flex.run(0, SumOfOnes(3)).unwrap(), 3.0);
/// ```
pub trait BackendTask {
    /// What the work returns.
    type Output;

    /// Runs the work on backend `B` (with autodiff), on `device`.
    fn run<B: TrainBackend>(self, device: B::Device) -> Self::Output;
}

/// Every backend name, for error messages.
pub const BACKEND_NAMES: &[&str] = &["flex", "ndarray", "wgpu", "cuda"];

impl BackendKind {
    /// The name used on the command line and in run records.
    pub fn name(self) -> &'static str {
        match self {
            Self::Flex => "flex",
            Self::Ndarray => "ndarray",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        }
    }

    /// Whether this backend runs on the CPU (its memory is the process's heap).
    pub fn is_cpu(self) -> bool {
        matches!(self, Self::Flex | Self::Ndarray)
    }

    /// Whether this backend was compiled into the binary.
    pub fn compiled(self) -> bool {
        match self {
            Self::Flex => cfg!(feature = "flex"),
            Self::Ndarray => cfg!(feature = "ndarray"),
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// The backends compiled into this binary.
    pub fn compiled_in() -> Vec<BackendKind> {
        [Self::Flex, Self::Ndarray, Self::Wgpu, Self::Cuda]
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

    /// Number of devices this backend sees: 1 for `flex` and `ndarray` (the CPU), the adapters wgpu
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
            Self::Flex | Self::Ndarray => Ok(1),
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
            Self::Flex | Self::Ndarray => vec!["cpu".to_string()],
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
            (Self::Flex | Self::Ndarray, _) => format!(
                "device {index} does not exist: backend {} runs on the CPU, device 0 only",
                self.name()
            ),
            _ => format!(
                "device {index} does not exist: backend {} has devices 0 to {}",
                self.name(),
                count - 1
            ),
        }))
    }

    /// Runs `task` on device `device` of this backend, with autodiff.
    ///
    /// # Errors
    /// A [`ConfigError`] when the backend is not compiled in or the device does not exist
    /// ([`Self::check_device`]); nothing runs then.
    #[cfg_attr(
        not(any(
            feature = "flex",
            feature = "ndarray",
            feature = "wgpu",
            feature = "cuda"
        )),
        allow(unused_variables)
    )]
    pub fn run<T: BackendTask>(self, device: usize, task: T) -> Result<T::Output, ConfigError> {
        self.check_device(device)?;
        use burn::backend::Autodiff;
        Ok(match self {
            #[cfg(feature = "flex")]
            Self::Flex => task.run::<Autodiff<burn::backend::Flex>>(Default::default()),
            #[cfg(feature = "ndarray")]
            Self::Ndarray => task.run::<Autodiff<burn::backend::NdArray>>(Default::default()),
            #[cfg(feature = "wgpu")]
            Self::Wgpu => task.run::<Autodiff<burn::backend::Wgpu>>(wgpu_devices()[device].clone()),
            #[cfg(feature = "cuda")]
            Self::Cuda => {
                task.run::<Autodiff<burn::backend::Cuda>>(burn::backend::cuda::CudaDevice {
                    index: device,
                })
            }
            #[allow(unreachable_patterns)]
            _ => unreachable!("check_device rejected a backend that is not compiled in"),
        })
    }

    /// Bytes of device memory that the backend's memory pool has reserved on device `device`
    /// (0 on the CPU backend, which allocates on the heap, and when the device does not exist).
    #[cfg_attr(not(any(feature = "wgpu", feature = "cuda")), allow(unused_variables))]
    pub fn device_memory_reserved(self, device: usize) -> u64 {
        if self.check_device(device).is_err() {
            return 0;
        }
        match self {
            #[cfg(feature = "wgpu")]
            Self::Wgpu => scl_loss::fused::cube::device_memory_reserved::<
                burn::backend::wgpu::WgpuRuntime,
            >(&wgpu_devices()[device]),
            #[cfg(feature = "cuda")]
            Self::Cuda => scl_loss::fused::cube::device_memory_reserved::<
                burn_cubecl::cubecl::cuda::CudaRuntime,
            >(&burn::backend::cuda::CudaDevice { index: device }),
            _ => 0,
        }
    }

    /// Returns the unused pages of the memory pool of device `device` to the driver, so that
    /// [`Self::device_memory_reserved`] measured next starts from what live tensors hold
    /// (nothing to do on the CPU backend).
    #[cfg_attr(not(any(feature = "wgpu", feature = "cuda")), allow(unused_variables))]
    pub fn device_memory_cleanup(self, device: usize) {
        if self.check_device(device).is_err() {
            return;
        }
        match self {
            #[cfg(feature = "wgpu")]
            Self::Wgpu => scl_loss::fused::cube::device_memory_cleanup::<
                burn::backend::wgpu::WgpuRuntime,
            >(&wgpu_devices()[device]),
            #[cfg(feature = "cuda")]
            Self::Cuda => scl_loss::fused::cube::device_memory_cleanup::<
                burn_cubecl::cubecl::cuda::CudaRuntime,
            >(&burn::backend::cuda::CudaDevice { index: device }),
            _ => {}
        }
    }

    /// Runs a UFM cell on device `device` of this backend (see [`Self::check_device`]), with
    /// autodiff.
    ///
    /// # Errors
    /// See [`crate::ufm::run_ufm`]; a [`ConfigError`] when the backend is not compiled in or
    /// the device does not exist.
    pub fn run_ufm(
        self,
        device: usize,
        cfg: &UfmConfig,
        progress: impl FnMut(usize),
    ) -> Result<UfmOutcome, RunError> {
        struct Ufm<'a, P>(&'a UfmConfig, P);
        impl<P: FnMut(usize)> BackendTask for Ufm<'_, P> {
            type Output = Result<UfmOutcome, RunError>;
            fn run<B: TrainBackend>(self, device: B::Device) -> Self::Output {
                crate::ufm::run_ufm::<B>(self.0, &device, self.1)
            }
        }
        self.run(device, Ufm(cfg, progress))?
    }

    /// Trains a deep-network cell on device `device` of this backend, with autodiff.
    ///
    /// # Errors
    /// See [`crate::deep::train_deep`]; a [`ConfigError`] when the backend is not compiled in
    /// or the device does not exist.
    pub fn train_deep(
        self,
        device: usize,
        cfg: &crate::deep::DeepConfig,
        opts: &crate::deep::DeepRunOptions,
        progress: impl FnMut(usize),
    ) -> Result<crate::deep::DeepOutcome, RunError> {
        struct Deep<'a, P>(
            &'a crate::deep::DeepConfig,
            &'a crate::deep::DeepRunOptions,
            P,
        );
        impl<P: FnMut(usize)> BackendTask for Deep<'_, P> {
            type Output = Result<crate::deep::DeepOutcome, RunError>;
            fn run<B: TrainBackend>(self, device: B::Device) -> Self::Output {
                let mut progress = self.2;
                crate::deep::train_deep::<B>(self.0, self.1, &device, |done, _| progress(done))
            }
        }
        self.run(device, Deep(cfg, opts, progress))?
    }
}

/// Runs `f`, turning a panic (a kernel failure, an out-of-memory, a driver that does not load)
/// into its message. The panic is still printed by the panic hook; see `quietly` for the
/// silent form.
///
/// # Errors
/// The panic's message.
pub fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

/// [`guarded`] without printing the panic (the CUDA runtime panics when the driver library
/// cannot be loaded). The panic hook is process-wide: it is swapped out only for the duration
/// of `f`.
#[cfg(feature = "cuda")]
fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = HOOK.lock().unwrap_or_else(|e| e.into_inner());
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = guarded(f);
    std::panic::set_hook(previous);
    result.map_err(|message| {
        if message.contains("dynamically load") || message.contains("libcuda") {
            "the CUDA driver library (libcuda.so) could not be loaded: no NVIDIA driver on \
             this machine"
                .to_string()
        } else {
            message.lines().next().unwrap_or(&message).to_string()
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

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "flex" => Ok(Self::Flex),
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
