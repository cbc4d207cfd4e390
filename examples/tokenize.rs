//! Tokenize text with GPT-2's byte-level BPE and show ids and token strings.
//!
//! ```text
//! cargo run --release --example tokenize -- --text "Hello world"
//! cargo run --release --example tokenize -- --text "Hello world" --json
//! ```

mod common;

use std::io::Read;

use clap::Parser;
use gpt2::Tokenizer;

/// Tokenize text with the GPT-2 tokenizer (r50k_base, vocabulary built in).
#[derive(Parser, Debug)]
#[command(version, about = "Tokenize text with the GPT-2 tokenizer (r50k_base, vocabulary built in).")]
struct Args {
    /// Text to tokenize (reads standard input when neither --text nor --file is given).
    #[arg(long, conflicts_with = "file")]
    text: Option<String>,
    /// File whose contents to tokenize.
    #[arg(long)]
    file: Option<std::path::PathBuf>,
    /// Treat `<|endoftext|>` in the text as the special EOT token.
    #[arg(long)]
    allow_special: bool,
    /// Print machine-readable JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<(), common::MainError> {
    let args = Args::parse();
    let text = match (&args.text, &args.file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?,
        (None, None) => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        }
    };
    let tok = Tokenizer::gpt2()?;
    let ids = if args.allow_special { tok.encode_with_special(&text) } else { tok.encode(&text) };
    let strings = tok.token_strings(&ids)?;
    if args.json {
        let out = serde_json::json!({
            "text": text,
            "n_tokens": ids.len(),
            "ids": ids,
            "tokens": strings,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{} tokens", ids.len());
        for (id, s) in ids.iter().zip(&strings) {
            println!("{id:>6}  {s}");
        }
    }
    Ok(())
}
