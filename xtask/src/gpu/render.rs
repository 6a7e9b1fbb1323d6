//! `gpu-check.md`: the check's tables, with PyTorch's numbers beside ours when given.

use std::fmt::Write as _;

use serde_json::Value;

use super::{CheckArgs, CheckReport};

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.digits$}"))
}

/// PyTorch's loss benchmark at one N.
#[derive(Default)]
struct TorchLoss {
    seconds: Option<f64>,
    memory_mib: Option<f64>,
    note: Option<String>,
}

/// PyTorch's loss row at `n`, if it has one.
fn torch_loss(torch: Option<&Value>, n: usize) -> Option<TorchLoss> {
    let rows = torch?.get("loss")?.as_array()?;
    let row = rows
        .iter()
        .find(|r| r.get("n").and_then(Value::as_u64) == Some(n as u64))?;
    let f = |k: &str| row.get(k).and_then(Value::as_f64);
    Some(TorchLoss {
        seconds: f("seconds"),
        memory_mib: f("memory_mib"),
        note: row.get("note").and_then(Value::as_str).map(str::to_string),
    })
}

/// The markdown page.
pub fn markdown(r: &CheckReport, args: &CheckArgs, torch: Option<&Value>) -> String {
    let mut md = String::new();
    backends(&mut md, r, torch);
    parity(&mut md, r, args);
    loss_benchmark(&mut md, r, args, torch);
    training(&mut md, r, torch);
    if !r.errors.is_empty() {
        let _ = writeln!(md, "\n## Errors\n");
        for e in &r.errors {
            let _ = writeln!(md, "- {e}");
        }
    }
    md
}

/// The heading, PyTorch's version and the backends found.
fn backends(md: &mut String, r: &CheckReport, torch: Option<&Value>) {
    let _ = writeln!(
        md,
        "# GPU check\n\nRevision `{}`; host {}; {:.0} s in all. Training data: {}.\n",
        r.revision, r.host, r.seconds, r.data
    );
    if let Some(t) = torch {
        let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
        let _ = match t.get("unavailable").and_then(Value::as_str) {
            Some(why) => writeln!(md, "PyTorch: not measured ({why}).\n"),
            None => writeln!(md, "PyTorch {} on {}.\n", s("torch"), s("device")),
        };
    }
    let _ = writeln!(
        md,
        "## Backends\n\n| backend | devices | status |\n|---|---|---|"
    );
    for b in &r.backends {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            b.name,
            if b.devices.is_empty() {
                "-".to_string()
            } else {
                b.devices.join(", ")
            },
            b.unavailable.as_deref().unwrap_or("checked")
        );
    }

    if r.backends.iter().all(|b| b.unavailable.is_some()) {
        let _ = writeln!(
            md,
            "\nNo GPU backend found a device, so there is no parity, benchmark or GPU training \
             below (see the status column above)."
        );
    }
}

/// Fused vs reference parity per backend.
fn parity(md: &mut String, r: &CheckReport, args: &CheckArgs) {
    let _ = writeln!(
        md,
        "\n## Fused vs reference parity\n\nThe workspace's parity grid (N in 1, 2, 31, 257, \
         1031 x d in 3, 8, 128 x tau in 0.005, 0.1, 1; every contrast mode and no-positive \
         policy with 1 and 3 views){}; both losses on the same backend. Deviations are \
         relative to the reference value and to its largest gradient entry.\n\n| backend | \
         cases | passed | skipped (time limit) | largest value deviation | largest gradient \
         deviation | tolerance | seconds |\n|---|---|---|---|---|---|---|---|",
        if args.parity_large > 0 {
            format!(" and one case at N = {}, d = 128", args.parity_large)
        } else {
            String::new()
        }
    );
    for p in &r.parity {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.2e} | {:.2e} | {:.0e} | {:.1} |",
            p.backend,
            p.cases,
            p.passed,
            p.skipped,
            p.max_value_deviation,
            p.max_grad_deviation,
            p.tolerance,
            p.seconds
        );
        for f in &p.failures {
            let _ = writeln!(md, "\nFAILED ({}): {f}", p.backend);
        }
    }
}

/// SupCon forward + backward per backend and size, PyTorch beside.
fn loss_benchmark(md: &mut String, r: &CheckReport, args: &CheckArgs, torch: Option<&Value>) {
    let _ = writeln!(
        md,
        "\n## SupCon forward + backward\n\nf32, d = {}, tau = 0.1, 10 classes, one view, \
         features L2-normalised inside the loss, gradient read back to the host; median of {} \
         runs after a warm-up. Memory: growth of the device memory pool over the first timed \
         run (PyTorch: peak allocated beyond the inputs). TFLOP/s counts 3 passes of \
         2 N^2 d flops.\n",
        args.dim, args.repeats
    );
    let with_torch = torch.is_some();
    let _ = writeln!(
        md,
        "| backend | N | reference s | reference MiB | reference TFLOP/s | fused s | fused MiB | \
         fused TFLOP/s | fused / reference |{} note |\n|---|---|---|---|---|---|---|---|---|{}---|",
        if with_torch {
            " PyTorch s | PyTorch MiB | fused / PyTorch time |"
        } else {
            ""
        },
        if with_torch { "---|---|---|" } else { "" }
    );
    for row in &r.loss {
        let ratio = match (row.fused_seconds, row.reference_seconds) {
            (Some(f), Some(r)) => format!("{:.3}", f / r),
            _ => "-".into(),
        };
        let mut note = row.note.clone().unwrap_or_default();
        let torch_cols = if with_torch {
            let TorchLoss {
                seconds: t,
                memory_mib: m,
                note: tn,
            } = torch_loss(torch, row.n).unwrap_or_default();
            if let Some(tn) = tn {
                note = [note, format!("PyTorch: {tn}")]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join("; ");
            }
            let r = match (row.fused_seconds, t) {
                (Some(f), Some(t)) => format!("{:.3}", f / t),
                _ => "-".into(),
            };
            format!(" {} | {} | {r} |", opt(t, 5), opt(m, 1))
        } else {
            String::new()
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {ratio} |{torch_cols} {note} |",
            row.backend,
            row.n,
            opt(row.reference_seconds, 5),
            opt(row.reference_memory_mib, 1),
            opt(row.reference_tflops, 2),
            opt(row.fused_seconds, 5),
            opt(row.fused_memory_mib, 1),
            opt(row.fused_tflops, 2),
        );
    }
}

/// ResNet-18 SCL training steps per backend, PyTorch beside.
fn training(md: &mut String, r: &CheckReport, torch: Option<&Value>) {
    let _ = writeln!(
        md,
        "\n## ResNet-18 SCL training steps\n\nCIFAR stem, final ReLU, 512-d L2-normalised \
         embedding; SupCon tau = 0.1, base 0.07; SGD lr 0.1, momentum 0.9, weight decay 5e-4; \
         two views (image, vertical flip) made on the device; each step uploads its batch and \
         reads the loss back. Images/s over the steps after the untimed warm-up.\n\n\
         | run | batch | steps (untimed) | images/s | ms/step | loss first -> last | note |\n\
         |---|---|---|---|---|---|---|"
    );
    let line = |md: &mut String,
                name: &str,
                batch: usize,
                steps: usize,
                warmup: usize,
                ips: f64,
                secs: &[f64],
                loss: &[f64],
                note: &str| {
        let timed = secs.get(warmup..).unwrap_or(&[]);
        let ms = if timed.is_empty() {
            f64::NAN
        } else {
            timed.iter().sum::<f64>() / timed.len() as f64 * 1e3
        };
        let _ = writeln!(
            md,
            "| {name} | {batch} | {steps} ({warmup}) | {ips:.1} | {ms:.1} | {:.4} -> {:.4} | {note} |",
            loss.first().copied().unwrap_or(f64::NAN),
            loss.last().copied().unwrap_or(f64::NAN),
        );
    };
    for t in &r.train {
        line(
            md,
            &t.backend,
            t.batch,
            t.steps,
            t.warmup,
            t.images_per_second,
            &t.step_seconds,
            &t.loss,
            t.note.as_deref().unwrap_or(""),
        );
    }
    let torch_train = torch.and_then(|t| t.get("train")).filter(|t| t.is_object());
    if let Some(tt) = torch_train {
        let f = |k: &str| tt.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        let u = |k: &str| tt.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
        let floats = |k: &str| -> Vec<f64> {
            tt.get(k)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default()
        };
        line(
            md,
            "PyTorch (eager, CUDA)",
            u("batch"),
            u("steps"),
            u("warmup"),
            f("images_per_second"),
            &floats("step_seconds"),
            &floats("loss"),
            tt.get("note").and_then(Value::as_str).unwrap_or(""),
        );
        if let Some(ours) = r.train.iter().find(|t| t.backend == "cuda") {
            let _ = writeln!(
                md,
                "\nThroughput, ours on CUDA / PyTorch: {:.3} (target: at least 0.8).",
                ours.images_per_second / f("images_per_second")
            );
        }
    }
    let _ = writeln!(md, "\nLoss at every step:\n");
    for t in &r.train {
        let _ = writeln!(
            md,
            "- {} (batch {}): {}",
            t.backend,
            t.batch,
            t.loss
                .iter()
                .map(|v| format!("{v:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(tt) = torch_train {
        let losses: Vec<String> = tt
            .get("loss")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_f64)
                    .map(|v| format!("{v:.4}"))
                    .collect()
            })
            .unwrap_or_default();
        let _ = writeln!(md, "- PyTorch: {}", losses.join(", "));
    }
}
