//! Inverted dropout: keep each element with probability `1 − p` and scale it by `1/(1 − p)`.
//!
//! The mask is materialised as multipliers (`0` or `1/(1 − p)`) so that the backward pass is the
//! same elementwise product.

use crate::rng::Rng;

/// Fills `mask[n]` with `0` (probability `p`) or `1/(1 − p)`, drawing from `rng`.
pub fn dropout_mask(mask: &mut [f32], p: f32, rng: &mut Rng) {
    let keep = 1.0 / (1.0 - p);
    for m in mask.iter_mut() {
        *m = if rng.next_f32() < p { 0.0 } else { keep };
    }
}

/// In place: `x[n] *= mask[n]` — both the forward (on activations) and the backward (on
/// gradients) of dropout.
pub fn dropout_apply(x: &mut [f32], mask: &[f32]) {
    for (v, &m) in x.iter_mut().zip(mask) {
        *v *= m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_expected_fraction_and_preserves_the_mean() {
        let mut mask = vec![0f32; 100_000];
        dropout_mask(&mut mask, 0.25, &mut Rng::new(3));
        let kept = mask.iter().filter(|&&m| m != 0.0).count() as f64 / mask.len() as f64;
        assert!((kept - 0.75).abs() < 0.01, "{kept}");
        let mean = mask.iter().map(|&m| m as f64).sum::<f64>() / mask.len() as f64;
        assert!((mean - 1.0).abs() < 0.015, "{mean}");
        let mut x = vec![2f32; 4];
        dropout_apply(&mut x, &[0.0, 4.0 / 3.0, 0.0, 4.0 / 3.0]);
        assert_eq!(x, vec![0.0, 8.0 / 3.0, 0.0, 8.0 / 3.0]);
    }
}
