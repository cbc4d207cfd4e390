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
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
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
}
