//! Causal multi-head attention on strided query/key/value views.
//!
//! One kernel serves the plain forward (keys read straight from the fused
//! `qkv` activations), KV-cached prefill and decode (keys read from the cache)
//! and training (probabilities saved for backward). Masked work is never done:
//! query `i` only visits keys `0..=past+i`, and padded keys are skipped.

use rayon::prelude::*;

#[allow(unused_imports)] // axpy: also used by the backward kernels (train branch)
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
}

impl AttnDims {
    /// Number of keys visible to the last query.
    pub fn tk(&self) -> usize {
        self.past + self.tq
    }
}

#[allow(dead_code)] // used by the backward kernels (train branch)
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: tasks write disjoint (b, h) regions.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

#[allow(dead_code)] // used by the backward kernels (train branch)
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
    let AttnDims { b, tq, past, nh, hd } = d;
    let tk = d.tk();
    if let Some(m) = key_mask {
        assert!(m.len() >= b * tk, "key mask too small");
    }
    assert!(probs.len() >= b * nh * tq * tk, "probs buffer too small");
    let scale = 1.0 / (hd as f32).sqrt();
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

/// Naive oracle for [`attention_forward`] (full score matrix, f64, explicit mask).
pub fn attention_forward_naive(
    out: &mut [f32],
    q: HeadView,
    k: HeadView,
    v: HeadView,
    key_mask: Option<&[bool]>,
    d: AttnDims,
) {
    let AttnDims { b, tq, past, nh, hd } = d;
    let tk = d.tk();
    let scale = 1.0 / (hd as f64).sqrt();
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
        let d = AttnDims { b, tq, past, nh, hd };
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
}
