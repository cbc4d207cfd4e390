//! The seed exercise: train the "nano" GPT (3 layers, 3 heads, 48 dims, block size 11,
//! vocabulary 8) to infer the hidden weather states of an HMM from its observations.
//!
//! ```text
//! cargo run --release --example train_weather
//! cargo run --release --example train_weather -- --iters 2000 --json --out runs/weather
//! ```
//! Defaults follow the exercise: lr 5e-4 (constant), batch 64, 2000 iterations, AdamW betas
//! (0.9, 0.95), weight decay 0.1, gradient clipping 1.0. At the end the model decodes the states
//! of fresh chains greedily; its accuracy is compared with always naming the most frequent state
//! and with the HMM's own posterior.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use gpt2::train::plot::LossCurve;
use gpt2::train::weather::{state_accuracy, WeatherHmm, WeatherSource, BLOCK_SIZE, VOCAB};
use gpt2::train::{AdamWConfig, EvalHook, LrSchedule, TrainEvent, Trainer, TrainerConfig};
use gpt2::{Config, Gpt2};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(version, about = "Train the nano GPT on the synthetic weather HMM task and report state accuracy")]
struct Args {
    /// Optimizer steps.
    #[arg(long, default_value_t = 2000)]
    iters: usize,
    /// Chains per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Learning rate (constant).
    #[arg(long, default_value_t = 5e-4)]
    lr: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f64,
    /// Gradient clipping norm (0 disables).
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f64,
    /// Seed of the initialisation and of the data.
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Report the decoding accuracy on fresh chains every N steps (0: only at the end).
    #[arg(long, default_value_t = 500)]
    eval_every: usize,
    /// Fresh chains for the accuracy.
    #[arg(long, default_value_t = 2000)]
    eval_chains: usize,
    /// Write the model, losses.json and loss.svg / loss.png here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// JSON lines (steps, evaluations, summary) instead of a progress bar.
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
    if args.iters == 0 {
        return Err(gpt2::Error::InvalidArgument { name: "iters", reason: "must be at least 1".into() });
    }
    // fail before the first step, not after the last, when the results cannot be written
    if let Some(dir) = &args.out {
        gpt2::train::ensure_writable_dir(dir)?;
    }
    let model = Gpt2::new_random(Config::nano(BLOCK_SIZE, VOCAB), args.seed)?;
    let cfg = TrainerConfig {
        optimizer: AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: args.weight_decay,
            ..Default::default()
        },
        schedule: LrSchedule::Constant(args.lr),
        // exactly 0 means "off"; NaN or a negative clip is the library's error, not "off"
        grad_clip: (args.grad_clip != 0.0).then_some(args.grad_clip),
        seed: args.seed,
        ..Default::default()
    };
    let mut trainer = Trainer::new(model, cfg)?;
    let mut data = WeatherSource::new(args.batch_size, args.seed);
    let hmm = WeatherHmm::standard();
    // fresh chains: a seed the training batches never use
    let eval_seed = args.seed ^ 0x005E_ED0F_7E57;
    let (chains, every) = (args.eval_chains, args.eval_every);
    let mut hooks = [EvalHook::new("state_accuracy", every, |m: &Gpt2| {
        Ok(state_accuracy(&hmm, chains, eval_seed, |x| m.logits_batch(x))?.model)
    })];
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(args.iters as u64);
        b.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}] {msg}").expect("template"));
        b
    };
    let started = Instant::now();
    let json = args.json;
    let hist = trainer.run(&mut data, args.iters, &mut hooks, |e| match e {
        TrainEvent::Step(s) => {
            if json {
                println!(
                    "{}",
                    json!({"event": "step", "step": s.step, "loss": s.loss, "grad_norm": s.grad_norm, "ms": s.ms})
                );
            }
            bar.set_message(format!("loss {:.4}", s.loss));
            bar.inc(1);
        }
        TrainEvent::Eval(m) => {
            if json {
                println!("{}", json!({"event": "eval", "step": m.step, m.name.clone(): m.value}));
            } else {
                bar.println(format!("step {:>5}: {} {:.4}", m.step, m.name, m.value));
            }
        }
    })?;
    drop(hooks);
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let acc = state_accuracy(&hmm, args.eval_chains, eval_seed, |x| trainer.model().logits_batch(x))?;
    let n = hist.steps.len();
    let tail = n.clamp(1, 100);
    let final_loss = hist.steps[n - tail..].iter().map(|s| s.loss as f64).sum::<f64>() / tail as f64;
    let first_loss = hist.steps.first().map_or(f32::NAN, |s| s.loss);
    let summary = json!({
        "event": "summary",
        "iters": n,
        "first_loss": first_loss,
        "final_loss_mean_last_100": final_loss,
        "final_loss": hist.steps.last().map(|s| s.loss),
        "state_accuracy": acc.model,
        "majority_baseline": acc.majority,
        "bayes_posterior_accuracy": acc.bayes,
        "eval_chains": acc.chains,
        "seconds": secs,
        "ms_per_step": secs * 1e3 / n.max(1) as f64,
    });
    if let Some(dir) = &args.out {
        trainer.model().save(dir)?;
        gpt2::train::save_json(dir.join("losses.json"), &json!({"history": hist, "summary": summary}))?;
        let curve = LossCurve { train: hist.steps.iter().map(|s| (s.step, s.loss)).collect(), val: vec![] };
        curve.save_svg(dir.join("loss.svg"), 800, 480)?;
        curve.save_png(dir.join("loss.png"), 800, 480)?;
    }
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "{n} iterations in {secs:.1} s: loss {first_loss:.4} → {final_loss:.4} (mean of the last {tail})\n\
             state accuracy on {} fresh chains: model {:.4}, majority-class baseline {:.4}, HMM posterior {:.4}",
            acc.chains, acc.model, acc.majority, acc.bayes
        );
    }
    Ok(())
}
