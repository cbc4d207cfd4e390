//! # gpt2 — GPT-2 from scratch in pure Rust
//!
//! Loads HuggingFace GPT-2 checkpoints (`model.safetensors` + `config.json`)
//! and computes the same logits as `transformers.GPT2LMHeadModel`, on the CPU.
//!
//! ```
//! use gpt2::{Config, Gpt2, Tokenizer};
//! let tok = Tokenizer::gpt2().unwrap();
//! let model = Gpt2::new_random(Config::nano(64, tok.vocab_size()), 0).unwrap();
//! let ids = tok.encode("Hello, world");
//! let logits = model.logits(&ids).unwrap();
//! assert_eq!(logits.dim(), (ids.len(), 50257));
//! ```
#![warn(missing_docs)]

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod collective;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod data;
pub mod device;
pub mod edit;
pub mod error;
pub mod eval;
pub mod fsutil;
pub mod generate;
pub mod inspect;
/// Compute kernels (GEMM, attention, layernorm, …). Internal: public only so the benches and
/// tests can reach them; not part of the semver-stable API.
#[doc(hidden)]
pub mod kernels;
pub mod mem;
pub mod model;
pub mod rng;
pub mod tokenizer;
pub mod train;

pub use collective::{Collective, SingleProcess};
#[cfg(feature = "cuda")]
pub use cuda::{CudaKvCache, CudaModel};
pub use data::{BatchSource, DataLoader, LoaderConfig};
pub use device::Device;
pub use error::{Error, Result};
pub use kernels::gemm::WeightDtype;
pub use model::hub::{default_model, default_model_dir};
pub use model::io::SaveDtype;
pub use model::{
    Config, ForwardInput, ForwardOptions, ForwardOutput, GenerationConfig, Gpt2, KvCache, LoadOptions, LogitsMode,
    ParamInfo, ParamLayout,
};
/// The `ndarray` version this crate's API uses (`Array2`, `ArrayView2`, …), so callers need not
/// depend on a matching version themselves.
pub use ndarray;
pub use rng::Rng;
pub use tokenizer::Tokenizer;
