//! Knowledge editing by constrained fine-tuning of chosen weight tensors — the "FT" / "FT-L"
//! baseline of ROME (Meng et al., 2022, `baselines/ft/ft_main.py`).
//!
//! An [`EditRequest`] asks that `prompt.format(subject)` be continued by `target_new`
//! ("The Eiffel Tower is located in" → " Rome"). [`edit`] fine-tunes only the tensors whose
//! names contain `module_template.format(layer)` for the configured layers (ROME's substring
//! rule: `h.{}.mlp.c_proj` selects `h.0.mlp.c_proj.weight` and `.bias`), with Adam
//! (`torch.optim.Adam`, L2 weight decay added to the gradient, as ft_main) and, after every step,
//! a clamp of every edited weight into `[w₀ − ε, w₀ + ε]`. Everything else is frozen: it gets no
//! gradient, no optimizer state, and stays bit-identical.
//!
//! The loop is ft_main's: every step ("epoch") goes over the requests in batches of
//! [`EditConfig::batch_size`]; each batch's loss is computed first, and a batch whose loss is
//! already below [`EditConfig::early_stop_loss`] gets **no** update (ft_main skips `backward` and
//! `step` for it); the clamp runs after every batch; when the epoch's mean loss is below
//! `early_stop_loss` the loop stops after that epoch. So the edit stops without taking the update
//! of the step whose loss first falls under the threshold.
//!
//! Tokens: prompts and targets are encoded as ft_main's HF tokenizer does (special-token text
//! `<|endoftext|>` becomes id 50256), and target tokens equal to 50256 — GPT-2's unk/eos id,
//! which ft_main masks with `target_ids != tok.unk_token_id` — carry no loss (in both objectives;
//! a target made only of them is an error).
//!
//! Objectives ([`EditObjective`]):
//! - `LastPositionBag` — exactly ft_main: the log-softmax of the logits at the last prompt token,
//!   gathered at every target token id, averaged over the target tokens, then over requests;
//! - `Sequence` — teacher-forced NLL of the whole target continuation (prompt + target\[..−1\]
//!   in, mean over the target tokens), then averaged over requests.
//!
//! The returned [`EditOutcome`] holds the loss history, the weight deltas and the original
//! values, so [`EditOutcome::restore`] puts the model back bit-identically. [`EditProbe`]
//! measures what changed: probabilities of the new and old targets, whether greedy decoding now
//! produces the new target, and the KL divergence of the next-token distribution on
//! neighbourhood prompts that should not change ("locality").
//!
//! ```
//! use gpt2::edit::{edit, EditConfig, EditRequest};
//! use gpt2::{Config, Gpt2, Tokenizer};
//! let tok = Tokenizer::gpt2().unwrap();
//! let mut model = Gpt2::new_random(Config::new(2, 2, 16, 32, tok.vocab_size()), 0).unwrap();
//! let before = model.params().to_vec();
//! let req = EditRequest::new("{} is located in", "The Eiffel Tower", "Rome");
//! let cfg = EditConfig { lr: 1e-2, steps: 3, ..EditConfig::default() };
//! let out = edit(&mut model, &tok, &[req], &cfg).unwrap();
//! assert_eq!(out.losses.len(), 3);
//! assert!(out.losses[2] < out.losses[0]);
//! out.restore(&mut model).unwrap();
//! assert_eq!(model.params(), &before[..]);
//! ```

use std::ops::Range;

use ndarray::{Array2, ArrayView2};

use crate::error::{Error, Result};
use crate::model::{ForwardInput, ForwardOptions, Gpt2, KvCache, LogitsMode};
use crate::tokenizer::Tokenizer;
use crate::train::{forward_backward_with, Activations, BackwardOptions, GradMask, ParamSelection};

/// Target value for positions that carry no loss (see [`crate::train::forward_backward`]).
const IGNORE: i32 = -1;

/// One fact to write into the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditRequest {
    /// A template with one `{}` where the subject goes, e.g. `"{} is located in"`.
    pub prompt: String,
    /// The subject, e.g. `"The Eiffel Tower"`.
    pub subject: String,
    /// The new continuation, e.g. `"Rome"` (a leading space is added when missing, because GPT-2's
    /// BPE encodes a word after a space as a different token).
    pub target_new: String,
}

impl EditRequest {
    /// A request from its three parts.
    pub fn new(prompt: impl Into<String>, subject: impl Into<String>, target_new: impl Into<String>) -> Self {
        EditRequest { prompt: prompt.into(), subject: subject.into(), target_new: target_new.into() }
    }

    /// The prompt with the subject filled in.
    ///
    /// Errors: [`Error::InvalidArgument`] when the template has no `{}` or the subject is empty.
    pub fn text(&self) -> Result<String> {
        if !self.prompt.contains("{}") {
            return Err(Error::arg("prompt", format!("template {:?} has no `{{}}` for the subject", self.prompt)));
        }
        if self.subject.trim().is_empty() {
            return Err(Error::arg("subject", "the subject is empty"));
        }
        Ok(self.prompt.replacen("{}", &self.subject, 1))
    }

    /// The target with a leading space. Errors: [`Error::InvalidArgument`] when it is empty.
    pub fn target(&self) -> Result<String> {
        with_space(&self.target_new, "target_new")
    }

    /// (prompt ids, target ids), both non-empty. Text `<|endoftext|>` is encoded as the
    /// end-of-text id, as the HF tokenizer ROME uses does.
    ///
    /// ```
    /// use gpt2::edit::EditRequest;
    /// let tok = gpt2::Tokenizer::gpt2().unwrap();
    /// let (_, t) = EditRequest::new("{} is", "Paris", "<|endoftext|>").encode(&tok).unwrap();
    /// assert_eq!(t, vec![220, 50256]);
    /// ```
    pub fn encode(&self, tok: &Tokenizer) -> Result<(Vec<u32>, Vec<u32>)> {
        let p = tok.encode_with_special(&self.text()?);
        let t = tok.encode_with_special(&self.target()?);
        if p.is_empty() {
            return Err(Error::EmptyInput("the edit prompt encodes to no tokens".into()));
        }
        Ok((p, t))
    }
}

fn with_space(s: &str, name: &'static str) -> Result<String> {
    if s.trim().is_empty() {
        return Err(Error::arg(name, "the target is empty"));
    }
    Ok(if s.starts_with(' ') { s.to_string() } else { format!(" {s}") })
}

/// What the edit minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EditObjective {
    /// ROME's ft_main: mean over target tokens of −log p(token | prompt) at the LAST prompt
    /// position (a "bag" of target tokens, all predicted from the same position).
    #[default]
    LastPositionBag,
    /// Teacher-forced NLL of the whole target continuation (right for multi-token targets).
    Sequence,
}

impl std::str::FromStr for EditObjective {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "bag" | "last-position-bag" => Ok(EditObjective::LastPositionBag),
            "sequence" | "seq" => Ok(EditObjective::Sequence),
            _ => Err(Error::arg("objective", format!("{s:?} is not `bag` or `sequence`"))),
        }
    }
}

/// Hyper-parameters of [`edit`]. The defaults are ROME's "FT-L" settings for GPT-2
/// (layer 0's MLP output projection, Adam lr 5e-4, 25 steps, ε = 5e-4).
#[derive(Debug, Clone, PartialEq)]
pub struct EditConfig {
    /// Blocks to edit.
    pub layers: Vec<usize>,
    /// Tensor-name template with `{}` for the layer; every tensor whose name CONTAINS the
    /// formatted string is edited (e.g. `h.{}.mlp.c_proj` → weight and bias).
    pub module_template: String,
    /// Adam learning rate.
    pub lr: f64,
    /// Optimisation steps (passes over all requests).
    pub steps: usize,
    /// Requests per optimizer step (ROME's `batch_size`).
    pub batch_size: usize,
    /// ε of the box constraint around the original weights (`None`: unconstrained).
    pub norm_constraint: Option<f32>,
    /// L2 weight decay added to the gradient (torch.optim.Adam's `weight_decay`).
    pub weight_decay: f64,
    /// ft_main's threshold (ROME: 1e-2): a batch whose loss is below it gets no update, and
    /// the edit stops after a step whose mean loss is below it.
    pub early_stop_loss: f64,
    /// The objective.
    pub objective: EditObjective,
}

impl Default for EditConfig {
    fn default() -> Self {
        EditConfig {
            layers: vec![0],
            module_template: "h.{}.mlp.c_proj".into(),
            lr: 5e-4,
            steps: 25,
            batch_size: 64,
            norm_constraint: Some(5e-4),
            weight_decay: 0.0,
            early_stop_loss: 1e-2,
            objective: EditObjective::LastPositionBag,
        }
    }
}

impl EditConfig {
    /// Checks the settings. Errors: [`Error::InvalidArgument`].
    pub fn validate(&self) -> Result<()> {
        if self.layers.is_empty() {
            return Err(Error::arg("layers", "no layer to edit"));
        }
        if !self.module_template.contains("{}") {
            return Err(Error::arg(
                "module_template",
                format!("{:?} has no `{{}}` for the layer", self.module_template),
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::arg("lr", format!("{} must be finite and > 0", self.lr)));
        }
        if self.steps == 0 {
            return Err(Error::arg("steps", "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(Error::arg("batch_size", "must be at least 1"));
        }
        if let Some(eps) = self.norm_constraint {
            if !(eps.is_finite() && eps >= 0.0) {
                return Err(Error::arg("norm_constraint", format!("{eps} must be finite and ≥ 0")));
            }
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::arg("weight_decay", format!("{} must be finite and ≥ 0", self.weight_decay)));
        }
        Ok(())
    }

    /// The tensors this config edits in `model` (layout order).
    ///
    /// Errors: [`Error::InvalidArgument`] when a layer is out of range or nothing matches.
    pub fn selected_tensors(&self, model: &Gpt2) -> Result<Vec<String>> {
        self.validate()?;
        let n_layer = model.config().n_layer;
        if let Some(&l) = self.layers.iter().find(|&&l| l >= n_layer) {
            return Err(Error::arg("layers", format!("layer {l} does not exist (the model has {n_layer})")));
        }
        let needles: Vec<String> =
            self.layers.iter().map(|l| self.module_template.replacen("{}", &l.to_string(), 1)).collect();
        let needles: Vec<&str> = needles.iter().map(|n| n.strip_prefix("transformer.").unwrap_or(n)).collect();
        let names: Vec<String> = model
            .layout()
            .params()
            .iter()
            .filter(|p| needles.iter().any(|n| p.name.contains(n)))
            .map(|p| p.name.clone())
            .collect();
        if names.is_empty() {
            return Err(Error::arg(
                "module_template",
                format!("{:?} with layers {:?} matches no parameter tensor", self.module_template, self.layers),
            ));
        }
        Ok(names)
    }
}

/// One edited tensor: its name, shape, flat range in the parameter buffer, the original values
/// and the change made.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightDelta {
    /// Tensor name (HF key without `transformer.`).
    pub name: String,
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// Range in [`Gpt2::params`].
    pub range: Range<usize>,
    /// Values before the edit.
    pub original: Vec<f32>,
    /// `after − before`, element-wise.
    pub delta: Vec<f32>,
}

impl WeightDelta {
    /// Largest |delta| (≤ ε when a norm constraint was set).
    pub fn max_abs(&self) -> f32 {
        self.delta.iter().fold(0.0, |m, d| m.max(d.abs()))
    }

    /// Frobenius norm of the delta.
    pub fn norm(&self) -> f64 {
        self.delta.iter().map(|&d| d as f64 * d as f64).sum::<f64>().sqrt()
    }
}

/// Result of [`edit`].
#[derive(Debug, Clone, PartialEq)]
pub struct EditOutcome {
    /// Mean loss of every step, measured before that step's updates.
    pub losses: Vec<f64>,
    /// Whether the loss fell below [`EditConfig::early_stop_loss`] before `steps` ran out.
    pub early_stopped: bool,
    /// Optimizer updates made (batches whose loss was at least [`EditConfig::early_stop_loss`]).
    pub updates: usize,
    /// Per edited tensor: original values and deltas.
    pub deltas: Vec<WeightDelta>,
}

impl EditOutcome {
    /// Puts the original values back (bit-identical to the model before [`edit`]).
    ///
    /// Errors: [`Error::Shape`] when `model` is not the model that was edited.
    pub fn restore(&self, model: &mut Gpt2) -> Result<()> {
        for d in &self.deltas {
            let info = model.layout().require(&d.name)?;
            if info.range() != d.range {
                return Err(Error::Shape(format!(
                    "tensor {} is at {:?} in this model, not {:?}",
                    d.name,
                    info.range(),
                    d.range
                )));
            }
        }
        let params = model.params_mut();
        for d in &self.deltas {
            params[d.range.clone()].copy_from_slice(&d.original);
        }
        Ok(())
    }

    /// Applies the deltas again to a model in its original state (e.g. after [`restore`](Self::restore)).
    pub fn reapply(&self, model: &mut Gpt2) -> Result<()> {
        self.restore(model)?;
        let params = model.params_mut();
        for d in &self.deltas {
            for ((p, &o), &dv) in params[d.range.clone()].iter_mut().zip(&d.original).zip(&d.delta) {
                *p = o + dv;
            }
        }
        Ok(())
    }
}

/// GPT-2's unk / eos id: ft_main's `loss_mask = target_ids != tok.unk_token_id` drops it.
const UNK: u32 = 50256;

/// Training rows of one request: tokens `[R, T]` and targets `[R, T]` (−1 = no loss). Target
/// tokens equal to [`UNK`] carry no loss; `None` when no target token is left.
fn request_rows(prompt: &[u32], target: &[u32], objective: EditObjective) -> Option<(Array2<u32>, Array2<i32>)> {
    if target.iter().all(|&t| t == UNK) {
        return None;
    }
    Some(match objective {
        EditObjective::LastPositionBag => {
            // One row per scored target token, all the prompt; the loss sits at the last prompt
            // position. forward_backward's mean over these rows is ft_main's per-request mean
            // (Σ over unmasked target tokens / their count).
            let scored: Vec<u32> = target.iter().copied().filter(|&t| t != UNK).collect();
            let (r, t) = (scored.len(), prompt.len());
            let tokens = Array2::from_shape_fn((r, t), |(_, j)| prompt[j]);
            let targets = Array2::from_shape_fn((r, t), |(i, j)| if j + 1 == t { scored[i] as i32 } else { IGNORE });
            (tokens, targets)
        }
        EditObjective::Sequence => {
            let seq: Vec<u32> = prompt.iter().chain(target).copied().collect();
            let t = seq.len() - 1;
            let tokens = Array2::from_shape_fn((1, t), |(_, j)| seq[j]);
            let targets = Array2::from_shape_fn((1, t), |(_, j)| {
                if j + 1 >= prompt.len() && seq[j + 1] != UNK {
                    seq[j + 1] as i32
                } else {
                    IGNORE
                }
            });
            (tokens, targets)
        }
    })
}

/// Adam state over the edited ranges only (torch.optim.Adam semantics).
struct Adam {
    ranges: Vec<Range<usize>>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    t: i32,
}

impl Adam {
    fn new(ranges: Vec<Range<usize>>) -> Self {
        let m = ranges.iter().map(|r| vec![0.0; r.len()]).collect();
        let v = ranges.iter().map(|r| vec![0.0; r.len()]).collect();
        Adam { ranges, m, v, t: 0 }
    }

    /// One update: `g ← g + wd·w`, moments, bias-corrected step (β = 0.9, 0.999, ε = 1e-8).
    fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f64, wd: f64) {
        const B1: f32 = 0.9;
        const B2: f32 = 0.999;
        const EPS: f32 = 1e-8;
        self.t += 1;
        let bc1 = 1.0 - (B1 as f64).powi(self.t);
        let bc2 = 1.0 - (B2 as f64).powi(self.t);
        let step_size = (lr / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let wd = wd as f32;
        for ((r, m), v) in self.ranges.iter().zip(&mut self.m).zip(&mut self.v) {
            for (((p, &g), m), v) in
                params[r.clone()].iter_mut().zip(&grads[r.clone()]).zip(m.iter_mut()).zip(v.iter_mut())
            {
                let g = if wd != 0.0 { g + wd * *p } else { g };
                *m = B1 * *m + (1.0 - B1) * g;
                *v = B2 * *v + (1.0 - B2) * g * g;
                let denom = v.sqrt() / bc2_sqrt + EPS;
                *p -= step_size * (*m / denom);
            }
        }
    }
}

/// Edits `model` in place so that each request's prompt is continued by its new target.
///
/// Returns the loss history, the deltas and the original values (see [`EditOutcome::restore`]).
/// Tensors outside the selection are never written.
///
/// Errors: [`Error::InvalidArgument`] (bad config, template without `{}`, empty subject or
/// target, a target made only of end-of-text tokens, a module pattern that matches nothing, no
/// requests), plus the forward pass's errors
/// (e.g. [`Error::SequenceTooLong`]).
///
/// ```
/// use gpt2::edit::{edit, EditConfig, EditRequest};
/// use gpt2::{Config, Gpt2, Tokenizer};
/// let tok = Tokenizer::gpt2()?;
/// let mut model = Gpt2::new_random(Config::new(1, 2, 16, 32, tok.vocab_size()), 0)?;
/// let before = model.params().to_vec();
/// let request = EditRequest::new("{} is located in", "The Eiffel Tower", " Rome");
/// let outcome = edit(&mut model, &tok, &[request], &EditConfig { steps: 3, ..Default::default() })?;
/// assert_ne!(model.params(), &before[..]); // the selected tensors changed
/// outcome.restore(&mut model)?;
/// assert_eq!(model.params(), &before[..]);
/// # Ok::<(), gpt2::Error>(())
/// ```
pub fn edit(model: &mut Gpt2, tok: &Tokenizer, requests: &[EditRequest], cfg: &EditConfig) -> Result<EditOutcome> {
    if requests.is_empty() {
        return Err(Error::arg("requests", "no edit request given"));
    }
    let names = cfg.selected_tensors(model)?;
    let encoded = requests.iter().map(|r| r.encode(tok)).collect::<Result<Vec<_>>>()?;
    let n_pos = model.config().n_positions;
    for (p, t) in &encoded {
        if p.len() + t.len() > n_pos + 1 {
            return Err(Error::SequenceTooLong { len: p.len() + t.len() - 1, n_positions: n_pos });
        }
    }
    let rows: Vec<(Array2<u32>, Array2<i32>)> = encoded
        .iter()
        .map(|(p, t)| {
            request_rows(p, t, cfg.objective).ok_or_else(|| {
                Error::arg(
                    "target_new",
                    "every target token is <|endoftext|> (50256), which ft_main masks out of the loss",
                )
            })
        })
        .collect::<Result<_>>()?;

    let mut sel = ParamSelection::none();
    for n in &names {
        sel = sel.include(n.clone());
    }
    let mask: GradMask = sel.resolve(model.layout())?;
    let ranges: Vec<Range<usize>> =
        names.iter().map(|n| model.layout().require(n).map(|i| i.range())).collect::<Result<_>>()?;
    let originals: Vec<Vec<f32>> = ranges.iter().map(|r| model.params()[r.clone()].to_vec()).collect();

    let mut adam = Adam::new(ranges.clone());
    let mut acts = Activations::new();
    let mut grads = vec![0f32; model.num_parameters()];
    let mut losses = Vec::with_capacity(cfg.steps);
    let mut early_stopped = false;
    let mut updates = 0usize;
    for step in 0..cfg.steps {
        let (mut loss_sum, mut n_req) = (0.0f64, 0usize);
        for chunk in rows.chunks(cfg.batch_size) {
            for r in &ranges {
                grads[r.clone()].fill(0.0);
            }
            let scale = 1.0 / chunk.len() as f32;
            let mut chunk_loss = 0.0f64;
            for (x, y) in chunk {
                let opts = BackwardOptions { loss_scale: scale, mask: &mask, dropout_seed: None, dropout: None };
                let l = forward_backward_with(model, &mut acts, &mut grads, x.view(), y.view(), &opts)?;
                chunk_loss += l as f64;
            }
            if !chunk_loss.is_finite() {
                return Err(Error::NonFinite { step, what: format!("edit loss {chunk_loss}") });
            }
            loss_sum += chunk_loss;
            n_req += chunk.len();
            // ft_main: `if loss.item() >= 1e-2: loss.backward(); opt.step()` — a batch already
            // under the threshold changes nothing (its gradient, computed above, is dropped).
            if chunk_loss / chunk.len() as f64 >= cfg.early_stop_loss {
                adam.step(model.params_mut(), &grads, cfg.lr, cfg.weight_decay);
                updates += 1;
            }
            if let Some(eps) = cfg.norm_constraint {
                let params = model.params_mut();
                for (r, w0) in ranges.iter().zip(&originals) {
                    for (p, &o) in params[r.clone()].iter_mut().zip(w0) {
                        *p = p.clamp(o - eps, o + eps);
                    }
                }
            }
        }
        let mean = loss_sum / n_req as f64;
        losses.push(mean);
        if mean < cfg.early_stop_loss {
            early_stopped = losses.len() < cfg.steps;
            break;
        }
    }

    let deltas = names
        .into_iter()
        .zip(ranges)
        .zip(originals)
        .map(|((name, range), original)| {
            let shape = model.layout().require(&name).map(|i| i.shape.clone())?;
            let delta = model.params()[range.clone()].iter().zip(&original).map(|(a, b)| a - b).collect();
            Ok(WeightDelta { name, shape, range, original, delta })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(EditOutcome { losses, early_stopped, updates, deltas })
}

/// Log-softmax of one row of logits, in f64.
fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let lse = row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln() + max;
    row.iter().map(|&x| x as f64 - lse).collect()
}

/// Log-probability of `continuation` after `prompt` (sum over its tokens, teacher-forced).
///
/// Errors: [`Error::EmptyInput`] for an empty prompt or continuation, forward errors.
pub fn continuation_logprob(model: &Gpt2, prompt: &[u32], continuation: &[u32]) -> Result<f64> {
    if prompt.is_empty() || continuation.is_empty() {
        return Err(Error::EmptyInput("prompt and continuation must be non-empty".into()));
    }
    let seq: Vec<u32> = prompt.iter().chain(continuation).copied().collect();
    let logits = model.logits(&seq[..seq.len() - 1])?;
    let mut lp = 0.0;
    for (i, &t) in continuation.iter().enumerate() {
        let row = logits.row(prompt.len() - 1 + i);
        lp += log_softmax(row.as_slice().expect("contiguous logits"))[t as usize];
    }
    Ok(lp)
}

/// Greedy continuation of `prompt` by `n` tokens (KV cache, argmax, first index on ties).
pub fn greedy_tokens(model: &Gpt2, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(Error::EmptyInput("empty prompt".into()));
    }
    let n_pos = model.config().n_positions;
    if prompt.len() + n > n_pos {
        return Err(Error::SequenceTooLong { len: prompt.len() + n, n_positions: n_pos });
    }
    let mut cache = KvCache::new(model.config(), 1, prompt.len() + n)?;
    let opts = ForwardOptions { logits: LogitsMode::Last, ..Default::default() };
    let mut out = Vec::with_capacity(n);
    let mut input: Vec<u32> = prompt.to_vec();
    for _ in 0..n {
        let x = ArrayView2::from_shape((1, input.len()), &input).expect("shape");
        let o = model.forward(&ForwardInput::new(x), Some(&mut cache), &opts)?;
        let logits = o.logits.expect("last logits");
        let row = logits.slice(ndarray::s![0, 0, ..]);
        let mut best = 0usize;
        for (i, &v) in row.iter().enumerate() {
            if v > row[best] {
                best = i;
            }
        }
        out.push(best as u32);
        input.clear();
        input.push(best as u32);
    }
    Ok(out)
}

/// Next-token log-distribution (f64) after `prompt`.
pub fn next_token_logprobs(model: &Gpt2, prompt: &[u32]) -> Result<Vec<f64>> {
    if prompt.is_empty() {
        return Err(Error::EmptyInput("empty prompt".into()));
    }
    let logits = model.logits(prompt)?;
    let row = logits.row(prompt.len() - 1);
    Ok(log_softmax(row.as_slice().expect("contiguous logits")))
}

/// KL(p ‖ q) of two log-distributions, in nats.
pub fn kl_divergence(log_p: &[f64], log_q: &[f64]) -> f64 {
    log_p.iter().zip(log_q).map(|(&lp, &lq)| if lp == f64::NEG_INFINITY { 0.0 } else { lp.exp() * (lp - lq) }).sum()
}

/// What an edit should change and what it should not, measured on one model state. Take one
/// snapshot before and one after [`edit`], then compare with [`EditProbe::compare`].
#[derive(Debug, Clone, PartialEq)]
pub struct EditProbe {
    /// P(target_new | prompt) (teacher-forced product over the target's tokens).
    pub p_new: f64,
    /// P(old target | prompt), when an old target was given.
    pub p_old: Option<f64>,
    /// Greedy continuation of the prompt, as many tokens as the new target has.
    pub greedy: Vec<u32>,
    /// Whether `greedy` equals the new target's tokens.
    pub generates_new: bool,
    /// Next-token log-distributions on the neighbourhood prompts.
    pub neighbourhood: Vec<Vec<f64>>,
}

/// Before/after comparison of two [`EditProbe`]s.
#[derive(Debug, Clone, PartialEq)]
pub struct EditReport {
    /// P(target_new) before and after.
    pub p_new: (f64, f64),
    /// P(old target) before and after.
    pub p_old: Option<(f64, f64)>,
    /// Greedy generation produced the new target, before and after.
    pub generates_new: (bool, bool),
    /// KL(before ‖ after) of the next-token distribution per neighbourhood prompt (nats).
    pub locality_kl: Vec<f64>,
}

impl EditProbe {
    /// Measures `model` for `request` (`old_target`: the fact being replaced, if known) and the
    /// neighbourhood prompts (full texts that should keep their continuations).
    pub fn measure(
        model: &Gpt2,
        tok: &Tokenizer,
        request: &EditRequest,
        old_target: Option<&str>,
        neighbourhood: &[String],
    ) -> Result<Self> {
        let (p, t) = request.encode(tok)?;
        let p_new = continuation_logprob(model, &p, &t)?.exp();
        let p_old = match old_target {
            Some(o) => Some(continuation_logprob(model, &p, &tok.encode(&with_space(o, "old_target")?))?.exp()),
            None => None,
        };
        let greedy = greedy_tokens(model, &p, t.len())?;
        let generates_new = greedy == t;
        let neighbourhood = neighbourhood
            .iter()
            .map(|s| {
                let ids = tok.encode(s);
                next_token_logprobs(model, &ids)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(EditProbe { p_new, p_old, greedy, generates_new, neighbourhood })
    }

    /// The report from `self` (before) to `after`.
    pub fn compare(&self, after: &EditProbe) -> EditReport {
        EditReport {
            p_new: (self.p_new, after.p_new),
            p_old: self.p_old.zip(after.p_old),
            generates_new: (self.generates_new, after.generates_new),
            locality_kl: self
                .neighbourhood
                .iter()
                .zip(&after.neighbourhood)
                .map(|(a, b)| kl_divergence(a, b))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bag_rows_put_every_target_at_the_last_prompt_position() {
        let (x, y) = request_rows(&[5, 6, 7], &[1, 2], EditObjective::LastPositionBag).unwrap();
        assert_eq!(x, ndarray::array![[5, 6, 7], [5, 6, 7]]);
        assert_eq!(y, ndarray::array![[-1, -1, 1], [-1, -1, 2]]);
        // ft_main's loss mask: target tokens equal to 50256 carry no loss
        let (x, y) = request_rows(&[5, 6, 7], &[1, UNK, 2], EditObjective::LastPositionBag).unwrap();
        assert_eq!(x, ndarray::array![[5, 6, 7], [5, 6, 7]]);
        assert_eq!(y, ndarray::array![[-1, -1, 1], [-1, -1, 2]]);
        assert!(request_rows(&[5], &[UNK, UNK], EditObjective::LastPositionBag).is_none());
    }

    #[test]
    fn sequence_rows_are_teacher_forced() {
        let (x, y) = request_rows(&[5, 6], &[1, 2, 3], EditObjective::Sequence).unwrap();
        assert_eq!(x, ndarray::array![[5, 6, 1, 2]]);
        assert_eq!(y, ndarray::array![[-1, 1, 2, 3]]);
        let (x, y) = request_rows(&[5, 6], &[1, UNK, 3], EditObjective::Sequence).unwrap();
        assert_eq!(x, ndarray::array![[5, 6, 1, UNK]]);
        assert_eq!(y, ndarray::array![[-1, 1, -1, 3]]);
        assert!(request_rows(&[5, 6], &[UNK], EditObjective::Sequence).is_none());
    }

    #[test]
    fn kl_of_identical_distributions_is_zero() {
        let p = log_softmax(&[1.0, 2.0, 3.0]);
        assert!(kl_divergence(&p, &p).abs() < 1e-15);
        let q = log_softmax(&[3.0, 2.0, 1.0]);
        assert!(kl_divergence(&p, &q) > 0.1);
    }
}
