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
use super::gemm::{BMat, Epilogue, MatRef, PackedB, SendPtr, KC, SMALL_M};
use super::vmath;

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
            rows_gemv(&x, bm.data(), bm.rs(), n, &out);
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

/// Capacity (floats) of one stack accumulator block: `m` rows × ≤ `ACC / m` columns.
const ACC: usize = 8192;

/// Row-major f32 weights `B[k, n]` (row stride `ldb`): column blocks as wide as the stack
/// accumulator allows (all of `n` for one row up to 8192 columns), each split over K into
/// contiguous row ranges that run in parallel and are summed in a fixed tree order
/// (deterministic whatever the thread count). Every task streams whole weight rows.
fn rows_gemv(x: &X<'_>, w: &[f32], ldb: usize, n: usize, out: &Out<'_>) {
    let threads = rayon::current_num_threads().max(1);
    let width = (ACC / x.m).min(n).max(1);
    let width = if width < n { width / 16 * 16 } else { width };
    let blocks = n.div_ceil(width);
    let small = threads == 1 || x.k * n < 1 << 15;
    let leaves = if small { 1 } else { (4 * threads).div_ceil(blocks).min(x.k.div_ceil(64)).max(1) };
    let run = |blk: usize| {
        let (c0, c1) = (blk * width, ((blk + 1) * width).min(n));
        let mut acc = [0f32; ACC];
        let used = x.m * (c1 - c0);
        rows_partial(x, w, ldb, 0, x.k, c0, c1, &mut acc[..used], leaves);
        // SAFETY: columns c0..c1 of C belong to this block.
        unsafe { rows_finish(x, &acc[..used], c0, c1, out) };
    };
    if small || blocks == 1 {
        (0..blocks).for_each(run);
    } else {
        (0..blocks).into_par_iter().for_each(run);
    }
}

/// `acc[m, c1−c0] = X[:, k0..k1] · B[k0..k1, c0..c1]`, split into `leaves` parallel K ranges.
#[allow(clippy::too_many_arguments)]
fn rows_partial(
    x: &X<'_>,
    w: &[f32],
    ldb: usize,
    k0: usize,
    k1: usize,
    c0: usize,
    c1: usize,
    acc: &mut [f32],
    leaves: usize,
) {
    if leaves <= 1 || k1 - k0 < 32 {
        // K in blocks of KC rows (aligned like the GEMM's), each summed from zero and then
        // added to the total, as the GEMM micro-kernel does: one long FMA chain per output
        // (50257 terms in the LM head's backward) would add every small term to a large
        // partial sum and lose ~√K roundings of it.
        acc.fill(0.0);
        let p1 = ((k0 / KC + 1) * KC).min(k1);
        rows_leaf(x, w, ldb, k0, p1, c0, c1, acc);
        if p1 < k1 {
            let mut part = [0f32; ACC];
            let part = &mut part[..acc.len()];
            for b0 in (p1..k1).step_by(KC) {
                part.fill(0.0);
                rows_leaf(x, w, ldb, b0, (b0 + KC).min(k1), c0, c1, part);
                for (a, &q) in acc.iter_mut().zip(part.iter()) {
                    *a += q; // = q + a, the GEMM's `acc + C` (addition commutes exactly)
                }
            }
        }
        return;
    }
    let half = leaves / 2;
    let mid = k0 + (k1 - k0) * half / leaves;
    let mut right = [0f32; ACC];
    let right = &mut right[..acc.len()];
    rayon::join(
        || rows_partial(x, w, ldb, k0, mid, c0, c1, acc, half),
        || rows_partial(x, w, ldb, mid, k1, c0, c1, right, leaves - half),
    );
    for (a, r) in acc.iter_mut().zip(right.iter()) {
        *a += r;
    }
}

/// `acc[m, c1−c0] += X[:, k0..k1] · B[k0..k1, c0..c1]` on the best kernel of this CPU.
#[allow(clippy::too_many_arguments)]
fn rows_leaf(x: &X<'_>, w: &[f32], ldb: usize, k0: usize, k1: usize, c0: usize, c1: usize, acc: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match crate::kernels::simd::simd_level() {
        crate::kernels::simd::SimdLevel::Avx512 => {
            // SAFETY: feature detected; ranges are inside the views.
            unsafe { x86::rows_avx512(x, w, ldb, k0, k1, c0, c1, acc) };
            return;
        }
        crate::kernels::simd::SimdLevel::Avx2 => {
            // SAFETY: as above.
            unsafe { x86_avx2::rows_avx2(x, w, ldb, k0, k1, c0, c1, acc) };
            return;
        }
        crate::kernels::simd::SimdLevel::Baseline => {}
    }
    rows_portable(x, w, ldb, k0, k1, c0, c1, acc);
}

/// Portable leaf of [`rows_partial`].
#[allow(clippy::too_many_arguments)]
fn rows_portable(x: &X<'_>, w: &[f32], ldb: usize, k0: usize, k1: usize, c0: usize, c1: usize, acc: &mut [f32]) {
    let width = c1 - c0;
    for p in k0..k1 {
        let wrow = &w[p * ldb + c0..p * ldb + c1];
        for r in 0..x.m {
            let xv = x.data[r * x.ld + p];
            for (a, &wv) in acc[r * width..(r + 1) * width].iter_mut().zip(wrow) {
                *a += xv * wv;
            }
        }
    }
}

/// Applies the epilogue to an accumulator block and stores it in columns `c0..c1`.
///
/// # Safety
/// Columns `c0..c1` of C are this caller's.
unsafe fn rows_finish(x: &X<'_>, acc: &[f32], c0: usize, c1: usize, out: &Out<'_>) {
    let width = c1 - c0;
    #[cfg(target_arch = "x86_64")]
    match crate::kernels::simd::simd_level() {
        crate::kernels::simd::SimdLevel::Avx512 => return x86::finish_rows_avx512(x.m, acc, c0, c1, out),
        crate::kernels::simd::SimdLevel::Avx2 => return x86_avx2::finish_rows_avx2(x.m, acc, c0, c1, out),
        crate::kernels::simd::SimdLevel::Baseline => {}
    }
    for r in 0..x.m {
        for j in 0..width {
            finish_scalar(acc[r * width + j], out.c.get().add(r * out.ldc + c0 + j), c0 + j, &out.epi);
        }
    }
}

/// Transposed f32 weights (dot products), columns `c0..c1`.
///
/// # Safety
/// Columns `c0..c1` of C are this caller's; `bt[j·ldb + p]` = `B[p, j]`.
unsafe fn dots_block(x: &X<'_>, bt: &[f32], ldb: usize, c0: usize, c1: usize, out: &Out<'_>) {
    #[cfg(target_arch = "x86_64")]
    match crate::kernels::simd::simd_level() {
        crate::kernels::simd::SimdLevel::Avx512 => return x86::dots_avx512(x, bt, ldb, c0, c1, out),
        crate::kernels::simd::SimdLevel::Avx2 => return x86_avx2::dots_avx2(x, bt, ldb, c0, c1, out),
        crate::kernels::simd::SimdLevel::Baseline => {}
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
    match crate::kernels::simd::simd_level() {
        crate::kernels::simd::SimdLevel::Avx512 => {
            for p in p0..p1 {
                x86::panel_avx512(x, pb, p, out);
            }
            return;
        }
        crate::kernels::simd::SimdLevel::Avx2 => {
            for p in p0..p1 {
                x86_avx2::panel_avx2(x, pb, p, out);
            }
            return;
        }
        crate::kernels::simd::SimdLevel::Baseline => {}
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

    /// Leaf of the row-major GEMV: rows `k0..k1`, four weight rows per step, into the
    /// accumulator block `acc[m][c1−c0]` (L1 resident).
    #[target_feature(enable = "avx512f,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn rows_avx512(
        x: &X<'_>,
        w: &[f32],
        ldb: usize,
        k0: usize,
        k1: usize,
        c0: usize,
        c1: usize,
        acc: &mut [f32],
    ) {
        let width = c1 - c0;
        let nv = width.div_ceil(16);
        let tail = mask16(width - (nv - 1) * 16);
        let wp = w.as_ptr().add(c0);
        let xp = x.data.as_ptr();
        let ap = acc.as_mut_ptr();
        let mut p = k0;
        while p + 4 <= k1 {
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
                let ar = ap.add(r * width);
                for v in 0..nv {
                    let m = if v + 1 == nv { tail } else { 0xffff };
                    let o = v * 16;
                    let mut s =
                        _mm512_fmadd_ps(x0, _mm512_maskz_loadu_ps(m, w0.add(o)), _mm512_maskz_loadu_ps(m, ar.add(o)));
                    s = _mm512_fmadd_ps(x1, _mm512_maskz_loadu_ps(m, w1.add(o)), s);
                    s = _mm512_fmadd_ps(x2, _mm512_maskz_loadu_ps(m, w2.add(o)), s);
                    s = _mm512_fmadd_ps(x3, _mm512_maskz_loadu_ps(m, w3.add(o)), s);
                    _mm512_mask_storeu_ps(ar.add(o), m, s);
                }
            }
            p += 4;
        }
        while p < k1 {
            let w0 = wp.add(p * ldb);
            for r in 0..x.m {
                let x0 = _mm512_set1_ps(*xp.add(r * x.ld + p));
                let ar = ap.add(r * width);
                for v in 0..nv {
                    let m = if v + 1 == nv { tail } else { 0xffff };
                    let o = v * 16;
                    let s =
                        _mm512_fmadd_ps(x0, _mm512_maskz_loadu_ps(m, w0.add(o)), _mm512_maskz_loadu_ps(m, ar.add(o)));
                    _mm512_mask_storeu_ps(ar.add(o), m, s);
                }
            }
            p += 1;
        }
    }

    /// Epilogue + store of an accumulator block `acc[m][c1−c0]`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn finish_rows_avx512(m: usize, acc: &[f32], c0: usize, c1: usize, out: &Out<'_>) {
        let width = c1 - c0;
        let nv = width.div_ceil(16);
        let tail = mask16(width - (nv - 1) * 16);
        for r in 0..m {
            for v in 0..nv {
                let mk = if v + 1 == nv { tail } else { 0xffff };
                let a = _mm512_maskz_loadu_ps(mk, acc.as_ptr().add(r * width + v * 16));
                let j = c0 + v * 16;
                finish16(a, out.c.get().add(r * out.ldc + j), j, mk, &out.epi);
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
        let mut r0 = 0;
        while r0 < x.m {
            match x.m - r0 {
                1 => dots_rows::<1>(x, r0, bt, ldb, c0, c1, out),
                2 => dots_rows::<2>(x, r0, bt, ldb, c0, c1, out),
                3 => dots_rows::<3>(x, r0, bt, ldb, c0, c1, out),
                _ => dots_rows::<4>(x, r0, bt, ldb, c0, c1, out),
            }
            r0 += 4;
        }
    }

    /// `R` activation rows × 4 weight rows at a time; the 4 weight rows are contiguous, so each
    /// task streams one contiguous range of `bt`.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn dots_rows<const R: usize>(
        x: &X<'_>,
        r0: usize,
        bt: &[f32],
        ldb: usize,
        c0: usize,
        c1: usize,
        out: &Out<'_>,
    ) {
        let k = x.k;
        let (kfull, rem) = (k / 16, k % 16);
        let mrem = mask16(rem);
        let mut xs = [x.data.as_ptr(); R];
        for (r, xr) in xs.iter_mut().enumerate() {
            *xr = x.data.as_ptr().add((r0 + r) * x.ld);
        }
        let mut j = c0;
        while j < c1 {
            let nj = 4.min(c1 - j);
            let mut w = [bt.as_ptr(); 4];
            for (jj, wj) in w.iter_mut().enumerate() {
                // missing columns re-read the last one (computed, never stored)
                *wj = bt.as_ptr().add((j + jj.min(nj - 1)) * ldb);
            }
            let mut acc = [[_mm512_setzero_ps(); 4]; R];
            for v in 0..kfull {
                let o = v * 16;
                let wv = [
                    _mm512_loadu_ps(w[0].add(o)),
                    _mm512_loadu_ps(w[1].add(o)),
                    _mm512_loadu_ps(w[2].add(o)),
                    _mm512_loadu_ps(w[3].add(o)),
                ];
                for r in 0..R {
                    let xv = _mm512_loadu_ps(xs[r].add(o));
                    for jj in 0..4 {
                        acc[r][jj] = _mm512_fmadd_ps(xv, wv[jj], acc[r][jj]);
                    }
                }
            }
            if rem > 0 {
                let o = kfull * 16;
                let wv = [
                    _mm512_maskz_loadu_ps(mrem, w[0].add(o)),
                    _mm512_maskz_loadu_ps(mrem, w[1].add(o)),
                    _mm512_maskz_loadu_ps(mrem, w[2].add(o)),
                    _mm512_maskz_loadu_ps(mrem, w[3].add(o)),
                ];
                for r in 0..R {
                    let xv = _mm512_maskz_loadu_ps(mrem, xs[r].add(o));
                    for jj in 0..4 {
                        acc[r][jj] = _mm512_fmadd_ps(xv, wv[jj], acc[r][jj]);
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                for (jj, &a) in acc_r.iter().enumerate().take(nj) {
                    let cp = out.c.get().add((r0 + r) * out.ldc + j + jj);
                    finish_scalar(hsum(a), cp, j + jj, &out.epi);
                }
            }
            j += 4;
        }
    }

    /// Software prefetch distance in the weight stream.
    const PF_BYTES: usize = 8192;

    /// Bytes per stored element.
    #[inline]
    fn data_elem_bytes(data: &PackedData) -> usize {
        match data {
            PackedData::F32(_) => 4,
            PackedData::F16(_) => 2,
            PackedData::I8 { .. } => 1,
            PackedData::Bf16(_) => 4,
        }
    }

    /// Base pointer of the stored elements (for prefetching).
    #[inline]
    fn data_ptr(data: &PackedData) -> *const i8 {
        match data {
            PackedData::F32(d) => d.as_ptr() as *const i8,
            PackedData::F16(d) => d.as_ptr() as *const i8,
            PackedData::I8 { q, .. } => q.as_ptr(),
            PackedData::Bf16(d) => d.as_ptr() as *const i8,
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

    /// One packed panel: all rows, f32 accumulation, epilogue on store. The row count is a
    /// const parameter for 1–4 rows so that the accumulators stay in registers (a runtime row
    /// count kept them on the stack: a store/reload in every FMA chain, which made the int8
    /// GEMV compute-bound); 5–8 rows use the runtime form.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn panel_avx512(x: &X<'_>, pb: &PackedB, p: usize, out: &Out<'_>) {
        match x.m {
            1 => panel_avx512_m::<1>(x, pb, p, out),
            2 => panel_avx512_m::<2>(x, pb, p, out),
            3 => panel_avx512_m::<3>(x, pb, p, out),
            4 => panel_avx512_m::<4>(x, pb, p, out),
            _ => panel_avx512_m::<SMALL_M>(x, pb, p, out),
        }
    }

    /// [`panel_avx512`] for exactly `M` rows when `M < SMALL_M`; `M == SMALL_M` serves any count ≤ 8.
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn panel_avx512_m<const M: usize>(x: &X<'_>, pb: &PackedB, p: usize, out: &Out<'_>) {
        // A compile-time row count for M < SMALL_M (the dispatcher passes M == x.m there).
        let rows = if M < SMALL_M { M } else { x.m };
        let k = x.k;
        let n = pb.n();
        let xp = x.data.as_ptr();
        // two accumulator sets (even / odd k) per row keep enough FMAs in flight for m = 1
        let mut acc = [[_mm512_setzero_ps(); 4]; M];
        match &pb.data {
            PackedData::Bf16(d) => {
                let kp = k.div_ceil(2);
                let bp = d.as_ptr().add(p * kp * 32) as *const __m512i;
                let hi_mask = _mm512_set1_epi32(0xffff_0000u32 as i32);
                for pp in 0..kp {
                    let ahead = (bp.add(2 * pp) as *const i8).add(PF_BYTES);
                    _mm_prefetch::<_MM_HINT_T0>(ahead);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.add(64));
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
                    for (r, a) in acc.iter_mut().enumerate().take(rows) {
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
                let elem = data_elem_bytes(data);
                let raw = data_ptr(data).add(base * elem);
                while q < k2 {
                    // every 64-byte line this iteration consumes (two panel rows), PF_BYTES ahead
                    let ahead = raw.add(q * 32 * elem + PF_BYTES);
                    for line in 0..elem {
                        _mm_prefetch::<_MM_HINT_T0>(ahead.add(line * 64));
                    }
                    let (w0, w1) = load_row(data, base + q * 32);
                    let (w2, w3) = load_row(data, base + (q + 1) * 32);
                    for (r, a) in acc.iter_mut().enumerate().take(rows) {
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
                    for (r, a) in acc.iter_mut().enumerate().take(rows) {
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
        for (r, a) in acc.iter().enumerate().take(rows) {
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

/// AVX2+FMA leaves (CPUs without AVX-512). The row-major leaf and its epilogue follow the
/// AVX2 GEMM micro-kernel's order exactly (one FMA chain per output over k, then `+ bias`,
/// `+ C`, GELU), so a GEMV row equals the same row computed by the GEMM bit for bit.
#[cfg(target_arch = "x86_64")]
mod x86_avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// Lane mask with the first `valid` (≤ 8) lanes set.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn mask8(valid: usize) -> __m256i {
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(valid.min(8) as i32), idx)
    }

    /// Epilogue for 8 outputs of one row starting at column `j` (`mask` = valid lanes).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn finish8(acc: __m256, cp: *mut f32, j: usize, mask: __m256i, epi: &Epilogue<'_>) {
        let mut r = acc;
        r = match epi.bias {
            Some(b) => _mm256_add_ps(r, _mm256_maskload_ps(b.as_ptr().add(j), mask)),
            None => _mm256_add_ps(r, _mm256_setzero_ps()),
        };
        if epi.accumulate {
            r = _mm256_add_ps(r, _mm256_maskload_ps(cp, mask));
        }
        if epi.gelu {
            r = vmath::avx2::gelu(r);
        }
        _mm256_maskstore_ps(cp, mask, r);
    }

    /// Leaf of the row-major GEMV: rows `k0..k1`, four weight rows per step, into the
    /// accumulator block `acc[m][c1−c0]` (L1 resident).
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn rows_avx2(
        x: &X<'_>,
        w: &[f32],
        ldb: usize,
        k0: usize,
        k1: usize,
        c0: usize,
        c1: usize,
        acc: &mut [f32],
    ) {
        let width = c1 - c0;
        let nfull = width / 8;
        let rem = width % 8;
        let tail = mask8(rem);
        let wp = w.as_ptr().add(c0);
        let xp = x.data.as_ptr();
        let ap = acc.as_mut_ptr();
        let mut p = k0;
        while p + 4 <= k1 {
            let (w0, w1, w2, w3) =
                (wp.add(p * ldb), wp.add((p + 1) * ldb), wp.add((p + 2) * ldb), wp.add((p + 3) * ldb));
            for r in 0..x.m {
                let xr = xp.add(r * x.ld + p);
                let (x0, x1, x2, x3) = (
                    _mm256_set1_ps(*xr),
                    _mm256_set1_ps(*xr.add(1)),
                    _mm256_set1_ps(*xr.add(2)),
                    _mm256_set1_ps(*xr.add(3)),
                );
                let ar = ap.add(r * width);
                for v in 0..nfull {
                    let o = v * 8;
                    let mut s = _mm256_fmadd_ps(x0, _mm256_loadu_ps(w0.add(o)), _mm256_loadu_ps(ar.add(o)));
                    s = _mm256_fmadd_ps(x1, _mm256_loadu_ps(w1.add(o)), s);
                    s = _mm256_fmadd_ps(x2, _mm256_loadu_ps(w2.add(o)), s);
                    s = _mm256_fmadd_ps(x3, _mm256_loadu_ps(w3.add(o)), s);
                    _mm256_storeu_ps(ar.add(o), s);
                }
                if rem > 0 {
                    let o = nfull * 8;
                    let mut s =
                        _mm256_fmadd_ps(x0, _mm256_maskload_ps(w0.add(o), tail), _mm256_maskload_ps(ar.add(o), tail));
                    s = _mm256_fmadd_ps(x1, _mm256_maskload_ps(w1.add(o), tail), s);
                    s = _mm256_fmadd_ps(x2, _mm256_maskload_ps(w2.add(o), tail), s);
                    s = _mm256_fmadd_ps(x3, _mm256_maskload_ps(w3.add(o), tail), s);
                    _mm256_maskstore_ps(ar.add(o), tail, s);
                }
            }
            p += 4;
        }
        while p < k1 {
            let w0 = wp.add(p * ldb);
            for r in 0..x.m {
                let x0 = _mm256_set1_ps(*xp.add(r * x.ld + p));
                let ar = ap.add(r * width);
                for v in 0..nfull {
                    let o = v * 8;
                    let s = _mm256_fmadd_ps(x0, _mm256_loadu_ps(w0.add(o)), _mm256_loadu_ps(ar.add(o)));
                    _mm256_storeu_ps(ar.add(o), s);
                }
                if rem > 0 {
                    let o = nfull * 8;
                    let s =
                        _mm256_fmadd_ps(x0, _mm256_maskload_ps(w0.add(o), tail), _mm256_maskload_ps(ar.add(o), tail));
                    _mm256_maskstore_ps(ar.add(o), tail, s);
                }
            }
            p += 1;
        }
    }

    /// Epilogue + store of an accumulator block `acc[m][c1−c0]`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn finish_rows_avx2(m: usize, acc: &[f32], c0: usize, c1: usize, out: &Out<'_>) {
        let width = c1 - c0;
        for r in 0..m {
            let mut v = 0;
            while v < width {
                let mk = mask8(width - v);
                let a = _mm256_maskload_ps(acc.as_ptr().add(r * width + v), mk);
                let j = c0 + v;
                finish8(a, out.c.get().add(r * out.ldc + j), j, mk, &out.epi);
                v += 8;
            }
        }
    }

    /// Horizontal sum of 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// Transposed weights: dot products, 4 columns × up to 2 rows per register block.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dots_avx2(x: &X<'_>, bt: &[f32], ldb: usize, c0: usize, c1: usize, out: &Out<'_>) {
        let mut r0 = 0;
        while r0 < x.m {
            if x.m - r0 == 1 {
                dots_rows::<1>(x, r0, bt, ldb, c0, c1, out);
            } else {
                dots_rows::<2>(x, r0, bt, ldb, c0, c1, out);
            }
            r0 += 2;
        }
    }

    /// `R` activation rows × 4 contiguous weight rows at a time.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn dots_rows<const R: usize>(
        x: &X<'_>,
        r0: usize,
        bt: &[f32],
        ldb: usize,
        c0: usize,
        c1: usize,
        out: &Out<'_>,
    ) {
        let k = x.k;
        let (kfull, rem) = (k / 8, k % 8);
        let mrem = mask8(rem);
        let mut xs = [x.data.as_ptr(); R];
        for (r, xr) in xs.iter_mut().enumerate() {
            *xr = x.data.as_ptr().add((r0 + r) * x.ld);
        }
        let mut j = c0;
        while j < c1 {
            let nj = 4.min(c1 - j);
            let mut w = [bt.as_ptr(); 4];
            for (jj, wj) in w.iter_mut().enumerate() {
                // missing columns re-read the last one (computed, never stored)
                *wj = bt.as_ptr().add((j + jj.min(nj - 1)) * ldb);
            }
            let mut acc = [[_mm256_setzero_ps(); 4]; R];
            for v in 0..kfull {
                let o = v * 8;
                for (jj, wj) in w.iter().enumerate() {
                    let wv = _mm256_loadu_ps(wj.add(o));
                    for r in 0..R {
                        acc[r][jj] = _mm256_fmadd_ps(_mm256_loadu_ps(xs[r].add(o)), wv, acc[r][jj]);
                    }
                }
            }
            if rem > 0 {
                let o = kfull * 8;
                for (jj, wj) in w.iter().enumerate() {
                    let wv = _mm256_maskload_ps(wj.add(o), mrem);
                    for r in 0..R {
                        acc[r][jj] = _mm256_fmadd_ps(_mm256_maskload_ps(xs[r].add(o), mrem), wv, acc[r][jj]);
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                for (jj, &a) in acc_r.iter().enumerate().take(nj) {
                    let cp = out.c.get().add((r0 + r) * out.ldc + j + jj);
                    finish_scalar(hsum(a), cp, j + jj, &out.epi);
                }
            }
            j += 4;
        }
    }

    /// Software prefetch distance in the weight stream.
    const PF_BYTES: usize = 8192;

    /// Loads 8 consecutive stored weights at element `idx` of an f32/f16/int8 panel as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(data: &PackedData, idx: usize) -> __m256 {
        match data {
            PackedData::F32(d) => _mm256_loadu_ps(d.as_ptr().add(idx)),
            PackedData::F16(d) => _mm256_cvtph_ps(_mm_loadu_si128(d.as_ptr().add(idx) as *const __m128i)),
            PackedData::I8 { q, .. } => {
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(q.as_ptr().add(idx) as *const __m128i)))
            }
            PackedData::Bf16(_) => unreachable!("bf16 panels are read in pairs"),
        }
    }

    /// Stored bytes per element of an f32/f16/int8 panel.
    #[inline]
    fn elem_bytes(data: &PackedData) -> usize {
        match data {
            PackedData::F32(_) => 4,
            PackedData::F16(_) => 2,
            PackedData::I8 { .. } => 1,
            PackedData::Bf16(_) => 4,
        }
    }

    /// One packed panel (32 columns): all rows, f32 accumulation, epilogue on store.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn panel_avx2(x: &X<'_>, pb: &PackedB, p: usize, out: &Out<'_>) {
        match x.m {
            1 => panel_avx2_m::<1>(x, pb, p, out),
            2 => panel_avx2_m::<2>(x, pb, p, out),
            3 => panel_avx2_m::<3>(x, pb, p, out),
            _ => panel_avx2_m::<SMALL_M>(x, pb, p, out),
        }
    }

    /// [`panel_avx2`] for exactly `M` rows when `M < SMALL_M`; `M == SMALL_M` serves any count ≤ 8.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn panel_avx2_m<const M: usize>(x: &X<'_>, pb: &PackedB, p: usize, out: &Out<'_>) {
        let rows = if M < SMALL_M { M } else { x.m };
        let k = x.k;
        let n = pb.n();
        let xp = x.data.as_ptr();
        let mut acc = [[_mm256_setzero_ps(); 4]; M];
        match &pb.data {
            PackedData::Bf16(d) => {
                let kp = k.div_ceil(2);
                let bp = d.as_ptr().add(p * kp * 32);
                let hi_mask = _mm256_set1_epi32(0xffff_0000u32 as i32);
                for pp in 0..kp {
                    let row = bp.add(pp * 32);
                    let ahead = (row as *const i8).add(PF_BYTES);
                    _mm_prefetch::<_MM_HINT_T0>(ahead);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.add(64));
                    let mut ev = [_mm256_setzero_ps(); 4];
                    let mut od = [_mm256_setzero_ps(); 4];
                    for q in 0..4 {
                        let v = _mm256_loadu_si256(row.add(q * 8) as *const __m256i);
                        ev[q] = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v));
                        od[q] = _mm256_castsi256_ps(_mm256_and_si256(v, hi_mask));
                    }
                    let odd = 2 * pp + 1 < k;
                    for (r, a) in acc.iter_mut().enumerate().take(rows) {
                        let xr = xp.add(r * x.ld + 2 * pp);
                        let xe = _mm256_set1_ps(*xr);
                        for q in 0..4 {
                            a[q] = _mm256_fmadd_ps(xe, ev[q], a[q]);
                        }
                        if odd {
                            let xo = _mm256_set1_ps(*xr.add(1));
                            for q in 0..4 {
                                a[q] = _mm256_fmadd_ps(xo, od[q], a[q]);
                            }
                        }
                    }
                }
            }
            data => {
                let base = p * k * 32;
                let elem = elem_bytes(data);
                let raw = match data {
                    PackedData::F32(d) => d.as_ptr() as *const i8,
                    PackedData::F16(d) => d.as_ptr() as *const i8,
                    PackedData::I8 { q, .. } => q.as_ptr(),
                    PackedData::Bf16(d) => d.as_ptr() as *const i8,
                }
                .add(base * elem);
                for q in 0..k {
                    // every 64-byte line of this panel row (32 · elem bytes), PF_BYTES ahead
                    if (q * 32 * elem) % 64 == 0 {
                        let ahead = raw.add(q * 32 * elem + PF_BYTES);
                        for line in 0..elem.div_ceil(2) {
                            _mm_prefetch::<_MM_HINT_T0>(ahead.add(line * 64));
                        }
                    }
                    let idx = base + q * 32;
                    let wv = [load8(data, idx), load8(data, idx + 8), load8(data, idx + 16), load8(data, idx + 24)];
                    for (r, a) in acc.iter_mut().enumerate().take(rows) {
                        let xa = _mm256_set1_ps(*xp.add(r * x.ld + q));
                        for qq in 0..4 {
                            a[qq] = _mm256_fmadd_ps(xa, wv[qq], a[qq]);
                        }
                    }
                }
            }
        }
        let j0 = p * 32;
        let valid = 32.min(n - j0);
        let scale = match &pb.data {
            PackedData::I8 { scale, .. } => Some(scale.as_ptr().add(j0)),
            _ => None,
        };
        for (r, a) in acc.iter().enumerate().take(rows) {
            let cp = out.c.get().add(r * out.ldc + j0);
            for (q, &aq) in a.iter().enumerate() {
                let lo = q * 8;
                if lo >= valid {
                    break;
                }
                let v = match scale {
                    Some(s) => _mm256_mul_ps(aq, _mm256_loadu_ps(s.add(lo))),
                    None => aq,
                };
                finish8(v, cp.add(lo), j0 + lo, mask8(valid - lo), &out.epi);
            }
        }
    }
}
