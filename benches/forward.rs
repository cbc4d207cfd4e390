//! Full forward pass (logits for every position) and one KV-cached decode step of the GPT-2
//! 124M shape with random weights.
//!
//! `cargo bench --bench forward` — throughput in tokens/s. Groups:
//! - `forward_124m`: `logits_batch` at B×T = 1×64, 4×256, 1×1024 (f32), and 4×256 with bf16
//!   weights;
//! - `decode_124m`: one `decode_step` (batch 1) after a 16-token prompt and after 512 tokens,
//!   for f32, f16, bf16 and int8 weights (the cache is truncated back after every step).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gpt2::{Config, ForwardInput, ForwardOptions, Gpt2, KvCache, LogitsMode, WeightDtype};
use ndarray::Array2;

fn tokens(b: usize, t: usize) -> Array2<u32> {
    Array2::from_shape_fn((b, t), |(i, j)| ((i * 7919 + j * 104_729) % 50257) as u32)
}

fn forward_124m(c: &mut Criterion) {
    let mut model = Gpt2::new_random(Config::gpt2_124m(), 0).expect("model");
    let mut group = c.benchmark_group("forward_124m");
    group.sample_size(10).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(10));
    for &(b, t) in &[(1usize, 64usize), (4, 256), (1, 1024)] {
        let ids = tokens(b, t);
        group.throughput(Throughput::Elements((b * t) as u64));
        group.bench_with_input(BenchmarkId::new("logits", format!("B{b}xT{t}")), &ids, |bench, ids| {
            bench.iter(|| model.logits_batch(ids.view()).expect("forward"))
        });
    }
    model.set_weight_dtype(WeightDtype::BF16);
    let ids = tokens(4, 256);
    group.throughput(Throughput::Elements(4 * 256));
    group.bench_with_input(BenchmarkId::new("logits_bf16", "B4xT256"), &ids, |bench, ids| {
        bench.iter(|| model.logits_batch(ids.view()).expect("forward"))
    });
    group.finish();
}

fn decode_124m(c: &mut Criterion) {
    let mut model = Gpt2::new_random(Config::gpt2_124m(), 0).expect("model");
    let mut group = c.benchmark_group("decode_124m");
    group.sample_size(20).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    let v = model.config().vocab_size;
    let opts = ForwardOptions { logits: LogitsMode::Last, ..Default::default() };
    for dtype in [WeightDtype::F32, WeightDtype::F16, WeightDtype::BF16, WeightDtype::Int8] {
        model.set_weight_dtype(dtype);
        for &past in &[16usize, 512] {
            let mut cache = KvCache::new(model.config(), 1, past + 1).expect("cache");
            model.forward(&ForwardInput::new(tokens(1, past).view()), Some(&mut cache), &opts).expect("prefill");
            let mut logits = vec![0f32; v];
            group.bench_function(BenchmarkId::new(dtype.label(), format!("past{past}")), |bench| {
                bench.iter(|| {
                    model.decode_step(&[42], &mut cache, &mut logits).expect("step");
                    cache.truncate(past);
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, forward_124m, decode_124m);
criterion_main!(benches);
