//! One model shared by 8 threads (`Arc<Gpt2>`, no lock) gives exactly — bitwise — the results
//! of serial calls; the public types are `Send + Sync`.
//!
//! The workloads are a table of named closures over `&Gpt2` returning every f32 they produce
//! (as bits). When the generation / evaluation modules land, add their entry points (sampling
//! with a fixed seed, HellaSwag scoring, perplexity) to `workloads()`.

use std::sync::{Arc, Barrier};

use gpt2::data::{DataLoader, TokenShard};
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
