//! Memory-bound matrix–vector products for decode: `C[m, n] = epilogue(X[m, k] · B[k, n])`
//! with `m ≤ 8`, reading every weight exactly once for all rows.
//!
//! Three weight layouts, each split over the rayon pool by output columns:
//! - row-major f32 `B[k, n]` (Conv1D weights): four weight rows at a time are folded into an
//!   L1-resident accumulator block of ≤ 512 columns per task;
//! - transposed f32 (`B[k, n] = bt[n·ldb + k]`, the tied LM head): dot products of contiguous
//!   rows, four columns at a time;
//! - [`PackedB`] panels (f32, f16, bf16, int8): one sequential stream per 32-column panel,
//!   widened to f32 in registers and multiplied by f32 activations (int8: the per-column
//!   scale is applied once at the end).
//!
//! No allocation happens here (scratch lives on the stack).

use rayon::prelude::*;

use super::gemm::packed::PackedData;
use super::gemm::{BMat, Epilogue, MatRef, PackedB, SendPtr, SMALL_M};
use super::vmath;

/// Accumulator block width of the row-major kernel.
const CBW: usize = 512;

/// Tries the GEMV path; `false` when the operands do not fit it (caller falls back to GEMM).
pub(crate) fn gemv(c: &mut [f32], ldc: usize, a: MatRef<'_>, b: BMat<'_>, epi: Epilogue<'_>) -> bool {
    let (m, k) = (a.rows(), a.cols());
    let n = b.dims().1;
    if m == 0 || m > SMALL_M || a.cs() != 1 {
        return false;
    }
    let x = X { data: a.data(), ld: if m == 1 { k } else { a.rs() }, m, k };
    let cp = SendPtr(c.as_mut_ptr());
    let out = Out { c: cp, ldc, epi };
    match b {
        BMat::F32(bm) if bm.cs() == 1 => {
            let ldb = if k == 1 { n } else { bm.rs() };
            let wdata = bm.data();
            for_column_blocks(n, k, 16, CBW, |c0, c1| {
                // SAFETY: column block c0..c1 of C belongs to this task; B and X are bounds-checked views.
                unsafe { rows_block(&x, wdata, ldb, c0, c1, &out) }
            });
            true
        }
        BMat::F32(bm) if bm.rs() == 1 => {
            let ldb = if n == 1 { k } else { bm.cs() };
            let wdata = bm.data();
            for_column_blocks(n, k, 4, 1 << 20, |c0, c1| {
                // SAFETY: as above.
                unsafe { dots_block(&x, wdata, ldb, c0, c1, &out) }
            });
            true
        }
        BMat::F32(_) => false,
        BMat::Packed(pb) => {
            let np = pb.panels();
            for_column_blocks(np, k * 8, 1, 1 << 20, |p0, p1| {
                // SAFETY: as above; panels p0..p1 are this task's.
                unsafe { packed_block(&x, pb, p0, p1, &out) }
            });
            true
        }
    }
}

/// The activations: `m` rows of `k`, row stride `ld`.
struct X<'a> {
    data: &'a [f32],
    ld: usize,
    m: usize,
    k: usize,
}

struct Out<'a> {
    c: SendPtr<f32>,
    ldc: usize,
    epi: Epilogue<'a>,
}
// SAFETY: Out is shared read-only between tasks that write disjoint columns.
unsafe impl Sync for Out<'_> {}
unsafe impl Send for Out<'_> {}

/// Splits `0..n` into blocks (multiples of `align`, at most `max_w`) and runs them in parallel
/// when the work (`n·per_col` weights) is large enough.
fn for_column_blocks(n: usize, per_col: usize, align: usize, max_w: usize, f: impl Fn(usize, usize) + Sync + Send) {
    let threads = rayon::current_num_threads().max(1);
    let work = n * per_col;
    if threads == 1 || work < 1 << 15 {
        let mut c0 = 0;
        while c0 < n {
            let c1 = (c0 + max_w).min(n);
            f(c0, c1);
            c0 = c1;
        }
        return;
    }
    let tasks = (threads * 4).min(n.div_ceil(align));
    let w = n.div_ceil(tasks).next_multiple_of(align).min(max_w.max(align));
    let blocks = n.div_ceil(w);
    (0..blocks).into_par_iter().for_each(|i| f(i * w, ((i + 1) * w).min(n)));
}

/// Scalar epilogue for one output.
#[inline]
fn finish_scalar(acc: f32, cp: *mut f32, j: usize, epi: &Epilogue<'_>) {
    let mut r = acc;
    if let Some(b) = epi.bias {
        r += b[j];
    }
    // SAFETY: caller owns output element j of this row.
    unsafe {
        if epi.accumulate {
            r += *cp;
        }
        *cp = if epi.gelu { vmath::gelu_scalar(r) } else { r };
    }
}

/// Row-major f32 weights, columns `c0..c1` (≤ [`CBW`] wide per call chunk).
///
/// # Safety
/// Columns `c0..c1` of C are this caller's; `w` holds `B[k, n]` with row stride `ldb`.
unsafe fn rows_block(x: &X<'_>, w: &[f32], ldb: usize, c0: usize, c1: usize, out: &Out<'_>) {
    let mut cs = c0;
    while cs < c1 {
        let ce = (cs + CBW).min(c1);
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::simd::simd_level() == crate::kernels::simd::SimdLevel::Avx512 {
            x86::rows_avx512(x, w, ldb, cs, ce, out);
            cs = ce;
            continue;
        }
        rows_portable(x, w, ldb, cs, ce, out);
        cs = ce;
    }
}

/// Portable version of [`rows_block`] for one chunk.
fn rows_portable(x: &X<'_>, w: &[f32], ldb: usize, c0: usize, c1: usize, out: &Out<'_>) {
    let width = c1 - c0;
    let mut acc = [0f32; SMALL_M * CBW];
    for p in 0..x.k {
        let wrow = &w[p * ldb + c0..p * ldb + c1];
        for r in 0..x.m {
            let xv = x.data[r * x.ld + p];
            for (a, &wv) in acc[r * CBW..r * CBW + width].iter_mut().zip(wrow) {
                *a += xv * wv;
            }
        }
    }
    for r in 0..x.m {
        for j in 0..width {
            // SAFETY: row r, column c0+j is in C and owned by this task.
            let cp = unsafe { out.c.get().add(r * out.ldc + c0 + j) };
            finish_scalar(acc[r * CBW + j], cp, c0 + j, &out.epi);
        }
    }
}

/// Transposed f32 weights (dot products), columns `c0..c1`.
///
/// # Safety
/// Columns `c0..c1` of C are this caller's; `bt[j·ldb + p]` = `B[p, j]`.
unsafe fn dots_block(x: &X<'_>, bt: &[f32], ldb: usize, c0: usize, c1: usize, out: &Out<'_>) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::simd_level() == crate::kernels::simd::SimdLevel::Avx512 {
        return x86::dots_avx512(x, bt, ldb, c0, c1, out);
    }
    for j in c0..c1 {
        let col = &bt[j * ldb..j * ldb + x.k];
        for r in 0..x.m {
            let d = crate::kernels::simd::dot(&x.data[r * x.ld..r * x.ld + x.k], col);
            finish_scalar(d, out.c.get().add(r * out.ldc + j), j, &out.epi);
        }
    }
}

/// Packed panels `p0..p1`.
///
/// # Safety
/// The panels' columns of C are this caller's.
unsafe fn packed_block(x: &X<'_>, pb: &PackedB, p0: usize, p1: usize, out: &Out<'_>) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::simd_level() == crate::kernels::simd::SimdLevel::Avx512 {
        for p in p0..p1 {
            x86::panel_avx512(x, pb, p, out);
        }
        return;
    }
    let mut buf = [0f32; 32 * 64];
    let n = pb.n();
    for p in p0..p1 {
        let mut acc = [[0f32; 32]; SMALL_M];
        let mut kk = 0;
        while kk < x.k {
            let kc = 64.min(x.k - kk);
            pb.to_f32_panels(p, p + 1, kk, kc, &mut buf[..kc * 32]);
            for q in 0..kc {
                let wrow = &buf[q * 32..q * 32 + 32];
                for (r, acc_r) in acc.iter_mut().enumerate().take(x.m) {
                    let xv = x.data[r * x.ld + kk + q];
                    for (a, &wv) in acc_r.iter_mut().zip(wrow) {
                        *a += xv * wv;
                    }
                }
            }
            kk += kc;
        }
        for (r, acc_r) in acc.iter().enumerate().take(x.m) {
            for (jj, &v) in acc_r.iter().enumerate().take(32.min(n - p * 32)) {
                let j = p * 32 + jj;
                finish_scalar(v, out.c.get().add(r * out.ldc + j), j, &out.epi);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    #[inline]
    fn mask16(valid: usize) -> __mmask16 {
        if valid >= 16 {
            0xffff
        } else {
            ((1u32 << valid) - 1) as u16
        }
    }

    /// Epilogue for 16 outputs of one row starting at column `j` (`mask` = valid lanes).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn finish16(acc: __m512, cp: *mut f32, j: usize, mask: __mmask16, epi: &Epilogue<'_>) {
        let mut r = acc;
        if let Some(b) = epi.bias {
            r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(mask, b.as_ptr().add(j)));
        }
        if epi.accumulate {
            r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(mask, cp));
        }
        if epi.gelu {
            r = vmath::avx512::gelu(r);
        }
        _mm512_mask_storeu_ps(cp, mask, r);
    }

    /// Row-major weights: four weight rows per step into an L1 accumulator block.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn rows_avx512(x: &X<'_>, w: &[f32], ldb: usize, c0: usize, c1: usize, out: &Out<'_>) {
        let width = c1 - c0;
        let nv = width.div_ceil(16);
        let mut acc = [_mm512_setzero_ps(); SMALL_M * CBW / 16];
        let tail = mask16(width - (nv - 1) * 16);
        let wp = w.as_ptr().add(c0);
        let xp = x.data.as_ptr();
        let k4 = x.k / 4 * 4;
        let mut p = 0;
        while p < k4 {
            let (w0, w1, w2, w3) =
                (wp.add(p * ldb), wp.add((p + 1) * ldb), wp.add((p + 2) * ldb), wp.add((p + 3) * ldb));
            for r in 0..x.m {
                let xr = xp.add(r * x.ld + p);
                let (x0, x1, x2, x3) = (
                    _mm512_set1_ps(*xr),
                    _mm512_set1_ps(*xr.add(1)),
                    _mm512_set1_ps(*xr.add(2)),
                    _mm512_set1_ps(*xr.add(3)),
                );
                let accr = &mut acc[r * (CBW / 16)..r * (CBW / 16) + nv];
                for (v, a) in accr.iter_mut().enumerate() {
                    let m = if v + 1 == nv { tail } else { 0xffff };
                    let o = v * 16;
                    let mut s = _mm512_fmadd_ps(x0, _mm512_maskz_loadu_ps(m, w0.add(o)), *a);
                    s = _mm512_fmadd_ps(x1, _mm512_maskz_loadu_ps(m, w1.add(o)), s);
                    s = _mm512_fmadd_ps(x2, _mm512_maskz_loadu_ps(m, w2.add(o)), s);
                    *a = _mm512_fmadd_ps(x3, _mm512_maskz_loadu_ps(m, w3.add(o)), s);
                }
            }
            p += 4;
        }
        while p < x.k {
            let w0 = wp.add(p * ldb);
            for r in 0..x.m {
                let x0 = _mm512_set1_ps(*xp.add(r * x.ld + p));
                let accr = &mut acc[r * (CBW / 16)..r * (CBW / 16) + nv];
                for (v, a) in accr.iter_mut().enumerate() {
                    let m = if v + 1 == nv { tail } else { 0xffff };
                    *a = _mm512_fmadd_ps(x0, _mm512_maskz_loadu_ps(m, w0.add(v * 16)), *a);
                }
            }
            p += 1;
        }
        for r in 0..x.m {
            for v in 0..nv {
                let m = if v + 1 == nv { tail } else { 0xffff };
                let j = c0 + v * 16;
                finish16(acc[r * (CBW / 16) + v], out.c.get().add(r * out.ldc + j), j, m, &out.epi);
            }
        }
    }

    /// Horizontal sum of 16 lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn hsum(v: __m512) -> f32 {
        _mm512_reduce_add_ps(v)
    }

    /// Transposed weights: dot products, 4 columns × up to 4 rows per register block.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn dots_avx512(x: &X<'_>, bt: &[f32], ldb: usize, c0: usize, c1: usize, out: &Out<'_>) {
        let k = x.k;
        let kv = k.div_ceil(16);
        let ktail = mask16(k - (kv.max(1) - 1) * 16);
        let xp = x.data.as_ptr();
        let bp = bt.as_ptr();
        let mut j = c0;
        while j < c1 {
            let nj = 4.min(c1 - j);
            let mut r0 = 0;
            while r0 < x.m {
                let nr = 4.min(x.m - r0);
                let mut acc = [[_mm512_setzero_ps(); 4]; 4];
                for v in 0..kv {
                    let m = if v + 1 == kv { ktail } else { 0xffff };
                    let mut wv = [_mm512_setzero_ps(); 4];
                    for (jj, w) in wv.iter_mut().enumerate().take(nj) {
                        *w = _mm512_maskz_loadu_ps(m, bp.add((j + jj) * ldb + v * 16));
                    }
                    for (rr, acc_r) in acc.iter_mut().enumerate().take(nr) {
                        let xv = _mm512_maskz_loadu_ps(m, xp.add((r0 + rr) * x.ld + v * 16));
                        for jj in 0..4 {
                            acc_r[jj] = _mm512_fmadd_ps(xv, wv[jj], acc_r[jj]);
                        }
                    }
                }
                for (rr, acc_r) in acc.iter().enumerate().take(nr) {
                    for (jj, &a) in acc_r.iter().enumerate().take(nj) {
                        let cp = out.c.get().add((r0 + rr) * out.ldc + j + jj);
                        finish_scalar(hsum(a), cp, j + jj, &out.epi);
                    }
                }
                r0 += 4;
            }
            j += 4;
        }
    }

    /// Loads row `p` of an f32/f16/int8 panel (32 columns) as two f32 vectors.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load_row(data: &PackedData, base: usize) -> (__m512, __m512) {
        match data {
            PackedData::F32(d) => {
                let p = d.as_ptr().add(base);
                (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)))
            }
            PackedData::F16(d) => {
                let p = d.as_ptr().add(base) as *const __m256i;
                (_mm512_cvtph_ps(_mm256_loadu_si256(p)), _mm512_cvtph_ps(_mm256_loadu_si256(p.add(1))))
            }
            PackedData::I8 { q, .. } => {
                let p = q.as_ptr().add(base) as *const __m128i;
                (
                    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p))),
                    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(1)))),
                )
            }
            PackedData::Bf16(_) => unreachable!("bf16 panels are read in pairs"),
        }
    }

    /// One packed panel: all rows, f32 accumulation, epilogue on store.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn panel_avx512(x: &X<'_>, pb: &PackedB, p: usize, out: &Out<'_>) {
        let k = x.k;
        let n = pb.n();
        let xp = x.data.as_ptr();
        // two accumulator sets (even / odd k) per row keep enough FMAs in flight for m = 1
        let mut acc = [[_mm512_setzero_ps(); 4]; SMALL_M];
        match &pb.data {
            PackedData::Bf16(d) => {
                let kp = k.div_ceil(2);
                let bp = d.as_ptr().add(p * kp * 32) as *const __m512i;
                let hi_mask = _mm512_set1_epi32(0xffff_0000u32 as i32);
                for pp in 0..kp {
                    let v0 = _mm512_loadu_si512(bp.add(2 * pp));
                    let v1 = _mm512_loadu_si512(bp.add(2 * pp + 1));
                    let (e0, o0) = (
                        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v0)),
                        _mm512_castsi512_ps(_mm512_and_si512(v0, hi_mask)),
                    );
                    let (e1, o1) = (
                        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v1)),
                        _mm512_castsi512_ps(_mm512_and_si512(v1, hi_mask)),
                    );
                    let odd = 2 * pp + 1 < k;
                    for (r, a) in acc.iter_mut().enumerate().take(x.m) {
                        let xr = xp.add(r * x.ld + 2 * pp);
                        let xe = _mm512_set1_ps(*xr);
                        a[0] = _mm512_fmadd_ps(xe, e0, a[0]);
                        a[1] = _mm512_fmadd_ps(xe, e1, a[1]);
                        if odd {
                            let xo = _mm512_set1_ps(*xr.add(1));
                            a[2] = _mm512_fmadd_ps(xo, o0, a[2]);
                            a[3] = _mm512_fmadd_ps(xo, o1, a[3]);
                        }
                    }
                }
            }
            data => {
                let base = p * k * 32;
                let k2 = k / 2 * 2;
                let mut q = 0;
                while q < k2 {
                    let (w0, w1) = load_row(data, base + q * 32);
                    let (w2, w3) = load_row(data, base + (q + 1) * 32);
                    for (r, a) in acc.iter_mut().enumerate().take(x.m) {
                        let xr = xp.add(r * x.ld + q);
                        let (xa, xb) = (_mm512_set1_ps(*xr), _mm512_set1_ps(*xr.add(1)));
                        a[0] = _mm512_fmadd_ps(xa, w0, a[0]);
                        a[1] = _mm512_fmadd_ps(xa, w1, a[1]);
                        a[2] = _mm512_fmadd_ps(xb, w2, a[2]);
                        a[3] = _mm512_fmadd_ps(xb, w3, a[3]);
                    }
                    q += 2;
                }
                if q < k {
                    let (w0, w1) = load_row(data, base + q * 32);
                    for (r, a) in acc.iter_mut().enumerate().take(x.m) {
                        let xa = _mm512_set1_ps(*xp.add(r * x.ld + q));
                        a[0] = _mm512_fmadd_ps(xa, w0, a[0]);
                        a[1] = _mm512_fmadd_ps(xa, w1, a[1]);
                    }
                }
            }
        }
        let j0 = p * 32;
        let valid = 32.min(n - j0);
        let (m0, m1) = (mask16(valid), mask16(valid.saturating_sub(16)));
        let (s0, s1) = match &pb.data {
            PackedData::I8 { scale, .. } => {
                (_mm512_loadu_ps(scale.as_ptr().add(j0)), _mm512_loadu_ps(scale.as_ptr().add(j0 + 16)))
            }
            _ => (_mm512_set1_ps(1.0), _mm512_set1_ps(1.0)),
        };
        for (r, a) in acc.iter().enumerate().take(x.m) {
            let cp = out.c.get().add(r * out.ldc + j0);
            let v0 = _mm512_mul_ps(_mm512_add_ps(a[0], a[2]), s0);
            let v1 = _mm512_mul_ps(_mm512_add_ps(a[1], a[3]), s1);
            finish16(v0, cp, j0, m0, &out.epi);
            if valid > 16 {
                finish16(v1, cp.add(16), j0 + 16, m1, &out.epi);
            }
        }
    }
}
