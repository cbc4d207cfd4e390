//! One flat parameter buffer with a name → (offset, shape) table.
//!
//! Parameters, gradients and optimizer moments all share this layout, so
//! zero-grad, the global gradient norm and AdamW are single passes over a
//! slice, and a parameter subset is a list of ranges.
//!
//! Names follow HuggingFace's GPT-2 keys without the `transformer.` prefix,
//! and weights keep HF's Conv1D orientation `[in, out]`.

use std::collections::HashMap;
use std::ops::Range;

use crate::error::{Error, Result};
use crate::model::config::Config;

/// One named tensor inside the flat buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamInfo {
    /// HF key without the `transformer.` prefix, e.g. `h.3.mlp.c_proj.weight`.
    pub name: String,
    /// Offset (in elements) into the flat buffer.
    pub offset: usize,
    /// Shape, row-major.
    pub shape: Vec<usize>,
}

impl ParamInfo {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Element range in the flat buffer.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// Offsets of one block's tensors in the flat buffer (hot-path lookups avoid the name map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockOffsets {
    /// `ln_1.weight` `[C]`.
    pub ln_1_w: usize,
    /// `ln_1.bias` `[C]`.
    pub ln_1_b: usize,
    /// `attn.c_attn.weight` `[C, 3C]`.
    pub attn_w: usize,
    /// `attn.c_attn.bias` `[3C]`.
    pub attn_b: usize,
    /// `attn.c_proj.weight` `[C, C]`.
    pub attn_proj_w: usize,
    /// `attn.c_proj.bias` `[C]`.
    pub attn_proj_b: usize,
    /// `ln_2.weight` `[C]`.
    pub ln_2_w: usize,
    /// `ln_2.bias` `[C]`.
    pub ln_2_b: usize,
    /// `mlp.c_fc.weight` `[C, H]`.
    pub fc_w: usize,
    /// `mlp.c_fc.bias` `[H]`.
    pub fc_b: usize,
    /// `mlp.c_proj.weight` `[H, C]`.
    pub fc_proj_w: usize,
    /// `mlp.c_proj.bias` `[C]`.
    pub fc_proj_b: usize,
}

/// The table of all GPT-2 parameters for a config.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamLayout {
    params: Vec<ParamInfo>,
    index: HashMap<String, usize>,
    total: usize,
    /// Offset of `wte.weight` `[V, C]`.
    pub wte: usize,
    /// Offset of `wpe.weight` `[P, C]`.
    pub wpe: usize,
    /// Per-block offsets.
    pub blocks: Vec<BlockOffsets>,
    /// Offset of `ln_f.weight` `[C]`.
    pub ln_f_w: usize,
    /// Offset of `ln_f.bias` `[C]`.
    pub ln_f_b: usize,
}

impl ParamLayout {
    /// Builds the layout for `cfg` (in checkpoint order: wte, wpe, h.0 … h.L-1, ln_f).
    pub fn new(cfg: &Config) -> Self {
        let (c, h, v, p) = (cfg.n_embd, cfg.mlp_hidden(), cfg.vocab_size, cfg.n_positions);
        let mut params = Vec::new();
        let mut total = 0usize;
        let mut push = |name: String, shape: Vec<usize>| -> usize {
            let off = total;
            total += shape.iter().product::<usize>();
            params.push(ParamInfo { name, offset: off, shape });
            off
        };
        let wte = push("wte.weight".into(), vec![v, c]);
        let wpe = push("wpe.weight".into(), vec![p, c]);
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            let n = |s: &str| format!("h.{l}.{s}");
            blocks.push(BlockOffsets {
                ln_1_w: push(n("ln_1.weight"), vec![c]),
                ln_1_b: push(n("ln_1.bias"), vec![c]),
                attn_w: push(n("attn.c_attn.weight"), vec![c, 3 * c]),
                attn_b: push(n("attn.c_attn.bias"), vec![3 * c]),
                attn_proj_w: push(n("attn.c_proj.weight"), vec![c, c]),
                attn_proj_b: push(n("attn.c_proj.bias"), vec![c]),
                ln_2_w: push(n("ln_2.weight"), vec![c]),
                ln_2_b: push(n("ln_2.bias"), vec![c]),
                fc_w: push(n("mlp.c_fc.weight"), vec![c, h]),
                fc_b: push(n("mlp.c_fc.bias"), vec![h]),
                fc_proj_w: push(n("mlp.c_proj.weight"), vec![h, c]),
                fc_proj_b: push(n("mlp.c_proj.bias"), vec![c]),
            });
        }
        let ln_f_w = push("ln_f.weight".into(), vec![c]);
        let ln_f_b = push("ln_f.bias".into(), vec![c]);
        let index = params.iter().enumerate().map(|(i, p)| (p.name.clone(), i)).collect();
        ParamLayout { params, index, total, wte, wpe, blocks, ln_f_w, ln_f_b }
    }

    /// Total number of scalars.
    pub fn total(&self) -> usize {
        self.total
    }

    /// All tensors in buffer order.
    pub fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    /// Looks a tensor up by name (with or without the `transformer.` prefix).
    pub fn get(&self, name: &str) -> Option<&ParamInfo> {
        let key = name.strip_prefix("transformer.").unwrap_or(name);
        self.index.get(key).map(|&i| &self.params[i])
    }

    /// Like [`get`](Self::get) but a missing name is an error.
    pub fn require(&self, name: &str) -> Result<&ParamInfo> {
        self.get(name).ok_or_else(|| Error::MissingTensor(name.to_string()))
    }

    /// Tensors whose name matches `pattern`, where `*` matches any run of characters
    /// (e.g. `h.*.mlp.c_proj.weight`, `h.3.*`, `*`).
    pub fn matching(&self, pattern: &str) -> Vec<&ParamInfo> {
        self.params.iter().filter(|p| glob_match(pattern, &p.name)).collect()
    }
}

/// Minimal glob: `*` matches any (possibly empty) run of characters.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.len() >= part.len() && rest.ends_with(part);
        } else if let Some(pos) = rest.find(part) {
            rest = &rest[pos + part.len()..];
        } else {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_contiguous_and_counts_match_config() {
        let cfg = Config::gpt2_124m();
        let l = ParamLayout::new(&cfg);
        assert_eq!(l.total(), cfg.num_parameters());
        let mut next = 0;
        for p in l.params() {
            assert_eq!(p.offset, next, "{}", p.name);
            next += p.len();
        }
        assert_eq!(l.get("transformer.h.11.mlp.c_proj.weight").unwrap().shape, vec![3072, 768]);
        assert_eq!(l.params().len(), 2 + 12 * 12 + 2);
    }

    #[test]
    fn glob_selects_tensors() {
        let l = ParamLayout::new(&Config::nano(11, 8));
        assert_eq!(l.matching("h.*.mlp.c_proj.weight").len(), 3);
        assert_eq!(l.matching("h.1.*").len(), 12);
        assert_eq!(l.matching("*").len(), l.params().len());
        assert!(l.matching("h.9.*").is_empty());
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
    }
}
