//! `cargo xtask gpu-bundle`: one folder that a GPU machine without a Rust toolchain can run.
//!
//! It holds `scl-gpu-check` (the check binary of this package, `src/gpu_check.rs`, built with
//! the `flex` and `wgpu` features in the `bundle` profile: optimised, symbols stripped; with
//! `--cuda` also the `cuda` feature), `run.sh`, PyTorch's reference
//! `supcon_torch.py`, `REVISION`, real CIFAR-10 training images when the project can read
//! CIFAR-10 here (`data/cifar10-train-subset.bin`, CIFAR binary records), and the Vulkan
//! loader package `gl/libvulkan1*.deb` when apt can download it. `run.sh OUT` runs PyTorch's
//! benchmark, then `scl-gpu-check`, and leaves JSON and markdown in `OUT`.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, bail};
use scl_data::store::DataDir;
use scl_data::{LoadOptions, Manifest, Split};

/// Bytes of one CIFAR binary record: a label byte and 3 x 32 x 32 pixel bytes.
const RECORD: usize = 1 + scl_data::readers::cifar::PIXELS;

/// Arguments of `cargo xtask gpu-bundle`.
#[derive(clap::Args, Debug)]
pub struct BundleArgs {
    /// The bundle's folder (created; `dist/` is git-ignored).
    #[arg(long, default_value = "dist/gpu-bundle")]
    out: PathBuf,
    /// Real CIFAR-10 training images to carry (3073 bytes each; the training steps cycle
    /// through them); 0 for synthetic images.
    #[arg(long, default_value_t = 1024)]
    images: usize,
    /// Where the CIFAR-10 files are (default: $SCL_DATA_DIR, else datasets/cache).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Put this already built binary in the bundle instead of building one.
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Build the binary with Burn's CUDA backend too. Its build downloads an LLVM bundle (Burn
    /// 0.22 compiles CUDA kernels through LLVM), so it needs a machine with internet access;
    /// without it the bundle runs on the GPU through wgpu (Vulkan), which NVIDIA's driver
    /// supports.
    #[arg(long)]
    cuda: bool,
}

/// The workspace root (this crate's parent folder).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Builds the release binary with the GPU backends (`features`); returns its path.
fn build(features: &str) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!(
        "== cargo build --profile bundle -p xtask --bin scl-gpu-check --no-default-features \
         --features {features} (about 25 minutes the first time on 2 cores)"
    );
    let mut child = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "--profile",
            "bundle",
            "-p",
            "xtask",
            "--bin",
            "scl-gpu-check",
            "--no-default-features",
            "--features",
            features,
            "--message-format=json-render-diagnostics",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo")?;
    let mut executable = None;
    let stdout = child.stdout.take().expect("piped");
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == "scl-gpu-check"
            && let Some(exe) = msg["executable"].as_str()
        {
            executable = Some(PathBuf::from(exe));
        }
    }
    if !child.wait()?.success() {
        bail!("cargo build of the bundle binary failed (its errors are above)");
    }
    executable.context("cargo built no scl-gpu-check executable")
}

/// Copies `from` to `to` atomically (`to` is whole or absent).
fn copy_atomic(from: &Path, to: &Path) -> anyhow::Result<()> {
    Ok(scl_fs::copy(from, to)?)
}

/// Writes `to` atomically.
fn write_atomic(to: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    Ok(scl_fs::write(to, bytes)?)
}

/// The first `n` CIFAR-10 training images as CIFAR binary records, from the official files
/// or else the lossy-JPEG copy; `None` (with the reason) when neither can be read here.
fn cifar_records(n: usize, data_dir: &DataDir) -> Result<(Vec<u8>, String), String> {
    let mut why = Vec::new();
    for name in ["cifar10", "cifar10-jpeg-lossy"] {
        let manifest = Manifest::named(name).map_err(|e| e.to_string())?;
        match scl_data::load(
            &manifest,
            Split::Train,
            &LoadOptions::offline(data_dir.clone()),
        ) {
            Ok(set) => {
                let n = n.min(set.len());
                let mut out = Vec::with_capacity(n * RECORD);
                for i in 0..n {
                    out.push(set.labels()[i] as u8);
                    out.extend_from_slice(set.image(i));
                }
                return Ok((
                    out,
                    format!("the first {n} training images of {}", manifest.title),
                ));
            }
            Err(e) => why.push(format!(
                "{name}: {}",
                e.to_string().lines().next().unwrap_or("")
            )),
        }
    }
    Err(why.join("; "))
}

/// Downloads the Vulkan loader package into `dir` (wgpu needs libvulkan.so.1, which the GPU
/// machines lack). A note, not an error, when apt cannot.
fn vulkan_loader(dir: &Path) -> String {
    let _ = std::fs::create_dir_all(dir);
    let ok = Command::new("apt-get")
        .current_dir(dir)
        .args(["download", "libvulkan1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        "gl/: the Vulkan loader libvulkan1 (run.sh unpacks it where none is installed)".into()
    } else {
        let _ = std::fs::remove_dir(dir);
        "no Vulkan loader package (apt-get download libvulkan1 failed): wgpu will report \
         \"no Vulkan adapter\" where the machine has no loader"
            .into()
    }
}

fn size_mib(path: &Path) -> f64 {
    std::fs::metadata(path).map_or(0.0, |m| m.len() as f64 / (1024.0 * 1024.0))
}

/// Builds the bundle.
pub fn run(args: BundleArgs) -> anyhow::Result<ExitCode> {
    let binary = match &args.binary {
        Some(b) if b.is_file() => b.clone(),
        Some(b) => {
            eprintln!("error: --binary {} is not a file", b.display());
            return Ok(ExitCode::from(2));
        }
        None => build(if args.cuda {
            "flex,cuda,wgpu"
        } else {
            "flex,wgpu"
        })?,
    };
    let out = &args.out;
    std::fs::create_dir_all(out.join("data"))
        .with_context(|| format!("creating {}", out.display()))?;
    let target = out.join("scl-gpu-check");
    copy_atomic(&binary, &target)?;
    // Cargo leaves the symbols in a binary whose package has a profile override (the
    // `bundle` profile has one for xtask): strip the copy (binutils' strip; a no-op for a
    // binary that is stripped already).
    let _ = Command::new("strip")
        .arg(&target)
        .stderr(Stdio::null())
        .status();
    let root = workspace_root();
    copy_atomic(
        &root.join("benches/reference/supcon_torch.py"),
        &out.join("supcon_torch.py"),
    )?;
    write_atomic(&out.join("run.sh"), include_str!("gpu/run.sh").as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for f in ["scl-gpu-check", "run.sh"] {
            std::fs::set_permissions(out.join(f), std::fs::Permissions::from_mode(0o755))?;
        }
    }
    write_atomic(
        &out.join("REVISION"),
        format!("{}\n", scl_train::provenance::git_revision()).as_bytes(),
    )?;
    let data_file = out.join("data/cifar10-train-subset.bin");
    let data_note = if args.images == 0 {
        let _ = std::fs::remove_file(&data_file);
        "no images (--images 0): the training runs on synthetic images".to_string()
    } else {
        match cifar_records(args.images, &DataDir::resolve(args.data_dir.as_deref())) {
            Ok((bytes, what)) => {
                write_atomic(&data_file, &bytes)?;
                format!("data/cifar10-train-subset.bin: {what}")
            }
            Err(why) => {
                let _ = std::fs::remove_file(&data_file);
                format!("no CIFAR-10 files found ({why}): the training runs on synthetic images")
            }
        }
    };
    let gl_note = vulkan_loader(&out.join("gl"));
    let total: f64 = walk(out).iter().map(|p| size_mib(p)).sum();
    let cuda_note = if args.cuda || args.binary.is_some() {
        String::new()
    } else {
        "\n  backends: flex and wgpu (on an NVIDIA GPU through its Vulkan driver); for CUDA \
         too, build with `cargo xtask gpu-bundle --cuda` on a machine with internet access"
            .to_string()
    };
    say!(
        "bundle in {} ({total:.1} MiB):\n  scl-gpu-check: {:.1} MiB\n  {data_note}\n  \
         {gl_note}{cuda_note}\nRun it on a GPU machine: bash {}/run.sh OUT_DIR",
        out.display(),
        size_mib(&out.join("scl-gpu-check")),
        out.display(),
    );
    Ok(ExitCode::SUCCESS)
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
