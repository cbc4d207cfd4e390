//! Layer normalisation over the last dimension.

use rayon::prelude::*;

/// Rows per rayon task.
const ROWS_PER_TASK: usize = 16;

/// Normalises one row: returns (mean, rstd) and writes `out = (x - mean)·rstd·w + b`.
#[inline]
fn layernorm_row(out: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) -> (f32, f32) {
    let c = x.len();
    // two-pass statistics in f32 with 8 accumulators (vectorisable, stable)
    let mut acc = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for ch in &mut chunks {
        for i in 0..8 {
            acc[i] += ch[i];
        }
    }
    let mut sum: f32 = acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
    let mean = sum / c as f32;
    let mut vacc = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for ch in &mut chunks {
        for i in 0..8 {
            let d = ch[i] - mean;
            vacc[i] += d * d;
        }
    }
    sum = vacc.iter().sum::<f32>() + chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum::<f32>();
    let var = sum / c as f32;
    let rstd = 1.0 / (var + eps).sqrt();
    for i in 0..c {
        out[i] = (x[i] - mean) * rstd * w[i] + b[i];
    }
    (mean, rstd)
}

/// `out[n, c] = layernorm(inp[n, c])·w[c] + b[c]`; optionally stores `mean[n]`, `rstd[n]`
/// for the backward pass.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    out: &mut [f32],
    mean: Option<&mut [f32]>,
    rstd: Option<&mut [f32]>,
    inp: &[f32],
    w: &[f32],
    b: &[f32],
    c: usize,
    eps: f32,
) {
    let n = inp.len() / c;
    let out = &mut out[..n * c];
    match (mean, rstd) {
        (Some(mean), Some(rstd)) => {
            out.par_chunks_mut(c * ROWS_PER_TASK)
                .zip(inp.par_chunks(c * ROWS_PER_TASK))
                .zip(mean[..n].par_chunks_mut(ROWS_PER_TASK).zip(rstd[..n].par_chunks_mut(ROWS_PER_TASK)))
                .for_each(|((o, x), (m, r))| {
                    for (i, (orow, xrow)) in o.chunks_exact_mut(c).zip(x.chunks_exact(c)).enumerate() {
                        let (mu, rs) = layernorm_row(orow, xrow, w, b, eps);
                        m[i] = mu;
                        r[i] = rs;
                    }
                });
        }
        _ => {
            out.par_chunks_mut(c * ROWS_PER_TASK).zip(inp.par_chunks(c * ROWS_PER_TASK)).for_each(|(o, x)| {
                for (orow, xrow) in o.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                    layernorm_row(orow, xrow, w, b, eps);
                }
            });
        }
    }
}

/// Rows per task of [`layernorm_backward`]; fixed so the reduction order (and the result) does
/// not depend on the thread count or scheduling.
const BWD_ROWS: usize = 64;

/// Backward of [`layernorm_forward`], accumulating: `dinp[n, c] +=`, `dw[c] +=`, `db[c] +=`,
/// given `dout[n, c]`, the forward input and its saved `mean[n]`, `rstd[n]`.
///
/// Rows are processed in parallel blocks of 64; each block's `dw`/`db` partial sums are added
/// in block order, so the result is deterministic.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    dinp: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    w: &[f32],
    mean: &[f32],
    rstd: &[f32],
    c: usize,
) {
    let n = inp.len() / c;
    let blocks = n.div_ceil(BWD_ROWS);
    let mut partial = vec![0f32; blocks * 2 * c];
    dinp[..n * c].par_chunks_mut(BWD_ROWS * c).zip(partial.par_chunks_mut(2 * c)).enumerate().for_each(
        |(blk, (dx_blk, part))| {
            let (pw, pb) = part.split_at_mut(c);
            let r0 = blk * BWD_ROWS;
            for (i, dx) in dx_blk.chunks_exact_mut(c).enumerate() {
                let r = r0 + i;
                let x = &inp[r * c..(r + 1) * c];
                let g = &dout[r * c..(r + 1) * c];
                let (mu, rs) = (mean[r], rstd[r]);
                let mut dnorm_mean = 0f32;
                let mut dnorm_norm_mean = 0f32;
                for k in 0..c {
                    let norm = (x[k] - mu) * rs;
                    let dnorm = w[k] * g[k];
                    dnorm_mean += dnorm;
                    dnorm_norm_mean += dnorm * norm;
                }
                dnorm_mean /= c as f32;
                dnorm_norm_mean /= c as f32;
                for k in 0..c {
                    let norm = (x[k] - mu) * rs;
                    let dnorm = w[k] * g[k];
                    pb[k] += g[k];
                    pw[k] += norm * g[k];
                    dx[k] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * rs;
                }
            }
        },
    );
    for part in partial.chunks_exact(2 * c) {
        for k in 0..c {
            dw[k] += part[k];
            db[k] += part[c + k];
        }
    }
}

/// Naive oracle for [`layernorm_forward`] in f64.
pub fn layernorm_forward_naive(out: &mut [f32], inp: &[f32], w: &[f32], b: &[f32], c: usize, eps: f32) {
    for (o, x) in out.chunks_exact_mut(c).zip(inp.chunks_exact(c)) {
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        for i in 0..c {
            o[i] = ((x[i] as f64 - mean) * rstd * w[i] as f64 + b[i] as f64) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_matches_oracle() {
        let c = 37;
        let n = 40;
        let x: Vec<f32> = (0..n * c).map(|i| ((i * 7919 % 101) as f32 - 50.0) * 0.05 + 3.0).collect();
        let w: Vec<f32> = (0..c).map(|i| 1.0 + i as f32 * 0.01).collect();
        let b: Vec<f32> = (0..c).map(|i| i as f32 * -0.02).collect();
        let mut got = vec![0.0; n * c];
        let mut want = vec![0.0; n * c];
        let (mut m, mut r) = (vec![0.0; n], vec![0.0; n]);
        layernorm_forward(&mut got, Some(&mut m), Some(&mut r), &x, &w, &b, c, 1e-5);
        layernorm_forward_naive(&mut want, &x, &w, &b, c, 1e-5);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5);
        }
        let mut got2 = vec![0.0; n * c];
        layernorm_forward(&mut got2, None, None, &x, &w, &b, c, 1e-5);
        assert_eq!(got, got2);
    }

    #[test]
    fn backward_matches_finite_differences() {
        let (n, c) = (70, 9); // more than one block of rows
        let x: Vec<f32> = (0..n * c).map(|i| ((i * 7919 % 101) as f32 - 50.0) * 0.05).collect();
        let w: Vec<f32> = (0..c).map(|i| 1.0 + i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..c).map(|i| i as f32 * -0.02).collect();
        let g: Vec<f32> = (0..n * c).map(|i| ((i * 31 % 17) as f32 - 8.0) * 0.1).collect();
        let eps = 1e-5;
        let mut out = vec![0.0; n * c];
        let (mut m, mut r) = (vec![0.0; n], vec![0.0; n]);
        layernorm_forward(&mut out, Some(&mut m), Some(&mut r), &x, &w, &b, c, eps);
        let (mut dx, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
        layernorm_backward(&mut dx, &mut dw, &mut db, &g, &x, &w, &m, &r, c);
        let loss = |x: &[f32], w: &[f32], b: &[f32]| {
            let mut o = vec![0.0; n * c];
            layernorm_forward_naive(&mut o, x, w, b, c, eps);
            o.iter().zip(&g).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>()
        };
        let h = 1e-2f32;
        let fd = |f: &dyn Fn(f32) -> f64| (f(h) - f(-h)) / (2.0 * h as f64);
        for idx in (0..n * c).step_by(7) {
            let d = fd(&|e| {
                let mut p = x.clone();
                p[idx] += e;
                loss(&p, &w, &b)
            });
            assert!((d - dx[idx] as f64).abs() < 2e-3 * (1.0 + d.abs()), "dx[{idx}] {d} vs {}", dx[idx]);
        }
        for k in 0..c {
            let d = fd(&|e| {
                let mut p = w.clone();
                p[k] += e;
                loss(&x, &p, &b)
            });
            assert!((d - dw[k] as f64).abs() < 2e-3 * (1.0 + d.abs()), "dw[{k}]");
            let d = fd(&|e| {
                let mut p = b.clone();
                p[k] += e;
                loss(&x, &w, &p)
            });
            assert!((d - db[k] as f64).abs() < 2e-3 * (1.0 + d.abs()), "db[{k}]");
        }
    }
}
