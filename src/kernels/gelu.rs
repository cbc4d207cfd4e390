//! GELU, tanh approximation (`gelu_new` in HuggingFace, GPT-2's activation).

use rayon::prelude::*;

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

/// `out[n] = gelu(inp[n])`.
pub fn gelu_forward(out: &mut [f32], inp: &[f32]) {
    out.par_chunks_mut(PER_TASK).zip(inp.par_chunks(PER_TASK)).for_each(|(o, x)| {
        for (o, &x) in o.iter_mut().zip(x) {
            *o = gelu(x);
        }
    });
}

/// In place: `x[n] = gelu(x[n])`.
pub fn gelu_inplace(x: &mut [f32]) {
    x.par_chunks_mut(PER_TASK).for_each(|c| c.iter_mut().for_each(|v| *v = gelu(*v)));
}

/// Backward, accumulating: `dinp[n] += gelu'(inp[n])·dout[n]`.
pub fn gelu_backward(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
    dinp.par_chunks_mut(PER_TASK).zip(inp.par_chunks(PER_TASK).zip(dout.par_chunks(PER_TASK))).for_each(
        |(d, (x, g))| {
            for i in 0..d.len() {
                d[i] += gelu_grad(x[i]) * g[i];
            }
        },
    );
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
}
