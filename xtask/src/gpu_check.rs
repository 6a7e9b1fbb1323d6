//! `scl-gpu-check`: the GPU check of the scl workspace, for machines without a Rust toolchain
//! (see `cargo xtask gpu-bundle` and `run.sh`).
//!
//! `scl-gpu-check --out DIR [--backends cuda,wgpu] [--data cifar.bin] [--torch torch.json]`:
//! fused vs reference SupCon parity, the loss benchmark up to N = 65536 and ResNet-18 SCL
//! training steps on every GPU backend that finds a device, then a few CPU training steps;
//! writes `DIR/gpu-check.json` and `DIR/gpu-check.md`. A backend without a device is one
//! sentence ("no CUDA device: ...", "no Vulkan adapter: ..."), not an error.
//!
//! Exit codes: 0 when everything that ran passed, 1 when a parity case failed or a section
//! broke, 2 for a wrong option.

mod gpu;
mod loss_timing;
mod paper_step;

use std::process::ExitCode;

// The heap figures of `bench loss` come from this allocator (it only forwards until the first
// measurement).
#[global_allocator]
static ALLOCATOR: scl_loss::memory::CountingAllocator = scl_loss::memory::CountingAllocator;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "scl-gpu-check",
    about = "GPU check: SupCon parity, loss benchmark and ResNet-18 steps per backend",
    version
)]
struct Cli {
    #[command(flatten)]
    args: gpu::CheckArgs,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match gpu::run(cli.args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
