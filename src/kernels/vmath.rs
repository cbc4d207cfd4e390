//! Vectorised `exp` and GELU for fused epilogues, softmax and attention.
//!
//! One algorithm in three widths (AVX-512, AVX2+FMA, scalar) so every path rounds
//! the same way up to the order of the final additions: `exp(x) = 2ⁿ·p(r)` with
//! `n = round(x·log₂e)`, `r = x − n·ln2` (two-constant Cody–Waite reduction) and the
//! degree-6 Cephes polynomial (relative error ≤ 2 ulp on `[-87, 88]`). GELU uses the
//! identity `0.5·x·(1 + tanh(u)) = x / (1 + exp(−2u))`, `u = √(2/π)·(x + 0.044715·x³)`.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const P0: f32 = 1.987_569_1e-4;
const P1: f32 = 1.398_199_9e-3;
const P2: f32 = 8.333_452e-3;
const P3: f32 = 4.166_579_6e-2;
const P4: f32 = 1.666_666_5e-1;
const P5: f32 = 0.5;
/// Inputs are clamped to `[EXP_LO, EXP_HI]`; `exp(EXP_LO)` is below the smallest normal.
const EXP_HI: f32 = 88.3;
const EXP_LO: f32 = -87.3;
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_COEF: f32 = 0.044715;

/// Scalar `exp` with the same reduction and polynomial as the vector versions.
#[inline]
pub fn exp_scalar(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let x = x.clamp(EXP_LO, EXP_HI);
    let n = (x * LOG2E).round();
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let r2 = r * r;
    let p = P0.mul_add(r, P1).mul_add(r, P2).mul_add(r, P3).mul_add(r, P4).mul_add(r, P5);
    let p = p.mul_add(r2, r) + 1.0;
    // 2ⁿ for n in [-126, 127]
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Scalar GELU (tanh form, via `x / (1 + exp(−2u))`).
#[inline]
pub fn gelu_scalar(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + GELU_COEF * x * x * x);
    x / (1.0 + exp_scalar(-2.0 * u))
}

/// AVX-512 versions (call only from `avx512f` code).
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    /// `exp` of 16 lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn exp(x: __m512) -> __m512 {
        let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(EXP_LO)), _mm512_set1_ps(EXP_HI));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
            x,
            _mm512_set1_ps(LOG2E),
        ));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let r2 = _mm512_mul_ps(r, r);
        let mut p = _mm512_fmadd_ps(_mm512_set1_ps(P0), r, _mm512_set1_ps(P1));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P2));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P3));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P4));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P5));
        p = _mm512_fmadd_ps(p, r2, r);
        p = _mm512_add_ps(p, _mm512_set1_ps(1.0));
        _mm512_scalef_ps(p, n)
    }

    /// GELU of 16 lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn gelu(x: __m512) -> __m512 {
        let x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
        let inner = _mm512_fmadd_ps(_mm512_set1_ps(GELU_COEF), x3, x);
        let e = exp(_mm512_mul_ps(_mm512_set1_ps(-2.0 * SQRT_2_OVER_PI), inner));
        _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0), e))
    }
}

/// AVX2+FMA versions (call only from `avx2,fma` code).
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// `exp` of 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn exp(x: __m256) -> __m256 {
        let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(EXP_LO)), _mm256_set1_ps(EXP_HI));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
            x,
            _mm256_set1_ps(LOG2E),
        ));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let r2 = _mm256_mul_ps(r, r);
        let mut p = _mm256_fmadd_ps(_mm256_set1_ps(P0), r, _mm256_set1_ps(P1));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P2));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P3));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P4));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P5));
        p = _mm256_fmadd_ps(p, r2, r);
        p = _mm256_add_ps(p, _mm256_set1_ps(1.0));
        let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)));
        _mm256_mul_ps(p, _mm256_castsi256_ps(e))
    }

    /// GELU of 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn gelu(x: __m256) -> __m256 {
        let x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
        let inner = _mm256_fmadd_ps(_mm256_set1_ps(GELU_COEF), x3, x);
        let e = exp(_mm256_mul_ps(_mm256_set1_ps(-2.0 * SQRT_2_OVER_PI), inner));
        _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_exp_and_gelu_match_libm() {
        let mut worst = 0f64;
        for i in -8700..=8800 {
            let x = i as f32 * 0.01;
            let want = (x as f64).exp();
            let got = exp_scalar(x) as f64;
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 4e-7, "exp rel err {worst}");
        assert_eq!(exp_scalar(-1000.0), exp_scalar(EXP_LO));
        assert!(exp_scalar(-1000.0) < 1e-37);
        assert!(exp_scalar(f32::NAN).is_nan());
        for i in -1000..=1000 {
            let x = i as f32 * 0.01;
            let want = super::super::gelu::gelu_naive(x);
            assert!((gelu_scalar(x) - want).abs() <= 2e-7 * (1.0 + want.abs()), "x={x}");
        }
        assert!(gelu_scalar(-50.0).abs() < 1e-30);
        assert_eq!(gelu_scalar(50.0), 50.0);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_exp_and_gelu_equal_scalar_shape() {
        use std::arch::x86_64::*;
        let xs: Vec<f32> = (0..160).map(|i| (i as f32 - 80.0) * 0.37).collect();
        if std::arch::is_x86_feature_detected!("avx512f") {
            for ch in xs.chunks(16) {
                let mut e = [0f32; 16];
                let mut g = [0f32; 16];
                // SAFETY: feature detected above.
                unsafe {
                    let v = _mm512_loadu_ps(ch.as_ptr());
                    _mm512_storeu_ps(e.as_mut_ptr(), avx512::exp(v));
                    _mm512_storeu_ps(g.as_mut_ptr(), avx512::gelu(v));
                }
                for i in 0..16 {
                    let (x, es) = (ch[i], exp_scalar(ch[i]));
                    assert!((e[i] - es).abs() <= 2e-7 * es, "exp {x}");
                    assert!((g[i] - gelu_scalar(x)).abs() <= 1e-6 * (1.0 + x.abs()), "gelu {x}");
                }
            }
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            for ch in xs.chunks(8) {
                let mut e = [0f32; 8];
                let mut g = [0f32; 8];
                // SAFETY: features detected above.
                unsafe {
                    let v = _mm256_loadu_ps(ch.as_ptr());
                    _mm256_storeu_ps(e.as_mut_ptr(), avx2::exp(v));
                    _mm256_storeu_ps(g.as_mut_ptr(), avx2::gelu(v));
                }
                for i in 0..8 {
                    let (x, es) = (ch[i], exp_scalar(ch[i]));
                    assert!((e[i] - es).abs() <= 2e-7 * es, "exp {x}");
                    assert!((g[i] - gelu_scalar(x)).abs() <= 1e-6 * (1.0 + x.abs()), "gelu {x}");
                }
            }
        }
    }
}
