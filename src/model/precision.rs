//! Inference weight precision: the f32 master parameters plus an optional packed copy of the
//! matrices in f16, bf16 or int8 that the forward pass multiplies with.
//!
//! Only the five matrix products per block and the LM head use the packed copy (≈ 99% of
//! the weight bytes); embeddings, biases and layer norms stay f32. Training and editing keep
//! working on [`Gpt2::params`] / [`Gpt2::params_mut`]; mutating the parameters drops the
//! packed copy, which is rebuilt on the next forward call.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use super::Gpt2;
use crate::error::Result;
use crate::kernels::gemm::{BMat, MatRef, PackedB, WeightDtype};

/// Options for [`Gpt2::load_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Storage of the matrices used by inference (default f32: no extra copy).
    pub dtype: WeightDtype,
}

/// The packed matrices of one block.
#[derive(Debug, Clone)]
pub(crate) struct PackedBlock {
    pub qkv: PackedB,
    pub attn_proj: PackedB,
    pub fc: PackedB,
    pub fc_proj: PackedB,
}

/// Packed copies of every matrix the forward pass multiplies with.
#[derive(Debug, Clone)]
pub(crate) struct PackedWeights {
    pub blocks: Vec<PackedBlock>,
    /// The tied LM head as `B[C, V]` (= `wteᵀ`).
    pub head: PackedB,
}

impl PackedWeights {
    fn build(model: &Gpt2, dtype: WeightDtype) -> Self {
        let cfg = &model.config;
        let (c, h, v) = (cfg.n_embd, cfg.mlp_hidden(), cfg.vocab_size);
        let p = &model.params;
        let mat = |off: usize, k: usize, n: usize| PackedB::new(MatRef::row_major(&p[off..off + k * n], k, n), dtype);
        let blocks = model
            .layout
            .blocks
            .iter()
            .map(|o| PackedBlock {
                qkv: mat(o.attn_w, c, 3 * c),
                attn_proj: mat(o.attn_proj_w, c, c),
                fc: mat(o.fc_w, c, h),
                fc_proj: mat(o.fc_proj_w, h, c),
            })
            .collect();
        let wte = &p[model.layout.wte..model.layout.wte + v * c];
        let head = PackedB::new(MatRef::row_major(wte, v, c).t(), dtype);
        PackedWeights { blocks, head }
    }

    fn bytes(&self) -> usize {
        self.head.bytes()
            + self
                .blocks
                .iter()
                .map(|b| b.qkv.bytes() + b.attn_proj.bytes() + b.fc.bytes() + b.fc_proj.bytes())
                .sum::<usize>()
    }
}

/// Lazily built packed weights (shared by clones until one of them mutates its parameters).
#[derive(Debug, Clone, Default)]
pub(crate) struct PackedCell(OnceLock<Arc<PackedWeights>>);

impl PackedCell {
    pub(crate) fn reset(&mut self) {
        self.0 = OnceLock::new();
    }
}

/// One of the four matrices of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Linear {
    Qkv,
    AttnProj,
    Fc,
    FcProj,
}

impl Gpt2 {
    /// Loads a checkpoint (see [`Gpt2::load`]) and prepares the inference weights in
    /// `opts.dtype`.
    ///
    /// ```
    /// use gpt2::{Gpt2, LoadOptions, WeightDtype};
    /// # let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/tiny");
    /// let model = Gpt2::load_with(&dir, &LoadOptions { dtype: WeightDtype::BF16 }).unwrap();
    /// assert_eq!(model.dtype_label(), "bf16");
    /// assert!(model.params().len() > 0); // the f32 master copy stays available
    /// ```
    pub fn load_with(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        Ok(Self::load(path)?.with_weight_dtype(opts.dtype))
    }

    /// Returns the model with its inference weights stored in `dtype` (packed now).
    pub fn with_weight_dtype(mut self, dtype: WeightDtype) -> Self {
        self.set_weight_dtype(dtype);
        self
    }

    /// Switches the inference weights to `dtype`, packing them now (f32: drops any copy).
    pub fn set_weight_dtype(&mut self, dtype: WeightDtype) {
        self.dtype = dtype;
        self.packed.reset();
        if dtype != WeightDtype::F32 {
            self.packed_weights();
        }
    }

    /// The storage type of the inference weights.
    pub fn weight_dtype(&self) -> WeightDtype {
        self.dtype
    }

    /// Bytes held by the packed inference copy (0 in f32, where the master parameters are used).
    pub fn packed_bytes(&self) -> usize {
        self.packed_weights().map_or(0, |p| p.bytes())
    }

    /// The packed weights (built on first use), or `None` in f32.
    pub(crate) fn packed_weights(&self) -> Option<&PackedWeights> {
        if self.dtype == WeightDtype::F32 {
            return None;
        }
        Some(self.packed.0.get_or_init(|| Arc::new(PackedWeights::build(self, self.dtype))))
    }

    /// The right-hand operand for block `l`'s matrix `which`: packed, or the f32 parameters.
    pub(crate) fn linear_weight<'a>(&'a self, packed: Option<&'a PackedWeights>, l: usize, which: Linear) -> BMat<'a> {
        if let Some(pw) = packed {
            let b = &pw.blocks[l];
            return BMat::Packed(match which {
                Linear::Qkv => &b.qkv,
                Linear::AttnProj => &b.attn_proj,
                Linear::Fc => &b.fc,
                Linear::FcProj => &b.fc_proj,
            });
        }
        let (c, h) = (self.config.n_embd, self.config.mlp_hidden());
        let o = &self.layout.blocks[l];
        let (off, k, n) = match which {
            Linear::Qkv => (o.attn_w, c, 3 * c),
            Linear::AttnProj => (o.attn_proj_w, c, c),
            Linear::Fc => (o.fc_w, c, h),
            Linear::FcProj => (o.fc_proj_w, h, c),
        };
        BMat::F32(MatRef::row_major(&self.params[off..off + k * n], k, n))
    }

    /// The LM head operand `B[C, V]`: packed, or `wteᵀ` as a transposed view.
    pub(crate) fn head_weight<'a>(&'a self, packed: Option<&'a PackedWeights>) -> BMat<'a> {
        match packed {
            Some(pw) => BMat::Packed(&pw.head),
            None => {
                let (c, v) = (self.config.n_embd, self.config.vocab_size);
                let wte = &self.params[self.layout.wte..self.layout.wte + v * c];
                BMat::F32(MatRef::row_major(wte, v, c).t())
            }
        }
    }
}
