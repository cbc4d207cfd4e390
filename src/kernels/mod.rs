//! Numerical kernels. They know nothing of GPT-2: slices, explicit dims, the
//! shapes in each doc line, `*_forward` beside `*_backward`, and a `*_naive`
//! oracle used by the tests.

pub mod attention;
pub mod dropout;
pub mod embed;
pub mod flash;
pub mod gelu;
pub mod gemm;
pub(crate) mod gemv;
pub mod layernorm;
pub mod matmul;
pub mod residual;
pub mod simd;
pub mod softmax;
pub mod vmath;
