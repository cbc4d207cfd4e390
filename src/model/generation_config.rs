//! A checkpoint's `generation_config.json`: the generation defaults its authors chose
//! (end-of-text ids, lengths, sampling), as transformers' `GenerationConfig` stores them.

use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};
use crate::generate::{EarlyStopping, GenerateConfig, SamplingParams};

/// The fields of a `generation_config.json` this crate uses; every field is optional (absent
/// keys and unknown keys are fine). [`GenerationConfig::apply_to`] turns it into
/// [`GenerateConfig`] defaults.
///
/// ```
/// use gpt2::generate::GenerateConfig;
/// use gpt2::GenerationConfig;
/// let g = GenerationConfig::from_json_str(
///     r#"{"eos_token_id": [50256, 198], "max_new_tokens": 20, "do_sample": true, "top_p": 0.9}"#,
///     "<inline>",
/// )?;
/// let mut cfg = GenerateConfig::default();
/// g.apply_to(&mut cfg, 5);
/// assert_eq!((cfg.max_new_tokens, cfg.eos_token_id), (20, Some(50256)));
/// assert_eq!(cfg.stop_token_ids, vec![198]);
/// // do_sample with no temperature / top_k in the file: transformers' defaults 1.0 and 50
/// assert_eq!((cfg.sampling.temperature, cfg.sampling.top_k, cfg.sampling.top_p), (1.0, Some(50), Some(0.9)));
/// let beams = GenerationConfig::from_json_str(r#"{"do_sample": false, "num_beams": 4, "early_stopping": "never"}"#, "<b>")?;
/// beams.apply_to(&mut cfg, 5);
/// assert_eq!((cfg.num_beams, cfg.early_stopping), (4, gpt2::generate::EarlyStopping::Never));
/// # Ok::<(), gpt2::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GenerationConfig {
    /// Beginning-of-sequence id.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence ids (the file may hold one id or a list).
    #[serde(default, deserialize_with = "one_or_many")]
    pub eos_token_id: Vec<u32>,
    /// Padding id.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Total length (prompt + new tokens); used when `max_new_tokens` is absent.
    #[serde(default)]
    pub max_length: Option<usize>,
    /// New tokens to generate.
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
    /// Sample (`true`) or decode greedily (`false`).
    #[serde(default)]
    pub do_sample: Option<bool>,
    /// Softmax temperature (sampling only).
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Top-k filter (sampling only; `0` = off).
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Nucleus filter (sampling only; `1.0` = off).
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Repetition penalty (`1.0` = off).
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
    /// No-repeat n-gram size (`0` = off).
    #[serde(default)]
    pub no_repeat_ngram_size: Option<usize>,
    /// Beams (`1` = no beam search).
    #[serde(default)]
    pub num_beams: Option<usize>,
    /// Beam search length penalty.
    #[serde(default)]
    pub length_penalty: Option<f32>,
    /// Beam search stopping rule (`true`, `false` or `"never"`).
    #[serde(default)]
    pub early_stopping: Option<EarlyStopping>,
    /// Sequences returned per prompt.
    #[serde(default)]
    pub num_return_sequences: Option<usize>,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(u32),
        Many(Vec<u32>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(x)) => vec![x],
        Some(OneOrMany::Many(v)) => v,
    })
}

impl GenerationConfig {
    /// Parses a `generation_config.json` held in memory (`path` is only used in errors).
    /// Errors: [`Error::Json`] for malformed JSON or wrong field types.
    pub fn from_json_str(text: &str, path: impl AsRef<Path>) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::Json { path: path.as_ref().to_path_buf(), reason: e.to_string() })
    }

    /// Reads a `generation_config.json` file.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let bytes = crate::fsutil::read_regular(path)?;
        let text = String::from_utf8(bytes)
            .map_err(|e| Error::Json { path: path.to_path_buf(), reason: format!("not UTF-8: {e}") })?;
        Self::from_json_str(&text, path)
    }

    /// The `generation_config.json` of a checkpoint directory (or of the directory holding a
    /// checkpoint file), `None` when it has none.
    ///
    /// ```
    /// # let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/tiny-sharded");
    /// let g = gpt2::GenerationConfig::from_checkpoint(&dir)?.expect("tiny-sharded has one");
    /// assert_eq!(g.max_new_tokens, Some(9));
    /// # Ok::<(), gpt2::Error>(())
    /// ```
    pub fn from_checkpoint(path: impl AsRef<Path>) -> Result<Option<Self>> {
        let path = path.as_ref();
        let dir = if path.is_dir() { path } else { path.parent().unwrap_or(Path::new(".")) };
        let file = dir.join("generation_config.json");
        if !file.exists() {
            return Ok(None);
        }
        Self::from_json_file(&file).map(Some)
    }

    /// Sets the fields of `cfg` this file specifies, as transformers' `generate` would read them
    /// (`prompt_len` converts `max_length` into new tokens); fields the file leaves out keep their
    /// value in `cfg`:
    /// * `max_new_tokens`, else `max_length − prompt_len` (at least 1);
    /// * `eos_token_id`: the first id becomes `cfg.eos_token_id`, the others are added to
    ///   `cfg.stop_token_ids`;
    /// * `do_sample: false` → greedy; `do_sample: true` → temperature, top-k and top-p from the
    ///   file or transformers' defaults (1.0, 50, 1.0; `top_k: 0` and `top_p: 1.0` mean off);
    /// * `repetition_penalty`, `no_repeat_ngram_size`;
    /// * `num_beams`, `length_penalty`, `early_stopping`, `num_return_sequences` (→
    ///   `num_samples`).
    pub fn apply_to(&self, cfg: &mut GenerateConfig, prompt_len: usize) {
        if let Some(n) = self.max_new_tokens {
            cfg.max_new_tokens = n;
        } else if let Some(total) = self.max_length {
            cfg.max_new_tokens = total.saturating_sub(prompt_len).max(1);
        }
        if let Some((&first, rest)) = self.eos_token_id.split_first() {
            cfg.eos_token_id = Some(first);
            for &id in rest {
                if !cfg.stop_token_ids.contains(&id) {
                    cfg.stop_token_ids.push(id);
                }
            }
        }
        match self.do_sample {
            Some(false) => {
                let (penalty, ngram) = (cfg.sampling.repetition_penalty, cfg.sampling.no_repeat_ngram_size);
                cfg.sampling = SamplingParams {
                    repetition_penalty: penalty,
                    no_repeat_ngram_size: ngram,
                    ..SamplingParams::greedy()
                };
            }
            Some(true) => {
                cfg.sampling.temperature = self.temperature.unwrap_or(1.0);
                cfg.sampling.top_k = Some(self.top_k.unwrap_or(50)).filter(|&k| k > 0);
                cfg.sampling.top_p = Some(self.top_p.unwrap_or(1.0)).filter(|&p| p < 1.0);
            }
            None => {}
        }
        if let Some(p) = self.repetition_penalty {
            cfg.sampling.repetition_penalty = p;
        }
        if let Some(n) = self.no_repeat_ngram_size {
            cfg.sampling.no_repeat_ngram_size = n;
        }
        if let Some(n) = self.num_beams {
            cfg.num_beams = n;
        }
        if let Some(p) = self.length_penalty {
            cfg.length_penalty = p;
        }
        if let Some(e) = self.early_stopping {
            cfg.early_stopping = e;
        }
        if let Some(n) = self.num_return_sequences {
            cfg.num_samples = n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hub_files() {
        // openai-community/gpt2's file
        let g = GenerationConfig::from_json_str(
            r#"{"_from_model_config": true, "bos_token_id": 50256, "eos_token_id": 50256,
                "transformers_version": "4.26.0.dev0"}"#,
            "<t>",
        )
        .unwrap();
        assert_eq!((g.bos_token_id, g.eos_token_id.as_slice()), (Some(50256), &[50256][..]));
        let mut cfg = GenerateConfig::default();
        let before = cfg.clone();
        g.apply_to(&mut cfg, 3);
        assert_eq!(cfg, before, "nothing but eos, which is already the default");

        let g =
            GenerationConfig::from_json_str(r#"{"eos_token_id": null, "max_length": 10, "do_sample": false}"#, "<t>")
                .unwrap();
        let mut cfg = GenerateConfig::default();
        g.apply_to(&mut cfg, 4);
        assert_eq!(cfg.max_new_tokens, 6);
        assert!(cfg.sampling.is_greedy());
        g.apply_to(&mut cfg, 40);
        assert_eq!(cfg.max_new_tokens, 1);
        assert!(GenerationConfig::from_json_str(r#"{"eos_token_id": "x"}"#, "<t>").is_err());
        assert!(GenerationConfig::from_json_str(r#"{"top_k": -1}"#, "<t>").is_err());
    }
}
