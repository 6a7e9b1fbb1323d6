//! Drawing: line panels, heatmaps, and PNG files of several panels written atomically.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::Curve;

/// Errors of drawing, as text.
pub(super) fn draw_error<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

/// Registers the embedded DejaVu Sans as plotters' "sans-serif" (once per process).
pub(super) fn register_fonts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The font bytes are valid TrueType; registration cannot fail for them.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Draws one panel of line curves; `log` puts the y axis on a log scale (non-positive values
/// are left out).
pub(super) fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    curves: &[Curve],
    log: bool,
    y_span: Option<(f64, f64)>,
) -> Result<(), String> {
    let values = curves
        .iter()
        .flat_map(|(_, p)| p.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log || *y > 0.0));
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in values {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, if log { 1e-3 } else { 0.0 }, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if let Some((lo, hi)) = y_span {
        (y0, y1) = (lo, hi);
    }
    // The axis spans the data plus a margin (at least 1e-3 each side); its labels need the
    // decimals of that span, not of the data alone (a flat curve would get 2).
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    let decimals = tick_decimals(y0 - pad, y1 + pad);
    let e = |e: DrawingAreaErrorKind<_>| format!("{title}: {e}");
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .x_label_formatter(&|x: &f64| format!("{x:.0}"))
                .y_label_formatter(&|y: &f64| {
                    if log {
                        format!("{y:.0e}")
                    } else {
                        format!("{y:.decimals$}")
                    }
                })
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(e)?;
            for (i, (label, points)) in curves.iter().enumerate() {
                let colour = COLOURS[i % COLOURS.len()];
                let kept: Vec<(f64, f64)> = points
                    .iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log || *y > 0.0))
                    .collect();
                chart
                    .draw_series(LineSeries::new(kept.clone(), colour.stroke_width(2)))
                    .map_err(e)?
                    .label(label.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                    });
                chart
                    .draw_series(kept.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                    .map_err(e)?;
            }
            if !curves.is_empty() {
                chart
                    .configure_series_labels()
                    .label_font(("sans-serif", 14))
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .position(SeriesLabelPosition::UpperRight)
                    .draw()
                    .map_err(e)?;
            }
        }};
    }
    if log {
        let (lo, hi) = (y0 / 1.5, y1 * 1.5);
        finish!(
            builder
                .build_cartesian_2d(x0..x1, (lo..hi).log_scale())
                .map_err(e)?
        );
    } else {
        finish!(
            builder
                .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
                .map_err(e)?
        );
    }
    Ok(())
}

/// Decimals of a linear axis's tick labels for data from `lo` to `hi`: enough that labels
/// about a twentieth of the range apart differ (the mesh puts up to ten labels on the padded
/// range, at steps of 1, 2 or 5 times a power of ten), at least 2 and at most 6. With a fixed
/// 2, a range of 0.05 (OF distances early in training) was labelled 1.10, 1.11, 1.11, ...
pub(super) fn tick_decimals(lo: f64, hi: f64) -> usize {
    let range = hi - lo;
    if !range.is_finite() || range <= 0.0 {
        return 2;
    }
    (-(range / 20.0).log10()).ceil().clamp(2.0, 6.0) as usize
}

/// Diverging colour of `v` in [-1, 1]: blue (negative), white (0), red (positive).
fn diverging(v: f64) -> RGBColor {
    let v = v.clamp(-1.0, 1.0);
    let fade = |c: u8, t: f64| (255.0 + (f64::from(c) - 255.0) * t).round() as u8;
    if v >= 0.0 {
        RGBColor(fade(178, v), fade(24, v), fade(43, v))
    } else {
        RGBColor(fade(33, -v), fade(102, -v), fade(172, -v))
    }
}

/// Draws `G / max|G|` as a heatmap with the values written in the cells (up to K = 12).
pub(super) fn draw_heatmap(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    gram: &[Vec<f64>],
) -> Result<(), String> {
    let k = gram.len();
    let e = |e: DrawingAreaErrorKind<_>| format!("{title}: {e}");
    let chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(30)
        .build_cartesian_2d(0..k.max(1), (0..k.max(1)).into_segmented())
        .map_err(e)?;
    let scale = gram
        .iter()
        .flatten()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    let plot = chart.plotting_area();
    for (i, row) in gram.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let r = k - 1 - i;
            let cell = Rectangle::new(
                [
                    (j, SegmentValue::Exact(r)),
                    (j + 1, SegmentValue::Exact(r + 1)),
                ],
                diverging(v / scale).filled(),
            );
            plot.draw(&cell).map_err(e)?;
            if k <= 12 {
                let text = format!("{:.2}", v / scale);
                plot.draw(&Text::new(
                    text,
                    (j, SegmentValue::CenterOf(r)),
                    ("sans-serif", 13).into_font().color(&BLACK),
                ))
                .map_err(e)?;
            }
        }
    }
    Ok(())
}

/// Draws a white PNG of `size` split into a left and a right panel, through a temporary file
/// and a rename, so a reader never sees half a PNG.
pub(super) fn two_panel_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&[DrawingArea<BitMapBackend<'_>, Shift>]) -> Result<(), String>,
) -> Result<(), String> {
    panels_png(path, size, (1, 2), draw)
}

/// Draws a white PNG of `size` split into `rows x cols` panels (row by row), through a
/// temporary file and a rename.
pub(super) fn panels_png(
    path: &Path,
    size: (u32, u32),
    grid: (usize, usize),
    draw: impl FnOnce(&[DrawingArea<BitMapBackend<'_>, Shift>]) -> Result<(), String>,
) -> Result<(), String> {
    let mut failure = None;
    let written = scl_fs::write_with(path, |tmp| {
        let area = BitMapBackend::new(tmp, size).into_drawing_area();
        let drawn = area
            .fill(&WHITE)
            .map_err(draw_error(path))
            .and_then(|()| draw(&area.split_evenly(grid)))
            .and_then(|()| area.present().map_err(draw_error(path)));
        drawn.map_err(|e| {
            failure = Some(e);
            std::io::Error::other("drawing failed")
        })
    });
    match (written, failure) {
        (_, Some(e)) => Err(e),
        (Err(e), None) => Err(e.to_string()),
        (Ok(()), None) => Ok(()),
    }
}
