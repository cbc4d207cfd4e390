//! Per-token log-probabilities, their top-N alternatives, and per-sequence summaries.
//!
//! A generated token's log-probability is taken from the distribution the token was chosen
//! from — transformers' `output_scores` passed through `compute_transition_scores`:
//! - greedy and sampling: `log_softmax` of the logits after the processors (repetition
//!   penalty, no-repeat-n-gram, a user [`LogitsProcessor`](super::LogitsProcessor)) and, when
//!   sampling, the warpers (÷ temperature; tokens dropped by top-k / top-p / min-p are `-inf`) —
//!   `compute_transition_scores(..., normalize_logits=True)`;
//! - beam search: the processed log-probabilities the beams were scored with (`log_softmax`
//!   first, processors after, as transformers' beam search does) —
//!   `compute_transition_scores(..., beam_indices)`.
//!
//! Computing them is optional ([`GenerateConfig::logprobs`](super::GenerateConfig::logprobs)):
//! when off, no normaliser is computed and nothing is stored.

use serde::{Deserialize, Serialize};

/// One alternative token and its log-probability.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    /// Token id.
    pub id: u32,
    /// Natural-log probability.
    pub logprob: f32,
}

/// A generated token, its log-probability and the most likely alternatives at its position.
///
/// ```
/// use gpt2::generate::TokenLogprob;
/// let t = TokenLogprob::from_logits(&[0.0, 1.0, 2.0], 1, 2);
/// assert!((t.logprob - (1.0 - (1f32.exp() + 2f32.exp() + 1.0).ln())).abs() < 1e-6);
/// assert_eq!(t.top.iter().map(|a| a.id).collect::<Vec<_>>(), vec![2, 1]);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The chosen token.
    pub id: u32,
    /// Its log-probability (`-inf` if it was impossible, e.g. every token was banned).
    pub logprob: f32,
    /// The `top_n` most likely tokens, most likely first (ties: lower id first); tokens with
    /// probability 0 are left out. May contain `id` itself.
    pub top: Vec<TopLogprob>,
}

impl TokenLogprob {
    /// Log-probability of `id` (and the `top_n` best alternatives) under `log_softmax(logits)`.
    /// `-inf` logits are tokens with probability 0.
    pub fn from_logits(logits: &[f32], id: u32, top_n: usize) -> Self {
        let lse = log_sum_exp(logits);
        let lp = |x: f32| {
            if x == f32::NEG_INFINITY || !lse.is_finite() {
                f32::NEG_INFINITY
            } else {
                (x as f64 - lse) as f32
            }
        };
        let top = top_n_of(logits, top_n)
            .into_iter()
            .map(|i| TopLogprob { id: i, logprob: lp(logits[i as usize]) })
            .collect();
        TokenLogprob { id, logprob: lp(logits[id as usize]), top }
    }
}

/// Sum, mean and perplexity of a sequence's token log-probabilities.
///
/// ```
/// use gpt2::generate::SequenceLogprob;
/// let s = SequenceLogprob::of([-1.0f32, -3.0]).unwrap();
/// assert_eq!((s.tokens, s.sum, s.mean), (2, -4.0, -2.0));
/// assert!((s.perplexity - 2f64.exp()).abs() < 1e-12);
/// assert!(SequenceLogprob::of(std::iter::empty::<f32>()).is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SequenceLogprob {
    /// Number of tokens.
    pub tokens: usize,
    /// Sum of the log-probabilities (f64 accumulation).
    pub sum: f64,
    /// `sum / tokens`.
    pub mean: f64,
    /// `exp(-mean)`.
    pub perplexity: f64,
}

impl SequenceLogprob {
    /// Summary of the log-probabilities; `None` when there are none.
    pub fn of(logprobs: impl IntoIterator<Item = f32>) -> Option<Self> {
        let (mut n, mut sum) = (0usize, 0f64);
        for lp in logprobs {
            n += 1;
            sum += lp as f64;
        }
        (n > 0).then(|| {
            let mean = sum / n as f64;
            SequenceLogprob { tokens: n, sum, mean, perplexity: (-mean).exp() }
        })
    }
}

/// `ln Σ exp(x)` over the row (f64; `-inf` when every entry is `-inf`; NaN entries ignored).
pub(crate) fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().copied().filter(|x| !x.is_nan()).fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max as f64;
    }
    let s: f64 = row.iter().filter(|x| !x.is_nan()).map(|&x| ((x - max) as f64).exp()).sum();
    max as f64 + s.ln()
}

/// Writes `log_softmax(row)` into `out` in f32, as PyTorch does (`x - max - ln Σ exp(x - max)`).
pub(crate) fn log_softmax_into(row: &[f32], out: &mut [f32]) {
    let max = row.iter().copied().filter(|x| !x.is_nan()).fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        out.copy_from_slice(row);
        return;
    }
    let s: f64 = row.iter().filter(|x| !x.is_nan()).map(|&x| ((x - max) as f64).exp()).sum();
    let ln = s.ln() as f32;
    for (o, &x) in out.iter_mut().zip(row) {
        *o = (x - max) - ln;
    }
}

/// Ids of the `n` largest finite-or-`+inf` entries (not `-inf`, not NaN), largest first, lower id
/// first on ties.
pub(crate) fn top_n_of(row: &[f32], n: usize) -> Vec<u32> {
    if n == 0 {
        return Vec::new();
    }
    let mut ids: Vec<u32> = (0..row.len() as u32).filter(|&i| row[i as usize] > f32::NEG_INFINITY).collect();
    let by = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    if n < ids.len() {
        ids.select_nth_unstable_by(n - 1, by);
        ids.truncate(n);
    }
    ids.sort_unstable_by(by);
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_sums_to_one_and_skips_banned_tokens() {
        let row = [1.0f32, f32::NEG_INFINITY, 3.0, -2.0];
        let mut out = [0f32; 4];
        log_softmax_into(&row, &mut out);
        let total: f64 = out.iter().map(|&x| (x as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6, "{total}");
        assert_eq!(out[1], f32::NEG_INFINITY);
        let t = TokenLogprob::from_logits(&row, 0, 10);
        assert!((t.logprob - out[0]).abs() < 1e-6);
        assert_eq!(t.top.iter().map(|a| a.id).collect::<Vec<_>>(), vec![2, 0, 3]);
        // every token banned: the chosen one is impossible, not NaN
        let all = [f32::NEG_INFINITY; 3];
        assert_eq!(TokenLogprob::from_logits(&all, 0, 2).logprob, f32::NEG_INFINITY);
    }

    #[test]
    fn top_n_breaks_ties_by_lower_id() {
        assert_eq!(top_n_of(&[1.0, 2.0, 2.0, 0.5], 2), vec![1, 2]);
        assert_eq!(top_n_of(&[1.0, 2.0, 2.0, 0.5], 0), Vec::<u32>::new());
    }
}
