//! AdamW with decoupled weight decay, and global-norm gradient clipping.
//!
//! The update follows `torch.optim.AdamW` (single-tensor CPU path) operation by operation:
//! `p ← p·(1 − lr·wd)` (by default only tensors with ≥ 2 dimensions, as nanoGPT's
//! `configure_optimizers` groups them; [`DecayGroups::All`] decays every tensor, as
//! `torch.optim.AdamW(model.parameters(), …)` does), `m ← m + (1−β₁)(g − m)`, `v ← β₂v + (1−β₂)g²`,
//! `p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)`. Moments live in flat buffers that cover only
//! the trainable tensors; the update runs in parallel over fixed segments (deterministic).

use std::ops::Range;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::select::GradMask;
use crate::error::{Error, Result};
use crate::model::ParamLayout;

/// Elements per parallel task of the optimizer and the norm.
const SEGMENT: usize = 1 << 15;

/// Which tensors weight decay applies to.
///
/// ```
/// use gpt2::train::DecayGroups;
/// assert_eq!("all".parse::<DecayGroups>().unwrap(), DecayGroups::All);
/// assert_eq!("nanogpt".parse::<DecayGroups>().unwrap(), DecayGroups::Matrices);
/// assert_eq!(DecayGroups::default().to_string(), "nanogpt");
/// assert!("some".parse::<DecayGroups>().is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecayGroups {
    /// nanoGPT's `configure_optimizers`: tensors with ≥ 2 dimensions (the matrices and the
    /// embeddings) decay, biases and layer-norm parameters do not.
    #[default]
    Matrices,
    /// Every trainable tensor decays: `torch.optim.AdamW(model.parameters(), weight_decay=…)`.
    All,
}

impl DecayGroups {
    /// Whether a tensor of this shape decays.
    pub fn decays(self, shape: &[usize]) -> bool {
        match self {
            DecayGroups::Matrices => shape.len() >= 2,
            DecayGroups::All => true,
        }
    }
}

impl std::str::FromStr for DecayGroups {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "nanogpt" | "matrices" => Ok(DecayGroups::Matrices),
            "all" => Ok(DecayGroups::All),
            other => Err(Error::arg("weight_decay_groups", format!("`{other}` is not `nanogpt` or `all`"))),
        }
    }
}

impl std::fmt::Display for DecayGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DecayGroups::Matrices => "nanogpt",
            DecayGroups::All => "all",
        })
    }
}

/// AdamW hyper-parameters (PyTorch's defaults; weight decay grouped as nanoGPT does).
///
/// ```
/// use gpt2::train::{AdamWConfig, DecayGroups};
/// let c = AdamWConfig { weight_decay: 0.1, beta2: 0.95, ..Default::default() };
/// assert_eq!(c.decay_groups, DecayGroups::Matrices);
/// // as `torch.optim.AdamW(model.parameters(), betas=(0.9, 0.95), weight_decay=0.1)`:
/// let torch_like = AdamWConfig { decay_groups: DecayGroups::All, ..c };
/// assert!(c.validate().is_ok() && torch_like.validate().is_ok());
/// assert!(AdamWConfig { beta1: 1.0, ..c }.validate().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// First-moment decay β₁ in `[0, 1)`.
    pub beta1: f64,
    /// Second-moment decay β₂ in `[0, 1)`.
    pub beta2: f64,
    /// Denominator epsilon (> 0).
    pub eps: f64,
    /// Decoupled weight decay (≥ 0), applied as `p·(1 − lr·wd)` to the tensors
    /// [`decay_groups`](Self::decay_groups) selects.
    pub weight_decay: f64,
    /// Which tensors decay (default: nanoGPT's grouping, matrices only).
    #[serde(default)]
    pub decay_groups: DecayGroups,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, decay_groups: DecayGroups::Matrices }
    }
}

impl AdamWConfig {
    /// Checks the ranges. Errors: [`Error::InvalidArgument`] naming the bad setting.
    pub fn validate(&self) -> Result<()> {
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(Error::arg(name, format!("{b} is not in [0, 1)")));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::arg("eps", format!("{} must be finite and > 0", self.eps)));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::arg("weight_decay", format!("{} must be finite and ≥ 0", self.weight_decay)));
        }
        Ok(())
    }
}

/// One contiguous run of a trainable tensor: parameter range, where its moments start, decay.
#[derive(Debug, Clone, PartialEq)]
struct Segment {
    params: Range<usize>,
    state: usize,
    decay: bool,
}

/// AdamW state over the trainable tensors of a [`ParamLayout`].
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW {
    cfg: AdamWConfig,
    m: Vec<f32>,
    v: Vec<f32>,
    t: u64,
    segments: Vec<Segment>,
}

/// Splits the trainable tensors into segments of at most [`SEGMENT`] scalars.
fn segments(layout: &ParamLayout, mask: &GradMask, groups: DecayGroups) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut state = 0;
    for p in layout.params() {
        if !mask.wants(p.offset) {
            continue;
        }
        let r = p.range();
        let mut s = r.start;
        while s < r.end {
            let e = (s + SEGMENT).min(r.end);
            out.push(Segment { params: s..e, state, decay: groups.decays(&p.shape) });
            state += e - s;
            s = e;
        }
    }
    out
}

impl AdamW {
    /// Zeroed moments for the tensors `mask` selects. Errors: invalid settings.
    pub fn new(layout: &ParamLayout, mask: &GradMask, cfg: AdamWConfig) -> Result<Self> {
        cfg.validate()?;
        let segments = segments(layout, mask, cfg.decay_groups);
        let n = segments.iter().map(|s| s.params.len()).sum();
        let (m, v) =
            (crate::mem::zeroed_f32(n, "AdamW first moments")?, crate::mem::zeroed_f32(n, "AdamW second moments")?);
        Ok(AdamW { cfg, m, v, t: 0, segments })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }

    /// Updates taken so far.
    pub fn steps(&self) -> u64 {
        self.t
    }

    /// First and second moments (flat, trainable tensors only, in layout order).
    pub fn moments(&self) -> (&[f32], &[f32]) {
        (&self.m, &self.v)
    }

    /// Restores moments and the step count (checkpoint resume). Errors: wrong lengths.
    pub fn set_state(&mut self, m: Vec<f32>, v: Vec<f32>, t: u64) -> Result<()> {
        if m.len() != self.m.len() || v.len() != self.v.len() {
            return Err(Error::Shape(format!(
                "optimizer state holds {} / {} values, expected {} (same model and trainable tensors)",
                m.len(),
                v.len(),
                self.m.len()
            )));
        }
        self.m = m;
        self.v = v;
        self.t = t;
        Ok(())
    }

    /// One update of `params` from `grads` (both the full flat buffer) at learning rate `lr`.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f64) {
        self.t += 1;
        let AdamWConfig { beta1, beta2, eps, weight_decay, .. } = self.cfg;
        let t = self.t as i32;
        let bc1 = 1.0 - beta1.powi(t);
        let bc2 = 1.0 - beta2.powi(t);
        let step_size = (lr / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let decay = (1.0 - lr * weight_decay) as f32;
        let (w1, b2, w2, eps) = ((1.0 - beta1) as f32, beta2 as f32, (1.0 - beta2) as f32, eps as f32);
        let pp = SendPtr(params.as_mut_ptr());
        let plen = params.len();
        let mp = SendPtr(self.m.as_mut_ptr());
        let vp = SendPtr(self.v.as_mut_ptr());
        self.segments.par_iter().for_each(|s| {
            assert!(s.params.end <= plen);
            let len = s.params.len();
            // SAFETY: segments are disjoint ranges of params and of the moment buffers.
            let (p, m, v) = unsafe {
                (
                    std::slice::from_raw_parts_mut(pp.get().add(s.params.start), len),
                    std::slice::from_raw_parts_mut(mp.get().add(s.state), len),
                    std::slice::from_raw_parts_mut(vp.get().add(s.state), len),
                )
            };
            let g = &grads[s.params.clone()];
            if s.decay {
                p.iter_mut().for_each(|x| *x *= decay);
            }
            for i in 0..len {
                let gi = g[i];
                m[i] += w1 * (gi - m[i]);
                v[i] = v[i] * b2 + w2 * (gi * gi);
                let denom = v[i].sqrt() / bc2_sqrt + eps;
                p[i] += -step_size * (m[i] / denom);
            }
        });
    }

    /// Flat ranges the optimizer updates (the trainable tensors).
    pub fn ranges(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        self.segments.iter().map(|s| s.params.clone())
    }

    /// Where each run of the moment buffers lives in parameter space: `(parameter range,
    /// offset in the moment buffers)`, in moment order.
    pub(crate) fn state_map(&self) -> Vec<(Range<usize>, usize)> {
        self.segments.iter().map(|s| (s.params.clone(), s.state)).collect()
    }

    /// ZeRO-1: the same optimizer restricted to the parameters in `block` — the moments outside
    /// it are dropped, and [`step`](Self::step) updates only `block` (the same arithmetic, so a
    /// set of shards covering every parameter does exactly what the whole optimizer does).
    pub(crate) fn shard(&self, block: Range<usize>) -> AdamW {
        let (mut m, mut v, mut segments) = (Vec::new(), Vec::new(), Vec::new());
        for s in &self.segments {
            let (a, b) = (s.params.start.max(block.start), s.params.end.min(block.end));
            if a >= b {
                continue;
            }
            let from = s.state + (a - s.params.start);
            segments.push(Segment { params: a..b, state: m.len(), decay: s.decay });
            m.extend_from_slice(&self.m[from..from + (b - a)]);
            v.extend_from_slice(&self.v[from..from + (b - a)]);
        }
        AdamW { cfg: self.cfg, m, v, t: self.t, segments }
    }

    /// Writes the moments into parameter-space buffers whose index 0 is parameter `origin`
    /// (positions of non-trainable parameters are left as they are).
    pub(crate) fn moments_to_param_space(&self, m_out: &mut [f32], v_out: &mut [f32], origin: usize) {
        for s in &self.segments {
            let (a, n) = (s.params.start - origin, s.params.len());
            m_out[a..a + n].copy_from_slice(&self.m[s.state..s.state + n]);
            v_out[a..a + n].copy_from_slice(&self.v[s.state..s.state + n]);
        }
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to hand disjoint segments to rayon tasks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    #[inline(always)]
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Global L2 norm of `grads` over `ranges` (f64 partial sums per fixed segment, added in order).
pub fn grad_norm(grads: &[f32], ranges: &[Range<usize>]) -> f64 {
    let parts: Vec<Range<usize>> = ranges
        .iter()
        .flat_map(|r| (r.start..r.end).step_by(SEGMENT).map(move |s| s..(s + SEGMENT).min(r.end)))
        .collect();
    let sums: Vec<f64> = parts
        .par_iter()
        .map(|r| {
            let mut acc = [0f32; 16];
            let mut ch = grads[r.clone()].chunks_exact(16);
            for c in &mut ch {
                for i in 0..16 {
                    acc[i] += c[i] * c[i];
                }
            }
            acc.iter().map(|&x| x as f64).sum::<f64>()
                + ch.remainder().iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>()
        })
        .collect();
    sums.iter().sum::<f64>().sqrt()
}

/// Scales `grads` over `ranges` so their global norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_`: `coef = min(1, max_norm / (norm + 1e-6))`. Returns the
/// norm before clipping.
pub fn clip_grad_norm(grads: &mut [f32], ranges: &[Range<usize>], max_norm: f64) -> f64 {
    let norm = grad_norm(grads, ranges);
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        let coef = coef as f32;
        for r in ranges {
            grads[r.clone()].par_chunks_mut(SEGMENT).for_each(|c| c.iter_mut().for_each(|g| *g *= coef));
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    #[test]
    fn adamw_matches_hand_computed_steps_and_decays_only_matrices() {
        let layout = ParamLayout::new(&Config::new(1, 1, 4, 4, 6));
        let mask = GradMask::all();
        let cfg = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, ..Default::default() };
        let mut opt = AdamW::new(&layout, &mask, cfg).unwrap();
        let mut p = vec![1.0f32; layout.total()];
        let g = vec![0.5f32; layout.total()];
        opt.step(&mut p, &g, 0.01);
        // step 1: m = 0.05, v = 0.0125, m̂ = 0.5, v̂ = 0.25 → update = lr · 0.5/0.5 = 0.01
        let wte = layout.get("wte.weight").unwrap().offset;
        let ln = layout.get("h.0.ln_1.weight").unwrap().offset;
        assert!((p[wte] - (1.0 * (1.0 - 0.001) - 0.01)).abs() < 1e-6, "{}", p[wte]);
        assert!((p[ln] - (1.0 - 0.01)).abs() < 1e-6, "{}", p[ln]);
        assert_eq!(opt.steps(), 1);
        // DecayGroups::All: the layer norm decays too
        let mut all = AdamW::new(&layout, &mask, AdamWConfig { decay_groups: DecayGroups::All, ..cfg }).unwrap();
        let mut p = vec![1.0f32; layout.total()];
        all.step(&mut p, &g, 0.01);
        assert!((p[wte] - (1.0 * (1.0 - 0.001) - 0.01)).abs() < 1e-6, "{}", p[wte]);
        assert!((p[ln] - (1.0 * (1.0 - 0.001) - 0.01)).abs() < 1e-6, "{}", p[ln]);
        assert!(AdamW::new(&layout, &mask, AdamWConfig { eps: 0.0, ..cfg }).is_err());
        assert!(AdamW::new(&layout, &mask, AdamWConfig { weight_decay: -1.0, ..cfg }).is_err());
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let mut g = vec![3.0f32, 4.0, 100.0];
        let norm = clip_grad_norm(&mut g, std::slice::from_ref(&(0..2)), 1.0);
        assert!((norm - 5.0).abs() < 1e-12);
        assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6 && g[2] == 100.0);
        let n2 = clip_grad_norm(&mut g, std::slice::from_ref(&(0..2)), 10.0);
        assert!((n2 - 1.0).abs() < 1e-5 && (g[0] - 0.6).abs() < 1e-6);
    }
}
