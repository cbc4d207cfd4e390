//! Generate text with a GPT-2 model — by default the bundled Shakespeare model.
//!
//! ```sh
//! cargo run --release --example generate
//! cargo run --release --example generate -- --prompt "KING HENRY:" --max-new-tokens 60 --stream
//! cargo run --release --example generate -- --greedy --json
//! cargo run --release --example generate -- --model gpt2-124m --prompt "Hello, I'm a language model,"
//! ```
//! Defaults: prompt "ROMEO:", 100 new tokens, temperature 0.8, top-k 40, seed 1337 — except
//! where the model's `generation_config.json` says otherwise (flags given override both).

use std::io::Write;
use std::path::PathBuf;

mod common;

use clap::Parser;
use gpt2::generate::{generate, GenerateConfig, SamplingParams};
use gpt2::{GenerationConfig, Gpt2, Tokenizer};

#[derive(Parser, Debug)]
#[command(version, about = "Generate text with a GPT-2 model (default: the bundled Shakespeare model)")]
struct Args {
    #[arg(long, help = common::MODEL_HELP)]
    model: Option<PathBuf>,
    /// The prompt.
    #[arg(long, default_value = "ROMEO:")]
    prompt: String,
    /// Tokens to generate per sample [default: the model's generation_config.json, else 100].
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Greedy decoding (argmax); ignores the sampling options.
    #[arg(long)]
    greedy: bool,
    /// Softmax temperature [default: generation_config.json, else 0.8].
    #[arg(long)]
    temperature: Option<f32>,
    /// Keep the k most likely tokens, 0 disables [default: generation_config.json, else 40].
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling mass, 1 disables [default: generation_config.json, else 1].
    #[arg(long)]
    top_p: Option<f32>,
    /// Min-p threshold relative to the most likely token (0 disables).
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
    let path = common::model_path(args.model.as_deref())?;
    let model = Gpt2::load_with(&path, &gpt2::LoadOptions { dtype: args.dtype })
        .map_err(|e| format!("cannot load the model at {}: {e}", path.display()))?;
    let prompt = tok.encode(&args.prompt);
    // generation_config.json first, then the flags given
    let mut cfg = GenerateConfig::default();
    if let Some(g) = GenerationConfig::from_checkpoint(&path)? {
        g.apply_to(&mut cfg, prompt.len());
    }
    let s = &mut cfg.sampling;
    if let Some(t) = args.temperature {
        s.temperature = t;
    }
    if let Some(k) = args.top_k {
        s.top_k = (k > 0).then_some(k);
    }
    // exactly 1 / 0 mean "off"; anything else (1.5, NaN, −3) goes to the library's validation
    // and is an error, never silently "off"
    if let Some(p) = args.top_p {
        s.top_p = (p != 1.0).then_some(p);
    }
    s.min_p = (args.min_p != 0.0).then_some(args.min_p);
    s.repetition_penalty = args.repetition_penalty;
    s.no_repeat_ngram_size = args.no_repeat_ngram;
    if args.greedy {
        cfg.sampling = SamplingParams {
            repetition_penalty: args.repetition_penalty,
            no_repeat_ngram_size: args.no_repeat_ngram,
            ..SamplingParams::greedy()
        };
    }
    if let Some(n) = args.max_new_tokens {
        cfg.max_new_tokens = n;
    }
    cfg.seed = args.seed;
    cfg.num_samples = args.num_samples;
    if args.ignore_eos {
        cfg.eos_token_id = None;
        cfg.stop_token_ids.clear();
    }
    cfg.stop_strings = args.stop.clone();
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
            "model": path, "device": model.device_label(), "dtype": model.dtype_label(),
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
