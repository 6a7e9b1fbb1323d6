//! The mini-batch experiment (`experiments/ufm-batching.toml`) on its `smoke` grid:
//! batch-binding reaches the orthogonal frame and the validator accepts its batches; fixed
//! batches are rejected and end far from the orthogonal frame.

#[test]
fn batch_binding_reaches_the_orthogonal_frame_and_fixed_batches_do_not() {
    let (_experiment, outcome, _out) = crate::run_smoke("ufm-batching.toml");
    let mut seen = 0;
    for s in &outcome.summaries {
        let g = s.outcome.last.geometry.overall;
        let verdict = s
            .outcome
            .verdict
            .as_ref()
            .expect("mini-batch runs carry a verdict");
        let what = format!("{} (OF {:.4})", s.cell_id, g.of_distance);
        match s.config.schedule.map(scl_batching::ScheduleKind::name) {
            Some("batch-binding") => {
                assert!(verdict.accepted(), "{what}: {verdict:?}");
                assert!(
                    g.of_distance < 0.05,
                    "batch-binding should reach the OF: {what}"
                );
                seen += 1;
            }
            Some("fixed") => {
                assert!(!verdict.accepted(), "{what}: {verdict:?}");
                assert!(
                    g.of_distance > 0.1,
                    "fixed batches should not reach the OF: {what}"
                );
                seen += 1;
            }
            _ => {}
        }
    }
    assert!(
        seen >= 4,
        "the smoke grid has binding and fixed cells at two ratios"
    );
}
