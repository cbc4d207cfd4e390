//! Writes a randomly initialised GPT-2 checkpoint (HF layout: config.json + model.safetensors),
//! e.g. a 124M-shaped model to measure load time and memory without downloading weights.
//!
//! ```text
//! cargo run --release --example random_checkpoint -- --preset gpt2 --out /tmp/gpt2-124m-random
//! cargo run --release --example model_info -- --model /tmp/gpt2-124m-random --forward 1024
//! ```

mod common;

use clap::Parser;
use gpt2::{Config, Gpt2, SaveDtype};
use indicatif::ProgressBar;

/// Write a random GPT-2 checkpoint.
#[derive(Parser, Debug)]
#[command(version, about = "Write a random GPT-2 checkpoint.")]
struct Args {
    /// Config preset: gpt2, gpt2-medium, gpt2-large, gpt2-xl, nano.
    #[arg(long, default_value = "gpt2")]
    preset: String,
    /// Output directory.
    #[arg(long)]
    out: std::path::PathBuf,
    /// Initialisation seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Storage dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<(), common::MainError> {
    let args = Args::parse();
    let config = Config::preset(&args.preset)?;
    let dtype = match args.dtype.as_str() {
        "f32" => SaveDtype::F32,
        "f16" => SaveDtype::F16,
        "bf16" => SaveDtype::BF16,
        other => return Err(format!("unknown dtype `{other}` (f32, f16 or bf16)").into()),
    };
    let bar = if args.json { ProgressBar::hidden() } else { ProgressBar::new_spinner() };
    bar.set_message("initialising");
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    let model = Gpt2::new_random(config, args.seed)?;
    bar.set_message("saving");
    model.save_with_dtype(&args.out, dtype)?;
    bar.finish_and_clear();
    let bytes = std::fs::metadata(args.out.join("model.safetensors"))?.len();
    if args.json {
        println!(
            "{}",
            serde_json::json!({"out": args.out.display().to_string(), "parameters": model.num_parameters(), "file_bytes": bytes})
        );
    } else {
        println!("wrote {} ({} parameters, {:.1} MB)", args.out.display(), model.num_parameters(), bytes as f64 / 1e6);
    }
    Ok(())
}
