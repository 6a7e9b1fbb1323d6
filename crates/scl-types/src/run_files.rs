//! The files of a run directory and the two `metrics.csv` schemas: one row per logged step of
//! a UFM run ([`UFM_COLUMNS`]), one row per evaluated epoch of a deep run ([`DEEP_COLUMNS`],
//! whose rows `deep/train.rs` makes). Both are written through [`write_rows`] with the `csv` crate;
//! readers find columns by name, so a file with columns added later still reads.

use std::path::Path;

use scl_fs::FsError;
use scl_geometry::GeometryReport;

use crate::ufm::UfmPoint;

/// The resolved configuration, backend and git revision of a run.
pub const CONFIG: &str = "config.json";
/// The logged metrics.
pub const METRICS: &str = "metrics.csv";
/// The final numbers; its presence marks a finished run.
pub const SUMMARY: &str = "summary.json";

/// Columns of a UFM run's `metrics.csv`.
pub const UFM_COLUMNS: [&str; 13] = [
    "step",
    "loss",
    "of_distance",
    "etf_distance",
    "nc1",
    "mean_cosine",
    "norm_ratio",
    "majority_of_distance",
    "majority_mean_cosine",
    "majority_nc1",
    "minority_of_distance",
    "minority_mean_cosine",
    "minority_nc1",
];

/// Columns of a deep run's `metrics.csv`.
pub const DEEP_COLUMNS: [&str; 15] = [
    "epoch",
    "step",
    "lr",
    "train_loss",
    "of_distance",
    "etf_distance",
    "nc1",
    "mean_cosine",
    "norm_ratio",
    "of_distance_majority",
    "of_distance_minority",
    "ncc_accuracy",
    "balanced_accuracy",
    "probe_accuracy",
    "probe_balanced_accuracy",
];

/// Writes rows under `columns` to `path` atomically. Numbers are written as Rust prints them
/// (shortest round-trip form); a missing value is an empty field.
///
/// # Errors
/// An [`FsError`] when the file cannot be written.
pub fn write_rows(path: &Path, columns: &[&str], rows: Vec<Vec<String>>) -> Result<(), FsError> {
    let bytes = || -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
        let mut out = csv::Writer::from_writer(Vec::new());
        out.write_record(columns)?;
        for row in rows {
            out.write_record(row)?;
        }
        Ok(out.into_inner().map_err(|e| e.into_error())?)
    };
    let bytes = bytes().map_err(|e| FsError::new(path, std::io::Error::other(e)))?;
    scl_fs::write(path, bytes)
}

/// Writes the `metrics.csv` of a UFM run: one row per logged point.
///
/// # Errors
/// An [`FsError`] when the file cannot be written.
pub fn write_ufm_metrics(path: &Path, points: &[UfmPoint]) -> Result<(), FsError> {
    let group = |r: Option<GeometryReport>| match r {
        Some(r) => [r.of_distance, r.mean_cosine, r.nc1].map(|v| v.to_string()),
        None => Default::default(),
    };
    let rows = points
        .iter()
        .map(|p| {
            let g = &p.geometry;
            let mut row = vec![
                p.step.to_string(),
                p.loss.to_string(),
                g.overall.of_distance.to_string(),
                g.overall.etf_distance.to_string(),
                g.overall.nc1.to_string(),
                g.overall.mean_cosine.to_string(),
                g.overall.norm_ratio.to_string(),
            ];
            row.extend(group(g.majority));
            row.extend(group(g.minority));
            row
        })
        .collect();
    write_rows(path, &UFM_COLUMNS, rows)
}

/// The overall columns of one row of a UFM run's `metrics.csv`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UfmMetricsRow {
    /// Optimisation step.
    pub step: usize,
    /// Full-batch loss.
    pub loss: f64,
    /// OF distance of the class means.
    pub of_distance: f64,
    /// NC1.
    pub nc1: f64,
    /// Mean off-diagonal cosine of the class means.
    pub mean_cosine: f64,
}

/// Reads the overall columns of a UFM run's `metrics.csv`; empty when the file is missing,
/// unreadable or lacks one of those columns (rows that do not parse are skipped).
pub fn read_ufm_metrics(path: &Path) -> Vec<UfmMetricsRow> {
    let Ok(mut reader) = csv::Reader::from_path(path) else {
        return Vec::new();
    };
    let Ok(header) = reader.headers().cloned() else {
        return Vec::new();
    };
    let col = |name: &str| header.iter().position(|h| h == name);
    let (Some(s), Some(l), Some(o), Some(n), Some(c)) = (
        col("step"),
        col("loss"),
        col("of_distance"),
        col("nc1"),
        col("mean_cosine"),
    ) else {
        return Vec::new();
    };
    reader
        .records()
        .filter_map(|record| {
            let record = record.ok()?;
            let num = |i: usize| record.get(i)?.parse::<f64>().ok();
            Some(UfmMetricsRow {
                step: record.get(s)?.parse().ok()?,
                loss: num(l)?,
                of_distance: num(o)?,
                nc1: num(n)?,
                mean_cosine: num(c)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use scl_geometry::GeometrySummary;

    fn report(v: f64) -> GeometryReport {
        GeometryReport {
            num_classes: 2,
            of_distance: v,
            etf_distance: v + 1.0,
            nc1: v + 2.0,
            mean_cosine: v + 3.0,
            norm_ratio: v + 4.0,
        }
    }

    #[test]
    fn ufm_metrics_round_trip_and_leave_missing_groups_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(METRICS);
        let points = [
            UfmPoint {
                step: 0,
                loss: 2.5,
                geometry: GeometrySummary {
                    overall: report(0.5),
                    majority: None,
                    minority: None,
                },
            },
            UfmPoint {
                step: 10,
                loss: 1.25,
                geometry: GeometrySummary {
                    overall: report(0.125),
                    majority: Some(report(0.1)),
                    minority: Some(report(0.2)),
                },
            },
        ];
        write_ufm_metrics(&path, &points).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], UFM_COLUMNS.join(","));
        assert_eq!(lines[1], "0,2.5,0.5,1.5,2.5,3.5,4.5,,,,,,");
        assert_eq!(
            lines[2],
            "10,1.25,0.125,1.125,2.125,3.125,4.125,0.1,3.1,2.1,0.2,3.2,2.2"
        );
        let rows = read_ufm_metrics(&path);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[1],
            UfmMetricsRow {
                step: 10,
                loss: 1.25,
                of_distance: 0.125,
                nc1: 2.125,
                mean_cosine: 3.125
            }
        );
        assert!(read_ufm_metrics(&dir.path().join("absent.csv")).is_empty());
    }
}
