//! Attention maps of a text: a self-contained HTML head view (every layer and head) plus a PNG and
//! an SVG heatmap of one layer/head.
//!
//! ```text
//! cargo run --release --example attention_map -- --model fixtures/models/tiny-bpe \
//!     --text "The cat sat on the mat because it was warm." --out /tmp/attention --layer 1 --head 2
//! ```
//! Writes `OUT/attention.html`, `OUT/attention_l{L}_h{H}.png` and `OUT/attention_l{L}_h{H}.svg`.

use std::path::PathBuf;

mod common;
use std::process::ExitCode;

use clap::Parser;
use gpt2::inspect::AttentionView;
use gpt2::{Gpt2, Tokenizer};
use serde_json::json;

/// Render a model's attention on a text as HTML, PNG and SVG.
#[derive(Parser, Debug)]
#[command(version, about = "Render a model's attention on a text as HTML, PNG and SVG.")]
struct Args {
    #[arg(long, help = common::MODEL_HELP)]
    model: Option<PathBuf>,
    /// Text to run the model on (GPT-2 BPE).
    #[arg(long)]
    text: String,
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Layer of the PNG/SVG heatmap [default: the last layer].
    #[arg(long)]
    layer: Option<usize>,
    /// Head of the PNG/SVG heatmap.
    #[arg(long, default_value_t = 0)]
    head: usize,
    /// Pixels per attention weight in the PNG.
    #[arg(long, default_value_t = 24)]
    cell: usize,
    /// Print a JSON summary instead of text.
    #[arg(long)]
    json: bool,
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let path = common::model_path(args.model.as_deref())?;
    let model = Gpt2::load(&path).map_err(|e| format!("cannot load the model at {}: {e}", path.display()))?;
    let tok = Tokenizer::gpt2()?;
    if model.config().vocab_size != tok.vocab_size() {
        return Err(format!(
            "the model's vocabulary has {} ids, GPT-2 BPE needs {}",
            model.config().vocab_size,
            tok.vocab_size()
        )
        .into());
    }
    let view = AttentionView::from_text(&model, &tok, &args.text)?;
    let layer = args.layer.unwrap_or(view.n_layer() - 1);
    let map = view.map(layer, args.head)?;

    std::fs::create_dir_all(&args.out).map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let html = args.out.join("attention.html");
    let png = args.out.join(format!("attention_l{layer}_h{}.png", args.head));
    let svg = args.out.join(format!("attention_l{layer}_h{}.svg", args.head));
    view.write_html(&html, &format!("Attention of {} on {:?}", path.display(), args.text))?;
    view.write_png(&png, layer, args.head, args.cell)?;
    view.write_svg(&svg, layer, args.head)?;

    let tokens = view.tokens();
    let top: Vec<(usize, usize, f32)> = map
        .outer_iter()
        .enumerate()
        .map(|(i, row)| {
            let (j, w) = row.iter().enumerate().fold((0, f32::MIN), |a, (j, &w)| if w > a.1 { (j, w) } else { a });
            (i, j, w)
        })
        .collect();
    let row_err = view
        .maps()
        .iter()
        .flat_map(|m| m.rows().into_iter().map(|r| (r.sum() - 1.0).abs()).collect::<Vec<_>>())
        .fold(0.0f32, f32::max);
    if args.json {
        let out = json!({
            "model": path, "text": args.text, "tokens": tokens,
            "n_layer": view.n_layer(), "n_head": view.n_head(), "layer": layer, "head": args.head,
            "files": { "html": html, "png": png, "svg": svg },
            "top": top.iter().map(|&(i, j, w)| json!({"query": i, "key": j, "weight": w})).collect::<Vec<_>>(),
            "max_row_sum_error": row_err,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{} tokens: {}", tokens.len(), tokens.join(" "));
        println!("layer {layer}, head {}: most attended key per query", args.head);
        for (i, j, w) in top {
            println!("  {:>3} {:<16} -> {:>3} {:<16} {w:.3}", i, tokens[i], j, tokens[j]);
        }
        println!("wrote {}\n      {}\n      {}", html.display(), png.display(), svg.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
