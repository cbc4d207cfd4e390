//! Text generation: prefill + KV-cached decode, sampling, stop conditions, batching, streaming
//! and timing.
//!
//! - [`sampler`]: [`SamplingParams`] (greedy, temperature, top-k, top-p, min-p, repetition
//!   penalty, no-repeat-n-gram) and the seeded [`Sampler`].
//! - [`stream`]: [`TextStream`], UTF-8-safe incremental decoding.
//! - [`generate`] / [`generate_batch`]: the decode loop. Prompts of different lengths are
//!   left-padded into one batch with an attention mask; the model derives position ids from the
//!   mask, so a padded batch gives each prompt exactly its alone-result (greedy) — the classic
//!   GPT-2 batching bug cannot happen. The prompt is prefilled in one forward call, then each
//!   step feeds one token per row through the caller-owned-style [`KvCache`] (created per call
//!   here) with [`LogitsMode::Last`], so a step costs one pass over the weights, linear in context.
//!
//! ```
//! use gpt2::generate::{generate, GenerateConfig, SamplingParams};
//! use gpt2::{Config, Gpt2, Tokenizer};
//! let tok = Tokenizer::gpt2().unwrap();
//! let model = Gpt2::new_random(Config::new(2, 2, 16, 64, tok.vocab_size()), 0).unwrap();
//! let cfg = GenerateConfig { max_new_tokens: 5, sampling: SamplingParams::greedy(), ..Default::default() };
//! let out = generate(&model, &tok, &tok.encode("Hello"), &cfg, None).unwrap();
//! assert!(out.samples[0].token_ids.len() <= 5);
//! println!("{} ({:.1} tokens/s)", out.samples[0].text, out.timing.tokens_per_second);
//! ```

pub mod sampler;
pub mod stream;

use std::time::Instant;

use ndarray::Array2;
use serde::Serialize;

pub use sampler::{Sampler, SamplingParams};
pub use stream::TextStream;

use crate::error::{Error, Result};
use crate::model::{ForwardInput, ForwardOptions, Gpt2, KvCache, LogitsMode};
use crate::rng::Rng;
use crate::tokenizer::Tokenizer;

/// GPT-2's `<|endoftext|>`.
pub const EOT: u32 = 50256;

/// Settings of one generation call.
///
/// ```
/// use gpt2::generate::{GenerateConfig, SamplingParams};
/// let cfg = GenerateConfig { max_new_tokens: 20, sampling: SamplingParams::greedy(), ..Default::default() };
/// assert!(cfg.validate().is_ok());
/// assert!(GenerateConfig { max_new_tokens: 0, ..cfg }.validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    /// Tokens to generate at most per sample (≥ 1).
    pub max_new_tokens: usize,
    /// How tokens are chosen.
    pub sampling: SamplingParams,
    /// Seed of the random streams (sample `i` draws from `Rng::new(seed).fork(i)`, whatever else
    /// is in the batch).
    pub seed: u64,
    /// Samples per prompt (≥ 1).
    pub num_samples: usize,
    /// Stop a sample when it produces this token (`None`: never). Default `<|endoftext|>`.
    pub eos_token_id: Option<u32>,
    /// More token ids that stop a sample.
    pub stop_token_ids: Vec<u32>,
    /// Strings that stop a sample; its text is cut right after the string.
    pub stop_strings: Vec<String>,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            max_new_tokens: 100,
            sampling: SamplingParams::default(),
            seed: 1337,
            num_samples: 1,
            eos_token_id: Some(EOT),
            stop_token_ids: Vec::new(),
            stop_strings: Vec::new(),
        }
    }
}

impl GenerateConfig {
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

/// Result of [`generate`] / [`generate_batch`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generation {
    /// Samples, prompt-major: prompt 0's `num_samples`, then prompt 1's, …
    pub samples: Vec<Sample>,
    /// Timing of the whole call.
    pub timing: Timing,
}

/// Streaming callback: `(sample index, newly completed text)`.
pub type OnText<'a> = &'a mut dyn FnMut(usize, &str);

/// Generates `cfg.num_samples` continuations of one prompt. `on_text` receives text as it is
/// produced (complete UTF-8 only); the pieces of a sample concatenate to its final `text`.
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
    generate_impl(model, tok, &[prompt], cfg, on_text)
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
    let prompts: Vec<&[u32]> = prompts.iter().map(|p| p.as_ref()).collect();
    generate_impl(model, tok, &prompts, cfg, on_text)
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
}

fn generate_impl(
    model: &Gpt2,
    tok: &Tokenizer,
    prompts: &[&[u32]],
    cfg: &GenerateConfig,
    mut on_text: Option<OnText<'_>>,
) -> Result<Generation> {
    let start = Instant::now();
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
    let b = prompts.len().checked_mul(cfg.num_samples).ok_or_else(|| {
        Error::arg("num_samples", format!("{} samples per prompt overflow the batch", cfg.num_samples))
    })?;
    // Before any per-row allocation: rejects a batch whose cache cannot be addressed. Each
    // prompt is prefilled once (a cache of `prompts.len()` rows); its row is copied to its
    // samples afterwards (`repeat_rows`).
    let mc = model.config();
    KvCache::per_layer_len(mc.n_layer, mc.n_embd, b, t0 + cfg.max_new_tokens)?;
    let mut cache = KvCache::new(mc, prompts.len(), t0 + cfg.max_new_tokens)?;

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
            });
        }
    }
    let ns = cfg.num_samples;
    let pad = cfg.eos_token_id.unwrap_or(0).min(vocab as u32 - 1);
    // Each prompt is prefilled once; its cache row (and last logits) are then copied to its
    // `num_samples` rows, so time to first token does not grow with `num_samples`.
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
    if ns > 1 {
        cache = cache.repeat_rows(ns)?;
    }
    // `[b, vocab]` last-position logits, rewritten in place by every decode step.
    let mut logits = vec![0f32; b * vocab];
    for (r, row) in logits.chunks_exact_mut(vocab).enumerate() {
        row.copy_from_slice(first.slice(ndarray::s![r / ns, 0, ..]).as_slice().expect("contiguous"));
    }
    drop(first);

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
            let t = row.sampler.sample(&mut scratch, &row.history);
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
            if let Some(cb) = on_text.as_deref_mut() {
                let end = row.cut.unwrap_or(row.bytes.len());
                let mut piece = row.stream.push(&row.bytes[row.streamed..end]);
                row.streamed = end;
                if row.finished.is_some() {
                    piece.push_str(&row.stream.finish());
                }
                if !piece.is_empty() {
                    cb(r, &piece);
                }
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
    let total = start.elapsed();
    let ttft = ttft.unwrap_or(total);
    let samples: Vec<Sample> = rows
        .into_iter()
        .map(|row| {
            let end = row.cut.unwrap_or(row.bytes.len());
            Sample {
                prompt_index: row.prompt_index,
                token_ids: row.history[row.prompt_len..].to_vec(),
                text: String::from_utf8_lossy(&row.bytes[..end]).into_owned(),
                finish_reason: row.finished.unwrap_or(FinishReason::Length),
            }
        })
        .collect();
    let new_tokens: usize = samples.iter().map(|s| s.token_ids.len()).sum();
    let total_s = total.as_secs_f64();
    let timing = Timing {
        prompt_tokens: prompts.iter().map(|p| p.len()).sum(),
        new_tokens,
        decode_steps: steps,
        time_to_first_token_ms: ttft.as_secs_f64() * 1e3,
        total_seconds: total_s,
        tokens_per_second: if total_s > 0.0 { new_tokens as f64 / total_s } else { 0.0 },
        ms_per_token: if steps > 0 { (total - ttft).as_secs_f64() * 1e3 / steps as f64 } else { 0.0 },
    };
    Ok(Generation { samples, timing })
}

/// Index of the first NaN or infinite value. The common all-finite case is one branch-free,
/// vectorisable pass (an OR over the exponent bits); the position is searched only on failure.
fn first_non_finite(xs: &[f32]) -> Option<usize> {
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
