//! Times the crate's GEMM / GEMV on GPT-2 shapes and prints median GFLOP/s.
//! Used by `scripts/compare_matmul.py` to compare with `torch.nn.functional.linear` in one run.
//!
//! ```text
//! cargo run --release --example matmul_speed -- --shape 1024x768x3072 --iters 10 --json
//! cargo run --release --example matmul_speed -- --shape 1x768x3072 --dtype bf16
//! ```
//! A shape is `MxKxN` (`A[M, K] · B[K, N]`); append `t` (`1024x768x50257t`) for a transposed
//! weight `[N, K]` like the tied LM head. `--dtype` packs the weight ahead of time
//! (f32 packs too; `raw` multiplies the unpacked f32 weight, packing it per call).

mod common;

use std::time::Instant;

use clap::Parser;
use gpt2::kernels::gemm::{gemm, BMat, Epilogue, MatRef, PackedB, WeightDtype};

/// Median GFLOP/s of `C = A·B + bias` on the given shapes.
#[derive(Parser, Debug)]
#[command(version, about = "Median GFLOP/s of `C = A·B + bias` on the given shapes.")]
struct Args {
    /// Shapes `MxKxN[t]` (repeatable).
    #[arg(long = "shape", default_values_t = ["1024x768x2304".to_string(), "1024x768x3072".to_string(), "1024x3072x768".to_string(), "1024x768x50257t".to_string()])]
    shapes: Vec<String>,
    /// Weight storage: raw (unpacked f32), f32, f16, bf16, int8.
    #[arg(long, default_value = "raw")]
    dtype: String,
    /// Timed iterations per shape (after one warm-up).
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Print one JSON object per shape.
    #[arg(long)]
    json: bool,
}

fn parse_shape(s: &str) -> Result<(usize, usize, usize, bool), String> {
    let (body, t) = match s.strip_suffix('t') {
        Some(b) => (b, true),
        None => (s, false),
    };
    let v: Vec<usize> =
        body.split('x').map(|x| x.parse().map_err(|e| format!("bad shape `{s}`: {e}"))).collect::<Result<_, _>>()?;
    match v[..] {
        [m, k, n] => Ok((m, k, n, t)),
        _ => Err(format!("shape `{s}` is not MxKxN")),
    }
}

fn main() -> Result<(), common::MainError> {
    let args = Args::parse();
    let packed_dtype: Option<WeightDtype> = if args.dtype == "raw" { None } else { Some(args.dtype.parse()?) };
    for s in &args.shapes {
        let (m, k, n, transposed) = parse_shape(s)?;
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3).collect();
        let w: Vec<f32> = (0..k * n).map(|i| ((i * 104_729 % 1000) as f32 - 500.0) * 2e-5).collect();
        let bias: Vec<f32> = (0..n).map(|i| i as f32 * 1e-4).collect();
        let bview = if transposed { MatRef::row_major(&w, n, k).t() } else { MatRef::row_major(&w, k, n) };
        let packed = packed_dtype.map(|d| PackedB::new(bview, d));
        let bm = match &packed {
            Some(p) => BMat::Packed(p),
            None => BMat::F32(bview),
        };
        let epi = if transposed { Epilogue::default() } else { Epilogue::bias(&bias) };
        let mut c = vec![0f32; m * n];
        let am = MatRef::row_major(&a, m, k);
        gemm(&mut c, n, am, bm, epi);
        let mut times = Vec::with_capacity(args.iters);
        let cpu0 = common::cpu_seconds();
        for _ in 0..args.iters.max(1) {
            let t0 = Instant::now();
            gemm(&mut c, n, am, bm, epi);
            times.push(t0.elapsed().as_secs_f64());
        }
        let cpu = common::cpu_seconds().zip(cpu0).map(|(b, a)| (b - a) / times.len() as f64);
        let cpu_gflops = cpu.map(|t| 2.0 * (m * k * n) as f64 / t / 1e9);
        std::hint::black_box(&c);
        times.sort_by(|x, y| x.total_cmp(y));
        let med = times[times.len() / 2];
        let gflops = 2.0 * (m * k * n) as f64 / med / 1e9;
        let weight_bytes = packed.as_ref().map_or(k * n * 4, |p| p.bytes());
        let gbs = weight_bytes as f64 / med / 1e9;
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "shape": s, "m": m, "k": k, "n": n, "transposed": transposed, "dtype": args.dtype,
                    "median_seconds": med, "gflops": gflops, "weight_gb_per_s": gbs,
                    "cpu_seconds": cpu, "gflops_per_cpu_second": cpu_gflops,
                    "threads": rayon::current_num_threads(), "kernel": gpt2::kernels::gemm::kernel_name(),
                })
            );
        } else {
            println!(
                "{s:>18} {:>5}: {:8.3} ms  {:7.1} GFLOP/s  {:6.1} GB/s weights  {:7.1} GFLOP/cpu-s  ({} threads, {})",
                args.dtype,
                med * 1e3,
                gflops,
                gbs,
                cpu_gflops.unwrap_or(f64::NAN),
                rayon::current_num_threads(),
                gpt2::kernels::gemm::kernel_name()
            );
        }
    }
    Ok(())
}
