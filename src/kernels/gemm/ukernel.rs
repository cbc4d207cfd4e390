//! Micro-kernels: one register tile `C[mr, nr] (+)= A[mr, kc] · B[kc, nr]`, finished by the
//! fused epilogue on store.
//!
//! B always comes as a packed panel of [`PANEL`] columns (`b[p·32 + j]`); A is read in place,
//! either row-major (`a[i·lda + p]`) or column-major (`a[i + p·lda]`), so activations are never
//! copied. Full `MR` rows of A must be readable; the driver hands partial row blocks over in a
//! zero-padded copy. Columns beyond `nr` and rows beyond `mr` are computed but never stored.

use crate::kernels::vmath;

/// Columns per packed B panel (two AVX-512 registers).
pub(crate) const PANEL: usize = 32;

/// How a micro-kernel finishes its tile: `C = gelu?(acc + (load_c ? C : 0) + bias)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TileEpi {
    /// Add the current contents of C (accumulate, or a later K block).
    pub load_c: bool,
    /// Bias at the tile's first column, or null.
    pub bias: *const f32,
    /// Apply GELU last.
    pub gelu: bool,
}

/// f32 micro-kernel: `(kc, a, lda, b, c, ldc, mr, nr, epi)`.
pub(crate) type UkrF32 = unsafe fn(usize, *const f32, usize, *const f32, *mut f32, usize, usize, usize, TileEpi);

/// bf16 micro-kernel on k-pairs: `(kpairs, a_pairs, lda_pairs, b_pairs, c, ldc, mr, nr, epi)`.
pub(crate) type UkrBf16 = unsafe fn(usize, *const u32, usize, *const u32, *mut f32, usize, usize, usize, TileEpi);

/// One instruction set's f32 micro-kernels.
#[derive(Clone, Copy)]
pub(crate) struct F32Kernel {
    /// Rows per tile.
    pub mr: usize,
    /// Columns per tile (16 or 32; a tile never straddles a panel).
    pub nr: usize,
    /// Kernel reading A row-major.
    pub rows: UkrF32,
    /// Kernel reading A column-major.
    pub cols: UkrF32,
    /// Name for benchmarks and reports.
    pub name: &'static str,
}

/// The widest f32 micro-kernel this CPU runs.
pub(crate) fn f32_kernel() -> F32Kernel {
    #[cfg(target_arch = "x86_64")]
    match crate::kernels::simd::simd_level() {
        crate::kernels::simd::SimdLevel::Avx512 => {
            return F32Kernel {
                mr: avx512::MR,
                nr: 32,
                rows: avx512::ukr_f32::<true>,
                cols: avx512::ukr_f32::<false>,
                name: "avx512-14x32",
            }
        }
        crate::kernels::simd::SimdLevel::Avx2 => {
            return F32Kernel {
                mr: avx2::MR,
                nr: 16,
                rows: avx2::ukr_f32::<true>,
                cols: avx2::ukr_f32::<false>,
                name: "avx2-6x16",
            }
        }
        _ => {}
    }
    generic_kernel()
}

/// The portable micro-kernel (also used by tests on every CPU).
pub(crate) fn generic_kernel() -> F32Kernel {
    F32Kernel {
        mr: generic::MR,
        nr: 16,
        rows: generic::ukr_f32::<true>,
        cols: generic::ukr_f32::<false>,
        name: "generic-4x16",
    }
}

/// Every f32 micro-kernel this CPU can run (tests compare each with the oracle).
#[cfg(test)]
pub(crate) fn all_kernels() -> Vec<F32Kernel> {
    let mut v = vec![generic_kernel()];
    #[cfg(target_arch = "x86_64")]
    {
        use crate::kernels::simd::{simd_level, SimdLevel};
        let level = simd_level();
        if matches!(level, SimdLevel::Avx512 | SimdLevel::Avx2) {
            v.push(F32Kernel {
                mr: avx2::MR,
                nr: 16,
                rows: avx2::ukr_f32::<true>,
                cols: avx2::ukr_f32::<false>,
                name: "avx2-6x16",
            });
        }
        if level == SimdLevel::Avx512 {
            v.push(f32_kernel());
        }
    }
    v
}

/// The AVX512-BF16 micro-kernel (`vdpbf16ps`) with its row count, when the CPU has it.
pub(crate) fn bf16_kernel() -> Option<(usize, UkrBf16)> {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::has_avx512_bf16() {
        return Some((avx512::MR, avx512::ukr_bf16));
    }
    None
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    /// Rows per tile: 14 × 2 accumulators + 2 B registers + 1 broadcast ≤ 32 registers.
    pub const MR: usize = 14;

    /// Masks for the two 16-lane halves of a tile row with `nr` valid columns.
    #[inline]
    fn masks(nr: usize) -> (__mmask16, __mmask16) {
        let lo = if nr >= 16 { 0xffff } else { ((1u32 << nr) - 1) as u16 };
        let hi = if nr >= 32 {
            0xffff
        } else if nr > 16 {
            ((1u32 << (nr - 16)) - 1) as u16
        } else {
            0
        };
        (lo, hi)
    }

    /// Stores the 14×32 accumulator tile with the epilogue.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store_tile(acc: &[__m512; 2 * MR], c: *mut f32, ldc: usize, mr: usize, nr: usize, epi: TileEpi) {
        let (m0, m1) = masks(nr);
        let (b0, b1) = if epi.bias.is_null() {
            (_mm512_setzero_ps(), _mm512_setzero_ps())
        } else {
            (_mm512_maskz_loadu_ps(m0, epi.bias), _mm512_maskz_loadu_ps(m1, epi.bias.add(16)))
        };
        for i in 0..mr.min(MR) {
            let cp = c.add(i * ldc);
            let mut r0 = _mm512_add_ps(acc[2 * i], b0);
            let mut r1 = _mm512_add_ps(acc[2 * i + 1], b1);
            if epi.load_c {
                r0 = _mm512_add_ps(r0, _mm512_maskz_loadu_ps(m0, cp));
                r1 = _mm512_add_ps(r1, _mm512_maskz_loadu_ps(m1, cp.add(16)));
            }
            if epi.gelu {
                r0 = vmath::avx512::gelu(r0);
                r1 = vmath::avx512::gelu(r1);
            }
            _mm512_mask_storeu_ps(cp, m0, r0);
            _mm512_mask_storeu_ps(cp.add(16), m1, r1);
        }
    }

    /// f32 14×32 tile. `AROW`: A(i, p) = `a[i·lda + p]`, else `a[i + p·lda]`.
    ///
    /// # Safety
    /// AVX-512F present; A readable for 14 rows × `kc`; B for `kc` panel rows; C writable
    /// for `mr` rows × `nr` columns.
    #[target_feature(enable = "avx512f,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn ukr_f32<const AROW: bool>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
        epi: TileEpi,
    ) {
        let mut acc = [_mm512_setzero_ps(); 2 * MR];
        let mut bp = b;
        for i in 0..mr.min(MR) {
            _mm_prefetch::<_MM_HINT_ET0>(c.add(i * ldc) as *const i8);
            _mm_prefetch::<_MM_HINT_ET0>(c.add(i * ldc + 16) as *const i8);
        }
        if AROW {
            // three row bases keep the 14 addresses in `base + k·lda` form
            let mut a0 = a;
            let mut a5 = a.add(5 * lda);
            let mut a10 = a.add(10 * lda);
            for _ in 0..kc {
                let b0 = _mm512_loadu_ps(bp);
                let b1 = _mm512_loadu_ps(bp.add(16));
                macro_rules! row {
                    ($i:expr, $base:expr, $off:expr) => {{
                        let av = _mm512_set1_ps(*$base.add($off * lda));
                        acc[2 * $i] = _mm512_fmadd_ps(av, b0, acc[2 * $i]);
                        acc[2 * $i + 1] = _mm512_fmadd_ps(av, b1, acc[2 * $i + 1]);
                    }};
                }
                row!(0, a0, 0);
                row!(1, a0, 1);
                row!(2, a0, 2);
                row!(3, a0, 3);
                row!(4, a0, 4);
                row!(5, a5, 0);
                row!(6, a5, 1);
                row!(7, a5, 2);
                row!(8, a5, 3);
                row!(9, a5, 4);
                row!(10, a10, 0);
                row!(11, a10, 1);
                row!(12, a10, 2);
                row!(13, a10, 3);
                a0 = a0.add(1);
                a5 = a5.add(1);
                a10 = a10.add(1);
                bp = bp.add(PANEL);
            }
        } else {
            let mut ap = a;
            for _ in 0..kc {
                let b0 = _mm512_loadu_ps(bp);
                let b1 = _mm512_loadu_ps(bp.add(16));
                for i in 0..MR {
                    let av = _mm512_set1_ps(*ap.add(i));
                    acc[2 * i] = _mm512_fmadd_ps(av, b0, acc[2 * i]);
                    acc[2 * i + 1] = _mm512_fmadd_ps(av, b1, acc[2 * i + 1]);
                }
                ap = ap.add(lda);
                bp = bp.add(PANEL);
            }
        }
        store_tile(&acc, c, ldc, mr, nr, epi);
    }

    /// bf16 14×32 tile on k-pairs with `vdpbf16ps`: A pair (i, p) = `a[i·lda + p]` (two bf16
    /// in one u32), B pair row p = `b[p·32 .. p·32 + 32]` (column j's (k, k+1) in lane j).
    ///
    /// # Safety
    /// AVX512-BF16 present; A readable for 14 rows × `kp` pairs; B for `kp` pair rows.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn ukr_bf16(
        kp: usize,
        a: *const u32,
        lda: usize,
        b: *const u32,
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
        epi: TileEpi,
    ) {
        let mut acc = [_mm512_setzero_ps(); 2 * MR];
        let mut bp = b;
        let mut a0 = a;
        let mut a5 = a.add(5 * lda);
        let mut a10 = a.add(10 * lda);
        for _ in 0..kp {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp as *const _));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(16) as *const _));
            macro_rules! row {
                ($i:expr, $base:expr, $off:expr) => {{
                    let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*$base.add($off * lda) as i32));
                    acc[2 * $i] = _mm512_dpbf16_ps(acc[2 * $i], av, b0);
                    acc[2 * $i + 1] = _mm512_dpbf16_ps(acc[2 * $i + 1], av, b1);
                }};
            }
            row!(0, a0, 0);
            row!(1, a0, 1);
            row!(2, a0, 2);
            row!(3, a0, 3);
            row!(4, a0, 4);
            row!(5, a5, 0);
            row!(6, a5, 1);
            row!(7, a5, 2);
            row!(8, a5, 3);
            row!(9, a5, 4);
            row!(10, a10, 0);
            row!(11, a10, 1);
            row!(12, a10, 2);
            row!(13, a10, 3);
            a0 = a0.add(1);
            a5 = a5.add(1);
            a10 = a10.add(1);
            bp = bp.add(PANEL);
        }
        store_tile(&acc, c, ldc, mr, nr, epi);
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// Rows per tile: 6 × 2 accumulators + 2 B registers + 1 broadcast ≤ 16 registers.
    pub const MR: usize = 6;

    /// f32 6×16 tile reading half a 32-wide panel (B row stride 32).
    ///
    /// # Safety
    /// AVX2+FMA present; A readable for 6 rows × `kc`; C writable for `mr` × `nr`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn ukr_f32<const AROW: bool>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
        epi: TileEpi,
    ) {
        let mut acc = [_mm256_setzero_ps(); 2 * MR];
        let mut bp = b;
        let mut ap = a;
        let (ars, acs) = if AROW { (lda, 1) } else { (1, lda) };
        for _ in 0..kc {
            let b0 = _mm256_loadu_ps(bp);
            let b1 = _mm256_loadu_ps(bp.add(8));
            for i in 0..MR {
                let av = _mm256_set1_ps(*ap.add(i * ars));
                acc[2 * i] = _mm256_fmadd_ps(av, b0, acc[2 * i]);
                acc[2 * i + 1] = _mm256_fmadd_ps(av, b1, acc[2 * i + 1]);
            }
            ap = ap.add(acs);
            bp = bp.add(PANEL);
        }
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let nr = nr.min(16) as i32;
        let m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr), idx);
        let m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr - 8), idx);
        let (bias0, bias1) = if epi.bias.is_null() {
            (_mm256_setzero_ps(), _mm256_setzero_ps())
        } else {
            (_mm256_maskload_ps(epi.bias, m0), _mm256_maskload_ps(epi.bias.add(8), m1))
        };
        for i in 0..mr.min(MR) {
            let cp = c.add(i * ldc);
            let mut r0 = _mm256_add_ps(acc[2 * i], bias0);
            let mut r1 = _mm256_add_ps(acc[2 * i + 1], bias1);
            if epi.load_c {
                r0 = _mm256_add_ps(r0, _mm256_maskload_ps(cp, m0));
                r1 = _mm256_add_ps(r1, _mm256_maskload_ps(cp.add(8), m1));
            }
            if epi.gelu {
                r0 = vmath::avx2::gelu(r0);
                r1 = vmath::avx2::gelu(r1);
            }
            _mm256_maskstore_ps(cp, m0, r0);
            _mm256_maskstore_ps(cp.add(8), m1, r1);
        }
    }
}

pub(crate) mod generic {
    use super::*;

    /// Rows per tile.
    pub const MR: usize = 4;

    /// Portable f32 4×16 tile reading half a 32-wide panel (B row stride 32).
    ///
    /// # Safety
    /// A readable for 4 rows × `kc`; C writable for `mr` × `nr`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn ukr_f32<const AROW: bool>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
        epi: TileEpi,
    ) {
        let mut acc = [[0f32; 16]; MR];
        let (ars, acs) = if AROW { (lda, 1) } else { (1, lda) };
        for p in 0..kc {
            let brow = std::slice::from_raw_parts(b.add(p * PANEL), 16);
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let av = *a.add(i * ars + p * acs);
                for (x, &bv) in acc_i.iter_mut().zip(brow) {
                    *x += av * bv;
                }
            }
        }
        for (i, acc_i) in acc.iter().enumerate().take(mr) {
            for (j, &v) in acc_i.iter().enumerate().take(nr.min(16)) {
                let cp = c.add(i * ldc + j);
                let mut r = v;
                if !epi.bias.is_null() {
                    r += *epi.bias.add(j);
                }
                if epi.load_c {
                    r += *cp;
                }
                if epi.gelu {
                    r = vmath::gelu_scalar(r);
                }
                *cp = r;
            }
        }
    }
}
