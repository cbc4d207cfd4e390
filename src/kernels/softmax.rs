//! Row-wise log-softmax and softmax.

/// Log-sum-exp of a row, max-subtracted for stability (f32 max, f64 sum).
#[inline]
pub fn logsumexp(row: &[f32]) -> f32 {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY || !max.is_finite() {
        return max;
    }
    let mut acc = [0f32; 8];
    let mut ch = row.chunks_exact(8);
    for c in &mut ch {
        for i in 0..8 {
            acc[i] += (c[i] - max).exp();
        }
    }
    let s: f64 = acc.iter().map(|&v| v as f64).sum::<f64>()
        + ch.remainder().iter().map(|&v| ((v - max).exp()) as f64).sum::<f64>();
    max + s.ln() as f32
}

/// In place: `row = log_softmax(row)`.
pub fn log_softmax_inplace(row: &mut [f32]) {
    let lse = logsumexp(row);
    row.iter_mut().for_each(|v| *v -= lse);
}

/// In place: `row = softmax(row)`.
pub fn softmax_inplace(row: &mut [f32]) {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logsumexp_is_stable_and_correct() {
        let row: Vec<f32> = (0..37).map(|i| i as f32 * 0.3 + 1000.0).collect();
        let want = 1000.0 + (0..37).map(|i| (i as f64 * 0.3).exp()).sum::<f64>().ln();
        assert!((logsumexp(&row) as f64 - want).abs() < 1e-3);
        let mut r = vec![1.0, 2.0, 3.0];
        softmax_inplace(&mut r);
        assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}
