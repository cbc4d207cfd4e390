//! Inspection and teaching: look inside tokenization and attention.
//!
//! - [`attention`]: scaled dot-product attention, cross-attention and single-head
//!   self-attention as plain functions on ndarray matrices.
//! - [`mha`]: a stand-alone multi-head causal self-attention module (fused or separate q/k/v)
//!   that reproduces a GPT-2 layer's attention.
//! - [`maps`]: the model's per-layer attention probabilities and hidden states.
//! - [`render`]: a self-contained HTML head view and SVG/PNG heatmaps ([`png`] is the encoder).
//!
//! Tokenization traces live next to the tokenizer: [`crate::tokenizer::trace`] (BPE merges step
//! by step) and [`crate::tokenizer::simple`] (word and character tokenizers).

pub mod attention;
pub mod maps;
pub mod mha;
pub mod png;
pub mod render;

pub use attention::{causal_mask, cross_attention, scaled_dot_product_attention, self_attention, AttentionOutput};
pub use maps::{attention_maps, attention_maps_batch, hidden_states, inspect, Inspection};
pub use mha::{AttentionConfig, CausalSelfAttention, MhaOutput, QkvProjection};
pub use render::{heatmap_png, heatmap_svg, AttentionView};
