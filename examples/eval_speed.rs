//! Loss-only evaluation throughput (forward + per-token NLL of every position) of
//! B rows of T tokens, median of several runs. Used by `scripts/compare_eval.py`.
//!
//! ```text
//! cargo run --release --example eval_speed -- --random 124m --batch 4 --seq 256 --iters 3 --json
//! cargo run --release --example eval_speed -- --model DIR --batch 1 --seq 1024
//! ```

mod common;

use std::time::Instant;

use clap::Parser;
use gpt2::eval::Evaluator;
use gpt2::{Config, Gpt2};

/// Median wall time of `Evaluator::evaluate` on a [B, T] batch.
#[derive(Parser, Debug)]
#[command(version, about = "Median wall time of `Evaluator::evaluate` on a [B, T] batch.")]
struct Args {
    /// Checkpoint: a directory, a .safetensors file or a Hugging Face hub id (local HF cache);
    /// default: a randomly initialised model (see --random).
    #[arg(long, conflicts_with = "random")]
    model: Option<std::path::PathBuf>,
    /// Use a randomly initialised preset instead (gpt2, 124m, ...) [default: 124m].
    #[arg(long)]
    random: Option<String>,
    /// Rows (batch size).
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Scored tokens per row (each row holds seq + 1 tokens).
    #[arg(long, default_value_t = 256)]
    seq: usize,
    /// Timed iterations (after one warm-up).
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<(), common::MainError> {
    let args = Args::parse();
    let model = match (&args.model, &args.random) {
        (Some(p), _) => Gpt2::load(common::model_path(Some(p))?)?,
        (None, Some(name)) => Gpt2::new_random(Config::preset(name)?, 0)?,
        (None, None) => Gpt2::new_random(Config::gpt2_124m(), 0)?,
    };
    let v = model.config().vocab_size;
    let rows: Vec<Vec<u32>> =
        (0..args.batch).map(|i| (0..=args.seq).map(|j| ((i * 7919 + j * 104_729) % v) as u32).collect()).collect();
    let ev = Evaluator::new(&model).with_batch_size(args.batch)?;
    let mut loss = ev.evaluate(&rows)?.total.mean().unwrap_or(f64::NAN); // warm-up
    let mut times = Vec::new();
    for _ in 0..args.iters.max(1) {
        let t0 = Instant::now();
        loss = ev.evaluate(&rows)?.total.mean().unwrap_or(f64::NAN);
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let tps = (args.batch * args.seq) as f64 / median;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"batch": args.batch, "seq": args.seq, "iters": times.len(), "median_seconds": median,
                               "tokens_per_second": tps, "loss": loss, "threads": rayon::current_num_threads()})
        );
    } else {
        println!(
            "B={} T={}: median {:.3} s, {:.1} tokens/s, loss {:.4} ({} threads)",
            args.batch,
            args.seq,
            median,
            tps,
            loss,
            rayon::current_num_threads()
        );
    }
    Ok(())
}
