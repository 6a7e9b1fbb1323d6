//! Tests of the figures: the layouts on synthetic traces, tick labels.

use super::draw::{register_fonts, tick_decimals};
use super::layouts::{Compared, comparison_figures, main_figures};
use super::*;

/// A deep cell's trace: OF distance falling from 1 to `end` over 3 evaluated epochs.
fn trace(
    group: &str,
    kind: &'static str,
    ratio: f64,
    relu: bool,
    schedule: &str,
    end: f64,
) -> Trace {
    Trace {
        group: group.to_string(),
        imbalance_kind: Some(kind),
        schedule: schedule.to_string(),
        unscheduled: group.to_string(),
        loss: "scl".to_string(),
        unlossed: group.to_string(),
        relu,
        curve: format!("{kind}-R{ratio}"),
        order: ratio,
        seed: 0,
        points: (1..=3)
            .map(|e| Point {
                x: e as f64,
                of_distance: 1.0 + (end - 1.0) * (e - 1) as f64 / 2.0,
                nc1: 1.0 / e as f64,
                mean_cosine: 0.1,
            })
            .collect(),
        gram: Vec::new(),
        x_label: "epoch",
    }
}

/// The number of distinct colours of a PNG (a blank figure has one or two).
fn colours(path: &Path) -> usize {
    let image = image::open(path).unwrap().to_rgb8();
    image
        .pixels()
        .map(|p| p.0)
        .collect::<std::collections::HashSet<_>>()
        .len()
}

#[test]
fn the_main_figure_has_a_row_per_imbalance_kind_and_a_column_per_setting() {
    register_fonts();
    let dir = tempfile::tempdir().unwrap();
    let mut traces = Vec::new();
    for group in ["mnist small-cnn", "fashion-mnist small-cnn"] {
        for relu in [true, false] {
            traces.push(trace(group, "step", 1.0, relu, "batch-binding", 0.8));
            traces.push(trace(group, "step", 10.0, relu, "batch-binding", 0.7));
            traces.push(trace(group, "long-tail", 10.0, relu, "batch-binding", 0.9));
        }
    }
    let figures = main_figures(dir.path(), &traces).unwrap();
    assert_eq!(figures.len(), 6, "three measures, ReLU and no ReLU");
    for f in &figures {
        assert!(colours(&f.path) > 20, "{} is blank", f.path.display());
        assert!(f.title.contains("rows step / long-tail"), "{}", f.title);
    }
    // The balanced R = 1 cells are a curve of both rows.
    let step_row = |t: &&Trace| t.imbalance_kind == Some("long-tail") || t.order == 1.0;
    assert_eq!(traces.iter().filter(step_row).count(), 8);
    // One setting of one kind is one panel: the per-setting figures show it already.
    let single: Vec<Trace> = traces
        .into_iter()
        .filter(|t| t.group == "mnist small-cnn" && t.imbalance_kind == Some("step"))
        .collect();
    assert!(main_figures(dir.path(), &single).unwrap().is_empty());
}

#[test]
fn settings_that_differ_in_their_schedule_or_loss_alone_get_a_comparison_figure() {
    register_fonts();
    let dir = tempfile::tempdir().unwrap();
    let traces: Vec<Trace> = ["batch-binding", "shuffle"]
        .into_iter()
        .flat_map(|schedule| {
            [true, false].map(|relu| trace("mnist small-cnn", "step", 100.0, relu, schedule, 0.6))
        })
        .collect();
    let figures = comparison_figures(dir.path(), &traces, Compared::Schedule).unwrap();
    assert_eq!(figures.len(), 1);
    assert!(
        figures[0].title.contains("batch-binding, shuffle"),
        "{}",
        figures[0].title
    );
    assert!(colours(&figures[0].path) > 20);
    assert!(
        comparison_figures(dir.path(), &traces[..2], Compared::Schedule)
            .unwrap()
            .is_empty()
    );
    assert!(
        comparison_figures(dir.path(), &traces, Compared::Loss)
            .unwrap()
            .is_empty()
    );
    // Cross-entropy beside SCL, one schedule: a loss figure, no schedule figure.
    let losses: Vec<Trace> = ["scl", "ce"]
        .into_iter()
        .flat_map(|loss| {
            [true, false].map(|relu| {
                let mut t = trace("mnist small-cnn", "step", 10.0, relu, "batch-binding", 0.7);
                t.loss = loss.to_string();
                t
            })
        })
        .collect();
    let figures = comparison_figures(dir.path(), &losses, Compared::Loss).unwrap();
    assert_eq!(figures.len(), 1);
    assert!(
        figures[0]
            .title
            .starts_with("OF distance by loss (ce, scl)"),
        "{}",
        figures[0].title
    );
    assert!(colours(&figures[0].path) > 20);
    assert!(
        comparison_figures(dir.path(), &losses, Compared::Schedule)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn tick_labels_a_twentieth_of_the_range_apart_differ() {
    for (lo, hi) in [
        (1.10, 1.155),
        (0.0, 1.0),
        (0.2, 0.202),
        (5.0, 500.0),
        (-3.0, -2.9),
    ] {
        let d = tick_decimals(lo, hi);
        let step = (hi - lo) / 20.0;
        let (a, b) = (format!("{lo:.d$}"), format!("{:.d$}", lo + step));
        assert_ne!(a, b, "range {lo}..{hi} with {d} decimals");
    }
    assert_eq!(tick_decimals(1.10, 1.155), 3);
    assert_eq!(tick_decimals(0.0, 1.0), 2);
    assert_eq!(tick_decimals(1.0, 1.0), 2);
    assert_eq!(tick_decimals(0.0, 1e-12), 6);
}
