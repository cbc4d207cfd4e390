//! Matrix multiplication: forward, backward and the naive oracle.
//!
//! Large products go through `matrixmultiply`'s packed SGEMM, split across the
//! rayon pool (rows of the output, or column blocks when there are few rows).
//! Products with only a few rows (decode) are memory-bound matrix-vector work and
//! use a streaming kernel that reads each weight once for all rows.

use rayon::prelude::*;

use super::simd::{axpy, dot};

/// A strided read-only matrix operand: element `(i, j)` is at `ptr[i*rs + j*cs]`.
#[derive(Clone, Copy)]
struct Operand<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

/// Raw pointer that may cross threads; every user writes a disjoint region.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: only used to hand disjoint output regions to rayon tasks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    #[inline(always)]
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Rows below which the streaming (matrix-vector style) kernel is used.
const SMALL_M: usize = 8;

/// `c[m, n] = beta·c + a[m, k] · b[k, n]` (c row-major, a and b strided).
fn gemm(m: usize, k: usize, n: usize, a: Operand, b: Operand, beta: f32, c: &mut [f32]) {
    assert!(c.len() >= m * n, "gemm output too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c[..m * n].iter_mut().for_each(|x| *x *= beta);
        return;
    }
    let threads = rayon::current_num_threads().max(1);
    let cp = SendPtr(c.as_mut_ptr());
    let run = |r0: usize, r1: usize, c0: usize, c1: usize| {
        // SAFETY: (r0..r1, c0..c1) blocks are disjoint across tasks and in bounds;
        // operand indexing stays within the slices checked by the callers.
        unsafe {
            matrixmultiply::sgemm(
                r1 - r0,
                k,
                c1 - c0,
                1.0,
                a.data.as_ptr().add(r0 * a.rs),
                a.rs as isize,
                a.cs as isize,
                b.data.as_ptr().add(c0 * b.cs),
                b.rs as isize,
                b.cs as isize,
                beta,
                cp.get().add(r0 * n + c0),
                n as isize,
                1,
            );
        }
    };
    let flops = m * k * n;
    if threads == 1 || flops < 1 << 18 {
        run(0, m, 0, n);
    } else if m >= 64 * threads && (m >= n || n < 64 * threads) {
        // Each task packs all of `b` (k × n): split rows when `b` is the smaller operand.
        // a large `b` is packed once per task: then one task per thread
        let tasks = if k * n > 1 << 19 { threads } else { threads * 2 };
        let chunk = m.div_ceil(tasks).max(32);
        let starts: Vec<usize> = (0..m).step_by(chunk).collect();
        starts.into_par_iter().for_each(|r0| run(r0, (r0 + chunk).min(m), 0, n));
    } else {
        let chunk = (n.div_ceil(threads * 2)).max(64).next_multiple_of(16);
        let starts: Vec<usize> = (0..n).step_by(chunk).collect();
        starts.into_par_iter().for_each(|c0| run(0, m, c0, (c0 + chunk).min(n)));
    }
}

/// `out[m, n] = inp[m, k] · w[k, n] + bias[n]` — the Conv1D/linear forward.
pub fn matmul_forward(out: &mut [f32], inp: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, k: usize, n: usize) {
    debug_assert!(inp.len() >= m * k && w.len() >= k * n && out.len() >= m * n);
    if m <= SMALL_M {
        return matmul_forward_rows(out, inp, w, bias, m, k, n);
    }
    let beta = if let Some(b) = bias {
        for row in out[..m * n].chunks_exact_mut(n) {
            row.copy_from_slice(&b[..n]);
        }
        1.0
    } else {
        0.0
    };
    gemm(m, k, n, Operand { data: inp, rs: k, cs: 1 }, Operand { data: w, rs: n, cs: 1 }, beta, out);
}

/// Streaming kernel for a few rows: each thread owns a column block and walks
/// `w` row by row, so every weight is read from memory exactly once.
fn matmul_forward_rows(out: &mut [f32], inp: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, k: usize, n: usize) {
    let threads = rayon::current_num_threads().max(1);
    let block = if k * n < 1 << 16 { n } else { n.div_ceil(threads * 4).next_multiple_of(64).max(256) };
    let op = SendPtr(out.as_mut_ptr());
    let starts: Vec<usize> = (0..n).step_by(block.max(1)).collect();
    starts.into_par_iter().for_each(|c0| {
        let c1 = (c0 + block).min(n);
        // SAFETY: each task writes only columns c0..c1 of every row.
        let rows: Vec<&mut [f32]> =
            (0..m).map(|r| unsafe { std::slice::from_raw_parts_mut(op.get().add(r * n + c0), c1 - c0) }).collect();
        let mut rows = rows;
        for row in rows.iter_mut() {
            match bias {
                Some(b) => row.copy_from_slice(&b[c0..c1]),
                None => row.fill(0.0),
            }
        }
        for kk in 0..k {
            let wrow = &w[kk * n + c0..kk * n + c1];
            for (r, row) in rows.iter_mut().enumerate() {
                let a = inp[r * k + kk];
                if a != 0.0 {
                    axpy(row, a, wrow);
                }
            }
        }
    });
}

/// `out[m, n] = inp[m, k] · wt[n, k]ᵀ` — the tied LM head (`wt` = `wte`).
pub fn matmul_forward_bt(out: &mut [f32], inp: &[f32], wt: &[f32], m: usize, k: usize, n: usize) {
    debug_assert!(inp.len() >= m * k && wt.len() >= n * k && out.len() >= m * n);
    if m <= SMALL_M {
        let threads = rayon::current_num_threads().max(1);
        let block = n.div_ceil(threads * 8).max(64);
        let op = SendPtr(out.as_mut_ptr());
        let starts: Vec<usize> = (0..n).step_by(block).collect();
        starts.into_par_iter().for_each(|c0| {
            for j in c0..(c0 + block).min(n) {
                let wrow = &wt[j * k..(j + 1) * k];
                for r in 0..m {
                    // SAFETY: column j is owned by this task.
                    unsafe { *op.get().add(r * n + j) = dot(&inp[r * k..(r + 1) * k], wrow) };
                }
            }
        });
        return;
    }
    gemm(m, k, n, Operand { data: inp, rs: k, cs: 1 }, Operand { data: wt, rs: 1, cs: k }, 0.0, out);
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
