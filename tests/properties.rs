//! Property tests (proptest) for what fuzzing does not fit: numerical guards of the kernels on
//! extreme inputs, model-level invariants over random configs (causality, batching, cached
//! decoding, save/load round trips), and data round trips (shards, writer, loader resume).
//! Tolerances are stated per property; see docs/reliability.md.

use gpt2::data::{
    shard::{npy_header, write_shard_to},
    BatchSource, DataLoader, LoaderConfig, ShardFormat, ShardWriter, TokenShard, WriterOptions,
};
use gpt2::kernels::{gelu, layernorm, softmax};
use gpt2::{Config, ForwardInput, ForwardOptions, Gpt2, KvCache, SaveDtype, Tokenizer};
use ndarray::{s, Array2};
use proptest::prelude::*;

/// `cases` cases from a fixed seed (reproducible in CI), unless `PROPTEST_RNG_SEED` is set;
/// failures are reported with their minimal input, not persisted to files.
fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::with_cases(cases);
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = proptest::test_runner::RngSeed::Fixed(0x9e37_79b9_7f4a_7c15);
    }
    c.failure_persistence = None;
    c
}

fn scratch(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "gpt2-prop-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

// ------------------------------------------------------------------ kernels on extreme inputs

/// Finite f32 values of any magnitude, with ties and extremes over-represented.
fn any_finite() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -10.0f32..10.0,
        1 => proptest::num::f32::NORMAL | proptest::num::f32::SUBNORMAL | proptest::num::f32::ZERO,
        1 => Just(f32::MAX),
        1 => Just(f32::MIN),
        1 => Just(0.0f32),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    /// softmax of any finite row is a probability vector (finite, in [0, 1], sums to 1 ± 1e-5);
    /// log-softmax is finite and ≤ 0; logsumexp ≥ max.
    #[test]
    fn softmax_is_a_distribution_for_any_finite_row(row in prop::collection::vec(any_finite(), 1..70)) {
        let mut p = row.clone();
        softmax::softmax_inplace(&mut p);
        prop_assert!(p.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)), "{p:?}");
        let sum: f64 = p.iter().map(|&v| v as f64).sum();
        prop_assert!((sum - 1.0).abs() < 1e-5, "sum {sum}");
        let lse = softmax::logsumexp(&row);
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        prop_assert!(lse.is_finite() || max.abs() == f32::MAX, "lse {lse}");
        prop_assert!(lse >= max);
        if max.abs() < 1e30 {
            let mut l = row.clone();
            softmax::log_softmax_inplace(&mut l);
            prop_assert!(l.iter().all(|v| v.is_finite() && *v <= 1e-6), "{l:?}");
        }
    }

    /// tanh-GELU is finite for every finite input and lies between min(0, x) − 0.17 and max(0, x).
    #[test]
    fn gelu_is_finite_and_bounded(x in any_finite()) {
        let y = gelu::gelu(x);
        prop_assert!(y.is_finite(), "gelu({x}) = {y}");
        prop_assert!(y <= x.max(0.0) + 1e-6 && y >= x.min(0.0) - 0.17, "gelu({x}) = {y}");
    }

    /// layernorm of rows with |x| ≤ 1e15 (constant rows included) is always finite, and matches
    /// the f64 oracle within 1e-4·(1 + |ref|) when the row is well conditioned for f32
    /// statistics (std ≥ 1e-3·max|x|, or max|x| ≤ 1). A constant row with a large offset is not:
    /// the f32 mean is off by ~ulp(|x|), which 1/sqrt(var + eps) amplifies (PyTorch's f32
    /// layernorm has the same limit) — see docs/reliability.md.
    #[test]
    fn layernorm_is_finite_on_extreme_rows(
        rows in prop::collection::vec(prop::collection::vec(-1e15f32..1e15, 16), 1..6),
        constant in any::<bool>(),
        scale in prop_oneof![Just(1e-6f32), Just(1.0f32), Just(1e6f32)],
    ) {
        let c = 16;
        let mut x: Vec<f32> = rows.concat().iter().map(|v| v * scale / 1e15).collect();
        if constant {
            for r in x.chunks_exact_mut(c) { let v = r[0]; r.fill(v); }
        }
        let w: Vec<f32> = (0..c).map(|i| 0.5 + i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..c).map(|i| i as f32 * -0.3).collect();
        let mut got = vec![0.0; x.len()];
        let mut want = vec![0.0; x.len()];
        layernorm::layernorm_forward(&mut got, None, None, &x, &w, &b, c, 1e-5);
        layernorm::layernorm_forward_naive(&mut want, &x, &w, &b, c, 1e-5);
        for ((g, r), xs) in got.chunks_exact(c).zip(want.chunks_exact(c)).zip(x.chunks_exact(c)) {
            prop_assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
            let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
            let std = (xs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64).sqrt();
            let max = xs.iter().map(|v| v.abs()).fold(0.0f32, f32::max) as f64;
            if std >= 1e-3 * max || max <= 1.0 {
                close(g, r, 1e-4)?;
            }
        }
    }
}

// ------------------------------------------------------------------ model invariants

#[derive(Debug, Clone)]
struct Case {
    config: Config,
    seed: u64,
    tokens: Vec<u32>,
    split: usize,
}

fn model_case() -> impl Strategy<Value = Case> {
    (1usize..3, 1usize..4, 1usize..6, 2usize..12, 2usize..40, any::<u64>()).prop_flat_map(
        |(n_layer, n_head, hd, n_positions, vocab, seed)| {
            let config = Config::new(n_layer, n_head, n_head * hd, n_positions, vocab);
            (prop::collection::vec(0..vocab as u32, 1..=n_positions), Just(config), Just(seed)).prop_flat_map(
                |(tokens, config, seed)| {
                    let n = tokens.len();
                    (0..n).prop_map(move |split| Case { config: config.clone(), seed, tokens: tokens.clone(), split })
                },
            )
        },
    )
}

fn close(a: &[f32], b: &[f32], tol: f32) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        prop_assert!((x - y).abs() <= tol * (1.0 + x.abs()), "element {i}: {x} vs {y}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(48))]

    /// Over random small configs and inputs: logits are finite; a prefix's logits equal the
    /// first rows of the full sequence's (causality); a 3-row batch of the same sequence gives
    /// each row the single-sequence logits; prefill + token-by-token decode through a KvCache
    /// gives the full-sequence logits (all within 1e-5 relative).
    #[test]
    fn forward_is_causal_batch_consistent_and_cache_exact(case in model_case()) {
        let m = Gpt2::new_random(case.config.clone(), case.seed).unwrap();
        let v = case.config.vocab_size;
        let t = case.tokens.len();
        let full = m.logits(&case.tokens).unwrap();
        prop_assert!(full.iter().all(|x| x.is_finite()));
        let prefix = m.logits(&case.tokens[..case.split + 1]).unwrap();
        close(prefix.as_slice().unwrap(), full.slice(s![..case.split + 1, ..]).to_owned().as_slice().unwrap(), 1e-5)?;
        let batch = Array2::from_shape_fn((3, t), |(_, j)| case.tokens[j]);
        let out = m.logits_batch(batch.view()).unwrap();
        for r in 0..3 {
            close(out.slice(s![r, .., ..]).to_owned().as_slice().unwrap(), full.as_slice().unwrap(), 1e-5)?;
        }
        let mut cache = KvCache::new(m.config(), 1, t).unwrap();
        let pre = Array2::from_shape_vec((1, case.split + 1), case.tokens[..case.split + 1].to_vec()).unwrap();
        let o = m.forward(&ForwardInput::new(pre.view()), Some(&mut cache), &ForwardOptions::default()).unwrap();
        let mut got = o.logits.unwrap().into_raw_vec_and_offset().0;
        for &tok in &case.tokens[case.split + 1..] {
            let one = Array2::from_elem((1, 1), tok);
            let o = m.forward(&ForwardInput::new(one.view()), Some(&mut cache), &ForwardOptions::default()).unwrap();
            got.extend(o.logits.unwrap().iter());
        }
        prop_assert_eq!(got.len(), t * v);
        close(&got, full.as_slice().unwrap(), 1e-5)?;
    }

    /// save → load is exact in f32, equals f16 / bf16 rounding otherwise, and
    /// `load_from_bytes` on the file's bytes gives the same model as `load`.
    #[test]
    fn save_load_round_trip(case in model_case(), dtype in prop_oneof![Just(SaveDtype::F32), Just(SaveDtype::F16), Just(SaveDtype::BF16)]) {
        let m = Gpt2::new_random(case.config.clone(), case.seed).unwrap();
        let dir = scratch("save");
        m.save_with_dtype(&dir, dtype).unwrap();
        let back = Gpt2::load(&dir).unwrap();
        prop_assert_eq!(back.config(), m.config());
        let round = |x: f32| match dtype {
            SaveDtype::F32 => x,
            SaveDtype::F16 => half::f16::from_f32(x).to_f32(),
            SaveDtype::BF16 => half::bf16::from_f32(x).to_f32(),
        };
        for (a, b) in m.params().iter().zip(back.params()) {
            prop_assert_eq!(round(*a).to_bits(), b.to_bits());
        }
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let mem = Gpt2::load_from_bytes(&bytes, None).unwrap();
        prop_assert_eq!(mem.params(), back.params());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

// ------------------------------------------------------------------ data round trips

proptest! {
    #![proptest_config(config(64))]

    /// Any u16 stream written as .npy or .bin reads back identically, and the .npy header
    /// numpy would write is 64-byte aligned for any length.
    #[test]
    fn shard_bytes_round_trip(tokens in prop::collection::vec(any::<u16>(), 0..2000), npy in any::<bool>()) {
        let format = if npy { ShardFormat::Npy } else { ShardFormat::Bin };
        let mut bytes = Vec::new();
        write_shard_to(&mut bytes, &tokens, format).unwrap();
        let shard = TokenShard::from_bytes(format!("p.{format}"), bytes).unwrap();
        prop_assert_eq!(shard.format(), Some(format));
        let back: Vec<u16> = shard.to_vec().unwrap().into_iter().map(|t| t as u16).collect();
        prop_assert_eq!(back, tokens.clone());
        prop_assert_eq!(npy_header(tokens.len()).len() % 64, 0);
    }

    /// The shard writer's output, concatenated, is EOT + document for every document, cut
    /// into shards of exactly `shard_size` tokens (the last holds the rest).
    #[test]
    fn shard_writer_concatenation(
        docs in prop::collection::vec(prop::collection::vec(0u32..65536, 0..40), 1..8),
        shard_size in 1usize..64,
    ) {
        let dir = scratch("writer");
        let mut opts = WriterOptions::new(&dir);
        opts.shard_size = shard_size;
        let mut w = ShardWriter::new(opts).unwrap();
        let mut want = Vec::new();
        for d in &docs {
            w.push_document(d).unwrap();
            want.push(50256);
            want.extend_from_slice(d);
        }
        let summary = w.finish().unwrap();
        let mut got = Vec::new();
        for (i, s) in summary.shards.iter().enumerate() {
            let toks = TokenShard::open(&s.path).unwrap().to_vec().unwrap();
            if i + 1 < summary.shards.len() {
                prop_assert_eq!(toks.len(), shard_size);
            }
            prop_assert!(!toks.is_empty() && toks.len() <= shard_size);
            got.extend(toks);
        }
        prop_assert_eq!(got, want);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A loader restored from `state()` after k batches yields exactly the batches the original
    /// yields next (any shard sizes, batch geometry, rank and shuffle seed); ranks of one step
    /// read disjoint tokens.
    #[test]
    fn loader_resume_and_rank_disjointness(
        sizes in prop::collection::vec(1usize..300, 1..4),
        b in 1usize..4, t in 1usize..6, world in 1usize..4,
        shuffle in prop::option::of(any::<u64>()),
        k in 0usize..20,
    ) {
        let shards = || -> Vec<TokenShard> {
            let mut start = 0u32;
            sizes.iter().enumerate().map(|(i, &n)| {
                let toks: Vec<u32> = (start..start + n as u32).collect();
                start += n as u32;
                TokenShard::from_tokens(format!("s{i}"), &toks).unwrap()
            }).collect()
        };
        let cfg = |rank: usize| {
            let c = LoaderConfig::new(b, t).with_rank(rank, world);
            match shuffle { Some(s) => c.with_shuffle(s), None => c }
        };
        let Ok(mut a) = DataLoader::new(shards(), cfg(0)) else {
            // every shard too small for one global batch
            prop_assert!(sizes.iter().all(|&n| n <= b * t * world));
            return Ok(());
        };
        for _ in 0..k { a.next_batch().unwrap(); }
        let mut r = DataLoader::new(shards(), cfg(0)).unwrap();
        r.restore(a.state()).unwrap();
        for _ in 0..5 {
            prop_assert_eq!(a.next_batch().unwrap(), r.next_batch().unwrap());
        }
        // Disjoint ranks: the x tokens (= global positions) of one step never overlap.
        let mut seen = std::collections::HashSet::new();
        for rank in 0..world {
            let mut l = DataLoader::new(shards(), cfg(rank)).unwrap();
            let (x, _) = l.next_batch().unwrap();
            for &tok in x.iter() {
                prop_assert!(seen.insert(tok), "token {tok} read by two ranks");
            }
        }
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// Any Unicode text survives encode → decode (the fuzz target checks arbitrary bytes).
    #[test]
    fn tokenizer_round_trips_any_text(text in "\\PC{0,40}|[\\x00-\\x7f]{0,40}|.{0,20}") {
        let tok = tokenizer();
        prop_assert_eq!(tok.decode(&tok.encode(&text)).unwrap(), text.clone());
        prop_assert_eq!(tok.decode(&tok.encode_with_special(&text)).unwrap(), text);
    }
}

fn tokenizer() -> &'static Tokenizer {
    static T: std::sync::OnceLock<Tokenizer> = std::sync::OnceLock::new();
    T.get_or_init(|| Tokenizer::gpt2().unwrap())
}
