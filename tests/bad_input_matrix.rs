//! The bad-input matrix: every public entry point fed malformed input must return the specific
//! typed [`Error`] variant its docs promise — never panic, hang or return garbage.
//!
//! One table, one section per module. Each case names the entry point, the expected variant
//! (plus, where it matters, a check of the variant's fields) and a closure doing the call. All
//! cases run under `catch_unwind`, so a panic fails the test *with the case name*; every failure
//! is collected and reported together.
//!
//! The table is mirrored in docs/reliability.md between the `bad-input-matrix` markers; the test
//! `matrix_is_documented` fails when they differ. After adding cases run
//! `GPT2_BLESS=1 cargo test --release --test bad_input_matrix` to rewrite that section.
//!
//! `GPT2_MATRIX_VERBOSE=1` prints every case's error message (to review that each fails for the
//! intended reason).
//!
//! Adding cases: extend the matching `*_cases()` function below, then bless the docs.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::fixture;
use gpt2::data::{self, shard, BatchSource, DataLoader, LoaderConfig, ShardFormat, ShardWriter, TokenShard};
use gpt2::inspect::{self, AttentionConfig, AttentionView, CausalSelfAttention};
use gpt2::tokenizer::simple::{CharTokenizer, Tokenize, WordTokenizer};
use gpt2::{Config, Error, ForwardInput, ForwardOptions, Gpt2, KvCache, SaveDtype, Tokenizer};
use ndarray::{Array2, Array3};

// ------------------------------------------------------------------ the table

/// A description of a check on the error's fields, and the check.
type Detail = (&'static str, fn(&Error) -> bool);

/// One malformed input to one public entry point.
struct Case {
    section: &'static str,
    name: &'static str,
    entry: &'static str,
    /// Expected `Error` variant name (see [`variant`]).
    expect: &'static str,
    /// Extra check of the error's fields, with its description for the docs.
    detail: Option<Detail>,
    run: fn(&Ctx) -> gpt2::Result<()>,
}

macro_rules! case {
    ($section:literal, $name:literal, $entry:literal, $variant:ident, $run:expr) => {
        Case { section: $section, name: $name, entry: $entry, expect: stringify!($variant), detail: None, run: $run }
    };
    ($section:literal, $name:literal, $entry:literal, $variant:ident where $what:literal $pred:expr, $run:expr) => {
        Case {
            section: $section,
            name: $name,
            entry: $entry,
            expect: stringify!($variant),
            detail: Some(($what, $pred)),
            run: $run,
        }
    };
}

/// The name of an error's variant.
fn variant(e: &Error) -> &'static str {
    match e {
        Error::Io { .. } => "Io",
        Error::NotFound(_) => "NotFound",
        Error::Safetensors { .. } => "Safetensors",
        Error::Json { .. } => "Json",
        Error::InvalidConfig(_) => "InvalidConfig",
        Error::MissingTensor(_) => "MissingTensor",
        Error::ShapeMismatch { .. } => "ShapeMismatch",
        Error::UnsupportedDtype { .. } => "UnsupportedDtype",
        Error::EmptyInput(_) => "EmptyInput",
        Error::TokenOutOfVocab { .. } => "TokenOutOfVocab",
        Error::SequenceTooLong { .. } => "SequenceTooLong",
        Error::Shape(_) => "Shape",
        Error::InvalidUtf8 { .. } => "InvalidUtf8",
        Error::InvalidArgument { .. } => "InvalidArgument",
        Error::Data { .. } => "Data",
        Error::NonFinite { .. } => "NonFinite",
        Error::Device(_) => "Device",
        Error::OutOfMemory { .. } => "OutOfMemory",
        _ => "(new variant: add it to variant())",
    }
}

fn all_cases() -> Vec<(&'static str, Vec<Case>)> {
    vec![
        ("loader", loader_cases()),
        ("config", config_cases()),
        ("tokenizer", tokenizer_cases()),
        ("forward", forward_cases()),
        ("data", data_cases()),
        ("inspect", inspect_cases()),
        ("eval", eval_cases()),
        ("generate", generate_cases()),
        ("train", train_cases()),
        ("edit", edit_cases()),
    ]
}

// ------------------------------------------------------------------ shared context

/// Fixtures shared by all cases: the tiny model, the tokenizer and a scratch directory.
struct Ctx {
    dir: PathBuf,
    tiny: Gpt2,
}

impl Ctx {
    fn new(section: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("gpt2-matrix-{section}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Ctx { dir, tiny: Gpt2::load(fixture("models/tiny")).unwrap() }
    }

    /// A fresh sub-directory.
    fn sub(&self, name: &str) -> PathBuf {
        let d = self.dir.join(name);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A file `name` holding `bytes`.
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// A checkpoint directory: the tiny config.json and `st` as model.safetensors.
    fn ckpt(&self, name: &str, st: &[u8]) -> PathBuf {
        let d = self.sub(name);
        std::fs::copy(fixture("models/tiny/config.json"), d.join("config.json")).unwrap();
        std::fs::write(d.join("model.safetensors"), st).unwrap();
        d
    }

    /// The tiny model's tensors as (name, dtype, shape, little-endian bytes).
    fn tensors(&self) -> Vec<Raw> {
        let m = &self.tiny;
        m.layout()
            .params()
            .iter()
            .map(|p| Raw {
                name: format!("transformer.{}", p.name),
                dtype: "F32",
                shape: p.shape.clone(),
                data: m.params()[p.range()].iter().flat_map(|v| v.to_le_bytes()).collect(),
            })
            .collect()
    }
}

fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::gpt2().unwrap())
}

/// `model` with `value` written into parameter `offset` (broken weights).
fn poisoned(model: &Gpt2, offset: impl Fn(&gpt2::model::ParamLayout) -> usize, value: f32) -> Gpt2 {
    let mut m = model.clone();
    let i = offset(m.layout());
    m.params_mut()[i] = value;
    m
}

/// One tensor of a hand-built safetensors file.
#[derive(Clone)]
struct Raw {
    name: String,
    dtype: &'static str,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// Builds safetensors bytes from raw tensors (offsets computed honestly) and metadata.
fn st_bytes(tensors: &[Raw], metadata: Option<serde_json::Value>) -> Vec<u8> {
    st_bytes_with(tensors, metadata, |_, s, e| (s, e))
}

/// Like [`st_bytes`], with the header's `data_offsets` of tensor `i` rewritten by `lie(i, start, end)`.
fn st_bytes_with(
    tensors: &[Raw],
    metadata: Option<serde_json::Value>,
    lie: fn(usize, usize, usize) -> (usize, usize),
) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if let Some(m) = metadata {
        header.insert("__metadata__".into(), m);
    }
    let mut off = 0;
    for (i, t) in tensors.iter().enumerate() {
        let (s, e) = lie(i, off, off + t.data.len());
        header.insert(t.name.clone(), serde_json::json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [s, e]}));
        off += t.data.len();
    }
    let mut h = serde_json::Value::Object(header).to_string().into_bytes();
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    for t in tensors {
        out.extend_from_slice(&t.data);
    }
    out
}

fn tiny_st() -> Vec<u8> {
    std::fs::read(fixture("models/tiny/model.safetensors")).unwrap()
}

/// The tiny checkpoint with `edit` applied to its tensor list.
fn edited(cx: &Ctx, name: &str, edit: impl FnOnce(&mut Vec<Raw>)) -> PathBuf {
    let mut t = cx.tensors();
    edit(&mut t);
    cx.ckpt(name, &st_bytes(&t, None))
}

/// The tiny checkpoint as one file whose metadata carries `config` (a JSON string).
fn with_meta_config(cx: &Ctx, config: &str) -> Vec<u8> {
    st_bytes(&cx.tensors(), Some(serde_json::json!({ gpt2::model::io::CONFIG_METADATA_KEY: config })))
}

fn toks(b: usize, t: usize, v: u32) -> Array2<u32> {
    Array2::from_elem((b, t), v)
}

fn fwd(m: &Gpt2, input: ForwardInput<'_>, cache: Option<&mut KvCache>) -> gpt2::Result<()> {
    m.forward(&input, cache, &ForwardOptions::default()).map(drop)
}

fn npy(header: &str, data: &[u8]) -> Vec<u8> {
    let mut dict = header.to_string();
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut b = shard::NPY_MAGIC.to_vec();
    b.extend_from_slice(&[1, 0]);
    b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    b.extend_from_slice(dict.as_bytes());
    b.extend_from_slice(data);
    b
}

fn bin(fields: [i32; 3], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; shard::BIN_HEADER_BYTES];
    for (i, f) in fields.iter().enumerate() {
        b[4 * i..4 * i + 4].copy_from_slice(&f.to_le_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn shards_of(sizes: &[usize]) -> Vec<TokenShard> {
    sizes.iter().enumerate().map(|(i, &n)| TokenShard::from_tokens(format!("s{i}"), &vec![1u32; n]).unwrap()).collect()
}

/// A FIFO named `name` in the scratch directory (nothing ever writes to it: opening it for
/// reading would block forever).
fn fifo(cx: &Ctx, name: &str) -> PathBuf {
    let p = cx.dir.join(name);
    let _ = std::fs::remove_file(&p);
    let ok = std::process::Command::new("mkfifo").arg(&p).status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "mkfifo {} failed", p.display());
    p
}

/// The error is an I/O error saying the path is not a regular file.
fn not_regular(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::InvalidInput)
}

/// A 64-token `.npy` shard `name`, opened, then rewritten in place by `change` (as `np.save`
/// over a shard in use does), then read.
fn shard_changed_under_reader(cx: &Ctx, name: &str, change: fn(&Path)) -> gpt2::Result<()> {
    let p = cx.dir.join(name);
    data::save_shard(&p, &[7u16; 64], ShardFormat::Npy)?;
    let shard = TokenShard::open(&p)?;
    change(&p);
    shard.read_into(0, &mut [0u32; 64])
}

fn shards_from(cx: &Ctx, name: &str, ext: &str, body: &[u8]) -> gpt2::Result<()> {
    let input = cx.file(&format!("{name}.{ext}"), body);
    let out = cx.sub(&format!("{name}-out"));
    data::write_shards(&[input], tokenizer(), data::WriterOptions::new(out), &mut |_| {}).map(drop)
}

// ------------------------------------------------------------------ sections

fn loader_cases() -> Vec<Case> {
    vec![
        case!("loader", "model.safetensors is a FIFO", "Gpt2::load",
            Io where "InvalidInput: not a regular file (no hang)" not_regular, |cx| {
            let d = cx.sub("fifo-st");
            std::fs::copy(fixture("models/tiny/config.json"), d.join("config.json")).unwrap();
            std::fs::rename(fifo(cx, "st.fifo"), d.join("model.safetensors")).unwrap();
            Gpt2::load(d).map(drop)
        }),
        case!("loader", "checkpoint path is a character device (/dev/zero)", "Gpt2::load",
            Io where "InvalidInput: not a regular file" not_regular, |_| Gpt2::load("/dev/zero").map(drop)),
        case!("loader", "missing path", "Gpt2::load", NotFound, |_| Gpt2::load("/nonexistent/gpt2/model").map(drop)),
        case!("loader", "directory without model.safetensors", "Gpt2::load", NotFound, |cx| {
            let d = cx.sub("no-st");
            std::fs::copy(fixture("models/tiny/config.json"), d.join("config.json")).unwrap();
            Gpt2::load(d).map(drop)
        }),
        case!("loader", "directory without config.json", "Gpt2::load", NotFound, |cx| {
            let d = cx.sub("no-cfg");
            std::fs::copy(fixture("models/tiny/model.safetensors"), d.join("model.safetensors")).unwrap();
            Gpt2::load(d).map(drop)
        }),
        case!("loader", "empty safetensors file", "Gpt2::load", Safetensors, |cx| Gpt2::load(cx.ckpt("empty", b""))
            .map(drop)),
        case!("loader", "file truncated inside the tensor data", "Gpt2::load", Safetensors, |cx| {
            let b = tiny_st();
            Gpt2::load(cx.ckpt("trunc-data", &b[..b.len() - 100])).map(drop)
        }),
        case!("loader", "file truncated inside the header", "Gpt2::load", Safetensors, |cx| {
            Gpt2::load(cx.ckpt("trunc-header", &tiny_st()[..20])).map(drop)
        }),
        case!("loader", "header length field claims 1 TiB", "Gpt2::load", Safetensors, |cx| {
            let mut b = tiny_st();
            b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
            Gpt2::load(cx.ckpt("tb-header", &b)).map(drop)
        }),
        case!("loader", "header length field is u64::MAX", "Gpt2::load_from_bytes", Safetensors, |_| {
            let mut b = tiny_st();
            b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            Gpt2::load_from_bytes(&b, None).map(drop)
        }),
        case!("loader", "header is not JSON", "Gpt2::load", Safetensors, |cx| {
            let mut b = tiny_st();
            b[8..40].fill(b'#');
            Gpt2::load(cx.ckpt("bad-json-header", &b)).map(drop)
        }),
        case!(
            "loader",
            "data_offsets of the last tensor point past the end",
            "Gpt2::load_from_bytes",
            Safetensors,
            |cx| {
                let t = cx.tensors();
                let n = t.len();
                let b = st_bytes_with(&t, None, |i, s, e| if i == 0 { (s, e) } else { (s, e * 1000) });
                assert!(n > 1);
                Gpt2::load_from_bytes(&b, None).map(drop)
            }
        ),
        case!(
            "loader",
            "data_offsets overlap (second tensor starts inside the first)",
            "Gpt2::load",
            Safetensors,
            |cx| {
                let b = st_bytes_with(&cx.tensors(), None, |i, s, e| if i == 1 { (s - 4, e) } else { (s, e) });
                Gpt2::load(cx.ckpt("overlap", &b)).map(drop)
            }
        ),
        case!(
            "loader",
            "shape disagrees with the byte range (dtype/shape mismatch)",
            "Gpt2::load",
            Safetensors,
            |cx| { Gpt2::load(edited(cx, "f16-bytes", |t| t[0].dtype = "F16")).map(drop) }
        ),
        case!("loader", "tensor with the wrong shape (Linear instead of Conv1D)", "Gpt2::load",
        ShapeMismatch where "names the tensor, expected [32, 96], found [96, 32]"
        |e| matches!(e, Error::ShapeMismatch { name, expected, found }
            if name.ends_with("h.1.attn.c_attn.weight") && expected == &[32, 96] && found == &[96, 32]),
        |cx| {
            let d = edited(cx, "shape", |t| {
                let x = t.iter_mut().find(|x| x.name.ends_with("h.1.attn.c_attn.weight")).unwrap();
                x.shape = vec![96, 32];
            });
            Gpt2::load(d).map(drop)
        }),
        case!("loader", "a tensor is missing", "Gpt2::load",
            MissingTensor where "names h.0.ln_2.bias" |e| matches!(e, Error::MissingTensor(n) if n == "h.0.ln_2.bias"),
            |cx| Gpt2::load(edited(cx, "missing", |t| t.retain(|x| !x.name.ends_with("h.0.ln_2.bias")))).map(drop)),
        case!("loader", "an unexpected tensor (layer beyond n_layer)", "Gpt2::load", Safetensors, |cx| {
            Gpt2::load(edited(cx, "extra", |t| {
                t.push(Raw { name: "h.7.ln_1.weight".into(), dtype: "F32", shape: vec![1], data: vec![0; 4] })
            }))
            .map(drop)
        }),
        case!("loader", "the same tensor twice (with and without prefix)", "Gpt2::load", Safetensors, |cx| {
            Gpt2::load(edited(cx, "dup", |t| {
                let mut x = t[0].clone();
                x.name = x.name.trim_start_matches("transformer.").to_string();
                t.push(x);
            }))
            .map(drop)
        }),
        case!("loader", "unsupported dtype (I32)", "Gpt2::load",
            UnsupportedDtype where "names the tensor and I32"
            |e| matches!(e, Error::UnsupportedDtype { name, dtype } if name.ends_with("ln_f.bias") && dtype == "I32"),
            |cx| Gpt2::load(edited(cx, "i32", |t| t.last_mut().unwrap().dtype = "I32")).map(drop)),
        case!("loader", "untied lm_head.weight", "Gpt2::load", Safetensors, |cx| {
            Gpt2::load(edited(cx, "untied", |t| {
                let mut head = t[0].clone();
                head.name = "lm_head.weight".into();
                head.data[0] ^= 0x40;
                t.push(head);
            }))
            .map(drop)
        }),
        case!("loader", "metadata config claims 1000 layers", "Gpt2::load_from_bytes",
        MissingTensor where "names the first absent layer, h.2.ln_1.weight"
        |e| matches!(e, Error::MissingTensor(n) if n == "h.2.ln_1.weight"),
        |cx| {
            let mut c = cx.tiny.config().clone();
            c.n_layer = 1000;
            Gpt2::load_from_bytes(&with_meta_config(cx, &serde_json::to_string(&c).unwrap()), None).map(drop)
        }),
        case!("loader", "metadata config claims a terabyte vocabulary", "Gpt2::load_from_bytes", Safetensors, |cx| {
            let mut c = cx.tiny.config().clone();
            c.vocab_size = 1 << 32;
            c.vocab_size -= 1;
            c.n_positions = 1 << 31;
            Gpt2::load_from_bytes(&with_meta_config(cx, &serde_json::to_string(&c).unwrap()), None).map(drop)
        }),
        case!("loader", "metadata config is not JSON", "Gpt2::load_from_bytes", Json, |cx| {
            Gpt2::load_from_bytes(&with_meta_config(cx, "{n_layer: 2"), None).map(drop)
        }),
        case!("loader", "bare file whose config cannot be inferred (n_embd 32)", "Gpt2::load", InvalidConfig, |cx| {
            let d = cx.sub("bare");
            std::fs::copy(fixture("models/tiny/model.safetensors"), d.join("m.safetensors")).unwrap();
            Gpt2::load(d.join("m.safetensors")).map(drop)
        }),
        case!("loader", "explicit config that does not validate", "Gpt2::load_from_bytes", InvalidConfig, |cx| {
            let mut c = cx.tiny.config().clone();
            c.n_head = 3;
            Gpt2::load_from_bytes(&tiny_st(), Some(c)).map(drop)
        }),
        case!("loader", "explicit config of another shape", "Gpt2::load_from_bytes", ShapeMismatch, |cx| {
            let mut c = cx.tiny.config().clone();
            c.n_positions = 32;
            Gpt2::load_from_bytes(&tiny_st(), Some(c)).map(drop)
        }),
        case!("loader", "save below a regular file", "Gpt2::save", Io, |cx| {
            let f = cx.file("blocker", b"x");
            cx.tiny.save(f.join("sub")).map(drop)
        }),
        case!("loader", "save_safetensors into a missing directory", "Gpt2::save_safetensors", NotFound, |cx| {
            cx.tiny.save_safetensors(cx.dir.join("no/such/dir/m.safetensors"), SaveDtype::F16).map(drop)
        }),
    ]
}

fn config_cases() -> Vec<Case> {
    vec![
        case!("config", "config.json is a FIFO", "Gpt2::load",
            Io where "InvalidInput: not a regular file (no hang)" not_regular, |cx| {
            let d = cx.ckpt("cfg-fifo", &tiny_st());
            std::fs::remove_file(d.join("config.json")).unwrap();
            std::fs::rename(fifo(cx, "cfg.fifo"), d.join("config.json")).unwrap();
            Gpt2::load(d).map(drop)
        }),
        case!("config", "config.json is /dev/zero (endless)", "Config::from_json_file",
            Io where "InvalidInput: not a regular file (no endless read)" not_regular,
            |_| Config::from_json_file(Path::new("/dev/zero")).map(drop)),
        case!("config", "n_positions = 2^32 - 1 (an 825 GB model)", "Gpt2::new_random", OutOfMemory where "naming the bytes" |e| matches!(e, Error::OutOfMemory { bytes, .. } if *bytes > 800_000_000_000), |_| {
            let mut c = Config::nano(64, 50257);
            c.n_positions = u32::MAX as usize;
            Gpt2::new_random(c, 0).map(drop)
        }),
        case!("config", "config.json is not JSON", "Gpt2::load", Json, |cx| {
            let d = cx.ckpt("cfg-notjson", &tiny_st());
            std::fs::write(d.join("config.json"), "{ not json").unwrap();
            Gpt2::load(d).map(drop)
        }),
        case!("config", "config.json is not UTF-8", "Config::from_json_file", Json, |cx| {
            Config::from_json_file(&cx.file("latin1.json", b"{\"n_layer\": 2, \"name\": \"\xe9\"}")).map(drop)
        }),
        case!("config", "a field has the wrong type", "Config::from_json_str", Json, |_| {
            Config::from_json_str(r#"{"n_layer": "two"}"#, "<case>").map(drop)
        }),
        case!("config", "n_embd not divisible by n_head", "Gpt2::load", InvalidConfig, |cx| {
            let d = cx.ckpt("cfg-heads", &tiny_st());
            std::fs::write(d.join("config.json"), r#"{"n_embd": 30, "n_head": 4}"#).unwrap();
            Gpt2::load(d).map(drop)
        }),
        case!("config", "zero layers", "Config::from_json_str", InvalidConfig, |_| {
            Config::from_json_str(r#"{"n_layer": 0}"#, "<case>").map(drop)
        }),
        case!("config", "unsupported activation (relu)", "Config::from_json_str", InvalidConfig, |_| {
            Config::from_json_str(r#"{"activation_function": "relu"}"#, "<case>").map(drop)
        }),
        case!("config", "non-positive layer_norm_epsilon", "Config::from_json_str", InvalidConfig, |_| {
            Config::from_json_str(r#"{"layer_norm_epsilon": 0.0}"#, "<case>").map(drop)
        }),
        case!("config", "dropout ≥ 1", "Config::from_json_str", InvalidConfig, |_| {
            Config::from_json_str(r#"{"resid_pdrop": 1.0}"#, "<case>").map(drop)
        }),
        case!("config", "vocab_size above u32::MAX", "Config::validate", InvalidConfig, |_| {
            let mut c = Config::nano(8, 8);
            c.vocab_size = u32::MAX as usize + 1;
            c.validate()
        }),
        case!("config", "sizes whose parameter count overflows usize", "Config::from_json_str", InvalidConfig, |_| {
            Config::from_json_str(r#"{"n_layer": 18446744073709551615, "n_head": 1, "n_embd": 4294967296}"#, "<case>")
                .map(drop)
        }),
        case!("config", "unknown preset", "Config::preset", InvalidArgument, |_| Config::preset("gpt5").map(drop)),
        case!("config", "parameter buffer of the wrong length", "Gpt2::from_params", Shape, |_| {
            Gpt2::from_params(Config::nano(16, 10), vec![0.0; 3]).map(drop)
        }),
        case!("config", "new_random with an invalid config", "Gpt2::new_random", InvalidConfig, |_| {
            let mut c = Config::nano(16, 10);
            c.n_head = 5;
            Gpt2::new_random(c, 0).map(drop)
        }),
        case!("config", "unknown parameter name", "Gpt2::param", MissingTensor, |cx| cx
            .tiny
            .param("h.9.ln_1.weight")
            .map(drop)),
    ]
}

fn tokenizer_cases() -> Vec<Case> {
    vec![
        case!("tokenizer", "id = vocab size (50257)", "Tokenizer::decode",
            TokenOutOfVocab where "token 50257 at position 1"
            |e| matches!(e, Error::TokenOutOfVocab { token: 50257, position: 1, vocab_size: 50257 }),
            |_| tokenizer().decode(&[15496, 50257]).map(drop)),
        case!("tokenizer", "id = u32::MAX", "Tokenizer::decode_bytes", TokenOutOfVocab, |_| {
            tokenizer().decode_bytes(&[u32::MAX]).map(drop)
        }),
        case!("tokenizer", "out-of-vocabulary id, lossy decode", "Tokenizer::decode_lossy", TokenOutOfVocab, |_| {
            tokenizer().decode_lossy(&[70000]).map(drop)
        }),
        case!("tokenizer", "out-of-vocabulary id, token string", "Tokenizer::token_string", TokenOutOfVocab, |_| {
            tokenizer().token_string(50300).map(drop)
        }),
        case!("tokenizer", "ids ending inside a multi-byte character", "Tokenizer::decode",
        InvalidUtf8 where "valid_up_to = 0" |e| matches!(e, Error::InvalidUtf8 { valid_up_to: 0 }),
        |_| {
            let ids = tokenizer().encode("日");
            tokenizer().decode(&ids[..1]).map(drop)
        }),
        case!(
            "tokenizer",
            "word tokenizer: id outside its vocabulary",
            "WordTokenizer::decode",
            TokenOutOfVocab,
            |_| { WordTokenizer::from_corpus(["a b c"], 1)?.decode(&[0, 1000]).map(drop) }
        ),
        case!("tokenizer", "word tokenizer: empty corpus", "WordTokenizer::from_corpus", EmptyInput, |_| {
            WordTokenizer::from_corpus(["  \n "], 1).map(drop)
        }),
        case!("tokenizer", "word tokenizer: min_count 0", "WordTokenizer::from_corpus", InvalidArgument, |_| {
            WordTokenizer::from_corpus(["a"], 0).map(drop)
        }),
        case!("tokenizer", "word tokenizer: duplicate word", "WordTokenizer::from_words", InvalidArgument, |_| {
            WordTokenizer::from_words(vec!["a".into(), "a".into()]).map(drop)
        }),
        case!("tokenizer", "char tokenizer: empty corpus", "CharTokenizer::from_corpus", EmptyInput, |_| {
            CharTokenizer::from_corpus([""]).map(drop)
        }),
    ]
}

fn forward_cases() -> Vec<Case> {
    vec![
        case!("forward", "token id ≥ vocab_size", "Gpt2::logits",
            TokenOutOfVocab where "token 1000 at position 2, vocab 1000"
            |e| matches!(e, Error::TokenOutOfVocab { token: 1000, position: 2, vocab_size: 1000 }),
            |cx| cx.tiny.logits(&[1, 2, 1000]).map(drop)),
        case!("forward", "sequence longer than n_positions", "Gpt2::logits",
            SequenceTooLong where "len 65, n_positions 64"
            |e| matches!(e, Error::SequenceTooLong { len: 65, n_positions: 64 }),
            |cx| cx.tiny.logits(&[1; 65]).map(drop)),
        case!("forward", "empty sequence", "Gpt2::logits", EmptyInput, |cx| cx.tiny.logits(&[]).map(drop)),
        case!("forward", "empty batch [0, 3]", "Gpt2::logits_batch", EmptyInput, |cx| {
            cx.tiny.logits_batch(toks(0, 3, 1).view()).map(drop)
        }),
        case!("forward", "attention mask of another shape", "Gpt2::forward", Shape, |cx| {
            let (t, m) = (toks(2, 3, 1), Array2::from_elem((2, 4), true));
            fwd(&cx.tiny, ForwardInput::new(t.view()).with_mask(m.view()), None)
        }),
        case!("forward", "position ids of another shape", "Gpt2::forward", Shape, |cx| {
            let (t, p) = (toks(2, 3, 1), Array2::<u32>::zeros((1, 3)));
            fwd(&cx.tiny, ForwardInput::new(t.view()).with_positions(p.view()), None)
        }),
        case!("forward", "position id ≥ n_positions", "Gpt2::forward", SequenceTooLong, |cx| {
            let (t, p) = (toks(1, 3, 1), Array2::from_elem((1, 3), 64u32));
            fwd(&cx.tiny, ForwardInput::new(t.view()).with_positions(p.view()), None)
        }),
        case!("forward", "KvCache overflow (4 + 3 > capacity 4)", "Gpt2::forward",
        SequenceTooLong where "len 6, capacity 4" |e| matches!(e, Error::SequenceTooLong { len: 6, n_positions: 4 }),
        |cx| {
            let mut cache = KvCache::new(cx.tiny.config(), 1, 4)?;
            let t = toks(1, 3, 1);
            fwd(&cx.tiny, ForwardInput::new(t.view()), Some(&mut cache))?;
            fwd(&cx.tiny, ForwardInput::new(t.view()), Some(&mut cache))
        }),
        case!("forward", "KvCache batch differs from the input's", "Gpt2::forward", Shape, |cx| {
            let mut cache = KvCache::new(cx.tiny.config(), 1, 8)?;
            fwd(&cx.tiny, ForwardInput::new(toks(2, 1, 1).view()), Some(&mut cache))
        }),
        case!("forward", "KvCache made for another model config", "Gpt2::forward", Shape, |cx| {
            let mut cache = KvCache::new(&Config::nano(64, 1000), 1, 8)?;
            fwd(&cx.tiny, ForwardInput::new(toks(1, 1, 1).view()), Some(&mut cache))
        }),
        case!("forward", "KvCache capacity > n_positions", "KvCache::new", SequenceTooLong, |cx| {
            KvCache::new(cx.tiny.config(), 1, 65).map(drop)
        }),
        case!("forward", "KvCache capacity 0", "KvCache::new", SequenceTooLong, |cx| {
            KvCache::new(cx.tiny.config(), 1, 0).map(drop)
        }),
        case!("forward", "KvCache batch 0", "KvCache::new", InvalidArgument, |cx| {
            KvCache::new(cx.tiny.config(), 0, 8).map(drop)
        }),
    ]
}

fn data_cases() -> Vec<Case> {
    vec![
        case!("data", "shard file is a FIFO", "TokenShard::open",
            Io where "InvalidInput: not a regular file (no hang)" not_regular,
            |cx| TokenShard::open(fifo(cx, "shard.npy")).map(drop)),
        case!("data", "text input is a FIFO", "write_shards",
            Io where "InvalidInput: not a regular file (no hang)" not_regular, |cx| {
            let out = cx.sub("fifo-text-out");
            data::write_shards(&[fifo(cx, "in.txt")], tokenizer(), data::WriterOptions::new(out), &mut |_| {}).map(drop)
        }),
        case!("data", "JSONL input is a FIFO", "write_shards",
            Io where "InvalidInput: not a regular file (no hang)" not_regular, |cx| {
            let out = cx.sub("fifo-jsonl-out");
            data::write_shards(&[fifo(cx, "in.jsonl")], tokenizer(), data::WriterOptions::new(out), &mut |_| {}).map(drop)
        }),
        case!("data", "shard truncated in place after opening (was SIGBUS)", "TokenShard::read_into", Data, |cx| {
            shard_changed_under_reader(cx, "trunc-live.npy", |p| {
                std::fs::OpenOptions::new().write(true).open(p).unwrap().set_len(100).unwrap()
            })
        }),
        case!("data", "shard rewritten in place with more tokens after opening", "TokenShard::read_into", Data, |cx| {
            shard_changed_under_reader(cx, "grow-live.npy", |p| {
                let mut b = std::fs::read(p).unwrap();
                b.extend_from_slice(&[0u8; 64]);
                std::fs::write(p, b).unwrap()
            })
        }),
        case!("data", "shard rewritten in place while a loader reads it", "DataLoader::next_batch", Data, |cx| {
            let p = cx.dir.join("live_train_000000.npy");
            data::save_shard(&p, &[3u16; 200], ShardFormat::Npy)?;
            let mut loader = DataLoader::open(&p, data::Split::Train, LoaderConfig::new(1, 8))?;
            loader.next_batch()?;
            std::fs::write(&p, npy("{'descr': '<u2', 'fortran_order': False, 'shape': (20,), }", &[0u8; 40])).unwrap();
            loader.next_batch().map(drop)
        }),
        case!("data", "shard file missing", "TokenShard::open", NotFound, |cx| {
            TokenShard::open(cx.dir.join("none.npy")).map(drop)
        }),
        case!("data", "empty shard file", "TokenShard::open", Data, |cx| TokenShard::open(cx.file("empty.npy", b""))
            .map(drop)),
        case!("data", ".npy without the NumPy magic", "TokenShard::open", Data, |cx| {
            TokenShard::open(cx.file("nomagic.npy", b"hello world, not numpy")).map(drop)
        }),
        case!("data", ".npy header length past the end", "TokenShard::from_bytes", Data, |_| {
            TokenShard::from_bytes("h.npy", b"\x93NUMPY\x01\x00\xff\xff{".to_vec()).map(drop)
        }),
        case!("data", ".npy truncated token data", "TokenShard::from_bytes", Data, |_| {
            TokenShard::from_bytes("t.npy", npy("{'descr': '<u2', 'fortran_order': False, 'shape': (10,), }", &[0; 6]))
                .map(drop)
        }),
        case!("data", ".npy dtype float32", "TokenShard::from_bytes", Data, |_| {
            TokenShard::from_bytes("f.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", &[0; 8]))
                .map(drop)
        }),
        case!("data", ".npy 2-D shape", "TokenShard::from_bytes", Data, |_| {
            TokenShard::from_bytes(
                "2d.npy",
                npy("{'descr': '<u2', 'fortran_order': False, 'shape': (2, 2), }", &[0; 8]),
            )
            .map(drop)
        }),
        case!("data", ".npy Fortran order", "TokenShard::from_bytes", Data, |_| {
            TokenShard::from_bytes("fo.npy", npy("{'descr': '<u2', 'fortran_order': True, 'shape': (2,), }", &[0; 4]))
                .map(drop)
        }),
        case!("data", ".npy shape claims 2^62 tokens", "TokenShard::from_bytes", Data, |_| {
            let h = format!("{{'descr': '<u2', 'fortran_order': False, 'shape': ({},), }}", 1u64 << 62);
            TokenShard::from_bytes("huge.npy", npy(&h, &[0; 4])).map(drop)
        }),
        case!("data", ".npy unsupported format version 9", "TokenShard::from_bytes", Data, |_| {
            TokenShard::from_bytes("v9.npy", b"\x93NUMPY\x09\x00\x00\x00".to_vec()).map(drop)
        }),
        case!("data", ".bin unsupported version", "TokenShard::from_bytes", Data, |_| {
            TokenShard::from_bytes("v.bin", bin([shard::BIN_MAGIC, 2, 0], &[])).map(drop)
        }),
        case!("data", ".bin Llama-3 magic (uint32 tokens)", "TokenShard::from_bytes", Data, |_| {
            TokenShard::from_bytes("l3.bin", bin([20240801, 1, 0], &[])).map(drop)
        }),
        case!("data", ".bin negative token count", "TokenShard::from_bytes", Data, |_| {
            TokenShard::from_bytes("neg.bin", bin([shard::BIN_MAGIC, 1, -5], &[])).map(drop)
        }),
        case!("data", ".bin count larger than the data", "TokenShard::open", Data, |cx| {
            TokenShard::open(cx.file("short.bin", &bin([shard::BIN_MAGIC, 1, 1000], &[0; 10]))).map(drop)
        }),
        case!("data", ".bin header shorter than 1024 bytes", "TokenShard::from_bytes", Data, |_| {
            TokenShard::from_bytes("hdr.bin", bin([shard::BIN_MAGIC, 1, 0], &[])[..100].to_vec()).map(drop)
        }),
        case!("data", "unknown extension, unknown magic", "TokenShard::open", Data, |cx| {
            TokenShard::open(cx.file("x.dat", b"0123456789")).map(drop)
        }),
        case!("data", "in-memory token ≥ 65536", "TokenShard::from_tokens", TokenOutOfVocab, |_| {
            TokenShard::from_tokens("m", &[1, 65536]).map(drop)
        }),
        case!("data", "read past the end of a shard", "TokenShard::read_into", InvalidArgument, |_| {
            TokenShard::from_tokens("m", &[1, 2, 3])?.read_into(2, &mut [0; 2])
        }),
        case!("data", "loader without shards", "DataLoader::new", InvalidArgument, |_| {
            DataLoader::new(vec![], LoaderConfig::new(1, 4)).map(drop)
        }),
        case!("data", "loader batch size 0", "DataLoader::new", InvalidArgument, |_| {
            DataLoader::new(shards_of(&[100]), LoaderConfig::new(0, 4)).map(drop)
        }),
        case!("data", "loader rank ≥ world size", "DataLoader::new", InvalidArgument, |_| {
            DataLoader::new(shards_of(&[100]), LoaderConfig::new(1, 4).with_rank(2, 2)).map(drop)
        }),
        case!("data", "loader B·T·W overflows", "DataLoader::new", InvalidArgument, |_| {
            DataLoader::new(shards_of(&[100]), LoaderConfig::new(usize::MAX, 2)).map(drop)
        }),
        case!("data", "shards too small for one batch", "DataLoader::new", InvalidArgument, |_| {
            DataLoader::new(shards_of(&[8, 8]), LoaderConfig::new(2, 4)).map(drop)
        }),
        case!("data", "batch token ≥ vocab_size", "BatchSource::next_batch", TokenOutOfVocab, |_| {
            let s = TokenShard::from_tokens("m", &[1, 2, 3, 4, 900, 5])?;
            let mut l = DataLoader::new(vec![s], LoaderConfig::new(1, 5).with_vocab_size(100))?;
            l.next_batch().map(drop)
        }),
        case!("data", "restore from malformed state JSON", "BatchSource::restore", Json, |_| {
            let mut l = DataLoader::new(shards_of(&[100]), LoaderConfig::new(1, 4))?;
            l.restore(serde_json::json!({"kind": 5}))
        }),
        case!("data", "restore a state saved with other settings", "BatchSource::restore", InvalidArgument, |_| {
            let a = DataLoader::new(shards_of(&[100]), LoaderConfig::new(1, 4))?;
            let mut b = DataLoader::new(shards_of(&[100]), LoaderConfig::new(2, 4))?;
            b.restore(a.state())
        }),
        case!("data", "restore a state for other data", "BatchSource::restore", InvalidArgument, |_| {
            let a = DataLoader::new(shards_of(&[100]), LoaderConfig::new(1, 4))?;
            let mut b = DataLoader::new(shards_of(&[101]), LoaderConfig::new(1, 4))?;
            b.restore(a.state())
        }),
        case!("data", "seek past the data", "DataLoader::seek", InvalidArgument, |_| {
            let mut l = DataLoader::new(shards_of(&[100]), LoaderConfig::new(1, 4))?;
            l.seek(data::LoaderPosition { epoch: 0, shard: 0, window: 1000 })
        }),
        case!("data", "directory without shards of the split", "data::list_shards", Data, |cx| {
            data::list_shards(&cx.sub("noshards"), data::Split::Val).map(drop)
        }),
        case!("data", "shard directory missing", "DataLoader::open", NotFound, |cx| {
            DataLoader::open(cx.dir.join("nothing-here.npy"), data::Split::Train, LoaderConfig::new(1, 4)).map(drop)
        }),
        case!("data", "writer shard_size 0", "ShardWriter::new", InvalidArgument, |cx| {
            let mut o = data::WriterOptions::new(cx.sub("w0"));
            o.shard_size = 0;
            ShardWriter::new(o).map(drop)
        }),
        case!("data", "writer prefix with a path separator", "ShardWriter::new", InvalidArgument, |cx| {
            let mut o = data::WriterOptions::new(cx.sub("wp"));
            o.prefix = "../x".into();
            ShardWriter::new(o).map(drop)
        }),
        case!("data", "writer EOT that does not fit uint16", "ShardWriter::new", InvalidArgument, |cx| {
            let mut o = data::WriterOptions::new(cx.sub("weot"));
            o.eot = Some(70000);
            ShardWriter::new(o).map(drop)
        }),
        case!("data", "writer directory already holds shards", "ShardWriter::new", InvalidArgument, |cx| {
            let d = cx.sub("wexists");
            data::save_shard(d.join("shard_train_000000.npy"), &[1, 2], ShardFormat::Npy)?;
            ShardWriter::new(data::WriterOptions::new(d)).map(drop)
        }),
        case!("data", "writer token ≥ 65536", "ShardWriter::push_document", TokenOutOfVocab, |cx| {
            ShardWriter::new(data::WriterOptions::new(cx.sub("wtok")))?.push_document(&[1, 70000])
        }),
        case!("data", "write_shards without inputs", "data::write_shards", EmptyInput, |cx| {
            let none: [&Path; 0] = [];
            data::write_shards(&none, tokenizer(), data::WriterOptions::new(cx.sub("wnone")), &mut |_| {}).map(drop)
        }),
        case!("data", "write_shards input missing", "data::write_shards", NotFound, |cx| {
            let input = cx.dir.join("missing.txt");
            data::write_shards(&[input], tokenizer(), data::WriterOptions::new(cx.sub("wmiss")), &mut |_| {}).map(drop)
        }),
        case!("data", "JSONL line 2 is not JSON", "data::write_shards",
            Data where "line 2" |e| matches!(e, Error::Data { line: 2, .. }),
            |cx| shards_from(cx, "j-bad", "jsonl", b"{\"text\": \"ok\"}\n{\"text\": \"unterminated}\n")),
        case!("data", "JSONL record without the text field", "data::write_shards",
            Data where "line 3 (blank line 2 counted)" |e| matches!(e, Error::Data { line: 3, .. }),
            |cx| shards_from(cx, "j-nofield", "jsonl", b"{\"text\": \"ok\"}\n\n{\"body\": \"x\"}\n")),
        case!("data", "JSONL text field is not a string", "data::write_shards",
            Data where "line 1" |e| matches!(e, Error::Data { line: 1, .. }),
            |cx| shards_from(cx, "j-num", "jsonl", b"{\"text\": 42}\n")),
        case!("data", "JSONL line is invalid UTF-8", "data::write_shards",
            Data where "line 1" |e| matches!(e, Error::Data { line: 1, .. }),
            |cx| shards_from(cx, "j-utf8", "jsonl", b"{\"text\": \"\xff\xfe\"}\n")),
        case!("data", "text input with invalid UTF-8 on line 3", "data::write_shards",
            Data where "line 3" |e| matches!(e, Error::Data { line: 3, .. }),
            |cx| shards_from(cx, "t-utf8", "txt", b"one\ntwo\nth\xffree\n")),
        case!("data", "unknown shard format name", "ShardFormat::from_str", InvalidArgument, |_| {
            "csv".parse::<ShardFormat>().map(drop)
        }),
        case!("data", ".bin header for ≥ 2^31 tokens", "data::shard::bin_header", InvalidArgument, |_| {
            shard::bin_header(1 << 31).map(drop)
        }),
        case!("data", "unigram baseline with vocab_size 0", "data::unigram_cross_entropy", InvalidArgument, |_| {
            data::unigram_cross_entropy(&[0], &[0], 0).map(drop)
        }),
        case!("data", "unigram baseline with no validation tokens", "data::unigram_cross_entropy", EmptyInput, |_| {
            data::unigram_cross_entropy(&[0], &[], 4).map(drop)
        }),
        case!("data", "unigram baseline token ≥ vocab_size", "data::unigram_cross_entropy", TokenOutOfVocab, |_| {
            data::unigram_cross_entropy(&[0], &[7], 4).map(drop)
        }),
    ]
}

fn inspect_cases() -> Vec<Case> {
    vec![
        case!("inspect", "attention maps of no tokens", "inspect::attention_maps", EmptyInput, |cx| {
            inspect::attention_maps(&cx.tiny, &[]).map(drop)
        }),
        case!(
            "inspect",
            "attention maps with an out-of-vocabulary token",
            "inspect::attention_maps",
            TokenOutOfVocab,
            |cx| { inspect::attention_maps(&cx.tiny, &[5000]).map(drop) }
        ),
        case!("inspect", "SDPA with mismatched widths", "inspect::scaled_dot_product_attention", Shape, |_| {
            let (q, k) = (Array2::<f32>::zeros((2, 4)), Array2::<f32>::zeros((2, 3)));
            inspect::scaled_dot_product_attention(q.view(), k.view(), k.view(), None).map(drop)
        }),
        case!(
            "inspect",
            "SDPA mask row hiding every key",
            "inspect::scaled_dot_product_attention",
            InvalidArgument,
            |_| {
                let q = Array2::<f32>::zeros((2, 4));
                let m = Array2::from_shape_vec((2, 2), vec![true, false, false, false]).unwrap();
                inspect::scaled_dot_product_attention(q.view(), q.view(), q.view(), Some(m.view())).map(drop)
            }
        ),
        case!(
            "inspect",
            "attention module for a layer beyond n_layer",
            "CausalSelfAttention::from_model",
            InvalidArgument,
            |cx| { CausalSelfAttention::from_model(&cx.tiny, 2).map(drop) }
        ),
        case!(
            "inspect",
            "attention module with n_embd % n_head ≠ 0",
            "CausalSelfAttention::new_random",
            InvalidArgument,
            |_| {
                CausalSelfAttention::new_random(AttentionConfig { n_embd: 10, n_head: 3, block_size: 4 }, 0).map(drop)
            }
        ),
        case!(
            "inspect",
            "attention module input longer than block_size",
            "CausalSelfAttention::forward",
            SequenceTooLong,
            |_| {
                let m = CausalSelfAttention::new_random(AttentionConfig { n_embd: 4, n_head: 2, block_size: 2 }, 0)?;
                m.forward(Array3::<f32>::zeros((1, 3, 4)).view()).map(drop)
            }
        ),
        case!("inspect", "heatmap with a NaN", "inspect::heatmap_png", InvalidArgument, |_| {
            inspect::heatmap_png(Array2::from_elem((2, 2), f32::NAN).view(), 4).map(drop)
        }),
        case!("inspect", "heatmap too large to render", "inspect::heatmap_png", InvalidArgument, |_| {
            inspect::heatmap_png(Array2::<f32>::zeros((2, 2)).view(), 1 << 30).map(drop)
        }),
        case!("inspect", "heatmap cell of usize::MAX pixels", "inspect::heatmap_png", InvalidArgument, |_| {
            inspect::heatmap_png(Array2::<f32>::zeros((2, 2)).view(), usize::MAX).map(drop)
        }),
        case!(
            "inspect",
            "heatmap whose side overflows usize",
            "inspect::render::heatmap_pixels",
            InvalidArgument,
            |_| { inspect::render::heatmap_pixels(Array2::<f32>::zeros((3, 1)).view(), usize::MAX / 2).map(drop) }
        ),
        case!("inspect", "attention view head out of range", "AttentionView::map", InvalidArgument, |cx| {
            let v = AttentionView::from_text(&cx.tiny_bpe(), tokenizer(), "Hello world")?;
            v.map(0, 99).map(drop)
        }),
        case!("inspect", "attention view of empty text", "AttentionView::from_text", EmptyInput, |cx| {
            AttentionView::from_text(&cx.tiny_bpe(), tokenizer(), "").map(drop)
        }),
    ]
}

impl Ctx {
    /// The tiny model with the real 50257-token vocabulary (for text-based entry points).
    fn tiny_bpe(&self) -> Gpt2 {
        static M: OnceLock<Gpt2> = OnceLock::new();
        M.get_or_init(|| Gpt2::load(fixture("models/tiny-bpe")).unwrap()).clone()
    }
}

/// HellaSwag JSONL, losses, perplexity windows, completion scoring (`src/eval`).
fn eval_cases() -> Vec<Case> {
    use gpt2::eval::hellaswag::{parse_hellaswag, ReadOptions};
    use gpt2::eval::{labels_from_hf, read_hellaswag, Evaluator, HellaSwagStyle, SlidingWindow};
    fn hs(line: &str) -> gpt2::Result<()> {
        parse_hellaswag(line.as_bytes(), Path::new("hs.jsonl"), ReadOptions::default()).map(drop)
    }
    vec![
        case!("eval", "HellaSwag file is a FIFO", "read_hellaswag",
            Io where "InvalidInput: not a regular file (no hang)" not_regular,
            |cx| read_hellaswag(fifo(cx, "hs.jsonl"), ReadOptions::default()).map(drop)),
        case!("eval", "sliding-window stream of one token", "SlidingWindowStream::finish", EmptyInput, |cx| {
            let ev = Evaluator::new(&cx.tiny);
            let mut s = ev.sliding_window_stream(SlidingWindow::new(8, 4))?;
            s.push(&[5])?;
            s.finish().map(drop)
        }),
        case!(
            "eval",
            "sliding-window stream: token out of vocabulary",
            "SlidingWindowStream::push",
            TokenOutOfVocab,
            |cx| {
                let ev = Evaluator::new(&cx.tiny);
                let mut s = ev.sliding_window_stream(SlidingWindow::new(8, 4))?;
                s.push(&[1, 2, 3])?;
                s.push(&[4, 1_000_000])
            }
        ),
        case!("eval", "sliding-window stream: stride 0", "Evaluator::sliding_window_stream", InvalidArgument, |cx| {
            Evaluator::new(&cx.tiny).sliding_window_stream(SlidingWindow::new(8, 0)).map(drop)
        }),
        case!("eval", "NaN in ln_f.weight", "Evaluator::token_nlls", NonFinite, |cx| {
            Evaluator::new(&poisoned(&cx.tiny, |l| l.ln_f_w, f32::NAN)).token_nlls(&[1, 2, 3]).map(drop)
        }),
        case!("eval", "Inf in wpe", "Evaluator::sliding_window", NonFinite, |cx| {
            let m = poisoned(&cx.tiny, |l| l.wpe, f32::INFINITY);
            let r = Evaluator::new(&m).sliding_window(&[1, 2, 3, 4, 5, 6], SlidingWindow::new(4, 2)).map(drop);
            r
        }),
        case!("eval", "per-token NLL of an empty text", "Evaluator::token_nlls", EmptyInput, |cx| {
            Evaluator::new(&cx.tiny).token_nlls(&[]).map(drop)
        }),
        case!("eval", "per-token NLL of one token", "Evaluator::token_nlls", EmptyInput, |cx| {
            Evaluator::new(&cx.tiny).token_nlls(&[5]).map(drop)
        }),
        case!("eval", "evaluation of no sequences", "Evaluator::evaluate", EmptyInput, |cx| {
            Evaluator::new(&cx.tiny).evaluate::<Vec<u32>>(&[]).map(drop)
        }),
        case!("eval", "sequence longer than n_positions", "Evaluator::evaluate", SequenceTooLong, |cx| {
            Evaluator::new(&cx.tiny).evaluate(&[vec![1u32; 200]]).map(drop)
        }),
        case!("eval", "token out of vocabulary", "Evaluator::token_nlls", TokenOutOfVocab, |cx| {
            Evaluator::new(&cx.tiny).token_nlls(&[1, 5000]).map(drop)
        }),
        case!("eval", "labels shorter than the inputs", "Evaluator::cross_entropy", Shape, |cx| {
            Evaluator::new(&cx.tiny).cross_entropy(&[1, 2, 3], &[None]).map(drop)
        }),
        case!("eval", "every label ignored", "Evaluator::cross_entropy", EmptyInput, |cx| {
            Evaluator::new(&cx.tiny).cross_entropy(&[1, 2, 3], &[None, None, None]).map(drop)
        }),
        case!("eval", "HF label below -100", "eval::labels_from_hf", InvalidArgument, |_| labels_from_hf(&[3, -5])
            .map(drop)),
        case!("eval", "batch size 0", "Evaluator::with_batch_size", InvalidArgument, |cx| {
            Evaluator::new(&cx.tiny).with_batch_size(0).map(drop)
        }),
        case!("eval", "stride larger than max_length", "Evaluator::sliding_window", InvalidArgument, |cx| {
            Evaluator::new(&cx.tiny).sliding_window(&[1u32; 50], SlidingWindow::new(16, 32)).map(drop)
        }),
        case!("eval", "max_length beyond n_positions", "Evaluator::sliding_window", InvalidArgument, |cx| {
            Evaluator::new(&cx.tiny).sliding_window(&[1u32; 50], SlidingWindow::new(4096, 64)).map(drop)
        }),
        case!("eval", "completion scoring with an empty context", "Evaluator::score_completions", EmptyInput, |cx| {
            Evaluator::new(&cx.tiny).score_completions(&[], &[vec![1u32]]).map(drop)
        }),
        case!("eval", "completion scoring with an empty candidate", "Evaluator::score_completions", EmptyInput, |cx| {
            Evaluator::new(&cx.tiny).score_completions(&[1], &[Vec::<u32>::new()]).map(drop)
        }),
        case!("eval", "HellaSwag line that is not JSON", "eval::parse_hellaswag", Data where "line 1" |e| matches!(e, Error::Data { line: 1, .. }), |_| hs("{not json")),
        case!("eval", "HellaSwag example with 3 endings", "eval::parse_hellaswag", Data, |_| hs(
            r#"{"ctx":"a","ctx_a":"a","ctx_b":"","activity_label":"x","endings":["1","2","3"],"label":0}"#
        )),
        case!("eval", "HellaSwag label out of range", "eval::parse_hellaswag", Data, |_| hs(
            r#"{"ctx":"a","ctx_a":"a","ctx_b":"","activity_label":"x","endings":["1","2","3","4"],"label":7}"#
        )),
        case!("eval", "HellaSwag line missing endings", "eval::parse_hellaswag", Data, |_| hs(
            r#"{"ctx":"a","ctx_a":"a","ctx_b":"","activity_label":"x","label":0}"#
        )),
        case!("eval", "HellaSwag example longer than the context", "Evaluator::hellaswag", Data where "its line number (3)" |e| matches!(e, Error::Data { line: 3, .. }), |cx| {
            let line = r#"{"activity_label":"A","ctx_a":"x","ctx_b":"","ctx":"CTX","endings":["a","b","c","d"],"label":0}"#;
            let text = format!("{}\n{}\n{}\n", line.replace("CTX", "Hi."), line.replace("CTX", "Ho."), line.replace("CTX", &"word ".repeat(300)));
            let data = parse_hellaswag(text.as_bytes(), Path::new("hs.jsonl"), ReadOptions::default())?;
            Evaluator::new(&cx.tiny_bpe()).hellaswag(tokenizer(), &data.examples, HellaSwagStyle::Completion).map(drop)
        }),
        case!("eval", "HellaSwag on NaN weights", "Evaluator::hellaswag", NonFinite, |cx| {
            let data = read_hellaswag(
                fixture("data/hellaswag_mini.jsonl"),
                ReadOptions { skip_malformed: false, limit: Some(2) },
            )?;
            let m = poisoned(&cx.tiny_bpe(), |l| l.ln_f_w, f32::NAN);
            let r = Evaluator::new(&m).hellaswag(tokenizer(), &data.examples, HellaSwagStyle::Completion).map(drop);
            r
        }),
        case!("eval", "HellaSwag file that does not exist", "eval::read_hellaswag", NotFound, |_| {
            read_hellaswag("/nonexistent/hellaswag.jsonl", ReadOptions::default()).map(drop)
        }),
        case!("eval", "per-text metrics of an empty text", "LossStats::per_text", EmptyInput, |_| {
            gpt2::eval::LossStats { sum_nll: 3.0, tokens: 2 }.per_text("").map(drop)
        }),
    ]
}

/// Sampling options, stop conditions, prompts (`src/generate`).
fn generate_cases() -> Vec<Case> {
    use gpt2::generate::{generate, generate_batch, GenerateConfig, Sampler, SamplingParams};
    fn gen(cx: &Ctx, prompt: &[u32], cfg: GenerateConfig) -> gpt2::Result<()> {
        generate(&cx.tiny, tokenizer(), prompt, &cfg, None).map(drop)
    }
    fn sampling(p: SamplingParams) -> GenerateConfig {
        GenerateConfig { sampling: p, max_new_tokens: 4, ..Default::default() }
    }
    vec![
        case!("generate", "negative temperature", "generate::generate", InvalidArgument, |cx| gen(
            cx,
            &[1],
            sampling(SamplingParams { temperature: -1.0, ..Default::default() })
        )),
        case!("generate", "NaN temperature", "generate::Sampler::new", InvalidArgument, |_| {
            Sampler::new(SamplingParams { temperature: f32::NAN, ..Default::default() }, 0).map(drop)
        }),
        case!("generate", "top_k = 0", "generate::generate", InvalidArgument, |cx| gen(
            cx,
            &[1],
            sampling(SamplingParams { top_k: Some(0), ..Default::default() })
        )),
        case!("generate", "top_p = 0", "generate::generate", InvalidArgument, |cx| gen(
            cx,
            &[1],
            sampling(SamplingParams { top_p: Some(0.0), ..Default::default() })
        )),
        case!("generate", "top_p > 1", "generate::generate", InvalidArgument, |cx| gen(
            cx,
            &[1],
            sampling(SamplingParams { top_p: Some(1.01), ..Default::default() })
        )),
        case!("generate", "min_p < 0", "generate::generate", InvalidArgument, |cx| gen(
            cx,
            &[1],
            sampling(SamplingParams { min_p: Some(-0.5), ..Default::default() })
        )),
        case!("generate", "repetition penalty 0", "generate::generate", InvalidArgument, |cx| gen(
            cx,
            &[1],
            sampling(SamplingParams { repetition_penalty: 0.0, ..Default::default() })
        )),
        case!("generate", "max_new_tokens = 0", "generate::generate", InvalidArgument, |cx| gen(
            cx,
            &[1],
            GenerateConfig { max_new_tokens: 0, ..Default::default() }
        )),
        case!("generate", "num_samples = 0", "generate::generate", InvalidArgument, |cx| gen(
            cx,
            &[1],
            GenerateConfig { num_samples: 0, ..Default::default() }
        )),
        case!("generate", "empty stop string", "generate::generate", InvalidArgument, |cx| gen(
            cx,
            &[1],
            GenerateConfig { stop_strings: vec![String::new()], ..Default::default() }
        )),
        case!("generate", "empty prompt", "generate::generate", EmptyInput, |cx| gen(
            cx,
            &[],
            GenerateConfig::default()
        )),
        case!("generate", "prompt token out of vocabulary", "generate::generate", TokenOutOfVocab, |cx| gen(
            cx,
            &[1, 5000],
            GenerateConfig::default()
        )),
        case!("generate", "prompt + max_new_tokens beyond n_positions", "generate::generate", SequenceTooLong, |cx| {
            gen(cx, &[1; 100], GenerateConfig { max_new_tokens: 100, ..Default::default() })
        }),
        case!("generate", "batch of no prompts", "generate::generate_batch", EmptyInput, |cx| {
            generate_batch::<Vec<u32>>(&cx.tiny, tokenizer(), &[], &GenerateConfig::default(), None).map(drop)
        }),
        case!("generate", "batch with one empty prompt", "generate::generate_batch", EmptyInput, |cx| {
            generate_batch(&cx.tiny, tokenizer(), &[vec![1u32], vec![]], &GenerateConfig::default(), None).map(drop)
        }),
        case!("generate", "top_p NaN", "generate::generate", InvalidArgument, |cx| gen(
            cx,
            &[1],
            sampling(SamplingParams { top_p: Some(f32::NAN), ..Default::default() })
        )),
        case!("generate", "top_p = 1.5", "generate::generate", InvalidArgument, |cx| gen(
            cx,
            &[1],
            sampling(SamplingParams { top_p: Some(1.5), ..Default::default() })
        )),
        case!("generate", "min_p NaN", "generate::generate", InvalidArgument, |cx| gen(
            cx,
            &[1],
            sampling(SamplingParams { min_p: Some(f32::NAN), ..Default::default() })
        )),
        case!("generate", "min_p = -3", "generate::generate", InvalidArgument, |cx| gen(
            cx,
            &[1],
            sampling(SamplingParams { min_p: Some(-3.0), ..Default::default() })
        )),
        case!("generate", "NaN in ln_f.weight (greedy)", "generate::generate", NonFinite where "at the prefill's logits (step 0)" |e| matches!(e, Error::NonFinite { step: 0, .. }), |cx| {
            let m = poisoned(&cx.tiny, |l| l.ln_f_w, f32::NAN);
            let cfg = GenerateConfig { sampling: SamplingParams::greedy(), ..sampling(SamplingParams::default()) };
            generate(&m, tokenizer(), &[1, 2], &cfg, None).map(drop)
        }),
        case!("generate", "NaN in ln_f.weight (sampling)", "generate::generate", NonFinite, |cx| {
            let m = poisoned(&cx.tiny, |l| l.ln_f_w, f32::NAN);
            generate(&m, tokenizer(), &[1, 2], &sampling(SamplingParams::default()), None).map(drop)
        }),
        case!("generate", "Inf in wpe at a generated position", "generate::generate", NonFinite where "at a decode step (step ≥ 1)" |e| matches!(e, Error::NonFinite { step, .. } if *step >= 1), |cx| {
            // position 3 is first seen by the third decode step: the prompt's logits are fine
            let n_embd = cx.tiny.config().n_embd;
            let m = poisoned(&cx.tiny, |l| l.wpe + 3 * n_embd, f32::INFINITY);
            let cfg = GenerateConfig { eos_token_id: None, ..sampling(SamplingParams::greedy()) };
            generate(&m, tokenizer(), &[1, 2], &cfg, None).map(drop)
        }),
        case!("generate", "num_beams = 0", "generate::generate", InvalidArgument, |cx| gen(
            cx,
            &[1],
            GenerateConfig::beam(0).max_new_tokens(4)
        )),
        case!(
            "generate",
            "beam search returning more sequences than beams",
            "generate::generate",
            InvalidArgument,
            |cx| { gen(cx, &[1], GenerateConfig::beam(2).num_samples(3).max_new_tokens(4)) }
        ),
        case!("generate", "beam search with sampling settings", "generate::generate", InvalidArgument, |cx| gen(
            cx,
            &[1],
            GenerateConfig { sampling: SamplingParams::sampling(0.8), ..GenerateConfig::beam(2).max_new_tokens(4) }
        )),
        case!("generate", "beam search with a stop string", "generate::generate", InvalidArgument, |cx| gen(
            cx,
            &[1],
            GenerateConfig { stop_strings: vec!["\n".into()], ..GenerateConfig::beam(2).max_new_tokens(4) }
        )),
        case!("generate", "NaN length penalty", "generate::generate", InvalidArgument, |cx| gen(
            cx,
            &[1],
            GenerateConfig::beam(2).length_penalty(f32::NAN).max_new_tokens(4)
        )),
        case!("generate", "beam search with a token stream", "generate::generate_with", InvalidArgument, |cx| {
            let mut on_token = |_: &gpt2::generate::TokenEvent<'_>| {};
            let hooks = gpt2::generate::Hooks { on_token: Some(&mut on_token), ..Default::default() };
            gpt2::generate::generate_with(
                &cx.tiny,
                tokenizer(),
                &[[1u32]],
                &GenerateConfig::beam(2).max_new_tokens(4),
                hooks,
            )
            .map(drop)
        }),
        case!("generate", "NaN in ln_f.weight (beam search)", "generate::generate", NonFinite, |cx| {
            let m = poisoned(&cx.tiny, |l| l.ln_f_w, f32::NAN);
            generate(&m, tokenizer(), &[1, 2], &GenerateConfig::beam(2).max_new_tokens(4), None).map(drop)
        }),
        case!("generate", "cache reorder with too few indices", "KvCache::reorder_rows", Shape, |cx| {
            gpt2::KvCache::new(cx.tiny.config(), 2, 4)?.reorder_rows(&[0])
        }),
        case!(
            "generate",
            "cache reorder from a row that does not exist",
            "KvCache::reorder_rows",
            InvalidArgument,
            |cx| { gpt2::KvCache::new(cx.tiny.config(), 2, 4)?.reorder_rows(&[0, 2]) }
        ),
    ]
}

/// Optimizer and schedule settings, trainer inputs, checkpoints (`src/train`).
fn train_cases() -> Vec<Case> {
    use gpt2::train::{
        forward_backward, Activations, AdamWConfig, Checkpoint, LrSchedule, ParamSelection, Trainer, TrainerConfig,
    };
    fn trainer(cx: &Ctx, cfg: TrainerConfig) -> gpt2::Result<()> {
        Trainer::new(cx.tiny.clone(), cfg).map(drop)
    }
    fn opt(o: AdamWConfig) -> TrainerConfig {
        TrainerConfig { optimizer: o, ..Default::default() }
    }
    vec![
        case!("train", "β₁ = 1", "Trainer::new", InvalidArgument, |cx| trainer(
            cx,
            opt(AdamWConfig { beta1: 1.0, ..Default::default() })
        )),
        case!("train", "β₂ < 0", "Trainer::new", InvalidArgument, |cx| trainer(
            cx,
            opt(AdamWConfig { beta2: -0.1, ..Default::default() })
        )),
        case!("train", "ε = 0", "Trainer::new", InvalidArgument, |cx| trainer(
            cx,
            opt(AdamWConfig { eps: 0.0, ..Default::default() })
        )),
        case!("train", "negative weight decay", "Trainer::new", InvalidArgument, |cx| trainer(
            cx,
            opt(AdamWConfig { weight_decay: -1.0, ..Default::default() })
        )),
        case!("train", "NaN learning rate", "Trainer::new", InvalidArgument, |cx| trainer(
            cx,
            TrainerConfig { schedule: LrSchedule::Constant(f64::NAN), ..Default::default() }
        )),
        case!("train", "cosine decay ending before warmup", "Trainer::new", InvalidArgument, |cx| trainer(
            cx,
            TrainerConfig {
                schedule: LrSchedule::WarmupCosine { max_lr: 1e-3, min_lr: 1e-4, warmup_steps: 10, decay_steps: 5 },
                ..Default::default()
            }
        )),
        case!("train", "grad_accum = 0", "Trainer::new", InvalidArgument, |cx| trainer(
            cx,
            TrainerConfig { grad_accum: 0, ..Default::default() }
        )),
        case!("train", "selection pattern matching nothing", "Trainer::new", InvalidArgument, |cx| trainer(
            cx,
            TrainerConfig { selection: ParamSelection::none().include("h.9.nothing"), ..Default::default() }
        )),
        case!("train", "gradient buffer of the wrong length", "train::forward_backward", Shape, |cx| {
            let (x, y) = (Array2::<u32>::zeros((1, 4)), Array2::<i32>::zeros((1, 4)));
            forward_backward(&cx.tiny, &mut Activations::new(), &mut [0.0; 3], x.view(), y.view(), 1.0).map(drop)
        }),
        case!("train", "targets of a different shape", "train::forward_backward", Shape, |cx| {
            let (x, y) = (Array2::<u32>::zeros((1, 4)), Array2::<i32>::zeros((1, 3)));
            let mut g = vec![0.0; cx.tiny.num_parameters()];
            forward_backward(&cx.tiny, &mut Activations::new(), &mut g, x.view(), y.view(), 1.0).map(drop)
        }),
        case!("train", "every target ignored", "train::forward_backward", EmptyInput, |cx| {
            let (x, y) = (Array2::<u32>::zeros((1, 4)), Array2::<i32>::from_elem((1, 4), -1));
            let mut g = vec![0.0; cx.tiny.num_parameters()];
            forward_backward(&cx.tiny, &mut Activations::new(), &mut g, x.view(), y.view(), 1.0).map(drop)
        }),
        case!("train", "training batch longer than n_positions", "train::forward_backward", SequenceTooLong, |cx| {
            let (x, y) = (Array2::<u32>::zeros((1, 200)), Array2::<i32>::zeros((1, 200)));
            let mut g = vec![0.0; cx.tiny.num_parameters()];
            forward_backward(&cx.tiny, &mut Activations::new(), &mut g, x.view(), y.view(), 1.0).map(drop)
        }),
        case!("train", "checkpoint directory that does not exist", "Checkpoint::load", NotFound, |_| {
            Checkpoint::load("/nonexistent/checkpoint").map(drop)
        }),
        case!("train", "checkpoint pointer naming a path outside", "Checkpoint::load", Data, |cx| {
            let d = cx.sub("pointer-outside");
            std::fs::write(d.join("latest"), "../../etc\n").unwrap();
            Checkpoint::load(&d).map(drop)
        }),
        case!("train", "checkpoint pointer naming a missing step", "Checkpoint::load", NotFound, |cx| {
            let d = cx.sub("pointer-missing");
            std::fs::write(d.join("latest"), "step-00000009\n").unwrap();
            Checkpoint::load(&d).map(drop)
        }),
        case!("train", "NaN gradient clip", "Trainer::new", InvalidArgument, |cx| trainer(
            cx,
            TrainerConfig { grad_clip: Some(f64::NAN), ..Default::default() }
        )),
        case!("train", "negative gradient clip", "Trainer::new", InvalidArgument, |cx| trainer(
            cx,
            TrainerConfig { grad_clip: Some(-1.0), ..Default::default() }
        )),
    ]
}

/// Knowledge-editing requests and settings (`src/edit`).
fn edit_cases() -> Vec<Case> {
    use gpt2::edit::{edit, EditConfig, EditRequest};
    fn run(cx: &Ctx, req: EditRequest, cfg: EditConfig) -> gpt2::Result<()> {
        edit(&mut cx.tiny_bpe(), tokenizer(), &[req], &cfg).map(drop)
    }
    fn ok() -> EditRequest {
        EditRequest::new("{} is in", "Paris", "France")
    }
    vec![
        case!("edit", "prompt template without {}", "edit::edit", InvalidArgument, |cx| run(
            cx,
            EditRequest::new("is located in", "X", "Rome"),
            EditConfig::default()
        )),
        case!("edit", "empty target", "edit::edit", InvalidArgument, |cx| run(
            cx,
            EditRequest::new("{} is in", "X", " "),
            EditConfig::default()
        )),
        case!("edit", "empty subject", "edit::edit", InvalidArgument, |cx| run(
            cx,
            EditRequest::new("{} is in", "", "Rome"),
            EditConfig::default()
        )),
        case!("edit", "module pattern matching nothing", "edit::edit", InvalidArgument, |cx| run(
            cx,
            ok(),
            EditConfig { module_template: "h.{}.mlp.nope".into(), ..Default::default() }
        )),
        case!("edit", "layer beyond n_layer", "edit::edit", InvalidArgument, |cx| run(
            cx,
            ok(),
            EditConfig { layers: vec![9], ..Default::default() }
        )),
        case!("edit", "learning rate ≤ 0", "edit::edit", InvalidArgument, |cx| run(
            cx,
            ok(),
            EditConfig { lr: 0.0, ..Default::default() }
        )),
        case!("edit", "NaN norm constraint", "edit::edit", InvalidArgument, |cx| run(
            cx,
            ok(),
            EditConfig { norm_constraint: Some(f32::NAN), ..Default::default() }
        )),
        case!("edit", "no requests", "edit::edit", InvalidArgument, |cx| {
            edit(&mut cx.tiny_bpe(), tokenizer(), &[], &EditConfig::default()).map(drop)
        }),
    ]
}

// ------------------------------------------------------------------ runner

fn run_section(section: &str) {
    let (_, cases) = all_cases().into_iter().find(|(s, _)| *s == section).unwrap();
    if cases.is_empty() {
        return;
    }
    let cx = Ctx::new(section);
    let mut failures = Vec::new();
    for c in &cases {
        assert_eq!(c.section, section, "case `{}` is filed under the wrong section", c.name);
        let outcome = catch_unwind(AssertUnwindSafe(|| (c.run)(&cx)));
        let problem = match outcome {
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Some(format!("PANICKED: {msg}"))
            }
            Ok(Ok(())) => Some("returned Ok".to_string()),
            Ok(Err(e)) if variant(&e) != c.expect => Some(format!("got {} ({e})", variant(&e))),
            Ok(Err(e)) if std::env::var_os("GPT2_MATRIX_VERBOSE").is_some() => {
                eprintln!("[{section}] {} → {e}", c.name);
                c.detail.filter(|(_, pred)| !pred(&e)).map(|(what, _)| format!("right variant but not {what}: {e:?}"))
            }
            Ok(Err(e)) => match c.detail {
                Some((what, pred)) if !pred(&e) => Some(format!("right variant but not {what}: {e:?}")),
                _ => None,
            },
        };
        if let Some(p) = problem {
            failures.push(format!("[{section}] {} — {}: expected Error::{}; {p}", c.name, c.entry, c.expect));
        }
    }
    let _ = std::fs::remove_dir_all(&cx.dir);
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

macro_rules! section_tests {
    ($($test:ident: $section:literal;)*) => {$(
        #[test]
        fn $test() {
            run_section($section);
        }
    )*};
}

section_tests! {
    matrix_loader: "loader";
    matrix_config: "config";
    matrix_tokenizer: "tokenizer";
    matrix_forward: "forward";
    matrix_data: "data";
    matrix_inspect: "inspect";
    matrix_eval: "eval";
    matrix_generate: "generate";
    matrix_train: "train";
    matrix_edit: "edit";
}

// ------------------------------------------------------------------ documentation sync

const BEGIN: &str = "<!-- bad-input-matrix:begin (generated by tests/bad_input_matrix.rs; GPT2_BLESS=1 to update) -->";
const END: &str = "<!-- bad-input-matrix:end -->";

fn render() -> String {
    let sections = all_cases();
    let total: usize = sections.iter().map(|(_, c)| c.len()).sum();
    let mut out = format!("{BEGIN}\n\n{total} cases.\n");
    for (section, cases) in &sections {
        out.push_str(&format!("\n#### {section} ({} cases)\n\n", cases.len()));
        if cases.is_empty() {
            out.push_str("Pending: this module is not on this branch yet; see \"Pending matrix sections\" below.\n");
            continue;
        }
        out.push_str("| # | malformed input | entry point | error |\n|---|---|---|---|\n");
        for (i, c) in cases.iter().enumerate() {
            let detail = c.detail.map(|(w, _)| format!(" ({w})")).unwrap_or_default();
            out.push_str(&format!("| {} | {} | `{}` | `Error::{}`{} |\n", i + 1, c.name, c.entry, c.expect, detail));
        }
    }
    out.push('\n');
    out.push_str(END);
    out
}

#[test]
fn matrix_is_documented() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/reliability.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (a, b) = (doc.find(BEGIN).expect("begin marker"), doc.find(END).expect("end marker"));
    let current = &doc[a..b + END.len()];
    let want = render();
    if current != want {
        if std::env::var_os("GPT2_BLESS").is_some() {
            std::fs::write(&path, format!("{}{}{}", &doc[..a], want, &doc[b + END.len()..])).unwrap();
        } else {
            panic!("docs/reliability.md's bad-input matrix is out of date: run GPT2_BLESS=1 cargo test --release --test bad_input_matrix");
        }
    }
}

#[test]
fn every_case_name_is_unique() {
    let mut seen = std::collections::HashSet::new();
    for (s, cases) in all_cases() {
        for c in cases {
            assert!(seen.insert((s, c.name)), "duplicate case name {s}/{}", c.name);
        }
    }
}
