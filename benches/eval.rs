//! Loss-only evaluation (forward + per-token NLL of every position, token-weighted mean)
//! of the GPT-2 124M shape with random weights.
//!
//! `cargo bench --bench eval` — throughput in scored tokens/s.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gpt2::eval::Evaluator;
use gpt2::{Config, Gpt2};

fn eval_124m(c: &mut Criterion) {
    let model = Gpt2::new_random(Config::gpt2_124m(), 0).expect("model");
    let mut group = c.benchmark_group("eval_124m");
    group.sample_size(10);
    for &(b, t) in &[(4usize, 256usize), (1, 1024)] {
        let rows: Vec<Vec<u32>> =
            (0..b).map(|i| (0..=t).map(|j| ((i * 7919 + j * 104_729) % 50257) as u32).collect()).collect();
        let ev = Evaluator::new(&model).with_batch_size(b).expect("batch size");
        group.throughput(Throughput::Elements((b * t) as u64));
        group.bench_with_input(BenchmarkId::new("evaluate", format!("B{b}xT{t}")), &rows, |bench, rows| {
            bench.iter(|| ev.evaluate(rows).expect("eval").total)
        });
    }
    group.finish();
}

criterion_group!(benches, eval_124m);
criterion_main!(benches);
