//! HellaSwag accuracy in build-nanogpt ("completion") or lm-evaluation-harness ("harness") style.
//!
//! ```text
//! cargo run --release --example hellaswag -- --file hellaswag_val.jsonl --style harness --limit 500
//! cargo run --release --example hellaswag -- --json      # the bundled mini file
//! ```
//! Built with `--features mpi`, `mpirun -np N target/release/examples/hellaswag …` splits the
//! examples across N ranks and reduces the results (rank 0 prints; the numbers equal one
//! process's).
//!
//! JSON keys: n, acc, acc_norm, predictions [{label, pred, pred_norm, sum_losses, avg_losses}],
//! plus model, style, skipped, seconds.

mod common;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use gpt2::eval::hellaswag::{partition_renderable, ReadOptions};
use gpt2::eval::{read_hellaswag, Evaluator, HellaSwagStyle};
use gpt2::{Collective, Gpt2, Tokenizer};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

/// Score HellaSwag (official JSONL format) with a GPT-2 model.
#[derive(Parser, Debug)]
#[command(version, about = "Score HellaSwag (official JSONL format) with a GPT-2 model.")]
struct Args {
    #[arg(long, help = common::MODEL_HELP)]
    model: Option<PathBuf>,
    /// HellaSwag JSONL file [default: fixtures/data/hellaswag_mini.jsonl].
    #[arg(long)]
    file: Option<PathBuf>,
    /// Score only the first N examples.
    #[arg(long)]
    limit: Option<usize>,
    /// `completion` (build-nanogpt: raw ctx, per-token acc_norm) or `harness`
    /// (lm-evaluation-harness: preprocessed query, per-character acc_norm).
    #[arg(long, default_value = "completion")]
    style: HellaSwagStyle,
    /// Rows (endings) per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Skip malformed lines and examples the model cannot score (longer than its context),
    /// counted and listed with their line numbers, instead of stopping at the first.
    #[arg(long)]
    skip_malformed: bool,
    /// Print JSON (with per-example predictions).
    #[arg(long)]
    json: bool,
}

fn run(args: &Args, comm: &dyn Collective) -> Result<(), Box<dyn std::error::Error>> {
    let lead = comm.rank() == 0;
    let path = common::model_path(args.model.as_deref())?;
    let model = Gpt2::load(&path).map_err(|e| format!("cannot load the model at {}: {e}", path.display()))?;
    let tok = Tokenizer::gpt2()?;
    let file = args
        .file
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/data/hellaswag_mini.jsonl"));
    let mut data = read_hellaswag(&file, ReadOptions { skip_malformed: args.skip_malformed, limit: args.limit })?;
    if args.skip_malformed {
        // examples that parse but cannot be scored by this model (longer than its context, an
        // ending empty after preprocessing) are skipped too, with their line numbers
        let examples = std::mem::take(&mut data.examples);
        let (kept, skipped) = partition_renderable(examples, &tok, args.style, model.config().n_positions);
        data.examples = kept;
        data.skipped.extend(skipped);
        data.skipped.sort_by_key(|s| s.line);
    }
    if data.examples.is_empty() && !data.skipped.is_empty() {
        let first = &data.skipped[0];
        return Err(format!(
            "{}: all {} non-blank line(s) are malformed (line {}: {})",
            file.display(),
            data.skipped.len(),
            first.line,
            first.reason
        )
        .into());
    }

    let bar = if args.json || !lead { ProgressBar::hidden() } else { ProgressBar::new(0) };
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} endings {per_sec} eta {eta}").expect("template"));
    let pb = bar.clone();
    let ev = Evaluator::new(&model).with_batch_size(args.batch_size)?.with_progress(move |done, total| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    });
    let start = Instant::now();
    let res = ev.hellaswag_distributed(&tok, &data.examples, args.style, comm)?;
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    if !lead {
        return Ok(());
    }

    if args.json {
        let predictions: Vec<_> = res
            .predictions
            .iter()
            .map(|p| {
                json!({"line": p.line, "label": p.label, "pred": p.pred, "pred_norm": p.pred_norm,
                       "sum_losses": p.sum_losses, "avg_losses": p.avg_losses})
            })
            .collect();
        let v = json!({
            "model": path.display().to_string(), "file": file.display().to_string(), "style": res.style,
            "n": res.n, "acc": res.acc, "acc_norm": res.acc_norm, "skipped": data.skipped.len(),
            "seconds": seconds, "ranks": comm.size(), "predictions": predictions,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{} style: n = {}, acc = {:.4}, acc_norm = {:.4} (loss per {}), {:.1} s",
            res.style,
            res.n,
            res.acc,
            res.acc_norm,
            if res.style == HellaSwagStyle::Harness { "character" } else { "token" },
            seconds
        );
        if !data.skipped.is_empty() {
            println!("skipped {} malformed line(s):", data.skipped.len());
            for s in data.skipped.iter().take(10) {
                println!("  line {}: {}", s.line, s.reason);
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let comm = match collective() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(&args, comm.as_ref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if comm.size() > 1 {
                comm.abort(1); // the other ranks may be waiting in a collective
            }
            ExitCode::FAILURE
        }
    }
}

/// MPI_COMM_WORLD with `--features mpi` (one rank without mpirun), a single process otherwise.
fn collective() -> gpt2::Result<Arc<dyn Collective>> {
    #[cfg(feature = "mpi")]
    {
        Ok(Arc::new(gpt2::collective::MpiCollective::init()?))
    }
    #[cfg(not(feature = "mpi"))]
    {
        Ok(Arc::new(gpt2::SingleProcess))
    }
}
