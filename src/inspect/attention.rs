//! Attention written out on ndarray matrices, for reading and for experiments.
//!
//! These functions favour clarity over speed (the model uses
//! [`crate::kernels::attention`]); they match `torch.nn.functional.scaled_dot_product_attention`
//! and the explicit PyTorch formulas within 1e-5 (see `docs/numerics.md`).
//!
//! ```
//! use gpt2::inspect::attention::{causal_mask, scaled_dot_product_attention};
//! use ndarray::array;
//! let x = array![[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0]];
//! let att = scaled_dot_product_attention(x.view(), x.view(), x.view(), Some(causal_mask(3).view())).unwrap();
//! assert_eq!(att.weights[[0, 0]], 1.0); // the first token can only see itself
//! assert_eq!(att.weights[[1, 2]], 0.0); // nothing above the diagonal
//! ```

use ndarray::{Array2, ArrayView2, Axis};

use crate::error::{Error, Result};

/// Output of an attention call.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionOutput {
    /// Context vectors `[Tq, dv]`: each row is a weighted average of value rows.
    pub output: Array2<f32>,
    /// Attention weights `[Tq, Tk]`: each row is a probability distribution over keys.
    pub weights: Array2<f32>,
}

/// The causal mask `[T, T]`: `true` on and below the diagonal (query `i` may see keys `0..=i`).
pub fn causal_mask(t: usize) -> Array2<bool> {
    Array2::from_shape_fn((t, t), |(i, j)| j <= i)
}

/// Row-wise softmax in place (max-subtracted); `-inf` entries get weight 0.
///
/// Rows must contain at least one finite value.
pub fn softmax_rows(scores: &mut Array2<f32>) {
    for mut row in scores.axis_iter_mut(Axis(0)) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        row.mapv_inplace(|s| (s - max).exp());
        let sum = row.sum();
        row.mapv_inplace(|e| e / sum);
    }
}

/// Scaled dot-product attention: `softmax(q·kᵀ / √d + mask) · v`.
///
/// Shapes: `q [Tq, d]`, `k [Tk, d]`, `v [Tk, dv]`, `mask [Tq, Tk]` (`true` = may attend, as a
/// boolean `attn_mask` in PyTorch). Errors: mismatched shapes, empty inputs, or a mask row that
/// hides every key (PyTorch would return NaN there).
pub fn scaled_dot_product_attention(
    q: ArrayView2<'_, f32>,
    k: ArrayView2<'_, f32>,
    v: ArrayView2<'_, f32>,
    mask: Option<ArrayView2<'_, bool>>,
) -> Result<AttentionOutput> {
    let ((tq, d), (tk, dk), (tv, _)) = (q.dim(), k.dim(), v.dim());
    if tq == 0 || tk == 0 || d == 0 {
        return Err(Error::EmptyInput(format!("attention on q {:?}, k {:?}", q.dim(), k.dim())));
    }
    if dk != d {
        return Err(Error::Shape(format!("q has width {d}, k has width {dk}")));
    }
    if tv != tk {
        return Err(Error::Shape(format!("k has {tk} rows, v has {tv}")));
    }
    let mut scores = q.dot(&k.t()) * (1.0 / (d as f32).sqrt());
    if let Some(m) = mask {
        if m.dim() != (tq, tk) {
            return Err(Error::Shape(format!("mask is {:?}, scores are [{tq}, {tk}]", m.dim())));
        }
        if let Some(i) = m.axis_iter(Axis(0)).position(|row| !row.iter().any(|&b| b)) {
            return Err(Error::arg("mask", format!("row {i} hides every key")));
        }
        scores.zip_mut_with(&m, |s, &keep| {
            if !keep {
                *s = f32::NEG_INFINITY;
            }
        });
    }
    softmax_rows(&mut scores);
    Ok(AttentionOutput { output: scores.dot(&v), weights: scores })
}

fn check_proj(name: &'static str, x: &ArrayView2<'_, f32>, w: &ArrayView2<'_, f32>) -> Result<()> {
    if x.ncols() != w.nrows() {
        return Err(Error::Shape(format!("{name} is {:?} but its input has width {}", w.dim(), x.ncols())));
    }
    Ok(())
}

/// Cross-attention: queries from `s2`, keys and values from `s1`.
///
/// `Q = s2·w_q`, `K = s1·w_k`, `V = s1·w_v`, weights `softmax(Q·Kᵀ / √d_k)` over the keys (the
/// rows of `s1`), output `weights·V`. Shapes: `s1 [T1, d1]`, `s2 [T2, d2]`, `w_q [d2, d_k]`,
/// `w_k [d1, d_k]`, `w_v [d1, d_v]` (weights are `[in, out]`: `y = x·W`); output `[T2, d_v]`,
/// weights `[T2, T1]`.
pub fn cross_attention(
    s1: ArrayView2<'_, f32>,
    s2: ArrayView2<'_, f32>,
    w_q: ArrayView2<'_, f32>,
    w_k: ArrayView2<'_, f32>,
    w_v: ArrayView2<'_, f32>,
) -> Result<AttentionOutput> {
    check_proj("w_q", &s2, &w_q)?;
    check_proj("w_k", &s1, &w_k)?;
    check_proj("w_v", &s1, &w_v)?;
    if w_q.ncols() != w_k.ncols() {
        return Err(Error::Shape(format!("w_q gives width {}, w_k gives {}", w_q.ncols(), w_k.ncols())));
    }
    let (q, k, v) = (s2.dot(&w_q), s1.dot(&w_k), s1.dot(&w_v));
    scaled_dot_product_attention(q.view(), k.view(), v.view(), None)
}

/// Single-head self-attention with projections: `cross_attention(x, x, …)`, optionally causal.
///
/// Shapes: `x [T, d]`, `w_q`/`w_k [d, d_k]`, `w_v [d, d_v]`; output `[T, d_v]`.
pub fn self_attention(
    x: ArrayView2<'_, f32>,
    w_q: ArrayView2<'_, f32>,
    w_k: ArrayView2<'_, f32>,
    w_v: ArrayView2<'_, f32>,
    causal: bool,
) -> Result<AttentionOutput> {
    check_proj("w_q", &x, &w_q)?;
    check_proj("w_k", &x, &w_k)?;
    check_proj("w_v", &x, &w_v)?;
    if w_q.ncols() != w_k.ncols() {
        return Err(Error::Shape(format!("w_q gives width {}, w_k gives {}", w_q.ncols(), w_k.ncols())));
    }
    let (q, k, v) = (x.dot(&w_q), x.dot(&w_k), x.dot(&w_v));
    let mask = causal.then(|| causal_mask(x.nrows()));
    scaled_dot_product_attention(q.view(), k.view(), v.view(), mask.as_ref().map(|m| m.view()))
}
