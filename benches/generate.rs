//! Greedy generation with the GPT-2 124M shape (random weights), batch 1, 16-token prompt.
//!
//! `cargo bench --bench generate`
//! - `generate_124m/first_token`: prefill of the 16-token prompt + choosing the first token;
//! - `generate_124m/greedy_128`: the whole call for 128 new tokens (throughput in new tokens/s;
//!   the time to first token is ≈ 1/128 of it, the rest is 127 one-token decode steps).
//!
//! `scripts/compare_generate.py` times the same workload beside transformers' `generate`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gpt2::generate::{generate, GenerateConfig, SamplingParams};
use gpt2::{Config, Gpt2, Tokenizer};

fn generate_124m(c: &mut Criterion) {
    let model = Gpt2::new_random(Config::gpt2_124m(), 0).expect("model");
    let tok = Tokenizer::gpt2().expect("tokenizer");
    let prompt = tok.encode("The quick brown fox jumps over the lazy dog while the old man watches it.");
    assert_eq!(prompt.len(), 16);
    let cfg = |n| GenerateConfig {
        max_new_tokens: n,
        sampling: SamplingParams::greedy(),
        eos_token_id: None,
        ..Default::default()
    };
    let mut group = c.benchmark_group("generate_124m");
    group.sample_size(10);
    let first = cfg(1);
    group.throughput(Throughput::Elements(1));
    group
        .bench_function("first_token", |b| b.iter(|| generate(&model, &tok, &prompt, &first, None).expect("generate")));
    let full = cfg(128);
    group.throughput(Throughput::Elements(128));
    group.bench_function("greedy_128", |b| b.iter(|| generate(&model, &tok, &prompt, &full, None).expect("generate")));
    group.finish();
}

criterion_group!(benches, generate_124m);
criterion_main!(benches);
