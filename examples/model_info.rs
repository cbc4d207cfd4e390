//! Loads a checkpoint and prints its config, parameter count, load time and peak memory.
//!
//! ```text
//! cargo run --release --example model_info -- --model fixtures/models/tiny-bpe --json
//! ```

use std::time::Instant;

use clap::Parser;
use gpt2::Gpt2;

/// Print what a checkpoint contains.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Checkpoint directory (config.json + model.safetensors) or .safetensors file.
    #[arg(long, default_value_os_t = gpt2::model::io::bundled_model_dir())]
    model: std::path::PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Peak resident set size of this process in bytes (Linux `VmHWM`), if known.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let t0 = Instant::now();
    let model = Gpt2::load(&args.model)?;
    let load_s = t0.elapsed().as_secs_f64();
    let file = if args.model.is_dir() { args.model.join("model.safetensors") } else { args.model.clone() };
    let file_bytes = std::fs::metadata(&file)?.len();
    let rss = peak_rss_bytes();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": args.model.display().to_string(),
                "config": model.config(),
                "parameters": model.num_parameters(),
                "file_bytes": file_bytes,
                "load_seconds": load_s,
                "peak_rss_bytes": rss,
                "peak_rss_over_file": rss.map(|r| r as f64 / file_bytes as f64),
            })
        );
    } else {
        let c = model.config();
        println!("model       {}", args.model.display());
        println!(
            "layers {} · heads {} · n_embd {} · context {} · vocab {}",
            c.n_layer, c.n_head, c.n_embd, c.n_positions, c.vocab_size
        );
        println!("parameters  {}", model.num_parameters());
        println!("file        {:.1} MB", file_bytes as f64 / 1e6);
        println!("load        {:.3} s", load_s);
        if let Some(r) = rss {
            println!("peak RSS    {:.1} MB ({:.2}× the file)", r as f64 / 1e6, r as f64 / file_bytes as f64);
        }
    }
    Ok(())
}
