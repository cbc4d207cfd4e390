//! One model shared by 8 threads (`Arc<Gpt2>`, no lock) gives exactly — bitwise — the results
//! of serial calls; the public types are `Send + Sync`.
//!
//! The workloads are a table of named closures over `&Gpt2` returning every number they produce
//! (as bits): raw forward passes, KV-cached decoding, seeded sampling (`generate::generate`,
//! several samples per call), sliding-window perplexity and HellaSwag scoring (`eval`).

use std::sync::{Arc, Barrier};

use gpt2::data::{DataLoader, TokenShard};
use gpt2::eval::hellaswag::HellaSwagExample;
use gpt2::eval::perplexity::SlidingWindow;
use gpt2::eval::score::Evaluator;
use gpt2::eval::HellaSwagStyle;
use gpt2::generate::{generate, generate_batch, GenerateConfig, SamplingParams};
use gpt2::kernels::softmax::log_softmax_inplace;
use gpt2::{Config, ForwardInput, ForwardOptions, ForwardOutput, Gpt2, KvCache, LogitsMode, Tokenizer};
use ndarray::Array2;

const THREADS: usize = 8;

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Gpt2>();
    send_sync::<Arc<Gpt2>>();
    send_sync::<KvCache>();
    send_sync::<Config>();
    send_sync::<Tokenizer>();
    send_sync::<ForwardOutput>();
    send_sync::<TokenShard>();
    send_sync::<gpt2::Error>();
    send::<DataLoader>();
}

type Workload = (&'static str, fn(&Gpt2, &Tokenizer) -> Vec<u32>);

fn bits(x: impl IntoIterator<Item = f32>) -> Vec<u32> {
    x.into_iter().map(f32::to_bits).collect()
}

fn bits64(x: impl IntoIterator<Item = f64>) -> Vec<u32> {
    x.into_iter()
        .flat_map(|v| {
            let b = v.to_bits();
            [b as u32, (b >> 32) as u32]
        })
        .collect()
}

fn generation(g: &gpt2::generate::Generation) -> Vec<u32> {
    let mut v = Vec::new();
    for s in &g.samples {
        v.push(s.token_ids.len() as u32);
        v.extend(&s.token_ids);
        v.extend(s.text.bytes().map(u32::from));
        v.push(s.finish_reason as u32);
    }
    v
}

fn hellaswag_examples() -> Vec<HellaSwagExample> {
    let ex = |label: usize, ctx_a: &str, ctx_b: &str, endings: [&str; 4]| HellaSwagExample {
        activity_label: Some("Roof shingle removal".into()),
        ctx_a: Some(ctx_a.into()),
        ctx_b: Some(ctx_b.into()),
        ctx: format!("{ctx_a} {ctx_b}"),
        endings: endings.iter().map(|e| e.to_string()).collect(),
        label,
        line: 0,
    };
    vec![
        ex(
            3,
            "A man is sitting on a roof.",
            "he",
            [
                "is using wrap to wrap a pair of skis.",
                "is ripping level tiles off.",
                "is holding a rubik's cube.",
                "starts pulling up roofing on a roof.",
            ],
        ),
        ex(
            0,
            "A woman is outside with a bucket and a dog.",
            "the dog",
            [
                "runs around trying to avoid a bath.",
                "gets into a bath tub with the dog.",
                "uses a hose to keep it from getting soapy.",
                "gets the dog wet, then it runs away again.",
            ],
        ),
    ]
}

fn workloads() -> Vec<Workload> {
    vec![
        ("logits of one sequence", |m, tok| bits(m.logits(&tok.encode("The quick brown fox jumps over")).unwrap())),
        ("logits of a 3-row batch", |m, _| {
            let t = Array2::from_shape_fn((3, 9), |(b, j)| (b * 1000 + j * 37) as u32 % 50257);
            bits(m.logits_batch(t.view()).unwrap())
        }),
        ("left-padded batch with mask, last logits + hidden states", |m, _| {
            let t = Array2::from_shape_fn((2, 6), |(b, j)| (7 + b * 11 + j * 101) as u32);
            let mask = Array2::from_shape_fn((2, 6), |(b, j)| b == 0 || j >= 2);
            let opts =
                ForwardOptions { logits: LogitsMode::Last, final_hidden: true, attentions: true, ..Default::default() };
            let out = m.forward(&ForwardInput::new(t.view()).with_mask(mask.view()), None, &opts).unwrap();
            let mut v = bits(out.logits.unwrap());
            v.extend(bits(out.final_hidden.unwrap()));
            for a in out.attentions {
                v.extend(bits(a));
            }
            v
        }),
        ("greedy decoding of 12 tokens through a KvCache", |m, tok| {
            let mut ids = tok.encode("Once upon a time");
            let mut cache = KvCache::new(m.config(), 1, 32).unwrap();
            let mut input = ids.clone();
            let mut out = Vec::new();
            for _ in 0..12 {
                let t = Array2::from_shape_vec((1, input.len()), input.clone()).unwrap();
                let opts = ForwardOptions { logits: LogitsMode::Last, ..Default::default() };
                let o = m.forward(&ForwardInput::new(t.view()), Some(&mut cache), &opts).unwrap();
                let logits = o.logits.unwrap();
                let row = logits.as_slice().unwrap();
                let next = (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap() as u32;
                out.extend(bits(row.iter().copied()));
                ids.push(next);
                input = vec![next];
            }
            out.extend(ids);
            out
        }),
        ("scoring: log-probabilities of a continuation", |m, tok| {
            let ctx = tok.encode("A man is sitting on a roof. He");
            let cont = tok.encode(" starts pulling up roofing on a roof.");
            let all: Vec<u32> = ctx.iter().chain(&cont).copied().collect();
            let logits = m.logits(&all).unwrap();
            let mut lp = Vec::new();
            for (i, &t) in cont.iter().enumerate() {
                let mut row = logits.row(ctx.len() + i - 1).to_vec();
                log_softmax_inplace(&mut row);
                lp.push(row[t as usize]);
            }
            let sum: f32 = lp.iter().sum();
            lp.push(sum);
            bits(lp)
        }),
        ("seeded sampling, 2 samples (temperature, top-k, top-p, penalty)", |m, tok| {
            let sampling = SamplingParams {
                temperature: 0.9,
                top_k: Some(50),
                top_p: Some(0.95),
                repetition_penalty: 1.2,
                ..Default::default()
            };
            let cfg = GenerateConfig { max_new_tokens: 10, sampling, seed: 42, num_samples: 2, ..Default::default() };
            generation(&generate(m, tok, &tok.encode("The meaning of life is"), &cfg, None).unwrap())
        }),
        ("greedy generation of a 2-prompt batch", |m, tok| {
            let cfg = GenerateConfig { max_new_tokens: 8, sampling: SamplingParams::greedy(), ..Default::default() };
            let prompts = [tok.encode("Hello"), tok.encode("In a hole in the ground there lived")];
            generation(&generate_batch(m, tok, &prompts, &cfg, None).unwrap())
        }),
        ("sliding-window perplexity", |m, tok| {
            let text = "It was the best of times, it was the worst of times, it was the age of wisdom, \
                        it was the age of foolishness, it was the epoch of belief, it was the epoch of incredulity.";
            let ids = tok.encode(text);
            let r =
                Evaluator::new(m).with_batch_size(3).unwrap().sliding_window(&ids, SlidingWindow::new(16, 7)).unwrap();
            let mut v = bits64(r.token_nlls.iter().copied());
            v.extend(bits64([r.avg_loss, r.perplexity, r.hf_guide.avg_loss]));
            v
        }),
        ("HellaSwag scoring, both styles", |m, tok| {
            let ev = Evaluator::new(m).with_batch_size(3).unwrap();
            let mut v = Vec::new();
            for style in [HellaSwagStyle::Completion, HellaSwagStyle::Harness] {
                let r = ev.hellaswag(tok, &hellaswag_examples(), style).unwrap();
                v.extend(bits64([r.acc, r.acc_norm]));
                for p in &r.predictions {
                    v.extend([p.pred as u32, p.pred_norm as u32]);
                    v.extend(bits64(p.sum_losses.iter().chain(&p.avg_losses).copied()));
                }
            }
            v
        }),
    ]
}

#[test]
fn eight_threads_sharing_one_model_match_serial_calls_bitwise() {
    // The real 50257-token vocabulary, so the LM head and matmuls take their parallel paths.
    let model = Arc::new(Gpt2::load(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/models/tiny-bpe")).unwrap());
    let tok = Tokenizer::gpt2().unwrap();
    let work = workloads();
    let serial: Vec<Vec<u32>> = work.iter().map(|(_, f)| f(&model, &tok)).collect();
    // Sanity: the references are not trivially equal (the test can fail).
    assert!(serial.iter().all(|r| !r.is_empty()));

    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let (model, tok, barrier) = (Arc::clone(&model), tok.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let work = workloads();
                barrier.wait();
                // Each thread runs every workload twice, starting at a different one.
                (0..2 * work.len())
                    .map(|k| {
                        let w = (i + k) % work.len();
                        (w, (work[w].1)(&model, &tok))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        for (w, got) in h.join().expect("thread panicked") {
            assert!(got == serial[w], "thread {i}: `{}` differs from the serial result", work[w].0);
        }
    }
}
