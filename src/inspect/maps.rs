//! Model introspection: per-layer attention probabilities and hidden states.
//!
//! Thin wrappers over [`Gpt2::forward`] with `ForwardOptions { attentions, hidden_states }`; the
//! normal inference path does not compute or store any of this.
//!
//! ```
//! use gpt2::{inspect, Config, Gpt2};
//! let model = Gpt2::new_random(Config::nano(16, 100), 0).unwrap();
//! let maps = inspect::attention_maps(&model, &[5, 6, 7]).unwrap();
//! assert_eq!(maps.len(), model.config().n_layer);
//! assert_eq!(maps[0].dim(), (model.config().n_head, 3, 3));
//! assert_eq!(maps[0][[0, 0, 1]], 0.0); // causal: nothing above the diagonal
//! ```

use ndarray::{Array3, Array4, ArrayView2, Axis};

use crate::error::{Error, Result};
use crate::model::{ForwardInput, ForwardOptions, Gpt2, LogitsMode};

/// Everything a forward pass can show about its internals.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// Per layer, attention probabilities `[B, NH, T, Tk]` (like HF `output_attentions`).
    pub attentions: Vec<Array4<f32>>,
    /// `n_layer + 1` arrays `[B, T, C]`: the input of every block, then the final `ln_f` output
    /// (like HF `output_hidden_states`).
    pub hidden_states: Vec<Array3<f32>>,
    /// Logits `[B, T, V]`.
    pub logits: Array3<f32>,
}

/// Runs `model` on `input` returning logits, attention probabilities and hidden states.
pub fn inspect(model: &Gpt2, input: &ForwardInput<'_>) -> Result<Inspection> {
    let opts = ForwardOptions { logits: LogitsMode::All, final_hidden: false, hidden_states: true, attentions: true };
    let out = model.forward(input, None, &opts)?;
    Ok(Inspection {
        attentions: out.attentions,
        hidden_states: out.hidden_states,
        logits: out.logits.expect("logits requested"),
    })
}

/// Per-layer attention probabilities `[B, NH, T, T]` for a batch of sequences `[B, T]`.
pub fn attention_maps_batch(model: &Gpt2, tokens: ArrayView2<'_, u32>) -> Result<Vec<Array4<f32>>> {
    let opts = ForwardOptions { logits: LogitsMode::None, attentions: true, ..Default::default() };
    Ok(model.forward(&ForwardInput::new(tokens), None, &opts)?.attentions)
}

/// Per-layer attention probabilities `[NH, T, T]` for one sequence: entry `[h, i, j]` is how much
/// position `i` attends to position `j` in head `h`. Rows sum to 1; entries with `j > i` are 0.
pub fn attention_maps(model: &Gpt2, tokens: &[u32]) -> Result<Vec<Array3<f32>>> {
    let view = ArrayView2::from_shape((1, tokens.len()), tokens).map_err(|e| Error::Shape(e.to_string()))?;
    Ok(attention_maps_batch(model, view)?.into_iter().map(|a| a.index_axis_move(Axis(0), 0)).collect())
}

/// Hidden states (`n_layer + 1` arrays `[B, T, C]`, see [`Inspection::hidden_states`]).
pub fn hidden_states(model: &Gpt2, tokens: ArrayView2<'_, u32>) -> Result<Vec<Array3<f32>>> {
    let opts = ForwardOptions { logits: LogitsMode::None, hidden_states: true, ..Default::default() };
    Ok(model.forward(&ForwardInput::new(tokens), None, &opts)?.hidden_states)
}
