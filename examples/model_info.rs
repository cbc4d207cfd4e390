//! Loads a checkpoint and prints its config, parameter count, load time and peak memory;
//! optionally runs one forward pass and reports its peak memory too.
//!
//! ```text
//! cargo run --release --example model_info -- --model fixtures/models/tiny-bpe --json
//! cargo run --release --example model_info -- --model /tmp/gpt2-124m-random --forward 1024 --json
//! cargo run --release --example model_info -- --model /tmp/gpt2-124m-random --decode 256
//! ```
//!
//! Peak memory is Linux's `VmHWM` (peak resident set size). Before the forward pass the peak is
//! reset (`/proc/self/clear_refs`), so `forward_peak_rss_bytes` is the peak during the forward
//! pass alone (model included); `forward_extra_bytes` is what the pass added on top of the
//! resident model. `--decode N` measures greedy decoding through a `KvCache` the same way.

mod common;

use std::time::Instant;

use clap::Parser;
use gpt2::{Gpt2, LogitsMode};
use ndarray::Array2;

/// Print what a checkpoint contains (and what loading and running it costs).
#[derive(Parser, Debug)]
#[command(version, about = "Print what a checkpoint contains (and what loading and running it costs).")]
struct Args {
    /// Checkpoint directory (config.json + model.safetensors) or .safetensors file.
    #[arg(long, help = common::MODEL_HELP)]
    model: Option<std::path::PathBuf>,
    /// After loading, run one forward pass over this many tokens (0: none).
    #[arg(long, default_value_t = 0)]
    forward: usize,
    /// Batch rows for the forward pass.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Compute logits only for the last position (as generation does) instead of all.
    #[arg(long)]
    last_only: bool,
    /// After loading, decode this many tokens greedily through a KvCache (prompt of 8 tokens)
    /// and report that peak separately (0: none).
    #[arg(long, default_value_t = 0)]
    decode: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn status_kb(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Peak resident set size of this process in bytes (Linux `VmHWM`), if known.
fn peak_rss_bytes() -> Option<u64> {
    status_kb("VmHWM:").map(|kb| kb * 1024)
}

/// Current resident set size in bytes (Linux `VmRSS`), if known.
fn rss_bytes() -> Option<u64> {
    status_kb("VmRSS:").map(|kb| kb * 1024)
}

/// Resets the peak RSS to the current RSS (Linux ≥ 4.0); false when unsupported.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn main() -> Result<(), common::MainError> {
    let args = Args::parse();
    let t0 = Instant::now();
    let path = common::model_path(args.model.as_deref())?;
    let model = Gpt2::load(&path).map_err(|e| format!("cannot load the model at {}: {e}", path.display()))?;
    let load_s = t0.elapsed().as_secs_f64();
    let file = if path.is_dir() { path.join("model.safetensors") } else { path.clone() };
    let file_bytes = std::fs::metadata(&file)?.len();
    let rss = peak_rss_bytes();
    let rss_after_load = rss_bytes();
    let mut forward = serde_json::Value::Null;
    if args.forward > 0 {
        let c = model.config();
        let t = args.forward.min(c.n_positions);
        // Size the request before allocating anything (--batch comes from the user): the token
        // batch, the activations (≈ 16·C + heads·T floats per token) and the logits, in u128 so
        // no product overflows; more than the machine has is a typed error, not an abort.
        let per_token = 4 * (1 + 16 * c.n_embd as u128 + (c.n_head * t) as u128)
            + if args.last_only { 0 } else { 4 * c.vocab_size as u128 };
        let need = (args.batch as u128) * (t as u128) * per_token;
        gpt2::mem::ensure_available(need, &format!("a forward pass over [{}, {t}] tokens", args.batch))?;
        let tokens = Array2::from_shape_fn((args.batch, t), |(b, j)| ((b * 7919 + j * 104_729) % c.vocab_size) as u32);
        let reset = reset_peak_rss();
        let base = rss_bytes();
        let opts = gpt2::ForwardOptions {
            logits: if args.last_only { LogitsMode::Last } else { LogitsMode::All },
            ..Default::default()
        };
        let t1 = Instant::now();
        let out = model.forward(&gpt2::ForwardInput::new(tokens.view()), None, &opts)?;
        let secs = t1.elapsed().as_secs_f64();
        let peak = if reset { peak_rss_bytes() } else { None };
        let logits_bytes = out.logits.as_ref().map_or(0, |l| l.len() * 4);
        drop(out);
        forward = serde_json::json!({
            "batch": args.batch,
            "tokens": t,
            "logits": if args.last_only { "last" } else { "all" },
            "seconds": secs,
            "logits_bytes": logits_bytes,
            "forward_peak_rss_bytes": peak,
            "forward_extra_bytes": peak.zip(base).map(|(p, b)| p.saturating_sub(b)),
        });
    }
    let mut decode = serde_json::Value::Null;
    if args.decode > 0 {
        let c = model.config();
        let steps = args.decode.min(c.n_positions.saturating_sub(8));
        let reset = reset_peak_rss();
        let base = rss_bytes();
        let t1 = Instant::now();
        let mut cache = gpt2::KvCache::new(c, 1, 8 + steps)?;
        let opts = gpt2::ForwardOptions { logits: LogitsMode::Last, ..Default::default() };
        let mut input: Vec<u32> = (0..8).map(|j| (j * 104_729 % c.vocab_size) as u32).collect();
        for _ in 0..=steps {
            let t = Array2::from_shape_vec((1, input.len()), input.clone())?;
            if cache.len() + input.len() > cache.capacity() {
                break;
            }
            let out = model.forward(&gpt2::ForwardInput::new(t.view()), Some(&mut cache), &opts)?;
            let logits = out.logits.expect("logits");
            let row = logits.as_slice().expect("contiguous");
            let next = (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap_or(0) as u32;
            input = vec![next];
        }
        let secs = t1.elapsed().as_secs_f64();
        let peak = if reset { peak_rss_bytes() } else { None };
        decode = serde_json::json!({
            "prompt": 8,
            "steps": steps,
            "seconds": secs,
            "cache_capacity": cache.capacity(),
            "decode_peak_rss_bytes": peak,
            "decode_extra_bytes": peak.zip(base).map(|(p, b)| p.saturating_sub(b)),
        });
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": path.display().to_string(),
                "config": model.config(),
                "parameters": model.num_parameters(),
                "file_bytes": file_bytes,
                "load_seconds": load_s,
                "peak_rss_bytes": rss,
                "peak_rss_over_file": rss.map(|r| r as f64 / file_bytes as f64),
                "rss_after_load_bytes": rss_after_load,
                "forward": forward,
                "decode": decode,
            })
        );
    } else {
        let c = model.config();
        println!("model       {}", path.display());
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
        if !forward.is_null() {
            let mb = |k: &str| forward[k].as_u64().map_or("?".into(), |b| format!("{:.1} MB", b as f64 / 1e6));
            println!(
                "forward     [{}, {}] in {:.3} s: peak RSS {} ({} above the loaded model; logits {})",
                forward["batch"],
                forward["tokens"],
                forward["seconds"].as_f64().unwrap_or(0.0),
                mb("forward_peak_rss_bytes"),
                mb("forward_extra_bytes"),
                mb("logits_bytes")
            );
        }
        if !decode.is_null() {
            let mb = |k: &str| decode[k].as_u64().map_or("?".into(), |b| format!("{:.1} MB", b as f64 / 1e6));
            println!(
                "decode      8 + {} tokens in {:.3} s: peak RSS {} ({} above the loaded model)",
                decode["steps"],
                decode["seconds"].as_f64().unwrap_or(0.0),
                mb("decode_peak_rss_bytes"),
                mb("decode_extra_bytes")
            );
        }
    }
    Ok(())
}
