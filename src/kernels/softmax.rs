//! Row-wise log-softmax and softmax, and the fused softmax–cross-entropy used in training.

use rayon::prelude::*;

use super::simd;

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

/// Fused softmax + cross-entropy over `logits[N, V]` with `targets[N]` (negative = ignored,
/// PyTorch's `ignore_index = -1`).
///
/// Writes `losses[n] = logsumexp(row) − row[target]` (0 for ignored rows). With
/// `grad_scale = Some(s)` the row is overwritten by its gradient `s·(softmax(row) − onehot(target))`
/// (zeros for ignored rows); otherwise the row is used as scratch. A row containing NaN gets a
/// NaN loss. Callers validate `target < V`.
pub fn softmax_cross_entropy(
    logits: &mut [f32],
    losses: &mut [f32],
    targets: &[i32],
    v: usize,
    grad_scale: Option<f32>,
) {
    let n = targets.len();
    assert!(logits.len() >= n * v && losses.len() >= n, "softmax_cross_entropy: buffers too small");
    logits[..n * v].par_chunks_mut(v).zip(losses[..n].par_iter_mut()).zip(targets.par_iter()).for_each(
        |((row, loss), &t)| {
            if t < 0 {
                *loss = 0.0;
                if grad_scale.is_some() {
                    row.fill(0.0);
                }
                return;
            }
            let t = t as usize;
            let target_logit = row[t];
            let max = simd::max(row);
            if !max.is_finite() {
                *loss = f32::NAN;
                if grad_scale.is_some() {
                    row.fill(f32::NAN);
                }
                return;
            }
            let sum = simd::exp_shift_sum(row, max);
            *loss = (max as f64 + sum.ln() - target_logit as f64) as f32;
            if let Some(s) = grad_scale {
                simd::scale(row, (s as f64 / sum) as f32);
                row[t] -= s;
            }
        },
    );
}

/// Naive oracle for [`softmax_cross_entropy`] on one row, in f64: `(loss, dlogits)` for grad scale 1.
pub fn softmax_cross_entropy_naive(row: &[f32], target: usize) -> (f64, Vec<f64>) {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    let loss = max + z.ln() - row[target] as f64;
    let mut g: Vec<f64> = row.iter().map(|&x| (x as f64 - max).exp() / z).collect();
    g[target] -= 1.0;
    (loss, g)
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

    #[test]
    fn fused_cross_entropy_matches_oracle_and_finite_differences() {
        let (n, v) = (5, 301);
        let logits: Vec<f32> = (0..n * v).map(|i| ((i * 7919 % 997) as f32 - 498.0) * 0.02).collect();
        let targets = [3i32, -1, 300, 0, 150];
        let mut work = logits.clone();
        let mut losses = vec![0f32; n];
        softmax_cross_entropy(&mut work, &mut losses, &targets, v, Some(0.5));
        for r in 0..n {
            let row = &logits[r * v..(r + 1) * v];
            if targets[r] < 0 {
                assert_eq!(losses[r], 0.0);
                assert!(work[r * v..(r + 1) * v].iter().all(|&g| g == 0.0));
                continue;
            }
            let (loss, g) = softmax_cross_entropy_naive(row, targets[r] as usize);
            assert!((losses[r] as f64 - loss).abs() < 1e-5, "row {r}");
            for j in 0..v {
                assert!((work[r * v + j] as f64 - 0.5 * g[j]).abs() < 1e-7, "row {r} col {j}");
            }
            // central difference of the f64 loss in a few coordinates
            for &j in &[0usize, targets[r] as usize, 77] {
                let h = 1e-3f32;
                let mut p = row.to_vec();
                p[j] += h;
                let lp = softmax_cross_entropy_naive(&p, targets[r] as usize).0;
                p[j] -= 2.0 * h;
                let lm = softmax_cross_entropy_naive(&p, targets[r] as usize).0;
                let fd = (lp - lm) / (2.0 * h as f64);
                assert!((fd - g[j]).abs() < 1e-4, "fd {fd} vs {}", g[j]);
            }
        }
        // loss only, rows with NaN
        let mut work = logits.clone();
        work[2 * v + 5] = f32::NAN;
        softmax_cross_entropy(&mut work, &mut losses, &targets, v, None);
        assert!(losses[2].is_nan() && losses[0].is_finite());
    }
}
