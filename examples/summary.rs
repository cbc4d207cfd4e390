//! The results table (model, device, dtype, batch size, avg loss, perplexity, latency,
//! tokens/s, ms/token) of one or more models on the first tokens of a text.
//!
//! ```text
//! cargo run --release --example summary                       # bundled model (or tiny-bpe), Shakespeare val
//! cargo run --release --example summary -- --model A --model B --max-tokens 4096 --json
//! ```

mod common;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use gpt2::eval::{EvalSummary, Evaluator, SlidingWindow};
use gpt2::{Gpt2, Tokenizer};
use indicatif::{ProgressBar, ProgressStyle};

/// Evaluate models on a text and print the summary table.
#[derive(Parser, Debug)]
#[command(version, about = "Evaluate models on a text and print the summary table.")]
struct Args {
    /// Model: a directory, a .safetensors file or a Hugging Face hub id (local HF cache); repeat for
    /// several rows [default: $GPT2_MODEL_DIR, else the bundled model of a checkout, else
    /// openai-community/gpt2 in the HF cache].
    #[arg(long)]
    model: Vec<PathBuf>,
    /// Text file [default: fixtures/corpus/shakespeare_val.txt].
    #[arg(long)]
    file: Option<PathBuf>,
    /// Evaluate only the first N tokens (keeps the run to seconds).
    #[arg(long, default_value_t = 2048)]
    max_tokens: usize,
    /// Windows per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Tokens per window [default: the model's n_positions].
    #[arg(long)]
    max_length: Option<usize>,
    /// Window step [default: max_length / 2].
    #[arg(long)]
    stride: Option<usize>,
    /// Print JSON (an array of summaries).
    #[arg(long)]
    json: bool,
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let models = if args.model.is_empty() {
        vec![common::model_path(None)?]
    } else {
        args.model.iter().map(|m| common::model_path(Some(m))).collect::<Result<Vec<_>, _>>()?
    };
    let file = args
        .file
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/corpus/shakespeare_val.txt"));
    let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let tok = Tokenizer::gpt2()?;
    let mut tokens = tok.encode(&text);
    tokens.truncate(args.max_tokens);

    let mut rows = Vec::new();
    for path in &models {
        let model = Gpt2::load(path).map_err(|e| format!("cannot load the model at {}: {e}", path.display()))?;
        let max_length = args.max_length.unwrap_or(model.config().n_positions);
        let window = SlidingWindow::new(max_length, args.stride.unwrap_or((max_length / 2).max(1)));
        let bar = if args.json { ProgressBar::hidden() } else { ProgressBar::new(0) };
        bar.set_style(ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} windows").expect("template"));
        bar.set_message(path.display().to_string());
        let pb = bar.clone();
        let ev = Evaluator::new(&model).with_batch_size(args.batch_size)?.with_progress(move |d, t| {
            pb.set_length(t as u64);
            pb.set_position(d as u64);
        });
        let start = Instant::now();
        let res = ev.sliding_window(&tokens, window)?;
        let seconds = start.elapsed().as_secs_f64();
        bar.finish_and_clear();
        rows.push(EvalSummary::new(path.display().to_string(), &model, args.batch_size, res.stats, seconds)?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{} ({} tokens)\n", file.display(), tokens.len());
        print!("{}", EvalSummary::table_of(&rows));
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
