//! Measures what reduced-precision inference weights cost: logits error against the f32
//! model, greedy (argmax) agreement and perplexity on held-out text, for f16, bf16 and int8.
//! The numbers in docs/numerics.md come from this example.
//!
//! ```text
//! cargo run --release --example precision_error -- --tokens 16384 --json
//! cargo run --release --example precision_error -- --random 124m --tokens 2048
//! ```

mod common;

use std::path::PathBuf;

use clap::Parser;
use gpt2::eval::{Evaluator, SlidingWindow};
use gpt2::{Config, Gpt2, Tokenizer, WeightDtype};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::Array2;

/// Reduced-precision weights vs f32: logits error, argmax agreement, perplexity.
#[derive(Parser, Debug)]
#[command(version, about = "Reduced-precision weights vs f32: logits error, argmax agreement, perplexity.")]
struct Args {
    #[arg(long, conflicts_with = "random", help = common::MODEL_HELP)]
    model: Option<PathBuf>,
    /// Use a randomly initialised preset instead (124m, ...); perplexity is then meaningless
    /// but the logits error is still measured.
    #[arg(long)]
    random: Option<String>,
    /// Text to evaluate [default: fixtures/corpus/shakespeare_val.txt].
    #[arg(long)]
    file: Option<PathBuf>,
    /// Tokens of the text to use.
    #[arg(long, default_value_t = 16384)]
    tokens: usize,
    /// Dtypes to compare with f32.
    #[arg(long, value_delimiter = ',', default_value = "f16,bf16,int8")]
    dtypes: Vec<WeightDtype>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Logits of non-overlapping windows `[rows, T, V]`, flattened.
fn window_logits(model: &Gpt2, tokens: &[u32], t: usize) -> Vec<f32> {
    let rows = tokens.len() / t;
    let mut all = Vec::new();
    for chunk in (0..rows).collect::<Vec<_>>().chunks(4) {
        let ids = Array2::from_shape_fn((chunk.len(), t), |(i, j)| tokens[chunk[i] * t + j]);
        all.extend(model.logits_batch(ids.view()).expect("forward").iter());
    }
    all
}

fn main() -> Result<(), common::MainError> {
    let args = Args::parse();
    let mut model = match (&args.model, &args.random) {
        (Some(p), _) => Gpt2::load(common::model_path(Some(p))?)?,
        (None, Some(name)) => Gpt2::new_random(Config::preset(name)?, 0)?,
        (None, None) => Gpt2::load(common::model_path(None)?)?,
    };
    let file = args
        .file
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/corpus/shakespeare_val.txt"));
    let tok = Tokenizer::gpt2()?;
    let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut tokens = tok.encode(&text);
    tokens.truncate(args.tokens);
    let t = model.config().n_positions.min(256);
    let v = model.config().vocab_size;
    let window = SlidingWindow::new(t, t / 2);

    let bar = if args.json { ProgressBar::hidden() } else { ProgressBar::new(1 + args.dtypes.len() as u64) };
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").expect("template"));
    bar.set_message("f32");
    let ref_logits = window_logits(&model, &tokens, t);
    let ref_ppl = Evaluator::new(&model).sliding_window(&tokens, window)?.perplexity;
    bar.inc(1);
    let rms_ref = (ref_logits.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / ref_logits.len() as f64).sqrt();
    let mut rows = Vec::new();
    for &dtype in &args.dtypes {
        bar.set_message(dtype.label());
        model.set_weight_dtype(dtype);
        let got = window_logits(&model, &tokens, t);
        let (mut max_abs, mut sq) = (0f64, 0f64);
        for (&a, &b) in got.iter().zip(&ref_logits) {
            let d = (a - b).abs() as f64;
            max_abs = max_abs.max(d);
            sq += d * d;
        }
        let rms = (sq / got.len() as f64).sqrt();
        let positions = got.len() / v;
        let agree = (0..positions)
            .filter(|&p| {
                let am = |x: &[f32]| x.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i);
                am(&got[p * v..(p + 1) * v]) == am(&ref_logits[p * v..(p + 1) * v])
            })
            .count();
        let ppl = Evaluator::new(&model).sliding_window(&tokens, window)?.perplexity;
        rows.push(serde_json::json!({
            "dtype": dtype.label(), "max_abs_logit_error": max_abs, "rms_logit_error": rms,
            "rms_error_relative": rms / rms_ref, "argmax_agreement": agree as f64 / positions as f64,
            "perplexity": ppl, "perplexity_change": ppl / ref_ppl - 1.0, "packed_bytes": model.packed_bytes(),
        }));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let info = serde_json::json!({
        "model": args.random.clone().unwrap_or_else(|| args.model.as_ref().map_or_else(|| "default model".to_string(), |m| m.display().to_string())),
        "text": file.display().to_string(), "tokens": tokens.len(), "window": t,
        "f32_perplexity": ref_ppl, "rms_logit": rms_ref, "rows": rows,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        println!(
            "{} tokens of {}, windows of {t}; f32 perplexity {ref_ppl:.4}, RMS logit {rms_ref:.3}",
            tokens.len(),
            file.display()
        );
        println!("| dtype | max abs logit error | RMS error (rel.) | argmax agreement | perplexity | Δ perplexity |");
        println!("|---|---|---|---|---|---|");
        for r in info["rows"].as_array().expect("rows") {
            println!(
                "| {} | {:.3e} | {:.3e} ({:.2e}) | {:.2}% | {:.4} | {:+.3}% |",
                r["dtype"].as_str().unwrap_or(""),
                r["max_abs_logit_error"].as_f64().unwrap_or(f64::NAN),
                r["rms_logit_error"].as_f64().unwrap_or(f64::NAN),
                r["rms_error_relative"].as_f64().unwrap_or(f64::NAN),
                100.0 * r["argmax_agreement"].as_f64().unwrap_or(f64::NAN),
                r["perplexity"].as_f64().unwrap_or(f64::NAN),
                100.0 * r["perplexity_change"].as_f64().unwrap_or(f64::NAN),
            );
        }
    }
    Ok(())
}
