//! Seeded GPT-2 initialisation.

use super::{Config, Gpt2};
use crate::error::Result;
use crate::rng::Rng;

impl Gpt2 {
    /// A freshly initialised model, GPT-2 style: weights and embeddings
    /// N(0, 0.02), residual projections (`attn.c_proj`, `mlp.c_proj`) N(0, 0.02/√(2·n_layer)),
    /// biases 0, layernorm weights 1. Deterministic for a given `seed`.
    pub fn new_random(config: Config, seed: u64) -> Result<Self> {
        config.validate()?;
        let layout = super::ParamLayout::new(&config);
        let mut params = crate::mem::zeroed_f32(layout.total(), "the model's parameters")?;
        let mut rng = Rng::new(seed);
        let proj_std = 0.02 / (2.0 * config.n_layer as f32).sqrt();
        for info in layout.params() {
            let name = info.name.as_str();
            let slice = &mut params[info.range()];
            if name.contains(".ln_") || name.starts_with("ln_f") {
                if name.ends_with(".weight") {
                    slice.fill(1.0);
                }
            } else if name.ends_with(".bias") {
                // zeros
            } else {
                let std = if name.ends_with("c_proj.weight") { proj_std } else { 0.02 };
                slice.iter_mut().for_each(|w| *w = rng.normal() * std);
            }
        }
        Gpt2::from_params(config, params)
    }
}
