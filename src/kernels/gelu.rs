//! GELU, tanh approximation (`gelu_new` in HuggingFace, GPT-2's activation).

use rayon::prelude::*;

use super::simd::{exp_poly, simd_level, SimdLevel};

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const COEF: f32 = 0.044715;

/// Elements per rayon task.
const PER_TASK: usize = 1 << 14;

/// Scalar GELU: `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + COEF * x * x * x)).tanh())
}

/// Derivative of [`gelu`] at `x`.
#[inline(always)]
pub fn gelu_grad(x: f32) -> f32 {
    let cube = COEF * x * x * x;
    let t = (SQRT_2_OVER_PI * (x + cube)).tanh();
    let sech2 = 1.0 - t * t;
    0.5 * (1.0 + t) + 0.5 * x * sech2 * SQRT_2_OVER_PI * (1.0 + 3.0 * COEF * x * x)
}

/// `1 + tanh(u)` without cancellation: `2/(e^{2|u|} + 1)` for `u < 0`, `2 − 2/(e^{2|u|} + 1)`
/// otherwise, with the vectorisable exponential (a few ulp); NaN propagates.
#[inline(always)]
fn one_plus_tanh(u: f32) -> f32 {
    let a = u.abs();
    let a = if a > 43.0 { 43.0 } else { a }; // e^86 is finite; tanh(43) = 1 in f32
    let r = 2.0 / (exp_poly(2.0 * a) + 1.0);
    if u < 0.0 {
        r
    } else {
        2.0 - r
    }
}

#[inline(always)]
fn gelu_fast(x: f32) -> f32 {
    0.5 * x * one_plus_tanh(SQRT_2_OVER_PI * (x + COEF * x * x * x))
}

#[inline(always)]
fn gelu_grad_fast(x: f32) -> f32 {
    let opt = one_plus_tanh(SQRT_2_OVER_PI * (x + COEF * x * x * x));
    // 1 − tanh² = (1 + tanh)(1 − tanh) = opt·(2 − opt)
    0.5 * opt + 0.5 * x * (opt * (2.0 - opt)) * SQRT_2_OVER_PI * (1.0 + 3.0 * COEF * x * x)
}

#[inline(always)]
fn forward_generic(out: &mut [f32], inp: &[f32]) {
    for (o, &x) in out.iter_mut().zip(inp) {
        *o = gelu_fast(x);
    }
}

#[inline(always)]
fn inplace_generic(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = gelu_fast(*v);
    }
}

#[inline(always)]
fn backward_generic(d: &mut [f32], x: &[f32], g: &[f32]) {
    for ((d, &x), &g) in d.iter_mut().zip(x).zip(g) {
        *d += gelu_grad_fast(x) * g;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn forward_avx512(out: &mut [f32], inp: &[f32]) {
        super::forward_generic(out, inp)
    }
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn forward_avx2(out: &mut [f32], inp: &[f32]) {
        super::forward_generic(out, inp)
    }
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn inplace_avx512(x: &mut [f32]) {
        super::inplace_generic(x)
    }
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn inplace_avx2(x: &mut [f32]) {
        super::inplace_generic(x)
    }
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn backward_avx512(d: &mut [f32], x: &[f32], g: &[f32]) {
        super::backward_generic(d, x, g)
    }
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn backward_avx2(d: &mut [f32], x: &[f32], g: &[f32]) {
        super::backward_generic(d, x, g)
    }
}

fn forward_chunk(out: &mut [f32], inp: &[f32]) {
    match simd_level() {
        // SAFETY: the level was detected on this CPU.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { x86::forward_avx512(out, inp) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { x86::forward_avx2(out, inp) },
        _ => forward_generic(out, inp),
    }
}

fn inplace_chunk(x: &mut [f32]) {
    match simd_level() {
        // SAFETY: the level was detected on this CPU.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { x86::inplace_avx512(x) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { x86::inplace_avx2(x) },
        _ => inplace_generic(x),
    }
}

fn backward_chunk(d: &mut [f32], x: &[f32], g: &[f32]) {
    match simd_level() {
        // SAFETY: the level was detected on this CPU.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { x86::backward_avx512(d, x, g) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { x86::backward_avx2(d, x, g) },
        _ => backward_generic(d, x, g),
    }
}

/// `out[n] = gelu(inp[n])` (vectorised; `1 + tanh` is formed without cancellation, so it is
/// within a few ulp of the exact tanh-GELU, also in the far negative tail).
pub fn gelu_forward(out: &mut [f32], inp: &[f32]) {
    out.par_chunks_mut(PER_TASK).zip(inp.par_chunks(PER_TASK)).for_each(|(o, x)| forward_chunk(o, x));
}

/// In place: `x[n] = gelu(x[n])` (vectorised, as [`gelu_forward`]).
pub fn gelu_inplace(x: &mut [f32]) {
    x.par_chunks_mut(PER_TASK).for_each(inplace_chunk);
}

/// Backward, accumulating: `dinp[n] += gelu'(inp[n])·dout[n]` (vectorised).
pub fn gelu_backward(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
    dinp.par_chunks_mut(PER_TASK)
        .zip(inp.par_chunks(PER_TASK).zip(dout.par_chunks(PER_TASK)))
        .for_each(|(d, (x, g))| backward_chunk(d, x, g));
}

/// Naive oracle in f64.
pub fn gelu_naive(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_oracle_and_finite_difference() {
        for i in -60..=60 {
            let x = i as f32 * 0.1;
            assert!((gelu(x) - gelu_naive(x)).abs() < 1e-6, "x={x}");
            let h = 1e-3f64;
            let fd = (gelu_naive((x as f64 + h) as f32) as f64 - gelu_naive((x as f64 - h) as f32) as f64) / (2.0 * h);
            assert!((gelu_grad(x) as f64 - fd).abs() < 2e-3, "x={x}");
        }
    }

    #[test]
    fn vectorised_kernels_match_the_scalar_forms() {
        let x: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.006).chain([1e-6, -1e-6, 0.0, 30.0, -30.0]).collect();
        let mut y = vec![0f32; x.len()];
        gelu_forward(&mut y, &x);
        let mut z = x.clone();
        gelu_inplace(&mut z);
        assert_eq!(y, z);
        let g: Vec<f32> = x.iter().map(|v| 1.0 + v * 0.1).collect();
        let mut d = vec![0.5f32; x.len()];
        gelu_backward(&mut d, &x, &g);
        for i in 0..x.len() {
            let want = gelu_naive(x[i]) as f64;
            assert!((y[i] as f64 - want).abs() <= 2e-7 * (1.0 + want.abs()), "x={} {} vs {want}", x[i], y[i]);
            let wg = 0.5 + gelu_grad(x[i]) as f64 * g[i] as f64;
            assert!((d[i] as f64 - wg).abs() <= 1e-6 * (1.0 + wg.abs()), "x={}", x[i]);
        }
        let mut n = [f32::NAN];
        gelu_inplace(&mut n);
        assert!(n[0].is_nan());
    }
}
