//! Matrix multiplication: forward, backward and the naive oracle.
//!
//! Thin wrappers over [`super::gemm`]: the packed, cache-blocked GEMM with AVX-512 / AVX2 /
//! portable micro-kernels (rayon-parallel over output tiles), which itself switches to the
//! memory-bound GEMV kernels for 8 rows or fewer (decode).

use super::gemm::{self as g, BMat, Epilogue, MatRef};

/// A strided read-only matrix operand: element `(i, j)` is at `ptr[i*rs + j*cs]`.
#[derive(Clone, Copy)]
struct Operand<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

/// `c[m, n] = beta·c + a[m, k] · b[k, n]` (c row-major, a and b strided; beta is 0 or 1).
fn gemm(m: usize, k: usize, n: usize, a: Operand, b: Operand, beta: f32, c: &mut [f32]) {
    assert!(c.len() >= m * n, "gemm output too small");
    debug_assert!(beta == 0.0 || beta == 1.0, "beta must be 0 or 1");
    let am = MatRef::new(a.data, m, k, a.rs, a.cs);
    let bm = MatRef::new(b.data, k, n, b.rs, b.cs);
    g::gemm(c, n, am, BMat::F32(bm), Epilogue { accumulate: beta != 0.0, ..Default::default() });
}

/// `out[m, n] = inp[m, k] · w[k, n] + bias[n]` — the Conv1D/linear forward.
pub fn matmul_forward(out: &mut [f32], inp: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, k: usize, n: usize) {
    debug_assert!(inp.len() >= m * k && w.len() >= k * n && out.len() >= m * n);
    let epi = Epilogue { bias: bias.map(|b| &b[..n]), ..Default::default() };
    g::gemm(out, n, MatRef::row_major(inp, m, k), BMat::F32(MatRef::row_major(w, k, n)), epi);
}

/// `out[m, n] = inp[m, k] · wt[n, k]ᵀ` — the tied LM head (`wt` = `wte`).
pub fn matmul_forward_bt(out: &mut [f32], inp: &[f32], wt: &[f32], m: usize, k: usize, n: usize) {
    debug_assert!(inp.len() >= m * k && wt.len() >= n * k && out.len() >= m * n);
    g::gemm(out, n, MatRef::row_major(inp, m, k), BMat::F32(MatRef::row_major(wt, n, k).t()), Epilogue::default());
}

/// Backward of [`matmul_forward`], accumulating into the gradients:
/// `dinp[m, k] += dout[m, n] · w[k, n]ᵀ`, `dw[k, n] += inp[m, k]ᵀ · dout[m, n]`,
/// `dbias[n] += Σ_rows dout`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward(
    dinp: Option<&mut [f32]>,
    dw: Option<&mut [f32]>,
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    w: &[f32],
    m: usize,
    k: usize,
    n: usize,
) {
    if let Some(dinp) = dinp {
        gemm(m, n, k, Operand { data: dout, rs: n, cs: 1 }, Operand { data: w, rs: 1, cs: n }, 1.0, dinp);
    }
    if let Some(dw) = dw {
        gemm(k, m, n, Operand { data: inp, rs: 1, cs: k }, Operand { data: dout, rs: n, cs: 1 }, 1.0, dw);
    }
    if let Some(db) = dbias {
        for row in dout[..m * n].chunks_exact(n) {
            for (d, &g) in db.iter_mut().zip(row) {
                *d += g;
            }
        }
    }
}

/// Backward of [`matmul_forward_bt`], accumulating: `dinp[m, k] += dout[m, n] · wt[n, k]`,
/// `dwt[n, k] += dout[m, n]ᵀ · inp[m, k]`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_bt_backward(
    dinp: Option<&mut [f32]>,
    dwt: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    wt: &[f32],
    m: usize,
    k: usize,
    n: usize,
) {
    if let Some(dinp) = dinp {
        gemm(m, n, k, Operand { data: dout, rs: n, cs: 1 }, Operand { data: wt, rs: k, cs: 1 }, 1.0, dinp);
    }
    if let Some(dwt) = dwt {
        gemm(n, m, k, Operand { data: dout, rs: 1, cs: n }, Operand { data: inp, rs: k, cs: 1 }, 1.0, dwt);
    }
}

/// Naive oracle: `out[m, n] = inp[m, k] · w[k, n] + bias`, accumulated in f64.
pub fn matmul_forward_naive(
    out: &mut [f32],
    inp: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = bias.map_or(0.0, |b| b[j] as f64);
            for p in 0..k {
                s += inp[i * k + p] as f64 * w[p * n + j] as f64;
            }
            out[i * n + j] = s as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn forward_matches_oracle_for_small_and_large_m() {
        for &(m, k, n) in &[(1, 7, 5), (3, 64, 300), (8, 33, 1000), (9, 17, 13), (200, 96, 130), (700, 48, 64)] {
            let (x, w, b) = (rand_vec(m * k, 1), rand_vec(k * n, 2), rand_vec(n, 3));
            let mut got = vec![0.0; m * n];
            let mut want = vec![0.0; m * n];
            matmul_forward(&mut got, &x, &w, Some(&b), m, k, n);
            matmul_forward_naive(&mut want, &x, &w, Some(&b), m, k, n);
            assert!(max_diff(&got, &want) < 1e-5, "({m},{k},{n})");
            // transposed-weight variant
            let mut wt = vec![0.0; n * k];
            for p in 0..k {
                for j in 0..n {
                    wt[j * k + p] = w[p * n + j];
                }
            }
            let mut got_bt = vec![0.0; m * n];
            matmul_forward_bt(&mut got_bt, &x, &wt, m, k, n);
            matmul_forward_naive(&mut want, &x, &w, None, m, k, n);
            assert!(max_diff(&got_bt, &want) < 1e-5, "bt ({m},{k},{n})");
        }
    }

    #[test]
    fn backward_matches_oracle() {
        let (m, k, n) = (37, 23, 41);
        let (x, w, g) = (rand_vec(m * k, 4), rand_vec(k * n, 5), rand_vec(m * n, 6));
        let (mut dx, mut dw, mut db) = (vec![0.0; m * k], vec![0.0; k * n], vec![0.0; n]);
        matmul_backward(Some(&mut dx), Some(&mut dw), Some(&mut db), &g, &x, &w, m, k, n);
        for i in 0..m {
            for p in 0..k {
                let s: f64 = (0..n).map(|j| g[i * n + j] as f64 * w[p * n + j] as f64).sum();
                assert!((dx[i * k + p] as f64 - s).abs() < 1e-5);
            }
        }
        for p in 0..k {
            for j in 0..n {
                let s: f64 = (0..m).map(|i| x[i * k + p] as f64 * g[i * n + j] as f64).sum();
                assert!((dw[p * n + j] as f64 - s).abs() < 1e-5);
            }
        }
        for j in 0..n {
            let s: f32 = (0..m).map(|i| g[i * n + j]).sum();
            assert!((db[j] - s).abs() < 1e-5);
        }
    }
}
