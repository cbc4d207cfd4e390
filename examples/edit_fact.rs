//! Edit one fact in a GPT-2 model by constrained fine-tuning (ROME's FT / FT-L baseline) and
//! report what changed.
//!
//! ```sh
//! cargo run --release --example edit_fact -- --prompt "{} is located in" \
//!     --subject "The Eiffel Tower" --target Rome --layers 0 --norm-constraint 5e-4 --json
//! ```
//! Prints P(new target) and P(old target) before/after, whether greedy decoding now yields the
//! new target, the loss history, per-tensor delta norms and the locality KL on neighbourhood
//! prompts. `--save DIR` writes the edited model (HF layout).

use std::path::PathBuf;

mod common;
use std::time::Instant;

use clap::Parser;
use gpt2::edit::{edit, EditConfig, EditObjective, EditProbe, EditRequest};
use gpt2::{Gpt2, Tokenizer};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser, Debug)]
#[command(version, about = "Edit a fact in a GPT-2 model (ROME's constrained fine-tuning baseline)")]
struct Args {
    #[arg(long, help = common::MODEL_HELP)]
    model: Option<PathBuf>,
    /// Prompt template with `{}` for the subject.
    #[arg(long, default_value = "{} is located in")]
    prompt: String,
    /// The subject.
    #[arg(long, default_value = "The Eiffel Tower")]
    subject: String,
    /// The new target (a leading space is added when missing).
    #[arg(long, default_value = "Rome")]
    target: String,
    /// The old target, to report its probability (default: the model's greedy next token).
    #[arg(long)]
    old_target: Option<String>,
    /// Blocks to edit, comma-separated. (The defaults of this example are tuned for the small
    /// bundled model; ROME's FT-L settings for GPT-2 are `--layers 0 --lr 5e-4 --norm-constraint 5e-4`.)
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    layers: Vec<usize>,
    /// Tensor-name template; every tensor whose name contains it (per layer) is edited.
    #[arg(long, default_value = "h.{}.mlp.c_proj")]
    module: String,
    /// ε of the box constraint around the original weights (0 disables it).
    #[arg(long, default_value_t = 1e-2)]
    norm_constraint: f32,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-2)]
    lr: f64,
    /// Optimisation steps.
    #[arg(long, default_value_t = 25)]
    steps: usize,
    /// Objective: `bag` (ROME ft_main, last prompt position) or `sequence` (teacher-forced).
    #[arg(long, default_value = "bag")]
    objective: String,
    /// Neighbourhood prompts whose next-token distribution should not change (repeatable).
    #[arg(long = "neighbour")]
    neighbours: Vec<String>,
    /// Save the edited model here (config.json + model.safetensors).
    #[arg(long)]
    save: Option<PathBuf>,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    json: bool,
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
    let mut model = Gpt2::load(&path).map_err(|e| format!("cannot load the model at {}: {e}", path.display()))?;
    let objective: EditObjective = args.objective.parse()?;
    let request = EditRequest::new(args.prompt.clone(), args.subject.clone(), args.target.clone());
    let prompt_text = request.text()?;
    let neighbours = if args.neighbours.is_empty() {
        vec![
            "The Louvre is located in".to_string(),
            "The capital of France is".to_string(),
            "To be, or not to be, that is the".to_string(),
        ]
    } else {
        args.neighbours.clone()
    };
    let old_target = match &args.old_target {
        Some(o) => o.clone(),
        None => {
            let ids = tok.encode(&prompt_text);
            let next = gpt2::edit::greedy_tokens(&model, &ids, 1)?;
            tok.decode_lossy(&next)?
        }
    };
    let cfg = EditConfig {
        layers: args.layers.clone(),
        module_template: args.module.clone(),
        lr: args.lr,
        steps: args.steps,
        // exactly 0 means "off"; NaN or a negative ε is the library's error, not "off"
        norm_constraint: (args.norm_constraint != 0.0).then_some(args.norm_constraint),
        objective,
        ..EditConfig::default()
    };
    let before = EditProbe::measure(&model, &tok, &request, Some(&old_target), &neighbours)?;

    let bar = if args.json { ProgressBar::hidden() } else { ProgressBar::new_spinner() };
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")?);
    bar.set_message(format!("editing {} tensors", cfg.selected_tensors(&model)?.len()));
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    let t0 = Instant::now();
    let outcome = edit(&mut model, &tok, std::slice::from_ref(&request), &cfg)?;
    let seconds = t0.elapsed().as_secs_f64();
    bar.finish_and_clear();

    let after = EditProbe::measure(&model, &tok, &request, Some(&old_target), &neighbours)?;
    let report = before.compare(&after);
    if let Some(dir) = &args.save {
        model.save(dir)?;
    }
    let greedy_before = tok.decode_lossy(&before.greedy)?;
    let greedy_after = tok.decode_lossy(&after.greedy)?;

    if args.json {
        let deltas: Vec<_> = outcome
            .deltas
            .iter()
            .map(|d| serde_json::json!({"name": d.name, "shape": d.shape, "norm": d.norm(), "max_abs": d.max_abs()}))
            .collect();
        let out = serde_json::json!({
            "model": path, "prompt": prompt_text, "target_new": request.target()?, "old_target": old_target,
            "objective": args.objective, "layers": cfg.layers, "module": cfg.module_template,
            "norm_constraint": cfg.norm_constraint, "lr": cfg.lr, "steps_run": outcome.losses.len(),
            "early_stopped": outcome.early_stopped, "losses": outcome.losses, "seconds": seconds,
            "p_new": {"before": report.p_new.0, "after": report.p_new.1},
            "p_old": report.p_old.map(|(b, a)| serde_json::json!({"before": b, "after": a})),
            "generates_new": {"before": report.generates_new.0, "after": report.generates_new.1},
            "greedy": {"before": greedy_before, "after": greedy_after},
            "locality": neighbours.iter().zip(&report.locality_kl)
                .map(|(p, kl)| serde_json::json!({"prompt": p, "kl": kl})).collect::<Vec<_>>(),
            "deltas": deltas,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("model        {}", path.display());
    println!("edit         {prompt_text:?} → {:?}  (old: {old_target:?})", request.target()?);
    println!("tensors      {}", outcome.deltas.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(", "));
    println!(
        "loss         {:.4} → {:.4} in {} steps ({seconds:.2} s){}",
        outcome.losses[0],
        outcome.losses.last().unwrap(),
        outcome.losses.len(),
        if outcome.early_stopped { ", early stop" } else { "" }
    );
    println!("P(new)       {:.3e} → {:.3e}", report.p_new.0, report.p_new.1);
    if let Some((b, a)) = report.p_old {
        println!("P(old)       {b:.3e} → {a:.3e}");
    }
    println!("greedy       {greedy_before:?} → {greedy_after:?}");
    for d in &outcome.deltas {
        println!("Δ {:28} ‖Δ‖ {:.3e}  max|Δ| {:.3e}", d.name, d.norm(), d.max_abs());
    }
    println!("locality (KL of the next-token distribution, nats):");
    for (p, kl) in neighbours.iter().zip(&report.locality_kl) {
        println!("  {kl:.3e}  {p:?}");
    }
    Ok(())
}
