//! Training a subset of the parameters: [`ParamSelection`] (what the user asks for, by name
//! pattern) and [`GradMask`] (the resolved per-tensor flags the backward pass and the optimizer
//! read).
//!
//! Frozen tensors get no gradient, no optimizer state and no update; the backward pass stops
//! below the lowest trainable tensor (training only `h.11.mlp.c_proj.weight` runs the backward
//! through the LM head, `ln_f` and block 11 only).

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::params::glob_match;
use crate::model::ParamLayout;

/// Which tensors to train, as an ordered list of include / exclude rules over tensor names
/// (HF names without `transformer.`, `*` matches any run of characters). The last rule that
/// matches a tensor decides; tensors matched by no rule follow the base (all or none).
///
/// ```
/// use gpt2::train::ParamSelection;
/// use gpt2::{Config, ParamLayout};
/// let layout = ParamLayout::new(&Config::nano(16, 50));
/// // only the MLP output projection of block 1
/// let sel = ParamSelection::none().include("h.1.mlp.c_proj.*");
/// let mask = sel.resolve(&layout).unwrap();
/// assert_eq!(mask.trainable_names(&layout), vec!["h.1.mlp.c_proj.weight", "h.1.mlp.c_proj.bias"]);
/// // everything except the embeddings
/// let mask = ParamSelection::all().freeze_embeddings().resolve(&layout).unwrap();
/// assert!(!mask.wants(layout.wte) && mask.wants(layout.ln_f_w));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamSelection {
    base: bool,
    rules: Vec<(bool, String)>,
}

impl Default for ParamSelection {
    fn default() -> Self {
        Self::all()
    }
}

impl ParamSelection {
    /// Every tensor trainable (then narrow with [`exclude`](Self::exclude)).
    pub fn all() -> Self {
        ParamSelection { base: true, rules: Vec::new() }
    }

    /// No tensor trainable (then widen with [`include`](Self::include)).
    pub fn none() -> Self {
        ParamSelection { base: false, rules: Vec::new() }
    }

    /// Trains the tensors matching `pattern` (e.g. `h.3.mlp.c_proj.weight`, `h.*.attn.*`).
    pub fn include(mut self, pattern: impl Into<String>) -> Self {
        self.rules.push((true, pattern.into()));
        self
    }

    /// Freezes the tensors matching `pattern`.
    pub fn exclude(mut self, pattern: impl Into<String>) -> Self {
        self.rules.push((false, pattern.into()));
        self
    }

    /// Freezes `wte` (and so the tied LM head) and `wpe`.
    pub fn freeze_embeddings(self) -> Self {
        self.exclude("wte.weight").exclude("wpe.weight")
    }

    /// Resolves the rules against `layout`.
    ///
    /// Errors: [`Error::InvalidArgument`] when a rule matches no tensor (a typo would otherwise
    /// silently train nothing), or when no tensor ends up trainable.
    pub fn resolve(&self, layout: &ParamLayout) -> Result<GradMask> {
        for (_, pat) in &self.rules {
            let pat = pat.strip_prefix("transformer.").unwrap_or(pat);
            if !layout.params().iter().any(|p| glob_match(pat, &p.name)) {
                return Err(Error::arg("selection", format!("pattern `{pat}` matches no parameter tensor")));
            }
        }
        let flags: Vec<bool> = layout
            .params()
            .iter()
            .map(|p| {
                let mut on = self.base;
                for (inc, pat) in &self.rules {
                    let pat = pat.strip_prefix("transformer.").unwrap_or(pat);
                    if glob_match(pat, &p.name) {
                        on = *inc;
                    }
                }
                on
            })
            .collect();
        if !flags.iter().any(|&f| f) {
            return Err(Error::arg("selection", "no parameter tensor is trainable"));
        }
        Ok(GradMask::from_flags(layout, flags))
    }
}

/// Per-tensor trainable flags resolved against a [`ParamLayout`] (see [`ParamSelection`]).
#[derive(Debug, Clone, PartialEq)]
pub struct GradMask {
    /// `None` = every tensor.
    flags: Option<Vec<bool>>,
    /// Tensor offsets in layout order (empty for `all`).
    offsets: Vec<usize>,
    /// Tensor ranges in layout order (empty for `all`).
    ranges: Vec<Range<usize>>,
    /// Lowest block the backward pass must reach (0 also for trainable embeddings).
    lowest_block: usize,
}

impl GradMask {
    /// Every tensor trainable.
    pub fn all() -> Self {
        GradMask { flags: None, offsets: Vec::new(), ranges: Vec::new(), lowest_block: 0 }
    }

    /// From one flag per tensor of `layout` (in layout order).
    fn from_flags(layout: &ParamLayout, flags: Vec<bool>) -> Self {
        let n_layer = layout.blocks.len();
        let mut lowest = n_layer;
        for (p, &on) in layout.params().iter().zip(&flags) {
            if !on {
                continue;
            }
            let block = if p.name == "wte.weight" || p.name == "wpe.weight" {
                0
            } else if let Some(rest) = p.name.strip_prefix("h.") {
                rest.split('.').next().and_then(|s| s.parse().ok()).unwrap_or(0)
            } else {
                n_layer
            };
            lowest = lowest.min(block);
        }
        GradMask {
            offsets: layout.params().iter().map(|p| p.offset).collect(),
            ranges: layout.params().iter().map(|p| p.range()).collect(),
            flags: Some(flags),
            lowest_block: lowest,
        }
    }

    /// Whether every tensor is trainable.
    pub fn is_all(&self) -> bool {
        self.flags.as_ref().is_none_or(|f| f.iter().all(|&x| x))
    }

    /// Whether the tensor starting at flat offset `offset` is trainable.
    pub fn wants(&self, offset: usize) -> bool {
        match &self.flags {
            None => true,
            Some(f) => match self.offsets.binary_search(&offset) {
                Ok(i) => f[i],
                Err(_) => false,
            },
        }
    }

    /// Whether the backward pass must go through block `l` (a trainable tensor in it or below).
    pub fn needs_block(&self, l: usize) -> bool {
        l >= self.lowest_block
    }

    /// Flat ranges of the trainable tensors (`None` = the whole buffer).
    pub fn trainable_ranges(&self) -> Option<Vec<Range<usize>>> {
        let f = self.flags.as_ref()?;
        Some(self.ranges.iter().zip(f).filter(|(_, &on)| on).map(|(r, _)| r.clone()).collect())
    }

    /// Number of trainable scalars out of `total`.
    pub fn num_trainable(&self, total: usize) -> usize {
        match self.trainable_ranges() {
            None => total,
            Some(r) => r.iter().map(|r| r.len()).sum(),
        }
    }

    /// Names of the trainable tensors.
    pub fn trainable_names<'a>(&self, layout: &'a ParamLayout) -> Vec<&'a str> {
        layout.params().iter().filter(|p| self.wants(p.offset)).map(|p| p.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    #[test]
    fn rules_apply_in_order_and_typos_are_errors() {
        let layout = ParamLayout::new(&Config::nano(8, 10));
        let m = ParamSelection::all().exclude("h.*").include("h.2.ln_2.*").resolve(&layout).unwrap();
        let names = m.trainable_names(&layout);
        assert_eq!(
            names,
            vec!["wte.weight", "wpe.weight", "h.2.ln_2.weight", "h.2.ln_2.bias", "ln_f.weight", "ln_f.bias"]
        );
        assert!(m.needs_block(0)); // embeddings are trainable
        let m = ParamSelection::none().include("h.1.attn.c_attn.bias").resolve(&layout).unwrap();
        assert!(!m.needs_block(0) && m.needs_block(1) && m.needs_block(2));
        assert_eq!(m.num_trainable(layout.total()), 3 * 48);
        assert!(ParamSelection::none().include("h.7.*").resolve(&layout).is_err());
        assert!(ParamSelection::none().resolve(&layout).is_err());
        assert!(ParamSelection::all().resolve(&layout).unwrap().is_all());
    }
}
