//! Causal multi-head attention on strided query/key/value views.
//!
//! One kernel serves the plain forward (keys read straight from the fused
//! `qkv` activations), KV-cached prefill and decode (keys read from the cache)
//! and training (probabilities saved for backward). Masked work is never done:
//! query `i` only visits keys `0..=past+i`, and padded keys are skipped.

use rayon::prelude::*;

use super::simd::{axpy, dot};

/// A strided view of a `[B, NH, T, hd]` tensor: element `(b, h, t, d)` is at
/// `data[b*b_stride + h*h_stride + t*t_stride + d]` (the head dimension is contiguous).
#[derive(Clone, Copy, Debug)]
pub struct HeadView<'a> {
    /// Backing storage.
    pub data: &'a [f32],
    /// Stride between batch rows.
    pub b_stride: usize,
    /// Stride between heads.
    pub h_stride: usize,
    /// Stride between positions.
    pub t_stride: usize,
}

impl<'a> HeadView<'a> {
    /// Row `(b, h, t)` of length `hd`.
    #[inline(always)]
    pub fn row(&self, b: usize, h: usize, t: usize, hd: usize) -> &'a [f32] {
        let o = b * self.b_stride + h * self.h_stride + t * self.t_stride;
        &self.data[o..o + hd]
    }

    /// View of the q, k or v part (`which` = 0, 1, 2) of fused `qkv[B, T, 3C]` activations.
    pub fn from_qkv(qkv: &'a [f32], which: usize, t: usize, c: usize, hd: usize) -> Self {
        HeadView { data: &qkv[which * c..], b_stride: t * 3 * c, h_stride: hd, t_stride: 3 * c }
    }
}

/// Shapes of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnDims {
    /// Batch size.
    pub b: usize,
    /// Number of new queries per row.
    pub tq: usize,
    /// Positions already in the cache before these queries (query i sits at `past + i`).
    pub past: usize,
    /// Number of heads.
    pub nh: usize,
    /// Head width.
    pub hd: usize,
    /// Factor applied to every score `q·k` before the softmax: `1/√hd` for GPT-2
    /// ([`AttnDims::new`]); a layer's [`Config::attn_scale`](crate::Config::attn_scale) in general.
    pub scale: f32,
}

impl AttnDims {
    /// Shapes with GPT-2's standard score scale `1/√hd`.
    pub fn new(b: usize, tq: usize, past: usize, nh: usize, hd: usize) -> Self {
        AttnDims { b, tq, past, nh, hd, scale: 1.0 / (hd as f32).sqrt() }
    }

    /// The same shapes with another score scale.
    pub fn with_scale(self, scale: f32) -> Self {
        AttnDims { scale, ..self }
    }

    /// Number of keys visible to the last query.
    pub fn tk(&self) -> usize {
        self.past + self.tq
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: tasks write disjoint (b, h) regions.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    #[inline(always)]
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Causal attention: `out[B, tq, NH·hd]` from queries `q`, keys `k`, values `v`.
///
/// The output comes from [`super::flash::attention_fast`] (key-tiled, online softmax); with
/// `probs` the probabilities are computed as well by [`attention_probs`].
///
/// `key_mask` (`[B, tk]`, `true` = real token) removes padded keys. A query with
/// no visible key gets a zero output. When `probs` (`[B, NH, tq, tk]`) is given,
/// the softmax probabilities are stored there (zero above the diagonal and on
/// masked keys).
pub fn attention_forward(
    out: &mut [f32],
    probs: Option<&mut [f32]>,
    q: HeadView,
    k: HeadView,
    v: HeadView,
    key_mask: Option<&[bool]>,
    d: AttnDims,
) {
    // The output always comes from the key-tiled online-softmax kernel, so asking for the
    // probabilities never changes the result.
    super::flash::attention_fast(out, q, k, v, key_mask, d);
    if let Some(p) = probs {
        attention_probs(p, q, k, key_mask, d);
    }
}

/// Softmax probabilities `probs[B, NH, tq, tk]` of causal attention (exact two-pass softmax;
/// zero above the diagonal and on masked keys; all zero for a query with no visible key).
pub fn attention_probs(probs: &mut [f32], q: HeadView, k: HeadView, key_mask: Option<&[bool]>, d: AttnDims) {
    let AttnDims { b, tq, past, nh, hd, scale } = d;
    let tk = d.tk();
    if let Some(m) = key_mask {
        assert!(m.len() >= b * tk, "key mask too small");
    }
    assert!(probs.len() >= b * nh * tq * tk, "probs buffer too small");
    probs[..b * nh * tq * tk].par_chunks_mut(tq * tk).enumerate().for_each(|(bh, head)| {
        let (bi, h) = (bh / nh, bh % nh);
        let mask = key_mask.map(|m| &m[bi * tk..(bi + 1) * tk]);
        for (i, prow) in head.chunks_exact_mut(tk).enumerate() {
            let n_keys = past + i + 1;
            let qrow = q.row(bi, h, i, hd);
            let mut max = f32::NEG_INFINITY;
            for (j, s) in prow[..n_keys].iter_mut().enumerate() {
                *s = if mask.is_none_or(|m| m[j]) { dot(qrow, k.row(bi, h, j, hd)) * scale } else { f32::NEG_INFINITY };
                max = max.max(*s);
            }
            prow[n_keys..].fill(0.0);
            if max == f32::NEG_INFINITY {
                prow.fill(0.0);
                continue;
            }
            let mut sum = 0f32;
            for s in prow[..n_keys].iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            let inv = 1.0 / sum;
            prow[..n_keys].iter_mut().for_each(|s| *s *= inv);
        }
    });
}

/// `out[B, T, NH·hd] = probs[B, NH, T, T] · v` — attention output from given (e.g. dropped-out)
/// causal probabilities, with `v` read from fused `qkv[B, T, 3C]`.
pub fn attention_apply(out: &mut [f32], probs: &[f32], qkv: &[f32], b: usize, t: usize, nh: usize, hd: usize) {
    let c = nh * hd;
    assert!(out.len() >= b * t * c && probs.len() >= b * nh * t * t && qkv.len() >= b * t * 3 * c);
    let op = SendPtr(out.as_mut_ptr());
    (0..b * nh).into_par_iter().for_each(|bh| {
        let (bi, h) = (bh / nh, bh % nh);
        for i in 0..t {
            // SAFETY: output row (bi, i, head h) belongs to this task only.
            let orow = unsafe { std::slice::from_raw_parts_mut(op.get().add((bi * t + i) * c + h * hd), hd) };
            orow.fill(0.0);
            let prow = &probs[((bi * nh + h) * t + i) * t..][..i + 1];
            for (j, &p) in prow.iter().enumerate() {
                if p != 0.0 {
                    let v = (bi * t + j) * 3 * c + 2 * c + h * hd;
                    axpy(orow, p, &qkv[v..v + hd]);
                }
            }
        }
    });
}

/// Backward of causal self-attention on fused `qkv[B, T, 3C]` (no cache, `past = 0`), accumulating
/// into `dqkv[B, T, 3C]`, given `dout[B, T, C]` and the probabilities `probs[B, NH, T, T]` saved
/// by [`attention_forward`] (zero above the diagonal and on masked keys, so masking needs no
/// extra input).
///
/// With attention dropout, `dropped = Some((P', 1/(1−p)))` gives the dropped-out probabilities
/// the output was computed from (`O = P'·v`, see [`attention_apply`]).
///
/// With `S = scale·q·kᵀ` (`scale` = `1/√hd` for GPT-2), `P = softmax(S)`, `O = P'·v`:
/// `dv = P'ᵀ·dO`, `dP' = dO·vᵀ`, `dP = dP' ⊙ [P' ≠ 0]/(1−p)`, `dS = P ⊙ (dP − rowsum(P ⊙ dP))`,
/// `dq = scale·dS·k`, `dk = scale·dSᵀ·q` (without dropout `P' = P`).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dqkv: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    probs: &[f32],
    dropped: Option<(&[f32], f32)>,
    b: usize,
    t: usize,
    nh: usize,
    hd: usize,
    scale: f32,
) {
    let c = nh * hd;
    assert!(dqkv.len() >= b * t * 3 * c && qkv.len() >= b * t * 3 * c, "attention_backward: qkv buffers too small");
    assert!(dout.len() >= b * t * c && probs.len() >= b * nh * t * t, "attention_backward: buffers too small");
    if let Some((pd, _)) = dropped {
        assert!(pd.len() >= b * nh * t * t, "attention_backward: dropped probs too small");
    }
    let dp = SendPtr(dqkv.as_mut_ptr());
    (0..b * nh).into_par_iter().for_each_init(
        || vec![0f32; t],
        |dpr, bh| {
            let (bi, h) = (bh / nh, bh % nh);
            let row = |ti: usize, which: usize| (bi * t + ti) * 3 * c + which * c + h * hd;
            // SAFETY: this task is the only one touching head h of batch row bi in dqkv.
            let dslice = |off: usize| unsafe { std::slice::from_raw_parts_mut(dp.get().add(off), hd) };
            for i in 0..t {
                let at = ((bi * nh + h) * t + i) * t;
                let prow = &probs[at..][..i + 1];
                // probabilities the output was computed from, and dP'→dP factors
                let (used, inv_keep) = match dropped {
                    Some((pd, k)) => (&pd[at..][..i + 1], k),
                    None => (prow, 1.0),
                };
                let d_o = &dout[(bi * t + i) * c + h * hd..][..hd];
                let mut s = 0f32;
                for j in 0..=i {
                    let d = if used[j] != 0.0 { dot(d_o, &qkv[row(j, 2)..row(j, 2) + hd]) * inv_keep } else { 0.0 };
                    dpr[j] = d;
                    s += prow[j] * d;
                }
                let q_i = &qkv[row(i, 0)..row(i, 0) + hd];
                let dq_i = dslice(row(i, 0));
                for j in 0..=i {
                    if used[j] != 0.0 {
                        axpy(dslice(row(j, 2)), used[j], d_o);
                    }
                    let p = prow[j];
                    if p == 0.0 {
                        continue;
                    }
                    let ds = p * (dpr[j] - s) * scale;
                    axpy(dq_i, ds, &qkv[row(j, 1)..row(j, 1) + hd]);
                    axpy(dslice(row(j, 1)), ds, q_i);
                }
            }
        },
    );
}

/// Naive oracle for [`attention_forward`] (full score matrix, f64, explicit mask).
pub fn attention_forward_naive(
    out: &mut [f32],
    q: HeadView,
    k: HeadView,
    v: HeadView,
    key_mask: Option<&[bool]>,
    d: AttnDims,
) {
    let AttnDims { b, tq, past, nh, hd, .. } = d;
    let tk = d.tk();
    let scale = d.scale as f64;
    for bi in 0..b {
        for h in 0..nh {
            for i in 0..tq {
                let mut s = vec![f64::NEG_INFINITY; tk];
                for (j, sj) in s.iter_mut().enumerate() {
                    let visible = j <= past + i && key_mask.is_none_or(|m| m[bi * tk + j]);
                    if visible {
                        *sj = q
                            .row(bi, h, i, hd)
                            .iter()
                            .zip(k.row(bi, h, j, hd))
                            .map(|(&a, &b)| a as f64 * b as f64)
                            .sum::<f64>()
                            * scale;
                    }
                }
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let o = &mut out[(bi * tq + i) * nh * hd + h * hd..][..hd];
                if max == f64::NEG_INFINITY {
                    o.fill(0.0);
                    continue;
                }
                let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                let z: f64 = e.iter().sum();
                for (dd, od) in o.iter_mut().enumerate() {
                    *od = (0..tk).map(|j| e[j] / z * v.row(bi, h, j, hd)[dd] as f64).sum::<f64>() as f32;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_oracle_with_past_and_mask() {
        let (b, tq, past, nh, hd) = (2, 5, 3, 3, 8);
        let tk = past + tq;
        let c = nh * hd;
        let qd: Vec<f32> = (0..b * tq * c).map(|i| ((i * 31 % 17) as f32 - 8.0) * 0.1).collect();
        let kd: Vec<f32> = (0..b * nh * tk * hd).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1).collect();
        let vd: Vec<f32> = (0..b * nh * tk * hd).map(|i| ((i * 11 % 19) as f32 - 9.0) * 0.1).collect();
        let q = HeadView { data: &qd, b_stride: tq * c, h_stride: hd, t_stride: c };
        let k = HeadView { data: &kd, b_stride: nh * tk * hd, h_stride: tk * hd, t_stride: hd };
        let v = HeadView { data: &vd, ..k };
        let mut mask = vec![true; b * tk];
        mask[tk] = false; // first key of batch row 1 is padding
        mask[tk + 1] = false;
        let d = AttnDims::new(b, tq, past, nh, hd);
        let mut got = vec![0.0; b * tq * c];
        let mut want = vec![0.0; b * tq * c];
        let mut probs = vec![0.0; b * nh * tq * tk];
        attention_forward(&mut got, Some(&mut probs), q, k, v, Some(&mask), d);
        attention_forward_naive(&mut want, q, k, v, Some(&mask), d);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5);
        }
        for row in probs.chunks(tk) {
            let s: f32 = row.iter().sum();
            assert!((s - 1.0).abs() < 1e-5);
        }
    }

    /// Loss `L = Σ out ⊙ g` for a fixed `g`; the gradient of attention wrt qkv checked by central
    /// differences of the f64 oracle.
    #[test]
    fn backward_matches_finite_differences() {
        let (b, t, nh, hd) = (2, 5, 2, 4);
        let c = nh * hd;
        let qkv: Vec<f32> = (0..b * t * 3 * c).map(|i| ((i * 7919 % 113) as f32 - 56.0) * 0.03).collect();
        let g: Vec<f32> = (0..b * t * c).map(|i| ((i * 31 % 29) as f32 - 14.0) * 0.1).collect();
        let d = AttnDims::new(b, t, 0, nh, hd);
        let mut out = vec![0f32; b * t * c];
        let mut probs = vec![0f32; b * nh * t * t];
        fn views(x: &[f32], t: usize, c: usize, hd: usize) -> (HeadView<'_>, HeadView<'_>, HeadView<'_>) {
            (HeadView::from_qkv(x, 0, t, c, hd), HeadView::from_qkv(x, 1, t, c, hd), HeadView::from_qkv(x, 2, t, c, hd))
        }
        let (q, k, v) = views(&qkv, t, c, hd);
        attention_forward(&mut out, Some(&mut probs), q, k, v, None, d);
        let mut dqkv = vec![0f32; qkv.len()];
        attention_backward(&mut dqkv, &g, &qkv, &probs, None, b, t, nh, hd, 1.0 / (hd as f32).sqrt());
        let loss = |x: &[f32]| {
            let mut o = vec![0f32; b * t * c];
            let (q, k, v) = views(x, t, c, hd);
            attention_forward_naive(&mut o, q, k, v, None, d);
            o.iter().zip(&g).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>()
        };
        let h = 1e-2f32;
        for idx in (0..qkv.len()).step_by(3) {
            let mut p = qkv.clone();
            p[idx] += h;
            let lp = loss(&p);
            p[idx] -= 2.0 * h;
            let lm = loss(&p);
            let fd = (lp - lm) / (2.0 * h as f64);
            assert!((fd - dqkv[idx] as f64).abs() < 2e-3 * (1.0 + fd.abs()), "idx {idx}: fd {fd} vs {}", dqkv[idx]);
        }
    }

    /// With attention dropout the backward is the gradient of `O = (P ⊙ M)·v` for a fixed mask M.
    #[test]
    fn backward_with_dropout_matches_finite_differences() {
        let (b, t, nh, hd) = (1, 6, 2, 3);
        let c = nh * hd;
        let qkv: Vec<f32> = (0..b * t * 3 * c).map(|i| ((i * 7919 % 113) as f32 - 56.0) * 0.03).collect();
        let g: Vec<f32> = (0..b * t * c).map(|i| ((i * 31 % 29) as f32 - 14.0) * 0.1).collect();
        let keep = 1.0 / 0.7f32;
        let mask: Vec<f32> = (0..b * nh * t * t).map(|i| if (i * 13) % 10 < 3 { 0.0 } else { keep }).collect();
        let forward = |x: &[f32]| {
            let mut out = vec![0f32; b * t * c];
            let mut probs = vec![0f32; b * nh * t * t];
            let d = AttnDims::new(b, t, 0, nh, hd);
            let (q, k, v) = (
                HeadView::from_qkv(x, 0, t, c, hd),
                HeadView::from_qkv(x, 1, t, c, hd),
                HeadView::from_qkv(x, 2, t, c, hd),
            );
            attention_forward(&mut out, Some(&mut probs), q, k, v, None, d);
            let dropped: Vec<f32> = probs.iter().zip(&mask).map(|(p, m)| p * m).collect();
            attention_apply(&mut out, &dropped, x, b, t, nh, hd);
            (out, probs, dropped)
        };
        let (_, probs, dropped) = forward(&qkv);
        let mut dqkv = vec![0f32; qkv.len()];
        attention_backward(&mut dqkv, &g, &qkv, &probs, Some((&dropped, keep)), b, t, nh, hd, 1.0 / (hd as f32).sqrt());
        let loss = |x: &[f32]| forward(x).0.iter().zip(&g).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>();
        let h = 1e-2f32;
        for idx in 0..qkv.len() {
            let mut p = qkv.clone();
            p[idx] += h;
            let lp = loss(&p);
            p[idx] -= 2.0 * h;
            let lm = loss(&p);
            let fd = (lp - lm) / (2.0 * h as f64);
            assert!((fd - dqkv[idx] as f64).abs() < 3e-3 * (1.0 + fd.abs()), "idx {idx}: fd {fd} vs {}", dqkv[idx]);
        }
    }
}
