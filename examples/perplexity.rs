//! Perplexity of a text or file with a sliding window (HF "perplexity of
//! fixed-length models" windows, scored exactly), plus the guide's own number.
//!
//! ```text
//! cargo run --release --example perplexity -- --file fixtures/corpus/shakespeare_val.txt \
//!     --max-length 128 --stride 64 --batch-size 8
//! cargo run --release --example perplexity -- --text "To be, or not to be" --json
//! ```
//! The file is read, tokenized and scored as a stream (blocks of about 1 MiB cut where GPT-2's
//! pre-tokenizer always splits; windows scored a block at a time), so memory does not grow with
//! the file: a 200 MB text runs in about the memory of the model.
//!
//! JSON keys: model, device, dtype, batch_size, tokens, avg_loss, perplexity, seconds,
//! tokens_per_second, plus max_length, stride, windows, hf_guide {avg_loss, perplexity, ...} and
//! per_text {bytes, words, bits_per_byte, byte_perplexity, word_perplexity} (lm-eval's definitions).

mod common;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{ArgGroup, Parser};
use gpt2::data::writer::read_text_blocks;
use gpt2::eval::stats::WordCounter;
use gpt2::eval::{EvalSummary, Evaluator, SlidingWindow};
use gpt2::{Gpt2, Tokenizer};
use indicatif::{ProgressBar, ProgressStyle};

/// Sliding-window perplexity of a text under a GPT-2 model.
#[derive(Parser, Debug)]
#[command(version, about = "Sliding-window perplexity of a text under a GPT-2 model.", group(ArgGroup::new("input").required(true).args(["file", "text"])))]
struct Args {
    #[arg(long, help = common::MODEL_HELP)]
    model: Option<PathBuf>,
    /// UTF-8 text file, evaluated as one token stream.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Text given on the command line.
    #[arg(long)]
    text: Option<String>,
    /// Windows per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Tokens per window [default: the model's n_positions].
    #[arg(long)]
    max_length: Option<usize>,
    /// Window step [default: max_length / 2, as in the HF guide].
    #[arg(long)]
    stride: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Inference weight storage: f32, f16, bf16 or int8.
    #[arg(long, default_value = "f32")]
    dtype: gpt2::WeightDtype,
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let path = common::model_path(args.model.as_deref())?;
    let model = Gpt2::load_with(&path, &gpt2::LoadOptions { dtype: args.dtype })
        .map_err(|e| format!("cannot load the model at {}: {e}", path.display()))?;
    let tok = Tokenizer::gpt2()?;
    let max_length = args.max_length.unwrap_or(model.config().n_positions);
    let window = SlidingWindow::new(max_length, args.stride.unwrap_or((max_length / 2).max(1)));
    let ev = Evaluator::new(&model).with_batch_size(args.batch_size)?;
    let mut stream = ev.sliding_window_stream(window)?;

    let total_bytes = match (&args.file, &args.text) {
        (Some(f), _) => std::fs::metadata(f).map(|m| m.len()).unwrap_or(0),
        (None, Some(t)) => t.len() as u64,
        (None, None) => unreachable!("clap requires --file or --text"),
    };
    let bar = if args.json { ProgressBar::hidden() } else { ProgressBar::new(total_bytes) };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}").expect("template"),
    );
    let start = Instant::now();
    let (mut words, mut bytes, mut ids) = (WordCounter::default(), 0usize, Vec::new());
    let mut feed = |text: &str| -> gpt2::Result<()> {
        ids.clear();
        tok.encode_into(text, &mut ids);
        stream.push(&ids)?;
        words.push(text);
        bytes += text.len();
        bar.set_position(bytes as u64);
        Ok(())
    };
    match (&args.file, &args.text) {
        (Some(f), _) => {
            let file = gpt2::fsutil::open_regular(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            read_text_blocks(f, file, 1 << 20, &mut feed)?;
        }
        (None, Some(t)) => feed(t)?,
        (None, None) => unreachable!("clap requires --file or --text"),
    }
    let res = stream.finish()?;
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();

    let summary = EvalSummary::new(path.display().to_string(), &model, args.batch_size, res.stats, seconds)?;
    let per_text = res.stats.per_counts(bytes, words.words())?;
    if args.json {
        let mut v = serde_json::to_value(&summary)?;
        v["max_length"] = window.max_length.into();
        v["stride"] = window.stride.into();
        v["windows"] = res.windows.into();
        v["hf_guide"] = serde_json::to_value(res.hf_guide)?;
        v["per_text"] = serde_json::to_value(per_text)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", summary.table());
        println!(
            "exact: {} tokens (every token after the first, once) in {} windows of ≤ {} tokens, stride {}",
            res.stats.tokens, res.windows, window.max_length, window.stride
        );
        println!(
            "per text ({} bytes, {} words as lm-eval counts them): bits/byte {:.4}, byte perplexity {:.4}, \
             word perplexity {:.3}",
            per_text.bytes, per_text.words, per_text.bits_per_byte, per_text.byte_perplexity, per_text.word_perplexity
        );
        println!(
            "HF-guide recipe (for comparison with published numbers): avg loss {:.4}, perplexity {:.3} \
             ({} tokens counted, {} scored, {} windows)",
            res.hf_guide.avg_loss,
            res.hf_guide.perplexity,
            res.hf_guide.counted_tokens,
            res.hf_guide.scored_tokens,
            res.hf_guide.windows
        );
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
