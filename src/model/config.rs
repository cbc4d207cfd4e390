//! Model hyper-parameters, mirroring HuggingFace's `config.json` for GPT-2.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// GPT-2 hyper-parameters. Field names follow HuggingFace's `GPT2Config`, so a
/// hub `config.json` deserializes directly (unknown keys are ignored).
///
/// ```
/// let c = gpt2::Config::gpt2_124m();
/// assert_eq!((c.n_layer, c.n_head, c.n_embd), (12, 12, 768));
/// assert!(c.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Vocabulary size (50257 for the published models).
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    /// Maximum sequence length (context), a.k.a. block size.
    #[serde(default = "default_positions")]
    pub n_positions: usize,
    /// Width of the residual stream.
    #[serde(default = "default_embd")]
    pub n_embd: usize,
    /// Number of transformer blocks.
    #[serde(default = "default_layer")]
    pub n_layer: usize,
    /// Number of attention heads.
    #[serde(default = "default_head")]
    pub n_head: usize,
    /// Hidden width of the MLP; `None` means `4 * n_embd`.
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// Layernorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f32,
    /// MLP activation; only the tanh GELU forms (`gelu_new`, `gelu_pytorch_tanh`) are supported.
    #[serde(default = "default_act")]
    pub activation_function: String,
    /// Dropout on the residual branches (training only).
    #[serde(default)]
    pub resid_pdrop: f32,
    /// Dropout on the embeddings (training only).
    #[serde(default)]
    pub embd_pdrop: f32,
    /// Dropout on attention probabilities (training only).
    #[serde(default)]
    pub attn_pdrop: f32,
    /// Scale attention scores by 1/sqrt(head_dim) (true for every published GPT-2; see
    /// [`Config::attn_scale`]).
    #[serde(default = "default_true")]
    pub scale_attn_weights: bool,
    /// Additional 1/(layer+1) scaling of attention scores in block `layer` (false for the
    /// published GPT-2 models; see [`Config::attn_scale`]).
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Id of the beginning-of-sequence token.
    #[serde(default = "default_eot")]
    pub bos_token_id: u32,
    /// Id of the end-of-sequence token (`<|endoftext|>`).
    #[serde(default = "default_eot")]
    pub eos_token_id: u32,
}

fn default_vocab() -> usize {
    50257
}
fn default_positions() -> usize {
    1024
}
fn default_embd() -> usize {
    768
}
fn default_layer() -> usize {
    12
}
fn default_head() -> usize {
    12
}
fn default_eps() -> f32 {
    1e-5
}
fn default_act() -> String {
    "gelu_new".to_string()
}
fn default_true() -> bool {
    true
}
fn default_eot() -> u32 {
    50256
}

impl Default for Config {
    fn default() -> Self {
        Self::gpt2_124m()
    }
}

impl Config {
    /// A GPT-2 config with the given shape and the published defaults elsewhere.
    pub fn new(n_layer: usize, n_head: usize, n_embd: usize, n_positions: usize, vocab_size: usize) -> Self {
        Config {
            vocab_size,
            n_positions,
            n_embd,
            n_layer,
            n_head,
            n_inner: None,
            layer_norm_epsilon: 1e-5,
            activation_function: default_act(),
            resid_pdrop: 0.0,
            embd_pdrop: 0.0,
            attn_pdrop: 0.0,
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            bos_token_id: 50256,
            eos_token_id: 50256,
        }
    }

    /// GPT-2 small (124M parameters).
    pub fn gpt2_124m() -> Self {
        Self::new(12, 12, 768, 1024, 50257)
    }
    /// GPT-2 medium (355M).
    pub fn gpt2_355m() -> Self {
        Self::new(24, 16, 1024, 1024, 50257)
    }
    /// GPT-2 large (774M).
    pub fn gpt2_774m() -> Self {
        Self::new(36, 20, 1280, 1024, 50257)
    }
    /// GPT-2 XL (1558M).
    pub fn gpt2_1558m() -> Self {
        Self::new(48, 25, 1600, 1024, 50257)
    }
    /// "nano": 3 layers, 3 heads, 48 dims, with the given context and vocabulary
    /// (the seed exercise uses block size 11 and vocabulary 8).
    pub fn nano(n_positions: usize, vocab_size: usize) -> Self {
        Self::new(3, 3, 48, n_positions, vocab_size)
    }

    /// Looks up a preset by name: `gpt2`/`124m`, `gpt2-medium`/`355m`,
    /// `gpt2-large`/`774m`, `gpt2-xl`/`1558m`, `nano`.
    pub fn preset(name: &str) -> Result<Self> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "gpt2" | "124m" | "gpt2-124m" => Self::gpt2_124m(),
            "gpt2-medium" | "355m" | "gpt2-355m" => Self::gpt2_355m(),
            "gpt2-large" | "774m" | "gpt2-774m" => Self::gpt2_774m(),
            "gpt2-xl" | "1558m" | "gpt2-1558m" => Self::gpt2_1558m(),
            "nano" => Self::nano(1024, 50257),
            other => {
                return Err(Error::arg(
                    "preset",
                    format!("unknown preset `{other}` (expected gpt2, gpt2-medium, gpt2-large, gpt2-xl or nano)"),
                ))
            }
        })
    }

    /// MLP hidden width (`n_inner` or `4 * n_embd`, saturating).
    pub fn mlp_hidden(&self) -> usize {
        self.n_inner.unwrap_or(self.n_embd.saturating_mul(4))
    }

    /// The factor attention scores `q·k` of block `layer` (0-based) are multiplied by before
    /// the softmax, as transformers' `GPT2Attention` computes it: `1/√head_dim` when
    /// `scale_attn_weights` (always, for published GPT-2 models), divided further by
    /// `layer + 1` when `scale_attn_by_inverse_layer_idx`.
    ///
    /// ```
    /// let mut c = gpt2::Config::new(2, 2, 32, 16, 100); // head width 16
    /// assert_eq!(c.attn_scale(1), 0.25);
    /// c.scale_attn_by_inverse_layer_idx = true;
    /// assert_eq!(c.attn_scale(1), 0.125);
    /// ```
    pub fn attn_scale(&self, layer: usize) -> f32 {
        let base = if self.scale_attn_weights { 1.0 / (self.head_dim() as f32).sqrt() } else { 1.0 };
        if self.scale_attn_by_inverse_layer_idx {
            base / (layer as f32 + 1.0)
        } else {
            base
        }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head.max(1)
    }

    /// Checks that the hyper-parameters describe a model this crate can run.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.n_layer == 0 || self.n_head == 0 || self.n_embd == 0 {
            return bad(format!(
                "n_layer ({}), n_head ({}) and n_embd ({}) must be positive",
                self.n_layer, self.n_head, self.n_embd
            ));
        }
        if self.n_embd % self.n_head != 0 {
            return bad(format!("n_embd ({}) must be divisible by n_head ({})", self.n_embd, self.n_head));
        }
        if self.vocab_size == 0 || self.vocab_size > u32::MAX as usize {
            return bad(format!("vocab_size ({}) must be in 1..=u32::MAX", self.vocab_size));
        }
        if self.n_positions == 0 || self.n_positions > u32::MAX as usize {
            return bad(format!("n_positions ({}) must be in 1..=u32::MAX", self.n_positions));
        }
        if self.mlp_hidden() == 0 {
            return bad("n_inner must be positive".into());
        }
        if !(self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon > 0.0) {
            return bad(format!("layer_norm_epsilon ({}) must be finite and > 0", self.layer_norm_epsilon));
        }
        if !matches!(self.activation_function.as_str(), "gelu_new" | "gelu_pytorch_tanh") {
            return bad(format!(
                "activation_function `{}` is not supported (GPT-2 uses the tanh GELU: gelu_new or gelu_pytorch_tanh)",
                self.activation_function
            ));
        }
        for (name, p) in
            [("resid_pdrop", self.resid_pdrop), ("embd_pdrop", self.embd_pdrop), ("attn_pdrop", self.attn_pdrop)]
        {
            if !(0.0..1.0).contains(&p) {
                return bad(format!("{name} ({p}) must be in [0, 1)"));
            }
        }
        if self.checked_num_parameters().is_none() {
            return bad("the parameter count overflows usize (absurd n_layer / n_embd / vocab_size)".into());
        }
        Ok(())
    }

    /// Parses and validates a `config.json` document held in memory (`path` is only used in
    /// error messages). Errors: [`Error::Json`] for malformed JSON or wrong field types,
    /// [`Error::InvalidConfig`] for values [`Config::validate`] rejects.
    ///
    /// ```
    /// let c = gpt2::Config::from_json_str(r#"{"n_layer": 2, "n_head": 2, "n_embd": 8}"#, "<inline>").unwrap();
    /// assert_eq!(c.mlp_hidden(), 32);
    /// assert!(gpt2::Config::from_json_str("{", "<inline>").is_err());
    /// ```
    ///
    /// Keys of `GPT2Config` that would change the model's math in a way this crate does not
    /// implement are rejected by name ([`Error::InvalidConfig`]): `model_type` other than
    /// `"gpt2"`, `add_cross_attention: true`, `tie_word_embeddings: false`, and keys of other
    /// architectures (rotary, ALiBi, parallel residual, local attention, grouped-query
    /// attention, …). `scale_attn_by_inverse_layer_idx` and `scale_attn_weights` are
    /// implemented ([`Config::attn_scale`]); `reorder_and_upcast_attn` is accepted, as it only
    /// changes the order of an f32 computation that this crate already does in f32.
    ///
    /// ```
    /// use gpt2::Config;
    /// let err = Config::from_json_str(r#"{"model_type": "gpt_neo"}"#, "<inline>").unwrap_err();
    /// assert!(err.to_string().contains("gpt_neo"));
    /// let err = Config::from_json_str(r#"{"add_cross_attention": true}"#, "<inline>").unwrap_err();
    /// assert!(err.to_string().contains("add_cross_attention"));
    /// assert!(Config::from_json_str(r#"{"reorder_and_upcast_attn": true}"#, "<inline>").is_ok());
    /// ```
    pub fn from_json_str(text: &str, path: impl AsRef<Path>) -> Result<Self> {
        let json_err = |e: serde_json::Error| Error::Json { path: path.as_ref().to_path_buf(), reason: e.to_string() };
        let value: serde_json::Value = serde_json::from_str(text).map_err(json_err)?;
        check_unsupported_keys(&value)?;
        let cfg: Config = serde_json::from_value(value).map_err(json_err)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and validates a HuggingFace `config.json` (a regular file: a FIFO or device is
    /// refused with [`Error::Io`] instead of blocking).
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let bytes = crate::fsutil::read_regular(path)?;
        let text = String::from_utf8(bytes)
            .map_err(|e| Error::Json { path: path.to_path_buf(), reason: format!("not UTF-8: {e}") })?;
        Self::from_json_str(&text, path)
    }

    /// Serializes to a `config.json` that transformers' `GPT2LMHeadModel.from_pretrained` reads.
    pub fn to_hf_json(&self) -> String {
        let mut v = serde_json::to_value(self).expect("Config serializes");
        let obj = v.as_object_mut().expect("object");
        obj.insert("model_type".into(), "gpt2".into());
        obj.insert("architectures".into(), serde_json::json!(["GPT2LMHeadModel"]));
        obj.insert("n_ctx".into(), self.n_positions.into());
        obj.insert("tie_word_embeddings".into(), true.into());
        obj.insert("initializer_range".into(), 0.02.into());
        obj.insert("use_cache".into(), true.into());
        // The f32 epsilon as its shortest decimal (1e-5, not 9.999999747378752e-6).
        let eps: f64 = self.layer_norm_epsilon.to_string().parse().expect("f32 display parses");
        obj.insert("layer_norm_epsilon".into(), eps.into());
        serde_json::to_string_pretty(&v).expect("json")
    }

    /// Number of parameters (with the LM head tied to `wte`); `usize::MAX` when the count
    /// overflows (such a config fails [`Config::validate`]).
    pub fn num_parameters(&self) -> usize {
        self.checked_num_parameters().unwrap_or(usize::MAX)
    }

    /// Number of parameters, or `None` when it overflows `usize`.
    pub fn checked_num_parameters(&self) -> Option<usize> {
        let (c, h, l) = (self.n_embd, self.mlp_hidden(), self.n_layer);
        let mul = |a: usize, b: usize| a.checked_mul(b);
        let sum = |xs: &[Option<usize>]| xs.iter().try_fold(0usize, |acc, x| acc.checked_add((*x)?));
        let per_layer = sum(&[
            mul(c, 2),
            mul(c, 3).and_then(|c3| mul(c, c3)?.checked_add(c3)),
            mul(c, c).and_then(|x| x.checked_add(c)),
            mul(c, 2),
            mul(c, h).and_then(|x| x.checked_add(h)),
            mul(h, c).and_then(|x| x.checked_add(c)),
        ]);
        sum(&[mul(self.vocab_size, c), mul(self.n_positions, c), per_layer.and_then(|p| mul(l, p)), mul(c, 2)])
    }
}

/// Keys of other architectures' configs whose presence means the checkpoint is not a plain
/// GPT-2 (each changes the forward pass in a way this crate does not implement).
const FOREIGN_KEYS: &[&str] = &[
    "rotary",
    "rotary_dim",
    "rotary_pct",
    "rotary_emb_base",
    "rope_theta",
    "rope_scaling",
    "alibi",
    "position_embedding_type",
    "parallel_attn",
    "use_parallel_residual",
    "parallel_residual",
    "attention_layers",
    "attention_types",
    "window_size",
    "multi_query",
    "num_key_value_heads",
    "n_kv_heads",
    "apply_query_key_layer_scaling",
    "normalize_embeddings",
];

/// Rejects, by name, `config.json` keys whose values change the math of the model in a way
/// this crate does not implement (see [`Config::from_json_str`]).
fn check_unsupported_keys(v: &serde_json::Value) -> Result<()> {
    let Some(obj) = v.as_object() else {
        return Ok(()); // serde reports the type error with its own message
    };
    let bad = |m: String| Err(Error::InvalidConfig(m));
    if let Some(t) = obj.get("model_type").filter(|t| !t.is_null()) {
        if t.as_str() != Some("gpt2") {
            return bad(format!("model_type {t} is not supported: this crate implements GPT-2 (model_type \"gpt2\")"));
        }
    }
    if obj.get("add_cross_attention").and_then(|x| x.as_bool()) == Some(true) {
        return bad(
            "add_cross_attention = true (an encoder-decoder GPT-2 with cross-attention) is not supported".into()
        );
    }
    if obj.get("tie_word_embeddings").and_then(|x| x.as_bool()) == Some(false) {
        return bad(
            "tie_word_embeddings = false (a separate lm_head) is not supported: GPT-2 ties the head to wte".into()
        );
    }
    if let Some(k) = FOREIGN_KEYS.iter().find(|k| obj.get(**k).is_some_and(|x| !x.is_null() && x != false)) {
        return bad(format!("config key `{k}` belongs to another architecture and is not supported by this GPT-2"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_sizes_have_published_parameter_counts() {
        assert_eq!(Config::gpt2_124m().num_parameters(), 124_439_808);
        assert_eq!(Config::gpt2_355m().num_parameters(), 354_823_168);
        assert_eq!(Config::gpt2_774m().num_parameters(), 774_030_080);
        assert_eq!(Config::gpt2_1558m().num_parameters(), 1_557_611_200);
    }

    #[test]
    fn validation_rejects_bad_shapes() {
        let mut c = Config::nano(11, 8);
        assert!(c.validate().is_ok());
        c.n_head = 5;
        assert!(matches!(c.validate(), Err(Error::InvalidConfig(_))));
        let mut c = Config::nano(11, 8);
        c.activation_function = "relu".into();
        assert!(c.validate().is_err());
        let mut c = Config::nano(11, 8);
        c.n_positions = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn math_changing_keys_are_rejected_by_name() {
        for (json, name) in [
            (r#"{"model_type": "gpt_neo"}"#, "gpt_neo"),
            (r#"{"model_type": 3}"#, "model_type"),
            (r#"{"add_cross_attention": true}"#, "add_cross_attention"),
            (r#"{"tie_word_embeddings": false}"#, "tie_word_embeddings"),
            (r#"{"rotary_dim": 64}"#, "rotary_dim"),
            (r#"{"attention_layers": ["global", "local"]}"#, "attention_layers"),
        ] {
            match Config::from_json_str(json, "<t>") {
                Err(Error::InvalidConfig(m)) => assert!(m.contains(name), "{json}: {m}"),
                other => panic!("{json}: {other:?}"),
            }
        }
        for json in [
            r#"{"model_type": "gpt2", "add_cross_attention": false, "tie_word_embeddings": true}"#,
            r#"{"reorder_and_upcast_attn": true, "scale_attn_by_inverse_layer_idx": true, "rope_scaling": null}"#,
        ] {
            Config::from_json_str(json, "<t>").unwrap();
        }
    }

    #[test]
    fn parses_hf_json_with_nulls_and_extra_keys() {
        let j = r#"{"n_layer":2,"n_head":2,"n_embd":8,"n_positions":16,"vocab_size":10,
                    "n_inner":null,"dtype":"float32","architectures":["GPT2LMHeadModel"]}"#;
        let c: Config = serde_json::from_str(j).unwrap();
        assert_eq!(c.mlp_hidden(), 32);
        c.validate().unwrap();
        let back: Config = serde_json::from_str(&c.to_hf_json()).unwrap();
        assert_eq!(back, c);
    }
}
