//! Vector primitives with run-time CPU dispatch.
//!
//! Rust has no fast-math, so a plain `sum += a[i] * b[i]` loop stays scalar.
//! These helpers keep several independent accumulators so the compiler can
//! vectorise, and are compiled three times (AVX-512, AVX2+FMA, baseline) with
//! the widest one the CPU supports picked at run time.

/// Number of independent accumulators (one AVX-512 register of f32).
const LANES: usize = 16;

#[inline(always)]
fn dot_generic<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..LANES {
            acc[i] = if FMA { x[i].mul_add(y[i], acc[i]) } else { acc[i] + x[i] * y[i] };
        }
    }
    let mut tail = 0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    // pairwise reduction of the lanes
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            acc[i] += acc[i + w];
        }
    }
    acc[0] + tail
}

#[inline(always)]
fn axpy_generic<const FMA: bool>(y: &mut [f32], alpha: f32, x: &[f32]) {
    let n = y.len().min(x.len());
    for (yi, xi) in y[..n].iter_mut().zip(&x[..n]) {
        *yi = if FMA { alpha.mul_add(*xi, *yi) } else { *yi + alpha * *xi };
    }
}

/// Cephes-style `exp` on the range the callers use, branch-free so it vectorises:
/// `x` is clamped to `[-87, 88]`, split as `n·ln2 + r` with `|r| ≤ ln2/2`, and
/// `e^r` comes from a degree-6 polynomial (relative error ≲ 2 ulp).
#[inline(always)]
pub(crate) fn exp_poly(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let i = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let r = x - n * LN2_HI - n * LN2_LO;
    let z = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * z + r + 1.0;
    y * f32::from_bits(((i + 127) << 23) as u32)
}

#[inline(always)]
fn max_generic(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut nan = [false; LANES];
    let mut ch = a.chunks_exact(LANES);
    for c in &mut ch {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
            nan[i] |= c[i].is_nan();
        }
    }
    let mut m = f32::NEG_INFINITY;
    let mut any_nan = nan.iter().any(|&b| b);
    for &v in acc.iter().chain(ch.remainder()) {
        m = if v > m { v } else { m };
        any_nan |= v.is_nan();
    }
    if any_nan {
        f32::NAN
    } else {
        m
    }
}

/// Elements summed in f32 lanes before the block sum is added to an f64 total.
const EXP_BLOCK: usize = 256;

#[inline(always)]
fn exp_shift_sum_generic(row: &mut [f32], shift: f32) -> f64 {
    let mut total = 0f64;
    for block in row.chunks_mut(EXP_BLOCK) {
        let mut acc = [0f32; LANES];
        let mut ch = block.chunks_exact_mut(LANES);
        for c in &mut ch {
            for i in 0..LANES {
                let e = exp_poly(c[i] - shift);
                c[i] = e;
                acc[i] += e;
            }
        }
        let mut s = 0f32;
        for v in ch.into_remainder() {
            *v = exp_poly(*v - shift);
            s += *v;
        }
        let mut w = LANES;
        while w > 1 {
            w /= 2;
            for i in 0..w {
                acc[i] += acc[i + w];
            }
        }
        total += (acc[0] + s) as f64;
    }
    total
}

#[inline(always)]
fn scale_generic(y: &mut [f32], alpha: f32) {
    for v in y.iter_mut() {
        *v *= alpha;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        super::dot_generic::<true>(a, b)
    }
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        super::dot_generic::<true>(a, b)
    }
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn axpy_avx512(y: &mut [f32], alpha: f32, x: &[f32]) {
        super::axpy_generic::<true>(y, alpha, x)
    }
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy_avx2(y: &mut [f32], alpha: f32, x: &[f32]) {
        super::axpy_generic::<true>(y, alpha, x)
    }
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn max_avx512(a: &[f32]) -> f32 {
        super::max_generic(a)
    }
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn max_avx2(a: &[f32]) -> f32 {
        super::max_generic(a)
    }
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn exp_shift_sum_avx512(row: &mut [f32], shift: f32) -> f64 {
        super::exp_shift_sum_generic(row, shift)
    }
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_shift_sum_avx2(row: &mut [f32], shift: f32) -> f64 {
        super::exp_shift_sum_generic(row, shift)
    }
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn scale_avx512(y: &mut [f32], alpha: f32) {
        super::scale_generic(y, alpha)
    }
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn scale_avx2(y: &mut [f32], alpha: f32) {
        super::scale_generic(y, alpha)
    }
}

/// Which instruction set the dispatching helpers use on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdLevel {
    /// AVX-512F with FMA.
    Avx512,
    /// AVX2 with FMA.
    Avx2,
    /// Whatever the compile target guarantees.
    Baseline,
}

/// Detects the widest supported level (std caches the CPUID query).
#[inline]
pub fn simd_level() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
            return SimdLevel::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            return SimdLevel::Avx2;
        }
    }
    SimdLevel::Baseline
}

/// Whether the CPU has AVX512-BF16 (`vdpbf16ps`) next to AVX-512F/BW/VL.
#[inline]
pub fn has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        simd_level() == SimdLevel::Avx512
            && std::arch::is_x86_feature_detected!("avx512bf16")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Dot product `Σ a[i]·b[i]` over the common length. Shapes: a `[n]`, b `[n]`.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    match simd_level() {
        // SAFETY: the level was detected on this CPU.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { x86::dot_avx512(a, b) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { x86::dot_avx2(a, b) },
        _ => dot_generic::<false>(a, b),
    }
}

/// `y += alpha · x` over the common length. Shapes: y `[n]`, x `[n]`.
#[inline]
pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    match simd_level() {
        // SAFETY: the level was detected on this CPU.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { x86::axpy_avx512(y, alpha, x) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { x86::axpy_avx2(y, alpha, x) },
        _ => axpy_generic::<false>(y, alpha, x),
    }
}

/// Largest element (`-inf` for an empty slice, NaN if any element is NaN). Shape: a `[n]`.
#[inline]
pub fn max(a: &[f32]) -> f32 {
    match simd_level() {
        // SAFETY: the level was detected on this CPU.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { x86::max_avx512(a) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { x86::max_avx2(a) },
        _ => max_generic(a),
    }
}

/// In place `row[i] = exp(row[i] − shift)`; returns `Σ row[i]` (f32 blocks summed in f64).
/// Shape: row `[n]`. The exponential is a vectorised polynomial (≲ 2 ulp) valid for
/// arguments in `[-87, 88]` (smaller arguments give ≈ 1.6e-38 instead of 0).
#[inline]
pub fn exp_shift_sum(row: &mut [f32], shift: f32) -> f64 {
    match simd_level() {
        // SAFETY: the level was detected on this CPU.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { x86::exp_shift_sum_avx512(row, shift) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { x86::exp_shift_sum_avx2(row, shift) },
        _ => exp_shift_sum_generic(row, shift),
    }
}

/// `y *= alpha`. Shape: y `[n]`.
#[inline]
pub fn scale(y: &mut [f32], alpha: f32) {
    match simd_level() {
        // SAFETY: the level was detected on this CPU.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { x86::scale_avx512(y, alpha) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { x86::scale_avx2(y, alpha) },
        _ => scale_generic(y, alpha),
    }
}

/// Naive oracle for [`dot`], accumulated in f64.
pub fn dot_naive(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_axpy_match_naive_for_all_lengths() {
        for n in [0usize, 1, 3, 15, 16, 17, 64, 100, 769] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.1).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.3).collect();
            let d = dot(&a, &b);
            assert!((d - dot_naive(&a, &b)).abs() <= 1e-4 * (1.0 + d.abs()), "n={n}");
            let mut y = b.clone();
            axpy(&mut y, 0.5, &a);
            for i in 0..n {
                assert!((y[i] - (b[i] + 0.5 * a[i])).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn exp_max_and_scale_match_std() {
        let mut worst = 0f64;
        for i in -8700..=880 {
            let x = i as f32 * 0.01 + 0.003;
            let mut r = [x];
            exp_shift_sum(&mut r, 0.0);
            let want = (x as f64).exp();
            worst = worst.max(((r[0] as f64 - want) / want).abs());
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        let mut row: Vec<f32> = (0..1000).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.1).collect();
        let m = max(&row);
        assert_eq!(m, 5.0);
        let want: f64 = row.iter().map(|&x| ((x - m) as f64).exp()).sum();
        let got = exp_shift_sum(&mut row, m);
        assert!((got - want).abs() < 1e-5 * want);
        row[7] = f32::NAN;
        assert!(max(&row).is_nan());
        assert_eq!(max(&[]), f32::NEG_INFINITY);
        let mut y = vec![2.0f32; 37];
        scale(&mut y, 0.5);
        assert!(y.iter().all(|&v| v == 1.0));
    }
}
