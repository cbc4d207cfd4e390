//! The token stream, the logits-processor hook, log-probabilities under sampling, KV-cache row
//! reordering, batched beam search and the serde form of the settings.

mod common;

use common::fixture;
use gpt2::generate::{
    generate, generate_batch, generate_with, BanTokens, EarlyStopping, GenerateConfig, Hooks, LogitBias,
    SamplingParams, TokenEvent,
};
use gpt2::{Error, ForwardInput, ForwardOptions, Gpt2, KvCache, LogitsMode, Tokenizer};
use ndarray::Array2;

fn tiny_bpe() -> Gpt2 {
    Gpt2::load(fixture("models/tiny-bpe")).unwrap()
}

#[test]
fn reordered_cache_rows_decode_like_a_directly_prefilled_cache() {
    let model = tiny_bpe();
    let opts = ForwardOptions { logits: LogitsMode::Last, ..Default::default() };
    let prompts = [[11u32, 22, 33], [44, 55, 66], [77, 88, 99]];
    let prefill = |rows: &[usize]| {
        let mut cache = KvCache::new(model.config(), rows.len(), 16).unwrap();
        let x = Array2::from_shape_fn((rows.len(), 3), |(r, t)| prompts[rows[r]][t]);
        model.forward(&ForwardInput::new(x.view()), Some(&mut cache), &opts).unwrap();
        cache
    };
    let mut reordered = prefill(&[0, 1, 2]);
    // a step, a reorder (row 1 dropped, row 2 duplicated, row 0 moved), another step
    let mut logits = vec![0f32; 3 * model.config().vocab_size];
    model.decode_step(&[5, 6, 7], &mut reordered, &mut logits).unwrap();
    reordered.reorder_rows(&[2, 0, 2]).unwrap();
    let mut direct = prefill(&[2, 0, 2]);
    model.decode_step(&[7, 5, 7], &mut direct, &mut logits).unwrap();
    let mut a = vec![0f32; logits.len()];
    let mut b = vec![0f32; logits.len()];
    model.decode_step(&[1, 2, 3], &mut reordered, &mut a).unwrap();
    model.decode_step(&[1, 2, 3], &mut direct, &mut b).unwrap();
    let d = common::max_abs_diff(&a, &b);
    assert!(d <= 1e-5, "reordered vs direct cache: max |diff| {d}");
    assert!(matches!(reordered.reorder_rows(&[0, 1]), Err(Error::Shape(_))));
    assert!(matches!(reordered.reorder_rows(&[0, 1, 3]), Err(Error::InvalidArgument { .. })));
}

#[test]
fn token_stream_carries_ids_utf8_pieces_and_logprobs() {
    let tok = Tokenizer::gpt2().unwrap();
    let model = tiny_bpe();
    let prompts = [tok.encode("日本"), tok.encode("Hello 🎉")];
    let cfg = GenerateConfig::sampling(1.0).max_new_tokens(24).num_samples(2).logprobs(3).eos_token_id(None);
    // the first tokens are forced to spell characters split across byte tokens
    let forced = tok.encode("🎉é日");
    assert!(forced.len() > 3, "{forced:?}");
    let lens = [prompts[0].len(), prompts[1].len()];
    let mut force = |row: usize, history: &[u32], l: &mut [f32]| {
        if let Some(&t) = forced.get(history.len() - lens[row / 2]) {
            l.iter_mut().enumerate().for_each(|(i, x)| *x = if i == t as usize { 0.0 } else { f32::NEG_INFINITY });
        }
    };
    let mut events: Vec<(usize, u32, String, f32)> = Vec::new();
    let mut on_token = |e: &TokenEvent<'_>| events.push((e.sample, e.id, e.text.to_string(), e.logprob.unwrap()));
    let hooks = Hooks { on_token: Some(&mut on_token), processor: Some(&mut force) };
    let out = generate_with(&model, &tok, &prompts, &cfg, hooks).unwrap();
    assert_eq!(out.samples.len(), 4);
    let mut split_chars = 0;
    for (i, s) in out.samples.iter().enumerate() {
        let mine: Vec<_> = events.iter().filter(|e| e.0 == i).collect();
        assert_eq!(mine.iter().map(|e| e.1).collect::<Vec<_>>(), s.token_ids, "sample {i}: ids");
        assert_eq!(mine.iter().map(|e| e.2.as_str()).collect::<String>(), s.text, "sample {i}: text");
        let lps = s.logprobs.as_ref().unwrap();
        assert_eq!(mine.iter().map(|e| e.3).collect::<Vec<_>>(), lps.iter().map(|t| t.logprob).collect::<Vec<_>>());
        assert!(s.text.starts_with("🎉é日"), "{:?}", s.text);
        // a token that ends inside a character streams an empty piece
        split_chars += mine.iter().filter(|e| e.2.is_empty()).count();
        assert_eq!(lps[0].logprob, 0.0, "a forced token is certain");
    }
    assert!(split_chars >= 4, "characters split across tokens arrive with their last token");
    // the text callback is the same stream: its pieces equal the non-empty token pieces
    let mut texts = vec![String::new(); 4];
    let mut on_text = |i: usize, piece: &str| {
        assert!(!piece.is_empty());
        texts[i].push_str(piece)
    };
    let again = generate_batch(&model, &tok, &prompts, &cfg, Some(&mut on_text)).unwrap();
    assert_eq!(texts, again.samples.iter().map(|s| s.text.clone()).collect::<Vec<_>>());
}

#[test]
fn sampling_logprobs_describe_the_distribution_drawn_from() {
    let tok = Tokenizer::gpt2().unwrap();
    let model = tiny_bpe();
    let prompt = tok.encode("The quick brown fox");
    // top-k 5: exactly the 5 kept tokens carry probability, and they sum to 1
    let cfg = GenerateConfig::sampling(0.7).top_k(5).max_new_tokens(10).logprobs(8).eos_token_id(None);
    let out = generate(&model, &tok, &prompt, &cfg, None).unwrap();
    for t in out.samples[0].logprobs.as_ref().unwrap() {
        assert_eq!(t.top.len(), 5, "tokens outside the top-k have probability 0");
        let mass: f64 = t.top.iter().map(|a| (a.logprob as f64).exp()).sum();
        assert!((mass - 1.0).abs() < 1e-5, "{mass}");
        assert!(t.top.iter().any(|a| a.id == t.id && a.logprob == t.logprob));
    }
    // temperature only: the log-prob is log_softmax(logits / T) of the model's logits
    let cfg = GenerateConfig::sampling(0.7).max_new_tokens(1).logprobs(0);
    let out = generate(&model, &tok, &prompt, &cfg, None).unwrap();
    let x = Array2::from_shape_vec((1, prompt.len()), prompt.clone()).unwrap();
    let opts = ForwardOptions { logits: LogitsMode::Last, ..Default::default() };
    let logits = model.forward(&ForwardInput::new(x.view()), None, &opts).unwrap().logits.unwrap();
    let row: Vec<f64> = logits.iter().map(|&l| l as f64 / 0.7).collect();
    let max = row.iter().cloned().fold(f64::MIN, f64::max);
    let lse = max + row.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
    let t = &out.samples[0].logprobs.as_ref().unwrap()[0];
    let want = row[t.id as usize] - lse;
    assert!((t.logprob as f64 - want).abs() < 1e-5, "{} vs {want}", t.logprob);
    // off: nothing computed or stored
    let off = generate(&model, &tok, &prompt, &GenerateConfig::sampling(0.7).max_new_tokens(3), None).unwrap();
    assert!(off.samples[0].logprobs.is_none() && off.samples[0].logprob_summary().is_none());
}

#[test]
fn logits_processor_runs_after_the_penalties_and_before_the_warpers() {
    let tok = Tokenizer::gpt2().unwrap();
    let model = tiny_bpe();
    let prompt = tok.encode("To be, or not to be");
    let greedy = GenerateConfig::greedy().max_new_tokens(8).eos_token_id(None);
    let plain = generate(&model, &tok, &prompt, &greedy, None).unwrap().samples[0].token_ids.clone();
    // banning every token greedy chose changes the output and none of them appears
    let mut ban = BanTokens(plain.clone());
    let hooks = Hooks { processor: Some(&mut ban), ..Default::default() };
    let banned = generate_with(&model, &tok, &[&prompt], &greedy, hooks).unwrap().samples[0].token_ids.clone();
    assert!(banned.iter().all(|t| !plain.contains(t)), "{banned:?} vs {plain:?}");
    // a large bias wins, also under sampling (the hook runs before temperature / top-k)
    let mut bias = LogitBias(vec![(42, 1e4)]);
    let sampling = GenerateConfig::sampling(1.0).top_k(3).max_new_tokens(5).eos_token_id(None);
    let hooks = Hooks { processor: Some(&mut bias), ..Default::default() };
    assert_eq!(generate_with(&model, &tok, &[&prompt], &sampling, hooks).unwrap().samples[0].token_ids, vec![42; 5]);
    // the hook sees the logits after the repetition penalty
    let mut seen: Vec<Vec<f32>> = Vec::new();
    let mut record = |_: usize, _: &[u32], l: &mut [f32]| seen.push(l.to_vec());
    let cfg = GenerateConfig { sampling: SamplingParams::greedy().repetition_penalty(2.0), ..greedy.clone() }
        .max_new_tokens(1);
    let hooks = Hooks { processor: Some(&mut record), ..Default::default() };
    generate_with(&model, &tok, &[&prompt], &cfg, hooks).unwrap();
    let x = Array2::from_shape_vec((1, prompt.len()), prompt.clone()).unwrap();
    let opts = ForwardOptions { logits: LogitsMode::Last, ..Default::default() };
    let mut raw = model
        .forward(&ForwardInput::new(x.view()), None, &opts)
        .unwrap()
        .logits
        .unwrap()
        .iter()
        .copied()
        .collect::<Vec<f32>>();
    gpt2::generate::sampler::apply_repetition_penalty(&mut raw, &prompt, 2.0);
    assert_eq!(seen.len(), 1);
    assert!(common::max_abs_diff(&seen[0], &raw) <= 1e-5);
}

#[test]
fn beam_search_batches_equal_each_prompt_alone_and_respect_the_hook() {
    let tok = Tokenizer::gpt2().unwrap();
    let model = tiny_bpe();
    let prompts = [tok.encode("Hello, my dog is"), tok.encode("1 2"), tok.encode("ROMEO: O, she doth teach")];
    let cfg = GenerateConfig::beam(3).num_samples(2).max_new_tokens(10).length_penalty(0.7).logprobs(2);
    let batch = generate_batch(&model, &tok, &prompts, &cfg, None).unwrap();
    assert_eq!(batch.samples.len(), 6);
    for (j, p) in prompts.iter().enumerate() {
        let alone = generate(&model, &tok, p, &cfg, None).unwrap();
        for i in 0..2 {
            let (a, b) = (&batch.samples[j * 2 + i], &alone.samples[i]);
            assert_eq!((a.prompt_index, &a.token_ids), (j, &b.token_ids), "prompt {j} beam {i}");
            assert!((a.score.unwrap() - b.score.unwrap()).abs() <= 1e-5);
        }
    }
    // a processor under beam search: ban the best beam's first token
    let best = generate(&model, &tok, &prompts[0], &cfg, None).unwrap().samples[0].token_ids[0];
    let mut ban = BanTokens(vec![best]);
    let out =
        generate_with(&model, &tok, &[&prompts[0]], &cfg, Hooks { processor: Some(&mut ban), ..Default::default() })
            .unwrap();
    assert!(out.samples.iter().all(|s| !s.token_ids.contains(&best)));
    // settings beam search cannot honour are errors
    let bad = [
        GenerateConfig::beam(2).num_samples(3),
        GenerateConfig { sampling: SamplingParams::sampling(0.8), ..GenerateConfig::beam(2) },
        GenerateConfig { stop_strings: vec!["\n".into()], ..GenerateConfig::beam(2) },
        GenerateConfig::beam(0),
        GenerateConfig::beam(2).length_penalty(f32::NAN),
    ];
    for cfg in bad {
        assert!(
            matches!(generate(&model, &tok, &prompts[0], &cfg, None), Err(Error::InvalidArgument { .. })),
            "{cfg:?}"
        );
    }
    let mut on_token = |_: &TokenEvent<'_>| {};
    let hooks = Hooks { on_token: Some(&mut on_token), ..Default::default() };
    assert!(matches!(
        generate_with(&model, &tok, &[&prompts[0]], &GenerateConfig::beam(2), hooks),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn settings_round_trip_through_json_without_hidden_defaults() {
    let cfg = GenerateConfig::sampling(0.9)
        .top_p(0.95)
        .min_p(0.02)
        .max_new_tokens(7)
        .seed(3)
        .num_samples(2)
        .logprobs(4)
        .eos_token_id(None);
    assert_eq!(cfg.sampling.top_k, None, "sampling() keeps no hidden top-k");
    let json = serde_json::to_string(&cfg).unwrap();
    assert_eq!(serde_json::from_str::<GenerateConfig>(&json).unwrap(), cfg);
    let beams = GenerateConfig::beam(4).early_stopping(EarlyStopping::Never).length_penalty(-0.5);
    let v = serde_json::to_value(&beams).unwrap();
    assert_eq!(v["early_stopping"], "never");
    assert_eq!(serde_json::from_value::<GenerateConfig>(v).unwrap(), beams);
    // `sampling` is required, unknown keys are rejected, early_stopping takes bools
    assert!(serde_json::from_str::<GenerateConfig>(r#"{"max_new_tokens": 5}"#).is_err());
    assert!(serde_json::from_str::<GenerateConfig>(r#"{"sampling": {"temperature": 0}, "top_kk": 3}"#).is_err());
    assert!(serde_json::from_str::<GenerateConfig>(r#"{"sampling": {"temperature": 0}, "early_stopping": "soon"}"#)
        .is_err());
    let g: GenerateConfig = serde_json::from_str(
        r#"{"sampling": {"temperature": 0}, "num_return_sequences": 2, "num_beams": 3, "early_stopping": true}"#,
    )
    .unwrap();
    assert_eq!(g, GenerateConfig::beam(3).num_samples(2).early_stopping(true));
}
