//! One training step (forward + backward + AdamW, gradient clipping) at several shapes.
//!
//! `cargo bench --bench train` — throughput in tokens/s. Shapes: GPT-2 124M at B=4, T=64 (the
//! llm.c / PyTorch reference shape), a 4-layer 128-wide model with the full 50257 vocabulary at
//! B=8, T=128 (the bundled Shakespeare model's shape), and the weather task's nano model.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gpt2::train::{AdamWConfig, LrSchedule, Trainer, TrainerConfig};
use gpt2::{Config, Gpt2};
use ndarray::Array2;

fn trainer(cfg: Config) -> Trainer {
    let model = Gpt2::new_random(cfg, 0).expect("model");
    let tc = TrainerConfig {
        optimizer: AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, ..Default::default() },
        schedule: LrSchedule::Constant(1e-4),
        grad_clip: Some(1.0),
        ..Default::default()
    };
    Trainer::new(model, tc).expect("trainer")
}

fn step(c: &mut Criterion) {
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    let shapes = [
        ("124m", Config::gpt2_124m(), 4usize, 64usize),
        ("4L-128d-50257v", Config::new(4, 4, 128, 128, 50257), 8, 128),
        ("nano-weather", Config::nano(11, 8), 64, 11),
    ];
    for (name, cfg, b, t) in shapes {
        let v = cfg.vocab_size;
        let mut tr = trainer(cfg);
        let x = Array2::from_shape_fn((b, t), |(i, j)| ((i * 7919 + j * 104_729) % v) as u32);
        let y = Array2::from_shape_fn((b, t), |(i, j)| ((i * 7919 + j * 104_729 + 1) % v) as i32);
        group.throughput(Throughput::Elements((b * t) as u64));
        group.bench_function(BenchmarkId::new(name, format!("B{b}xT{t}")), |bench| {
            bench.iter(|| tr.step_on(&[(x.view(), y.view())]).expect("step"))
        });
    }
    group.finish();
}

criterion_group!(benches, step);
criterion_main!(benches);
