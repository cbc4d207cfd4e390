//! The logits-processor hook: user code that sees and edits a row of scores before a token is
//! chosen (candle's `LogitsProcessor`, transformers' custom `LogitsProcessorList` entries).
//!
//! Order in which a row is processed, as transformers applies its list:
//! repetition penalty → no-repeat-n-gram → **the user processor** → (greedy: argmax here) →
//! temperature → top-k → top-p → min-p → draw. Under beam search the row is
//! `log_softmax(logits)` before any processor (transformers' beam search processes
//! log-probabilities), and there are no warpers.
//!
//! Any `FnMut(usize, &[u32], &mut [f32])` closure is a processor; [`BanTokens`] and
//! [`LogitBias`] are ready-made ones, and a tuple `(A, B)` runs `A` then `B`.

/// Sees and edits the score row of one sequence before its next token is chosen.
///
/// ```
/// use gpt2::generate::{generate_with, GenerateConfig, Hooks, LogitsProcessor};
/// use gpt2::{Config, Gpt2, Tokenizer};
/// let tok = Tokenizer::gpt2().unwrap();
/// let model = Gpt2::new_random(Config::new(2, 2, 16, 64, tok.vocab_size()), 0).unwrap();
/// // never emit a space-prefixed token ("Ġ…"): a closure is a processor
/// let spaced: Vec<u32> = (0..tok.vocab_size() as u32).filter(|&i| tok.token_string(i).unwrap().starts_with('Ġ')).collect();
/// let mut ban = |_row: usize, _history: &[u32], logits: &mut [f32]| {
///     for &i in &spaced { logits[i as usize] = f32::NEG_INFINITY; }
/// };
/// let cfg = GenerateConfig::greedy().max_new_tokens(8);
/// let out = generate_with(&model, &tok, &[tok.encode("Hello")], &cfg, Hooks { processor: Some(&mut ban), ..Default::default() }).unwrap();
/// assert!(out.samples[0].token_ids.iter().all(|t| !spaced.contains(t)));
/// ```
pub trait LogitsProcessor {
    /// Edits `scores` (one entry per vocabulary id) of output row `row` (the sample index within
    /// the call; under beam search the beam's cache row), whose tokens so far are `history`
    /// (prompt + generated). Set an entry to `f32::NEG_INFINITY` to forbid a token.
    fn process(&mut self, row: usize, history: &[u32], scores: &mut [f32]);
}

impl<F: FnMut(usize, &[u32], &mut [f32])> LogitsProcessor for F {
    fn process(&mut self, row: usize, history: &[u32], scores: &mut [f32]) {
        self(row, history, scores)
    }
}

impl<A: LogitsProcessor, B: LogitsProcessor> LogitsProcessor for (A, B) {
    fn process(&mut self, row: usize, history: &[u32], scores: &mut [f32]) {
        self.0.process(row, history, scores);
        self.1.process(row, history, scores);
    }
}

/// Forbids a set of token ids (ids outside the vocabulary are ignored).
///
/// ```
/// use gpt2::generate::{BanTokens, LogitsProcessor};
/// let mut scores = vec![1.0, 2.0, 3.0];
/// BanTokens(vec![2, 7]).process(0, &[], &mut scores);
/// assert_eq!(scores, vec![1.0, 2.0, f32::NEG_INFINITY]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BanTokens(pub Vec<u32>);

impl LogitsProcessor for BanTokens {
    fn process(&mut self, _row: usize, _history: &[u32], scores: &mut [f32]) {
        for &t in &self.0 {
            if let Some(s) = scores.get_mut(t as usize) {
                *s = f32::NEG_INFINITY;
            }
        }
    }
}

/// Adds a bias to the scores of some token ids (OpenAI's `logit_bias`; ids outside the
/// vocabulary are ignored).
///
/// ```
/// use gpt2::generate::{LogitBias, LogitsProcessor};
/// let mut scores = vec![1.0, 2.0];
/// LogitBias(vec![(0, 5.0)]).process(0, &[], &mut scores);
/// assert_eq!(scores, vec![6.0, 2.0]);
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogitBias(pub Vec<(u32, f32)>);

impl LogitsProcessor for LogitBias {
    fn process(&mut self, _row: usize, _history: &[u32], scores: &mut [f32]) {
        for &(t, b) in &self.0 {
            if let Some(s) = scores.get_mut(t as usize) {
                *s += b;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_run_in_order() {
        let mut p = (LogitBias(vec![(1, 10.0)]), BanTokens(vec![1]));
        let mut s = vec![0.0, 0.0];
        p.process(0, &[], &mut s);
        assert_eq!(s, vec![0.0, f32::NEG_INFINITY]);
        let mut q = (BanTokens(vec![1]), LogitBias(vec![(1, 10.0)]));
        let mut s = vec![0.0, 0.0];
        q.process(0, &[], &mut s);
        assert_eq!(s, vec![0.0, f32::NEG_INFINITY]); // -inf + 10 stays -inf
    }
}
