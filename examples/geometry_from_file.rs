//! The geometry metrics of `scl-geometry` for embeddings saved by any framework.
//!
//! ```text
//! cargo run -p scl-examples --example geometry_from_file -- EMBEDDINGS LABELS [--minority 3,4]
//! ```
//!
//! `EMBEDDINGS`: an `[n, d]` matrix, `.npy` (`np.save("z.npy", z)`, float32 or float64) or
//! CSV / TSV / whitespace-separated text (a header line is skipped). `LABELS`: `n` integers,
//! `.npy` or text, one per line; any integer values (they are mapped, sorted, to classes
//! 0..K). `--minority`: label values of the minority classes, for the majority / minority
//! rows. Prints OF distance, centred-ETF distance, NC1, mean cosine and norm ratio.
//!
//! From PyTorch: `np.save("z.npy", model(x).detach().cpu().numpy()); np.save("y.npy", y.numpy())`.
//! Tiny files to try: `examples/data/embeddings.npy` with `examples/data/labels.csv`.

use std::path::PathBuf;
use std::process::ExitCode;

use scl_geometry::io::{dense_labels, read_embeddings, read_labels};
use scl_geometry::{GeometryReport, geometry_summary};

const USAGE: &str =
    "usage: geometry_from_file EMBEDDINGS(.npy|.csv) LABELS(.npy|.csv|.txt) [--minority L1,L2,..]";

fn row(name: &str, g: &GeometryReport) {
    println!(
        "| {name} | {} | {:.4} | {:.4} | {:.4e} | {:.4} | {:.4} |",
        g.num_classes, g.of_distance, g.etf_distance, g.nc1, g.mean_cosine, g.norm_ratio
    );
}

fn run(args: &[String]) -> Result<(), String> {
    let mut paths = Vec::new();
    let mut minority_values: Vec<i64> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--minority" => {
                let list = it
                    .next()
                    .ok_or("--minority needs a list of labels, e.g. 3,4")?;
                minority_values = list
                    .split(',')
                    .map(|s| s.trim().parse::<i64>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| format!("--minority {list} is not a list of whole numbers"))?;
            }
            flag if flag.starts_with("--") => {
                return Err(format!(
                    "{flag} is not an option: the only option is --minority"
                ));
            }
            path => paths.push(PathBuf::from(path)),
        }
    }
    let [embeddings, labels] = &paths[..] else {
        return Err(USAGE.to_string());
    };
    let z = read_embeddings(embeddings).map_err(|e| e.to_string())?;
    let raw = read_labels(labels).map_err(|e| e.to_string())?;
    let (labels, classes) = dense_labels(&raw);
    if let Some(v) = minority_values.iter().find(|v| !classes.contains(v)) {
        return Err(format!("--minority names label {v}, which no row has"));
    }
    let minority: Vec<usize> = minority_values
        .iter()
        .filter_map(|v| classes.binary_search(v).ok())
        .collect();
    let g = geometry_summary(&z, &labels, classes.len(), &minority).map_err(|e| e.to_string())?;
    println!(
        "{} embeddings of dimension {}, {} classes (labels {:?})\n",
        z.rows(),
        z.dim(),
        classes.len(),
        classes
    );
    println!(
        "| classes | K | OF distance | centred-ETF distance | NC1 | mean cosine | norm ratio |"
    );
    println!("|---|---|---|---|---|---|---|");
    row("all", &g.overall);
    // Without --minority every class is "majority": that row would repeat the first.
    if let Some(m) = g.majority.as_ref().filter(|_| !minority.is_empty()) {
        row("majority", m);
    }
    if let Some(m) = &g.minority {
        row("minority", m);
    }
    println!(
        "\nOF distance 0: the class means form an orthogonal frame (equal norms, pairwise \
         orthogonal); centred-ETF distance 0: the centred means form a simplex ETF."
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
