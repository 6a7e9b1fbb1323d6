//! `cargo xtask bench ufm`: full-batch UFM+ cells run by scl-train and by PyTorch
//! (`benches/reference/ufm_torch.py`, run in the same invocation) from the same starting
//! features, seed by seed, so that a difference in what the two optimisers reach is a
//! difference of the programs and not of the starting points. Prints one line per (R, seed)
//! and a count per R; writes the paired rows as CSV (default `docs/results/ufm-paired.csv`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use scl_train::backend::{BackendKind, BackendRuntime};
use scl_train::config::{LrSchedule, OptimizerKind, UfmConfig};
use scl_train::ufm::initial_features;
use serde::Deserialize;

/// A class-mean pair with cosine above this is counted as merged (one direction for two
/// classes), as PyTorch's script counts it.
const MERGED_COSINE: f64 = 0.5;

/// An OF distance below this counts as having reached the orthogonal frame.
const REACHED: f64 = 0.05;

/// Arguments of `cargo xtask bench ufm`.
#[derive(clap::Args, Debug)]
pub struct UfmBenchArgs {
    /// Number of classes K (the last floor(K / 2) are the minority classes).
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Samples per majority class.
    #[arg(long, default_value_t = 200)]
    n_majority: usize,
    /// Imbalance ratios R (minority classes get floor(n_majority / R) samples).
    #[arg(long, value_delimiter = ',', default_value = "10,100")]
    ratios: Vec<f64>,
    /// Seeds of the starting features.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2,3,4,5,6,7,8,9")]
    seeds: Vec<u64>,
    /// Full-batch Adam steps.
    #[arg(long, default_value_t = 2000)]
    steps: usize,
    /// Learning rate (the peak one under the cosine schedule).
    #[arg(long, default_value_t = 0.05)]
    lr: f64,
    /// The learning rate over the steps: constant, or cosine from lr down to 0.
    #[arg(long, default_value = "cosine", value_parser = ["constant", "cosine"])]
    lr_schedule: String,
    /// Adam's epsilon, in both programs (1e-8 is PyTorch's default, 1e-5 Burn's).
    #[arg(long, default_value_t = 1e-8)]
    adam_epsilon: f64,
    /// SupCon temperature (the loss is not rescaled).
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// PyTorch's CPU threads (one keeps it from spinning against other work on the cores;
    /// the outcomes do not depend on it beyond round-off).
    #[arg(long, default_value_t = 1)]
    torch_threads: usize,
    /// The Python that runs PyTorch's reference (default: ~/.venv-torch/bin/python3 when it
    /// exists, else python3).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Keep the starting features (`start-R<ratio>-s<seed>.npy`, `labels-...`) in this folder
    /// (default: a temporary folder, removed at the end).
    #[arg(long)]
    starts: Option<PathBuf>,
    /// Where to write the paired rows (CSV).
    #[arg(long, default_value = "docs/results/ufm-paired.csv")]
    out: PathBuf,
}

/// One run of PyTorch's script.
#[derive(Debug, Deserialize)]
struct TorchRun {
    ratio: f64,
    seed: u64,
    of_distance: f64,
    loss_gap: f64,
    merged_pairs: Vec<(usize, usize)>,
}

/// One run of scl-train.
struct OurRun {
    ratio: f64,
    seed: u64,
    of_distance: f64,
    loss_gap: f64,
    merged_pairs: Vec<(usize, usize)>,
    seconds: f64,
}

impl UfmBenchArgs {
    fn config(&self, ratio: f64, seed: u64) -> UfmConfig {
        UfmConfig {
            num_classes: self.classes,
            dim: None,
            n_majority: self.n_majority,
            ratio,
            relu: true,
            temperature: self.temperature,
            steps: self.steps,
            lr: self.lr,
            lr_schedule: if self.lr_schedule == "cosine" {
                LrSchedule::Cosine
            } else {
                LrSchedule::Constant
            },
            optimizer: OptimizerKind::Adam,
            adam_epsilon: Some(self.adam_epsilon),
            seed,
            log_every: self.steps.max(1),
            schedule: None,
            batch_size: None,
        }
    }
}

/// The class pairs whose means have cosine above [`MERGED_COSINE`] in the Gram matrix `gram`.
fn merged_pairs(gram: &[Vec<f64>]) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for i in 0..gram.len() {
        for j in i + 1..gram.len() {
            let norms = (gram[i][i] * gram[j][j]).sqrt();
            if norms > 0.0 && gram[i][j] / norms > MERGED_COSINE {
                pairs.push((i, j));
            }
        }
    }
    pairs
}

/// Writes the starting features and labels of every cell into `dir`, under the names
/// PyTorch's script reads (`start-R<ratio>-s<seed>.npy`, `labels-R<ratio>-s<seed>.npy`).
fn write_starts(args: &UfmBenchArgs, dir: &Path) -> Result<(), String> {
    for &ratio in &args.ratios {
        for &seed in &args.seeds {
            let cfg = args.config(ratio, seed);
            let labels = cfg.step_labels();
            let features = initial_features(&cfg, labels.len());
            let l: Vec<i64> = labels.iter().map(|&c| c as i64).collect();
            let name = format!("R{ratio}-s{seed}.npy");
            scl_fs::write(
                &dir.join(format!("start-{name}")),
                scl_geometry::io::npy_f32(labels.len(), cfg.dim(), &features),
            )
            .map_err(|e| e.to_string())?;
            scl_fs::write(
                &dir.join(format!("labels-{name}")),
                scl_geometry::io::npy_i64(&l),
            )
            .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn ours(args: &UfmBenchArgs) -> anyhow::Result<Vec<OurRun>> {
    let mut runs = Vec::new();
    for &ratio in &args.ratios {
        for &seed in &args.seeds {
            let cfg = args.config(ratio, seed);
            let started = Instant::now();
            let outcome = BackendKind::Flex.run_ufm(0, &cfg, |_| {})?;
            let cell = outcome.cell_outcome()?;
            let run = OurRun {
                ratio,
                seed,
                of_distance: cell.last.geometry.overall.of_distance,
                loss_gap: cell.loss_gap,
                merged_pairs: merged_pairs(&cell.class_mean_gram),
                seconds: started.elapsed().as_secs_f64(),
            };
            eprintln!(
                "scl-train R = {ratio}, seed {seed}: OF distance {:.4}, loss gap {:.2e} ({:.1} s)",
                run.of_distance, run.loss_gap, run.seconds
            );
            runs.push(run);
        }
    }
    Ok(runs)
}

/// The merged pairs for the table: each pair, or their count when there are many (a run far
/// from any frame has most of its pairs above the cosine).
fn pairs_short(pairs: &[(usize, usize)]) -> String {
    if pairs.len() > 4 {
        format!("{} pairs", pairs.len())
    } else {
        pairs_text(pairs)
    }
}

fn pairs_text(pairs: &[(usize, usize)]) -> String {
    pairs
        .iter()
        .map(|(i, j)| format!("{i}-{j}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs the benchmark.
pub fn run(args: UfmBenchArgs) -> anyhow::Result<ExitCode> {
    let bad = if args.classes < 2 {
        Some(format!(
            "--classes {} is not allowed: it must be at least 2",
            args.classes
        ))
    } else if let Some(r) = args.ratios.iter().find(|r| !r.is_finite() || **r < 1.0) {
        Some(format!(
            "--ratios {r} is not allowed: each ratio must be a finite number of at least 1"
        ))
    } else {
        args.ratios
            .iter()
            .find_map(|&r| args.config(r, 0).validate().err())
            .map(|e| e.to_string())
    };
    if let Some(e) = bad {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(2));
    }
    let python = args.python.clone().unwrap_or_else(super::default_python);
    let dir = args.starts.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("scl-bench-ufm-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir)?;
    let starts = write_starts(&args, &dir);
    let torch: Result<Vec<TorchRun>, String> = starts.and_then(|()| {
        eprintln!(
            "== PyTorch ({}): the same cells from scl-train's starting features",
            python.display()
        );
        let ratios: Vec<String> = args.ratios.iter().map(f64::to_string).collect();
        let seeds: Vec<String> = args.seeds.iter().map(u64::to_string).collect();
        let flags = [
            ("--classes", args.classes.to_string()),
            ("--n-majority", args.n_majority.to_string()),
            ("--ratios", ratios.join(",")),
            ("--seeds", seeds.join(",")),
            ("--steps", args.steps.to_string()),
            ("--lr", args.lr.to_string()),
            ("--schedule", args.lr_schedule.clone()),
            ("--temperature", args.temperature.to_string()),
            ("--adam-epsilon", args.adam_epsilon.to_string()),
            ("--start-dir", dir.display().to_string()),
            ("--threads", args.torch_threads.max(1).to_string()),
        ];
        super::run_reference(&python, "ufm_torch.py", &flags, &[])
    });
    if args.starts.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let torch = torch.unwrap_or_else(|e| {
        println!("PyTorch is left out: {e} (install it: python3 -m venv ~/.venv-torch && ~/.venv-torch/bin/pip install torch numpy)");
        Vec::new()
    });
    eprintln!("== scl-train (flex)");
    let ours = ours(&args)?;

    let mut csv = String::from(
        "ratio,seed,adam_epsilon,steps,lr_schedule,scl_of_distance,scl_loss_gap,scl_merged_pairs,torch_of_distance,torch_loss_gap,torch_merged_pairs\n",
    );
    println!(
        "| R | seed | OF distance, scl-train | OF distance, PyTorch | loss gap, scl-train | loss gap, PyTorch | merged, scl-train | merged, PyTorch |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for o in &ours {
        let t = torch
            .iter()
            .find(|t| t.seed == o.seed && t.ratio == o.ratio);
        let (tof, tgap, tmerged) = match t {
            Some(t) => (
                format!("{:.4}", t.of_distance),
                format!("{:.2e}", t.loss_gap),
                pairs_short(&t.merged_pairs),
            ),
            None => ("-".into(), "-".into(), String::new()),
        };
        println!(
            "| {} | {} | {:.4} | {tof} | {:.2e} | {tgap} | {} | {tmerged} |",
            o.ratio,
            o.seed,
            o.of_distance,
            o.loss_gap,
            pairs_short(&o.merged_pairs)
        );
        let _ = writeln!(
            csv,
            "{},{},{:e},{},{},{:.4},{:.3e},{},{},{},{}",
            o.ratio,
            o.seed,
            args.adam_epsilon,
            args.steps,
            args.lr_schedule,
            o.of_distance,
            o.loss_gap,
            pairs_text(&o.merged_pairs),
            t.map(|t| format!("{:.4}", t.of_distance))
                .unwrap_or_default(),
            t.map(|t| format!("{:.3e}", t.loss_gap)).unwrap_or_default(),
            t.map(|t| pairs_text(&t.merged_pairs)).unwrap_or_default()
        );
    }
    println!();
    for &ratio in &args.ratios {
        let count = |of: &[f64]| of.iter().filter(|&&d| d < REACHED).count();
        let mine: Vec<f64> = ours
            .iter()
            .filter(|o| o.ratio == ratio)
            .map(|o| o.of_distance)
            .collect();
        let theirs: Vec<f64> = torch
            .iter()
            .filter(|t| t.ratio == ratio)
            .map(|t| t.of_distance)
            .collect();
        let same = ours
            .iter()
            .filter(|o| o.ratio == ratio)
            .filter(|o| {
                torch.iter().any(|t| {
                    t.ratio == ratio
                        && t.seed == o.seed
                        && (t.of_distance < REACHED) == (o.of_distance < REACHED)
                })
            })
            .count();
        println!(
            "R = {ratio}: OF distance below {REACHED} in {}/{} runs of scl-train, {}/{} of PyTorch; \
             the same verdict for {same} of {} seeds",
            count(&mine),
            mine.len(),
            count(&theirs),
            theirs.len(),
            mine.len()
        );
    }
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    scl_fs::write(&args.out, csv)?;
    eprintln!("wrote {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::{UfmBenchArgs, merged_pairs, write_starts};
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: UfmBenchArgs,
    }

    #[test]
    fn the_starts_written_for_pytorch_are_the_runs_own_features_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let cli = Cli::parse_from([
            "bench",
            "--classes",
            "4",
            "--n-majority",
            "6",
            "--ratios",
            "3",
            "--seeds",
            "7",
        ]);
        write_starts(&cli.args, dir.path()).unwrap();
        let cfg = cli.args.config(3.0, 7);
        let labels = cfg.step_labels();
        assert_eq!(labels.len(), 2 * 6 + 2 * 2);
        let start = scl_train::ufm::initial_features(&cfg, labels.len());
        // Read back by the project's .npy reader: the files hold the run's own start.
        let read = scl_geometry::io::read_embeddings(&dir.path().join("start-R3-s7.npy")).unwrap();
        assert_eq!((read.rows(), read.dim()), (labels.len(), 8));
        for (i, row) in start.chunks(8).enumerate() {
            let expected: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
            assert_eq!(read.row(i), expected.as_slice());
            assert!(
                row.iter().all(|&v| v >= 0.0),
                "UFM+ starts in the positive orthant"
            );
        }
        let read = scl_geometry::io::read_labels(&dir.path().join("labels-R3-s7.npy")).unwrap();
        let expected: Vec<i64> = labels.iter().map(|&c| c as i64).collect();
        assert_eq!(read, expected);
    }

    #[test]
    fn merged_pairs_are_the_means_with_cosine_above_a_half() {
        // Classes 0 and 2 share a direction (cosine 0.8), 1 is orthogonal to both.
        let gram = vec![
            vec![1.0, 0.0, 0.8],
            vec![0.0, 1.0, 0.0],
            vec![0.8, 0.0, 1.0],
        ];
        assert_eq!(merged_pairs(&gram), vec![(0, 2)]);
    }
}
