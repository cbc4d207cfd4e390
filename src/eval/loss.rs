//! Per-token NLL, mean next-token cross-entropy with an ignore mask, and
//! token-weighted evaluation of many sequences.

use serde::{Deserialize, Serialize};

use super::score::{Evaluator, ScoreRow};
use super::stats::LossStats;
use crate::error::{Error, Result};

/// HuggingFace's ignore label.
pub const IGNORE_INDEX: i64 = -100;

/// Converts HF-style integer labels (`-100` = ignore) to typed labels.
///
/// ```
/// let l = gpt2::eval::labels_from_hf(&[-100, 5, 7, -100]).unwrap();
/// assert_eq!(l, vec![None, Some(5), Some(7), None]);
/// assert!(gpt2::eval::labels_from_hf(&[-1]).is_err());
/// ```
pub fn labels_from_hf(labels: &[i64]) -> Result<Vec<Option<u32>>> {
    labels
        .iter()
        .map(|&l| match l {
            IGNORE_INDEX => Ok(None),
            l if (0..=u32::MAX as i64).contains(&l) => Ok(Some(l as u32)),
            l => Err(Error::arg("labels", format!("label {l} is neither a token id nor {IGNORE_INDEX}"))),
        })
        .collect()
}

/// Result of [`Evaluator::evaluate`]: per-sequence and token-weighted totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceEval {
    /// One accumulator per input sequence, in input order (`T − 1` tokens each).
    pub per_sequence: Vec<LossStats>,
    /// All tokens of all sequences: `Σ NLL / Σ tokens` is the global mean.
    pub total: LossStats,
}

impl SequenceEval {
    /// The classic mistake, for comparison only: the unweighted mean of the
    /// per-batch mean losses when the sequences are cut, in order, into
    /// batches of `batch_size`. Differs from `total.mean()` whenever batches
    /// hold different numbers of tokens. `None` for `batch_size == 0` or no sequences.
    pub fn mean_of_batch_means(&self, batch_size: usize) -> Option<f64> {
        if batch_size == 0 || self.per_sequence.is_empty() {
            return None;
        }
        let means: Vec<f64> =
            self.per_sequence.chunks(batch_size).filter_map(|c| c.iter().copied().sum::<LossStats>().mean()).collect();
        Some(means.iter().sum::<f64>() / means.len() as f64)
    }
}

impl Evaluator<'_> {
    /// Per-token NLL of one sequence: `T − 1` values, entry `i` is
    /// `−log p(tokens[i + 1] | tokens[..=i])`. Needs `2 ≤ T ≤ n_positions`.
    ///
    /// ```
    /// use gpt2::{eval::Evaluator, Config, Gpt2};
    /// let model = Gpt2::new_random(Config::nano(16, 40), 0).unwrap();
    /// let nll = Evaluator::new(&model).token_nlls(&[3, 1, 4, 1, 5]).unwrap();
    /// assert_eq!(nll.len(), 4);
    /// ```
    pub fn token_nlls(&self, tokens: &[u32]) -> Result<Vec<f64>> {
        let row = ScoreRow::next_token(tokens)?;
        Ok(self.score(std::slice::from_ref(&row))?.remove(0))
    }

    /// Mean next-token cross-entropy with HF `labels` semantics: the labels are
    /// shifted internally (logits at `j` are scored against `labels[j + 1]`) and
    /// `None` labels are ignored. Returns the token-weighted accumulator.
    ///
    /// ```
    /// use gpt2::{eval::{labels_from_hf, Evaluator}, Config, Gpt2};
    /// let model = Gpt2::new_random(Config::nano(16, 40), 0).unwrap();
    /// let ev = Evaluator::new(&model);
    /// let ids = [3, 1, 4, 1, 5];
    /// let labels = labels_from_hf(&[-100, -100, 4, 1, 5]).unwrap();
    /// let ce = ev.cross_entropy(&ids, &labels).unwrap();
    /// assert_eq!(ce.tokens, 3);
    /// ```
    pub fn cross_entropy(&self, input_ids: &[u32], labels: &[Option<u32>]) -> Result<LossStats> {
        let row = ScoreRow::with_labels(input_ids, labels)?;
        Ok(LossStats::from_nlls(&self.score(std::slice::from_ref(&row))?[0]))
    }

    /// Batched [`Self::cross_entropy`] over many `(input_ids, labels)` pairs:
    /// one accumulator per pair (sum them for the token-weighted total).
    pub fn cross_entropy_batch(&self, batch: &[(&[u32], &[Option<u32>])]) -> Result<Vec<LossStats>> {
        let rows = batch.iter().map(|(i, l)| ScoreRow::with_labels(i, l)).collect::<Result<Vec<_>>>()?;
        Ok(self.score(&rows)?.iter().map(|n| LossStats::from_nlls(n)).collect())
    }

    /// Evaluates many token sequences (each `2 ≤ T ≤ n_positions`), batched with
    /// padding; the total is token-weighted (`Σ loss·tokens / Σ tokens`), so it
    /// equals evaluating the sequences one at a time.
    pub fn evaluate<S: AsRef<[u32]>>(&self, sequences: &[S]) -> Result<SequenceEval> {
        if sequences.is_empty() {
            return Err(Error::EmptyInput("no sequences to evaluate".into()));
        }
        let rows = sequences.iter().map(|s| ScoreRow::next_token(s.as_ref())).collect::<Result<Vec<_>>>()?;
        let per_sequence: Vec<LossStats> = self.score(&rows)?.iter().map(|n| LossStats::from_nlls(n)).collect();
        let total = per_sequence.iter().copied().sum();
        Ok(SequenceEval { per_sequence, total })
    }
}
