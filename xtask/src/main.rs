//! `cargo xtask`: the project's task runner.
//!
//! - `cargo xtask sweep [--experiment FILE] [--profile P] [--backend B] [--jobs N] [--out DIR]`
//!   runs every unfinished cell of an experiment grid and writes `DIR/<experiment>/report.md`.
//! - `cargo xtask bench loss`: SupCon forward + backward, reference vs fused, on the CPU;
//!   writes `docs/benchmarks.md` and `docs/benchmarks.json`.
//! - `cargo xtask train --config FILE --out DIR [--resume]`: one deep-network run.
//! - `cargo xtask data check [--data-dir D]`: every dataset, present / verified, per-class
//!   counts; `cargo xtask data fetch NAME|all` downloads missing files (md5-verified).
//!
//! Exit codes: 0 success, 1 a run failed, 2 a wrong option or configuration (nothing written).

#[path = "../../crates/scl-loss/tests/support/alloc_counter.rs"]
mod alloc_counter;
mod bench;
mod data;
mod sweep;
mod train;

use std::process::ExitCode;

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
    /// Benchmark: `bench loss` times SupCon forward + backward, reference vs fused.
    Bench(bench::BenchArgs),
    /// Datasets: `data check` lists presence, md5 verification and class counts; `data fetch`.
    Data(data::DataArgs),
    /// One deep-network run from a config file; `--resume` continues from its last checkpoint.
    Train(train::TrainArgs),
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
        Some(Command::Bench(args)) => bench::run(args),
        Some(Command::Data(args)) => data::run(args),
        Some(Command::Train(args)) => train::run(args),
        None => sweep::run(sweep::SweepArgs::default()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
