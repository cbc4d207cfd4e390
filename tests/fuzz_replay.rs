//! Replays the committed fuzz seed corpora (`fuzz/seeds/<target>/`) through the same checks the
//! cargo-fuzz targets run (`fuzz/src/lib.rs`), plus a few hundred seeded mutations of each seed,
//! on the stable toolchain — so `cargo test` exercises every fuzz target without cargo-fuzz.
//! Long fuzzing runs: see docs/reliability.md.
//!
//! `cargo test --release --test fuzz_replay -- --ignored write_seeds` regenerates the seeds.

#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::path::PathBuf;

use gpt2::data::{shard::write_shard_to, ShardFormat};
use gpt2::model::io::write_safetensors;
use gpt2::{Config, Gpt2, Rng, SaveDtype, Tokenizer};

#[global_allocator]
static ALLOC: checks::CountingAlloc = checks::CountingAlloc;

type Check = fn(&[u8]);

const TARGETS: &[(&str, Check)] = &[
    ("safetensors_load", checks::check_safetensors_raw),
    ("safetensors_header", checks::check_safetensors_structured),
    ("config_json", checks::check_config_json),
    ("tokenizer_decode", checks::check_tokenizer),
    ("token_shard", checks::check_token_shard),
    ("loader_restore", checks::check_loader_restore),
    ("text_tokenize", checks::check_text_tokenize),
    ("forward_cache", checks::check_forward_cache),
    ("hellaswag_jsonl", checks::check_hellaswag),
    ("sampling_options", checks::check_sampling),
];

fn seeds_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("seeds").join(target)
}

fn read_seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = seeds_dir(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds for {target}");
    out
}

/// One libFuzzer-style mutation: flip, set, insert, delete, duplicate, truncate or splice.
fn mutate(rng: &mut Rng, data: &[u8], other: &[u8]) -> Vec<u8> {
    let mut d = data.to_vec();
    for _ in 0..1 + rng.below(4) {
        let n = d.len() as u64;
        match rng.below(8) {
            0 if n > 0 => {
                let i = rng.below(n) as usize;
                d[i] ^= 1 << rng.below(8);
            }
            1 if n > 0 => {
                let i = rng.below(n) as usize;
                d[i] = [0, 1, 0x7f, 0x80, 0xff, b'"', b'{', b'9'][rng.below(8) as usize];
            }
            2 => {
                let i = rng.below(n + 1) as usize;
                d.insert(i, rng.next_u64() as u8);
            }
            3 if n > 0 => {
                let i = rng.below(n) as usize;
                let len = (1 + rng.below(8) as usize).min(d.len() - i);
                d.drain(i..i + len);
            }
            4 if n > 0 => {
                let i = rng.below(n) as usize;
                let len = (1 + rng.below(16) as usize).min(d.len() - i);
                let chunk = d[i..i + len].to_vec();
                let j = rng.below(d.len() as u64 + 1) as usize;
                d.splice(j..j, chunk);
            }
            5 => d.truncate(rng.below(n + 1) as usize),
            6 if n >= 8 => {
                // overwrite a little-endian u64 with an interesting value
                let i = rng.below(n - 7) as usize;
                let v = [0u64, 1, u64::MAX, 1 << 40, i64::MAX as u64, rng.next_u64()][rng.below(6) as usize];
                d[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            _ if !other.is_empty() => {
                let i = rng.below(n + 1) as usize;
                let j = rng.below(other.len() as u64) as usize;
                d.truncate(i);
                d.extend_from_slice(&other[j..]);
            }
            _ => {}
        }
    }
    d
}

fn run_target(name: &str, check: Check, mutations_per_seed: usize) -> usize {
    let seeds = read_seeds(name);
    let mut rng = Rng::new(0x5eed ^ name.len() as u64);
    let mut runs = 0;
    for (i, (seed_name, seed)) in seeds.iter().enumerate() {
        let run = |data: &[u8], what: &str| {
            if std::panic::catch_unwind(|| check(data)).is_err() {
                let dump = std::env::temp_dir().join(format!("gpt2-fuzz-replay-{name}-failure.bin"));
                std::fs::write(&dump, data).unwrap();
                panic!("{name}: {what} fails its check; input saved to {}", dump.display());
            }
        };
        run(seed, &format!("seed {seed_name}"));
        runs += 1;
        let other = &seeds[(i + 1) % seeds.len()].1;
        for k in 0..mutations_per_seed {
            let m = mutate(&mut rng, seed, other);
            run(&m, &format!("mutation {k} of seed {seed_name}"));
            runs += 1;
        }
    }
    runs
}

macro_rules! replay_tests {
    ($($test:ident: $target:literal, $mutations:expr;)*) => {$(
        #[test]
        fn $test() {
            let check = TARGETS.iter().find(|(n, _)| *n == $target).unwrap().1;
            let runs = run_target($target, check, $mutations);
            assert!(runs > 0);
        }
    )*};
}

replay_tests! {
    replay_safetensors_load: "safetensors_load", 150;
    replay_safetensors_header: "safetensors_header", 60;
    replay_config_json: "config_json", 100;
    replay_tokenizer_decode: "tokenizer_decode", 60;
    replay_token_shard: "token_shard", 100;
    replay_loader_restore: "loader_restore", 100;
    replay_text_tokenize: "text_tokenize", 40;
    replay_forward_cache: "forward_cache", 60;
    replay_hellaswag_jsonl: "hellaswag_jsonl", 100;
    replay_sampling_options: "sampling_options", 60;
}

#[test]
fn every_target_has_a_replay_test_and_seeds() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("fuzz_targets");
    let mut files: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut names: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    names.sort();
    assert_eq!(files, names);
    for n in names {
        assert!(!read_seeds(&n).is_empty());
    }
}

/// The valid seeds really are valid, so the fuzzers start from inputs that reach deep paths.
#[test]
fn valid_seeds_take_the_success_paths() {
    let seeds: std::collections::HashMap<String, Vec<u8>> = read_seeds("safetensors_load").into_iter().collect();
    for name in ["f32_meta", "f16_meta", "bf16_meta", "f32_no_meta_inferred"] {
        Gpt2::load_from_bytes(&seeds[name], None).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    Gpt2::load_from_bytes(&seeds["explicit_config"][1..], Some(Config::new(1, 1, 4, 4, 8))).unwrap();
    let shards: std::collections::HashMap<String, Vec<u8>> = read_seeds("token_shard").into_iter().collect();
    for name in ["valid_npy", "valid_bin", "npy_v2"] {
        gpt2::data::TokenShard::from_bytes(
            if name.ends_with("bin") { "s.bin" } else { "s.npy" },
            shards[name][3..].to_vec(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let configs: std::collections::HashMap<String, Vec<u8>> = read_seeds("config_json").into_iter().collect();
    for name in ["hf_tiny", "to_hf_json_small", "gpt2_124m", "minimal"] {
        Config::from_json_str(std::str::from_utf8(&configs[name]).unwrap(), name).unwrap();
    }
    let hs: std::collections::HashMap<String, Vec<u8>> = read_seeds("hellaswag_jsonl").into_iter().collect();
    let opts = gpt2::eval::hellaswag::ReadOptions::default();
    for (name, n) in [("valid", 2), ("unicode_crlf", 2)] {
        let d = gpt2::eval::hellaswag::parse_hellaswag(&hs[name][1..], "s".as_ref(), opts).unwrap();
        assert_eq!(d.examples.len(), n, "{name}");
    }
}

/// The sampling seeds reach the decode loop (not only the validation errors).
#[test]
fn sampling_seeds_generate() {
    let seeds: std::collections::HashMap<String, Vec<u8>> = read_seeds("sampling_options").into_iter().collect();
    for name in ["default_sampling", "greedy_penalties", "top_p_min_p", "stop_string"] {
        let (cfg, prompt) = checks::sampling_case(&seeds[name]);
        let out = gpt2::generate::generate(&checks::NANO, &checks::TOKENIZER, &prompt, &cfg, None)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out.samples.len(), cfg.num_samples);
    }
}

/// The allocation guard the safetensors targets rely on measures what it should.
#[test]
fn counting_allocator_sees_allocations() {
    let (v, peak) = checks::peak_alloc(|| vec![0u8; 1 << 20]);
    assert_eq!(v.len(), 1 << 20);
    assert!(peak >= 1 << 20, "peak {peak}");
    let ((), peak) = checks::peak_alloc(|| ());
    assert!(peak < 1024);
}

// ------------------------------------------------------------------ seed generation

fn put(target: &str, name: &str, bytes: &[u8]) {
    let dir = seeds_dir(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn safetensors_bytes(model: &Gpt2, dtype: SaveDtype, with_meta: bool, prefix: &str) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("gpt2-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("m.safetensors");
    let tensors: Vec<(String, &[usize], &[f32])> = model
        .layout()
        .params()
        .iter()
        .map(|p| (format!("{prefix}{}", p.name), p.shape.as_slice(), &model.params()[p.range()]))
        .collect();
    let mut meta = std::collections::BTreeMap::new();
    if with_meta {
        meta.insert(gpt2::model::io::CONFIG_METADATA_KEY.to_string(), serde_json::to_string(model.config()).unwrap());
    }
    write_safetensors(&file, &tensors, dtype, &meta).unwrap();
    let b = std::fs::read(&file).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    b
}

fn shard_bytes(tokens: &[u16], format: ShardFormat) -> Vec<u8> {
    let mut v = Vec::new();
    write_shard_to(&mut v, tokens, format).unwrap();
    v
}

/// Writes the seed corpora (run by hand; the output is committed).
#[test]
#[ignore]
fn write_seeds() {
    let micro = Gpt2::new_random(Config::new(1, 1, 4, 4, 8), 1).unwrap();
    // head width 64 so the config can be inferred from shapes
    let mut c64 = Config::new(1, 1, 64, 2, 3);
    c64.n_inner = Some(4);
    let inferable = Gpt2::new_random(c64, 2).unwrap();
    put("safetensors_load", "f32_meta", &safetensors_bytes(&micro, SaveDtype::F32, true, "transformer."));
    put("safetensors_load", "f16_meta", &safetensors_bytes(&micro, SaveDtype::F16, true, ""));
    put("safetensors_load", "bf16_meta", &safetensors_bytes(&micro, SaveDtype::BF16, true, "transformer."));
    put("safetensors_load", "f32_no_meta_inferred", &safetensors_bytes(&inferable, SaveDtype::F16, false, ""));
    let mut explicit = vec![1u8];
    explicit.extend(safetensors_bytes(&micro, SaveDtype::F32, false, ""));
    put("safetensors_load", "explicit_config", &explicit);
    put("safetensors_load", "header_only", b"\x10\x00\x00\x00\x00\x00\x00\x00{}              ");

    for (i, len) in [0usize, 8, 32, 128].iter().enumerate() {
        let mut rng = Rng::new(i as u64);
        let bytes: Vec<u8> = (0..*len).map(|_| rng.next_u64() as u8).collect();
        put("safetensors_header", &format!("random_{len}"), &bytes);
    }

    let c = Config::new(2, 2, 8, 16, 10);
    put("config_json", "hf_tiny", &std::fs::read("fixtures/models/tiny/config.json").unwrap());
    put("config_json", "to_hf_json_small", c.to_hf_json().as_bytes());
    put("config_json", "gpt2_124m", Config::gpt2_124m().to_hf_json().as_bytes());
    put("config_json", "minimal", br#"{"n_layer":1,"n_head":1,"n_embd":4,"n_inner":null}"#);
    put("config_json", "bad_head", br#"{"n_layer":1,"n_head":3,"n_embd":4}"#);
    put("config_json", "huge", br#"{"n_layer":18446744073709551615,"n_embd":4294967296,"n_head":1}"#);

    let tok = Tokenizer::gpt2().unwrap();
    let ids = tok.encode("Hello world, naïve café — 日本語 🙂\n\tend");
    let mut b = vec![0u8];
    for &i in &ids {
        b.extend_from_slice(&(i as u16).to_le_bytes());
    }
    put("tokenizer_decode", "ids_mixed_script", &b);
    put("tokenizer_decode", "ids_oov", &[0, 0x56, 0xC4, 0xFF, 0xFF, 0x01, 0x00]);
    put("tokenizer_decode", "text_plain", "\x01Hello world".as_bytes());
    // U+3000 x 2^20, "'s", U+00A0 x (2^19 + 5); "ab" x 2^18 (a 512 kB word; mutations reach 4 MB)
    put(
        "tokenizer_decode",
        "recipe_whitespace",
        b"\x01RECIPE:\x02\x01\x11\x00\x14\x00\x01\x17\x01\x00\x00\x01\x08\x00\x13\x05",
    );
    put("tokenizer_decode", "recipe_long_word", b"\x01RECIPE:\x00\x01\x13\x00\x12\x00");
    put("tokenizer_decode", "text_special", "\x01a<|endoftext|>b  \u{a0}x".as_bytes());

    let toks: Vec<u16> = (0..40).map(|i| i * 997).collect();
    for (fmt, prefix) in [(ShardFormat::Npy, 0u8), (ShardFormat::Bin, 1u8)] {
        let mut b = vec![prefix, 1, 2];
        b.extend(shard_bytes(&toks, fmt));
        put("token_shard", &format!("valid_{fmt}"), &b);
    }
    let mut v2 = vec![0u8, 0, 0];
    let h1 = shard_bytes(&[5, 6, 7], ShardFormat::Npy);
    v2.extend_from_slice(b"\x93NUMPY\x02\x00");
    let hl = u16::from_le_bytes([h1[8], h1[9]]) as u32;
    v2.extend_from_slice(&(hl - 2).to_le_bytes());
    v2.extend_from_slice(&h1[10..10 + hl as usize - 2]);
    v2.extend_from_slice(&[5, 0, 6, 0, 7, 0]);
    put("token_shard", "npy_v2", &v2);
    let mut f = vec![0u8, 0, 0];
    f.extend_from_slice(b"\x93NUMPY\x01\x00\x46\x00{'descr': '<u2', 'fortran_order': True, 'shape': (2, 3), }    \n");
    put("token_shard", "npy_fortran_2d", &f);

    put("loader_restore", "zeros", &[0; 16]);
    put("loader_restore", "raw_json", b"\x01\x01\x01\x00\x00\x00\x00{\"kind\":\"gpt2.data.DataLoader/1\"}");
    put("loader_restore", "mutate_position", &[2, 2, 3, 1, 1, 5, 2, 1, 3, 0xff, 0xff, 0xff, 0xff]);

    put("text_tokenize", "text_lines", b"\x08First line.\nSecond line\n\nthird  line\r\nend");
    put("text_tokenize", "text_invalid_utf8", b"\x10ok\nstill ok\n\xff\xfe bad");
    put("text_tokenize", "jsonl", b"\x01{\"text\": \"Hello\"}\n\n{\"text\": \"world \\u00e9\", \"id\": 3}\n");
    // recipes for long texts (`RECIPE:` + segments, see `recipe_text` in fuzz/src/lib.rs):
    // "a" + 2^20 + 16 newlines + "Zq"; "line\r\n" x 2^17 + "\r\n" x 2^10 read in 3 KiB blocks
    put(
        "text_tokenize",
        "recipe_newlines",
        b"\x02RECIPE:\x02\x01\x12\x01\x00\x00\x01\x01\x00\x14\x10\x01\x14\x01\x00\x00",
    );
    put("text_tokenize", "recipe_crlf_lines", b"\x04RECIPE:\x01\x00\x05line\x0d\x0a\x00\x11\x00\x01\x03\x01\x0a\x00");
    put("text_tokenize", "jsonl_bad", b"\x03{\"text\": \"a\"}\n{\"text\": 5}\n{oops\n");

    let mut rng = Rng::new(9);
    for n in [16usize, 64, 128] {
        let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
        put("forward_cache", &format!("random_{n}"), &bytes);
    }
    let hs = |label: &str, endings: &str| {
        format!(
            r#"{{"ind": 4, "activity_label": "Removing ice from car", "ctx_a": "Then, the man writes over the snow.", "ctx_b": "then", "ctx": "Then, the man writes over the snow. then", "endings": {endings}, "source_id": "activitynet~v_-1IBHYS3L-Y", "split": "val", "split_type": "indomain", "label": {label}}}"#
        )
    };
    let four =
        r#"[", the man adds wax.", ", the man puts on a christmas coat.", ", the man continues.", ", the man stops."]"#;
    put("hellaswag_jsonl", "valid", format!("\x00{}\n\n{}\n", hs("3", four), hs("\"0\"", four)).as_bytes());
    put(
        "hellaswag_jsonl",
        "bad_lines",
        format!("\x03{}\nnot json\n{}\n{}\n", hs("1", four), hs("7", four), hs("2", r#"["a", "b", "c"]"#)).as_bytes(),
    );
    put(
        "hellaswag_jsonl",
        "unicode_crlf",
        format!("\x05  \r\n{}\r\n{}", hs("2", r#"["é 日本", "\u00e9", "", "🙂"]"#), hs("1", four)).as_bytes(),
    );
    put(
        "hellaswag_jsonl",
        "wrong_types",
        &[
            b"\x01".as_slice(),
            br#"{"activity_label": 1, "ctx_a": "", "ctx_b": "", "ctx": "", "endings": ["a","b","c","d"], "label": 0}
{"activity_label": "", "ctx_a": "", "ctx_b": "", "ctx": "", "endings": "abcd", "label": 0}
[1, 2]
"#,
        ]
        .concat(),
    );

    // sampling_options: temperature, top_k, top_p, min_p, penalty (tags), n-gram, max_new, seed,
    // num_samples, eos, stop ids, stop strings, prompt
    put(
        "sampling_options",
        "default_sampling",
        &[15, 1, 3, 10, 0, 0, 0, 3, 0, 3, 5, 1, 2, 3, 4, 5, 6, 7, 8, 3, 2, 0, 0, 0, 3, 1, 2, 3],
    );
    put(
        "sampling_options",
        "greedy_penalties",
        &[4, 0, 0, 0, 1, 14, 3, 2, 3, 6, 0, 0, 0, 0, 0, 0, 0, 0, 3, 2, 1, 0, 0, 2, 4, 5],
    );
    put(
        "sampling_options",
        "top_p_min_p",
        &[9, 0, 1, 14, 1, 14, 0, 3, 0, 3, 4, 9, 9, 9, 9, 9, 9, 9, 9, 3, 3, 2, 5, 1, 7, 0, 4, 1, 2, 3, 4],
    );
    put(
        "sampling_options",
        "nan_temperature",
        &[0, 0, 0, 0, 0, 3, 0, 3, 2, 1, 1, 1, 1, 1, 1, 1, 1, 3, 1, 0, 0, 0, 2, 1, 2],
    );
    put(
        "sampling_options",
        "huge_samples",
        &[15, 0, 0, 0, 0, 3, 0, 3, 2, 1, 1, 1, 1, 1, 1, 1, 1, 2, 0, 0, 0, 0, 2, 1, 2],
    );
    put(
        "sampling_options",
        "stop_string",
        &[15, 1, 3, 15, 0, 0, 0, 3, 0, 3, 6, 5, 5, 5, 5, 5, 5, 5, 5, 3, 1, 0, 0, 2, 1, b'#', 1, b'!', 2, 1, 2],
    );
    put("forward_cache", "prefill_decode", &[1, 8, 2, 1, 3, 1, 2, 3, 0, 1, 1, 2, 1, 1, 5, 0, 1, 2, 1, 1, 9, 0, 1]);
}
