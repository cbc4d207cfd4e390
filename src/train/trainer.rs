//! The training loop as a value: [`Trainer::step`] does one optimizer step (gradient
//! accumulation, clipping, schedule, AdamW) and returns its [`StepStats`]; printing, plotting
//! and checkpoint cadence are the caller's.

use std::time::Instant;

use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use super::backprop::{forward_backward_with, forward_loss, Activations, BackwardOptions};
use super::optim::{clip_grad_norm, grad_norm, AdamW, AdamWConfig};
use super::schedule::LrSchedule;
use super::select::{GradMask, ParamSelection};
use crate::data::BatchSource;
use crate::error::{Error, Result};
use crate::model::Gpt2;
use crate::rng::Rng;

/// A target id meaning "no loss here": the `u32` form of PyTorch's `ignore_index = -1`, for
/// [`BatchSource`]s (which yield `u32`) whose targets must be masked.
pub const IGNORE_TARGET: u32 = u32::MAX;

/// What to do when the loss or the gradient norm is NaN or infinite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum NonFinitePolicy {
    /// Return [`Error::NonFinite`] (parameters untouched).
    #[default]
    Error,
    /// Skip the update (parameters and optimizer untouched), count it and go on.
    Skip,
}

/// Everything a [`Trainer`] needs besides the model and the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerConfig {
    /// AdamW settings.
    pub optimizer: AdamWConfig,
    /// Learning rate per step.
    pub schedule: LrSchedule,
    /// Micro-batches per optimizer step (their gradients are averaged).
    pub grad_accum: usize,
    /// Clip the global gradient norm to this value (`None`: no clipping).
    pub grad_clip: Option<f64>,
    /// NaN / infinity handling.
    pub non_finite: NonFinitePolicy,
    /// Which tensors are trained (the rest are frozen: no gradient, no optimizer state).
    pub selection: ParamSelection,
    /// Seed of the dropout masks (used only when dropout is on): micro-batch `i` of step `s`
    /// uses masks derived from `(seed, s, i)`, so runs and resumed runs repeat.
    pub seed: u64,
    /// Training dropout probability for the embeddings, attention and residual branches,
    /// replacing the model config's `embd_pdrop` / `attn_pdrop` / `resid_pdrop` (`None`: use
    /// the config's; `Some(0.0)`: no dropout, e.g. nanoGPT `train.py`'s default). In `[0, 1)`.
    /// Evaluation ([`Trainer::eval_loss`], [`Trainer::loss_on`], hooks, `Evaluator`) never
    /// applies dropout.
    #[serde(default)]
    pub dropout: Option<f32>,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig {
            optimizer: AdamWConfig::default(),
            schedule: LrSchedule::Constant(1e-3),
            grad_accum: 1,
            grad_clip: None,
            non_finite: NonFinitePolicy::Error,
            selection: ParamSelection::all(),
            seed: 0,
            dropout: None,
        }
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    /// 0-based index of this step.
    pub step: usize,
    /// Mean training loss over the step's micro-batches.
    pub loss: f32,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Wall time of the step in milliseconds.
    pub ms: f64,
    /// Tokens processed (all micro-batches).
    pub tokens: usize,
    /// Throughput.
    pub tokens_per_sec: f64,
    /// Whether the update was skipped ([`NonFinitePolicy::Skip`]).
    pub skipped: bool,
}

/// Trains a [`Gpt2`] in place: owns the model, its gradient buffer, the optimizer and the saved
/// activations.
///
/// ```
/// use gpt2::train::{LrSchedule, Trainer, TrainerConfig};
/// use gpt2::{Config, Gpt2};
/// use ndarray::array;
/// let model = Gpt2::new_random(Config::nano(8, 5), 0).unwrap();
/// let cfg = TrainerConfig { schedule: LrSchedule::Constant(1e-2), ..Default::default() };
/// let mut trainer = Trainer::new(model, cfg).unwrap();
/// let (x, y) = (array![[0u32, 1, 2, 3]], array![[1i32, 2, 3, 4]]);
/// let first = trainer.step_on(&[(x.view(), y.view())]).unwrap();
/// for _ in 0..20 {
///     trainer.step_on(&[(x.view(), y.view())]).unwrap();
/// }
/// let last = trainer.step_on(&[(x.view(), y.view())]).unwrap();
/// assert!(last.loss < first.loss);
/// assert_eq!(last.step, 21);
/// ```
#[derive(Debug)]
pub struct Trainer {
    model: Gpt2,
    cfg: TrainerConfig,
    mask: GradMask,
    opt: AdamW,
    grads: Vec<f32>,
    acts: Activations,
    step: usize,
    skipped: usize,
}

/// `u32` targets → `i32`, [`IGNORE_TARGET`] → −1.
fn to_targets(y: &Array2<u32>) -> Result<Array2<i32>> {
    let mut bad = None;
    let out = y.mapv(|t| {
        if t == IGNORE_TARGET {
            -1
        } else if t > i32::MAX as u32 {
            bad = Some(t);
            -1
        } else {
            t as i32
        }
    });
    match bad {
        Some(t) => Err(Error::TokenOutOfVocab { token: t, position: 0, vocab_size: i32::MAX as usize }),
        None => Ok(out),
    }
}

impl Trainer {
    /// A trainer for `model`. Errors: [`Error::OutOfMemory`] when the gradients and AdamW moments
    /// (3 × the parameters, f32) exceed the memory available; invalid optimizer / schedule
    /// settings, `grad_accum == 0`, a non-positive / non-finite clip, a dropout outside `[0, 1)`,
    /// a selection that matches nothing.
    pub fn new(model: Gpt2, cfg: TrainerConfig) -> Result<Self> {
        cfg.schedule.validate()?;
        if cfg.grad_accum == 0 {
            return Err(Error::arg("grad_accum", "must be at least 1"));
        }
        if let Some(c) = cfg.grad_clip {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::arg("grad_clip", format!("{c} must be finite and > 0")));
            }
        }
        if let Some(p) = cfg.dropout {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::arg("dropout", format!("{p} is not in [0, 1)")));
            }
        }
        let mask = cfg.selection.resolve(model.layout())?;
        // gradients + AdamW's two moments: sized together before any of them is allocated
        let n = model.num_parameters();
        let need = crate::mem::bytes_of::<f32>(n, "gradients and optimizer state")?.saturating_mul(3);
        crate::mem::ensure_available(need, "gradients and AdamW moments (3 × the parameters)")?;
        let opt = AdamW::new(model.layout(), &mask, cfg.optimizer)?;
        let grads = crate::mem::zeroed_f32(n, "gradients")?;
        Ok(Trainer { model, cfg, mask, opt, grads, acts: Activations::new(), step: 0, skipped: 0 })
    }

    /// The model being trained.
    pub fn model(&self) -> &Gpt2 {
        &self.model
    }

    /// Consumes the trainer, returning the model.
    pub fn into_model(self) -> Gpt2 {
        self.model
    }

    /// The configuration.
    pub fn config(&self) -> &TrainerConfig {
        &self.cfg
    }

    /// The resolved trainable tensors.
    pub fn mask(&self) -> &GradMask {
        &self.mask
    }

    /// The optimizer (moments, step count).
    pub fn optimizer(&self) -> &AdamW {
        &self.opt
    }

    /// Mutable optimizer (checkpoint restore).
    pub fn optimizer_mut(&mut self) -> &mut AdamW {
        &mut self.opt
    }

    /// The gradients of the last step (after clipping), flat in layout order.
    pub fn grads(&self) -> &[f32] {
        &self.grads
    }

    /// Steps taken (the index the next step will have).
    pub fn step_index(&self) -> usize {
        self.step
    }

    /// Sets the step counter (checkpoint restore).
    pub fn set_step_index(&mut self, step: usize, skipped: usize) {
        self.step = step;
        self.skipped = skipped;
    }

    /// Steps whose update was skipped for non-finite values.
    pub fn skipped_steps(&self) -> usize {
        self.skipped
    }

    /// Mutable access to the model's parameters (e.g. checkpoint restore).
    pub fn model_mut(&mut self) -> &mut Gpt2 {
        &mut self.model
    }

    /// One optimizer step on `grad_accum` batches drawn from `source` (targets equal to
    /// [`IGNORE_TARGET`] are ignored).
    pub fn step(&mut self, source: &mut dyn BatchSource) -> Result<StepStats> {
        let start = Instant::now();
        let mut batches = Vec::with_capacity(self.cfg.grad_accum);
        for _ in 0..self.cfg.grad_accum {
            let (x, y) = source.next_batch()?;
            let y = to_targets(&y)?;
            batches.push((x, y));
        }
        let views: Vec<_> = batches.iter().map(|(x, y)| (x.view(), y.view())).collect();
        self.step_timed(&views, start)
    }

    /// One optimizer step on the given micro-batches `(tokens [B, T], targets [B, T])`
    /// (negative targets are ignored); the gradient is the mean over the micro-batches.
    pub fn step_on(&mut self, micro: &[(ArrayView2<'_, u32>, ArrayView2<'_, i32>)]) -> Result<StepStats> {
        self.step_timed(micro, Instant::now())
    }

    fn step_timed(
        &mut self,
        micro: &[(ArrayView2<'_, u32>, ArrayView2<'_, i32>)],
        start: Instant,
    ) -> Result<StepStats> {
        if micro.is_empty() {
            return Err(Error::EmptyInput("no micro-batch given".into()));
        }
        let ranges = self.mask.trainable_ranges().unwrap_or_else(|| std::iter::once(0..self.grads.len()).collect());
        for r in &ranges {
            self.grads[r.clone()].fill(0.0);
        }
        let k = micro.len();
        let mut loss_sum = 0f64;
        let mut tokens = 0;
        let step_rng = Rng::new(self.cfg.seed).fork(self.step as u64);
        for (i, (x, y)) in micro.iter().enumerate() {
            let opts = BackwardOptions {
                loss_scale: 1.0 / k as f32,
                mask: &self.mask,
                dropout_seed: Some(step_rng.fork(i as u64).next_u64()),
                dropout: self.cfg.dropout,
            };
            let l = forward_backward_with(&self.model, &mut self.acts, &mut self.grads, *x, *y, &opts)?;
            loss_sum += l as f64;
            tokens += x.len();
        }
        let loss = (loss_sum / k as f64) as f32;
        let norm = match self.cfg.grad_clip {
            Some(c) => clip_grad_norm(&mut self.grads, &ranges, c),
            None => grad_norm(&self.grads, &ranges),
        };
        let lr = self.cfg.schedule.lr(self.step);
        let finite = loss.is_finite() && norm.is_finite();
        let mut skipped = false;
        if !finite {
            match self.cfg.non_finite {
                NonFinitePolicy::Error => {
                    let what = if loss.is_finite() { format!("gradient norm {norm}") } else { format!("loss {loss}") };
                    return Err(Error::NonFinite { step: self.step, what });
                }
                NonFinitePolicy::Skip => {
                    skipped = true;
                    self.skipped += 1;
                }
            }
        }
        if !skipped {
            let (model, grads) = (&mut self.model, &self.grads);
            self.opt.step(model.params_mut(), grads, lr);
        }
        let secs = start.elapsed().as_secs_f64();
        let stats = StepStats {
            step: self.step,
            loss,
            lr,
            grad_norm: norm,
            ms: secs * 1e3,
            tokens,
            tokens_per_sec: tokens as f64 / secs.max(1e-12),
            skipped,
        };
        self.step += 1;
        Ok(stats)
    }

    /// Mean loss of the current model over `batches` batches of `source` (no gradients).
    pub fn eval_loss(&mut self, source: &mut dyn BatchSource, batches: usize) -> Result<f32> {
        if batches == 0 {
            return Err(Error::arg("batches", "must be at least 1"));
        }
        let mut sum = 0f64;
        for _ in 0..batches {
            let (x, y) = source.next_batch()?;
            let y = to_targets(&y)?;
            sum += forward_loss(&self.model, &mut self.acts, x.view(), y.view())? as f64;
        }
        Ok((sum / batches as f64) as f32)
    }

    /// Mean loss of the current model on one batch (no gradients).
    pub fn loss_on(&mut self, tokens: ArrayView2<'_, u32>, targets: ArrayView2<'_, i32>) -> Result<f32> {
        forward_loss(&self.model, &mut self.acts, tokens, targets)
    }
}

/// The function of an [`EvalHook`]: a metric of the current model.
pub type EvalFn<'a> = Box<dyn FnMut(&Gpt2) -> Result<f64> + 'a>;

/// A periodic evaluation run by [`Trainer::run`]: validation loss, HellaSwag accuracy, a task
/// metric — anything computed from the current model.
pub struct EvalHook<'a> {
    /// Metric name.
    pub name: String,
    /// Run after every `every` steps (0: only after the last step) and after the last step.
    pub every: usize,
    /// Computes the metric from the current model.
    pub eval: EvalFn<'a>,
}

impl<'a> EvalHook<'a> {
    /// A hook named `name` running `eval` every `every` steps.
    pub fn new(name: impl Into<String>, every: usize, eval: impl FnMut(&Gpt2) -> Result<f64> + 'a) -> Self {
        EvalHook { name: name.into(), every, eval: Box::new(eval) }
    }
}

impl std::fmt::Debug for EvalHook<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvalHook").field("name", &self.name).field("every", &self.every).finish_non_exhaustive()
    }
}

/// One evaluation result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Hook name.
    pub name: String,
    /// Index of the step after which it was measured.
    pub step: usize,
    /// Value.
    pub value: f64,
}

/// What [`Trainer::run`] reports as it goes.
#[derive(Debug, Clone, Copy)]
pub enum TrainEvent<'e> {
    /// A step finished.
    Step(&'e StepStats),
    /// An evaluation hook ran.
    Eval(&'e Metric),
}

/// Everything [`Trainer::run`] measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunHistory {
    /// Per-step statistics.
    pub steps: Vec<StepStats>,
    /// Evaluation results in the order they were taken.
    pub metrics: Vec<Metric>,
}

impl Trainer {
    /// Trains until [`step_index`](Self::step_index) reaches `until`, running `hooks` on their
    /// schedule and reporting every step and evaluation to `on_event` (progress bars, logs).
    ///
    /// ```
    /// use gpt2::train::{weather::WeatherSource, EvalHook, LrSchedule, TrainEvent, Trainer, TrainerConfig};
    /// use gpt2::{Config, Gpt2};
    /// let model = Gpt2::new_random(Config::nano(11, 8), 0).unwrap();
    /// let cfg = TrainerConfig { schedule: LrSchedule::Constant(1e-3), ..Default::default() };
    /// let mut trainer = Trainer::new(model, cfg).unwrap();
    /// let mut data = WeatherSource::new(8, 1);
    /// let mut hooks = [EvalHook::new("params", 2, |m: &Gpt2| Ok(m.num_parameters() as f64))];
    /// let mut seen = 0;
    /// let h = trainer.run(&mut data, 4, &mut hooks, |e| if let TrainEvent::Step(_) = e { seen += 1 }).unwrap();
    /// assert_eq!((h.steps.len(), h.metrics.len(), seen), (4, 2, 4));
    /// ```
    pub fn run(
        &mut self,
        source: &mut dyn BatchSource,
        until: usize,
        hooks: &mut [EvalHook<'_>],
        mut on_event: impl FnMut(TrainEvent<'_>),
    ) -> Result<RunHistory> {
        let mut hist = RunHistory::default();
        while self.step < until {
            let st = self.step(source)?;
            on_event(TrainEvent::Step(&st));
            hist.steps.push(st);
            let last = self.step == until;
            for h in hooks.iter_mut() {
                if last || (h.every > 0 && self.step % h.every == 0) {
                    let value = (h.eval)(&self.model)?;
                    let m = Metric { name: h.name.clone(), step: st.step, value };
                    on_event(TrainEvent::Eval(&m));
                    hist.metrics.push(m);
                }
            }
        }
        Ok(hist)
    }
}
