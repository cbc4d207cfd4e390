//! Times the full forward pass (logits for all positions) and prints the median.
//! Used by `scripts/compare_forward.py` to compare with PyTorch in one run.
//!
//! ```text
//! cargo run --release --example forward_speed -- --model DIR --batch 4 --seq 256 --iters 5 --json
//! cargo run --release --example forward_speed -- --random 124m --batch 1 --seq 1024 --dtype bf16
//! ```

mod common;

use std::time::Instant;

use clap::Parser;
use gpt2::{Config, Gpt2};
use ndarray::Array2;

/// Median wall time of the full forward pass.
#[derive(Parser, Debug)]
#[command(version, about = "Median wall time of the full forward pass.")]
struct Args {
    /// Checkpoint: a directory, a .safetensors file or a Hugging Face hub id (local HF cache);
    /// default: a randomly initialised model (see --random).
    #[arg(long, conflicts_with = "random")]
    model: Option<std::path::PathBuf>,
    /// Use a randomly initialised preset instead (gpt2, 124m, 355m, ...).
    #[arg(long)]
    random: Option<String>,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Sequence length.
    #[arg(long, default_value_t = 256)]
    seq: usize,
    /// Timed iterations (after one warm-up).
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Inference weight storage: f32, f16, bf16 or int8.
    #[arg(long, default_value = "f32")]
    dtype: gpt2::WeightDtype,
}

fn main() -> Result<(), common::MainError> {
    let args = Args::parse();
    let model = match (&args.model, &args.random) {
        (Some(p), _) => Gpt2::load(common::model_path(Some(p))?)?,
        (None, Some(name)) => Gpt2::new_random(Config::preset(name)?, 0)?,
        (None, None) => Gpt2::new_random(Config::gpt2_124m(), 0)?,
    }
    .with_weight_dtype(args.dtype);
    let v = model.config().vocab_size as u32;
    let tokens = Array2::from_shape_fn((args.batch, args.seq), |(i, j)| ((i * 7919 + j * 104_729) as u32) % v);
    model.logits_batch(tokens.view())?; // warm-up
    let mut times = Vec::with_capacity(args.iters);
    let cpu0 = common::cpu_seconds();
    for _ in 0..args.iters.max(1) {
        let t0 = Instant::now();
        let out = model.logits_batch(tokens.view())?;
        times.push(t0.elapsed().as_secs_f64());
        std::hint::black_box(out);
    }
    let cpu = common::cpu_seconds().zip(cpu0).map(|(b, a)| (b - a) / times.len() as f64);
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = times[times.len() / 2];
    let tps = (args.batch * args.seq) as f64 / median;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "batch": args.batch, "seq": args.seq, "iters": times.len(), "dtype": model.dtype_label(),
                "median_seconds": median, "tokens_per_second": tps, "cpu_seconds_per_iter": cpu,
                "threads": rayon::current_num_threads(),
            })
        );
    } else {
        println!(
            "B={} T={}: median {:.3} s, {:.1} tokens/s, {:.3} CPU-s per iteration ({} threads)",
            args.batch,
            args.seq,
            median,
            tps,
            cpu.unwrap_or(f64::NAN),
            rayon::current_num_threads()
        );
    }
    Ok(())
}
