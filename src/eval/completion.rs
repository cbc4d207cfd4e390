//! Masked completion scoring: the NLL of candidate completions given a context,
//! over completion tokens only.

use serde::{Deserialize, Serialize};

use super::score::{Evaluator, ScoreRow};
use crate::error::Result;

/// Score of one candidate completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionScore {
    /// Σ NLL over the completion tokens (= −log p(completion | context)).
    pub sum_nll: f64,
    /// `sum_nll / tokens`.
    pub mean_nll: f64,
    /// Number of completion tokens.
    pub tokens: usize,
}

impl CompletionScore {
    pub(crate) fn from_nlls(nlls: &[f64]) -> Self {
        let sum_nll: f64 = nlls.iter().sum();
        CompletionScore { sum_nll, mean_nll: sum_nll / nlls.len() as f64, tokens: nlls.len() }
    }
}

/// Index of the smallest value, the first one on ties (like `torch.argmin` /
/// `np.argmax` of the negated values). `None` for an empty slice or a `NaN`.
///
/// ```
/// assert_eq!(gpt2::eval::argmin_first(&[3.0, 1.0, 1.0, 2.0]), Some(1));
/// ```
pub fn argmin_first(values: &[f64]) -> Option<usize> {
    if values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut best: Option<usize> = None;
    for (i, &v) in values.iter().enumerate() {
        if best.is_none_or(|b| v < values[b]) {
            best = Some(i);
        }
    }
    best
}

impl Evaluator<'_> {
    /// Scores each candidate completion after the same context: per candidate
    /// the summed and the mean NLL over its tokens only. Candidates are batched
    /// with padding. `context` and each completion need at least one token and
    /// `context + completion − 1 ≤ n_positions`.
    ///
    /// ```
    /// use gpt2::{eval::Evaluator, Config, Gpt2};
    /// let model = Gpt2::new_random(Config::nano(16, 40), 0).unwrap();
    /// let s = Evaluator::new(&model).score_completions(&[1, 2, 3], &[vec![4], vec![5, 6, 7]]).unwrap();
    /// assert_eq!((s[0].tokens, s[1].tokens), (1, 3));
    /// assert!((s[1].mean_nll - s[1].sum_nll / 3.0).abs() < 1e-12);
    /// ```
    pub fn score_completions<C: AsRef<[u32]>>(
        &self,
        context: &[u32],
        completions: &[C],
    ) -> Result<Vec<CompletionScore>> {
        let rows = completions.iter().map(|c| ScoreRow::completion(context, c.as_ref())).collect::<Result<Vec<_>>>()?;
        Ok(self.score(&rows)?.iter().map(|n| CompletionScore::from_nlls(n)).collect())
    }
}
