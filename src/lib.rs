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
pub mod kernels;
pub mod model;
pub mod rng;
pub mod tokenizer;
pub mod train;

#[cfg(feature = "cuda")]
pub use cuda::{CudaKvCache, CudaModel};
pub use data::{BatchSource, DataLoader, LoaderConfig};
pub use device::Device;
pub use error::{Error, Result};
pub use kernels::gemm::WeightDtype;
pub use model::io::SaveDtype;
pub use model::{
    Config, ForwardInput, ForwardOptions, ForwardOutput, Gpt2, KvCache, LoadOptions, LogitsMode, ParamInfo, ParamLayout,
};
pub use rng::Rng;
pub use tokenizer::Tokenizer;
