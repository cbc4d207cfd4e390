//! Beam search with transformers' rules (its vectorised `_beam_search`, transformers 5.x).
//!
//! Per prompt, `num_beams` running hypotheses live as rows of one [`KvCache`]. Each step:
//! 1. every running beam's row becomes `log_softmax(logits)`, then the processors run on these
//!    log-probabilities (repetition penalty → no-repeat-n-gram → the user
//!    [`LogitsProcessor`](super::LogitsProcessor)); at the first step only beam 0 is expanded
//!    (the others are copies of it, which transformers scores `-1e9`);
//! 2. each candidate scores `running score + log-prob` (f32), and the best
//!    `K = max(2, 1 + #end tokens) · num_beams` candidates over all beams are kept;
//! 3. a candidate ending in an end token (`eos_token_id` or a `stop_token_ids` entry) or reaching
//!    `max_new_tokens` is finished; among the first `num_beams` of the K, finished ones enter
//!    the prompt's best-`num_beams` list with score `sum of log-probs / generated_len^length_penalty`
//!    (the generated length counts the end token);
//! 4. the best `num_beams` unfinished candidates are the next running beams; their cache rows are
//!    gathered with [`KvCache::reorder_rows`] (only rows whose parent differs are copied, and only
//!    their cached positions), then one decode step runs for all rows;
//! 5. a prompt stops when its list is full and the best running beam — its score divided by
//!    `current_len^length_penalty` (with [`EarlyStopping::Never`] and a positive penalty:
//!    `max_new_tokens^length_penalty`) — cannot beat the list's worst; with
//!    [`EarlyStopping::WhenFull`] as soon as the list is full; in any case at `max_new_tokens`.
//!
//! The returned samples are each prompt's best `num_samples` finished hypotheses, best first,
//! with [`Sample::score`] = transformers' `sequences_scores`.
//!
//! ```
//! use gpt2::generate::{generate, GenerateConfig};
//! use gpt2::{Config, Gpt2, Tokenizer};
//! let tok = Tokenizer::gpt2().unwrap();
//! let model = Gpt2::new_random(Config::new(2, 2, 16, 64, tok.vocab_size()), 0).unwrap();
//! let cfg = GenerateConfig::beam(4).num_samples(2).max_new_tokens(6).logprobs(0);
//! let out = generate(&model, &tok, &tok.encode("Hello"), &cfg, None).unwrap();
//! let (best, second) = (&out.samples[0], &out.samples[1]);
//! assert!(best.score.unwrap() >= second.score.unwrap());
//! // with length_penalty 1 the score is the mean token log-probability
//! let mean = best.logprob_summary().unwrap().mean as f32;
//! assert!((best.score.unwrap() - mean).abs() < 1e-4);
//! ```

use std::time::Instant;

use super::sampler::{apply_repetition_penalty, ban_repeated_ngrams};
use super::scores::{log_softmax_into, top_n_of};
use super::{
    check_prompts, first_non_finite, prefill, timing, EarlyStopping, FinishReason, GenerateConfig, Generation,
    LogitsProcessor, Sample, TokenLogprob, TopLogprob,
};
use crate::error::{Error, Result};
use crate::model::Gpt2;
use crate::tokenizer::Tokenizer;

/// transformers' "very unlikely" score for masked beams.
const NEG: f32 = -1.0e9;

/// A hypothesis: generated tokens, their log-probabilities (only when requested) and its score.
#[derive(Debug, Clone)]
struct Hyp {
    tokens: Vec<u32>,
    logprobs: Vec<TokenLogprob>,
    /// Running: accumulated log-probability (f32, as transformers accumulates it).
    /// Finished: the length-normalised score.
    score: f32,
}

/// One prompt's beams.
struct Group {
    prompt: usize,
    running: Vec<Hyp>,
    /// Best finished hypotheses, best first, at most `num_beams`.
    finished: Vec<Hyp>,
    done: bool,
}

/// A candidate continuation.
#[derive(Debug, Clone)]
struct Cand {
    score: f32,
    /// `beam · vocab + token`, transformers' flat index (ties: lower first).
    flat: usize,
    beam: usize,
    token: u32,
    logprob: TokenLogprob,
}

/// `len^penalty` as transformers computes it (a Python float, used as f32).
fn length_norm(len: usize, penalty: f32) -> f32 {
    (len as f64).powf(penalty as f64) as f32
}

pub(crate) fn beam_search(
    model: &Gpt2,
    tok: &Tokenizer,
    prompts: &[&[u32]],
    cfg: &GenerateConfig,
    mut processor: Option<&mut dyn LogitsProcessor>,
) -> Result<Generation> {
    let start = Instant::now();
    let n = cfg.num_beams;
    let t0 = check_prompts(model, prompts, cfg, n)?;
    let vocab = model.config().vocab_size;
    // a padded vocabulary's extra rows are never chosen (as in sampling)
    let sample_vocab = vocab.min(tok.vocab_size());
    let mut ends: Vec<u32> = cfg.eos_token_id.into_iter().chain(cfg.stop_token_ids.iter().copied()).collect();
    ends.sort_unstable();
    ends.dedup();
    let k = (1 + ends.len()).max(2) * n;
    if k > sample_vocab {
        return Err(Error::arg(
            "num_beams",
            format!("{n} beams need {k} candidates from one beam but the vocabulary has {sample_vocab} tokens"),
        ));
    }
    let top_n = cfg.logprobs;
    let pad = cfg.eos_token_id.unwrap_or(0).min(vocab as u32 - 1);
    let (mut cache, mut logits) = prefill(model, prompts, t0, cfg.max_new_tokens, n, pad)?;
    let mut groups: Vec<Group> = (0..prompts.len())
        .map(|j| Group {
            prompt: j,
            running: vec![Hyp { tokens: Vec::new(), logprobs: Vec::new(), score: 0.0 }; n],
            finished: Vec::with_capacity(n),
            done: false,
        })
        .collect();
    let rows = prompts.len() * n;
    let mut lp = vec![0f32; sample_vocab];
    let mut src: Vec<usize> = (0..rows).collect();
    let mut next = vec![pad; rows];
    let mut history: Vec<u32> = Vec::with_capacity(t0 + cfg.max_new_tokens);
    let mut ttft = None;
    let mut steps = 0usize;
    for step in 0..cfg.max_new_tokens {
        for g in groups.iter_mut().filter(|g| !g.done) {
            let base = g.prompt * n;
            // 1–2: expand the running beams, keep the best K candidates
            let mut cands: Vec<Cand> = Vec::with_capacity(k * n);
            for (b, hyp) in g.running.iter().enumerate().take(if step == 0 { 1 } else { n }) {
                let r = base + b;
                let row = &logits[r * vocab..r * vocab + sample_vocab];
                if let Some(i) = first_non_finite(row) {
                    return Err(Error::NonFinite {
                        step,
                        what: format!(
                            "logit of token {i} is {} (beam {b} of prompt {}); the model produces non-finite \
                             values (check its weights)",
                            row[i], g.prompt
                        ),
                    });
                }
                log_softmax_into(row, &mut lp);
                history.clear();
                history.extend_from_slice(prompts[g.prompt]);
                history.extend_from_slice(&hyp.tokens);
                if cfg.sampling.repetition_penalty != 1.0 {
                    apply_repetition_penalty(&mut lp, &history, cfg.sampling.repetition_penalty);
                }
                if cfg.sampling.no_repeat_ngram_size > 0 {
                    ban_repeated_ngrams(&mut lp, &history, cfg.sampling.no_repeat_ngram_size);
                }
                if let Some(p) = processor.as_deref_mut() {
                    p.process(r, &history, &mut lp);
                }
                let top: Vec<TopLogprob> = match top_n {
                    Some(t) => {
                        top_n_of(&lp, t).into_iter().map(|i| TopLogprob { id: i, logprob: lp[i as usize] }).collect()
                    }
                    None => Vec::new(),
                };
                for v in best_k(&lp, k) {
                    cands.push(Cand {
                        score: hyp.score + lp[v as usize],
                        flat: b * sample_vocab + v as usize,
                        beam: b,
                        token: v,
                        logprob: TokenLogprob { id: v, logprob: lp[v as usize], top: top.clone() },
                    });
                }
            }
            cands.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.flat.cmp(&b.flat)));
            cands.truncate(k);
            // 3: which candidates finish
            let gen = step + 1;
            let hits: Vec<bool> =
                cands.iter().map(|c| ends.binary_search(&c.token).is_ok() || gen >= cfg.max_new_tokens).collect();
            let extend = |c: &Cand, score: f32| {
                let parent = &g.running[c.beam];
                let mut tokens = Vec::with_capacity(parent.tokens.len() + 1);
                tokens.extend_from_slice(&parent.tokens);
                tokens.push(c.token);
                let mut logprobs = Vec::new();
                if top_n.is_some() {
                    logprobs.reserve(parent.logprobs.len() + 1);
                    logprobs.extend_from_slice(&parent.logprobs);
                    logprobs.push(c.logprob.clone());
                }
                Hyp { tokens, logprobs, score }
            };
            // 4 (transformers' `_get_running_beams_for_next_iteration`): finished candidates
            // are masked with -1e9, the best `n` continue
            let mut order: Vec<(f32, usize)> =
                cands.iter().enumerate().map(|(i, c)| (if hits[i] { c.score + NEG } else { c.score }, i)).collect();
            order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let running: Vec<Hyp> = order[..n].iter().map(|&(s, i)| extend(&cands[i], s)).collect();
            // 3 (`_update_finished_beams`): only the first `n` of the K may finish
            let full_stop = cfg.early_stopping == EarlyStopping::WhenFull && g.finished.len() == n;
            if !full_stop {
                let denom = length_norm(gen, cfg.length_penalty);
                let mut merged = std::mem::take(&mut g.finished);
                for (i, c) in cands.iter().enumerate().take(n) {
                    if hits[i] {
                        merged.push(extend(c, c.score / denom));
                    }
                }
                // stable: among equal scores the earlier-finished hypothesis stays first
                merged.sort_by(|a, b| b.score.total_cmp(&a.score));
                merged.truncate(n);
                g.finished = merged;
            }
            for (j, &(_, i)) in order[..n].iter().enumerate() {
                src[base + j] = base + cands[i].beam;
                next[base + j] = cands[i].token;
            }
            g.running = running;
            // 5: may this prompt stop?
            let all_hit = hits.iter().all(|&h| h);
            let full = g.finished.len() == n;
            let improvable = !full || {
                let best_len = if cfg.early_stopping == EarlyStopping::Never && cfg.length_penalty > 0.0 {
                    cfg.max_new_tokens
                } else {
                    gen
                };
                let best = g.running[0].score / length_norm(best_len, cfg.length_penalty);
                let worst = g.finished.iter().map(|h| h.score).fold(f32::INFINITY, f32::min);
                best > worst
            };
            g.done = all_hit || !improvable || (cfg.early_stopping == EarlyStopping::WhenFull && full);
        }
        if ttft.is_none() {
            ttft = Some(start.elapsed());
        }
        if groups.iter().all(|g| g.done) {
            break;
        }
        cache.reorder_rows(&src)?;
        src.iter_mut().enumerate().for_each(|(i, s)| *s = i);
        model.decode_step(&next, &mut cache, &mut logits)?;
        steps += 1;
    }
    let mut samples = Vec::with_capacity(prompts.len() * cfg.num_samples);
    for mut g in groups {
        // Normally the list is full here (every beam finishes at `max_new_tokens`); if scores
        // were all -inf it may not be: fill up with the best running beams.
        let mut extra = g.running.clone();
        for h in &mut extra {
            h.score /= length_norm(h.tokens.len().max(1), cfg.length_penalty);
        }
        g.finished.extend(extra);
        for h in g.finished.into_iter().take(cfg.num_samples) {
            let last = h.tokens.last().copied();
            let finish_reason = match last {
                Some(t) if cfg.eos_token_id == Some(t) => FinishReason::Eos,
                Some(t) if cfg.stop_token_ids.contains(&t) => FinishReason::StopToken,
                _ => FinishReason::Length,
            };
            let text_ids =
                if finish_reason == FinishReason::Length { &h.tokens[..] } else { &h.tokens[..h.tokens.len() - 1] };
            samples.push(Sample {
                prompt_index: g.prompt,
                text: tok.decode_lossy(text_ids)?,
                token_ids: h.tokens,
                finish_reason,
                logprobs: top_n.map(|_| h.logprobs),
                score: Some(h.score),
            });
        }
    }
    Ok(Generation { timing: timing(start, ttft, steps, prompts, &samples), samples })
}

/// Ids of the `k` largest entries (NaN last), in no particular order.
fn best_k(row: &[f32], k: usize) -> Vec<u32> {
    let mut ids: Vec<u32> = (0..row.len() as u32).collect();
    let by = |a: &u32, b: &u32| {
        let (x, y) = (row[*a as usize], row[*b as usize]);
        // NaN sorts last
        match (x.is_nan(), y.is_nan()) {
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ => y.total_cmp(&x).then(a.cmp(b)),
        }
    };
    if k < ids.len() {
        ids.select_nth_unstable_by(k - 1, by);
        ids.truncate(k);
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_k_keeps_the_largest() {
        let mut got = best_k(&[0.5, f32::NAN, 3.0, f32::NEG_INFINITY, 2.0], 3);
        got.sort();
        assert_eq!(got, vec![0, 2, 4]);
    }
}
