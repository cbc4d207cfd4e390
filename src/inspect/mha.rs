//! A stand-alone multi-head causal self-attention module (GPT-2's `attn` block).
//!
//! Built from [`scaled_dot_product_attention`] one head at a time, so every step is visible. With
//! the weights of a [`Gpt2`] layer ([`CausalSelfAttention::from_model`]) its output equals the
//! model's own attention sub-block.
//!
//! ```
//! use gpt2::inspect::mha::{AttentionConfig, CausalSelfAttention};
//! use ndarray::Array3;
//! let cfg = AttentionConfig { n_embd: 8, n_head: 2, block_size: 4 };
//! let attn = CausalSelfAttention::new_random(cfg, 0).unwrap();
//! let x = Array3::from_shape_fn((1, 3, 8), |(_, t, c)| (t * 8 + c) as f32 * 0.1);
//! let out = attn.forward(x.view()).unwrap();
//! assert_eq!(out.output.dim(), (1, 3, 8));
//! assert_eq!(out.weights.dim(), (1, 2, 3, 3));
//! ```

use ndarray::{concatenate, s, Array1, Array2, Array3, Array4, ArrayView3, Axis, Ix1, Ix2};

use super::attention::{causal_mask, scaled_dot_product_attention};
use crate::error::{Error, Result};
use crate::model::Gpt2;
use crate::rng::Rng;

/// Hyper-parameters of [`CausalSelfAttention`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionConfig {
    /// Model width `C` (input and output width).
    pub n_embd: usize,
    /// Number of heads; `n_embd` must be a multiple of it (head width `C / n_head`).
    pub n_head: usize,
    /// Longest sequence accepted (the causal mask's size, `n_positions` in GPT-2).
    pub block_size: usize,
}

impl AttentionConfig {
    /// Checks that the sizes are positive and `n_embd % n_head == 0`.
    pub fn validate(&self) -> Result<()> {
        if self.n_embd == 0 || self.n_head == 0 || self.block_size == 0 {
            return Err(Error::arg("config", format!("all sizes must be positive: {self:?}")));
        }
        if self.n_embd % self.n_head != 0 {
            return Err(Error::arg("n_head", format!("n_embd {} is not a multiple of {}", self.n_embd, self.n_head)));
        }
        Ok(())
    }

    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }
}

/// The query/key/value projections, `[in, out]` matrices (`y = x·W + b`).
// Both variants hold heap arrays; the size difference is only in the headers (one per module).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum QkvProjection {
    /// One matrix `[C, 3C]` whose column blocks are q, k, v (GPT-2's `c_attn`).
    Fused {
        /// Weight `[C, 3C]`.
        w: Array2<f32>,
        /// Bias `[3C]`.
        b: Option<Array1<f32>>,
    },
    /// Three matrices `[C, C]`.
    Separate {
        /// Query, key, value weights.
        w: [Array2<f32>; 3],
        /// Query, key, value biases `[C]`.
        b: Option<[Array1<f32>; 3]>,
    },
}

/// Output of [`CausalSelfAttention::forward`].
#[derive(Debug, Clone, PartialEq)]
pub struct MhaOutput {
    /// `[B, T, C]` after the output projection.
    pub output: Array3<f32>,
    /// Attention probabilities `[B, NH, T, T]` (zero above the diagonal).
    pub weights: Array4<f32>,
}

/// Multi-head causal self-attention: project to q, k, v, split into heads, attend causally in
/// each head, concatenate the heads, project back.
#[derive(Debug, Clone, PartialEq)]
pub struct CausalSelfAttention {
    config: AttentionConfig,
    qkv: QkvProjection,
    w_o: Array2<f32>,
    b_o: Option<Array1<f32>>,
}

fn check_shape(name: &str, got: &[usize], want: &[usize]) -> Result<()> {
    if got != want {
        return Err(Error::ShapeMismatch { name: name.into(), expected: want.to_vec(), found: got.to_vec() });
    }
    Ok(())
}

impl CausalSelfAttention {
    /// GPT-2 initialisation: fused weights `N(0, 0.02)`, zero biases (seeded [`Rng`]).
    pub fn new_random(config: AttentionConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let c = config.n_embd;
        let mut rng = Rng::new(seed);
        let mut normal = |shape: (usize, usize)| Array2::from_shape_simple_fn(shape, || 0.02 * rng.normal());
        let w = normal((c, 3 * c));
        let w_o = normal((c, c));
        Self::from_fused(config, w, Some(Array1::zeros(3 * c)), w_o, Some(Array1::zeros(c)))
    }

    /// From a fused projection `w_qkv [C, 3C]` (+ `b_qkv [3C]`) and the output projection
    /// `w_o [C, C]` (+ `b_o [C]`).
    pub fn from_fused(
        config: AttentionConfig,
        w_qkv: Array2<f32>,
        b_qkv: Option<Array1<f32>>,
        w_o: Array2<f32>,
        b_o: Option<Array1<f32>>,
    ) -> Result<Self> {
        config.validate()?;
        let c = config.n_embd;
        check_shape("w_qkv", w_qkv.shape(), &[c, 3 * c])?;
        if let Some(b) = &b_qkv {
            check_shape("b_qkv", b.shape(), &[3 * c])?;
        }
        Self::with_output(config, QkvProjection::Fused { w: w_qkv, b: b_qkv }, w_o, b_o)
    }

    /// From separate projections `w_q, w_k, w_v [C, C]` (+ biases `[C]`) and `w_o [C, C]` (+ `b_o`).
    pub fn from_separate(
        config: AttentionConfig,
        w_qkv: [Array2<f32>; 3],
        b_qkv: Option<[Array1<f32>; 3]>,
        w_o: Array2<f32>,
        b_o: Option<Array1<f32>>,
    ) -> Result<Self> {
        config.validate()?;
        let c = config.n_embd;
        for (w, n) in w_qkv.iter().zip(["w_q", "w_k", "w_v"]) {
            check_shape(n, w.shape(), &[c, c])?;
        }
        if let Some(bs) = &b_qkv {
            for (b, n) in bs.iter().zip(["b_q", "b_k", "b_v"]) {
                check_shape(n, b.shape(), &[c])?;
            }
        }
        Self::with_output(config, QkvProjection::Separate { w: w_qkv, b: b_qkv }, w_o, b_o)
    }

    fn with_output(
        config: AttentionConfig,
        qkv: QkvProjection,
        w_o: Array2<f32>,
        b_o: Option<Array1<f32>>,
    ) -> Result<Self> {
        let c = config.n_embd;
        check_shape("w_o", w_o.shape(), &[c, c])?;
        if let Some(b) = &b_o {
            check_shape("b_o", b.shape(), &[c])?;
        }
        Ok(CausalSelfAttention { config, qkv, w_o, b_o })
    }

    /// The attention of block `layer` of `model` (`h.{layer}.attn.c_attn` / `c_proj`, fused).
    /// Its input is the block's `ln_1` output.
    pub fn from_model(model: &Gpt2, layer: usize) -> Result<Self> {
        let cfg = model.config();
        if layer >= cfg.n_layer {
            return Err(Error::arg("layer", format!("{layer} >= n_layer {}", cfg.n_layer)));
        }
        if !cfg.scale_attn_weights || cfg.scale_attn_by_inverse_layer_idx {
            return Err(Error::arg(
                "model",
                "this module computes GPT-2's standard 1/sqrt(head_dim) attention scale; the model's config sets \
                 scale_attn_weights = false or scale_attn_by_inverse_layer_idx = true",
            ));
        }
        let config = AttentionConfig { n_embd: cfg.n_embd, n_head: cfg.n_head, block_size: cfg.n_positions };
        let get2 = |n: &str| -> Result<Array2<f32>> {
            Ok(model.param(&format!("h.{layer}.attn.{n}"))?.into_dimensionality::<Ix2>().expect("2-D").to_owned())
        };
        let get1 = |n: &str| -> Result<Array1<f32>> {
            Ok(model.param(&format!("h.{layer}.attn.{n}"))?.into_dimensionality::<Ix1>().expect("1-D").to_owned())
        };
        Self::from_fused(
            config,
            get2("c_attn.weight")?,
            Some(get1("c_attn.bias")?),
            get2("c_proj.weight")?,
            Some(get1("c_proj.bias")?),
        )
    }

    /// The same module with fused q/k/v weights.
    pub fn into_fused(self) -> Self {
        let qkv = match self.qkv {
            QkvProjection::Separate { w, b } => QkvProjection::Fused {
                w: concatenate(Axis(1), &[w[0].view(), w[1].view(), w[2].view()]).expect("same rows"),
                b: b.map(|b| concatenate(Axis(0), &[b[0].view(), b[1].view(), b[2].view()]).expect("1-D")),
            },
            fused => fused,
        };
        CausalSelfAttention { qkv, ..self }
    }

    /// The same module with separate q/k/v weights.
    pub fn into_separate(self) -> Self {
        let c = self.config.n_embd;
        let qkv = match self.qkv {
            QkvProjection::Fused { w, b } => QkvProjection::Separate {
                w: std::array::from_fn(|i| w.slice(s![.., i * c..(i + 1) * c]).to_owned()),
                b: b.map(|b| std::array::from_fn(|i| b.slice(s![i * c..(i + 1) * c]).to_owned())),
            },
            separate => separate,
        };
        CausalSelfAttention { qkv, ..self }
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AttentionConfig {
        &self.config
    }

    /// The q/k/v projection.
    pub fn qkv(&self) -> &QkvProjection {
        &self.qkv
    }

    /// Output projection weight `[C, C]` and bias `[C]`.
    pub fn output_projection(&self) -> (&Array2<f32>, Option<&Array1<f32>>) {
        (&self.w_o, self.b_o.as_ref())
    }

    /// `x [T, C]` → `(q, k, v)`, each `[T, C]`.
    fn project(&self, x: ndarray::ArrayView2<'_, f32>) -> [Array2<f32>; 3] {
        let c = self.config.n_embd;
        match &self.qkv {
            QkvProjection::Fused { w, b } => {
                let mut y = x.dot(w);
                if let Some(b) = b {
                    y += b;
                }
                std::array::from_fn(|i| y.slice(s![.., i * c..(i + 1) * c]).to_owned())
            }
            QkvProjection::Separate { w, b } => std::array::from_fn(|i| {
                let mut y = x.dot(&w[i]);
                if let Some(b) = b {
                    y += &b[i];
                }
                y
            }),
        }
    }

    /// Runs the module on `x [B, T, C]` (`T ≤ block_size`).
    pub fn forward(&self, x: ArrayView3<'_, f32>) -> Result<MhaOutput> {
        let (bsz, t, c) = x.dim();
        let AttentionConfig { n_embd, n_head, block_size } = self.config;
        if bsz == 0 || t == 0 {
            return Err(Error::EmptyInput(format!("attention input has shape {:?}", x.shape())));
        }
        if c != n_embd {
            return Err(Error::Shape(format!("input width {c}, module width {n_embd}")));
        }
        if t > block_size {
            return Err(Error::SequenceTooLong { len: t, n_positions: block_size });
        }
        let hd = self.config.head_dim();
        let mask = causal_mask(t);
        let mut output = Array3::zeros((bsz, t, c));
        let mut weights = Array4::zeros((bsz, n_head, t, t));
        for bi in 0..bsz {
            let [q, k, v] = self.project(x.slice(s![bi, .., ..]));
            let mut ctx = Array2::zeros((t, c));
            for h in 0..n_head {
                let cols = s![.., h * hd..(h + 1) * hd];
                let att = scaled_dot_product_attention(q.slice(cols), k.slice(cols), v.slice(cols), Some(mask.view()))?;
                ctx.slice_mut(cols).assign(&att.output);
                weights.slice_mut(s![bi, h, .., ..]).assign(&att.weights);
            }
            let mut y = ctx.dot(&self.w_o);
            if let Some(b) = &self.b_o {
                y += b;
            }
            output.slice_mut(s![bi, .., ..]).assign(&y);
        }
        Ok(MhaOutput { output, weights })
    }
}
