//! Fused vs reference: one comparison of a loss value and its feature gradient, shared by the
//! CPU kernel's unit tests and the wgpu tests of the workspace.

/// Panics naming `what` unless `value` and `grad` equal the reference's within 1e-4, relative
/// to the reference value and to the largest reference gradient entry.
///
/// Floors, for results that are 0 by cancellation (two samples of one class): what is left
/// is f32 round-off of the cancelling terms. In the value those are per-anchor terms of size
/// `(tau / base_tau) / tau = 1 / base_tau` (unit features); in the gradient the mean over
/// `n_anchor` anchors divides them by `n_anchor`. Each floor is 1% of that size.
pub fn assert_matches_reference(
    what: &str,
    (value, grad): (f64, &[f64]),
    (v_ref, g_ref): (f64, &[f64]),
    base_temperature: f64,
    n_anchor: usize,
) {
    assert!(
        value.is_finite() && v_ref.is_finite(),
        "{what}: {value} vs {v_ref}"
    );
    let floor = 1e-2 / base_temperature;
    assert!(
        (value - v_ref).abs() <= 1e-4 * v_ref.abs().max(floor),
        "{what}: value {value} vs {v_ref}"
    );
    let g_floor = floor / n_anchor.max(1) as f64;
    let g_scale = g_ref
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(g_floor);
    assert_eq!(grad.len(), g_ref.len(), "{what}: gradient sizes");
    for (k, (a, b)) in grad.iter().zip(g_ref).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * g_scale,
            "{what}: gradient {k}: {a} vs {b} (scale {g_scale})"
        );
    }
}
