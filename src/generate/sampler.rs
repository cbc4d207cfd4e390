//! Token sampling: logits processors and warpers in HuggingFace's order, then a seeded draw.
//!
//! Order (as `transformers.generate` applies them): repetition penalty → no-repeat-n-gram →
//! (greedy argmax stops here) → temperature → top-k → top-p → min-p → draw from the softmax.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::Rng;

/// How the next token is chosen.
///
/// Say what you want with the constructors: [`SamplingParams::greedy`] (argmax, no truncation)
/// or [`SamplingParams::sampling`] (temperature only), then the builder methods
/// [`top_k`](Self::top_k), [`top_p`](Self::top_p), [`min_p`](Self::min_p),
/// [`repetition_penalty`](Self::repetition_penalty) and
/// [`no_repeat_ngram_size`](Self::no_repeat_ngram_size), each of which sets exactly its own
/// setting. [`Default`] is *temperature 0.8 with top-k 40* (the crate's example default, not
/// transformers' greedy one): `SamplingParams { top_p: Some(0.9), ..Default::default() }` keeps
/// that top-k 40, `SamplingParams::sampling(0.8).top_p(0.9)` does not.
///
/// Serde: `temperature` is required, every other field defaults to *off* (`null`, penalty 1,
/// n-gram 0), so a JSON object never carries a hidden truncation.
///
/// ```
/// use gpt2::generate::SamplingParams;
/// let p = SamplingParams::sampling(0.7).top_p(0.9);
/// assert_eq!((p.top_k, p.top_p), (None, Some(0.9)));
/// let json = serde_json::to_string(&p).unwrap();
/// assert_eq!(serde_json::from_str::<SamplingParams>(&json).unwrap(), p);
/// let q: SamplingParams = serde_json::from_str(r#"{"temperature": 1.0, "min_p": 0.05}"#).unwrap();
/// assert_eq!(q, SamplingParams::sampling(1.0).min_p(0.05));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingParams {
    /// Softmax temperature; `0` means greedy decoding (argmax, first index on ties). Any
    /// positive value works: one so small that `logit / T` overflows f32 (down to subnormals)
    /// keeps the argmax, as the limit `T → 0` does.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (ties with the k-th logit are kept, as HF does).
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the smallest set of most likely tokens whose probability mass
    /// reaches `p` (HF: a token is dropped when the mass strictly above it is ≥ `p`).
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Drop tokens whose probability is below `min_p ×` the most likely token's.
    #[serde(default)]
    pub min_p: Option<f32>,
    /// Repetition penalty over the tokens already in the sequence (prompt and generated): a
    /// positive logit is divided by it, a negative one multiplied (HF's sign-aware rule). `1` = off.
    #[serde(default = "one")]
    pub repetition_penalty: f32,
    /// Forbid any n-gram of this size from occurring twice (`0` = off).
    #[serde(default)]
    pub no_repeat_ngram_size: usize,
}

fn one() -> f32 {
    1.0
}

impl Default for SamplingParams {
    /// Temperature 0.8, top-k 40, nothing else (prefer the explicit constructors).
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: Some(40),
            top_p: None,
            min_p: None,
            repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding (argmax), no penalties (transformers' `do_sample=False`).
    ///
    /// ```
    /// let p = gpt2::generate::SamplingParams::greedy();
    /// assert!(p.is_greedy() && p.top_k.is_none());
    /// ```
    pub fn greedy() -> Self {
        SamplingParams { temperature: 0.0, top_k: None, ..Default::default() }
    }

    /// Sampling from the softmax at `temperature` with no truncation and no penalties (add them
    /// with the builder methods). `temperature` 0 is greedy.
    ///
    /// ```
    /// let p = gpt2::generate::SamplingParams::sampling(0.8).top_k(40);
    /// assert_eq!((p.temperature, p.top_k, p.top_p, p.min_p), (0.8, Some(40), None, None));
    /// ```
    pub fn sampling(temperature: f32) -> Self {
        SamplingParams { temperature, top_k: None, ..Default::default() }
    }

    /// Sets top-k (keep the `k` most likely tokens), nothing else.
    ///
    /// ```
    /// assert_eq!(gpt2::generate::SamplingParams::sampling(1.0).top_k(5).top_k, Some(5));
    /// ```
    pub fn top_k(mut self, k: usize) -> Self {
        self.top_k = Some(k);
        self
    }

    /// Sets top-p (nucleus mass), nothing else.
    ///
    /// ```
    /// assert_eq!(gpt2::generate::SamplingParams::sampling(1.0).top_p(0.9).top_p, Some(0.9));
    /// ```
    pub fn top_p(mut self, p: f32) -> Self {
        self.top_p = Some(p);
        self
    }

    /// Sets min-p (relative probability floor), nothing else.
    ///
    /// ```
    /// assert_eq!(gpt2::generate::SamplingParams::sampling(1.0).min_p(0.1).min_p, Some(0.1));
    /// ```
    pub fn min_p(mut self, p: f32) -> Self {
        self.min_p = Some(p);
        self
    }

    /// Sets the repetition penalty (`1` = off).
    ///
    /// ```
    /// let p = gpt2::generate::SamplingParams::greedy().repetition_penalty(1.3);
    /// assert_eq!(p.repetition_penalty, 1.3);
    /// ```
    pub fn repetition_penalty(mut self, penalty: f32) -> Self {
        self.repetition_penalty = penalty;
        self
    }

    /// Forbids repeating n-grams of size `n` (`0` = off).
    ///
    /// ```
    /// assert_eq!(gpt2::generate::SamplingParams::greedy().no_repeat_ngram_size(3).no_repeat_ngram_size, 3);
    /// ```
    pub fn no_repeat_ngram_size(mut self, n: usize) -> Self {
        self.no_repeat_ngram_size = n;
        self
    }

    /// Whether this is greedy decoding.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks every setting. Errors: [`Error::InvalidArgument`] naming the setting.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::arg("temperature", format!("{} must be finite and ≥ 0 (0 = greedy)", self.temperature)));
        }
        if self.top_k == Some(0) {
            return Err(Error::arg("top_k", "must be at least 1 (leave unset to disable)"));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::arg("top_p", format!("{p} is outside (0, 1]")));
            }
        }
        if let Some(p) = self.min_p {
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::arg("min_p", format!("{p} is outside [0, 1]")));
            }
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(Error::arg(
                "repetition_penalty",
                format!("{} must be finite and > 0", self.repetition_penalty),
            ));
        }
        Ok(())
    }
}

/// A seeded sampler: the same seed and the same logits give the same tokens on every platform
/// (the crate's own xoshiro256** [`Rng`]).
///
/// ```
/// use gpt2::generate::{Sampler, SamplingParams};
/// let mut greedy = Sampler::new(SamplingParams::greedy(), 0).unwrap();
/// let mut logits = vec![0.1, 2.0, 0.5];
/// assert_eq!(greedy.sample(&mut logits, &[]), 1);
/// ```
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    /// Scratch: candidate ids sorted by logit.
    order: Vec<u32>,
    /// Scratch: unnormalised probabilities of `order`.
    weights: Vec<f64>,
    /// Scratch: which ids the repetition penalty already touched.
    seen: Vec<bool>,
}

impl Sampler {
    /// A sampler with its own random stream.
    pub fn new(params: SamplingParams, seed: u64) -> Result<Self> {
        params.validate()?;
        Ok(Self::with_rng(params, Rng::new(seed)))
    }

    /// A sampler drawing from `rng` (settings must already be valid).
    pub(crate) fn with_rng(params: SamplingParams, rng: Rng) -> Self {
        Sampler { params, rng, order: Vec::new(), weights: Vec::new(), seen: Vec::new() }
    }

    /// The settings.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from `logits` (modified in place) given the `history` of the
    /// sequence so far (prompt + generated; used by the penalties). Scratch buffers are
    /// reused, so a call does not allocate once they have grown.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        self.sample_with(logits, history, None, false)
    }

    /// [`sample`](Self::sample) with a user logits hook run after the built-in processors
    /// (penalties) and before the warpers (temperature, top-k, top-p, min-p) — transformers'
    /// place for a custom `LogitsProcessor`. With `keep_warped`, `logits` is left as the
    /// distribution the token was drawn from (scaled by 1/temperature, dropped tokens `-inf`),
    /// as transformers' `output_scores` holds it.
    pub(crate) fn sample_with(
        &mut self,
        logits: &mut [f32],
        history: &[u32],
        hook: Option<LogitsHook<'_>>,
        keep_warped: bool,
    ) -> u32 {
        let p = self.params;
        if p.repetition_penalty != 1.0 {
            penalize_once(logits, history, p.repetition_penalty, &mut self.seen);
        }
        if p.no_repeat_ngram_size > 0 {
            ban_repeated_ngrams(logits, history, p.no_repeat_ngram_size);
        }
        if let Some(hook) = hook {
            hook(logits);
        }
        if p.is_greedy() {
            return argmax(logits) as u32;
        }
        apply_temperature(logits, p.temperature);
        // Candidates sorted by logit, descending (stable: lower id first on ties).
        self.order.clear();
        self.order.extend((0..logits.len() as u32).filter(|&i| logits[i as usize] > f32::NEG_INFINITY));
        if self.order.is_empty() {
            return argmax(logits) as u32;
        }
        let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
        if let Some(k) = p.top_k {
            if k < self.order.len() {
                self.order.select_nth_unstable_by(k - 1, by_logit);
                let kth = logits[self.order[k - 1] as usize];
                // keep ties with the k-th value, as HF's `scores < topk[-1]` test does
                self.order.retain(|&i| logits[i as usize] >= kth);
            }
        }
        self.order.sort_unstable_by(by_logit);
        let max = logits[self.order[0] as usize];
        self.weights.clear();
        self.weights.extend(self.order.iter().map(|&i| ((logits[i as usize] - max) as f64).exp()));
        let weights = &self.weights;
        let total: f64 = weights.iter().sum();
        let mut keep = self.order.len();
        if let Some(top_p) = p.top_p {
            let mut above = 0.0;
            for (r, w) in weights.iter().enumerate() {
                if r > 0 && above >= top_p as f64 {
                    keep = keep.min(r);
                    break;
                }
                above += w / total;
            }
        }
        if let Some(min_p) = p.min_p {
            // weights[0] is the top probability's numerator
            let cut = min_p as f64 * weights[0];
            let n = weights[..keep].iter().take_while(|&&w| w >= cut).count().max(1);
            keep = keep.min(n);
        }
        if keep_warped {
            mask_dropped(logits, &self.order[..keep]);
        }
        let mass: f64 = weights[..keep].iter().sum();
        let mut u = self.rng.next_f64() * mass;
        for (r, w) in weights[..keep].iter().enumerate() {
            if u < *w {
                return self.order[r];
            }
            u -= w;
        }
        self.order[keep - 1]
    }
}

/// A user edit of the logits row, run by [`Sampler::sample_with`].
pub(crate) type LogitsHook<'a> = &'a mut dyn FnMut(&mut [f32]);

/// Sets every logit except those of `kept` to `-inf`.
fn mask_dropped(logits: &mut [f32], kept: &[u32]) {
    let saved: Vec<(u32, f32)> = kept.iter().map(|&i| (i, logits[i as usize])).collect();
    logits.fill(f32::NEG_INFINITY);
    for (i, v) in saved {
        logits[i as usize] = v;
    }
}

/// Divides the logits by `temperature` (> 0). When `logit / temperature` would overflow f32 (a
/// tiny or subnormal temperature, whose reciprocal may itself be infinite), the logits are first
/// shifted by their maximum and divided in f64: the largest becomes 0, the others large negative
/// numbers or `-inf`, so sampling keeps the argmax (the limit of a vanishing temperature) instead
/// of drawing among overflowed `inf`s. Other temperatures take the plain `× 1/T` path.
fn apply_temperature(logits: &mut [f32], temperature: f32) {
    let max_abs = logits.iter().filter(|l| l.is_finite()).fold(0f32, |m, l| m.max(l.abs()));
    let inv_t = 1.0 / temperature;
    // half of f32::MAX leaves room for the later `l − max` subtraction
    if inv_t.is_finite() && (max_abs as f64) * (inv_t as f64) < f32::MAX as f64 / 2.0 {
        logits.iter_mut().for_each(|l| *l *= inv_t);
        return;
    }
    let top = logits.iter().copied().filter(|l| l.is_finite()).fold(f32::NEG_INFINITY, f32::max);
    let t = temperature as f64;
    for l in logits.iter_mut() {
        if l.is_finite() {
            *l = ((*l as f64 - top as f64) / t) as f32;
        }
    }
}

/// Index of the largest value (first on ties; NaN never wins).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] || values[best].is_nan() {
            best = i;
        }
    }
    best
}

/// HF's `RepetitionPenaltyLogitsProcessor`: every token id in `history`, once.
pub fn apply_repetition_penalty(logits: &mut [f32], history: &[u32], penalty: f32) {
    penalize_once(logits, history, penalty, &mut Vec::new());
}

/// [`apply_repetition_penalty`] with a reusable `seen` scratch (left all `false`).
fn penalize_once(logits: &mut [f32], history: &[u32], penalty: f32, seen: &mut Vec<bool>) {
    seen.resize(logits.len(), false);
    for &t in history {
        let t = t as usize;
        if t < logits.len() && !seen[t] {
            seen[t] = true;
            let l = &mut logits[t];
            *l = if *l < 0.0 { *l * penalty } else { *l / penalty };
        }
    }
    for &t in history {
        if let Some(m) = seen.get_mut(t as usize) {
            *m = false;
        }
    }
}

/// HF's `NoRepeatNGramLogitsProcessor`: bans every token that would complete an n-gram
/// already present in `history`.
pub fn ban_repeated_ngrams(logits: &mut [f32], history: &[u32], n: usize) {
    // With fewer than n tokens there is no n-gram to repeat (and `history.len() - n` below
    // would underflow when `history.len() + 1 == n`).
    if n == 0 || history.len() < n {
        return;
    }
    let prefix = &history[history.len() + 1 - n..];
    for start in 0..=(history.len() - n) {
        if &history[start..start + n - 1] == prefix {
            let banned = history[start + n - 1] as usize;
            if banned < logits.len() {
                logits[banned] = f32::NEG_INFINITY;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(p: SamplingParams) -> Sampler {
        Sampler::new(p, 7).unwrap()
    }

    fn draws(p: SamplingParams, logits: &[f32], n: usize) -> Vec<u32> {
        let mut s = sampler(p);
        (0..n).map(|_| s.sample(&mut logits.to_vec(), &[])).collect()
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(draws(SamplingParams::greedy(), &[1.0, 3.0, 3.0, 0.0], 3), vec![1, 1, 1]);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let p = SamplingParams { temperature: 1.5, top_k: Some(1), ..Default::default() };
        assert_eq!(draws(p, &[0.0, 0.1, 2.0, 1.9], 50), vec![2; 50]);
    }

    #[test]
    fn top_k_keeps_exactly_the_k_best() {
        let p = SamplingParams { temperature: 1.0, top_k: Some(2), ..Default::default() };
        let got = draws(p, &[5.0, 0.0, 5.0, 4.9, -1.0], 400);
        assert!(got.iter().all(|&t| t == 0 || t == 2), "{got:?}");
        assert!(got.contains(&0) && got.contains(&2));
    }

    #[test]
    fn top_k_keeps_ties_with_the_kth_value() {
        let p = SamplingParams { temperature: 1.0, top_k: Some(2), ..Default::default() };
        let got = draws(p, &[3.0, 1.0, 1.0, 0.0], 600);
        assert!(got.iter().all(|&t| t <= 2), "{got:?}");
        assert!(got.contains(&1) && got.contains(&2), "tied k-th tokens are both kept");
    }

    #[test]
    fn top_p_keeps_the_smallest_nucleus() {
        // probabilities 0.5, 0.3, 0.15, 0.05 (as logits of their logs)
        let logits: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        let p = SamplingParams { temperature: 1.0, top_k: None, top_p: Some(0.75), ..Default::default() };
        let got = draws(p, &logits, 500);
        // mass above token 1 is 0.5 < 0.75 → kept; above token 2 is 0.8 ≥ 0.75 → dropped
        assert!(got.iter().all(|&t| t <= 1), "{got:?}");
        assert!(got.contains(&0) && got.contains(&1));
        let p = SamplingParams { temperature: 1.0, top_k: None, top_p: Some(0.5), ..Default::default() };
        assert_eq!(draws(p, &logits, 50), vec![0; 50]);
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let logits: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        // 0.5 × 0.5 = 0.25: tokens 0 (0.5) and 1 (0.3) survive
        let p = SamplingParams { temperature: 1.0, top_k: None, min_p: Some(0.5), ..Default::default() };
        let got = draws(p, &logits, 500);
        assert!(got.iter().all(|&t| t <= 1) && got.contains(&1), "{got:?}");
    }

    #[test]
    fn repetition_penalty_is_sign_aware() {
        let mut l = vec![2.0, -2.0, 1.0];
        apply_repetition_penalty(&mut l, &[0, 1, 1], 2.0);
        assert_eq!(l, vec![1.0, -4.0, 1.0]);
        // greedy with a penalty switches away from a repeated token
        let mut s = sampler(SamplingParams { repetition_penalty: 2.0, ..SamplingParams::greedy() });
        assert_eq!(s.sample(&mut [2.0, 1.5], &[0]), 1);
    }

    #[test]
    fn repeated_calls_reuse_clean_scratch() {
        // the penalty's `seen` scratch must be reset between calls: token 1 is penalised only
        // in the second call, token 0 only in the first
        let mut s = sampler(SamplingParams { repetition_penalty: 2.0, ..SamplingParams::greedy() });
        assert_eq!(s.sample(&mut [2.0, 1.5], &[0, 0]), 1);
        assert_eq!(s.sample(&mut [1.4, 2.0], &[1]), 0);
        assert_eq!(s.sample(&mut [2.0, 1.5], &[]), 0);
    }

    #[test]
    fn no_repeat_ngram_bans_completions() {
        let mut l = vec![0.0; 6];
        // history 1 2 3 1 2 → the 3-gram (1, 2, 3) exists, so 3 is banned after (1, 2)
        ban_repeated_ngrams(&mut l, &[1, 2, 3, 1, 2], 3);
        assert_eq!(l[3], f32::NEG_INFINITY);
        assert!(l.iter().enumerate().all(|(i, &v)| i == 3 || v == 0.0));
        let mut s = sampler(SamplingParams { no_repeat_ngram_size: 2, ..SamplingParams::greedy() });
        // (4, 5) occurred; after 4 the best token 5 is banned → next best 0
        assert_eq!(s.sample(&mut [1.0, 0.0, 0.0, 0.0, 0.0, 9.0], &[4, 5, 4]), 0);
    }

    #[test]
    fn same_seed_same_draws_and_different_seeds_differ() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let p = SamplingParams { temperature: 1.0, top_k: None, ..Default::default() };
        let run = |seed| {
            let mut s = Sampler::new(p, seed).unwrap();
            (0..64).map(|_| s.sample(&mut logits.clone(), &[])).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn vanishing_temperatures_keep_the_argmax() {
        // 1/T overflows f32 (1e-40 is subnormal: 1/T is inf); the draw must be the argmax, not
        // one of the overflowed candidates
        let logits = [3.0f32, 9.5, -2.0, 9.25, 0.0, 9.0];
        for t in [1e-38f32, 1e-40, f32::MIN_POSITIVE, 1e-45] {
            let p = SamplingParams { temperature: t, top_k: None, ..Default::default() };
            assert_eq!(draws(p, &logits, 20), vec![1; 20], "temperature {t:e}");
            let p = SamplingParams { temperature: t, top_k: Some(3), top_p: Some(0.9), ..Default::default() };
            assert_eq!(draws(p, &logits, 20), vec![1; 20], "temperature {t:e} with top-k/top-p");
        }
        // an ordinary temperature still samples (the plain path)
        let p = SamplingParams { temperature: 1.0, top_k: None, ..Default::default() };
        let got = draws(p, &[0.0, 0.1, 0.2], 200);
        assert!(got.contains(&0) && got.contains(&1) && got.contains(&2));
    }

    #[test]
    fn invalid_settings_are_errors() {
        let bad = [
            SamplingParams { temperature: -1.0, ..Default::default() },
            SamplingParams { temperature: f32::NAN, ..Default::default() },
            SamplingParams { top_k: Some(0), ..Default::default() },
            SamplingParams { top_p: Some(0.0), ..Default::default() },
            SamplingParams { top_p: Some(1.5), ..Default::default() },
            SamplingParams { top_p: Some(f32::NAN), ..Default::default() },
            SamplingParams { min_p: Some(-0.1), ..Default::default() },
            SamplingParams { min_p: Some(-3.0), ..Default::default() },
            SamplingParams { min_p: Some(f32::NAN), ..Default::default() },
            SamplingParams { temperature: f32::INFINITY, ..Default::default() },
            SamplingParams { repetition_penalty: 0.0, ..Default::default() },
        ];
        for p in bad {
            assert!(matches!(Sampler::new(p, 0), Err(Error::InvalidArgument { .. })), "{p:?}");
        }
    }
}
