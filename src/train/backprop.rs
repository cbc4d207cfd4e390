//! The training forward pass (keeping what backward needs) and the manual backward pass.
//!
//! [`Activations`] owns every buffer of one `(B, T)` shape; it grows when a larger batch comes
//! and is reused otherwise, so a training step allocates nothing large. The forward saves, per
//! layer: the block input (residual stream), `ln_1`/`ln_2` outputs with their mean and 1/std,
//! the fused `qkv`, the attention probabilities, the attention output, the mid-block residual,
//! the MLP pre-activation and its GELU. The LM head and the cross-entropy are fused and computed
//! in row chunks: logits for a chunk of rows, softmax–cross-entropy turning them into their
//! gradient in place, then the two backward GEMMs of the tied head — so the `[B·T, V]` logits
//! never exist at once.

use ndarray::ArrayView2;

use crate::error::{Error, Result};
use crate::kernels::attention::{attention_apply, attention_backward, attention_forward, AttnDims, HeadView};
use crate::kernels::dropout::{dropout_apply, dropout_mask};
use crate::kernels::embed::{embed_backward, embed_forward};
use crate::kernels::gelu::{gelu_backward, gelu_forward};
use crate::kernels::layernorm::{layernorm_backward, layernorm_forward};
use crate::kernels::matmul::{matmul_backward, matmul_bt_backward, matmul_forward, matmul_forward_bt};
use crate::kernels::residual::residual_forward;
use crate::kernels::softmax::softmax_cross_entropy;
use crate::model::{Config, Gpt2};
use crate::rng::Rng;

use super::select::GradMask;

/// Upper bound on logits held at once by the fused LM head (floats): 32 Mi = 128 MiB.
const HEAD_CHUNK_FLOATS: usize = 1 << 25;

/// Saved activations and scratch for training at one `(B, T)`.
///
/// Create once (`Activations::default()`) and pass to every step; it resizes itself.
#[derive(Debug, Default, Clone)]
pub struct Activations {
    b: usize,
    t: usize,
    tokens: Vec<u32>,
    pos: Vec<u32>,
    targets: Vec<i32>,
    /// Residual stream entering block `l` at `l`, the final one at `L`: `(L+1)·[N, C]`.
    res: Vec<f32>,
    /// Residual stream after the attention half of block `l`: `L·[N, C]`.
    res_mid: Vec<f32>,
    ln1: Vec<f32>,
    ln1_mean: Vec<f32>,
    ln1_rstd: Vec<f32>,
    qkv: Vec<f32>,
    probs: Vec<f32>,
    atty: Vec<f32>,
    ln2: Vec<f32>,
    ln2_mean: Vec<f32>,
    ln2_rstd: Vec<f32>,
    fch: Vec<f32>,
    fch_gelu: Vec<f32>,
    lnf: Vec<f32>,
    lnf_mean: Vec<f32>,
    lnf_rstd: Vec<f32>,
    losses: Vec<f32>,
    logits: Vec<f32>,
    proj: Vec<f32>,
    // backward scratch
    dres: Vec<f32>,
    dln: Vec<f32>,
    datty: Vec<f32>,
    dqkv: Vec<f32>,
    dfch: Vec<f32>,
    dfch_gelu: Vec<f32>,
    dscratch: Vec<f32>,
    dproj: Vec<f32>,
    // dropout (train mode with p > 0 only): multipliers 0 or 1/(1-p), dropped probabilities
    drop: Option<Dropout>,
    drop_embd: Vec<f32>,
    drop_res1: Vec<f32>,
    drop_res2: Vec<f32>,
    drop_probs: Vec<f32>,
}

/// Dropout probabilities of the current forward pass.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Dropout {
    embd: f32,
    attn: f32,
    resid: f32,
}

fn fit(v: &mut Vec<f32>, len: usize) {
    v.resize(len, 0.0);
}

/// Rows of the fused LM head processed at once.
fn head_rows(n: usize, vocab: usize) -> usize {
    let max_rows = (HEAD_CHUNK_FLOATS / vocab.max(1)).clamp(1, n.max(1));
    // equal-sized chunks (e.g. 2 × 512 rather than 667 + 357)
    n.div_ceil(n.div_ceil(max_rows)).max(1)
}

impl Activations {
    /// Empty buffers; they grow on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resizes every buffer for `(b, t)` under `cfg` (no-op when the shape is unchanged).
    fn ensure(&mut self, cfg: &Config, b: usize, t: usize, backward: bool) {
        let (c, h, l, nh, v) = (cfg.n_embd, cfg.mlp_hidden(), cfg.n_layer, cfg.n_head, cfg.vocab_size);
        let n = b * t;
        self.b = b;
        self.t = t;
        fit(&mut self.res, (l + 1) * n * c);
        fit(&mut self.res_mid, l * n * c);
        fit(&mut self.ln1, l * n * c);
        fit(&mut self.ln1_mean, l * n);
        fit(&mut self.ln1_rstd, l * n);
        fit(&mut self.qkv, l * n * 3 * c);
        fit(&mut self.probs, l * b * nh * t * t);
        fit(&mut self.atty, l * n * c);
        fit(&mut self.ln2, l * n * c);
        fit(&mut self.ln2_mean, l * n);
        fit(&mut self.ln2_rstd, l * n);
        fit(&mut self.fch, l * n * h);
        fit(&mut self.fch_gelu, l * n * h);
        fit(&mut self.lnf, n * c);
        fit(&mut self.lnf_mean, n);
        fit(&mut self.lnf_rstd, n);
        fit(&mut self.losses, n);
        fit(&mut self.logits, head_rows(n, v) * v);
        fit(&mut self.proj, n * c);
        if backward {
            fit(&mut self.dres, n * c);
            fit(&mut self.dln, n * c);
            fit(&mut self.datty, n * c);
            fit(&mut self.dqkv, n * 3 * c);
            fit(&mut self.dfch, n * h);
            fit(&mut self.dfch_gelu, n * h);
            fit(&mut self.dproj, n * c);
        }
        if let Some(d) = self.drop {
            fit(&mut self.drop_embd, if d.embd > 0.0 { n * c } else { 0 });
            fit(&mut self.drop_res1, if d.resid > 0.0 { l * n * c } else { 0 });
            fit(&mut self.drop_res2, if d.resid > 0.0 { l * n * c } else { 0 });
            fit(&mut self.drop_probs, if d.attn > 0.0 { l * b * nh * t * t } else { 0 });
        }
    }

    /// Per-position losses of the last call, `[B·T]` (0 where the target is ignored).
    pub fn losses(&self) -> &[f32] {
        &self.losses[..self.b * self.t]
    }

    /// Bytes currently held.
    pub fn bytes(&self) -> usize {
        let f = [
            &self.res,
            &self.res_mid,
            &self.ln1,
            &self.ln1_mean,
            &self.ln1_rstd,
            &self.qkv,
            &self.probs,
            &self.atty,
            &self.ln2,
            &self.ln2_mean,
            &self.ln2_rstd,
            &self.fch,
            &self.fch_gelu,
            &self.lnf,
            &self.lnf_mean,
            &self.lnf_rstd,
            &self.losses,
            &self.logits,
            &self.proj,
            &self.dres,
            &self.dln,
            &self.datty,
            &self.dqkv,
            &self.dfch,
            &self.dfch_gelu,
            &self.dproj,
            &self.drop_embd,
            &self.drop_res1,
            &self.drop_res2,
            &self.drop_probs,
        ];
        f.iter().map(|v| v.capacity() * 4).sum::<usize>() + (self.tokens.capacity() + self.pos.capacity()) * 4
    }
}

/// Two disjoint mutable ranges `a` and `b` (`(offset, len)`, `a` before `b`) of one buffer.
fn pair_mut(g: &mut [f32], a: (usize, usize), b: (usize, usize)) -> (&mut [f32], &mut [f32]) {
    assert!(a.0 + a.1 <= b.0, "pair_mut: ranges overlap or are out of order");
    let (lo, hi) = g.split_at_mut(b.0);
    (&mut lo[a.0..a.0 + a.1], &mut hi[..b.1])
}

/// Checks shapes and ids; fills `acts.tokens`, `acts.pos`, `acts.targets`. Returns the number
/// of targets that are not ignored.
fn load_batch(
    model: &Gpt2,
    acts: &mut Activations,
    tokens: ArrayView2<'_, u32>,
    targets: ArrayView2<'_, i32>,
    backward: bool,
    dropout: Option<Dropout>,
) -> Result<usize> {
    let cfg = model.config();
    acts.drop = dropout.filter(|d| d.embd > 0.0 || d.attn > 0.0 || d.resid > 0.0);
    let (b, t) = tokens.dim();
    if b == 0 || t == 0 {
        return Err(Error::EmptyInput(format!("token batch has shape [{b}, {t}]")));
    }
    if targets.dim() != (b, t) {
        return Err(Error::Shape(format!("targets are {:?}, tokens are [{b}, {t}]", targets.dim())));
    }
    if t > cfg.n_positions {
        return Err(Error::SequenceTooLong { len: t, n_positions: cfg.n_positions });
    }
    acts.tokens.clear();
    acts.tokens.extend(tokens.iter().copied());
    if let Some(i) = acts.tokens.iter().position(|&x| x as usize >= cfg.vocab_size) {
        return Err(Error::TokenOutOfVocab { token: acts.tokens[i], position: i, vocab_size: cfg.vocab_size });
    }
    acts.targets.clear();
    acts.targets.extend(targets.iter().copied());
    if let Some(i) = acts.targets.iter().position(|&x| x >= 0 && x as usize >= cfg.vocab_size) {
        return Err(Error::TokenOutOfVocab { token: acts.targets[i] as u32, position: i, vocab_size: cfg.vocab_size });
    }
    let valid = acts.targets.iter().filter(|&&x| x >= 0).count();
    if valid == 0 {
        return Err(Error::EmptyInput("every target of the batch is ignored (negative)".into()));
    }
    acts.pos.clear();
    for _ in 0..b {
        acts.pos.extend(0..t as u32);
    }
    acts.ensure(cfg, b, t, backward);
    Ok(valid)
}

/// Dropout site id of the embeddings for [`Rng::fork`] (layer sites: [`site`]).
const SITE_EMBD: u64 = u64::MAX;
fn site(layer: usize, k: u64) -> u64 {
    layer as u64 * 4 + k
}

/// Forward through the blocks and `ln_f`, saving activations. With dropout active
/// (`a.drop`), each site's mask is drawn from its own `rng.fork(site)`.
fn forward_body(model: &Gpt2, a: &mut Activations, rng: &Rng) {
    let cfg = model.config();
    let (b, t) = (a.b, a.t);
    let (c, h, nh, eps) = (cfg.n_embd, cfg.mlp_hidden(), cfg.n_head, cfg.layer_norm_epsilon);
    let hd = c / nh;
    let n = b * t;
    let nc = n * c;
    let p = model.params();
    let lay = model.layout();
    let wte = &p[lay.wte..lay.wte + cfg.vocab_size * c];
    let wpe = &p[lay.wpe..lay.wpe + cfg.n_positions * c];
    embed_forward(&mut a.res[..nc], &a.tokens, &a.pos, wte, wpe, c);
    let drop = a.drop;
    if let Some(d) = drop.filter(|d| d.embd > 0.0) {
        dropout_mask(&mut a.drop_embd[..nc], d.embd, &mut rng.fork(SITE_EMBD));
        dropout_apply(&mut a.res[..nc], &a.drop_embd[..nc]);
    }
    let probs_len = b * nh * t * t;
    for (l, o) in lay.blocks.iter().enumerate() {
        let (done, rest) = a.res.split_at_mut((l + 1) * nc);
        let x_in = &done[l * nc..];
        let x_out = &mut rest[..nc];
        let ln1 = &mut a.ln1[l * nc..(l + 1) * nc];
        layernorm_forward(
            ln1,
            Some(&mut a.ln1_mean[l * n..(l + 1) * n]),
            Some(&mut a.ln1_rstd[l * n..(l + 1) * n]),
            x_in,
            &p[o.ln_1_w..o.ln_1_w + c],
            &p[o.ln_1_b..o.ln_1_b + c],
            c,
            eps,
        );
        let qkv = &mut a.qkv[l * 3 * nc..(l + 1) * 3 * nc];
        matmul_forward(qkv, ln1, &p[o.attn_w..o.attn_w + 3 * c * c], Some(&p[o.attn_b..o.attn_b + 3 * c]), n, c, 3 * c);
        let qkv: &[f32] = qkv;
        let atty = &mut a.atty[l * nc..(l + 1) * nc];
        let probs = &mut a.probs[l * probs_len..(l + 1) * probs_len];
        attention_forward(
            atty,
            Some(probs),
            HeadView::from_qkv(qkv, 0, t, c, hd),
            HeadView::from_qkv(qkv, 1, t, c, hd),
            HeadView::from_qkv(qkv, 2, t, c, hd),
            None,
            AttnDims::new(b, t, 0, nh, hd).with_scale(model.config().attn_scale(l)),
        );
        if let Some(d) = drop.filter(|d| d.attn > 0.0) {
            let pd = &mut a.drop_probs[l * probs_len..(l + 1) * probs_len];
            dropout_mask(pd, d.attn, &mut rng.fork(site(l, 0)));
            for (m, &p) in pd.iter_mut().zip(&a.probs[l * probs_len..(l + 1) * probs_len]) {
                *m *= p;
            }
            attention_apply(atty, pd, qkv, b, t, nh, hd);
        }
        let proj = &mut a.proj[..nc];
        matmul_forward(
            proj,
            atty,
            &p[o.attn_proj_w..o.attn_proj_w + c * c],
            Some(&p[o.attn_proj_b..o.attn_proj_b + c]),
            n,
            c,
            c,
        );
        if let Some(d) = drop.filter(|d| d.resid > 0.0) {
            let m = &mut a.drop_res1[l * nc..(l + 1) * nc];
            dropout_mask(m, d.resid, &mut rng.fork(site(l, 1)));
            dropout_apply(proj, m);
        }
        let mid = &mut a.res_mid[l * nc..(l + 1) * nc];
        residual_forward(mid, x_in, proj);
        let ln2 = &mut a.ln2[l * nc..(l + 1) * nc];
        layernorm_forward(
            ln2,
            Some(&mut a.ln2_mean[l * n..(l + 1) * n]),
            Some(&mut a.ln2_rstd[l * n..(l + 1) * n]),
            mid,
            &p[o.ln_2_w..o.ln_2_w + c],
            &p[o.ln_2_b..o.ln_2_b + c],
            c,
            eps,
        );
        let fch = &mut a.fch[l * n * h..(l + 1) * n * h];
        matmul_forward(fch, ln2, &p[o.fc_w..o.fc_w + c * h], Some(&p[o.fc_b..o.fc_b + h]), n, c, h);
        let fch_gelu = &mut a.fch_gelu[l * n * h..(l + 1) * n * h];
        gelu_forward(fch_gelu, fch);
        matmul_forward(
            proj,
            fch_gelu,
            &p[o.fc_proj_w..o.fc_proj_w + h * c],
            Some(&p[o.fc_proj_b..o.fc_proj_b + c]),
            n,
            h,
            c,
        );
        if let Some(d) = drop.filter(|d| d.resid > 0.0) {
            let m = &mut a.drop_res2[l * nc..(l + 1) * nc];
            dropout_mask(m, d.resid, &mut rng.fork(site(l, 2)));
            dropout_apply(proj, m);
        }
        residual_forward(x_out, mid, proj);
    }
    let l = lay.blocks.len();
    layernorm_forward(
        &mut a.lnf[..nc],
        Some(&mut a.lnf_mean[..n]),
        Some(&mut a.lnf_rstd[..n]),
        &a.res[l * nc..(l + 1) * nc],
        &p[lay.ln_f_w..lay.ln_f_w + c],
        &p[lay.ln_f_b..lay.ln_f_b + c],
        c,
        eps,
    );
}

/// The fused tied LM head + cross-entropy over all rows. With `grads`, also accumulates
/// `dwte` and writes `dlnf` into `a.dln`, scaling the per-token gradient by `scale`.
/// Returns the summed loss over valid targets (f64).
fn head(model: &Gpt2, a: &mut Activations, grads: Option<(&mut [f32], &GradMask)>, scale: f32) -> f64 {
    let cfg = model.config();
    let (c, v) = (cfg.n_embd, cfg.vocab_size);
    let n = a.b * a.t;
    let lay = model.layout();
    let wte = &model.params()[lay.wte..lay.wte + v * c];
    let rows = head_rows(n, v);
    let mut grads = grads;
    if grads.is_some() {
        a.dln[..n * c].fill(0.0);
    }
    let mut r0 = 0;
    while r0 < n {
        let m = rows.min(n - r0);
        let logits = &mut a.logits[..m * v];
        let lnf = &a.lnf[r0 * c..(r0 + m) * c];
        matmul_forward_bt(logits, lnf, wte, m, c, v);
        let gs = grads.as_ref().map(|_| scale);
        softmax_cross_entropy(logits, &mut a.losses[r0..r0 + m], &a.targets[r0..r0 + m], v, gs);
        if let Some((g, mask)) = grads.as_mut() {
            let dwte = if mask.wants(lay.wte) { Some(&mut g[lay.wte..lay.wte + v * c]) } else { None };
            matmul_bt_backward(Some(&mut a.dln[r0 * c..(r0 + m) * c]), dwte, logits, lnf, wte, m, c, v);
        }
        r0 += m;
    }
    a.losses[..n].iter().map(|&x| x as f64).sum()
}

/// Backward through `ln_f`, the blocks and the embeddings, accumulating into `grads`
/// (`a.dln` holds `dL/d ln_f output`).
/// Called by the backward pass with a parameter range whose gradient is final (for this
/// micro-batch) and that gradient: `ln_f`, then blocks `L−1 … 0`, then the embeddings — the
/// buckets of an all-reduce overlapped with the rest of the backward pass.
pub(crate) type GradReady<'h> = &'h mut dyn FnMut(std::ops::Range<usize>, &[f32]);

fn backward_body(model: &Gpt2, a: &mut Activations, grads: &mut [f32], mask: &GradMask, ready: GradReady<'_>) {
    let cfg = model.config();
    let (b, t) = (a.b, a.t);
    let (c, h, nh) = (cfg.n_embd, cfg.mlp_hidden(), cfg.n_head);
    let hd = c / nh;
    let n = b * t;
    let nc = n * c;
    let p = model.params();
    let lay = model.layout();
    let nl = lay.blocks.len();
    let dres = &mut a.dres[..nc];
    dres.fill(0.0);
    {
        let (dw, db) = ln_grads(grads, &mut a.dscratch, mask, lay.ln_f_w, lay.ln_f_b, c);
        layernorm_backward(
            dres,
            dw,
            db,
            &a.dln[..nc],
            &a.res[nl * nc..(nl + 1) * nc],
            &p[lay.ln_f_w..lay.ln_f_w + c],
            &a.lnf_mean[..n],
            &a.lnf_rstd[..n],
            c,
        );
    }
    ready(lay.ln_f_w..lay.total(), &grads[lay.ln_f_w..]);
    let probs_len = b * nh * t * t;
    let drop = a.drop;
    let resid_drop = drop.is_some_and(|d| d.resid > 0.0);
    for l in (0..nl).rev() {
        if !mask.needs_block(l) {
            break;
        }
        let o = &lay.blocks[l];
        let want = |off: usize| mask.wants(off);
        // gradient of a dropped-out projection output: dres ⊙ mask
        let dproj = &mut a.dproj[..];
        let dproj_of = |dproj: &mut [f32], dres: &[f32], m: &[f32]| {
            dproj[..nc].copy_from_slice(dres);
            dropout_apply(&mut dproj[..nc], m);
        };
        // --- MLP: x_out = mid + gelu(ln2(mid)·Wfc + bfc)·Wp + bp
        let dfg = &mut a.dfch_gelu[..n * h];
        dfg.fill(0.0);
        {
            let dout: &[f32] = if resid_drop {
                dproj_of(dproj, dres, &a.drop_res2[l * nc..(l + 1) * nc]);
                &dproj[..nc]
            } else {
                dres
            };
            let (dw, db) = pair_mut(grads, (o.fc_proj_w, h * c), (o.fc_proj_b, c));
            matmul_backward(
                Some(dfg),
                want(o.fc_proj_w).then_some(dw),
                want(o.fc_proj_b).then_some(db),
                dout,
                &a.fch_gelu[l * n * h..(l + 1) * n * h],
                &p[o.fc_proj_w..o.fc_proj_w + h * c],
                n,
                h,
                c,
            );
        }
        let dfch = &mut a.dfch[..n * h];
        dfch.fill(0.0);
        gelu_backward(dfch, &a.fch[l * n * h..(l + 1) * n * h], dfg);
        let dln = &mut a.dln[..nc];
        dln.fill(0.0);
        {
            let (dw, db) = pair_mut(grads, (o.fc_w, c * h), (o.fc_b, h));
            matmul_backward(
                Some(dln),
                want(o.fc_w).then_some(dw),
                want(o.fc_b).then_some(db),
                dfch,
                &a.ln2[l * nc..(l + 1) * nc],
                &p[o.fc_w..o.fc_w + c * h],
                n,
                c,
                h,
            );
        }
        {
            let (dw, db) = ln_grads(grads, &mut a.dscratch, mask, o.ln_2_w, o.ln_2_b, c);
            layernorm_backward(
                dres,
                dw,
                db,
                dln,
                &a.res_mid[l * nc..(l + 1) * nc],
                &p[o.ln_2_w..o.ln_2_w + c],
                &a.ln2_mean[l * n..(l + 1) * n],
                &a.ln2_rstd[l * n..(l + 1) * n],
                c,
            );
        }
        // --- attention: mid = x_in + attn(ln1(x_in))·Wap + bap
        let datty = &mut a.datty[..nc];
        datty.fill(0.0);
        {
            let dout: &[f32] = if resid_drop {
                dproj_of(dproj, dres, &a.drop_res1[l * nc..(l + 1) * nc]);
                &dproj[..nc]
            } else {
                dres
            };
            let (dw, db) = pair_mut(grads, (o.attn_proj_w, c * c), (o.attn_proj_b, c));
            matmul_backward(
                Some(datty),
                want(o.attn_proj_w).then_some(dw),
                want(o.attn_proj_b).then_some(db),
                dout,
                &a.atty[l * nc..(l + 1) * nc],
                &p[o.attn_proj_w..o.attn_proj_w + c * c],
                n,
                c,
                c,
            );
        }
        let dqkv = &mut a.dqkv[..3 * nc];
        dqkv.fill(0.0);
        attention_backward(
            dqkv,
            datty,
            &a.qkv[l * 3 * nc..(l + 1) * 3 * nc],
            &a.probs[l * probs_len..(l + 1) * probs_len],
            drop.filter(|d| d.attn > 0.0)
                .map(|d| (&a.drop_probs[l * probs_len..(l + 1) * probs_len], 1.0 / (1.0 - d.attn))),
            b,
            t,
            nh,
            hd,
            model.config().attn_scale(l),
        );
        dln.fill(0.0);
        {
            let (dw, db) = pair_mut(grads, (o.attn_w, c * 3 * c), (o.attn_b, 3 * c));
            matmul_backward(
                Some(dln),
                want(o.attn_w).then_some(dw),
                want(o.attn_b).then_some(db),
                dqkv,
                &a.ln1[l * nc..(l + 1) * nc],
                &p[o.attn_w..o.attn_w + c * 3 * c],
                n,
                c,
                3 * c,
            );
        }
        {
            let (dw, db) = ln_grads(grads, &mut a.dscratch, mask, o.ln_1_w, o.ln_1_b, c);
            layernorm_backward(
                dres,
                dw,
                db,
                dln,
                &a.res[l * nc..(l + 1) * nc],
                &p[o.ln_1_w..o.ln_1_w + c],
                &a.ln1_mean[l * n..(l + 1) * n],
                &a.ln1_rstd[l * n..(l + 1) * n],
                c,
            );
        }
        let end = lay.blocks.get(l + 1).map_or(lay.ln_f_w, |next| next.ln_1_w);
        ready(o.ln_1_w..end, &grads[o.ln_1_w..end]);
    }
    if mask.wants(lay.wte) || mask.wants(lay.wpe) {
        if drop.is_some_and(|d| d.embd > 0.0) {
            dropout_apply(dres, &a.drop_embd[..nc]);
        }
        let (v, pn) = (cfg.vocab_size, cfg.n_positions);
        let (dwte, dwpe) = pair_mut(grads, (lay.wte, v * c), (lay.wpe, pn * c));
        embed_backward(
            mask.wants(lay.wte).then_some(dwte),
            mask.wants(lay.wpe).then_some(dwpe),
            dres,
            &a.tokens,
            &a.pos,
            c,
        );
        let end = lay.blocks.first().map_or(lay.ln_f_w, |b| b.ln_1_w);
        ready(0..end, &grads[..end]);
    }
}

/// Gradient slots for a layernorm's weight and bias: the real ones when trainable, scratch
/// (discarded) otherwise.
fn ln_grads<'g>(
    grads: &'g mut [f32],
    scratch: &'g mut Vec<f32>,
    mask: &GradMask,
    w: usize,
    b: usize,
    c: usize,
) -> (&'g mut [f32], &'g mut [f32]) {
    scratch.resize(2 * c, 0.0);
    let (sw, sb) = scratch.split_at_mut(c);
    let (gw, gb) = pair_mut(grads, (w, c), (b, c));
    (if mask.wants(w) { gw } else { sw }, if mask.wants(b) { gb } else { sb })
}

/// Options of [`forward_backward_with`].
#[derive(Debug, Clone, Copy)]
pub struct BackwardOptions<'a> {
    /// Multiplies the gradient (use `1/K` for `K` accumulated micro-batches).
    pub loss_scale: f32,
    /// Tensors that receive gradients (the others are left untouched, and the backward pass
    /// stops below the lowest trainable tensor).
    pub mask: &'a GradMask,
    /// Train mode: apply the config's dropout with masks drawn from this seed (same seed, same
    /// masks). `None` = eval mode (no dropout).
    pub dropout_seed: Option<u64>,
    /// In train mode, this probability replaces the config's `embd_pdrop`, `attn_pdrop` and
    /// `resid_pdrop` (`Some(0.0)`: no dropout whatever the config says). Must be in `[0, 1)`.
    pub dropout: Option<f32>,
}

impl Default for BackwardOptions<'static> {
    fn default() -> Self {
        static ALL: std::sync::OnceLock<GradMask> = std::sync::OnceLock::new();
        BackwardOptions { loss_scale: 1.0, mask: ALL.get_or_init(GradMask::all), dropout_seed: None, dropout: None }
    }
}

/// Forward + backward of one micro-batch: accumulates `loss_scale · dL/dθ` into `grads`
/// (flat, [`ParamLayout`](crate::ParamLayout) order) and returns the mean cross-entropy `L`
/// over the targets that are not ignored.
///
/// `tokens` `[B, T]`, `targets` `[B, T]` (`targets[b, t]` is the token that should follow
/// `tokens[b, t]`; negative = ignored, like PyTorch's `ignore_index = -1`). Positions are
/// `0..T` in every row. Use `loss_scale = 1/K` for `K` accumulated micro-batches. No dropout
/// (see [`forward_backward_with`]).
///
/// Errors: [`Error::EmptyInput`] (empty batch, or every target ignored), [`Error::Shape`],
/// [`Error::TokenOutOfVocab`], [`Error::SequenceTooLong`].
///
/// ```
/// use gpt2::{Config, Gpt2};
/// use gpt2::train::{forward_backward, Activations};
/// use ndarray::array;
/// let model = Gpt2::new_random(Config::nano(8, 10), 0).unwrap();
/// let mut acts = Activations::new();
/// let mut grads = vec![0f32; model.num_parameters()];
/// let x = array![[1u32, 2, 3]];
/// let y = array![[2i32, 3, -1]];
/// let loss = forward_backward(&model, &mut acts, &mut grads, x.view(), y.view(), 1.0).unwrap();
/// assert!((loss - 10f32.ln()).abs() < 0.1); // near ln V at initialisation
/// assert!(grads.iter().any(|&g| g != 0.0));
/// ```
pub fn forward_backward(
    model: &Gpt2,
    acts: &mut Activations,
    grads: &mut [f32],
    tokens: ArrayView2<'_, u32>,
    targets: ArrayView2<'_, i32>,
    loss_scale: f32,
) -> Result<f32> {
    let opts = BackwardOptions { loss_scale, ..Default::default() };
    forward_backward_with(model, acts, grads, tokens, targets, &opts)
}

/// [`forward_backward`] with a parameter subset and/or dropout (see [`BackwardOptions`]).
pub fn forward_backward_with(
    model: &Gpt2,
    acts: &mut Activations,
    grads: &mut [f32],
    tokens: ArrayView2<'_, u32>,
    targets: ArrayView2<'_, i32>,
    opts: &BackwardOptions<'_>,
) -> Result<f32> {
    forward_backward_hooked(model, acts, grads, tokens, targets, opts, &mut |_, _| {})
}

/// [`forward_backward_with`], calling `ready` as each part of the gradient becomes final.
pub(crate) fn forward_backward_hooked(
    model: &Gpt2,
    acts: &mut Activations,
    grads: &mut [f32],
    tokens: ArrayView2<'_, u32>,
    targets: ArrayView2<'_, i32>,
    opts: &BackwardOptions<'_>,
    ready: GradReady<'_>,
) -> Result<f32> {
    if grads.len() != model.num_parameters() {
        return Err(Error::Shape(format!(
            "gradient buffer has {} values, the model has {} parameters",
            grads.len(),
            model.num_parameters()
        )));
    }
    let dropout = match (opts.dropout_seed, opts.dropout) {
        (None, _) => None,
        (Some(_), Some(p)) => {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::arg("dropout", format!("{p} is not in [0, 1)")));
            }
            Some(Dropout { embd: p, attn: p, resid: p })
        }
        (Some(_), None) => {
            let cfg = model.config();
            Some(Dropout { embd: cfg.embd_pdrop, attn: cfg.attn_pdrop, resid: cfg.resid_pdrop })
        }
    };
    let valid = load_batch(model, acts, tokens, targets, true, dropout)?;
    forward_body(model, acts, &Rng::new(opts.dropout_seed.unwrap_or(0)));
    let scale = opts.loss_scale / valid as f32;
    let sum = head(model, acts, Some((grads, opts.mask)), scale);
    backward_body(model, acts, grads, opts.mask, ready);
    Ok((sum / valid as f64) as f32)
}

/// Mean cross-entropy of `model` on one batch (eval mode: no dropout, no gradients); same
/// conventions as [`forward_backward`].
pub fn forward_loss(
    model: &Gpt2,
    acts: &mut Activations,
    tokens: ArrayView2<'_, u32>,
    targets: ArrayView2<'_, i32>,
) -> Result<f32> {
    let valid = load_batch(model, acts, tokens, targets, false, None)?;
    forward_body(model, acts, &Rng::new(0));
    let sum = head(model, acts, None, 0.0);
    Ok((sum / valid as f64) as f32)
}
