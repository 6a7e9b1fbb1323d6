//! `cargo xtask`: the project's task runner.
//!
//! - `cargo xtask sweep [--experiment FILE] [--profile P] [--backend B] [--devices 0,1]
//!   [--jobs N] [--out DIR] [--dry-run] [--cell I]` runs every unfinished cell of an experiment
//!   grid, each in a child process, and writes `DIR/<experiment>/report.md`; `--cell I` runs
//!   one cell in this process.
//! - `cargo xtask report --experiment FILE [--profile P]`: report.md and PNG figures from the
//!   finished cells.
//! - `cargo xtask slurm --experiment FILE [--partition P] [--max-concurrent M]`: an sbatch
//!   job-array script, one cell per task.
//! - `cargo xtask compare-backends --experiment FILE --backends flex,wgpu`: the same cells
//!   on each backend; loss, geometry and throughput side by side.
//! - `cargo xtask bench loss`: SupCon forward + backward, reference vs fused, per backend;
//!   `cargo xtask bench train`: one SCL training step of every scl-models network per
//!   backend, beside PyTorch's; each writes its section of `docs/benchmarks.md`.
//! - `cargo xtask train --config FILE --out DIR [--resume]`: one deep-network run.
//! - `cargo xtask data check [--data-dir D]`: every dataset, present / verified, per-class
//!   counts; `cargo xtask data fetch NAME|all` downloads missing files (md5-verified).
//!
//! - `cargo xtask gpu-bundle [--out dist/gpu-bundle]`: a folder a GPU machine without a Rust
//!   toolchain runs (`bash run.sh OUT`): the release binary with cuda and wgpu, PyTorch's
//!   reference script, CIFAR-10 images; the binary `scl-gpu-check` (`src/gpu_check.rs`) is
//!   what it runs.
//!
//! Exit codes: 0 success, 1 a run failed, 2 a wrong option or configuration (nothing written),
//! 3 a dataset missing, damaged or unreadable, 130 stopped by Ctrl-C or SIGTERM.

/// `println!` for a command's output: a reader that stops early (`xtask sweep --dry-run | head`)
/// ends the output, not the process with a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod bench;
mod bundle;
mod choice;
mod compare;
mod data;
mod loss_timing;
mod paper_step;
mod report;
mod slurm;
mod stderr_relay;
mod sweep;
mod train;

use std::process::ExitCode;

// The heap figures of `bench loss` and `bench train` come from this allocator (it only
// forwards until the first measurement).
#[global_allocator]
static ALLOCATOR: scl_loss::memory::CountingAllocator = scl_loss::memory::CountingAllocator;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Tasks of the scl workspace", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run an experiment grid (default: experiments/quick.toml) and write its report.
    Sweep(sweep::SweepArgs),
    /// Write report.md and PNG figures from the finished cells of an experiment.
    Report(report::ReportArgs),
    /// Write an sbatch job-array script: task i runs `sweep --cell i`.
    Slurm(slurm::SlurmArgs),
    /// Run the same cells on several backends and compare loss, geometry and throughput.
    CompareBackends(compare::CompareArgs),
    /// Benchmarks: `bench loss` (SupCon forward + backward, reference vs fused), `bench train`
    /// (one SCL training step per network, beside PyTorch).
    Bench(bench::BenchArgs),
    /// Datasets: `data check` lists presence, md5 verification and class counts; `data fetch`.
    Data(data::DataArgs),
    /// One deep-network run from a config file; `--resume` continues from its last checkpoint.
    Train(train::TrainArgs),
    /// Build the self-contained GPU check: the stripped release binary scl-gpu-check (cuda +
    /// wgpu), run.sh, PyTorch's reference script and CIFAR-10 images, in dist/gpu-bundle.
    GpuBundle(bundle::BundleArgs),
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
    let result = match cli.command {
        Some(Command::Sweep(args)) => sweep::run(args),
        Some(Command::Report(args)) => report::run(args),
        Some(Command::Slurm(args)) => slurm::run(args),
        Some(Command::CompareBackends(args)) => compare::run(args),
        Some(Command::Bench(args)) => bench::run(args),
        Some(Command::Data(args)) => data::run(args),
        Some(Command::Train(args)) => train::run(args),
        Some(Command::GpuBundle(args)) => bundle::run(args),
        None => sweep::run(sweep::SweepArgs::default()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// Makes Ctrl-C and SIGTERM stop training cleanly (deep cells checkpoint, then exit 130).
/// Commands that train call it once their options and configuration are validated and work
/// begins: until then the signals keep their default action and end the process at once.
pub fn stop_cleanly_on_signals() {
    if let Err(e) = scl_train::interrupt::install_handler() {
        eprintln!("warning: {e}; Ctrl-C will end the process without a checkpoint");
    }
}

/// An error and its causes on one line, each cause once: a cause whose text the line already
/// holds (an I/O error that its file error quotes) is not repeated.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let said = cause.to_string();
        if text.contains(&said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_already_quoted_by_its_error_is_not_repeated() {
        let io = std::io::Error::from(std::io::ErrorKind::ReadOnlyFilesystem);
        let e = anyhow::Error::new(scl_fs::FsError::new("/mnt/ro/x", io));
        let text = super::error_text(&e);
        assert_eq!(text.matches("read-only").count(), 1, "{text}");
        let e = anyhow::Error::new(std::io::Error::other("inner")).context("outer");
        assert_eq!(super::error_text(&e), "outer: inner");
    }
}
