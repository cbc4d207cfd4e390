//! Log-probabilities of target tokens and token-weighted loss accumulation.
//!
//! Numerics: a row of logits (f32, length V) is reduced with the max subtracted,
//! `exp` evaluated in f32 and the sum accumulated in f64 (four f64 lanes); the
//! negative log-likelihood `lse(row) − row[target]` is formed in f64. Losses are
//! summed in f64 and averaged only once, over all scored tokens.

use serde::{Deserialize, Serialize};

/// `−log softmax(row)[target]` in f64: the negative log-likelihood of `target`
/// under the distribution `softmax(row)`; `row` is `[V]`.
///
/// Returns `+inf` when the target's logit is `−inf` (or when it underflows
/// against the maximum), `NaN` only when the row itself holds `NaN` or `+inf`.
///
/// ```
/// let nll = gpt2::eval::stats::token_nll(&[0.0, 0.0, 0.0, 0.0], 2);
/// assert!((nll - 4f64.ln()).abs() < 1e-12);
/// ```
pub fn token_nll(row: &[f32], target: usize) -> f64 {
    logsumexp_f64(row) - row[target] as f64
}

/// `log Σ exp(row)` of a row `[V]`: f32 max, f32 `exp(x − max)`, f64 sum.
pub fn logsumexp_f64(row: &[f32]) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        // all −inf (→ −inf) or a +inf / NaN entry (→ that value propagates).
        return if row.iter().any(|v| v.is_nan()) { f64::NAN } else { max as f64 };
    }
    let mut acc = [0f64; 4];
    let mut chunks = row.chunks_exact(4);
    for c in &mut chunks {
        for i in 0..4 {
            acc[i] += (c[i] - max).exp() as f64;
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| (v - max).exp() as f64).sum();
    max as f64 + (acc[0] + acc[1] + acc[2] + acc[3] + tail).ln()
}

/// Perplexity `exp(mean_loss)`; overflows to `+inf` (never `NaN` for a finite
/// or infinite loss; a `NaN` loss stays `NaN`).
///
/// ```
/// assert_eq!(gpt2::eval::perplexity_from_loss(0.0), 1.0);
/// assert_eq!(gpt2::eval::perplexity_from_loss(1e4), f64::INFINITY);
/// assert_eq!(gpt2::eval::perplexity_from_loss(f64::INFINITY), f64::INFINITY);
/// ```
pub fn perplexity_from_loss(mean_loss: f64) -> f64 {
    mean_loss.exp()
}

/// A token-weighted loss accumulator: Σ NLL and the number of scored tokens.
///
/// Merging accumulators and then dividing once gives the global mean
/// `Σ loss·tokens / Σ tokens` — never a mean of per-batch means.
///
/// ```
/// use gpt2::eval::LossStats;
/// let a = LossStats::from_nlls(&[1.0, 1.0, 1.0]);
/// let b = LossStats::from_nlls(&[4.0]);
/// let all = a + b;
/// assert_eq!(all.mean(), Some(7.0 / 4.0)); // not (1 + 4) / 2
/// assert_eq!(LossStats::default().mean(), None);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LossStats {
    /// Σ of the per-token negative log-likelihoods (nats).
    pub sum_nll: f64,
    /// Number of scored tokens.
    pub tokens: usize,
}

impl LossStats {
    /// Sum and count of a list of per-token NLLs.
    pub fn from_nlls(nlls: &[f64]) -> Self {
        LossStats { sum_nll: nlls.iter().sum(), tokens: nlls.len() }
    }

    /// Adds another accumulator (token-weighted).
    pub fn merge(&mut self, other: LossStats) {
        self.sum_nll += other.sum_nll;
        self.tokens += other.tokens;
    }

    /// Mean NLL per token (the cross-entropy in nats); `None` when no token was scored.
    pub fn mean(&self) -> Option<f64> {
        (self.tokens > 0).then(|| self.sum_nll / self.tokens as f64)
    }

    /// `exp(mean)`, `+inf` on overflow; `None` when no token was scored.
    pub fn perplexity(&self) -> Option<f64> {
        self.mean().map(perplexity_from_loss)
    }
}

impl std::ops::Add for LossStats {
    type Output = LossStats;
    fn add(mut self, rhs: LossStats) -> LossStats {
        self.merge(rhs);
        self
    }
}

impl std::ops::AddAssign for LossStats {
    fn add_assign(&mut self, rhs: LossStats) {
        self.merge(rhs);
    }
}

impl std::iter::Sum for LossStats {
    fn sum<I: Iterator<Item = LossStats>>(iter: I) -> Self {
        iter.fold(LossStats::default(), |a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_nll(row: &[f32], t: usize) -> f64 {
        let r: Vec<f64> = row.iter().map(|&v| v as f64).collect();
        let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        m + r.iter().map(|v| (v - m).exp()).sum::<f64>().ln() - r[t]
    }

    #[test]
    fn matches_f64_oracle_on_large_rows() {
        let mut rng = crate::rng::Rng::new(7);
        let row: Vec<f32> = (0..50257).map(|_| rng.normal() * 3.0).collect();
        for t in [0, 1, 777, 50256] {
            let d = (token_nll(&row, t) - naive_nll(&row, t)).abs();
            assert!(d < 1e-9 * 20.0, "t={t} diff {d}");
        }
    }

    #[test]
    fn stable_for_huge_logits_and_inf_for_impossible_targets() {
        let row = [1000.0f32, 999.0, -1000.0, f32::NEG_INFINITY, 998.5];
        assert!((token_nll(&row, 0) - naive_nll(&row, 0)).abs() < 1e-6);
        assert!(token_nll(&row, 2).is_finite());
        assert_eq!(token_nll(&row, 3), f64::INFINITY);
        assert_eq!(LossStats { sum_nll: f64::INFINITY, tokens: 2 }.perplexity(), Some(f64::INFINITY));
        assert_eq!(LossStats { sum_nll: 1e6, tokens: 2 }.perplexity(), Some(f64::INFINITY));
        assert!(token_nll(&[f32::NAN, 0.0], 1).is_nan());
    }

    #[test]
    fn merging_is_token_weighted() {
        let parts = [LossStats::from_nlls(&[2.0; 10]), LossStats::from_nlls(&[5.0])];
        let total: LossStats = parts.iter().copied().sum();
        assert_eq!(total.tokens, 11);
        assert!((total.mean().unwrap() - 25.0 / 11.0).abs() < 1e-12);
    }
}
