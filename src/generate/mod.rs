//! Text generation: prefill + KV-cached decode, sampling, beam search, stop conditions,
//! batching, streaming, log-probabilities and timing.
//!
//! - [`sampler`]: [`SamplingParams`] (greedy, temperature, top-k, top-p, min-p, repetition
//!   penalty, no-repeat-n-gram) and the seeded [`Sampler`].
//! - [`beam`]: beam search with transformers' scoring and stopping rules.
//! - [`scores`]: per-token log-probabilities with top-N alternatives, sequence summaries.
//! - [`processor`]: the [`LogitsProcessor`] hook for user code.
//! - [`stream`]: [`TextStream`], UTF-8-safe incremental decoding.
//! - [`generate`] / [`generate_batch`] / [`generate_with`]: the decode loop. Prompts of different
//!   lengths are left-padded into one batch with an attention mask; the model derives position
//!   ids from the mask, so a padded batch gives each prompt exactly its alone-result (greedy) —
//!   the classic GPT-2 batching bug cannot happen. The prompt is prefilled in one forward call,
//!   then each step feeds one token per row through the caller-owned-style [`KvCache`] (created
//!   per call here) with [`LogitsMode::Last`], so a step costs one pass over the weights, linear
//!   in context.
//!
//! ```
//! use gpt2::generate::{generate, GenerateConfig};
//! use gpt2::{Config, Gpt2, Tokenizer};
//! let tok = Tokenizer::gpt2().unwrap();
//! let model = Gpt2::new_random(Config::new(2, 2, 16, 64, tok.vocab_size()), 0).unwrap();
//! let cfg = GenerateConfig::greedy().max_new_tokens(5).logprobs(2);
//! let out = generate(&model, &tok, &tok.encode("Hello"), &cfg, None).unwrap();
//! assert!(out.samples[0].token_ids.len() <= 5);
//! let lp = out.samples[0].logprob_summary().unwrap();
//! println!("{} ({:.1} tokens/s, perplexity {:.1})", out.samples[0].text, out.timing.tokens_per_second, lp.perplexity);
//! ```

pub mod beam;
pub mod processor;
pub mod sampler;
pub mod scores;
pub mod stream;

use std::time::Instant;

use ndarray::Array2;
use serde::{Deserialize, Serialize};

pub use processor::{BanTokens, LogitBias, LogitsProcessor};
pub use sampler::{Sampler, SamplingParams};
pub use scores::{SequenceLogprob, TokenLogprob, TopLogprob};
pub use stream::TextStream;

use crate::error::{Error, Result};
use crate::model::{ForwardInput, ForwardOptions, Gpt2, KvCache, LogitsMode};
use crate::rng::Rng;
use crate::tokenizer::Tokenizer;

/// GPT-2's `<|endoftext|>`.
pub const EOT: u32 = 50256;

/// When beam search stops, as transformers' `early_stopping` (`False` / `True` / `"never"`).
///
/// Serde: `false`, `true` or `"never"`, like transformers' `generation_config.json`.
///
/// ```
/// use gpt2::generate::EarlyStopping;
/// assert_eq!(serde_json::to_string(&EarlyStopping::Never).unwrap(), r#""never""#);
/// assert_eq!(serde_json::from_str::<EarlyStopping>("true").unwrap(), EarlyStopping::WhenFull);
/// assert_eq!(EarlyStopping::from(false), EarlyStopping::Heuristic);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    /// transformers' `False` (its default): stop a prompt once `num_beams` hypotheses are finished
    /// and the best running beam, length-normalised at its current length, cannot beat the worst
    /// of them.
    #[default]
    Heuristic,
    /// transformers' `True`: stop a prompt as soon as `num_beams` hypotheses are finished.
    WhenFull,
    /// transformers' `"never"`: as `Heuristic`, but with a positive length penalty the best
    /// running beam is normalised at the longest possible length (canonical beam search).
    Never,
}

impl From<bool> for EarlyStopping {
    fn from(b: bool) -> Self {
        if b {
            EarlyStopping::WhenFull
        } else {
            EarlyStopping::Heuristic
        }
    }
}

impl Serialize for EarlyStopping {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            EarlyStopping::Heuristic => s.serialize_bool(false),
            EarlyStopping::WhenFull => s.serialize_bool(true),
            EarlyStopping::Never => s.serialize_str("never"),
        }
    }
}

impl<'de> Deserialize<'de> for EarlyStopping {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(b) => Ok(b.into()),
            Raw::Str(s) if s == "never" => Ok(EarlyStopping::Never),
            Raw::Str(s) => {
                Err(serde::de::Error::custom(format!("early_stopping: expected true, false or \"never\", got {s:?}")))
            }
        }
    }
}

/// Settings of one generation call.
///
/// Build it with the constructors that say what they do — [`GenerateConfig::greedy`],
/// [`GenerateConfig::sampling`], [`GenerateConfig::beam`] — and the builder methods; each
/// builder method sets only its own setting. [`Default`] samples at temperature 0.8 with top-k 40
/// (not transformers' greedy default).
///
/// Serde: `sampling` is required (so no truncation is ever hidden); every other field defaults
/// to [`Default`]'s value.
///
/// ```
/// use gpt2::generate::{EarlyStopping, GenerateConfig};
/// let cfg = GenerateConfig::sampling(0.7).top_p(0.9).max_new_tokens(40).seed(7);
/// assert_eq!((cfg.sampling.top_k, cfg.sampling.top_p), (None, Some(0.9)));
/// let beams = GenerateConfig::beam(4).length_penalty(0.8).early_stopping(EarlyStopping::WhenFull).num_samples(2);
/// let json = serde_json::to_string(&beams).unwrap();
/// assert_eq!(serde_json::from_str::<GenerateConfig>(&json).unwrap(), beams);
/// let g: GenerateConfig = serde_json::from_str(r#"{"sampling": {"temperature": 0}, "num_beams": 2}"#).unwrap();
/// assert_eq!(g, GenerateConfig::beam(2));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateConfig {
    /// Tokens to generate at most per sample (≥ 1).
    #[serde(default = "defaults::max_new_tokens")]
    pub max_new_tokens: usize,
    /// How tokens are chosen (beam search needs [`SamplingParams::greedy`], optionally with the
    /// repetition penalty / no-repeat-n-gram).
    pub sampling: SamplingParams,
    /// Seed of the random streams (sample `i` draws from `Rng::new(seed).fork(i)`, whatever else
    /// is in the batch).
    #[serde(default = "defaults::seed")]
    pub seed: u64,
    /// Samples per prompt (≥ 1). Under beam search: the number of best finished hypotheses
    /// returned per prompt (transformers' `num_return_sequences`, ≤ `num_beams`).
    #[serde(default = "defaults::one", alias = "num_return_sequences")]
    pub num_samples: usize,
    /// Beams per prompt (`1`: no beam search).
    #[serde(default = "defaults::one")]
    pub num_beams: usize,
    /// Beam search: a finished hypothesis scores `sum of log-probs / generated_len^length_penalty`
    /// (generated length counts the end token). Default 1.
    #[serde(default = "defaults::length_penalty")]
    pub length_penalty: f32,
    /// Beam search: when a prompt stops (transformers' `early_stopping`).
    #[serde(default)]
    pub early_stopping: EarlyStopping,
    /// Per-token log-probabilities with this many top alternatives each (`Some(0)`: the
    /// chosen token's only); `None` (default): none are computed.
    #[serde(default)]
    pub logprobs: Option<usize>,
    /// Stop a sample when it produces this token (`None`: never). Default `<|endoftext|>`.
    #[serde(default = "defaults::eos")]
    pub eos_token_id: Option<u32>,
    /// More token ids that stop a sample.
    #[serde(default)]
    pub stop_token_ids: Vec<u32>,
    /// Strings that stop a sample; its text is cut right after the string (not with beams).
    #[serde(default)]
    pub stop_strings: Vec<String>,
}

mod defaults {
    pub fn max_new_tokens() -> usize {
        100
    }
    pub fn seed() -> u64 {
        1337
    }
    pub fn one() -> usize {
        1
    }
    pub fn length_penalty() -> f32 {
        1.0
    }
    pub fn eos() -> Option<u32> {
        Some(super::EOT)
    }
}

impl Default for GenerateConfig {
    /// 100 new tokens, temperature 0.8 with top-k 40, seed 1337, one sample, stop at
    /// `<|endoftext|>`, no beams, no log-probabilities.
    fn default() -> Self {
        GenerateConfig {
            max_new_tokens: defaults::max_new_tokens(),
            sampling: SamplingParams::default(),
            seed: defaults::seed(),
            num_samples: 1,
            num_beams: 1,
            length_penalty: defaults::length_penalty(),
            early_stopping: EarlyStopping::Heuristic,
            logprobs: None,
            eos_token_id: defaults::eos(),
            stop_token_ids: Vec::new(),
            stop_strings: Vec::new(),
        }
    }
}

impl GenerateConfig {
    /// Greedy decoding (transformers' default), everything else as [`Default`].
    ///
    /// ```
    /// assert!(gpt2::generate::GenerateConfig::greedy().sampling.is_greedy());
    /// ```
    pub fn greedy() -> Self {
        GenerateConfig { sampling: SamplingParams::greedy(), ..Default::default() }
    }

    /// Sampling at `temperature` with no truncation ([`SamplingParams::sampling`]).
    ///
    /// ```
    /// let cfg = gpt2::generate::GenerateConfig::sampling(0.9).top_k(50);
    /// assert_eq!(cfg.sampling.top_k, Some(50));
    /// ```
    pub fn sampling(temperature: f32) -> Self {
        GenerateConfig { sampling: SamplingParams::sampling(temperature), ..Default::default() }
    }

    /// Beam search with `num_beams` beams (greedy scoring), everything else as [`Default`].
    ///
    /// ```
    /// let cfg = gpt2::generate::GenerateConfig::beam(4);
    /// assert_eq!((cfg.num_beams, cfg.num_samples), (4, 1));
    /// ```
    pub fn beam(num_beams: usize) -> Self {
        GenerateConfig { num_beams, ..Self::greedy() }
    }

    /// Sets `sampling.top_k`.
    pub fn top_k(mut self, k: usize) -> Self {
        self.sampling = self.sampling.top_k(k);
        self
    }

    /// Sets `sampling.top_p`.
    pub fn top_p(mut self, p: f32) -> Self {
        self.sampling = self.sampling.top_p(p);
        self
    }

    /// Sets `sampling.min_p`.
    pub fn min_p(mut self, p: f32) -> Self {
        self.sampling = self.sampling.min_p(p);
        self
    }

    /// Sets [`max_new_tokens`](Self::max_new_tokens).
    pub fn max_new_tokens(mut self, n: usize) -> Self {
        self.max_new_tokens = n;
        self
    }

    /// Sets [`seed`](Self::seed).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets [`num_samples`](Self::num_samples).
    pub fn num_samples(mut self, n: usize) -> Self {
        self.num_samples = n;
        self
    }

    /// Sets [`num_beams`](Self::num_beams).
    pub fn num_beams(mut self, n: usize) -> Self {
        self.num_beams = n;
        self
    }

    /// Sets [`length_penalty`](Self::length_penalty).
    pub fn length_penalty(mut self, p: f32) -> Self {
        self.length_penalty = p;
        self
    }

    /// Sets [`early_stopping`](Self::early_stopping).
    pub fn early_stopping(mut self, e: impl Into<EarlyStopping>) -> Self {
        self.early_stopping = e.into();
        self
    }

    /// Turns on per-token log-probabilities with `top_n` alternatives each.
    pub fn logprobs(mut self, top_n: usize) -> Self {
        self.logprobs = Some(top_n);
        self
    }

    /// Sets [`eos_token_id`](Self::eos_token_id).
    pub fn eos_token_id(mut self, eos: Option<u32>) -> Self {
        self.eos_token_id = eos;
        self
    }

    /// Checks every setting. Errors: [`Error::InvalidArgument`].
    pub fn validate(&self) -> Result<()> {
        self.sampling.validate()?;
        if self.max_new_tokens == 0 {
            return Err(Error::arg("max_new_tokens", "must be at least 1"));
        }
        if self.num_samples == 0 {
            return Err(Error::arg("num_samples", "must be at least 1"));
        }
        if self.stop_strings.iter().any(|s| s.is_empty()) {
            return Err(Error::arg("stop_strings", "a stop string is empty"));
        }
        if self.num_beams == 0 {
            return Err(Error::arg("num_beams", "must be at least 1 (1 = no beam search)"));
        }
        if !self.length_penalty.is_finite() {
            return Err(Error::arg("length_penalty", format!("{} must be finite", self.length_penalty)));
        }
        if self.num_beams > 1 {
            if !self.sampling.is_greedy() {
                return Err(Error::arg(
                    "sampling",
                    "beam search scores greedily: use SamplingParams::greedy() (beam sampling is not supported)",
                ));
            }
            if self.num_samples > self.num_beams {
                return Err(Error::arg(
                    "num_samples",
                    format!(
                        "{} returned sequences need at least as many beams (num_beams {})",
                        self.num_samples, self.num_beams
                    ),
                ));
            }
            if !self.stop_strings.is_empty() {
                return Err(Error::arg("stop_strings", "stop strings are not supported with beam search"));
            }
        }
        Ok(())
    }
}

/// Why a sample ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// `max_new_tokens` reached.
    Length,
    /// The end-of-text token (included in `token_ids`, not in `text`).
    Eos,
    /// A stop token id (included in `token_ids`, not in `text`).
    StopToken,
    /// A stop string (the text ends with it).
    StopString,
}

/// One generated continuation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Index of the prompt this sample continues.
    pub prompt_index: usize,
    /// New token ids (without the prompt).
    pub token_ids: Vec<u32>,
    /// The new text (bytes decoded with U+FFFD for invalid UTF-8; cut after a stop string).
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// One entry per token of `token_ids` when [`GenerateConfig::logprobs`] is set.
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// Beam search: the hypothesis' score, `sum of log-probs / len^length_penalty`
    /// (transformers' `sequences_scores`); `None` otherwise.
    pub score: Option<f32>,
}

impl Sample {
    /// Sum, mean and perplexity of the token log-probabilities (`None` without logprobs or
    /// without tokens).
    pub fn logprob_summary(&self) -> Option<SequenceLogprob> {
        SequenceLogprob::of(self.logprobs.as_ref()?.iter().map(|t| t.logprob))
    }
}

/// Wall-clock timing of a call (monotonic clock).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Timing {
    /// Prompt tokens (all prompts, without padding).
    pub prompt_tokens: usize,
    /// New tokens over all samples.
    pub new_tokens: usize,
    /// Decode steps run (forward calls after the prefill).
    pub decode_steps: usize,
    /// From the call to the first sampled token of every row (prefill + first sample), ms.
    pub time_to_first_token_ms: f64,
    /// Whole call, seconds.
    pub total_seconds: f64,
    /// `new_tokens / total_seconds`.
    pub tokens_per_second: f64,
    /// Mean latency of one decode step (one new token per row), ms; the prefill is excluded.
    pub ms_per_token: f64,
}

/// Result of [`generate`] / [`generate_batch`] / [`generate_with`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generation {
    /// Samples, prompt-major: prompt 0's `num_samples`, then prompt 1's, … (beam search: each
    /// prompt's hypotheses best first).
    pub samples: Vec<Sample>,
    /// Timing of the whole call.
    pub timing: Timing,
}

/// Streaming callback: `(sample index, newly completed text)`.
pub type OnText<'a> = &'a mut dyn FnMut(usize, &str);

/// One generated token, as the token stream delivers it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenEvent<'a> {
    /// Sample index (as in [`Generation::samples`]).
    pub sample: usize,
    /// The token id.
    pub id: u32,
    /// The text this token completes: only whole UTF-8 characters (a character split across
    /// tokens arrives with its last token), empty for a stop token; the pieces of a sample
    /// concatenate to its final `text`.
    pub text: &'a str,
    /// Its log-probability (see [`scores`]) when [`GenerateConfig::logprobs`] is set.
    pub logprob: Option<f32>,
}

/// Token-stream callback.
pub type OnToken<'a> = &'a mut dyn FnMut(&TokenEvent<'_>);

/// Optional user code run during [`generate_with`].
#[derive(Default)]
pub struct Hooks<'a> {
    /// Called for every generated token, in order (not with beam search, whose hypotheses are
    /// only known at the end).
    pub on_token: Option<OnToken<'a>>,
    /// Edits each score row before a token is chosen (see [`processor`] for the order).
    pub processor: Option<&'a mut dyn LogitsProcessor>,
}

/// Generates `cfg.num_samples` continuations of one prompt. `on_text` receives text as it is
/// produced (complete UTF-8 only); the pieces of a sample concatenate to its final `text`.
/// Built on the token stream of [`generate_with`].
///
/// Errors: [`Error::InvalidArgument`] (settings), [`Error::EmptyInput`] (empty prompt),
/// [`Error::SequenceTooLong`] (prompt + `max_new_tokens` > `n_positions`, checked before any
/// work), [`Error::TokenOutOfVocab`]; [`Error::InvalidArgument`] also when `num_samples` is so
/// large that the KV cache would exceed the address space (a cache that fits the address space
/// but not the machine's memory fails like any other allocation); [`Error::NonFinite`] when a
/// logit about to be sampled is NaN or infinite (broken weights), naming the decode step,
/// sample and token, instead of a silent empty or cut-off text.
///
/// Only ids the tokenizer knows are sampled: a model whose vocabulary is padded past the
/// tokenizer's (build-nanogpt's 50304 for GPT-2's 50257) never produces a padding id.
///
/// ```
/// use gpt2::generate::{generate, GenerateConfig, SamplingParams};
/// use gpt2::{Config, Gpt2, Tokenizer};
/// let tok = Tokenizer::gpt2()?;
/// let model = Gpt2::new_random(Config::new(1, 2, 16, 32, tok.vocab_size()), 0)?;
/// let cfg = GenerateConfig { max_new_tokens: 5, sampling: SamplingParams::greedy(), ..Default::default() };
/// let out = generate(&model, &tok, &tok.encode("Hello"), &cfg, None)?;
/// let sample = &out.samples[0];
/// assert!(!sample.token_ids.is_empty() && sample.token_ids.len() <= 5);
/// // greedy decoding is deterministic
/// assert_eq!(generate(&model, &tok, &tok.encode("Hello"), &cfg, None)?.samples[0].token_ids, sample.token_ids);
/// # Ok::<(), gpt2::Error>(())
/// ```
pub fn generate(
    model: &Gpt2,
    tok: &Tokenizer,
    prompt: &[u32],
    cfg: &GenerateConfig,
    on_text: Option<OnText<'_>>,
) -> Result<Generation> {
    generate_batch(model, tok, &[prompt], cfg, on_text)
}

/// Generates for several prompts at once (left-padded batch, one decode step for all rows).
/// Sample `j·num_samples + i` continues prompt `j`; with the same seed it equals what
/// [`generate`] gives for prompt `j` alone.
pub fn generate_batch<P: AsRef<[u32]>>(
    model: &Gpt2,
    tok: &Tokenizer,
    prompts: &[P],
    cfg: &GenerateConfig,
    on_text: Option<OnText<'_>>,
) -> Result<Generation> {
    match on_text {
        Some(cb) => {
            let mut on_token = |e: &TokenEvent<'_>| {
                if !e.text.is_empty() {
                    cb(e.sample, e.text)
                }
            };
            generate_with(model, tok, prompts, cfg, Hooks { on_token: Some(&mut on_token), processor: None })
        }
        None => generate_with(model, tok, prompts, cfg, Hooks::default()),
    }
}

/// [`generate_batch`] with [`Hooks`]: a token stream and a logits processor. With
/// `cfg.num_beams > 1` it runs beam search ([`beam`]).
///
/// ```
/// use gpt2::generate::{generate_with, GenerateConfig, Hooks, TokenEvent};
/// use gpt2::{Config, Gpt2, Tokenizer};
/// let tok = Tokenizer::gpt2().unwrap();
/// let model = Gpt2::new_random(Config::new(2, 2, 16, 64, tok.vocab_size()), 0).unwrap();
/// let mut seen = Vec::new();
/// let mut on_token = |e: &TokenEvent| seen.push((e.id, e.text.to_string(), e.logprob.unwrap()));
/// let cfg = GenerateConfig::sampling(1.0).max_new_tokens(6).logprobs(0);
/// let out = generate_with(&model, &tok, &[tok.encode("Hi")], &cfg, Hooks { on_token: Some(&mut on_token), ..Default::default() }).unwrap();
/// let s = &out.samples[0];
/// assert_eq!(seen.iter().map(|t| t.0).collect::<Vec<_>>(), s.token_ids);
/// assert_eq!(seen.iter().map(|t| t.1.as_str()).collect::<String>(), s.text);
/// assert_eq!(seen.iter().map(|t| t.2).collect::<Vec<_>>(), s.logprobs.as_ref().unwrap().iter().map(|t| t.logprob).collect::<Vec<_>>());
/// ```
///
/// Errors: as [`generate`]; [`Error::InvalidArgument`] for a token stream with beam search.
pub fn generate_with<P: AsRef<[u32]>>(
    model: &Gpt2,
    tok: &Tokenizer,
    prompts: &[P],
    cfg: &GenerateConfig,
    hooks: Hooks<'_>,
) -> Result<Generation> {
    let prompts: Vec<&[u32]> = prompts.iter().map(|p| p.as_ref()).collect();
    if cfg.num_beams > 1 {
        if hooks.on_token.is_some() {
            return Err(Error::arg("on_token", "beam search has no token stream (hypotheses are known at the end)"));
        }
        return beam::beam_search(model, tok, &prompts, cfg, hooks.processor);
    }
    generate_impl(model, tok, &prompts, cfg, hooks)
}

/// Checks the prompts and the cache size; returns the longest prompt length.
pub(crate) fn check_prompts(
    model: &Gpt2,
    prompts: &[&[u32]],
    cfg: &GenerateConfig,
    rows_per_prompt: usize,
) -> Result<usize> {
    cfg.validate()?;
    if prompts.is_empty() {
        return Err(Error::EmptyInput("no prompt given".into()));
    }
    let n_pos = model.config().n_positions;
    let vocab = model.config().vocab_size;
    for (j, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(Error::EmptyInput(format!("prompt {j} is empty (encode at least one token)")));
        }
        if let Some((position, &token)) = p.iter().enumerate().find(|(_, &t)| t as usize >= vocab) {
            return Err(Error::TokenOutOfVocab { token, position, vocab_size: vocab });
        }
    }
    let t0 = prompts.iter().map(|p| p.len()).max().expect("non-empty");
    let total_len = t0.saturating_add(cfg.max_new_tokens);
    if total_len > n_pos {
        return Err(Error::SequenceTooLong { len: total_len, n_positions: n_pos });
    }
    let b = prompts
        .len()
        .checked_mul(rows_per_prompt)
        .ok_or_else(|| Error::arg("num_samples", format!("{rows_per_prompt} rows per prompt overflow the batch")))?;
    // Before any per-row allocation: rejects a batch whose cache cannot be addressed.
    let mc = model.config();
    KvCache::per_layer_len(mc.n_layer, mc.n_embd, b, t0 + cfg.max_new_tokens)?;
    Ok(t0)
}

/// Prefills each prompt once (left-padded batch) and copies its cache row and last logits to
/// `rows_per_prompt` rows, so time to first token does not grow with the number of rows.
/// Returns the cache and the `[prompts · rows_per_prompt, vocab]` logits.
pub(crate) fn prefill(
    model: &Gpt2,
    prompts: &[&[u32]],
    t0: usize,
    max_new_tokens: usize,
    rows_per_prompt: usize,
    pad: u32,
) -> Result<(KvCache, Vec<f32>)> {
    let vocab = model.config().vocab_size;
    let mut cache = KvCache::new(model.config(), prompts.len(), t0 + max_new_tokens)?;
    let mut tokens = Array2::from_elem((prompts.len(), t0), pad);
    let mut mask = Array2::from_elem((prompts.len(), t0), false);
    for (j, p) in prompts.iter().enumerate() {
        let off = t0 - p.len();
        for (k, &t) in p.iter().enumerate() {
            tokens[[j, off + k]] = t;
            mask[[j, off + k]] = true;
        }
    }
    let padded = mask.iter().any(|&m| !m);
    let opts = ForwardOptions { logits: LogitsMode::Last, ..Default::default() };
    let input = ForwardInput::new(tokens.view());
    let input = if padded { input.with_mask(mask.view()) } else { input };
    let first = model.forward(&input, Some(&mut cache), &opts)?.logits.expect("last-position logits");
    let ns = rows_per_prompt;
    if ns > 1 {
        cache = cache.repeat_rows(ns)?;
    }
    // `[b, vocab]` last-position logits, rewritten in place by every decode step.
    let mut logits = vec![0f32; prompts.len() * ns * vocab];
    for (r, row) in logits.chunks_exact_mut(vocab).enumerate() {
        row.copy_from_slice(first.slice(ndarray::s![r / ns, 0, ..]).as_slice().expect("contiguous"));
    }
    Ok((cache, logits))
}

/// Per-row decoding state.
struct Row {
    prompt_index: usize,
    sampler: Sampler,
    /// Prompt + generated ids (for the penalties).
    history: Vec<u32>,
    prompt_len: usize,
    /// Generated bytes so far.
    bytes: Vec<u8>,
    /// Bytes already sent to the stream.
    streamed: usize,
    stream: TextStream,
    finished: Option<FinishReason>,
    /// Where the text is cut (after a stop string).
    cut: Option<usize>,
    logprobs: Option<Vec<TokenLogprob>>,
}

fn generate_impl(
    model: &Gpt2,
    tok: &Tokenizer,
    prompts: &[&[u32]],
    cfg: &GenerateConfig,
    hooks: Hooks<'_>,
) -> Result<Generation> {
    let start = Instant::now();
    let Hooks { mut on_token, mut processor } = hooks;
    let t0 = check_prompts(model, prompts, cfg, cfg.num_samples)?;
    let vocab = model.config().vocab_size;
    let b = prompts.len() * cfg.num_samples;

    let base = Rng::new(cfg.seed);
    let mut rows: Vec<Row> = Vec::with_capacity(b);
    for (j, p) in prompts.iter().enumerate() {
        for i in 0..cfg.num_samples {
            let mut history = Vec::with_capacity(p.len() + cfg.max_new_tokens);
            history.extend_from_slice(p);
            rows.push(Row {
                prompt_index: j,
                sampler: Sampler::with_rng(cfg.sampling, base.fork(i as u64)),
                history,
                prompt_len: p.len(),
                bytes: Vec::new(),
                streamed: 0,
                stream: TextStream::new(),
                finished: None,
                cut: None,
                logprobs: cfg.logprobs.map(|_| Vec::with_capacity(cfg.max_new_tokens)),
            });
        }
    }
    let pad = cfg.eos_token_id.unwrap_or(0).min(vocab as u32 - 1);
    let (mut cache, mut logits) = prefill(model, prompts, t0, cfg.max_new_tokens, cfg.num_samples, pad)?;

    // Ids the tokenizer can decode: a padded vocabulary (build-nanogpt's 50304 > 50257) has
    // rows no text belongs to, which are never sampled (the sampler sees only this prefix).
    let sample_vocab = vocab.min(tok.vocab_size());
    let mut scratch = vec![0f32; sample_vocab];
    let mut next = vec![pad; b];
    let mut ttft = None;
    let mut steps = 0usize;
    for step in 0..cfg.max_new_tokens {
        for (r, row) in rows.iter_mut().enumerate() {
            if row.finished.is_some() {
                continue;
            }
            scratch.copy_from_slice(&logits[r * vocab..r * vocab + sample_vocab]);
            if let Some(i) = first_non_finite(&scratch) {
                return Err(Error::NonFinite {
                    step,
                    what: format!(
                        "logit of token {i} is {} (sample {r}, prompt {}); the model produces non-finite \
                         values (check its weights)",
                        scratch[i], row.prompt_index
                    ),
                });
            }
            let t = {
                let history = &row.history;
                let mut hook = processor.as_deref_mut().map(|p| move |l: &mut [f32]| p.process(r, history, l));
                let hook = hook.as_mut().map(|h| h as &mut dyn FnMut(&mut [f32]));
                row.sampler.sample_with(&mut scratch, history, hook, cfg.logprobs.is_some())
            };
            let logprob = match (cfg.logprobs, row.logprobs.as_mut()) {
                (Some(n), Some(lps)) => {
                    let lp = TokenLogprob::from_logits(&scratch, t, n);
                    let v = lp.logprob;
                    lps.push(lp);
                    Some(v)
                }
                _ => None,
            };
            row.history.push(t);
            next[r] = t;
            let stop_token = cfg.eos_token_id == Some(t) || cfg.stop_token_ids.contains(&t);
            if stop_token {
                row.finished =
                    Some(if cfg.eos_token_id == Some(t) { FinishReason::Eos } else { FinishReason::StopToken });
            } else {
                let before = row.bytes.len();
                row.bytes.extend_from_slice(&tok.decode_bytes(&[t])?);
                if let Some(cut) = find_stop(&row.bytes, before, &cfg.stop_strings) {
                    row.cut = Some(cut);
                    row.finished = Some(FinishReason::StopString);
                } else if step + 1 == cfg.max_new_tokens {
                    row.finished = Some(FinishReason::Length);
                }
            }
            if let Some(cb) = on_token.as_deref_mut() {
                let end = row.cut.unwrap_or(row.bytes.len()).max(row.streamed);
                let mut piece = row.stream.push(&row.bytes[row.streamed..end]);
                row.streamed = end;
                if row.finished.is_some() {
                    piece.push_str(&row.stream.finish());
                }
                cb(&TokenEvent { sample: r, id: t, text: &piece, logprob });
            }
        }
        if ttft.is_none() {
            ttft = Some(start.elapsed());
        }
        if rows.iter().all(|r| r.finished.is_some()) {
            break;
        }
        // Finished rows keep decoding their last token (their output is ignored).
        model.decode_step(&next, &mut cache, &mut logits)?;
        steps += 1;
    }
    let samples: Vec<Sample> = rows
        .into_iter()
        .map(|row| {
            let end = row.cut.unwrap_or(row.bytes.len());
            Sample {
                prompt_index: row.prompt_index,
                token_ids: row.history[row.prompt_len..].to_vec(),
                text: String::from_utf8_lossy(&row.bytes[..end]).into_owned(),
                finish_reason: row.finished.unwrap_or(FinishReason::Length),
                logprobs: row.logprobs,
                score: None,
            }
        })
        .collect();
    Ok(Generation { timing: timing(start, ttft, steps, prompts, &samples), samples })
}

/// The call's [`Timing`].
pub(crate) fn timing(
    start: Instant,
    ttft: Option<std::time::Duration>,
    steps: usize,
    prompts: &[&[u32]],
    samples: &[Sample],
) -> Timing {
    let total = start.elapsed();
    let ttft = ttft.unwrap_or(total);
    let new_tokens: usize = samples.iter().map(|s| s.token_ids.len()).sum();
    let total_s = total.as_secs_f64();
    Timing {
        prompt_tokens: prompts.iter().map(|p| p.len()).sum(),
        new_tokens,
        decode_steps: steps,
        time_to_first_token_ms: ttft.as_secs_f64() * 1e3,
        total_seconds: total_s,
        tokens_per_second: if total_s > 0.0 { new_tokens as f64 / total_s } else { 0.0 },
        ms_per_token: if steps > 0 { (total - ttft).as_secs_f64() * 1e3 / steps as f64 } else { 0.0 },
    }
}

/// Index of the first NaN or infinite value. The common all-finite case is one branch-free,
/// vectorisable pass (an OR over the exponent bits); the position is searched only on failure.
pub(crate) fn first_non_finite(xs: &[f32]) -> Option<usize> {
    const EXP: u32 = 0x7f80_0000;
    let any = xs.chunks(8).fold(false, |acc, c| acc | c.iter().fold(false, |a, x| a | (x.to_bits() & EXP == EXP)));
    if any {
        xs.iter().position(|x| !x.is_finite())
    } else {
        None
    }
}

/// The byte offset right after the first stop string that ends in the bytes added since `from`.
fn find_stop(bytes: &[u8], from: usize, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter_map(|s| {
            let s = s.as_bytes();
            let lo = from.saturating_sub(s.len() - 1);
            bytes[lo..].windows(s.len()).position(|w| w == s).map(|p| lo + p + s.len())
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    #[test]
    fn samples_share_one_prefill() {
        let tok = Tokenizer::gpt2().unwrap();
        let model = Gpt2::new_random(Config::nano(48, tok.vocab_size()), 3).unwrap();
        // a repeated cache decodes exactly like a cache prefilled with the copies
        let prompt = tok.encode("To be, or not to be");
        let t = prompt.len();
        let opts = ForwardOptions { logits: LogitsMode::Last, ..Default::default() };
        let mut one = KvCache::new(model.config(), 1, 32).unwrap();
        let x = Array2::from_shape_vec((1, t), prompt.clone()).unwrap();
        model.forward(&ForwardInput::new(x.view()), Some(&mut one), &opts).unwrap();
        let mut copied = one.repeat_rows(3).unwrap();
        let mut direct = KvCache::new(model.config(), 3, 32).unwrap();
        let x3 = Array2::from_shape_fn((3, t), |(_, k)| prompt[k]);
        model.forward(&ForwardInput::new(x3.view()), Some(&mut direct), &opts).unwrap();
        for step in [[11u32, 12, 13], [7, 7, 9]] {
            let x = Array2::from_shape_vec((3, 1), step.to_vec()).unwrap();
            let a = model.forward(&ForwardInput::new(x.view()), Some(&mut copied), &opts).unwrap().logits.unwrap();
            let b = model.forward(&ForwardInput::new(x.view()), Some(&mut direct), &opts).unwrap().logits.unwrap();
            let d = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
            assert!(d <= 1e-5, "repeated vs directly prefilled cache: max |diff| {d}");
        }
        assert!(one.repeat_rows(0).is_err());
        // greedy: every sample of a padded batch equals the single-sample result
        let prompts = vec![tok.encode("To be, or not"), tok.encode("O")];
        let greedy = GenerateConfig {
            max_new_tokens: 12,
            sampling: SamplingParams::greedy(),
            eos_token_id: None,
            ..Default::default()
        };
        let single = generate_batch(&model, &tok, &prompts, &greedy, None).unwrap();
        let three = generate_batch(&model, &tok, &prompts, &GenerateConfig { num_samples: 3, ..greedy }, None).unwrap();
        for j in 0..2 {
            for i in 0..3 {
                assert_eq!(three.samples[j * 3 + i].token_ids, single.samples[j].token_ids, "prompt {j} sample {i}");
                assert_eq!(three.samples[j * 3 + i].prompt_index, j);
            }
        }
    }

    #[test]
    fn non_finite_values_are_found() {
        let mut xs = vec![0.5f32; 37];
        assert_eq!(first_non_finite(&xs), None);
        for (i, v) in [(0, f32::NAN), (17, f32::INFINITY), (36, f32::NEG_INFINITY)] {
            xs[i] = v;
            assert_eq!(first_non_finite(&xs), Some(i));
            xs[i] = f32::MAX;
        }
        assert_eq!(first_non_finite(&[]), None);
    }

    #[test]
    fn stop_search_only_looks_at_new_text() {
        let stops = vec!["\n\n".to_string(), "END".to_string()];
        assert_eq!(find_stop(b"ab\n", 2, &stops), None);
        assert_eq!(find_stop(b"ab\n\ncd", 3, &stops), Some(4));
        assert_eq!(find_stop(b"xxEN", 2, &stops), None);
        assert_eq!(find_stop(b"xxENDyy", 4, &stops), Some(5));
    }
}
