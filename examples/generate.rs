//! Generate text with a GPT-2 model — by default the bundled Shakespeare model.
//!
//! ```sh
//! cargo run --release --example generate
//! cargo run --release --example generate -- --prompt "KING HENRY:" --max-new-tokens 60 --stream
//! cargo run --release --example generate -- --greedy --json
//! cargo run --release --example generate -- --num-beams 4 --num-samples 2 --max-new-tokens 20 --json
//! cargo run --release --example generate -- --greedy --logprobs 3 --max-new-tokens 10 --json
//! cargo run --release --example generate -- --model gpt2-124m --prompt "Hello, I'm a language model,"
//! ```
//! Defaults: prompt "ROMEO:", 100 new tokens, temperature 0.8, top-k 40, seed 1337 — except
//! where the model's `generation_config.json` says otherwise (flags given override both).
//! `--num-beams N` runs beam search (greedy scoring, transformers' rules); `--num-samples`
//! then is the number of best hypotheses returned.

use std::io::Write;
use std::path::PathBuf;

mod common;

use clap::Parser;
use gpt2::generate::{generate, EarlyStopping, GenerateConfig, SamplingParams};
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
    /// Samples to draw (decoded together as one batch); with beams, hypotheses to return.
    #[arg(long, default_value_t = 1)]
    num_samples: usize,
    /// Beam search with this many beams (1: no beam search).
    #[arg(long, default_value_t = 1)]
    num_beams: usize,
    /// Beam search: score = sum of log-probs / length^penalty.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    length_penalty: f32,
    /// Beam search stopping rule: false (heuristic), true (when full) or never.
    #[arg(long, default_value = "false")]
    early_stopping: String,
    /// Per-token log-probabilities with this many alternatives (printed with --json).
    #[arg(long)]
    logprobs: Option<usize>,
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
    if args.greedy || args.num_beams > 1 {
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
    cfg.num_beams = args.num_beams;
    cfg.length_penalty = args.length_penalty;
    cfg.early_stopping = match args.early_stopping.as_str() {
        "false" => EarlyStopping::Heuristic,
        "true" => EarlyStopping::WhenFull,
        "never" => EarlyStopping::Never,
        other => return Err(format!("--early-stopping {other:?}: expected false, true or never").into()),
    };
    cfg.logprobs = args.logprobs;
    if args.ignore_eos {
        cfg.eos_token_id = None;
        cfg.stop_token_ids.clear();
    }
    cfg.stop_strings = args.stop.clone();
    let streaming = args.stream && !args.json && args.num_beams == 1;
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
            .map(|s| {
                serde_json::json!({
                    "text": s.text, "token_ids": s.token_ids, "finish_reason": s.finish_reason,
                    "score": s.score, "logprobs": s.logprobs, "logprob_summary": s.logprob_summary(),
                })
            })
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
        match (s.score, s.logprob_summary()) {
            (Some(score), _) => println!("--- beam {i} (score {score:.4})"),
            (None, Some(lp)) => {
                println!("--- sample {i} (mean log-prob {:.3}, perplexity {:.2})", lp.mean, lp.perplexity)
            }
            _ if out.samples.len() > 1 => println!("--- sample {i}"),
            _ => {}
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
