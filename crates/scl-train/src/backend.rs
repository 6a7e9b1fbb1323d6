//! Choosing a Burn backend at run time, among those compiled in.
//!
//! Burn 0.22 chooses the backend by the `Device` a tensor lives on; this module maps a backend
//! name (`flex`, `wgpu`, `cuda`) and a device index to such a device, with one clear sentence
//! when the backend was not compiled in or the device does not exist. It is the one place in
//! the workspace that names concrete backends: every command, benchmark and check gets its
//! device from [`BackendRuntime::device`]. Adding a backend is one variant here, its device
//! constructor and its device enumeration; the training code is the same for all of them.

use burn::tensor::Device;

use crate::RunError;
use crate::config::{ConfigError, UfmConfig};
use crate::ufm::UfmOutcome;
pub use scl_types::backend::{BACKEND_NAMES, BackendKind};

/// What a backend can do in this binary: whether it was compiled in, its devices, and the
/// runs on them. Implemented for [`BackendKind`].
pub trait BackendRuntime: Copy {
    /// Whether this backend was compiled into the binary.
    fn compiled(self) -> bool;

    /// An error naming the cargo feature when this backend was not compiled in.
    ///
    /// # Errors
    /// A [`ConfigError`] sentence.
    fn check_available(self) -> Result<(), ConfigError>;

    /// Number of devices this backend sees: 1 for `flex` (the CPU), the adapters wgpu
    /// enumerates (lavapipe counts as one), the CUDA devices the driver reports (0 without a
    /// driver). 0 when the backend is not compiled in. [`Self::probe`] says why there are none.
    fn device_count(self) -> usize;

    /// The number of devices, at least 1; or one sentence saying why there is none: the
    /// backend is not compiled in, `no CUDA device: ...` (no driver library, or the driver
    /// reports none) or `no Vulkan adapter: ...`. Never panics: a driver library that fails
    /// to load is reported, not raised. Enumerated once per process.
    ///
    /// # Errors
    /// A [`ConfigError`] sentence as above.
    fn probe(self) -> Result<usize, ConfigError>;

    /// Names of the devices [`Self::probe`] finds: `cpu`; wgpu's adapters (Burn's device
    /// description, e.g. `Cpu` for a software driver such as lavapipe); `cuda:0`, ... Empty
    /// when there are none.
    fn device_names(self) -> Vec<String>;

    /// An error sentence when device `index` does not exist on this backend.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the index and the devices there are.
    fn check_device(self, index: usize) -> Result<(), ConfigError>;

    /// Device `index` of this backend, without autodiff (call `.autodiff()` on it to train).
    ///
    /// # Errors
    /// A [`ConfigError`] when the backend is not compiled in or the device does not exist
    /// ([`Self::check_device`]).
    fn device(self, index: usize) -> Result<Device, ConfigError>;

    /// Bytes of device memory that the backend's memory pool has reserved on `device` (0 on
    /// the CPU backend, which allocates on the heap).
    fn device_memory_reserved(self, device: &Device) -> u64;

    /// Returns the unused pages of `device`'s memory pool to the driver, after the queued
    /// work, so that [`Self::device_memory_reserved`] measured next starts from what live
    /// tensors hold (nothing to do on the CPU backend).
    fn device_memory_cleanup(self, device: &Device);

    /// Runs a UFM cell on device `device` of this backend, with autodiff.
    ///
    /// # Errors
    /// See [`crate::ufm::run_ufm`]; a [`ConfigError`] when the backend is not compiled in or
    /// the device does not exist.
    fn run_ufm(
        self,
        device: usize,
        cfg: &UfmConfig,
        progress: impl FnMut(usize),
    ) -> Result<UfmOutcome, RunError>;

    /// Trains a deep-network cell on device `device` of this backend, with autodiff.
    ///
    /// # Errors
    /// See [`crate::deep::train_deep`]; a [`ConfigError`] when the backend is not compiled in
    /// or the device does not exist.
    fn train_deep(
        self,
        device: usize,
        cfg: &crate::deep::DeepConfig,
        opts: &crate::deep::DeepRunOptions,
        progress: impl FnMut(usize),
    ) -> Result<crate::deep::DeepOutcome, RunError>;
}

impl BackendRuntime for BackendKind {
    fn compiled(self) -> bool {
        match self {
            Self::Flex => cfg!(feature = "flex"),
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Cuda => cfg!(feature = "cuda"),
        }
    }

    fn check_available(self) -> Result<(), ConfigError> {
        if self.compiled() {
            Ok(())
        } else {
            Err(ConfigError::new(format!(
                "backend {} was not compiled in: rebuild with the cargo feature `{}`",
                self.name(),
                self.name()
            )))
        }
    }

    fn device_count(self) -> usize {
        self.probe().unwrap_or(0)
    }

    fn probe(self) -> Result<usize, ConfigError> {
        self.check_available()?;
        match self {
            Self::Flex => Ok(1),
            #[cfg(feature = "wgpu")]
            Self::Wgpu => match wgpu_devices().len() {
                0 => Err(ConfigError::new(
                    "no Vulkan adapter: wgpu found no Vulkan, Metal or DX12 adapter (a machine \
                     without a GPU needs Mesa's lavapipe driver: apt-get install \
                     mesa-vulkan-drivers; a GPU machine needs the Vulkan loader libvulkan1 and \
                     the vendor's ICD file)",
                )),
                n => Ok(n),
            },
            #[cfg(feature = "cuda")]
            Self::Cuda => match cuda_devices() {
                Ok(devices) if devices.is_empty() => Err(ConfigError::new(
                    "no CUDA device: the CUDA driver is loaded but reports no device",
                )),
                Ok(devices) => Ok(devices.len()),
                Err(why) => Err(ConfigError::new(format!("no CUDA device: {why}"))),
            },
            #[allow(unreachable_patterns)]
            _ => unreachable!("check_available passed"),
        }
    }

    fn device_names(self) -> Vec<String> {
        let count = self.device_count();
        match self {
            _ if count == 0 => Vec::new(),
            Self::Flex => vec!["cpu".to_string()],
            #[cfg(feature = "wgpu")]
            Self::Wgpu => wgpu_devices().iter().map(describe).collect(),
            _ => (0..count).map(|i| format!("{}:{i}", self.name())).collect(),
        }
    }

    fn check_device(self, index: usize) -> Result<(), ConfigError> {
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
            (Self::Flex, _) => format!(
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

    fn device(self, index: usize) -> Result<Device, ConfigError> {
        self.check_device(index)?;
        Ok(match self {
            #[cfg(feature = "flex")]
            Self::Flex => Device::flex(),
            #[cfg(feature = "wgpu")]
            Self::Wgpu => wgpu_devices()[index].clone(),
            #[cfg(feature = "cuda")]
            Self::Cuda => Device::cuda(index),
            #[allow(unreachable_patterns)]
            _ => unreachable!("check_device rejected a backend that is not compiled in"),
        })
    }

    fn device_memory_reserved(self, device: &Device) -> u64 {
        if self.is_cpu() {
            return 0;
        }
        device
            .memory_pool_usage()
            .map_or(0, |usage| usage.bytes_reserved)
    }

    fn device_memory_cleanup(self, device: &Device) {
        if self.is_cpu() {
            return;
        }
        // A failed synchronisation surfaces on the next read of a tensor; the cleanup itself
        // cannot fail.
        let _ = device.sync();
        device.memory_cleanup();
    }

    fn run_ufm(
        self,
        device: usize,
        cfg: &UfmConfig,
        progress: impl FnMut(usize),
    ) -> Result<UfmOutcome, RunError> {
        let device = self.device(device)?.autodiff();
        crate::ufm::run_ufm(cfg, &device, progress)
    }

    fn train_deep(
        self,
        device: usize,
        cfg: &crate::deep::DeepConfig,
        opts: &crate::deep::DeepRunOptions,
        mut progress: impl FnMut(usize),
    ) -> Result<crate::deep::DeepOutcome, RunError> {
        let device = self.device(device)?.autodiff();
        crate::deep::train_deep(cfg, opts, &device, |done, _| progress(done))
    }
}

/// The backends compiled into this binary.
pub fn compiled_in() -> Vec<BackendKind> {
    BackendKind::ALL
        .into_iter()
        .filter(|b| b.compiled())
        .collect()
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

/// [`guarded`] without printing the panic (a driver library that cannot be loaded may panic).
/// The panic hook is process-wide: it is swapped out only for the duration of `f`.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
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

/// The wgpu adapters, as Burn devices pinned to one graphics API: the first of Vulkan, Metal
/// and DX12 with a hardware adapter, else the first with any (lavapipe), in wgpu's enumeration
/// order. OpenGL is not used: Burn's own choice falls back to it when there is no Vulkan
/// driver, and there Mesa's llvmpipe fails the fused loss's 256 MiB buffers after minutes of
/// work. Enumerated once per process (it creates a wgpu instance per API); empty where
/// enumeration fails.
#[cfg(feature = "wgpu")]
fn wgpu_devices() -> &'static [Device] {
    use burn::backend::{CubeDevice, WgpuBackend, WgpuDevice, WgpuDeviceKind};
    static DEVICES: std::sync::OnceLock<Vec<Device>> = std::sync::OnceLock::new();
    // The adapters on `api`, and whether one of them is hardware (not a software driver).
    let on = |api: WgpuBackend| {
        let (mut devices, mut hardware) = (Vec::<Device>::new(), false);
        for kind in [
            WgpuDeviceKind::DiscreteGpu(0),
            WgpuDeviceKind::IntegratedGpu(0),
            WgpuDeviceKind::VirtualGpu(0),
            WgpuDeviceKind::Other(0),
            WgpuDeviceKind::Cpu,
        ] {
            let seed = CubeDevice::Wgpu(WgpuDevice::new(kind.clone()).on(api));
            for id in CubeDevice::enumerate(seed.to_id()) {
                let device = Device::new(CubeDevice::from_id(id));
                if !devices.contains(&device) {
                    hardware |= kind != WgpuDeviceKind::Cpu;
                    devices.push(device);
                }
            }
        }
        (devices, hardware)
    };
    DEVICES.get_or_init(|| {
        quietly(|| {
            let mut software_only = Vec::new();
            for api in [WgpuBackend::Vulkan, WgpuBackend::Metal, WgpuBackend::Dx12] {
                let (devices, hardware) = on(api);
                if hardware {
                    return devices;
                }
                if software_only.is_empty() {
                    software_only = devices;
                }
            }
            software_only
        })
        .unwrap_or_default()
    })
}

/// A wgpu device as Burn describes it, without the wrapping of the dispatch layer.
#[cfg(feature = "wgpu")]
fn describe(device: &Device) -> String {
    let text = format!("{device:?}");
    text.strip_prefix("Device<")
        .and_then(|t| t.strip_suffix('>'))
        .map_or(text.clone(), str::to_string)
}

/// The CUDA devices the driver reports, enumerated once per process; a sentence when the
/// driver cannot be used.
#[cfg(feature = "cuda")]
fn cuda_devices() -> Result<&'static [Device], String> {
    use burn::tensor::DeviceType;
    static DEVICES: std::sync::OnceLock<Result<Vec<Device>, String>> = std::sync::OnceLock::new();
    DEVICES
        .get_or_init(|| quietly(|| Device::enumerate(DeviceType::Cuda).into_vec()))
        .as_deref()
        .map_err(Clone::clone)
}
