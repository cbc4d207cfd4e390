//! Log-probabilities of target tokens and token-weighted loss accumulation.
//!
//! Numerics: a row of logits (f32, length V) is reduced with the max subtracted,
//! `exp` evaluated in f32 and the sum accumulated in f64 (sixteen f64 lanes); the
//! negative log-likelihood `lse(row) − row[target]` is formed in f64. Losses are
//! summed in f64 and averaged only once, over all scored tokens.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::kernels::simd::{simd_level, SimdLevel};

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
///
/// `exp` is a Cephes-style polynomial (range reduction by `ln 2`, degree-6
/// polynomial, max relative error ≈ 1e-7 on `[−87, 0]`) written so that it
/// vectorises; it is compiled for AVX-512, AVX2+FMA and the baseline and the
/// widest supported version is chosen at run time.
pub fn logsumexp_f64(row: &[f32]) -> f64 {
    match simd_level() {
        // SAFETY: the level was detected on this CPU.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { x86::lse_avx512(row) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { x86::lse_avx2(row) },
        _ => lse_generic::<false>(row),
    }
}

/// Naive oracle for [`logsumexp_f64`]: everything in f64 with `f64::exp`.
pub fn logsumexp_naive(row: &[f32]) -> f64 {
    let m = row.iter().map(|&v| v as f64).fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() || row.iter().any(|v| v.is_nan()) {
        return if row.iter().any(|v| v.is_nan()) { f64::NAN } else { m };
    }
    m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln()
}

const LANES: usize = 16;

/// `e^x` for `x ≤ 0` (inputs below −87.3 give ≈ 1e-38 instead of 0; harmless in a
/// sum that contains `e^0 = 1`).
#[inline(always)]
fn exp_nonpos<const FMA: bool>(x: f32) -> f32 {
    let fma = |a: f32, b: f32, c: f32| if FMA { a.mul_add(b, c) } else { a * b + c };
    let x = if x < -87.33654 { -87.33654 } else { x };
    // n = round(x / ln 2) by the 1.5·2^23 trick (no rounding instruction needed)
    let n = fma(x, std::f32::consts::LOG2_E, 12_582_912.0) - 12_582_912.0;
    let r = fma(n, -0.693_359_4, x);
    let r = fma(n, 2.121_944_4e-4, r);
    let mut p = 1.987_569_1e-4f32;
    p = fma(p, r, 1.398_199_9e-3);
    p = fma(p, r, 8.333_452e-3);
    p = fma(p, r, 4.166_579_6e-2);
    p = fma(p, r, 1.666_666_5e-1);
    p = fma(p, r, 0.5);
    let e = fma(p * r, r, r) + 1.0;
    e * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

#[inline(always)]
fn lse_generic<const FMA: bool>(row: &[f32]) -> f64 {
    // pass 1: max (NaN-ignoring lanes) and a NaN flag
    let mut mx = [f32::NEG_INFINITY; LANES];
    let mut nan = [0u32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            mx[i] = if c[i] > mx[i] { c[i] } else { mx[i] };
            nan[i] |= c[i].is_nan() as u32;
        }
    }
    let mut max = mx.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut has_nan = nan.iter().any(|&b| b != 0);
    for &v in chunks.remainder() {
        max = max.max(v);
        has_nan |= v.is_nan();
    }
    if has_nan {
        return f64::NAN;
    }
    if !max.is_finite() {
        return max as f64; // all −inf → −inf; any +inf → +inf
    }
    // pass 2: Σ exp(x − max), f32 exp, f64 lanes
    let mut acc = [0f64; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            acc[i] += exp_nonpos::<FMA>(c[i] - max) as f64;
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| exp_nonpos::<FMA>(v - max) as f64).sum();
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            acc[i] += acc[i + w];
        }
    }
    max as f64 + (acc[0] + tail).ln()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn lse_avx512(row: &[f32]) -> f64 {
        super::lse_generic::<true>(row)
    }
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn lse_avx2(row: &[f32]) -> f64 {
        super::lse_generic::<true>(row)
    }
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

/// Text-normalised metrics, as lm-evaluation-harness reports them for its perplexity tasks.
///
/// `word_perplexity = exp(Σ NLL / words)`, `byte_perplexity = exp(Σ NLL / bytes)`,
/// `bits_per_byte = Σ NLL / bytes / ln 2`, where `bytes` is the UTF-8 length of the text and
/// `words` is `len(re.split(r"\s+", text))` in Python (whitespace runs + 1, with Python's
/// `str.isspace` as the whitespace class), the harness's default `count_words`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TextNormalized {
    /// UTF-8 bytes of the text.
    pub bytes: usize,
    /// Words, counted as the harness does.
    pub words: usize,
    /// `exp(Σ NLL / words)` (`+inf` on overflow).
    #[serde(with = "super::summary::float_or_inf")]
    pub word_perplexity: f64,
    /// `exp(Σ NLL / bytes)` (`+inf` on overflow).
    #[serde(with = "super::summary::float_or_inf")]
    pub byte_perplexity: f64,
    /// `Σ NLL / bytes / ln 2`.
    #[serde(with = "super::summary::float_or_inf")]
    pub bits_per_byte: f64,
}

/// Words of `text` as Python's `len(re.split(r"\s+", text))` counts them: one more than the
/// number of maximal whitespace runs (so leading or trailing whitespace adds an empty "word",
/// and the empty text has one).
///
/// ```
/// assert_eq!(gpt2::eval::stats::count_words_like_harness("to be  or\nnot"), 4);
/// assert_eq!(gpt2::eval::stats::count_words_like_harness(" x "), 3);
/// ```
pub fn count_words_like_harness(text: &str) -> usize {
    let mut counter = WordCounter::default();
    counter.push(text);
    counter.words()
}

/// [`count_words_like_harness`] over a text given in pieces (split anywhere between characters),
/// for texts streamed from a file.
///
/// ```
/// use gpt2::eval::stats::{count_words_like_harness, WordCounter};
/// let mut c = WordCounter::default();
/// for piece in ["two  wo", "rds \n", "\tand more"] {
///     c.push(piece);
/// }
/// assert_eq!(c.words(), count_words_like_harness("two  words \n\tand more"));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WordCounter {
    runs: usize,
    in_space: bool,
}

impl WordCounter {
    /// Counts the next piece of the text.
    pub fn push(&mut self, text: &str) {
        for c in text.chars() {
            let sp = super::hellaswag::py_space(c);
            if sp && !self.in_space {
                self.runs += 1;
            }
            self.in_space = sp;
        }
    }

    /// Words so far (`len(re.split(r"\s+", text))`).
    pub fn words(&self) -> usize {
        self.runs + 1
    }
}

impl LossStats {
    /// Normalises the summed NLL by the text it was scored on (see [`TextNormalized`]).
    ///
    /// The NLL sum covers the tokens that were scored (a sliding window scores every token
    /// after the first); pass the text those tokens came from.
    ///
    /// ```
    /// use gpt2::eval::LossStats;
    /// let s = LossStats { sum_nll: 10.0, tokens: 4 };
    /// let n = s.per_text("hello world").unwrap();
    /// assert_eq!((n.bytes, n.words), (11, 2));
    /// assert!((n.bits_per_byte - 10.0 / 11.0 / 2f64.ln()).abs() < 1e-12);
    /// assert!(s.per_text("").is_err());
    /// ```
    ///
    /// Errors: [`Error::EmptyInput`] for an empty text (no bytes to normalise by).
    pub fn per_text(&self, text: &str) -> Result<TextNormalized> {
        self.per_counts(text.len(), count_words_like_harness(text))
    }

    /// [`LossStats::per_text`] from the text's byte and word counts (for a streamed text: bytes
    /// read, [`WordCounter::words`]). Errors: [`Error::EmptyInput`] for zero bytes or words.
    pub fn per_counts(&self, bytes: usize, words: usize) -> Result<TextNormalized> {
        if bytes == 0 || words == 0 {
            return Err(Error::EmptyInput("cannot normalise a loss by an empty text".into()));
        }
        Ok(TextNormalized {
            bytes,
            words,
            word_perplexity: perplexity_from_loss(self.sum_nll / words as f64),
            byte_perplexity: perplexity_from_loss(self.sum_nll / bytes as f64),
            bits_per_byte: self.sum_nll / bytes as f64 / std::f64::consts::LN_2,
        })
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
        logsumexp_naive(row) - row[t] as f64
    }

    #[test]
    fn matches_f64_oracle_on_large_rows() {
        let mut rng = crate::rng::Rng::new(7);
        let row: Vec<f32> = (0..50257).map(|_| rng.normal() * 3.0).collect();
        for t in [0, 1, 777, 50256] {
            let d = (token_nll(&row, t) - naive_nll(&row, t)).abs();
            assert!(d < 1e-6, "t={t} diff {d}");
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
    fn vector_exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let got = exp_nonpos::<false>(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max((got - want).abs() / want);
            x += 0.000_37;
        }
        assert!(worst < 4e-7, "max rel err {worst:e}");
        assert_eq!(exp_nonpos::<false>(0.0), 1.0);
        assert!(exp_nonpos::<false>(f32::NEG_INFINITY) < 1e-37);
    }

    #[test]
    fn dispatched_logsumexp_matches_oracle_for_all_lengths() {
        let mut rng = crate::rng::Rng::new(3);
        for n in [1usize, 2, 15, 16, 17, 33, 1000, 50257] {
            let row: Vec<f32> = (0..n).map(|_| rng.normal() * 4.0).collect();
            let (a, b) = (logsumexp_f64(&row), logsumexp_naive(&row));
            assert!((a - b).abs() < 1e-6 * b.abs().max(1.0), "n={n}: {a} vs {b}");
            assert!((lse_generic::<false>(&row) - a).abs() < 1e-6 * b.abs().max(1.0), "baseline n={n}");
        }
        let mut row = vec![0f32; 40];
        row[33] = f32::NAN;
        assert!(logsumexp_f64(&row).is_nan());
        row[33] = f32::INFINITY;
        assert_eq!(logsumexp_f64(&row), f64::INFINITY);
        assert_eq!(logsumexp_f64(&[f32::NEG_INFINITY; 20]), f64::NEG_INFINITY);
    }

    #[test]
    fn merging_is_token_weighted() {
        let parts = [LossStats::from_nlls(&[2.0; 10]), LossStats::from_nlls(&[5.0])];
        let total: LossStats = parts.iter().copied().sum();
        assert_eq!(total.tokens, 11);
        assert!((total.mean().unwrap() - 25.0 / 11.0).abs() < 1e-12);
    }

    #[test]
    fn words_and_bytes_match_python() {
        // (text, len(re.split(r"\s+", text)), len(text.encode("utf-8"))) from CPython 3.11
        let cases: [(&str, usize, usize); 6] = [
            ("", 1, 0),
            ("one", 1, 3),
            (" lead and trail ", 5, 16),
            ("a  b\u{a0}c\u{2028}d\u{1c}e\u{200b}f", 5, 17),
            ("tab\tnew\nline\r\n", 4, 14),
            ("ü €uro 😀", 3, 14),
        ];
        for (text, words, bytes) in cases {
            assert_eq!(count_words_like_harness(text), words, "{text:?}");
            assert_eq!(text.len(), bytes, "{text:?}");
        }
        let s = LossStats { sum_nll: 30.0, tokens: 9 };
        let n = s.per_text(" lead and trail ").unwrap();
        assert!((n.word_perplexity - 6f64.exp()).abs() < 1e-9 * 6f64.exp());
        assert!((n.byte_perplexity - (30.0f64 / 16.0).exp()).abs() < 1e-12);
        assert!((n.bits_per_byte - 30.0 / 16.0 / 2f64.ln()).abs() < 1e-12);
        assert!(matches!(s.per_text(""), Err(Error::EmptyInput(_))));
    }
}
