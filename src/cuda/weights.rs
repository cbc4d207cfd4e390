//! Packing the flat f32 parameter buffer into the two device buffers of a
//! [`CudaModel`](super::CudaModel): the matmul weights (`wte` and the four
//! Conv1D weights of every block) in the chosen [`WeightDtype`], and everything
//! else (`wpe`, layernorm parameters, biases) in f32.
//!
//! The packing is plain host code (tested without a GPU); the upload is one copy
//! per buffer.

use crate::device::WeightDtype;
use crate::model::{Config, ParamLayout};

/// Every tensor starts at a multiple of this many elements (256 B for f32, 128 B
/// for 16-bit types), which keeps cuBLAS on its aligned fast paths.
pub(crate) const ALIGN: usize = 64;

/// Element offsets of one block's tensors: `*_w` matrices into the matrix buffer,
/// the rest into the f32 vector buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DevBlock {
    pub ln_1_w: usize,
    pub ln_1_b: usize,
    pub attn_w: usize,
    pub attn_b: usize,
    pub attn_proj_w: usize,
    pub attn_proj_b: usize,
    pub ln_2_w: usize,
    pub ln_2_b: usize,
    pub fc_w: usize,
    pub fc_b: usize,
    pub fc_proj_w: usize,
    pub fc_proj_b: usize,
}

/// Offsets of every tensor in the two packed buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PackedLayout {
    /// `wte` `[V, C]` in the matrix buffer.
    pub wte: usize,
    /// `wpe` `[P, C]` in the vector buffer.
    pub wpe: usize,
    /// Per block.
    pub blocks: Vec<DevBlock>,
    /// `ln_f` weight and bias in the vector buffer.
    pub ln_f_w: usize,
    /// See `ln_f_w`.
    pub ln_f_b: usize,
    /// Elements of the matrix buffer.
    pub mat_len: usize,
    /// Elements of the vector buffer.
    pub vec_len: usize,
}

/// Host-side packed weights, ready to upload.
#[derive(Debug, Clone)]
pub(crate) struct HostWeights {
    /// Matrix buffer as little-endian bytes of `dtype`.
    pub mats: Vec<u8>,
    /// Vector buffer.
    pub vecs: Vec<f32>,
    /// Where each tensor is.
    pub layout: PackedLayout,
}

struct Packer {
    len: usize,
}

impl Packer {
    fn take(&mut self, n: usize) -> usize {
        let off = self.len;
        self.len = (self.len + n).div_ceil(ALIGN) * ALIGN;
        off
    }
}

impl PackedLayout {
    /// The packed layout for `cfg`.
    pub fn new(cfg: &Config) -> Self {
        let (c, h, v, p) = (cfg.n_embd, cfg.mlp_hidden(), cfg.vocab_size, cfg.n_positions);
        let mut m = Packer { len: 0 };
        let mut f = Packer { len: 0 };
        let wte = m.take(v * c);
        let wpe = f.take(p * c);
        let blocks = (0..cfg.n_layer)
            .map(|_| DevBlock {
                ln_1_w: f.take(c),
                ln_1_b: f.take(c),
                attn_w: m.take(c * 3 * c),
                attn_b: f.take(3 * c),
                attn_proj_w: m.take(c * c),
                attn_proj_b: f.take(c),
                ln_2_w: f.take(c),
                ln_2_b: f.take(c),
                fc_w: m.take(c * h),
                fc_b: f.take(h),
                fc_proj_w: m.take(h * c),
                fc_proj_b: f.take(c),
            })
            .collect();
        let ln_f_w = f.take(c);
        let ln_f_b = f.take(c);
        PackedLayout { wte, wpe, blocks, ln_f_w, ln_f_b, mat_len: m.len, vec_len: f.len }
    }
}

/// Packs `params` (laid out by `layout`) for `dtype`.
pub(crate) fn pack(cfg: &Config, layout: &ParamLayout, params: &[f32], dtype: WeightDtype) -> HostWeights {
    let pl = PackedLayout::new(cfg);
    let (c, h, v, p) = (cfg.n_embd, cfg.mlp_hidden(), cfg.vocab_size, cfg.n_positions);
    let mut mats = vec![0u8; pl.mat_len * dtype.size()];
    let mut vecs = vec![0f32; pl.vec_len];
    let mut put_mat = |dst: usize, src: usize, n: usize| {
        let out = &mut mats[dst * dtype.size()..(dst + n) * dtype.size()];
        let vals = &params[src..src + n];
        match dtype {
            WeightDtype::F32 => {
                for (o, x) in out.chunks_exact_mut(4).zip(vals) {
                    o.copy_from_slice(&x.to_le_bytes());
                }
            }
            WeightDtype::F16 => {
                for (o, x) in out.chunks_exact_mut(2).zip(vals) {
                    o.copy_from_slice(&half::f16::from_f32(*x).to_le_bytes());
                }
            }
            WeightDtype::Bf16 => {
                for (o, x) in out.chunks_exact_mut(2).zip(vals) {
                    o.copy_from_slice(&half::bf16::from_f32(*x).to_le_bytes());
                }
            }
        }
    };
    let mut put_vec = |dst: usize, src: usize, n: usize| vecs[dst..dst + n].copy_from_slice(&params[src..src + n]);
    put_mat(pl.wte, layout.wte, v * c);
    put_vec(pl.wpe, layout.wpe, p * c);
    for (d, s) in pl.blocks.iter().zip(&layout.blocks) {
        put_vec(d.ln_1_w, s.ln_1_w, c);
        put_vec(d.ln_1_b, s.ln_1_b, c);
        put_mat(d.attn_w, s.attn_w, c * 3 * c);
        put_vec(d.attn_b, s.attn_b, 3 * c);
        put_mat(d.attn_proj_w, s.attn_proj_w, c * c);
        put_vec(d.attn_proj_b, s.attn_proj_b, c);
        put_vec(d.ln_2_w, s.ln_2_w, c);
        put_vec(d.ln_2_b, s.ln_2_b, c);
        put_mat(d.fc_w, s.fc_w, c * h);
        put_vec(d.fc_b, s.fc_b, h);
        put_mat(d.fc_proj_w, s.fc_proj_w, h * c);
        put_vec(d.fc_proj_b, s.fc_proj_b, c);
    }
    put_vec(pl.ln_f_w, layout.ln_f_w, c);
    put_vec(pl.ln_f_b, layout.ln_f_b, c);
    HostWeights { mats, vecs, layout: pl }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Gpt2;

    fn mat_value(w: &HostWeights, dtype: WeightDtype, i: usize) -> f32 {
        let b = &w.mats[i * dtype.size()..];
        match dtype {
            WeightDtype::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            WeightDtype::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            WeightDtype::Bf16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        }
    }

    #[test]
    fn every_tensor_lands_aligned_and_intact() {
        let cfg = Config::nano(24, 50);
        let model = Gpt2::new_random(cfg.clone(), 5).unwrap();
        let (lay, p) = (model.layout(), model.params());
        let (c, h) = (cfg.n_embd, cfg.mlp_hidden());
        for (dtype, tol) in [(WeightDtype::F32, 0.0), (WeightDtype::F16, 1e-3), (WeightDtype::Bf16, 8e-3)] {
            let w = pack(&cfg, lay, p, dtype);
            let pl = &w.layout;
            assert_eq!(w.mats.len(), pl.mat_len * dtype.size());
            let check_mat = |dst: usize, src: usize, n: usize| {
                assert_eq!(dst % ALIGN, 0);
                assert!(dst + n <= pl.mat_len);
                for i in 0..n {
                    let (got, want) = (mat_value(&w, dtype, dst + i), p[src + i]);
                    assert!((got - want).abs() <= tol * want.abs() + 1e-7, "{dtype}: {got} vs {want}");
                }
            };
            let check_vec = |dst: usize, src: usize, n: usize| {
                assert_eq!(dst % ALIGN, 0);
                assert_eq!(&w.vecs[dst..dst + n], &p[src..src + n]);
            };
            check_mat(pl.wte, lay.wte, cfg.vocab_size * c);
            check_vec(pl.wpe, lay.wpe, cfg.n_positions * c);
            for (d, s) in pl.blocks.iter().zip(&lay.blocks) {
                check_mat(d.attn_w, s.attn_w, 3 * c * c);
                check_mat(d.attn_proj_w, s.attn_proj_w, c * c);
                check_mat(d.fc_w, s.fc_w, c * h);
                check_mat(d.fc_proj_w, s.fc_proj_w, h * c);
                for (dv, sv, n) in [
                    (d.ln_1_w, s.ln_1_w, c),
                    (d.ln_1_b, s.ln_1_b, c),
                    (d.attn_b, s.attn_b, 3 * c),
                    (d.attn_proj_b, s.attn_proj_b, c),
                    (d.ln_2_w, s.ln_2_w, c),
                    (d.ln_2_b, s.ln_2_b, c),
                    (d.fc_b, s.fc_b, h),
                    (d.fc_proj_b, s.fc_proj_b, c),
                ] {
                    check_vec(dv, sv, n);
                }
            }
            check_vec(pl.ln_f_w, lay.ln_f_w, c);
            check_vec(pl.ln_f_b, lay.ln_f_b, c);
        }
    }

    #[test]
    fn half_dtypes_halve_the_matrix_buffer() {
        let cfg = Config::nano(16, 100);
        let m = Gpt2::new_random(cfg.clone(), 0).unwrap();
        let f32b = pack(&cfg, m.layout(), m.params(), WeightDtype::F32).mats.len();
        let f16b = pack(&cfg, m.layout(), m.params(), WeightDtype::F16).mats.len();
        assert_eq!(f32b, 2 * f16b);
    }
}
