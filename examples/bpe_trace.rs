//! Shows how GPT-2's byte-level BPE tokenizes a text: the pre-tokenized pieces and, for each,
//! every merge (pair and rank) down to the final tokens.
//!
//! ```text
//! cargo run --release --example bpe_trace -- --text "Your drawing is charmingly anachronistic."
//! ```

use std::process::ExitCode;

use clap::Parser;
use gpt2::tokenizer::trace::BpeTracer;
use gpt2::Tokenizer;

/// Trace GPT-2 BPE merges on a text.
#[derive(Parser, Debug)]
#[command(version, about = "Trace GPT-2 BPE merges on a text.")]
struct Args {
    /// Text to tokenize.
    #[arg(long)]
    text: String,
    /// Print the trace as JSON.
    #[arg(long)]
    json: bool,
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let tok = Tokenizer::gpt2()?;
    let trace = BpeTracer::new(&tok)?.trace(&args.text)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&trace)?);
    } else {
        print!("{trace}");
        println!("{} tokens, {} merges: {}", trace.tokens().len(), trace.num_merges(), trace.token_strings().join(" "));
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
