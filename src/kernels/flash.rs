//! Fast causal attention without stored probabilities: key-tiled with an online softmax
//! (FlashAttention's recurrence) for prefill, and a streaming kernel for decode.
//!
//! Prefill, per (batch row, head): Kᵀ and V are packed once into GEMM panels; each tile of
//! `BQ` queries walks key blocks of `BK` only up to its last query's position (the upper
//! triangle is never computed), computing `S = Q·Kᵀ` and `O += P·V` with the GEMM
//! micro-kernels. Per query row it keeps the running maximum `m` and sum `l`:
//! `m' = max(m, max_j s_j)`, `p_j = exp(s_j − m')`, `l' = l·e^{m−m'} + Σ p_j`,
//! `O' = O·e^{m−m'} + Σ p_j v_j`, and finally `O / l`. Memory is O(BQ·BK) per task whatever T.
//! Masked keys (causal or padding) get `p = 0` exactly; a query with no visible key gets zeros.

use std::sync::Mutex;

use rayon::prelude::*;

use super::attention::{AttnDims, HeadView};
use super::gemm::ukernel::{f32_kernel, PANEL};
use super::gemm::{gemm_seq, SendPtr};
use super::simd::{axpy, dot};
use super::vmath;

/// Queries per tile (a multiple of the AVX-512 micro-kernel's 14 rows).
const BQ: usize = 56;
/// Keys per block.
const BK: usize = 128;
/// Queries per call from which the tiled kernel is used.
const TILED_MIN_TQ: usize = 8;

/// Per-task scratch, reused across the (batch, head) pairs a thread runs.
#[derive(Default)]
struct Scratch {
    kt: Vec<f32>,
    vp: Vec<f32>,
    s: Vec<f32>,
    o: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
    tail: Vec<f32>,
}

/// Reusable per-thread scratch for [`attention_fast_in`]: once warm, attention allocates
/// nothing (decode steps stay allocation-free).
#[derive(Default)]
pub struct AttnScratch {
    slots: Vec<Mutex<Scratch>>,
}

impl AttnScratch {
    /// Makes room for every thread of the current rayon pool (plus the caller), and for decode
    /// calls with up to `max_keys` keys.
    pub fn ensure(&mut self, max_keys: usize) {
        let want = rayon::current_num_threads() + 1;
        if self.slots.len() < want {
            self.slots.resize_with(want, Default::default);
        }
        for slot in &mut self.slots {
            let s = slot.get_mut().unwrap_or_else(|e| e.into_inner());
            s.s.reserve(max_keys.saturating_sub(s.s.len()));
        }
    }
}

impl Clone for AttnScratch {
    /// Scratch is not shared: a clone starts empty.
    fn clone(&self) -> Self {
        AttnScratch::default()
    }
}

impl std::fmt::Debug for AttnScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AttnScratch({} slots)", self.slots.len())
    }
}

/// Causal attention `out[B, tq, NH·hd]` like [`super::attention::attention_forward`] without
/// probabilities: tiled with an online softmax for `tq ≥ 8`, streaming for decode.
pub fn attention_fast(out: &mut [f32], q: HeadView, k: HeadView, v: HeadView, key_mask: Option<&[bool]>, d: AttnDims) {
    let mut scratch = AttnScratch::default();
    scratch.ensure(d.tk());
    attention_fast_in(out, q, k, v, key_mask, d, &scratch);
}

/// [`attention_fast`] with caller-owned scratch (see [`AttnScratch`]).
pub fn attention_fast_in(
    out: &mut [f32],
    q: HeadView,
    k: HeadView,
    v: HeadView,
    key_mask: Option<&[bool]>,
    d: AttnDims,
    scratch: &AttnScratch,
) {
    let AttnDims { b, tq, nh, hd, .. } = d;
    let tk = d.tk();
    assert!(out.len() >= b * tq * nh * hd, "attention output too small");
    if let Some(m) = key_mask {
        assert!(m.len() >= b * tk, "key mask too small");
    }
    let op = SendPtr(out.as_mut_ptr());
    let work = |s: &mut Scratch, bh: usize| {
        let (bi, h) = (bh / nh, bh % nh);
        let mask = key_mask.map(|m| &m[bi * tk..(bi + 1) * tk]);
        // SAFETY: task (bi, h) writes only head h's columns of batch row bi.
        unsafe {
            if tq >= TILED_MIN_TQ {
                head_tiled(op, q, k, v, mask, d, bi, h, s);
            } else {
                head_streaming(op, q, k, v, mask, d, bi, h, s);
            }
        }
    };
    (0..b * nh).into_par_iter().for_each(|bh| {
        // a worker runs one task at a time, so its slot is never contended
        let slot = rayon::current_thread_index().map_or(scratch.slots.len().wrapping_sub(1), |i| i);
        match scratch.slots.get(slot) {
            Some(m) => work(&mut m.lock().unwrap_or_else(|e| e.into_inner()), bh),
            None => work(&mut Scratch::default(), bh),
        }
    });
}

/// Scales, masks and exponentiates one block of scores in place, updating the running
/// max `m` and sum `l`; returns the factor for the previous output (`e^{m_old − m_new}`).
/// Keys `j ≥ n_causal` and keys with `mask[j] == false` get exactly 0.
pub(crate) fn online_softmax_block(
    s: &mut [f32],
    scale: f32,
    n_causal: usize,
    mask: Option<&[bool]>,
    m: &mut f32,
    l: &mut f32,
) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::simd::simd_level() == super::simd::SimdLevel::Avx512
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
    {
        // SAFETY: features detected above.
        return unsafe { x86::online_softmax_block(s, scale, n_causal, mask, m, l) };
    }
    let mut mx = f32::NEG_INFINITY;
    for (j, x) in s.iter_mut().enumerate() {
        *x = if j < n_causal && mask.is_none_or(|mk| mk[j]) { *x * scale } else { f32::NEG_INFINITY };
        mx = mx.max(*x);
    }
    finish_block(s, mx, m, l, |x, mn| if x == f32::NEG_INFINITY { 0.0 } else { vmath::exp_scalar(x - mn) })
}

/// Shared tail of the online update once the block max is known.
#[inline]
fn finish_block(s: &mut [f32], block_max: f32, m: &mut f32, l: &mut f32, e: impl Fn(f32, f32) -> f32) -> f32 {
    let m_new = m.max(block_max);
    if m_new == f32::NEG_INFINITY {
        s.fill(0.0);
        return 1.0;
    }
    let corr = if *m == f32::NEG_INFINITY { 0.0 } else { vmath::exp_scalar(*m - m_new) };
    let mut sum = 0f32;
    for x in s.iter_mut() {
        *x = e(*x, m_new);
        sum += *x;
    }
    *l = *l * corr + sum;
    *m = m_new;
    corr
}

/// One (batch row, head) with the key-tiled kernel.
///
/// # Safety
/// No other task writes head `h` of batch row `bi` in `out`.
#[allow(clippy::too_many_arguments)]
unsafe fn head_tiled(
    out: SendPtr<f32>,
    q: HeadView,
    k: HeadView,
    v: HeadView,
    mask: Option<&[bool]>,
    d: AttnDims,
    bi: usize,
    h: usize,
    s: &mut Scratch,
) {
    let AttnDims { tq, past, nh, hd, scale, .. } = d;
    let tk = d.tk();
    let c = nh * hd;
    let ker = f32_kernel();
    // Kᵀ as B[hd, tk] panels ([tk/32][hd][32]) and V as B[tk, hd] panels ([hd/32][tk][32]).
    let kpanels = tk.div_ceil(PANEL);
    let hdp = hd.div_ceil(PANEL) * PANEL;
    s.kt.clear();
    s.kt.resize(kpanels * hd * PANEL, 0.0);
    s.vp.clear();
    s.vp.resize(hdp * tk, 0.0);
    for j in 0..tk {
        let (kr, vr) = (k.row(bi, h, j, hd), v.row(bi, h, j, hd));
        let kbase = (j / PANEL) * hd * PANEL + j % PANEL;
        for (dd, &x) in kr.iter().enumerate() {
            s.kt[kbase + dd * PANEL] = x;
        }
        for (dd, &x) in vr.iter().enumerate() {
            s.vp[(dd / PANEL) * tk * PANEL + j * PANEL + dd % PANEL] = x;
        }
    }
    s.s.resize(BQ * BK, 0.0);
    s.o.resize(BQ * hdp, 0.0);
    s.m.resize(BQ, 0.0);
    s.l.resize(BQ, 0.0);
    let qbase = q.data.as_ptr().add(bi * q.b_stride + h * q.h_stride);
    for i0 in (0..tq).step_by(BQ) {
        let rows = BQ.min(tq - i0);
        let key_end = past + i0 + rows;
        s.o[..rows * hdp].fill(0.0);
        s.m[..rows].fill(f32::NEG_INFINITY);
        s.l[..rows].fill(0.0);
        for kb0 in (0..key_end).step_by(BK) {
            let nk = BK.min(key_end - kb0);
            // S = Q·Kᵀ for keys kb0..kb0+nk
            gemm_seq(
                &ker,
                rows,
                nk,
                hd,
                qbase.add(i0 * q.t_stride),
                q.t_stride,
                s.kt.as_ptr().add((kb0 / PANEL) * hd * PANEL),
                hd * PANEL,
                s.s.as_mut_ptr(),
                BK,
                false,
                &mut s.tail,
            );
            for r in 0..rows {
                let qpos = past + i0 + r;
                let n_causal = (qpos + 1).saturating_sub(kb0).min(nk);
                let row = &mut s.s[r * BK..r * BK + nk];
                let corr = online_softmax_block(
                    row,
                    scale,
                    n_causal,
                    mask.map(|m| &m[kb0..kb0 + nk]),
                    &mut s.m[r],
                    &mut s.l[r],
                );
                if corr != 1.0 {
                    s.o[r * hdp..r * hdp + hd].iter_mut().for_each(|x| *x *= corr);
                }
            }
            // O += P·V
            gemm_seq(
                &ker,
                rows,
                hd,
                nk,
                s.s.as_ptr(),
                BK,
                s.vp.as_ptr().add(kb0 * PANEL),
                tk * PANEL,
                s.o.as_mut_ptr(),
                hdp,
                true,
                &mut s.tail,
            );
        }
        for r in 0..rows {
            let dst = std::slice::from_raw_parts_mut(out.get().add((bi * tq + i0 + r) * c + h * hd), hd);
            let l = s.l[r];
            if l > 0.0 {
                let inv = 1.0 / l;
                for (o, &x) in dst.iter_mut().zip(&s.o[r * hdp..r * hdp + hd]) {
                    *o = x * inv;
                }
            } else {
                dst.fill(0.0);
            }
        }
    }
}

/// One (batch row, head) for a few queries (decode): scores, one softmax, weighted sum.
///
/// # Safety
/// No other task writes head `h` of batch row `bi` in `out`.
#[allow(clippy::too_many_arguments)]
unsafe fn head_streaming(
    out: SendPtr<f32>,
    q: HeadView,
    k: HeadView,
    v: HeadView,
    mask: Option<&[bool]>,
    d: AttnDims,
    bi: usize,
    h: usize,
    s: &mut Scratch,
) {
    let AttnDims { tq, past, nh, hd, scale, .. } = d;
    let tk = d.tk();
    let c = nh * hd;
    s.s.resize(tk, 0.0);
    for i in 0..tq {
        let n_keys = past + i + 1;
        let qrow = q.row(bi, h, i, hd);
        let scores = &mut s.s[..n_keys];
        for (j, sc) in scores.iter_mut().enumerate() {
            *sc = if mask.is_none_or(|m| m[j]) { dot(qrow, k.row(bi, h, j, hd)) } else { 0.0 };
        }
        let (mut m, mut l) = (f32::NEG_INFINITY, 0f32);
        online_softmax_block(scores, scale, n_keys, mask.map(|mk| &mk[..n_keys]), &mut m, &mut l);
        let dst = std::slice::from_raw_parts_mut(out.get().add((bi * tq + i) * c + h * hd), hd);
        dst.fill(0.0);
        if l == 0.0 {
            continue;
        }
        for (j, &p) in scores.iter().enumerate() {
            if p != 0.0 {
                axpy(dst, p, v.row(bi, h, j, hd));
            }
        }
        let inv = 1.0 / l;
        dst.iter_mut().for_each(|x| *x *= inv);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// AVX-512 [`super::online_softmax_block`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn online_softmax_block(
        s: &mut [f32],
        scale: f32,
        n_causal: usize,
        mask: Option<&[bool]>,
        m: &mut f32,
        l: &mut f32,
    ) -> f32 {
        let n = s.len();
        let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
        let sc = _mm512_set1_ps(scale);
        let mut vmax = ninf;
        let p = s.as_mut_ptr();
        for j0 in (0..n).step_by(16) {
            let w = 16.min(n - j0);
            let lanes: __mmask16 = if w == 16 { 0xffff } else { ((1u32 << w) - 1) as u16 };
            let causal: __mmask16 = if n_causal >= j0 + 16 {
                0xffff
            } else if n_causal <= j0 {
                0
            } else {
                ((1u32 << (n_causal - j0)) - 1) as u16
            };
            let mut valid = lanes & causal;
            if let Some(mk) = mask {
                // bool is one byte 0/1
                let bytes = _mm_maskz_loadu_epi8(lanes, mk.as_ptr().add(j0) as *const i8);
                valid &= _mm_test_epi8_mask(bytes, bytes);
            }
            let x = _mm512_maskz_loadu_ps(lanes, p.add(j0));
            let y = _mm512_mask_mul_ps(ninf, valid, x, sc);
            vmax = _mm512_max_ps(vmax, y);
            _mm512_mask_storeu_ps(p.add(j0), lanes, y);
        }
        let block_max = _mm512_reduce_max_ps(vmax);
        let m_new = m.max(block_max);
        if m_new == f32::NEG_INFINITY {
            s.fill(0.0);
            return 1.0;
        }
        let corr = if *m == f32::NEG_INFINITY { 0.0 } else { vmath::exp_scalar(*m - m_new) };
        let mn = _mm512_set1_ps(m_new);
        let mut vsum = _mm512_setzero_ps();
        for j0 in (0..n).step_by(16) {
            let w = 16.min(n - j0);
            let lanes: __mmask16 = if w == 16 { 0xffff } else { ((1u32 << w) - 1) as u16 };
            let x = _mm512_maskz_loadu_ps(lanes, p.add(j0));
            let live = _mm512_mask_cmp_ps_mask::<_CMP_NEQ_OQ>(lanes, x, ninf);
            let e = _mm512_maskz_mov_ps(live, vmath::avx512::exp(_mm512_sub_ps(x, mn)));
            vsum = _mm512_add_ps(vsum, e);
            _mm512_mask_storeu_ps(p.add(j0), lanes, e);
        }
        *l = *l * corr + _mm512_reduce_add_ps(vsum);
        *m = m_new;
        corr
    }
}

#[cfg(test)]
mod tests {
    use super::super::attention::attention_forward_naive;
    use super::*;

    fn data(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32 - 500.0) * 2e-3).collect()
    }

    /// Tiled (prefill) and streaming (decode) paths against the f64 oracle: fused qkv views and
    /// cache views, with past keys, padding masks, odd head widths and T not a tile multiple.
    #[test]
    fn matches_oracle_for_prefill_and_decode_shapes() {
        for &(b, tq, past, nh, hd) in &[
            (2, 5, 3, 3, 8),
            (1, 1, 0, 2, 64),
            (2, 3, 40, 2, 16),
            (2, 70, 0, 2, 64),
            (1, 130, 17, 3, 24),
            (2, 200, 0, 1, 7),
        ] {
            let tk = past + tq;
            let c = nh * hd;
            let qd = data(b * tq * c, 1);
            let kd = data(b * nh * tk * hd, 2);
            let vd = data(b * nh * tk * hd, 3);
            let q = HeadView { data: &qd, b_stride: tq * c, h_stride: hd, t_stride: c };
            let k = HeadView { data: &kd, b_stride: nh * tk * hd, h_stride: tk * hd, t_stride: hd };
            let v = HeadView { data: &vd, ..k };
            let d = AttnDims::new(b, tq, past, nh, hd);
            let mut mask = vec![true; b * tk];
            if b > 1 {
                // left padding on row 1 (its first query sees nothing when past = 0)
                for m in mask[tk..tk + tk.min(3)].iter_mut() {
                    *m = false;
                }
            }
            for key_mask in [None, Some(&mask[..])] {
                let mut got = vec![f32::NAN; b * tq * c];
                let mut want = vec![0.0; b * tq * c];
                attention_fast(&mut got, q, k, v, key_mask, d);
                attention_forward_naive(&mut want, q, k, v, key_mask, d);
                let diff = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
                assert!(diff < 2e-6, "({b},{tq},{past},{nh},{hd}) mask {}: {diff}", key_mask.is_some());
            }
        }
        // fused qkv layout
        let (b, t, nh, hd) = (2, 90, 2, 32);
        let c = nh * hd;
        let qkv = data(b * t * 3 * c, 4);
        let (q, k, v) = (
            HeadView::from_qkv(&qkv, 0, t, c, hd),
            HeadView::from_qkv(&qkv, 1, t, c, hd),
            HeadView::from_qkv(&qkv, 2, t, c, hd),
        );
        let d = AttnDims::new(b, t, 0, nh, hd);
        let mut got = vec![0.0; b * t * c];
        let mut want = vec![0.0; b * t * c];
        attention_fast(&mut got, q, k, v, None, d);
        attention_forward_naive(&mut want, q, k, v, None, d);
        let diff = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
        assert!(diff < 2e-6, "qkv: {diff}");
    }

    #[test]
    fn online_softmax_block_masks_exactly_and_rescales() {
        let mut m = f32::NEG_INFINITY;
        let mut l = 0.0;
        let mut s = vec![1.0, 2.0, 3.0, 50.0, 4.0];
        let mask = [true, false, true, true, true];
        // causal limit 3 hides 50.0; mask hides 2.0
        let corr = online_softmax_block(&mut s, 1.0, 3, Some(&mask), &mut m, &mut l);
        assert_eq!(corr, 0.0);
        assert_eq!((s[1], s[3], s[4]), (0.0, 0.0, 0.0));
        assert_eq!(m, 3.0);
        assert!((l - (1.0 + (-2f32).exp())).abs() < 1e-6);
        // a second block with a larger max rescales
        let mut s2 = vec![5.0; 20];
        let corr = online_softmax_block(&mut s2, 1.0, 20, None, &mut m, &mut l);
        assert!((corr - (-2f32).exp()).abs() < 1e-6);
        assert_eq!(m, 5.0);
        assert!((l - ((1.0 + (-2f32).exp()) * (-2f32).exp() + 20.0)).abs() < 1e-5);
    }
}
