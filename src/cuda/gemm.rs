//! Matmuls through cuBLAS `cublasGemmEx`, in the crate's row-major Conv1D layout.
//!
//! # Row-major data, column-major cuBLAS
//!
//! cuBLAS reads matrices column-major; this crate stores them row-major. The
//! bridge costs nothing: a row-major `R × C` matrix in memory *is* the
//! column-major `C × R` matrix — its transpose — with leading dimension `C`.
//! So instead of `Y = X·W` we ask cuBLAS for `Yᵀ = Wᵀ·Xᵀ`, and every operand is
//! already stored as the transpose cuBLAS wants:
//!
//! * Conv1D projection, `Y[N, M] = X[N, K] · W[K, M]` (HF stores `W` as
//!   `[in, out]` = `[K, M]`): column-major `A = Wᵀ` is `M × K` with `lda = M`,
//!   `B = Xᵀ` is `K × N` with `ldb = K`, `C = Yᵀ` is `M × N` with `ldc = M`; both
//!   ops are `N` (no transpose). See [`GemmArgs::conv1d`].
//! * Tied LM head, `L[N, V] = H[N, C] · wteᵀ` with `wte` stored `[V, C]`: in
//!   column-major `wte` is `C × V` (`lda = C`), so `A = op(wte) = wteᵀ` needs
//!   `transa = T`; `B = Hᵀ` is `C × N` with `ldb = C`. See [`GemmArgs::lm_head`].
//!   Only the last position of each sequence is needed while generating: those
//!   rows are `T·C` floats apart, so `ldb = T·C` picks them without a gather.
//!
//! Every GEMM runs through `cublasGemmEx` with `CUBLAS_COMPUTE_32F` (f32
//! accumulation, no TF32: the handle's math mode is set to
//! `CUBLAS_DEFAULT_MATH`). With f16/bf16 weights the activations are first cast
//! to the same 16-bit type (GemmEx needs `A` and `B` of one type) and the output
//! stays f32.
//!
//! The tests of this module run the exact argument sets through a host-side
//! column-major GEMM and compare against the row-major definitions, so the
//! orientation is checked without a GPU.

use std::ffi::c_void;

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasMath_t, cublasOperation_t, cudaDataType};
use cudarc::cublas::{result as blas_result, CudaBlas};

use super::DevPtr;
use crate::device::WeightDtype;
use crate::error::{Error, Result};

/// One column-major GEMM `C[m, n] = op(A)[m, k] · B[k, n]` (`beta` = 0), as cuBLAS sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmArgs {
    /// Whether `A` is transposed (`op(A) = Aᵀ`).
    pub trans_a: bool,
    /// Rows of `op(A)` and of `C`.
    pub m: usize,
    /// Columns of `B` and of `C`.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// Leading dimension of `A` as stored.
    pub lda: usize,
    /// Leading dimension of `B`.
    pub ldb: usize,
    /// Leading dimension of `C`.
    pub ldc: usize,
}

impl GemmArgs {
    /// `Y[rows, out] = X[rows, inp] · W[inp, out]` with all three row-major
    /// (the Conv1D orientation): cuBLAS computes `Yᵀ = Wᵀ · Xᵀ`.
    pub fn conv1d(rows: usize, inp: usize, out: usize) -> Self {
        GemmArgs { trans_a: false, m: out, n: rows, k: inp, lda: out, ldb: inp, ldc: out }
    }

    /// `L[rows, v] = H[rows, c] · wteᵀ` with `wte` row-major `[v, c]` and the
    /// `rows` rows of `H` `row_stride` floats apart (`c` for every position,
    /// `T·c` for the last position of each sequence).
    pub fn lm_head(rows: usize, c: usize, v: usize, row_stride: usize) -> Self {
        GemmArgs { trans_a: true, m: v, n: rows, k: c, lda: c, ldb: row_stride, ldc: v }
    }

    fn int(x: usize, what: &str) -> Result<i32> {
        i32::try_from(x).map_err(|_| Error::Device(format!("GEMM {what} = {x} exceeds cuBLAS's 32-bit sizes")))
    }
}

fn data_type(d: WeightDtype) -> cudaDataType {
    match d {
        WeightDtype::F32 => cudaDataType::CUDA_R_32F,
        WeightDtype::F16 => cudaDataType::CUDA_R_16F,
        WeightDtype::Bf16 => cudaDataType::CUDA_R_16BF,
    }
}

/// Sets the pedantic-free default math mode (no TF32) on a fresh handle.
pub(crate) fn configure(blas: &CudaBlas) -> Result<()> {
    // SAFETY: the handle is valid for the lifetime of `blas`.
    unsafe { cudarc::cublas::sys::cublasSetMathMode(*blas.handle(), cublasMath_t::CUBLAS_DEFAULT_MATH) }
        .result()
        .map_err(|e| Error::Device(format!("cublasSetMathMode: {e:?}")))
}

/// Runs `C = op(A) · B` with `A` (weights) and `B` (activations) of type `ab`
/// and `C` f32, accumulating in f32.
///
/// # Safety
/// The pointers must address device buffers large enough for `g` (`A`:
/// `lda × (trans_a ? m : k)`, `B`: `ldb × n`, `C`: `ldc × n` elements) that
/// stay alive until the stream has executed the call.
pub(crate) unsafe fn gemm(
    blas: &CudaBlas,
    g: &GemmArgs,
    a: DevPtr,
    b: DevPtr,
    ab: WeightDtype,
    c: DevPtr,
) -> Result<()> {
    let (alpha, beta) = (1.0f32, 0.0f32);
    let op = |t: bool| if t { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
    unsafe {
        blas_result::gemm_ex(
            *blas.handle(),
            op(g.trans_a),
            cublasOperation_t::CUBLAS_OP_N,
            GemmArgs::int(g.m, "m")?,
            GemmArgs::int(g.n, "n")?,
            GemmArgs::int(g.k, "k")?,
            (&alpha) as *const f32 as *const c_void,
            a.0 as *const c_void,
            data_type(ab),
            GemmArgs::int(g.lda, "lda")?,
            b.0 as *const c_void,
            data_type(ab),
            GemmArgs::int(g.ldb, "ldb")?,
            (&beta) as *const f32 as *const c_void,
            c.0 as *mut c_void,
            cudaDataType::CUDA_R_32F,
            GemmArgs::int(g.ldc, "ldc")?,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|e| Error::Device(format!("cublasGemmEx (m={}, n={}, k={}): {e:?}", g.m, g.n, g.k)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// cuBLAS semantics on the host: column-major `C = op(A) · B`.
    fn colmajor_gemm(g: &GemmArgs, a: &[f32], b: &[f32], c: &mut [f32]) {
        for j in 0..g.n {
            for i in 0..g.m {
                let mut acc = 0f64;
                for p in 0..g.k {
                    // op(A)[i, p]: A[i, p] at i + p*lda, or Aᵀ: A[p, i] at p + i*lda.
                    let av = if g.trans_a { a[p + i * g.lda] } else { a[i + p * g.lda] };
                    acc += av as f64 * b[p + j * g.ldb] as f64;
                }
                c[i + j * g.ldc] = acc as f32;
            }
        }
    }

    fn random(n: usize, rng: &mut Rng) -> Vec<f32> {
        (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
    }

    #[test]
    fn conv1d_orientation_matches_row_major_matmul() {
        let mut rng = Rng::new(3);
        let (rows, inp, out) = (5, 7, 3);
        let x = random(rows * inp, &mut rng);
        let w = random(inp * out, &mut rng);
        let mut y = vec![0f32; rows * out];
        colmajor_gemm(&GemmArgs::conv1d(rows, inp, out), &w, &x, &mut y);
        for r in 0..rows {
            for o in 0..out {
                let want: f32 = (0..inp).map(|i| x[r * inp + i] * w[i * out + o]).sum();
                assert!((y[r * out + o] - want).abs() < 1e-5, "({r},{o})");
            }
        }
    }

    #[test]
    fn lm_head_orientation_all_and_last_rows() {
        let mut rng = Rng::new(4);
        let (b, t, c, v) = (2, 3, 4, 6);
        let h = random(b * t * c, &mut rng);
        let wte = random(v * c, &mut rng);
        let dot = |row: usize, tok: usize| -> f32 { (0..c).map(|i| h[row * c + i] * wte[tok * c + i]).sum() };
        let mut all = vec![0f32; b * t * v];
        colmajor_gemm(&GemmArgs::lm_head(b * t, c, v, c), &wte, &h, &mut all);
        for r in 0..b * t {
            for tok in 0..v {
                assert!((all[r * v + tok] - dot(r, tok)).abs() < 1e-5);
            }
        }
        // Last position of each row: B starts at row t-1 with stride T·C.
        let mut last = vec![0f32; b * v];
        colmajor_gemm(&GemmArgs::lm_head(b, c, v, t * c), &wte, &h[(t - 1) * c..], &mut last);
        for bi in 0..b {
            for tok in 0..v {
                assert!((last[bi * v + tok] - dot(bi * t + t - 1, tok)).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn oversized_gemm_is_a_device_error() {
        assert!(matches!(GemmArgs::int(1 << 31, "m"), Err(Error::Device(_))));
        assert_eq!(GemmArgs::int(1 << 30, "m").unwrap(), 1 << 30);
    }
}
