//! An independent SupCon in plain f64 Rust, shared by the unit and integration tests.

use crate::ContrastMode;

/// An independent, loop-by-loop transcription of SupContrast's `SupConLoss.forward`
/// (no positives => 0, counted). One deliberate difference: the row max is
/// taken over the non-self entries. SupContrast includes the self entry, which is the same
/// in exact arithmetic but makes every other exponential underflow to 0 (and the loss -inf)
/// once the self-similarity exceeds the others by ~750 in f64, as with the extreme logits test.
/// Returns the per-anchor losses, view-major.
pub fn supcontrast_naive(
    f: &[f64],
    [batch, views, dim]: [usize; 3],
    labels: Option<&[i64]>,
    temperature: f64,
    base_temperature: f64,
    mode: ContrastMode,
) -> Vec<f64> {
    let row = |v: usize, i: usize| &f[(i * views + v) * dim..(i * views + v + 1) * dim];
    let contrast: Vec<(&[f64], i64)> = (0..views)
        .flat_map(|v| (0..batch).map(move |i| (row(v, i), labels.map_or(i as i64, |l| l[i]))))
        .collect();
    let n_anchor = match mode {
        ContrastMode::All => batch * views,
        ContrastMode::One => batch,
    };
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    (0..n_anchor)
        .map(|i| {
            let logits: Vec<f64> = contrast
                .iter()
                .map(|(z, _)| dot(contrast[i].0, z) / temperature)
                .collect();
            let max = logits
                .iter()
                .enumerate()
                .filter(|&(a, _)| a != i)
                .map(|(_, &l)| l)
                .fold(f64::NEG_INFINITY, f64::max);
            let denom: f64 = (0..contrast.len())
                .filter(|&a| a != i)
                .map(|a| (logits[a] - max).exp())
                .sum();
            let positives: Vec<usize> = (0..contrast.len())
                .filter(|&p| p != i && contrast[p].1 == contrast[i].1)
                .collect();
            let sum: f64 = positives
                .iter()
                .map(|&p| logits[p] - max - denom.ln())
                .sum();
            -(temperature / base_temperature) * sum / (positives.len().max(1) as f64)
        })
        .collect()
}
