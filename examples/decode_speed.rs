//! Times greedy generation with the KV cache (`gpt2::generate`) and reports new tokens/s,
//! time to first token and the weight bandwidth the decode steps achieve.
//! Used by `scripts/compare_forward.py` next to transformers' `generate`.
//!
//! ```text
//! cargo run --release --example decode_speed -- --random 124m --prompt-tokens 16 --new-tokens 128 --dtype bf16 --json
//! ```

mod common;

use std::path::PathBuf;

use clap::Parser;
use gpt2::generate::{generate, GenerateConfig, SamplingParams};
use gpt2::{Config, Gpt2, LoadOptions, Tokenizer, WeightDtype};

/// Greedy decode speed (batch 1).
#[derive(Parser, Debug)]
#[command(version, about = "Greedy decode speed (batch 1).")]
struct Args {
    /// Checkpoint: a directory, a .safetensors file or a Hugging Face hub id (local HF cache);
    /// default: a randomly initialised model (see --random).
    #[arg(long, conflicts_with = "random")]
    model: Option<PathBuf>,
    /// Use a randomly initialised preset instead (gpt2, 124m, 355m, ...).
    #[arg(long)]
    random: Option<String>,
    /// Weight storage for inference: f32, f16, bf16 or int8.
    #[arg(long, default_value = "f32")]
    dtype: WeightDtype,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 16)]
    prompt_tokens: usize,
    /// Tokens to generate (EOS is ignored).
    #[arg(long, default_value_t = 128)]
    new_tokens: usize,
    /// Timed runs (after one warm-up); the median run is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<(), common::MainError> {
    let args = Args::parse();
    let opts = LoadOptions { dtype: args.dtype };
    let model = match (&args.model, &args.random) {
        (Some(p), _) => Gpt2::load_with(common::model_path(Some(p))?, &opts)?,
        (None, name) => {
            let cfg = Config::preset(name.as_deref().unwrap_or("124m"))?;
            Gpt2::new_random(cfg, 0)?.with_weight_dtype(args.dtype)
        }
    };
    let tok = Tokenizer::gpt2()?;
    let v = model.config().vocab_size as u32;
    let prompt: Vec<u32> = (0..args.prompt_tokens).map(|i| (i as u32 * 7919 + 13) % v).collect();
    let cfg = GenerateConfig {
        max_new_tokens: args.new_tokens,
        sampling: SamplingParams::greedy(),
        eos_token_id: None,
        ..Default::default()
    };
    generate(&model, &tok, &prompt, &cfg, None)?; // warm-up
    let mut runs = Vec::with_capacity(args.runs);
    let cpu0 = common::cpu_seconds();
    for _ in 0..args.runs.max(1) {
        runs.push(generate(&model, &tok, &prompt, &cfg, None)?.timing);
    }
    let cpu_per_token = common::cpu_seconds()
        .zip(cpu0)
        .map(|(b, a)| (b - a) / runs.iter().map(|t| t.new_tokens).sum::<usize>().max(1) as f64);
    runs.sort_by(|a, b| a.tokens_per_second.total_cmp(&b.tokens_per_second));
    let t = &runs[runs.len() / 2];
    // decode steps read every matrix once: the packed copy (or the f32 matrices) + nothing else big
    let weight_bytes = match args.dtype {
        WeightDtype::F32 => {
            let c = model.config();
            let per_block = c.n_embd * 3 * c.n_embd + c.n_embd * c.n_embd + 2 * c.n_embd * c.mlp_hidden();
            4 * (c.n_layer * per_block + c.vocab_size * c.n_embd)
        }
        _ => model.packed_bytes(),
    };
    let decode_s = (t.total_seconds - t.time_to_first_token_ms * 1e-3) / t.decode_steps.max(1) as f64;
    let gbs = weight_bytes as f64 / decode_s / 1e9;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "dtype": model.dtype_label(), "prompt_tokens": args.prompt_tokens, "new_tokens": t.new_tokens,
                "tokens_per_second": t.tokens_per_second, "ms_per_token": t.ms_per_token,
                "decode_ms_per_step": decode_s * 1e3, "time_to_first_token_ms": t.time_to_first_token_ms,
                "weight_bytes": weight_bytes, "weight_gb_per_s": gbs, "cpu_ms_per_token": cpu_per_token.map(|c| c * 1e3),
                "threads": rayon::current_num_threads(),
            })
        );
    } else {
        println!(
            "{}: {:.1} new tokens/s, {:.2} ms/step decode, first token {:.1} ms, weights {:.0} MB at {:.1} GB/s, {:.1} CPU-ms/token ({} threads)",
            model.dtype_label(),
            t.tokens_per_second,
            decode_s * 1e3,
            t.time_to_first_token_ms,
            weight_bytes as f64 / 1e6,
            gbs,
            cpu_per_token.unwrap_or(f64::NAN) * 1e3,
            rayon::current_num_threads()
        );
    }
    Ok(())
}
