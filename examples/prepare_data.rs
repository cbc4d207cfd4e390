//! Tokenize text / JSONL files into GPT-2 token shards (`.npy` like build-nanogpt's fineweb.py,
//! or llm.c `.bin`), ready for `DataLoader` / the `train` example.
//!
//! ```text
//! cargo run --release --example prepare_data -- \
//!     --input fixtures/corpus/shakespeare_train.txt --out data/shakespeare --split train
//! cargo run --release --example prepare_data -- \
//!     --input fixtures/corpus/shakespeare_val.txt --out data/shakespeare --split val
//! ```
//! Text files are one document each; `.jsonl` / `.ndjson` files hold one `{"text": ...}` document
//! per line. Every document is preceded by `<|endoftext|>` (50256).

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use gpt2::data::{write_shards, ShardFormat, SplitNaming, WriterOptions};
use gpt2::Tokenizer;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser, Debug)]
#[command(version, about = "Tokenize text / JSONL files into GPT-2 token shards (.npy or llm.c .bin)")]
struct Args {
    /// Input files: UTF-8 text (one document per file) or .jsonl / .ndjson (one document per line).
    #[arg(long, required = true, num_args = 1..)]
    input: Vec<PathBuf>,
    /// Output directory (created if missing; must not already hold shards with this prefix).
    #[arg(long)]
    out: PathBuf,
    /// Tokens per shard; the last shard holds the remainder.
    #[arg(long, default_value_t = 100_000_000)]
    shard_size: usize,
    /// Shard file format.
    #[arg(long, default_value = "npy", value_parser = ["npy", "bin"])]
    format: String,
    /// File-name prefix: shards are named PREFIX_SPLIT_000000.EXT.
    #[arg(long, default_value = "shard")]
    prefix: String,
    /// Split name in the file names (e.g. train, val).
    #[arg(long, default_value = "train", conflicts_with = "first_shard_val")]
    split: String,
    /// fineweb.py naming: the first shard is `val`, all later shards are `train`.
    #[arg(long)]
    first_shard_val: bool,
    /// JSON field holding the document text in .jsonl inputs.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// Do not write <|endoftext|> before each document.
    #[arg(long)]
    no_eot: bool,
    /// Print a JSON summary (no progress bar).
    #[arg(long)]
    json: bool,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> gpt2::Result<()> {
    let mut opts = WriterOptions::new(&args.out);
    opts.shard_size = args.shard_size;
    opts.format = args.format.parse::<ShardFormat>()?;
    opts.prefix = args.prefix.clone();
    opts.naming =
        if args.first_shard_val { SplitNaming::FirstShardVal } else { SplitNaming::Split(args.split.clone()) };
    opts.text_field = args.text_field.clone();
    if args.no_eot {
        opts.eot = None;
    }
    let tokenizer = Tokenizer::gpt2()?;

    let bar = if args.json { ProgressBar::hidden() } else { ProgressBar::new(0) };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} | {msg}")
            .expect("valid template"),
    );
    let start = Instant::now();
    let summary = write_shards(&args.input, &tokenizer, opts, &mut |p| {
        bar.set_length(p.bytes_total);
        bar.set_position(p.bytes_done);
        bar.set_message(format!("{} docs, {} tokens, {} shards", p.documents, p.tokens, p.shards));
    })?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();

    if args.json {
        let mut v = serde_json::to_value(&summary).expect("serializable");
        v["seconds"] = secs.into();
        v["tokens_per_second"] = (summary.tokens as f64 / secs.max(1e-9)).into();
        println!("{}", serde_json::to_string_pretty(&v).expect("serializable"));
    } else {
        for s in &summary.shards {
            println!("{:>12} tokens  {:<5}  {}", s.tokens, s.split, s.path.display());
        }
        println!(
            "{} documents, {} tokens in {} shard(s), {:.1} s ({:.0} tokens/s)",
            summary.documents,
            summary.tokens,
            summary.shards.len(),
            secs,
            summary.tokens as f64 / secs.max(1e-9)
        );
    }
    Ok(())
}
