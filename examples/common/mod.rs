//! Helpers shared by the examples (`mod common;` in each; not an example itself).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Help text of every example's `--model` option.
pub const MODEL_HELP: &str = "Model: a directory (config.json + model.safetensors, or a sharded \
    model.safetensors.index.json), a .safetensors file, or a Hugging Face hub id such as openai-community/gpt2 \
    (ORG/NAME[@REVISION], read from the local HF cache: HF_HUB_CACHE, HF_HOME or ~/.cache/huggingface). \
    Default: $GPT2_MODEL_DIR, else the bundled Shakespeare model of a checkout, else openai-community/gpt2 \
    in the HF cache";

/// Where the model named by `--model` is: an existing path as is, a hub id through the local
/// Hugging Face cache, or (no `--model`) the default model (`gpt2::default_model_dir`).
pub fn model_path(arg: Option<&Path>) -> Result<PathBuf, gpt2::Error> {
    match arg {
        None => gpt2::default_model_dir(),
        Some(p) if p.exists() => Ok(p.to_path_buf()),
        Some(p) => match p.to_str() {
            Some(s) => gpt2::model::hub::resolve(s),
            None => Err(gpt2::Error::NotFound(p.to_path_buf())),
        },
    }
}

/// The default model when one can be found (else the tiny BPE test fixture of the checkout),
/// for examples that only need some model.
pub fn default_model() -> PathBuf {
    gpt2::default_model_dir().unwrap_or_else(|_| PathBuf::from("fixtures/models/tiny-bpe"))
}

/// What `main` returns: any error, printed with its `Display` form (one readable line) when the
/// program exits, instead of the `Debug` form Rust prints for `Result` errors from `main`.
pub struct MainError(Box<dyn std::error::Error>);

impl<E: Into<Box<dyn std::error::Error>>> From<E> for MainError {
    fn from(e: E) -> Self {
        MainError(e.into())
    }
}

impl std::fmt::Debug for MainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

/// CPU time of all threads of this process (Linux `schedstat`, ns precision), if readable.
/// On a shared machine wall time includes waiting for a core; CPU time does not.
pub fn cpu_seconds() -> Option<f64> {
    let mut total = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let s = std::fs::read_to_string(entry.ok()?.path().join("schedstat")).ok()?;
        total += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total as f64 * 1e-9)
}
