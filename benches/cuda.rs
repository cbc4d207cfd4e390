//! GPU forward and decode throughput of the GPT-2 124M shape (random weights).
//!
//! `cargo bench --features cuda --bench cuda` — tokens/s. Every iteration ends
//! with an explicit `synchronize()` on the model's stream (forward calls also
//! synchronise when they copy results back), so timings cover the GPU work.
//! Without a usable GPU the bench prints why and exits successfully.
//!
//! Groups: `cuda_forward` (full forward, logits of every position, f32 and f16
//! weights) and `cuda_decode` (one token per step with a device KV cache holding
//! 128 prompt positions, last-position logits).

use criterion::{BenchmarkId, Criterion, Throughput};
use gpt2::cuda::CudaModel;
use gpt2::device::WeightDtype;
use gpt2::{Config, Device, ForwardInput, ForwardOptions, Gpt2, LogitsMode};
use ndarray::Array2;

fn tokens(b: usize, t: usize) -> Array2<u32> {
    Array2::from_shape_fn((b, t), |(i, j)| ((i * 7919 + j * 104_729) % 50257) as u32)
}

fn cuda_forward(c: &mut Criterion, cpu: &Gpt2, dev: Device) {
    let mut group = c.benchmark_group("cuda_forward");
    group.sample_size(20);
    for dtype in [WeightDtype::F32, WeightDtype::F16] {
        let gpu = CudaModel::new(cpu, dev, dtype).expect("upload");
        for &(b, t) in &[(1usize, 128usize), (8, 1024)] {
            let tok = tokens(b, t);
            group.throughput(Throughput::Elements((b * t) as u64));
            group.bench_with_input(
                BenchmarkId::new(format!("logits_{dtype}"), format!("B{b}xT{t}")),
                &tok,
                |bench, tok| {
                    bench.iter(|| {
                        let out = gpu.logits_batch(tok.view()).expect("forward");
                        gpu.synchronize().expect("sync");
                        out
                    })
                },
            );
        }
    }
    group.finish();
}

fn cuda_decode(c: &mut Criterion, cpu: &Gpt2, dev: Device) {
    let mut group = c.benchmark_group("cuda_decode");
    group.sample_size(20);
    let last = ForwardOptions { logits: LogitsMode::Last, ..Default::default() };
    for dtype in [WeightDtype::F32, WeightDtype::F16] {
        let gpu = CudaModel::new(cpu, dev, dtype).expect("upload");
        for &b in &[1usize, 8] {
            let prompt = tokens(b, 128);
            let step = tokens(b, 1);
            let mut cache = gpu.new_cache(b, 1024).expect("cache");
            group.throughput(Throughput::Elements(b as u64));
            group.bench_function(BenchmarkId::new(format!("step_{dtype}"), format!("B{b}_past128")), |bench| {
                bench.iter(|| {
                    // Keep the cache at 128 + 1 positions so every step costs the same.
                    if cache.is_empty() {
                        gpu.forward(&ForwardInput::new(prompt.view()), Some(&mut cache), &last).expect("prefill");
                    }
                    cache.truncate(128);
                    let out = gpu.forward(&ForwardInput::new(step.view()), Some(&mut cache), &last).expect("decode");
                    gpu.synchronize().expect("sync");
                    out
                })
            });
        }
    }
    group.finish();
}

fn main() {
    let dev = match Device::Cuda(0).resolve() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cuda benches skipped: no CUDA device ({e})");
            return;
        }
    };
    let cpu = Gpt2::new_random(Config::gpt2_124m(), 0).expect("model");
    let mut c = Criterion::default().configure_from_args();
    cuda_forward(&mut c, &cpu, dev);
    cuda_decode(&mut c, &cpu, dev);
    c.final_summary();
}
