//! Generate text with a GPT-2 model — by default the bundled Shakespeare model.
//!
//! ```sh
//! cargo run --release --example generate
//! cargo run --release --example generate -- --prompt "KING HENRY:" --max-new-tokens 60 --stream
//! cargo run --release --example generate -- --greedy --json
//! cargo run --release --example generate -- --model gpt2-124m --prompt "Hello, I'm a language model,"
//! ```
//! Defaults: prompt "ROMEO:", 100 new tokens, temperature 0.8, top-k 40, seed 1337.

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use gpt2::generate::{generate, GenerateConfig, SamplingParams};
use gpt2::{Gpt2, Tokenizer};

#[derive(Parser, Debug)]
#[command(about = "Generate text with a GPT-2 model (default: the bundled Shakespeare model)")]
struct Args {
    /// Model directory (config.json + model.safetensors) or .safetensors file; default: the bundled model.
    #[arg(long, default_value_os_t = gpt2::model::io::bundled_model_dir())]
    model: PathBuf,
    /// The prompt.
    #[arg(long, default_value = "ROMEO:")]
    prompt: String,
    /// Tokens to generate per sample.
    #[arg(long, default_value_t = 100)]
    max_new_tokens: usize,
    /// Greedy decoding (argmax); ignores the sampling options.
    #[arg(long)]
    greedy: bool,
    /// Softmax temperature.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Keep the k most likely tokens (0 disables).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Nucleus sampling mass in (0, 1] (1 disables).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Min-p threshold in [0, 1] relative to the most likely token (0 disables).
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// Repetition penalty (1 disables).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Forbid repeating n-grams of this size (0 disables).
    #[arg(long, default_value_t = 0)]
    no_repeat_ngram: usize,
    /// Stop strings (repeatable).
    #[arg(long = "stop")]
    stop: Vec<String>,
    /// Do not stop at <|endoftext|>.
    #[arg(long)]
    ignore_eos: bool,
    /// Random seed.
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Samples to draw (decoded together as one batch).
    #[arg(long, default_value_t = 1)]
    num_samples: usize,
    /// Print text as it is generated.
    #[arg(long)]
    stream: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Inference weight storage: f32, f16, bf16 or int8.
    #[arg(long, default_value = "f32")]
    dtype: gpt2::WeightDtype,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let tok = Tokenizer::gpt2()?;
    let model = Gpt2::load_with(&args.model, &gpt2::LoadOptions { dtype: args.dtype })
        .map_err(|e| format!("cannot load the model at {}: {e} (pass --model DIR)", args.model.display()))?;
    let sampling = if args.greedy {
        SamplingParams {
            repetition_penalty: args.repetition_penalty,
            no_repeat_ngram_size: args.no_repeat_ngram,
            ..SamplingParams::greedy()
        }
    } else {
        SamplingParams {
            temperature: args.temperature,
            top_k: (args.top_k > 0).then_some(args.top_k),
            // exactly 1 / 0 mean "off"; anything else (1.5, NaN, −3) goes to the library's
            // validation and is an error, never silently "off"
            top_p: (args.top_p != 1.0).then_some(args.top_p),
            min_p: (args.min_p != 0.0).then_some(args.min_p),
            repetition_penalty: args.repetition_penalty,
            no_repeat_ngram_size: args.no_repeat_ngram,
        }
    };
    let cfg = GenerateConfig {
        max_new_tokens: args.max_new_tokens,
        sampling,
        seed: args.seed,
        num_samples: args.num_samples,
        eos_token_id: if args.ignore_eos { None } else { Some(gpt2::generate::EOT) },
        stop_token_ids: Vec::new(),
        stop_strings: args.stop.clone(),
    };
    let prompt = tok.encode(&args.prompt);
    let streaming = args.stream && !args.json;
    if streaming {
        print!("{}", args.prompt);
        std::io::stdout().flush()?;
    }
    let mut show = |i: usize, piece: &str| {
        if i == 0 {
            print!("{piece}");
            let _ = std::io::stdout().flush();
        }
    };
    let out = generate(&model, &tok, &prompt, &cfg, if streaming { Some(&mut show) } else { None })?;
    let t = &out.timing;
    if args.json {
        let samples: Vec<_> = out
            .samples
            .iter()
            .map(|s| serde_json::json!({"text": s.text, "token_ids": s.token_ids, "finish_reason": s.finish_reason}))
            .collect();
        let j = serde_json::json!({
            "model": args.model, "device": model.device_label(), "dtype": model.dtype_label(),
            "prompt": args.prompt, "samples": samples, "prompt_tokens": t.prompt_tokens, "new_tokens": t.new_tokens,
            "time_to_first_token_ms": t.time_to_first_token_ms, "total_seconds": t.total_seconds,
            "tokens_per_second": t.tokens_per_second, "ms_per_token": t.ms_per_token,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    for (i, s) in out.samples.iter().enumerate() {
        if streaming && i == 0 {
            println!();
            continue;
        }
        if out.samples.len() > 1 {
            println!("--- sample {i}");
        }
        println!("{}{}", args.prompt, s.text);
    }
    eprintln!(
        "\n[{} prompt + {} new tokens | first token {:.1} ms | {:.1} ms/token | {:.1} tokens/s | {}, {}]",
        t.prompt_tokens,
        t.new_tokens,
        t.time_to_first_token_ms,
        t.ms_per_token,
        t.tokens_per_second,
        model.device_label(),
        model.dtype_label()
    );
    Ok(())
}
