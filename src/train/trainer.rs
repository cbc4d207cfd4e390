//! The training loop as a value: [`Trainer::step`] does one optimizer step (gradient
//! accumulation, clipping, schedule, AdamW) and returns its [`StepStats`]; printing, plotting
//! and checkpoint cadence are the caller's.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use super::backprop::{
    forward_backward_hooked, forward_backward_with, forward_loss, Activations, BackwardOptions, GradReady,
};
use super::optim::{clip_grad_norm, grad_norm, AdamW, AdamWConfig};
use super::schedule::LrSchedule;
use super::select::{GradMask, ParamSelection};
use crate::collective::{block_range, Collective, SingleProcess};
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
    /// Milliseconds spent in collective communication (gradient all-reduce or reduce-scatter,
    /// parameter all-gather, statistics); 0 for a single process.
    #[serde(default)]
    pub comm_ms: f64,
    /// The part of `comm_ms` the step waited for (equal to it unless the all-reduce overlaps
    /// the backward pass, [`DataParallel::overlap`]).
    #[serde(default)]
    pub comm_exposed_ms: f64,
}

/// How a [`Trainer`] works with the other ranks of its [`Collective`] (see
/// [`Trainer::distributed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DataParallel {
    /// ZeRO stage: 0 = every rank holds the whole AdamW state and all-reduces the gradient;
    /// 1 = the moments are sharded across ranks (reduce-scatter the gradient, each rank updates
    /// its block of the parameters, all-gather the parameters), so optimizer memory per rank is
    /// divided by the number of ranks. Both give the same updates.
    pub zero: u8,
    /// All-reduce the gradient in buckets (≥ [`bucket_bytes`](Self::bucket_bytes), last layers first, as PyTorch DDP) on a
    /// communication thread while the backward pass of the last micro-batch goes on; the sums
    /// are the same as without overlap. Applies to ZeRO stage 0 with every tensor trainable
    /// (otherwise the gradient is reduced after the backward pass).
    pub overlap: bool,
    /// Bucket size of the overlapped all-reduce in bytes (0: 25 MB).
    pub bucket_bytes: usize,
}

/// AdamW first and second moments in checkpoint order ([`Trainer::full_moments`]).
pub type Moments<'a> = (Cow<'a, [f32]>, Cow<'a, [f32]>);

/// ZeRO-1 bookkeeping: this rank's parameter block and the communication buffers.
#[derive(Debug)]
struct ZeroShard {
    /// The parameters this rank updates (`block_range(P, N, rank)`).
    block: Range<usize>,
    /// Block length `⌈P / N⌉` (every rank's buffers have it; the last blocks are padded).
    block_len: usize,
    /// `(parameter range, moment offset)` of the unsharded optimizer (checkpoint order).
    full_map: Vec<(Range<usize>, usize)>,
    /// Length of the unsharded moment buffers.
    full_len: usize,
    /// `N · block_len` values: gradients to reduce-scatter, then gathered parameters.
    wide: Vec<f32>,
    /// `block_len` values: this rank's reduced gradient block, then its parameter block.
    narrow: Vec<f32>,
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
    comm: Arc<dyn Collective>,
    dp: DataParallel,
    zero: Option<ZeroShard>,
    /// Gradient of the current micro-batch when accumulating (allocated on first use).
    accum: Vec<f32>,
    /// Buckets of the overlapped all-reduce (allocated on first use; swapped with `grads`).
    stage: Vec<f32>,
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
        Ok(Trainer {
            model,
            cfg,
            mask,
            opt,
            grads,
            acts: Activations::new(),
            step: 0,
            skipped: 0,
            comm: Arc::new(SingleProcess),
            dp: DataParallel::default(),
            zero: None,
            accum: Vec::new(),
            stage: Vec::new(),
        })
    }

    /// Makes this trainer one rank of a data-parallel group (collective: every rank calls it).
    ///
    /// Each rank then feeds [`step`](Self::step) its own micro-batches (e.g. a
    /// [`DataLoader`](crate::DataLoader) built with `with_rank(rank, size)`); the gradient is
    /// the mean over all ranks' micro-batches, reduced before clipping, so every rank sees the
    /// same norm, the same non-finite decision and the same update. Micro-batch `i` of rank `r`
    /// is global micro-batch `i·N + r` (its dropout masks and, with a rank-sharded
    /// `DataLoader`, its tokens), so `N` ranks with `grad_accum = k` compute what one process
    /// with `grad_accum = N·k` computes. Call it after [`Trainer::new`] /
    /// [`Trainer::from_checkpoint`] (the optimizer state is sharded here for ZeRO-1).
    ///
    /// Errors: [`Error::InvalidArgument`] for a ZeRO stage other than 0 or 1;
    /// [`Error::Collective`] when the ranks do not hold the same parameters and settings.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use gpt2::train::{DataParallel, Trainer, TrainerConfig};
    /// use gpt2::{Config, Gpt2, SingleProcess};
    /// let model = Gpt2::new_random(Config::nano(8, 5), 0).unwrap();
    /// let t = Trainer::new(model, TrainerConfig::default()).unwrap();
    /// let t = t.distributed(Arc::new(SingleProcess), DataParallel { zero: 1, ..Default::default() }).unwrap();
    /// assert_eq!(t.collective().size(), 1);
    /// ```
    pub fn distributed(mut self, comm: Arc<dyn Collective>, dp: DataParallel) -> Result<Self> {
        if dp.zero > 1 {
            return Err(Error::arg("zero", format!("ZeRO stage {} is not supported (0 or 1)", dp.zero)));
        }
        self.comm = comm;
        self.dp = dp;
        self.check_replicas()?;
        if dp.zero == 1 && self.zero.is_none() {
            let (n, p) = (self.comm.size(), self.grads.len());
            let block = block_range(p, n, self.comm.rank());
            let block_len = p.div_ceil(n);
            let full_map = self.opt.state_map();
            let full_len = self.opt.moments().0.len();
            self.opt = self.opt.shard(block.clone());
            self.zero = Some(ZeroShard {
                block,
                block_len,
                full_map,
                full_len,
                wide: vec![0.0; n * block_len],
                narrow: vec![0.0; block_len],
            });
        }
        Ok(self)
    }

    /// The group this trainer belongs to ([`SingleProcess`] unless [`distributed`](Self::distributed)).
    pub fn collective(&self) -> &Arc<dyn Collective> {
        &self.comm
    }

    /// The data-parallel settings.
    pub fn data_parallel(&self) -> DataParallel {
        self.dp
    }

    /// A 64-bit fingerprint of the parameters and the trainer settings (equal on every rank of
    /// a healthy data-parallel group).
    pub fn fingerprint(&self) -> u64 {
        use rayon::prelude::*;
        const FNV: u64 = 0xcbf2_9ce4_8422_2325;
        let mix = |h: u64, x: u64| (h ^ x).wrapping_mul(0x0100_0000_01b3);
        let parts: Vec<u64> = self
            .model
            .params()
            .par_chunks(1 << 16)
            .map(|c| c.iter().fold(FNV, |h, x| mix(h, x.to_bits() as u64)))
            .collect();
        let cfg = serde_json::to_string(&self.cfg).expect("trainer config serializes");
        let h = cfg.bytes().fold(FNV, |h, b| mix(h, b as u64));
        let h = [self.step as u64, self.skipped as u64, self.opt.steps()].iter().fold(h, |h, &x| mix(h, x));
        parts.iter().fold(h, |h, &x| mix(h, x))
    }

    /// Checks that every rank holds the same parameters, settings and step (collective; always
    /// `Ok` for a single process). Errors: [`Error::Collective`] naming how many ranks differ.
    pub fn check_replicas(&self) -> Result<()> {
        if self.comm.size() == 1 {
            return Ok(());
        }
        let mine = self.fingerprint();
        let mut root = mine.to_le_bytes();
        self.comm.broadcast_bytes(&mut root, 0)?;
        let mut differ = [f64::from(u8::from(u64::from_le_bytes(root) != mine))];
        self.comm.all_reduce_sum_f64(&mut differ)?;
        if differ[0] > 0.0 {
            return Err(Error::Collective(format!(
                "{} of {} ranks hold parameters or trainer settings that differ from rank 0's (step {})",
                differ[0] as usize,
                self.comm.size(),
                self.step
            )));
        }
        Ok(())
    }

    /// The AdamW moments in checkpoint order (trainable tensors, layout order), gathered from
    /// every rank under ZeRO-1 (collective then; a borrow otherwise).
    pub fn full_moments(&self) -> Result<Moments<'_>> {
        let Some(z) = self.zero.as_ref() else {
            let (m, v) = self.opt.moments();
            return Ok((Cow::Borrowed(m), Cow::Borrowed(v)));
        };
        let n = self.comm.size();
        let (mut m_blk, mut v_blk) = (vec![0f32; z.block_len], vec![0f32; z.block_len]);
        self.opt.moments_to_param_space(&mut m_blk, &mut v_blk, z.block.start);
        let mut wide = vec![0f32; n * z.block_len];
        let mut gather = |blk: &[f32]| -> Result<Vec<f32>> {
            self.comm.all_gather_f32(blk, &mut wide)?;
            let mut full = vec![0f32; z.full_len];
            for (r, at) in &z.full_map {
                full[*at..*at + r.len()].copy_from_slice(&wide[r.clone()]);
            }
            Ok(full)
        };
        let m = gather(&m_blk)?;
        let v = gather(&v_blk)?;
        Ok((Cow::Owned(m), Cow::Owned(v)))
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
        let (n, rank) = (self.comm.size(), self.comm.rank());
        let mut loss_sum = 0f64;
        let mut tokens = 0;
        let step_rng = Rng::new(self.cfg.seed).fork(self.step as u64);
        let overlap = self.dp.overlap && n > 1 && self.zero.is_none() && self.mask.is_all();
        let (mut comm_secs, mut exposed_secs) = (0.0, 0.0);
        for (i, (x, y)) in micro.iter().enumerate() {
            let opts = BackwardOptions {
                loss_scale: 1.0 / (k * n) as f32,
                mask: &self.mask,
                // global micro-batch index: rank r's i-th is the (i·N + r)-th of the step
                dropout_seed: Some(step_rng.fork((i * n + rank) as u64).next_u64()),
                dropout: self.cfg.dropout,
            };
            // Each micro-batch's gradient is computed into a zeroed buffer and then added, so
            // the sum has the same rounding whether the micro-batches ran here or on other ranks
            // (an N-rank run equals one process with N× accumulation, bit for bit at N = 2).
            let l = if overlap && i + 1 == k {
                // the last micro-batch: all-reduce each bucket as soon as backward finishes it
                self.stage.resize(self.grads.len(), 0.0);
                let (grads, prior) = if i == 0 {
                    (&mut self.grads[..], None)
                } else {
                    self.accum.resize(self.grads.len(), 0.0);
                    self.accum.fill(0.0);
                    (&mut self.accum[..], Some(&self.grads[..]))
                };
                let (model, acts, stage) = (&self.model, &mut self.acts, &mut self.stage[..]);
                let run = |ready: GradReady<'_>| forward_backward_hooked(model, acts, grads, *x, *y, &opts, ready);
                let (l, busy, exposed) =
                    overlapped_all_reduce(self.comm.as_ref(), self.dp.bucket_bytes, stage, prior, run)?;
                std::mem::swap(&mut self.grads, &mut self.stage);
                comm_secs += busy;
                exposed_secs += exposed;
                l
            } else if i == 0 {
                forward_backward_with(&self.model, &mut self.acts, &mut self.grads, *x, *y, &opts)?
            } else {
                self.accum.resize(self.grads.len(), 0.0);
                for r in &ranges {
                    self.accum[r.clone()].fill(0.0);
                }
                let l = forward_backward_with(&self.model, &mut self.acts, &mut self.accum, *x, *y, &opts)?;
                add_into(&mut self.grads, &self.accum, &ranges);
                l
            };
            loss_sum += l as f64;
            tokens += x.len();
        }
        let (loss, norm) = if n == 1 {
            let norm = match self.cfg.grad_clip {
                Some(c) => clip_grad_norm(&mut self.grads, &ranges, c),
                None => grad_norm(&self.grads, &ranges),
            };
            ((loss_sum / k as f64) as f32, norm)
        } else {
            let t0 = Instant::now();
            let mut totals = [loss_sum, tokens as f64, k as f64];
            self.comm.all_reduce_sum_f64(&mut totals)?;
            if totals[2] != (k * n) as f64 {
                return Err(Error::Collective(format!(
                    "step {}: the ranks ran {} micro-batches in all, expected {n} ranks × {k}",
                    self.step, totals[2]
                )));
            }
            tokens = totals[1] as usize;
            let norm = if overlap {
                let secs = t0.elapsed().as_secs_f64();
                (comm_secs, exposed_secs) = (comm_secs + secs, exposed_secs + secs);
                match self.cfg.grad_clip {
                    Some(c) => clip_grad_norm(&mut self.grads, &ranges, c),
                    None => grad_norm(&self.grads, &ranges),
                }
            } else {
                let norm = self.reduce_gradients(&ranges)?;
                let secs = t0.elapsed().as_secs_f64();
                (comm_secs, exposed_secs) = (comm_secs + secs, exposed_secs + secs);
                norm
            };
            ((totals[0] / (k * n) as f64) as f32, norm)
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
            if let Some(z) = self.zero.as_mut() {
                let t0 = Instant::now();
                let params = self.model.params_mut();
                let own = z.block.len();
                z.narrow[..own].copy_from_slice(&params[z.block.clone()]);
                z.narrow[own..].fill(0.0);
                self.comm.all_gather_f32(&z.narrow, &mut z.wide)?;
                let p = params.len();
                params.copy_from_slice(&z.wide[..p]);
                let secs = t0.elapsed().as_secs_f64();
                (comm_secs, exposed_secs) = (comm_secs + secs, exposed_secs + secs);
            }
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
            comm_ms: comm_secs * 1e3,
            comm_exposed_ms: exposed_secs * 1e3,
        };
        self.step += 1;
        Ok(stats)
    }

    /// Sums the gradient over the ranks (all-reduce, or reduce-scatter of this rank's block under
    /// ZeRO-1), clips it, and returns the global norm before clipping — the same on every rank.
    fn reduce_gradients(&mut self, ranges: &[Range<usize>]) -> Result<f64> {
        let Some(z) = self.zero.as_mut() else {
            for r in ranges {
                self.comm.all_reduce_sum_f32(&mut self.grads[r.clone()])?;
            }
            return Ok(match self.cfg.grad_clip {
                Some(c) => clip_grad_norm(&mut self.grads, ranges, c),
                None => grad_norm(&self.grads, ranges),
            });
        };
        let p = self.grads.len();
        z.wide[..p].copy_from_slice(&self.grads);
        z.wide[p..].fill(0.0);
        self.comm.reduce_scatter_sum_f32(&z.wide, &mut z.narrow)?;
        let b = z.block.clone();
        self.grads[b.clone()].copy_from_slice(&z.narrow[..b.len()]);
        let local: Vec<Range<usize>> =
            ranges.iter().map(|r| r.start.max(b.start)..r.end.min(b.end)).filter(|r| r.start < r.end).collect();
        let sq = grad_norm(&self.grads, &local);
        let mut total = [sq * sq];
        self.comm.all_reduce_sum_f64(&mut total)?;
        let norm = total[0].sqrt();
        if let Some(c) = self.cfg.grad_clip {
            scale_grads(&mut self.grads, &local, c, norm);
        }
        Ok(norm)
    }

    /// Mean loss of the current model over `batches` batches of `source` (no gradients).
    ///
    /// In a data-parallel group (collective), every rank must pass the same, unsharded source
    /// (a `DataLoader` of rank 0 of 1): batch `j` is evaluated by rank `j mod N` only and the
    /// losses are summed exactly, so the result equals one process's.
    pub fn eval_loss(&mut self, source: &mut dyn BatchSource, batches: usize) -> Result<f32> {
        if batches == 0 {
            return Err(Error::arg("batches", "must be at least 1"));
        }
        let (n, rank) = (self.comm.size(), self.comm.rank());
        let mut losses = vec![0f64; batches];
        for (j, l) in losses.iter_mut().enumerate() {
            let (x, y) = source.next_batch()?;
            if j % n == rank {
                let y = to_targets(&y)?;
                *l = forward_loss(&self.model, &mut self.acts, x.view(), y.view())? as f64;
            }
        }
        // every batch's loss is nonzero on one rank only: the sum is exact, the same as one process
        self.comm.all_reduce_sum_f64(&mut losses)?;
        Ok((losses.iter().sum::<f64>() / batches as f64) as f32)
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

/// Scales `grads` over `ranges` like [`clip_grad_norm`] does for a given global `norm`.
fn scale_grads(grads: &mut [f32], ranges: &[Range<usize>], max_norm: f64, norm: f64) {
    use rayon::prelude::*;
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        let coef = coef as f32;
        for r in ranges {
            grads[r.clone()].par_chunks_mut(1 << 15).for_each(|c| c.iter_mut().for_each(|g| *g *= coef));
        }
    }
}

/// `acc += x` over `ranges`.
fn add_into(acc: &mut [f32], x: &[f32], ranges: &[Range<usize>]) {
    use rayon::prelude::*;
    for r in ranges {
        acc[r.clone()].par_chunks_mut(1 << 15).zip(x[r.clone()].par_chunks(1 << 15)).for_each(|(a, b)| {
            a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
        });
    }
}

/// Bucket size of the overlapped all-reduce (PyTorch DDP's default `bucket_cap_mb = 25`).
const BUCKET_BYTES: usize = 25 << 20;

/// Runs `backward` (which reports finished gradient ranges from the top of the layout down)
/// while a communication thread all-reduces them in buckets of at least `bucket_bytes`
/// ([`BUCKET_BYTES`] for 0).
/// The reduced gradient ends up in `stage` (resized to the gradient length); with `prior`, each
/// range is `prior + the reported gradient` (gradient accumulation). Returns the loss, the
/// seconds spent in all-reduce calls and the seconds the caller waited after the backward pass.
fn overlapped_all_reduce(
    comm: &dyn Collective,
    bucket_bytes: usize,
    stage: &mut [f32],
    prior: Option<&[f32]>,
    backward: impl FnOnce(GradReady<'_>) -> Result<f32>,
) -> Result<(f32, f64, f64)> {
    let bucket_bytes = if bucket_bytes == 0 { BUCKET_BYTES } else { bucket_bytes };
    std::thread::scope(|sc| {
        let (tx, rx) = std::sync::mpsc::channel::<&mut [f32]>();
        let worker = sc.spawn(move || -> Result<f64> {
            let mut busy = 0.0;
            for bucket in rx {
                let t0 = Instant::now();
                comm.all_reduce_sum_f32(bucket)?;
                busy += t0.elapsed().as_secs_f64();
            }
            Ok(busy)
        });
        let mut rest: &mut [f32] = stage;
        let mut low = rest.len(); // the pending bucket is [low, rest.len())
        let mut failed = None;
        let loss = {
            let mut ready = |r: Range<usize>, g: &[f32]| {
                if r.end != low || failed.is_some() {
                    failed = Some(format!("backward reported {r:?}, expected a range ending at {low}"));
                    return;
                }
                let dst = &mut rest[r.clone()];
                dst.copy_from_slice(g);
                if let Some(p) = prior {
                    dst.iter_mut().zip(&p[r.clone()]).for_each(|(d, p)| *d += p);
                }
                low = r.start;
                if (rest.len() - low) * 4 >= bucket_bytes {
                    let (lo, hi) = std::mem::take(&mut rest).split_at_mut(low);
                    rest = lo;
                    let _ = tx.send(hi);
                }
            };
            backward(&mut ready)
        };
        if low < rest.len() {
            let (_, hi) = std::mem::take(&mut rest).split_at_mut(low);
            let _ = tx.send(hi);
        }
        drop(tx);
        let t0 = Instant::now();
        let busy = worker.join().map_err(|_| Error::Collective("the communication thread panicked".into()))??;
        let exposed = t0.elapsed().as_secs_f64();
        let loss = loss?;
        if let Some(why) = failed {
            return Err(Error::Collective(format!("overlapped all-reduce: {why}")));
        }
        if low != 0 {
            return Err(Error::Collective(format!("overlapped all-reduce: gradient below {low} never reported")));
        }
        Ok((loss, busy, exposed))
    })
}
