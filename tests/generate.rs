//! Generation (src/generate) against transformers' greedy `generate` (fixtures/ref_generate.py),
//! plus the cache, sampling, stop and streaming invariants.

mod common;

use common::fixture;
use gpt2::generate::{generate, generate_batch, FinishReason, GenerateConfig, SamplingParams, TextStream};
use gpt2::{Error, ForwardInput, ForwardOptions, Gpt2, KvCache, LogitsMode, Tokenizer};
use ndarray::Array2;

fn ids(v: &serde_json::Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect())
        .collect()
}

fn greedy(max_new: usize) -> GenerateConfig {
    GenerateConfig { max_new_tokens: max_new, sampling: SamplingParams::greedy(), ..Default::default() }
}

#[test]
fn greedy_tokens_equal_transformers_alone_and_left_padded() {
    let tok = Tokenizer::gpt2().unwrap();
    for name in ["tiny-bpe", "tiny"] {
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture(&format!("reference/{name}.generate.json"))).unwrap(),
        )
        .unwrap();
        let model = Gpt2::load(fixture(&format!("models/{name}"))).unwrap();
        let prompts = ids(&json["prompts"]);
        let cfg = greedy(json["max_new_tokens"].as_u64().unwrap() as usize);
        let alone = ids(&json["alone"]);
        let batch = ids(&json["batch"]);
        for (p, want) in prompts.iter().zip(&alone) {
            let got = generate(&model, &tok, p, &cfg, None).unwrap();
            assert_eq!(&got.samples[0].token_ids, want, "{name}: prompt {p:?} alone");
        }
        let got = generate_batch(&model, &tok, &prompts, &cfg, None).unwrap();
        for (i, want) in batch.iter().enumerate() {
            assert_eq!(&got.samples[i].token_ids, want, "{name}: prompt {i} in the left-padded batch");
            assert_eq!(got.samples[i].prompt_index, i);
        }
    }
}

#[test]
fn cached_decoding_equals_the_full_forward_at_every_position() {
    for path in [fixture("models/tiny-bpe"), fixture("model")] {
        let model = Gpt2::load(&path).unwrap();
        let tok = Tokenizer::gpt2().unwrap();
        let seq = tok.encode("ROMEO: But soft, what light through yonder window breaks? It is the east.");
        let full = model.logits(&seq).unwrap();
        let mut cache = KvCache::new(model.config(), 1, seq.len()).unwrap();
        let opts = ForwardOptions { logits: LogitsMode::Last, ..Default::default() };
        let mut worst = 0f32;
        for (i, &t) in seq.iter().enumerate() {
            let x = Array2::from_elem((1, 1), t);
            let out = model.forward(&ForwardInput::new(x.view()), Some(&mut cache), &opts).unwrap();
            let step = out.logits.unwrap();
            for (a, b) in step.iter().zip(full.row(i)) {
                worst = worst.max((a - b).abs());
            }
        }
        assert!(worst <= 1e-4, "{}: cached vs full max |Δ| {worst}", path.display());
    }
}

fn bundled() -> (Gpt2, Tokenizer) {
    (Gpt2::load(fixture("model")).unwrap(), Tokenizer::gpt2().unwrap())
}

#[test]
fn seeds_are_reproducible_and_top_k_one_is_greedy() {
    let (model, tok) = bundled();
    let prompt = tok.encode("KING:");
    let sampled = |seed| {
        let cfg = GenerateConfig { max_new_tokens: 24, seed, num_samples: 2, eos_token_id: None, ..Default::default() };
        generate(&model, &tok, &prompt, &cfg, None).unwrap().samples
    };
    let a = sampled(1);
    assert_eq!(a, sampled(1), "same seed, same samples");
    assert_ne!(a[0].token_ids, sampled(2)[0].token_ids, "different seeds differ");
    assert_ne!(a[0].token_ids, a[1].token_ids, "samples of one call differ");
    let top1 = GenerateConfig {
        max_new_tokens: 24,
        sampling: SamplingParams { temperature: 1.3, top_k: Some(1), ..Default::default() },
        eos_token_id: None,
        ..Default::default()
    };
    let g = GenerateConfig { eos_token_id: None, ..greedy(24) };
    assert_eq!(
        generate(&model, &tok, &prompt, &top1, None).unwrap().samples[0].token_ids,
        generate(&model, &tok, &prompt, &g, None).unwrap().samples[0].token_ids
    );
}

#[test]
fn sampled_batches_equal_each_prompt_alone() {
    let (model, tok) = bundled();
    let prompts = vec![tok.encode("ROMEO:"), tok.encode("Enter the KING and QUEEN, with attendants."), tok.encode("O")];
    let cfg = GenerateConfig { max_new_tokens: 16, seed: 9, num_samples: 2, eos_token_id: None, ..Default::default() };
    let batch = generate_batch(&model, &tok, &prompts, &cfg, None).unwrap();
    for (j, p) in prompts.iter().enumerate() {
        let alone = generate(&model, &tok, p, &cfg, None).unwrap();
        for i in 0..2 {
            assert_eq!(batch.samples[j * 2 + i].token_ids, alone.samples[i].token_ids, "prompt {j} sample {i}");
        }
    }
}

#[test]
fn stop_strings_cut_where_the_string_completes_and_streaming_matches() {
    let (model, tok) = bundled();
    let prompt = tok.encode("ROMEO:");
    let free = GenerateConfig { max_new_tokens: 60, seed: 3, eos_token_id: None, ..Default::default() };
    let full = generate(&model, &tok, &prompt, &free, None).unwrap().samples.remove(0);
    // a stop string that occurs in the free-running text (same seed → same tokens up to the stop)
    let stop = full.text.trim_start().chars().take(3).collect::<String>();
    assert!(!stop.is_empty());
    let at = full.text.find(&stop).unwrap() + stop.len();
    let cfg = GenerateConfig { stop_strings: vec![stop.clone()], ..free.clone() };
    let mut streamed = String::new();
    let mut pieces = 0;
    let mut on = |i: usize, s: &str| {
        assert_eq!(i, 0);
        streamed.push_str(s);
        pieces += 1;
    };
    let cut = generate(&model, &tok, &prompt, &cfg, Some(&mut on)).unwrap().samples.remove(0);
    assert_eq!(cut.finish_reason, FinishReason::StopString);
    assert_eq!(cut.text, full.text[..at], "text ends exactly where {stop:?} completes");
    assert!(full.token_ids.starts_with(&cut.token_ids));
    assert_eq!(streamed, cut.text, "streamed pieces concatenate to the final text");
    assert!(pieces >= 1);
    // streaming of the free run, too
    let mut streamed = String::new();
    let mut on = |_: usize, s: &str| streamed.push_str(s);
    let again = generate(&model, &tok, &prompt, &free, Some(&mut on)).unwrap().samples.remove(0);
    assert_eq!(streamed, again.text);
    assert_eq!(again.finish_reason, FinishReason::Length);
    assert_eq!(again.token_ids.len(), 60);
}

#[test]
fn streaming_never_splits_a_multibyte_character() {
    let tok = Tokenizer::gpt2().unwrap();
    let text = "héllo 日本語 🎉 naïve — “quotes”";
    let ids = tok.encode(text);
    let mut s = TextStream::new();
    let mut out = String::new();
    let mut split_somewhere = false;
    for &id in &ids {
        let bytes = tok.decode_bytes(&[id]).unwrap();
        split_somewhere |= std::str::from_utf8(&bytes).is_err();
        let piece = s.push(&bytes);
        assert!(!piece.contains('\u{FFFD}'), "piece {piece:?}");
        out.push_str(&piece);
    }
    out.push_str(&s.finish());
    assert!(split_somewhere, "the test text must split a character across tokens");
    assert_eq!(out, text);
}

#[test]
fn bad_generation_inputs_are_typed_errors() {
    let (model, tok) = bundled();
    let p = tok.encode("Hi");
    let bad = [
        GenerateConfig { max_new_tokens: 0, ..Default::default() },
        GenerateConfig { num_samples: 0, ..Default::default() },
        GenerateConfig { sampling: SamplingParams { temperature: -0.5, ..Default::default() }, ..Default::default() },
        GenerateConfig { sampling: SamplingParams { top_p: Some(1.5), ..Default::default() }, ..Default::default() },
        GenerateConfig { sampling: SamplingParams { top_k: Some(0), ..Default::default() }, ..Default::default() },
        GenerateConfig { stop_strings: vec![String::new()], ..Default::default() },
    ];
    for cfg in &bad {
        assert!(matches!(generate(&model, &tok, &p, cfg, None), Err(Error::InvalidArgument { .. })), "{cfg:?}");
    }
    let too_long = GenerateConfig { max_new_tokens: model.config().n_positions, ..Default::default() };
    assert!(matches!(generate(&model, &tok, &p, &too_long, None), Err(Error::SequenceTooLong { .. })));
    assert!(matches!(generate(&model, &tok, &[], &GenerateConfig::default(), None), Err(Error::EmptyInput(_))));
    assert!(matches!(
        generate(&model, &tok, &[70_000], &GenerateConfig::default(), None),
        Err(Error::TokenOutOfVocab { .. })
    ));
    let none: Vec<Vec<u32>> = vec![];
    assert!(matches!(generate_batch(&model, &tok, &none, &GenerateConfig::default(), None), Err(Error::EmptyInput(_))));
}

/// A model whose final hidden state is the same all-ones vector at every position
/// (`ln_f.weight = 0`, `ln_f.bias = 1`), so the logit of token `v` is `Σ wte[v]`: the logits are
/// known exactly, whatever the blocks compute.
fn known_logits_model(vocab: usize, logit: impl Fn(usize) -> f32) -> Gpt2 {
    let mut m = Gpt2::new_random(gpt2::Config::nano(48, vocab), 5).unwrap();
    let (c, l) = (m.config().n_embd, m.layout().clone());
    let p = m.params_mut();
    p[l.ln_f_w..l.ln_f_w + c].fill(0.0);
    p[l.ln_f_b..l.ln_f_b + c].fill(1.0);
    for v in 0..vocab {
        p[l.wte + v * c..l.wte + (v + 1) * c].fill(logit(v) / c as f32);
    }
    m
}

#[test]
fn padded_vocabulary_rows_are_never_sampled() {
    // build-nanogpt pads 50257 → 50304. The padding rows get the highest logits here, so an
    // unmasked sampler would pick them (and `generate` would fail to decode them); the best
    // real token is 1234.
    let tok = Tokenizer::gpt2().unwrap();
    assert_eq!(tok.vocab_size(), 50257);
    let model = known_logits_model(50304, |v| match v {
        50257.. => 20.0,
        1234 => 5.0,
        v => (v % 7) as f32 * 0.1,
    });
    let out = generate(&model, &tok, &tok.encode("Hello"), &greedy(6), None).unwrap();
    assert_eq!(out.samples[0].token_ids, vec![1234; 6], "greedy takes the best real token");
    let cfg = GenerateConfig {
        max_new_tokens: 40,
        sampling: SamplingParams { temperature: 3.0, top_k: None, ..Default::default() },
        num_samples: 3,
        ..Default::default()
    };
    let out = generate(&model, &tok, &tok.encode("Hello"), &cfg, None).unwrap();
    for s in &out.samples {
        assert!(s.token_ids.iter().all(|&t| t < 50257), "a padding id was sampled: {:?}", s.token_ids);
        assert_eq!(s.token_ids.len(), 40);
    }
}

#[test]
fn vanishing_temperature_samples_the_argmax() {
    // logits 9.5 (token 300) vs 9.25 (token 301) and small ones: at T = 1e-38 / 1e-40 every
    // scaled logit overflows f32; the draw must be the argmax, as greedy gives
    let tok = Tokenizer::gpt2().unwrap();
    let model = known_logits_model(tok.vocab_size(), |v| match v {
        300 => 9.5,
        301 => 9.25,
        v => (v % 5) as f32,
    });
    for t in [1e-38f32, 1e-40] {
        let cfg = GenerateConfig {
            max_new_tokens: 8,
            sampling: SamplingParams { temperature: t, top_k: None, ..Default::default() },
            ..Default::default()
        };
        let out = generate(&model, &tok, &[1], &cfg, None).unwrap();
        assert_eq!(out.samples[0].token_ids, vec![300; 8], "temperature {t:e}");
    }
}

#[test]
fn nan_weights_are_an_error_not_an_empty_text() {
    // NaN in ln_f.weight: every logit is NaN. Before the guard, generate returned "" with
    // finish_reason Eos (the argmax fell back to a default id).
    let (mut model, tok) = bundled();
    let w = model.layout().ln_f_w;
    model.params_mut()[w] = f32::NAN;
    for sampling in [SamplingParams::greedy(), SamplingParams::default()] {
        let cfg = GenerateConfig { max_new_tokens: 5, sampling, ..Default::default() };
        match generate(&model, &tok, &tok.encode("ROMEO:"), &cfg, None) {
            Err(Error::NonFinite { step: 0, what }) => assert!(what.contains("NaN"), "{what}"),
            other => panic!("expected NonFinite at step 0, got {other:?}"),
        }
    }
}
