//! The checks behind every fuzz target, shared by `fuzz/fuzz_targets/*.rs` (cargo-fuzz, nightly)
//! and by `tests/fuzz_replay.rs` (stable, replays `fuzz/seeds/<target>/*` in `cargo test`).
//!
//! Each `check_*` function takes raw fuzzer bytes, drives one public entry point of the crate,
//! and panics when the crate misbehaves: a panic inside the crate, an error variant the entry
//! point does not document, an allocation far beyond the input size, or a violated property
//! (round trips, consistency between related functions). Only `gpt2`, `ndarray` and
//! `serde_json` are used so the replay test builds with the main crate's dependencies.
#![allow(clippy::missing_panics_doc, missing_docs)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use gpt2::data::{shard::write_shard_to, BatchSource, DataLoader, LoaderConfig, TokenShard};
use gpt2::model::io::CONFIG_METADATA_KEY;
use gpt2::{Config, Error, ForwardInput, ForwardOptions, Gpt2, KvCache, LogitsMode, Tokenizer};
use ndarray::Array2;

// ------------------------------------------------------------------ allocation accounting

/// A global allocator that counts the bytes live on the current thread, so a check can bound
/// what one call allocates. Install with
/// `#[global_allocator] static A: gpt2_fuzz::CountingAlloc = gpt2_fuzz::CountingAlloc;`.
pub struct CountingAlloc;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn track(delta: i64) {
    // `try_with`: the thread-locals may already be gone while a thread shuts down.
    let _ = LIVE.try_with(|l| {
        let v = l.get() + delta;
        l.set(v);
        let _ = PEAK.try_with(|p| {
            if v > p.get() {
                p.set(v)
            }
        });
    });
}

// SAFETY: every call is forwarded unchanged to `System`; only counters are updated.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            track(layout.size() as i64);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            track(layout.size() as i64);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        track(-(layout.size() as i64));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            track(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

/// Runs `f` and returns its result with the peak number of bytes it had allocated (on this
/// thread) above what was live when it started. Zero unless [`CountingAlloc`] is installed.
pub fn peak_alloc<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let r = f();
    let peak = PEAK.with(Cell::get);
    (r, (peak - start).max(0) as usize)
}

// ------------------------------------------------------------------ input decoding

/// Reads fuzzer bytes as a stream of small decisions; yields zeros once exhausted.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn u64(&mut self) -> u64 {
        (self.u32() as u64) | ((self.u32() as u64) << 32)
    }
    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        if n <= 256 {
            self.u8() as usize % n
        } else {
            self.u32() as usize % n
        }
    }
    /// True with probability about `1/n`.
    pub fn one_in(&mut self, n: u8) -> bool {
        self.u8() % n.max(1) == 0
    }
    /// A size that is usually small, sometimes huge (to exercise overflow guards).
    pub fn size(&mut self, small: usize) -> usize {
        match self.u8() % 16 {
            0 => self.u64() as usize,
            1 => 1usize << (self.u8() % 64),
            _ => self.below(small + 1),
        }
    }
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(usize::MAX)
    }
}

fn unexpected(entry: &str, e: &Error) -> ! {
    panic!("{entry}: undocumented error variant {e:?}")
}

/// The GPT-2 tokenizer, built once per process.
pub static TOKENIZER: LazyLock<Tokenizer> = LazyLock::new(|| Tokenizer::gpt2().expect("tokenizer"));

// ------------------------------------------------------------------ safetensors + config

/// Errors [`Gpt2::load_from_bytes`] documents.
fn is_load_error(e: &Error) -> bool {
    matches!(
        e,
        Error::Safetensors { .. }
            | Error::Json { .. }
            | Error::InvalidConfig(_)
            | Error::MissingTensor(_)
            | Error::ShapeMismatch { .. }
            | Error::UnsupportedDtype { .. }
    )
}

/// Loads `bytes` as a safetensors checkpoint (optionally with an explicit config): either a
/// typed load error, or a model whose parameter count matches its config and that runs. What
/// the load allocates stays proportional to the input (a header that claims terabytes must not
/// allocate them).
pub fn check_load_bytes(bytes: &[u8], config: Option<Config>) {
    let (r, peak) = peak_alloc(|| Gpt2::load_from_bytes(bytes, config.clone()));
    // f16 → f32 doubles the data; header parsing (serde) costs a bounded multiple of the
    // header text; the layout table costs ~1 KiB per layer, and each layer needs ≥ 12 header
    // entries (≥ 12 × 40 bytes).
    let bound = 64 * bytes.len() + (1 << 20);
    assert!(peak <= bound, "loading {} bytes allocated {peak} bytes (bound {bound})", bytes.len());
    match r {
        Ok(m) => {
            let cfg = m.config().clone();
            if let Some(c) = &config {
                assert_eq!(&cfg, c, "an explicit config must be used as given");
            }
            assert_eq!(m.num_parameters(), cfg.num_parameters());
            assert!(2 * m.num_parameters() <= bytes.len(), "more parameters than the file can hold");
            if m.num_parameters() < 200_000 && cfg.n_positions >= 2 {
                let toks = [0u32, (cfg.vocab_size - 1) as u32];
                let logits = m.logits(&toks).expect("a loaded model runs on in-vocab tokens");
                assert_eq!(logits.dim(), (2, cfg.vocab_size));
                let bad = [cfg.vocab_size.min(u32::MAX as usize) as u32];
                if cfg.vocab_size < u32::MAX as usize {
                    assert!(matches!(m.logits(&bad), Err(Error::TokenOutOfVocab { .. })));
                }
            }
        }
        Err(e) if is_load_error(&e) => {}
        Err(e) => unexpected("Gpt2::load_from_bytes", &e),
    }
}

/// Target `safetensors_load`: the raw bytes are a safetensors file; the first byte picks
/// whether an explicit (valid, small) config is passed as well.
pub fn check_safetensors_raw(data: &[u8]) {
    check_load_bytes(data, None);
    if data.len() > 1 && data[0] & 1 == 1 {
        check_load_bytes(&data[1..], Some(Config::new(1, 1, 4, 4, 8)));
    }
}

const DTYPES: &[&str] = &["F32", "F16", "BF16", "F64", "I8", "U8", "I32", "I64", "BOOL", "F8_E4M3", "C64", "XYZ"];
fn dtype_bits(d: &str) -> usize {
    match d {
        "F64" | "I64" | "C64" => 64,
        "F32" | "I32" => 32,
        "F16" | "BF16" => 16,
        "XYZ" => 0,
        _ => 8,
    }
}

fn small_config(inp: &mut Input<'_>) -> Config {
    let n_head = 1 + inp.below(2);
    let mut c =
        Config::new(1 + inp.below(2), n_head, n_head * [1, 2, 4][inp.below(3)], 1 + inp.below(6), 1 + inp.below(12));
    if inp.one_in(4) {
        c.n_inner = Some(1 + inp.below(8));
    }
    c
}

/// Target `safetensors_header`: builds a safetensors file from a GPT-2 layout and mutates it
/// under the fuzzer's direction — dropped, renamed, duplicated or extra tensors; wrong dtypes
/// and shapes; lying data offsets; a header length field that lies (up to terabytes); a
/// metadata config that lies (absurd sizes, wrong types); truncated or padded data.
pub fn check_safetensors_structured(data: &[u8]) {
    let mut inp = Input::new(data);
    let truth = small_config(&mut inp);
    let model = Gpt2::new_random(truth.clone(), inp.u8() as u64).expect("small config");

    // metadata config
    let meta_cfg = match inp.below(5) {
        0 => None,
        1 | 2 => Some(serde_json::to_value(&truth).unwrap()),
        3 => {
            let mut v = serde_json::to_value(&truth).unwrap();
            let key = ["n_layer", "n_head", "n_embd", "n_positions", "vocab_size", "n_inner"][inp.below(6)];
            v[key] = match inp.below(4) {
                0 => serde_json::json!(inp.u64()),
                1 => serde_json::json!(1u64 << (inp.u8() % 64)),
                2 => serde_json::json!("12"),
                _ => serde_json::json!(-1),
            };
            Some(v)
        }
        _ => {
            let mut c = small_config(&mut inp);
            c.n_layer = inp.size(4);
            Some(serde_json::to_value(&c).unwrap())
        }
    };

    struct T {
        name: String,
        dtype: &'static str,
        shape: Vec<usize>,
        values: Vec<f32>,
    }
    let mut tensors: Vec<T> = model
        .layout()
        .params()
        .iter()
        .map(|p| T {
            name: if inp.one_in(2) { format!("transformer.{}", p.name) } else { p.name.clone() },
            dtype: "F32",
            shape: p.shape.clone(),
            values: model.params()[p.range()].to_vec(),
        })
        .collect();
    // Mutations.
    let n_mut = inp.below(4);
    for _ in 0..n_mut {
        if tensors.is_empty() {
            break;
        }
        let i = inp.below(tensors.len());
        match inp.below(9) {
            0 => {
                tensors.remove(i);
            }
            1 => {
                tensors[i].name =
                    ["lm_head.weight", "h.0.attn.bias", "h.9.ln_1.weight", "junk", ""][inp.below(5)].into()
            }
            2 => {
                let t = &tensors[i];
                let copy = T { name: t.name.clone(), dtype: t.dtype, shape: t.shape.clone(), values: t.values.clone() };
                tensors.push(copy);
            }
            3 => tensors[i].dtype = DTYPES[inp.below(DTYPES.len())],
            4 => tensors[i].shape.reverse(),
            5 => tensors[i].shape.push(1),
            6 => {
                if let Some(d) = tensors[i].shape.first_mut() {
                    *d = inp.size(8);
                }
            }
            7 => {
                // a tied (or, sometimes, untied) lm_head copied from wte
                if let Some(w) = tensors.iter().find(|t| t.name.ends_with("wte.weight")) {
                    let mut values = w.values.clone();
                    if inp.one_in(2) {
                        if let Some(v) = values.first_mut() {
                            *v += 1.0;
                        }
                    }
                    let t = T { name: "lm_head.weight".into(), dtype: w.dtype, shape: w.shape.clone(), values };
                    tensors.push(t);
                }
            }
            _ => tensors[i].values.iter_mut().for_each(|v| *v = f32::NAN),
        }
    }

    // Header with (possibly lying) offsets.
    let mut header = serde_json::Map::new();
    if let Some(c) = &meta_cfg {
        let text = if inp.one_in(8) { "{not json".to_string() } else { c.to_string() };
        header.insert("__metadata__".into(), serde_json::json!({ CONFIG_METADATA_KEY: text, "format": "pt" }));
    }
    let mut payload = Vec::new();
    let mut offset = 0usize;
    for t in &tensors {
        let n_bytes = t.values.len() * dtype_bits(t.dtype) / 8;
        for v in &t.values {
            match dtype_bits(t.dtype) {
                64 => payload.extend_from_slice(&(*v as f64).to_le_bytes()),
                32 => payload.extend_from_slice(&v.to_le_bytes()),
                16 => payload.extend_from_slice(&v.to_le_bytes()[2..]),
                8 => payload.push(v.to_le_bytes()[3]),
                _ => {}
            }
        }
        let (mut s, mut e) = (offset, offset + n_bytes);
        if inp.one_in(16) {
            match inp.below(3) {
                0 => e = e.wrapping_add(inp.size(16)),
                1 => s = s.wrapping_add(1),
                _ => (s, e) = (inp.u64() as usize, inp.u64() as usize),
            }
        }
        header.insert(t.name.clone(), serde_json::json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [s, e]}));
        offset += n_bytes;
    }
    let mut hjson = serde_json::Value::Object(header).to_string().into_bytes();
    while hjson.len() % 8 != 0 {
        hjson.push(b' ');
    }
    let mut hlen = hjson.len() as u64;
    if inp.one_in(8) {
        hlen = match inp.below(4) {
            0 => 1u64 << 40,
            1 => u64::MAX,
            2 => hlen.wrapping_add(inp.u8() as u64),
            _ => hlen.wrapping_sub(inp.u8() as u64),
        };
    }
    let mut bytes = hlen.to_le_bytes().to_vec();
    bytes.extend_from_slice(&hjson);
    bytes.extend_from_slice(&payload);
    match inp.below(8) {
        0 => bytes.truncate(bytes.len().saturating_sub(1 + inp.below(64))),
        1 => bytes.extend_from_slice(inp.take(64)),
        _ => {}
    }
    let explicit = if inp.one_in(4) { Some(truth) } else { None };
    check_load_bytes(&bytes, explicit);
}

/// Target `config_json`: `Config::from_json_str` on arbitrary text gives `Json` or
/// `InvalidConfig`, or a config that validates, survives `to_hf_json` unchanged, and whose
/// parameter count matches its layout.
pub fn check_config_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_json_str(text, "<fuzz>") {
        Ok(c) => {
            c.validate().expect("a parsed config validates");
            let back = Config::from_json_str(&c.to_hf_json(), "<roundtrip>").expect("to_hf_json parses back");
            assert_eq!(back, c, "to_hf_json round trip");
            let n = c.checked_num_parameters().expect("a valid config's parameter count fits usize");
            assert_eq!(n, c.num_parameters());
            if c.n_layer <= 64 && n <= 1 << 24 {
                assert_eq!(gpt2::ParamLayout::new(&c).total(), n);
            }
        }
        Err(Error::Json { .. } | Error::InvalidConfig(_)) => {}
        Err(e) => unexpected("Config::from_json_str", &e),
    }
}

// ------------------------------------------------------------------ tokenizer

/// Target `tokenizer_decode`. First byte even: the rest is a sequence of token ids (mostly in
/// the vocabulary, some not) that `decode_bytes`, `decode`, `decode_lossy` and
/// `token_strings` must handle consistently. Odd: the rest is text whose encoding must decode
/// back to it exactly.
pub fn check_tokenizer(data: &[u8]) {
    let tok = &*TOKENIZER;
    let mut inp = Input::new(data);
    if inp.u8() & 1 == 1 {
        let text = String::from_utf8_lossy(inp.rest());
        let ids = tok.encode(&text);
        assert_eq!(tok.decode(&ids).expect("encoded text decodes"), text, "encode/decode round trip");
        let ids = tok.encode_with_special(&text);
        assert_eq!(tok.decode(&ids).expect("encoded text decodes"), text, "special round trip");
        return;
    }
    let v = gpt2::tokenizer::GPT2_VOCAB_SIZE as u32;
    let mut ids = Vec::new();
    while !inp.is_empty() && ids.len() < 4096 {
        let x = inp.u16() as u32;
        ids.push(match x {
            0xFFFF => u32::MAX,
            0xFFFE => v,
            x if x >= 0xF000 => v + x,
            x => x % v,
        });
    }
    let oov = ids.iter().position(|&t| t >= v);
    match tok.decode_bytes(&ids) {
        Ok(bytes) => {
            assert!(oov.is_none(), "decode_bytes accepted an out-of-vocabulary id");
            let per_token: Vec<u8> = ids.iter().flat_map(|&t| tok.decode_bytes(&[t]).unwrap()).collect();
            assert_eq!(bytes, per_token, "decode_bytes is the concatenation of single-token decodes");
            match (tok.decode(&ids), String::from_utf8(bytes.clone())) {
                (Ok(s), Ok(r)) => assert_eq!(s, r),
                (Err(Error::InvalidUtf8 { valid_up_to }), Err(e)) => {
                    assert_eq!(valid_up_to, e.utf8_error().valid_up_to())
                }
                (a, b) => panic!("decode disagrees with UTF-8 validation: {a:?} vs {b:?}"),
            }
            assert_eq!(tok.decode_lossy(&ids).unwrap(), String::from_utf8_lossy(&bytes));
            assert_eq!(tok.token_strings(&ids).unwrap().len(), ids.len());
        }
        Err(Error::TokenOutOfVocab { token, position, vocab_size }) => {
            let p = oov.expect("decode_bytes rejected only in-vocabulary ids");
            assert_eq!((token, position, vocab_size), (ids[p], p, v as usize));
            assert!(matches!(tok.decode(&ids), Err(Error::TokenOutOfVocab { .. })));
            assert!(matches!(tok.decode_lossy(&ids), Err(Error::TokenOutOfVocab { .. })));
            assert!(matches!(tok.token_strings(&ids), Err(Error::TokenOutOfVocab { .. })));
        }
        Err(e) => unexpected("Tokenizer::decode_bytes", &e),
    }
}

// ------------------------------------------------------------------ token shards and loader

/// Target `token_shard`: the first byte picks the file name (`.npy`, `.bin`, other), the rest
/// is the file. `TokenShard::from_bytes` gives `Error::Data`, or a shard whose accessors agree,
/// which re-serializes to the same tokens, and which a `DataLoader` can read batches from.
pub fn check_token_shard(data: &[u8]) {
    let mut inp = Input::new(data);
    let name = ["s.npy", "s.bin", "s.dat"][inp.below(3)];
    let (b, t) = (1 + inp.below(4), 1 + inp.below(8));
    let bytes = inp.rest().to_vec();
    let len_bytes = bytes.len();
    let shard = match TokenShard::from_bytes(name, bytes) {
        Ok(s) => s,
        Err(Error::Data { line: 0, .. }) => return,
        Err(e) => unexpected("TokenShard::from_bytes", &e),
    };
    let n = shard.len();
    assert!(2 * n <= len_bytes, "{n} tokens from {len_bytes} bytes");
    let tokens = shard.to_vec().expect("an in-memory shard reads");
    assert_eq!(tokens.len(), n);
    assert!(matches!(shard.get(n), Err(Error::InvalidArgument { .. })));
    if n > 0 {
        assert_eq!(shard.get(n - 1).unwrap(), tokens[n - 1]);
        let mut out = vec![0; n.min(5)];
        shard.read_into(n - out.len(), &mut out).unwrap();
        assert_eq!(out, tokens[n - out.len()..]);
    }
    assert!(matches!(shard.read_into(n, &mut [0]), Err(Error::InvalidArgument { .. })));
    assert!(matches!(shard.read_into(usize::MAX, &mut [0, 0]), Err(Error::InvalidArgument { .. })));
    // Re-serialize in the detected format: same tokens.
    let format = shard.format().expect("a parsed shard has a format");
    let t16: Vec<u16> = tokens.iter().map(|&x| x as u16).collect();
    let mut again = Vec::new();
    write_shard_to(&mut again, &t16, format).unwrap();
    assert_eq!(TokenShard::from_bytes(name, again).unwrap().to_vec().unwrap(), tokens);
    // A loader over it.
    match DataLoader::new(vec![shard], LoaderConfig::new(b, t)) {
        Ok(mut loader) => {
            for _ in 0..3 {
                let (x, y) = loader.next_batch().expect("batch");
                assert_eq!((x.dim(), y.dim()), ((b, t), (b, t)));
                assert_eq!(x.as_slice().unwrap()[1..], y.as_slice().unwrap()[..b * t - 1]);
            }
        }
        Err(Error::InvalidArgument { .. }) => assert!(n <= b * t),
        Err(e) => unexpected("DataLoader::new", &e),
    }
}

/// Target `loader_restore`: a loader over three in-memory shards is restored from a fuzzed
/// state (a real state with fuzzed fields, or arbitrary JSON). Restore gives `InvalidArgument`
/// or `Json`, or succeeds, after which `state()` reports that position and batches keep coming.
pub fn check_loader_restore(data: &[u8]) {
    let mut inp = Input::new(data);
    let world = 1 + inp.below(3);
    let mut cfg = LoaderConfig::new(1 + inp.below(3), 1 + inp.below(4)).with_rank(inp.below(world), world);
    if inp.one_in(2) {
        cfg = cfg.with_shuffle(inp.u8() as u64);
    }
    let shards = [50usize, 17, 100]
        .iter()
        .enumerate()
        .map(|(i, &n)| TokenShard::from_tokens(format!("mem{i}"), &(0..n as u32).collect::<Vec<_>>()).unwrap())
        .collect();
    let mut loader = match DataLoader::new(shards, cfg) {
        Ok(l) => l,
        Err(Error::InvalidArgument { .. }) => return,
        Err(e) => unexpected("DataLoader::new", &e),
    };
    for _ in 0..inp.below(4) {
        loader.next_batch().unwrap();
    }
    let mut state = loader.state();
    if inp.one_in(4) {
        match serde_json::from_slice::<serde_json::Value>(inp.rest()) {
            Ok(v) => state = v,
            Err(_) => return,
        }
    } else {
        for _ in 0..1 + inp.below(3) {
            match inp.below(6) {
                0 => state["position"]["epoch"] = serde_json::json!(inp.u64()),
                1 => state["position"]["shard"] = serde_json::json!(inp.size(4)),
                2 => state["position"]["window"] = serde_json::json!(inp.size(40)),
                3 => state["batch_size"] = serde_json::json!(inp.size(4)),
                4 => state["shard_tokens"][inp.below(3)] = serde_json::json!(inp.size(100)),
                _ => state["kind"] = serde_json::json!("other"),
            }
        }
    }
    match loader.restore(state.clone()) {
        Ok(()) => {
            assert_eq!(loader.state()["position"], state["position"]);
            for _ in 0..3 {
                match loader.next_batch() {
                    Ok(_) => {}
                    // the only way a restored position can run out: the epoch counter is at u64::MAX
                    Err(Error::InvalidArgument { name: "position", .. }) if loader.position().epoch == u64::MAX => {
                        break
                    }
                    Err(e) => panic!("no batch after a successful restore: {e:?}"),
                }
            }
        }
        Err(Error::InvalidArgument { .. } | Error::Json { .. }) => {}
        Err(e) => unexpected("BatchSource::restore", &e),
    }
}

// ------------------------------------------------------------------ text / JSONL inputs

fn scratch_file(ext: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gpt2-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let id = format!("{:?}", std::thread::current().id()).replace(|c: char| !c.is_ascii_alphanumeric(), "");
    dir.join(format!("input-{id}.{ext}"))
}

/// Target `text_tokenize`: the first byte picks JSONL or plain text and the read block size,
/// the rest is the file given to the shard writer's reader (`data::writer::tokenize_file`).
/// Text: valid UTF-8 gives exactly `Tokenizer::encode(whole file)` however it is cut into
/// blocks; invalid UTF-8 gives `Error::Data` on the right line. JSONL: the documents are the
/// `text` fields of the non-blank lines, or `Error::Data` names the first bad line.
pub fn check_text_tokenize(data: &[u8]) {
    let mut inp = Input::new(data);
    let mode = inp.u8();
    let jsonl = mode & 1 == 1;
    let chunk = 1 + (mode >> 1) as usize % 48;
    let body = inp.rest();
    let path = scratch_file(if jsonl { "jsonl" } else { "txt" });
    std::fs::write(&path, body).unwrap();
    let mut docs: Vec<Vec<u32>> = Vec::new();
    let mut consumed = 0u64;
    let r = gpt2::data::writer::tokenize_file(
        &path,
        &TOKENIZER,
        "text",
        chunk,
        &mut |piece| {
            match piece {
                gpt2::data::writer::DocPiece::Start(t) => docs.push(t.to_vec()),
                gpt2::data::writer::DocPiece::More(t) => {
                    docs.last_mut().expect("More after Start").extend_from_slice(t)
                }
            }
            Ok(())
        },
        &mut |n| consumed += n,
    );
    let _ = std::fs::remove_file(&path);
    if jsonl {
        check_jsonl(body, r, &docs, &path);
    } else {
        match (std::str::from_utf8(body), r) {
            (Ok(text), Ok(())) => {
                assert_eq!(docs.len(), 1, "a text file is one document");
                assert_eq!(docs[0], TOKENIZER.encode(text), "block-wise tokenization differs (block {chunk})");
                assert_eq!(consumed, body.len() as u64);
            }
            (Err(u), Err(Error::Data { line, .. })) => {
                let expect = 1 + body[..u.valid_up_to()].iter().filter(|&&b| b == b'\n').count();
                assert_eq!(line, expect, "line of the invalid UTF-8");
            }
            (u, r) => panic!("text: UTF-8 {:?} but tokenize_file gave {r:?}", u.map(|_| ())),
        }
    }
}

fn check_jsonl(body: &[u8], r: gpt2::Result<()>, docs: &[Vec<u32>], path: &Path) {
    // The reference: split at '\n', skip blank lines, parse each, take "text".
    let mut expect = Vec::new();
    let mut bad_line = None;
    for (i, line) in body.split_inclusive(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<serde_json::Value>(line) {
            Ok(v) => match v.get("text") {
                Some(serde_json::Value::String(s)) => expect.push(TOKENIZER.encode(s)),
                _ => {
                    bad_line = Some(i + 1);
                    break;
                }
            },
            Err(_) => {
                bad_line = Some(i + 1);
                break;
            }
        }
    }
    match (bad_line, r) {
        (None, Ok(())) => assert_eq!(docs, expect.as_slice()),
        (Some(l), Err(Error::Data { line, path: p, .. })) => {
            assert_eq!(line, l);
            assert_eq!(p, path);
        }
        (l, r) => panic!("jsonl: reference bad line {l:?} but tokenize_file gave {r:?}"),
    }
}

// ------------------------------------------------------------------ forward + KV cache

/// A 2-layer model with 8 dims, context 8 and 16 tokens, built once.
pub static NANO: LazyLock<Gpt2> = LazyLock::new(|| Gpt2::new_random(Config::new(2, 2, 8, 8, 16), 7).unwrap());

/// Target `forward_cache`: a fuzzed sequence of cache creations, forward calls (odd shapes,
/// out-of-vocabulary tokens, wrong masks and positions, every logits mode), truncations and
/// resets. Every call gives a documented error or an output of the right shape; a failed call
/// leaves the cache as it was; with an all-true mask, cached decoding matches a full recompute.
pub fn check_forward_cache(data: &[u8]) {
    let model = &*NANO;
    let cfg = model.config();
    let mut inp = Input::new(data);
    let batch = inp.below(4);
    let cap = inp.below(cfg.n_positions + 3);
    let mut cache = match KvCache::new(cfg, batch, cap) {
        Ok(c) => Some(c),
        Err(Error::InvalidArgument { .. }) => {
            assert_eq!(batch, 0);
            None
        }
        Err(Error::SequenceTooLong { .. }) => {
            assert!(cap == 0 || cap > cfg.n_positions);
            None
        }
        Err(e) => unexpected("KvCache::new", &e),
    };
    let mut history: Vec<Array2<u32>> = Vec::new(); // tokens fed to the cache so far
    let mut plain = true; // no mask / positions so far: a full recompute must match
    for _ in 0..8 {
        if inp.is_empty() {
            break;
        }
        match inp.below(8) {
            0 => {
                if let Some(c) = cache.as_mut() {
                    let n = inp.below(c.capacity() + 2);
                    c.truncate(n);
                    let keep = n.min(history.iter().map(|h| h.ncols()).sum());
                    // keep the first `keep` columns of history
                    let mut cols = 0;
                    let mut kept = Vec::new();
                    for h in history.drain(..) {
                        if cols + h.ncols() <= keep {
                            cols += h.ncols();
                            kept.push(h);
                        } else {
                            let part = h.slice(ndarray::s![.., ..keep - cols]).to_owned();
                            if part.ncols() > 0 {
                                kept.push(part);
                            }
                            break;
                        }
                    }
                    history = kept;
                    assert_eq!(c.len(), history.iter().map(|h| h.ncols()).sum::<usize>());
                }
            }
            1 => {
                if let Some(c) = cache.as_mut() {
                    c.reset();
                    history.clear();
                    plain = true;
                }
            }
            _ => {
                let (b, t) = (inp.below(4), inp.below(5));
                let tokens = Array2::from_shape_fn((b, t), |_| {
                    if inp.one_in(16) {
                        16 + inp.u8() as u32
                    } else {
                        inp.below(16) as u32
                    }
                });
                let mask = inp.one_in(4).then(|| {
                    let (mb, mt) = if inp.one_in(4) { (inp.below(4), inp.below(5)) } else { (b, t) };
                    Array2::from_shape_fn((mb, mt), |_| !inp.one_in(3))
                });
                let pos =
                    inp.one_in(6).then(|| Array2::from_shape_fn((b, t), |_| inp.below(cfg.n_positions + 2) as u32));
                let mode = [LogitsMode::All, LogitsMode::Last, LogitsMode::None][inp.below(3)];
                let opts = ForwardOptions { logits: mode, final_hidden: inp.one_in(2), ..Default::default() };
                let mut input = ForwardInput::new(tokens.view());
                if let Some(m) = &mask {
                    input = input.with_mask(m.view());
                }
                if let Some(p) = &pos {
                    input = input.with_positions(p.view());
                }
                let use_cache = cache.is_some() && !inp.one_in(4);
                let before = cache.as_ref().map(KvCache::len);
                let r = model.forward(&input, if use_cache { cache.as_mut() } else { None }, &opts);
                match r {
                    Ok(out) => {
                        let want_t = if mode == LogitsMode::Last { 1 } else { t };
                        match mode {
                            LogitsMode::None => assert!(out.logits.is_none()),
                            _ => assert_eq!(out.logits.as_ref().unwrap().dim(), (b, want_t, cfg.vocab_size)),
                        }
                        if use_cache {
                            let c = cache.as_ref().unwrap();
                            assert_eq!(c.len(), before.unwrap() + t);
                            plain &= mask.is_none() && pos.is_none();
                            history.push(tokens.clone());
                            if plain && mode == LogitsMode::All {
                                check_against_recompute(model, &history, out.logits.as_ref().unwrap());
                            }
                        }
                    }
                    Err(
                        Error::EmptyInput(_)
                        | Error::TokenOutOfVocab { .. }
                        | Error::Shape(_)
                        | Error::SequenceTooLong { .. },
                    ) => {
                        assert_eq!(cache.as_ref().map(KvCache::len), before, "a failed call changed the cache");
                    }
                    Err(e) => unexpected("Gpt2::forward", &e),
                }
            }
        }
    }
}

/// The logits of the last chunk fed through the cache equal those of a full forward pass over
/// the whole history (within float tolerance: the cached path sums in another order).
fn check_against_recompute(model: &Gpt2, history: &[Array2<u32>], cached: &ndarray::Array3<f32>) {
    let all = ndarray::concatenate(ndarray::Axis(1), &history.iter().map(|h| h.view()).collect::<Vec<_>>()).unwrap();
    let full = model.logits_batch(all.view()).unwrap();
    let t = cached.dim().1;
    let tail = full.slice(ndarray::s![.., full.dim().1 - t.., ..]);
    for (a, b) in tail.iter().zip(cached.iter()) {
        assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "cached {b} vs full {a}");
    }
}

// ------------------------------------------------------------------ HellaSwag JSONL

/// Target `hellaswag_jsonl`: the first byte picks the read options (skip malformed lines, a
/// limit), the rest is a HellaSwag JSONL file given to `eval::hellaswag::parse_hellaswag`.
/// Strict parsing gives `Error::Data` naming this path and a line ≥ 1 that is not blank, or
/// one example per non-blank line; skipping gives the same examples, the failing line as the
/// first skipped one, and every non-blank line exactly once as an example or a skipped line; a
/// limit gives a prefix; every example has 4 endings, a label in 0..4 and the fields of its
/// line; examples re-serialized to JSONL parse back to themselves.
pub fn check_hellaswag(data: &[u8]) {
    use gpt2::eval::hellaswag::{parse_hellaswag, ReadOptions, NUM_ENDINGS};
    let mut inp = Input::new(data);
    let mode = inp.u8();
    let body = inp.rest();
    let path = Path::new("fuzz.jsonl");
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    let blank = |l: usize| lines[l - 1].iter().all(u8::is_ascii_whitespace);
    let non_blank: Vec<usize> = (1..=lines.len()).filter(|&l| !blank(l)).collect();

    let strict = parse_hellaswag(body, path, ReadOptions::default());
    let all = parse_hellaswag(body, path, ReadOptions { skip_malformed: true, limit: None })
        .unwrap_or_else(|e| panic!("skip_malformed failed: {e:?}"));
    // every non-blank line exactly once, in order
    let mut seen: Vec<usize> = all.examples.iter().map(|e| e.line).chain(all.skipped.iter().map(|s| s.line)).collect();
    seen.sort_unstable();
    assert_eq!(seen, non_blank, "examples + skipped lines must be the non-blank lines");
    assert!(all.examples.windows(2).all(|w| w[0].line < w[1].line));
    assert!(all.skipped.windows(2).all(|w| w[0].line < w[1].line));
    for ex in &all.examples {
        assert!(ex.line >= 1 && !blank(ex.line));
        assert_eq!(ex.endings.len(), NUM_ENDINGS);
        assert!(ex.label < NUM_ENDINGS);
        let v: serde_json::Value = serde_json::from_slice(lines[ex.line - 1]).expect("a parsed line is JSON");
        for (k, got) in [
            ("activity_label", &ex.activity_label),
            ("ctx_a", &ex.ctx_a),
            ("ctx_b", &ex.ctx_b),
            ("ctx", &Some(ex.ctx.clone())),
        ] {
            assert_eq!(v[k].as_str(), got.as_deref(), "field {k} of line {}", ex.line);
        }
        let endings: Vec<&str> = v["endings"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
        assert_eq!(endings, ex.endings);
    }
    for s in &all.skipped {
        assert!(s.line >= 1 && !blank(s.line) && !s.reason.is_empty());
    }
    match strict {
        Ok(d) => {
            assert!(all.skipped.is_empty(), "strict parse succeeded but lines were skipped");
            assert_eq!(d, all);
        }
        Err(Error::Data { path: p, line, .. }) => {
            assert_eq!(p, path);
            assert!(line >= 1);
            assert_eq!(Some(line), all.skipped.first().map(|s| s.line), "strict error line = first skipped line");
        }
        Err(e) => unexpected("parse_hellaswag", &e),
    }
    // a limit gives a prefix of the examples (strict: succeeds when the bad line comes later)
    let limit = (mode >> 1) as usize % 8;
    let limited = parse_hellaswag(body, path, ReadOptions { skip_malformed: mode & 1 == 1, limit: Some(limit) });
    match limited {
        Ok(d) => {
            assert_eq!(d.examples[..], all.examples[..limit.min(all.examples.len())]);
            if mode & 1 == 0 {
                assert!(d.skipped.is_empty());
            }
        }
        Err(Error::Data { line, .. }) => {
            assert_eq!(mode & 1, 0);
            assert_eq!(Some(line), all.skipped.first().map(|s| s.line));
            assert!(all.examples.iter().filter(|e| e.line < line).count() < limit);
        }
        Err(e) => unexpected("parse_hellaswag (limit)", &e),
    }
    // round trip
    let mut out = Vec::new();
    for ex in &all.examples {
        out.extend(serde_json::to_vec(ex).unwrap());
        out.push(b'\n');
    }
    let back = parse_hellaswag(&out, path, ReadOptions::default()).expect("re-serialized examples parse");
    assert_eq!(back.examples.len(), all.examples.len());
    for (i, (a, b)) in back.examples.iter().zip(&all.examples).enumerate() {
        assert_eq!(a.line, i + 1);
        assert_eq!((&a.activity_label, &a.ctx_a, &a.ctx_b, &a.ctx), (&b.activity_label, &b.ctx_a, &b.ctx_b, &b.ctx));
        assert_eq!((&a.endings, a.label), (&b.endings, b.label));
    }
}

// ------------------------------------------------------------------ sampling options

fn fuzz_f32(inp: &mut Input<'_>, usual: f32) -> f32 {
    match inp.u8() % 16 {
        0 => f32::NAN,
        1 => f32::INFINITY,
        2 => f32::NEG_INFINITY,
        3 => -1.0,
        4 => 0.0,
        5 => -0.0,
        6 => f32::MIN_POSITIVE,
        7 => 1e-45,
        8 => f32::MAX,
        9 => 1.0,
        10 => 1.0 + f32::EPSILON,
        11 => f32::from_bits(inp.u32()),
        12 => inp.u8() as f32 / 255.0,
        13 => inp.u8() as f32 / 16.0,
        _ => usual,
    }
}

fn fuzz_count(inp: &mut Input<'_>, small: usize) -> usize {
    match inp.u8() % 16 {
        0 => usize::MAX,
        1 => usize::MAX - inp.below(4),
        2 => 1 << (61 + inp.below(3)),
        _ => inp.below(small + 1),
    }
}

/// Target `sampling_options`: fuzzed `GenerateConfig` / `SamplingParams` (NaN, negative,
/// infinite, subnormal and huge values, huge counts, stop tokens and strings, seeds) and a
/// fuzzed prompt, run by `generate::generate` on [`NANO`] (16 tokens, context 8). Either the
/// documented error the settings call for, or `num_samples` samples with 1..=`max_new_tokens`
/// in-vocabulary tokens each, finish reasons that match the tokens, the streamed text equal to
/// each sample's text, and the same result again for the same seed.
pub fn check_sampling(data: &[u8]) {
    use gpt2::generate::{generate, FinishReason};
    let model = &*NANO;
    let vocab = model.config().vocab_size;
    let n_pos = model.config().n_positions;
    let (cfg, prompt) = sampling_case(data);
    let p = &cfg.sampling;
    let bad_setting = !(p.temperature.is_finite() && p.temperature >= 0.0)
        || p.top_k == Some(0)
        || p.top_p.is_some_and(|x| !(x > 0.0 && x <= 1.0))
        || p.min_p.is_some_and(|x| !(0.0..=1.0).contains(&x))
        || !(p.repetition_penalty.is_finite() && p.repetition_penalty > 0.0)
        || cfg.max_new_tokens == 0
        || cfg.num_samples == 0
        || cfg.stop_strings.iter().any(|s| s.is_empty());
    let mut streamed: Vec<String> = Vec::new();
    let mut on_text = |i: usize, s: &str| {
        if streamed.len() <= i {
            streamed.resize(i + 1, String::new());
        }
        streamed[i].push_str(s);
    };
    let r = generate(model, &TOKENIZER, &prompt, &cfg, Some(&mut on_text));
    let oov = prompt.iter().position(|&t| t as usize >= vocab);
    let out = match r {
        Err(Error::InvalidArgument { name, .. }) => {
            assert!(bad_setting || cfg.num_samples > 1 << 40, "InvalidArgument({name}) for valid settings {cfg:?}");
            return;
        }
        Err(Error::EmptyInput(_)) => {
            assert!(!bad_setting && prompt.is_empty());
            return;
        }
        Err(Error::TokenOutOfVocab { position, .. }) => {
            assert!(!bad_setting && !prompt.is_empty());
            assert_eq!(Some(position), oov);
            return;
        }
        Err(Error::SequenceTooLong { .. }) => {
            assert!(!bad_setting && !prompt.is_empty() && oov.is_none());
            assert!(prompt.len().saturating_add(cfg.max_new_tokens) > n_pos);
            return;
        }
        Err(e) => unexpected("generate", &e),
        Ok(out) => out,
    };
    assert!(!bad_setting && !prompt.is_empty() && oov.is_none(), "{cfg:?} {prompt:?} succeeded");
    assert!(prompt.len() + cfg.max_new_tokens <= n_pos);
    assert_eq!(out.samples.len(), cfg.num_samples);
    for (i, s) in out.samples.iter().enumerate() {
        let n = s.token_ids.len();
        assert!((1..=cfg.max_new_tokens).contains(&n), "sample {i}: {n} tokens");
        assert!(s.token_ids.iter().all(|&t| (t as usize) < vocab), "sample {i}: {:?}", s.token_ids);
        let last = *s.token_ids.last().unwrap();
        let is_stop = |t: u32| cfg.eos_token_id == Some(t) || cfg.stop_token_ids.contains(&t);
        assert!(s.token_ids[..n - 1].iter().all(|&t| !is_stop(t)), "a stop token before the end");
        let text_ids = if is_stop(last) { &s.token_ids[..n - 1] } else { &s.token_ids[..] };
        match s.finish_reason {
            FinishReason::Eos => assert_eq!(cfg.eos_token_id, Some(last)),
            FinishReason::StopToken => assert!(cfg.stop_token_ids.contains(&last) && cfg.eos_token_id != Some(last)),
            FinishReason::Length => assert!(n == cfg.max_new_tokens && !is_stop(last)),
            FinishReason::StopString => {
                assert!(cfg.stop_strings.iter().any(|st| s.text.ends_with(st.as_str())), "{:?}", s.text)
            }
        }
        let bytes = TOKENIZER.decode_bytes(text_ids).unwrap();
        if s.finish_reason == FinishReason::StopString {
            // the text is a prefix of the bytes, cut right after the stop string
            let cut = (0..=bytes.len()).find(|&k| String::from_utf8_lossy(&bytes[..k]) == s.text.as_str());
            assert!(cut.is_some(), "stop-string text {:?} is not a prefix of {bytes:?}", s.text);
        } else {
            assert_eq!(s.text, String::from_utf8_lossy(&bytes));
        }
        assert_eq!(streamed.get(i).map(String::as_str).unwrap_or(""), s.text, "streamed text of sample {i}");
    }
    if cfg.sampling.is_greedy() {
        assert!(out.samples.windows(2).all(|w| w[0].token_ids == w[1].token_ids), "greedy samples differ");
    }
    let again = generate(model, &TOKENIZER, &prompt, &cfg, None).expect("second call");
    assert_eq!(again.samples, out.samples, "same seed, different samples");
}

/// The settings and prompt [`check_sampling`] decodes from fuzzer bytes.
pub fn sampling_case(data: &[u8]) -> (gpt2::generate::GenerateConfig, Vec<u32>) {
    use gpt2::generate::{GenerateConfig, SamplingParams};
    let vocab = NANO.config().vocab_size;
    let mut inp = Input::new(data);

    let sampling = SamplingParams {
        temperature: fuzz_f32(&mut inp, 0.8),
        top_k: if inp.one_in(2) { None } else { Some(fuzz_count(&mut inp, 20)) },
        top_p: if inp.one_in(2) { None } else { Some(fuzz_f32(&mut inp, 0.9)) },
        min_p: if inp.one_in(2) { None } else { Some(fuzz_f32(&mut inp, 0.05)) },
        repetition_penalty: if inp.one_in(2) { 1.0 } else { fuzz_f32(&mut inp, 1.3) },
        no_repeat_ngram_size: fuzz_count(&mut inp, 4),
    };
    let mut cfg = GenerateConfig {
        max_new_tokens: fuzz_count(&mut inp, 6),
        sampling,
        seed: inp.u64(),
        num_samples: fuzz_count(&mut inp, 3),
        num_beams: 1,
        length_penalty: 1.0,
        early_stopping: Default::default(),
        logprobs: None,
        eos_token_id: match inp.u8() % 4 {
            0 => None,
            1 => Some(gpt2::generate::EOT),
            _ => Some(inp.below(vocab + 2) as u32),
        },
        stop_token_ids: (0..inp.below(3)).map(|_| inp.below(vocab + 2) as u32).collect(),
        stop_strings: Vec::new(),
    };
    for _ in 0..inp.below(3) {
        let n = inp.below(4);
        cfg.stop_strings.push(String::from_utf8_lossy(inp.take(n)).into_owned());
    }
    let prompt: Vec<u32> = (0..inp.below(7)).map(|_| inp.below(vocab + 3) as u32).collect();
    (cfg, prompt)
}
