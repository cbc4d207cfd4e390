//! Training data: token shard files, a shard writer and a batch loader.
//!
//! - [`shard`]: read / write flat `u16` token streams as NumPy `.npy` (build-nanogpt's
//!   `fineweb.py`) or llm.c `.bin` files, memory-mapped and fully validated.
//! - [`writer`]: tokenize text / JSONL into fixed-size shards, EOT before each document, atomic
//!   writes, progress through a callback.
//! - [`loader`]: `(x, y)` batches `[B, T]` with the one-token shift, sequential or seeded-shuffled,
//!   split across data-parallel ranks, with a resumable position.
//! - [`unigram_cross_entropy`]: the add-one unigram baseline a language model must beat.
//!
//! The trainer consumes any [`BatchSource`].

pub mod loader;
pub mod shard;
pub mod writer;

use std::path::{Path, PathBuf};

use ndarray::Array2;

pub use loader::{list_shards, DataLoader, LoaderConfig, LoaderPosition, Split};
pub use shard::{save_shard, ShardFormat, TokenShard};
pub use writer::{write_shards, ShardInfo, ShardWriter, SplitNaming, WriteProgress, WriteSummary, WriterOptions};

use crate::error::{Error, Result};

/// A source of training batches.
///
/// `next_batch` returns `(x, y)`, both `[B, T]`, where `y[b, t]` is the token that follows
/// `x[b, t]`. `state` captures the position as JSON (stored in checkpoints); `restore` puts a
/// source built the same way back at that position, so the following batches are exactly those
/// that would have followed.
pub trait BatchSource {
    /// The next batch `(x, y)`, each `[B, T]`.
    fn next_batch(&mut self) -> Result<(Array2<u32>, Array2<u32>)>;
    /// The current position, as JSON.
    fn state(&self) -> serde_json::Value;
    /// Returns to a position saved by [`BatchSource::state`].
    fn restore(&mut self, state: serde_json::Value) -> Result<()>;
}

/// Cross-entropy (nats per token) on `val` of a unigram model estimated on `train` with add-one
/// smoothing over `vocab_size` tokens: `p(t) = (count(t) + 1) / (len(train) + vocab_size)`,
/// result `−mean_{t ∈ val} ln p(t)` (accumulated in f64).
///
/// Errors: [`Error::InvalidArgument`] for `vocab_size == 0`, [`Error::EmptyInput`] for an empty
/// `val`, [`Error::TokenOutOfVocab`] for a token ≥ `vocab_size` (position in `train`, or in `val`).
///
/// ```
/// // train = [0, 0, 1], V = 3: p = (3/6, 2/6, 1/6)
/// let ce = gpt2::data::unigram_cross_entropy(&[0, 0, 1], &[0, 2], 3).unwrap();
/// assert!((ce - (-(0.5f64.ln() + (1.0f64 / 6.0).ln()) / 2.0)).abs() < 1e-12);
/// ```
pub fn unigram_cross_entropy(train: &[u32], val: &[u32], vocab_size: usize) -> Result<f64> {
    if vocab_size == 0 {
        return Err(Error::arg("vocab_size", "must be positive"));
    }
    if val.is_empty() {
        return Err(Error::EmptyInput("no validation tokens".into()));
    }
    let oov = |tokens: &[u32]| tokens.iter().position(|&t| t as usize >= vocab_size);
    for tokens in [train, val] {
        if let Some(position) = oov(tokens) {
            return Err(Error::TokenOutOfVocab { token: tokens[position], position, vocab_size });
        }
    }
    let mut counts = vec![0u64; vocab_size];
    for &t in train {
        counts[t as usize] += 1;
    }
    let denom = (train.len() + vocab_size) as f64;
    let sum: f64 = val.iter().map(|&t| ((counts[t as usize] + 1) as f64 / denom).ln()).sum();
    Ok(-sum / val.len() as f64)
}

/// Paths of the public-domain Shakespeare corpus in a checkout of this crate: `(train, val)`
/// text files under `fixtures/corpus/` (4 whole plays held out for validation; see its README).
/// The corpus is not part of the published package: `None` unless the program runs from a
/// checkout (found next to the running executable or above the current directory).
pub fn shakespeare_corpus() -> Option<(PathBuf, PathBuf)> {
    let train = crate::model::hub::checkout_file(Path::new("fixtures/corpus/shakespeare_train.txt"))?;
    let val = train.with_file_name("shakespeare_val.txt");
    Some((train, val))
}
