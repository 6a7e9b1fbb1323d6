//! The default sweep (`experiments/quick.toml`) on its reduced `smoke` grid, asserting the
//! geometry Theorem 1 of Kini et al. predicts for the unconstrained-features model, and the
//! linear probe of its digits MLP cells.

#[test]
fn the_quick_sweep_reproduces_the_unconstrained_features_geometry() {
    let (experiment, outcome, out) = crate::run_smoke("quick.toml");

    let mut ratios = std::collections::BTreeSet::new();
    for s in &outcome.summaries {
        let g = s.outcome.last.geometry.overall;
        let c = &s.config;
        ratios.insert(c.ratio as u64);
        let what = format!(
            "{} (OF {:.4}, ETF {:.4}, gap {:.2e})",
            s.cell_id, g.of_distance, g.etf_distance, s.outcome.loss_gap
        );
        if c.relu {
            // UFM+: the orthogonal frame at every R, and the closed-form minimum loss.
            assert!(g.of_distance < 0.05, "UFM+ should reach the OF: {what}");
            assert!(g.mean_cosine < 0.05, "{what}");
            assert!(
                s.outcome.loss_gap.abs() < 1e-3 * s.outcome.orthogonal_frame_loss,
                "UFM+ should reach the closed-form OF loss {}: {what}",
                s.outcome.orthogonal_frame_loss
            );
        } else if c.ratio == 1.0 {
            // UFM, balanced: the centred means form a simplex ETF.
            assert!(
                g.etf_distance < 0.05,
                "balanced UFM should give a simplex ETF: {what}"
            );
        } else {
            // UFM, imbalanced: neither geometry.
            assert!(
                g.etf_distance > 0.1 && g.of_distance > 0.1,
                "imbalanced UFM should give neither: {what}"
            );
        }
    }
    assert!(
        ratios.len() >= 2,
        "the reduced grid still spans several ratios: {ratios:?}"
    );

    // The run directories and the report exist and name every cell.
    let root = out.path().join(experiment.folder_name());
    let report = std::fs::read_to_string(root.join("report.md")).unwrap();
    for cell in &experiment.cells {
        assert!(report.contains(&cell.id), "report lacks {}", cell.id);
        let metrics = std::fs::read_to_string(root.join(&cell.id).join("metrics.csv")).unwrap();
        assert!(metrics.lines().count() > 2);
        let config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join(&cell.id).join("config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(config["backend"], "flex");
        assert!(config["git_revision"].is_string());
    }

    // The digits MLP cells run a linear probe at every evaluated epoch (chance is 0.1).
    assert!(!outcome.deep_summaries.is_empty());
    for s in &outcome.deep_summaries {
        for m in &s.outcome.metrics {
            let probe = m.probe.as_ref().expect("linear_probe = true in quick.toml");
            assert!(
                probe.balanced_accuracy > 0.5 && probe.train_accuracy > 0.5,
                "{} epoch {}: {probe:?}",
                s.cell_id,
                m.epoch
            );
        }
    }
    assert!(report.contains("probe bal acc"));

    // results.csv: a header, then one row per cell in grid order with its axis values and the
    // final metrics of its summary; every row as wide as the header.
    let table = std::fs::read_to_string(root.join("results.csv")).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    let head = csv_fields(lines[0]);
    assert_eq!(&head[..2], ["cell_id", "kind"]);
    for axis in [
        "ratio",
        "relu",
        "imbalance",
        "final_activation",
        "of_distance",
    ] {
        assert!(
            head.iter().any(|h| h == axis),
            "results.csv lacks {axis}: {head:?}"
        );
    }
    assert_eq!(lines.len(), 1 + experiment.len(), "{table}");
    let column = |name: &str| head.iter().position(|h| h == name).unwrap();
    for (line, id) in lines[1..].iter().zip(experiment.ids()) {
        let row = csv_fields(line);
        assert_eq!(row.len(), head.len(), "{line}");
        assert_eq!(row[0], id);
        assert_eq!(
            row[1],
            if id.starts_with("ufm-") {
                "ufm"
            } else {
                "deep"
            }
        );
        let of: f64 = row[column("of_distance")].parse().unwrap();
        let want = outcome
            .summaries
            .iter()
            .map(|s| {
                (
                    s.cell_id.as_str(),
                    s.outcome.last.geometry.overall.of_distance,
                )
            })
            .chain(outcome.deep_summaries.iter().map(|s| {
                let m = s.outcome.metrics.last().unwrap();
                (s.cell_id.as_str(), m.geometry.overall.of_distance)
            }))
            .find(|(cell, _)| *cell == id)
            .unwrap()
            .1;
        assert_eq!(of, want, "{id}");
    }

    // Every row of every table has as many columns as its header (the "Every cell" table
    // once had two values more than header columns).
    let columns = |line: &str| line.trim().trim_matches('|').split('|').count();
    let mut header: Option<(usize, &str)> = None;
    for line in report.lines() {
        if !line.starts_with('|') {
            header = None;
            continue;
        }
        match header {
            None => header = Some((columns(line), line)),
            Some((n, head)) => {
                assert_eq!(columns(line), n, "report row\n{line}\nunder header\n{head}")
            }
        }
    }
}

/// The fields of one CSV line (RFC 4180 quoting: `"a,b"`, `""` for a quote inside).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let (mut quoted, mut chars) = (false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}
