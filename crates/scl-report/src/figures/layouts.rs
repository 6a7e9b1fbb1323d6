//! Figures that lay several settings out together: the paper's main figure (rows of
//! imbalance kinds, columns of settings) and batch schedules or losses side by side.

use std::collections::BTreeMap;
use std::path::Path;

use super::draw::{draw_panel, panels_png, two_panel_png};
use super::{Figure, Metric, Trace, curves_by, slug};

/// The rows of the paper's main figure: the imbalance kinds, each with the balanced R = 1
/// cells (a `step` cell of ratio 1) as its R = 1 curve.
const MAIN_ROWS: [&str; 2] = ["step", "long-tail"];

/// The paper's main figure at a sweep's scale, when its deep cells span more than one panel:
/// rows the imbalance kinds (step, long-tail), columns the settings (dataset and model), one
/// curve per R (seeds averaged), one file with the final ReLU and one without, for each
/// metric (`main-<metric>-relu.png`, `main-<metric>-norelu.png`).
pub(super) fn main_figures(dir: &Path, all: &[Trace]) -> Result<Vec<Figure>, String> {
    let deep: Vec<&Trace> = all.iter().filter(|t| t.imbalance_kind.is_some()).collect();
    let mut columns: Vec<&str> = deep.iter().map(|t| t.group.as_str()).collect();
    columns.sort_unstable();
    columns.dedup();
    let in_row = |t: &Trace, row: &str| {
        t.imbalance_kind == Some(row) || (t.imbalance_kind == Some("step") && t.order == 1.0)
    };
    let rows: Vec<&str> = MAIN_ROWS
        .into_iter()
        .filter(|row| deep.iter().any(|t| t.imbalance_kind == Some(*row)))
        .collect();
    if rows.len() * columns.len() < 2 {
        return Ok(Vec::new());
    }
    let mut figures = Vec::new();
    for metric in Metric::ALL {
        let (stem, title, y_label, log) = metric.labels();
        // One y range for every panel of both files, so that ReLU and no ReLU compare by eye.
        let values: Vec<f64> = deep
            .iter()
            .flat_map(|t| t.points.iter().map(|p| metric.of(p)))
            .filter(|v| v.is_finite() && (!log || *v > 0.0))
            .collect();
        let span = values
            .iter()
            .copied()
            .fold(None, |acc: Option<(f64, f64)>, v| {
                Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
            });
        for relu in [true, false] {
            let activation = if relu { "relu" } else { "norelu" };
            let name = format!("main-{stem}-{activation}.png");
            let path = dir.join(&name);
            let size = (520 * columns.len() as u32, 420 * rows.len() as u32);
            panels_png(&path, size, (rows.len(), columns.len()), |panels| {
                for (i, row) in rows.iter().enumerate() {
                    for (j, column) in columns.iter().enumerate() {
                        let traces: Vec<&Trace> = deep
                            .iter()
                            .copied()
                            .filter(|t| t.group == *column && in_row(t, row))
                            .collect();
                        let curves = curves_by(&traces, relu, metric, |t| format!("R={}", t.order));
                        let heading = format!("{column}, {row}");
                        draw_panel(
                            &panels[i * columns.len() + j],
                            &heading,
                            "epoch",
                            y_label,
                            &curves,
                            log,
                            span,
                        )?;
                    }
                }
                Ok(())
            })?;
            figures.push(Figure {
                group: "main".to_string(),
                title: format!(
                    "{title}, {}: rows {}, one column per setting, one curve per R",
                    if relu { "final ReLU" } else { "no ReLU" },
                    rows.join(" / ")
                ),
                path,
                relative_path: format!("figures/{name}"),
            });
        }
    }
    Ok(figures)
}

/// What a comparison figure sets side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compared {
    /// Batch schedules (`<setting>-schedules.png`).
    Schedule,
    /// Losses, SCL and cross-entropy (`<setting>-losses.png`).
    Loss,
}

impl Compared {
    /// Every comparison.
    pub(super) const ALL: [Self; 2] = [Self::Schedule, Self::Loss];

    /// The file suffix and the words of the title.
    fn words(self) -> (&'static str, &'static str) {
        match self {
            Self::Schedule => ("schedules", "batch schedule"),
            Self::Loss => ("losses", "loss"),
        }
    }

    /// The value a trace has of the compared axis.
    fn value(self, t: &Trace) -> &str {
        match self {
            Self::Schedule => &t.schedule,
            Self::Loss => &t.loss,
        }
    }

    /// The trace's setting without the compared axis.
    fn setting(self, t: &Trace) -> &str {
        match self {
            Self::Schedule => &t.unscheduled,
            Self::Loss => &t.unlossed,
        }
    }
}

/// Batch schedules, or losses, side by side where a setting's cells differ in that alone:
/// OF distance along training, one curve per value and R (seeds averaged), final ReLU on the
/// left, none on the right (`<setting>-schedules.png`, `<setting>-losses.png`).
pub(super) fn comparison_figures(
    dir: &Path,
    all: &[Trace],
    compared: Compared,
) -> Result<Vec<Figure>, String> {
    let (suffix, word) = compared.words();
    let mut settings: BTreeMap<&str, Vec<&Trace>> = BTreeMap::new();
    for t in all {
        settings.entry(compared.setting(t)).or_default().push(t);
    }
    let mut figures = Vec::new();
    for (setting, traces) in settings {
        let mut values: Vec<&str> = traces.iter().map(|t| compared.value(t)).collect();
        values.sort_unstable();
        values.dedup();
        if values.len() < 2 {
            continue;
        }
        let name = format!("{}-{suffix}.png", slug(setting));
        let path = dir.join(&name);
        let x_label = traces[0].x_label;
        two_panel_png(&path, (1400, 520), |panels| {
            for (panel, relu) in panels.iter().zip([true, false]) {
                let curves = curves_by(&traces, relu, Metric::OfDistance, |t| {
                    format!("{} R={}", compared.value(t), t.order)
                });
                let heading = format!(
                    "OF distance by {word}, {}",
                    if relu { "final ReLU" } else { "no ReLU" }
                );
                draw_panel(
                    panel,
                    &heading,
                    x_label,
                    "OF distance",
                    &curves,
                    false,
                    None,
                )?;
            }
            Ok(())
        })?;
        figures.push(Figure {
            group: setting.to_string(),
            title: format!("OF distance by {word} ({}): {setting}", values.join(", ")),
            path,
            relative_path: format!("figures/{name}"),
        });
    }
    Ok(figures)
}
