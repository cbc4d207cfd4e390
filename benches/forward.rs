//! Full forward pass (logits for every position) of the GPT-2 124M shape with random weights.
//!
//! `cargo bench --bench forward` — throughput is reported in tokens/s.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gpt2::{Config, Gpt2};
use ndarray::Array2;

fn forward_124m(c: &mut Criterion) {
    let model = Gpt2::new_random(Config::gpt2_124m(), 0).expect("model");
    let mut group = c.benchmark_group("forward_124m");
    group.sample_size(10);
    for &(b, t) in &[(1usize, 64usize), (4, 256), (1, 1024)] {
        let tokens = Array2::from_shape_fn((b, t), |(i, j)| ((i * 7919 + j * 104_729) % 50257) as u32);
        group.throughput(Throughput::Elements((b * t) as u64));
        group.bench_with_input(BenchmarkId::new("logits", format!("B{b}xT{t}")), &tokens, |bench, tokens| {
            bench.iter(|| model.logits_batch(tokens.view()).expect("forward"))
        });
    }
    group.finish();
}

criterion_group!(benches, forward_124m);
criterion_main!(benches);
