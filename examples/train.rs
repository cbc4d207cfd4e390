//! Train (or fine-tune) a GPT-2 model on token shards or a text file.
//!
//! ```text
//! # shards as written by the prepare_data example (train / val split by file name)
//! cargo run --release --example train -- --data data/shakespeare --init nano \
//!     --n-layer 4 --n-head 4 --n-embd 128 --n-positions 128 --seq-len 128 --batch-size 8 \
//!     --steps 2000 --lr 1e-3 --min-lr 1e-4 --warmup 100 --eval-every 200 --out runs/shakespeare
//! # fine-tune a saved model on a text file
//! cargo run --release --example train -- --data notes.txt --init fixtures/model --steps 50 --lr 1e-4
//! ```
//! Resume an interrupted run (written with `--checkpoint-every N`) with
//! `--resume runs/shakespeare/checkpoint --data data/shakespeare --steps 2000 --out runs/shakespeare`.
//!
//! Data parallel (built with `--features mpi`): `mpirun -np 4 target/release/examples/train …`
//! runs 4 ranks, each reading its own quarter of every global batch (the global batch is
//! `np × --grad-accum × B × T` tokens); rank 0 alone prints, plots and writes files; `--zero 1`
//! shards the AdamW moments. Without `mpirun` (or without the feature) it is one process.
//! See docs/distributed.md.
//!
//! `--init` takes a preset (`nano`, `gpt2-124m`, …), a `config.json`, or a model directory /
//! `.safetensors` file (fine-tuning). The final model is written to `--out` (`config.json` +
//! `model.safetensors`) with `losses.json`, `loss.svg` and `loss.png`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use gpt2::data::{BatchSource, DataLoader, LoaderConfig, Split};
use gpt2::train::plot::LossCurve;
use gpt2::train::{
    AdamWConfig, Checkpoint, DataParallel, LrSchedule, NonFinitePolicy, ParamSelection, StepStats, Trainer,
    TrainerConfig,
};
use gpt2::{Collective, Config, Error, Gpt2, SaveDtype};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(version, about = "Train or fine-tune a GPT-2 model on token shards (.npy/.bin) or a text/JSONL file")]
struct Args {
    /// Training data: a directory of shards (train split; val split for --eval-every), one shard
    /// file, or a text / JSONL file (tokenized in memory).
    #[arg(long)]
    data: PathBuf,
    /// Validation data (default: the val split of --data when it is a directory).
    #[arg(long)]
    val: Option<PathBuf>,
    /// Preset name (nano, gpt2-124m, gpt2-medium, …), a config.json, or a model directory /
    /// .safetensors file to fine-tune.
    #[arg(long, default_value = "nano")]
    init: String,
    /// Override the number of layers (new models only).
    #[arg(long)]
    n_layer: Option<usize>,
    /// Override the number of heads (new models only).
    #[arg(long)]
    n_head: Option<usize>,
    /// Override the embedding width (new models only).
    #[arg(long)]
    n_embd: Option<usize>,
    /// Override the context length (new models only).
    #[arg(long)]
    n_positions: Option<usize>,
    /// Optimizer steps.
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// Rows per micro-batch (B).
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// Tokens per row (T); at most the model's n_positions.
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
    /// Micro-batches per optimizer step (per rank: the step's global batch is
    /// ranks × grad-accum × B × T tokens).
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// ZeRO stage under data parallelism: 0 = replicated optimizer, 1 = AdamW moments sharded
    /// across ranks (same results, optimizer memory ÷ ranks).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    zero: u8,
    /// Overlap the gradient all-reduce with the backward pass (25 MB buckets, last layers
    /// first, on a communication thread; ZeRO 0 only). Same results either way.
    #[arg(long)]
    overlap: bool,
    /// Watchdog: if no step finishes for this many seconds, print an error and end every rank
    /// (MPI_Abort) — for a rank that hangs instead of dying (0: off).
    #[arg(long, default_value_t = 0)]
    step_timeout: u64,
    /// Peak learning rate.
    #[arg(long, default_value_t = 6e-4)]
    lr: f64,
    /// Final learning rate of the cosine decay (default: lr / 10). Equal to --lr: constant rate.
    #[arg(long)]
    min_lr: Option<f64>,
    /// Linear warmup steps.
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// Step at which the cosine decay reaches --min-lr (default: --steps).
    #[arg(long)]
    decay_steps: Option<usize>,
    /// AdamW decoupled weight decay (applied to the tensors --weight-decay-groups selects).
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f64,
    /// Which tensors decay: `nanogpt` (matrices and embeddings, nanoGPT's configure_optimizers)
    /// or `all` (every tensor, as torch.optim.AdamW(model.parameters(), ...)).
    #[arg(long, default_value = "nanogpt")]
    weight_decay_groups: gpt2::train::DecayGroups,
    /// Training dropout for embeddings, attention and residuals, replacing the model config's
    /// (e.g. 0 to fine-tune a checkpoint whose config says 0.1 without dropout). Evaluation never
    /// applies dropout.
    #[arg(long)]
    dropout: Option<f32>,
    /// AdamW β₁.
    #[arg(long, default_value_t = 0.9)]
    beta1: f64,
    /// AdamW β₂.
    #[arg(long, default_value_t = 0.95)]
    beta2: f64,
    /// AdamW ε.
    #[arg(long, default_value_t = 1e-8)]
    eps: f64,
    /// Clip the global gradient norm (0 disables).
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f64,
    /// Seed of the initialisation (new models) and of the data shuffle (--shuffle).
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Visit shards and windows in a seeded random order each epoch.
    #[arg(long)]
    shuffle: bool,
    /// Evaluate the validation loss every N steps (0: only at the end, if validation data exists).
    #[arg(long, default_value_t = 0)]
    eval_every: usize,
    /// Validation batches per evaluation.
    #[arg(long, default_value_t = 10)]
    eval_batches: usize,
    /// Train only the tensors matching these patterns (e.g. 'h.3.mlp.*'); repeatable.
    #[arg(long = "train-only")]
    train_only: Vec<String>,
    /// Freeze the tensors matching these patterns (e.g. 'wte.weight'); repeatable.
    #[arg(long)]
    freeze: Vec<String>,
    /// Skip steps with a non-finite loss / gradient norm instead of stopping.
    #[arg(long)]
    skip_non_finite: bool,
    /// Continue from a checkpoint directory (model, optimizer, schedule, step, data position and
    /// batch geometry come from it; --steps is the total step count).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Save a checkpoint to OUT/checkpoint every N steps and at the end (0: never).
    #[arg(long, default_value_t = 0)]
    checkpoint_every: usize,
    /// Output directory for the model, losses.json, loss.svg and loss.png.
    #[arg(long, default_value = "runs/train")]
    out: PathBuf,
    /// Do not write the final model (timing runs); losses.json and the plots are still written.
    #[arg(long)]
    no_save: bool,
    /// Storage dtype of the saved weights.
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16", "bf16"])]
    save_dtype: String,
    /// One JSON object per step and per evaluation on stdout, then a summary (no progress bar).
    #[arg(long)]
    json: bool,
}

fn main() {
    let args = Args::parse();
    let comm = match collective() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = run(&args, &comm) {
        eprintln!("error ({}): {e}", comm.describe());
        if comm.size() > 1 {
            // The other ranks may be waiting in a collective: end them all (MPI_Abort).
            comm.abort(1);
        }
        std::process::exit(1);
    }
}

/// The data-parallel group: MPI_COMM_WORLD with `--features mpi` (one rank without mpirun),
/// a single process otherwise.
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

/// Builds or loads the model `--init` names.
fn init_model(args: &Args) -> gpt2::Result<(Gpt2, String)> {
    let mut path = PathBuf::from(&args.init);
    if !path.exists() && Config::preset(&args.init).is_err() {
        // not a path nor a preset: a hub id in the local HF cache, else say what --init accepts
        path = gpt2::model::hub::resolve(&args.init).map_err(|e| Error::InvalidArgument {
            name: "init",
            reason: format!(
                "`{}` is not an existing path (config.json, model directory or .safetensors file), a preset \
                 (nano, gpt2, gpt2-medium, gpt2-large, gpt2-xl) or a cached hub id: {e}",
                args.init
            ),
        })?;
    }
    let path = path.as_path();
    let overrides = [args.n_layer, args.n_head, args.n_embd, args.n_positions];
    let is_model = path.is_file() && path.extension().is_some_and(|e| e == "safetensors")
        || path.is_dir() && (path.join("model.safetensors").exists() || path.join(gpt2::model::INDEX_FILE).exists());
    if is_model {
        if overrides.iter().any(Option::is_some) {
            return Err(Error::InvalidArgument {
                name: "init",
                reason: "--n-layer/--n-head/--n-embd/--n-positions apply to new models, not to a checkpoint".into(),
            });
        }
        return Ok((Gpt2::load(path)?, format!("fine-tune {}", path.display())));
    }
    let (mut cfg, what) = if path.is_file() {
        (Config::from_json_file(path)?, format!("config {}", path.display()))
    } else if path.is_dir() && path.join("config.json").exists() {
        (Config::from_json_file(&path.join("config.json"))?, format!("config {}", path.join("config.json").display()))
    } else {
        (Config::preset(&args.init)?, format!("preset {}", args.init))
    };
    if let Some(v) = args.n_layer {
        cfg.n_layer = v;
    }
    if let Some(v) = args.n_head {
        cfg.n_head = v;
    }
    if let Some(v) = args.n_embd {
        cfg.n_embd = v;
    }
    if let Some(v) = args.n_positions {
        cfg.n_positions = v;
    }
    cfg.validate()?;
    Ok((Gpt2::new_random(cfg, args.seed)?, format!("new model from {what}, seed {}", args.seed)))
}

fn selection(args: &Args) -> ParamSelection {
    let mut sel = if args.train_only.is_empty() { ParamSelection::all() } else { ParamSelection::none() };
    for p in &args.train_only {
        sel = sel.include(p.clone());
    }
    for p in &args.freeze {
        sel = sel.exclude(p.clone());
    }
    sel
}

/// Batch geometry saved in checkpoints (a resumed run reads the same batches).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Geometry {
    batch_size: usize,
    seq_len: usize,
    shuffle: bool,
    seed: u64,
}

fn trainer_config(args: &Args) -> TrainerConfig {
    let min_lr = args.min_lr.unwrap_or(args.lr / 10.0);
    let schedule = if min_lr == args.lr && args.warmup == 0 {
        LrSchedule::Constant(args.lr)
    } else {
        LrSchedule::WarmupCosine {
            max_lr: args.lr,
            min_lr,
            warmup_steps: args.warmup,
            decay_steps: args.decay_steps.unwrap_or(args.steps),
        }
    };
    TrainerConfig {
        optimizer: AdamWConfig {
            beta1: args.beta1,
            beta2: args.beta2,
            eps: args.eps,
            weight_decay: args.weight_decay,
            decay_groups: args.weight_decay_groups,
        },
        schedule,
        grad_accum: args.grad_accum,
        // exactly 0 means "off"; NaN or a negative clip is the library's error, not "off"
        grad_clip: (args.grad_clip != 0.0).then_some(args.grad_clip),
        non_finite: if args.skip_non_finite { NonFinitePolicy::Skip } else { NonFinitePolicy::Error },
        selection: selection(args),
        seed: args.seed,
        dropout: args.dropout,
    }
}

fn run(args: &Args, comm: &Arc<dyn Collective>) -> gpt2::Result<()> {
    let (rank, world) = (comm.rank(), comm.size());
    let lead = rank == 0;
    // fail before any work, not after the last step, when the results cannot be written
    // (rank 0 alone writes them)
    if lead {
        gpt2::train::ensure_writable_dir(&args.out)?;
    }
    let mut history: Vec<StepStats> = Vec::with_capacity(args.steps.min(1 << 16)); // --steps may be absurd
    let mut val_hist: Vec<(usize, f32)> = Vec::new();
    let (trainer, geo, origin, data_state) = match &args.resume {
        Some(dir) => {
            let mut ckpt = Checkpoint::load(dir)?;
            // A checkpoint of N ranks × grad_accum k resumes on M ranks with the same global batch.
            let saved_world = ckpt.extra["world_size"].as_u64().unwrap_or(1) as usize;
            if saved_world != world {
                let global = ckpt.config.grad_accum * saved_world;
                if global % world != 0 {
                    return Err(Error::InvalidArgument {
                        name: "resume",
                        reason: format!(
                            "the checkpoint was written by {saved_world} ranks × grad_accum {} = {global} \
                             micro-batches per step, which {world} ranks cannot split evenly",
                            ckpt.config.grad_accum
                        ),
                    });
                }
                ckpt.config.grad_accum = global / world;
            }
            let geo: Geometry = serde_json::from_value(ckpt.extra["geometry"].clone())
                .map_err(|e| Error::Json { path: dir.join("trainer.json"), reason: e.to_string() })?;
            if let Ok(h) = serde_json::from_value::<Vec<StepStats>>(ckpt.extra["history"].clone()) {
                history = h;
            }
            if let Ok(v) = serde_json::from_value::<Vec<(usize, f32)>>(ckpt.extra["val"].clone()) {
                val_hist = v;
            }
            let state = ckpt.data_state.clone();
            let origin = format!("resume {} at step {}", dir.display(), ckpt.step);
            (Trainer::from_checkpoint(ckpt)?, geo, origin, state)
        }
        None => {
            let (model, origin) = init_model(args)?;
            let geo =
                Geometry { batch_size: args.batch_size, seq_len: args.seq_len, shuffle: args.shuffle, seed: args.seed };
            (Trainer::new(model, trainer_config(args))?, geo, origin, None)
        }
    };
    let mut trainer = trainer
        .distributed(comm.clone(), DataParallel { zero: args.zero, overlap: args.overlap, ..Default::default() })?;
    let cfg = trainer.model().config().clone();
    if geo.seq_len > cfg.n_positions {
        return Err(Error::SequenceTooLong { len: geo.seq_len, n_positions: cfg.n_positions });
    }
    let mut lc = LoaderConfig::new(geo.batch_size, geo.seq_len).with_vocab_size(cfg.vocab_size).with_rank(rank, world);
    if geo.shuffle {
        lc = lc.with_shuffle(geo.seed);
    }
    let mut train = DataLoader::open(&args.data, Split::Train, lc)?;
    if let Some(state) = data_state {
        train.restore(state)?;
    }
    let val_cfg = LoaderConfig::new(geo.batch_size, geo.seq_len).with_vocab_size(cfg.vocab_size);
    let mut val = match (&args.val, args.data.is_dir()) {
        (Some(p), _) => Some(DataLoader::open(p, Split::Val, val_cfg)?),
        (None, true) => match DataLoader::open(&args.data, Split::Val, val_cfg) {
            Ok(l) => Some(l),
            Err(Error::Data { .. }) => None, // no val shards in the directory
            Err(e) => return Err(e),
        },
        (None, false) => None,
    };
    if args.eval_every > 0 && val.is_none() {
        return Err(Error::InvalidArgument {
            name: "eval_every",
            reason: "no validation data: pass --val, or a --data directory with *_val_* shards".into(),
        });
    }
    let save_dtype = match args.save_dtype.as_str() {
        "f16" => SaveDtype::F16,
        "bf16" => SaveDtype::BF16,
        _ => SaveDtype::F32,
    };
    let first_step = trainer.step_index();
    if first_step >= args.steps {
        return Err(Error::InvalidArgument {
            name: "steps",
            reason: format!("the checkpoint is already at step {first_step}; --steps is the total step count"),
        });
    }
    let n_params = trainer.model().num_parameters();
    let n_train = trainer.mask().num_trainable(n_params);
    let tokens_per_step = geo.batch_size * geo.seq_len * trainer.config().grad_accum * world;
    let header = json!({
        "event": "start",
        "init": origin,
        "config": {"n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd,
                   "n_positions": cfg.n_positions, "vocab_size": cfg.vocab_size},
        "parameters": n_params,
        "trainable": n_train,
        "train_tokens": train.num_tokens(),
        "val_tokens": val.as_ref().map(|v| v.num_tokens()),
        "tokens_per_step": tokens_per_step,
        "first_step": first_step,
        "threads": rayon::current_num_threads(),
        "ranks": world,
        "zero": args.zero,
    });
    let bar = if !lead {
        ProgressBar::hidden()
    } else if args.json {
        println!("{header}");
        ProgressBar::hidden()
    } else {
        eprintln!(
            "{origin}: {} layers, {} heads, {} dims, context {}, vocab {} — {n_params} parameters ({n_train} trainable)",
            cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.n_positions, cfg.vocab_size
        );
        eprintln!(
            "data: {} train tokens ({} batches/epoch/rank){}; {tokens_per_step} tokens/step; {world} rank(s) × {} threads",
            train.num_tokens(),
            train.batches_per_epoch(),
            val.as_ref().map(|v| format!(", {} val tokens", v.num_tokens())).unwrap_or_default(),
            rayon::current_num_threads()
        );
        let b = ProgressBar::new(args.steps as u64);
        b.set_position(first_step as u64);
        b.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")
                .expect("valid template"),
        );
        b
    };

    let started = Instant::now();
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0)); // seconds since `started`
    if args.step_timeout > 0 {
        let (comm, progress, limit) = (comm.clone(), progress.clone(), args.step_timeout);
        std::thread::spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            let idle = started.elapsed().as_secs().saturating_sub(progress.load(std::sync::atomic::Ordering::Relaxed));
            if idle > limit {
                eprintln!("error ({}): no step finished for {idle} s (--step-timeout {limit})", comm.describe());
                if comm.size() > 1 {
                    comm.abort(1);
                }
                std::process::exit(1);
            }
        });
    }
    let eval = |trainer: &mut Trainer, step: usize, val: &mut Option<DataLoader>| -> gpt2::Result<Option<f32>> {
        let Some(v) = val.as_mut() else { return Ok(None) };
        v.reset();
        let batches = args.eval_batches.min(v.batches_per_epoch()).max(1);
        let loss = trainer.eval_loss(v, batches)?; // split across ranks, reduced exactly
        if args.json && lead {
            println!(
                "{}",
                json!({"event": "val", "step": step, "val_loss": loss,
                                   "val_perplexity": gpt2::eval::perplexity_from_loss(loss as f64)})
            );
        }
        Ok(Some(loss))
    };
    for step in first_step..args.steps {
        let st = trainer.step(&mut train)?;
        progress.store(started.elapsed().as_secs(), std::sync::atomic::Ordering::Relaxed);
        if args.json && lead {
            println!(
                "{}",
                json!({"event": "step", "step": st.step, "loss": st.loss, "lr": st.lr, "grad_norm": st.grad_norm,
                       "ms": st.ms, "comm_ms": st.comm_ms, "comm_exposed_ms": st.comm_exposed_ms, "tokens_per_sec": st.tokens_per_sec,
                       "skipped": st.skipped})
            );
        }
        history.push(st);
        let last = step + 1 == args.steps;
        if (args.eval_every > 0 && (step + 1) % args.eval_every == 0) || (last && val.is_some()) {
            if let Some(l) = eval(&mut trainer, step, &mut val)? {
                val_hist.push((step, l));
                bar.println(format!("step {step:>6}: val loss {l:.4}"));
            }
        }
        if args.checkpoint_every > 0 && ((step + 1) % args.checkpoint_every == 0 || last) {
            let extra = json!({"geometry": geo, "history": history, "val": val_hist, "world_size": world});
            let dir = args.out.join("checkpoint");
            trainer.save_checkpoint(&dir, Some(&train), extra)?; // collective; rank 0 writes
            if args.json && lead {
                println!("{}", json!({"event": "checkpoint", "step": step, "dir": dir.display().to_string()}));
            }
        }
        bar.set_message(format!(
            "loss {:.4} | lr {:.2e} | norm {:.3} | {:.0} ms | {:.0} tok/s",
            st.loss, st.lr, st.grad_norm, st.ms, st.tokens_per_sec
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    trainer.check_replicas()?;
    if !lead {
        return Ok(());
    }

    // --- outputs ---------------------------------------------------------------------------------
    std::fs::create_dir_all(&args.out).map_err(|e| Error::Io { path: args.out.clone(), source: e })?;
    if !args.no_save {
        trainer.model().save_with_dtype(&args.out, save_dtype)?;
    }
    let run_steps = &history[history.len() - (args.steps - first_step).min(history.len())..];
    let tail = history.len().clamp(1, 20);
    let final_train = history.iter().rev().take(tail).map(|s| s.loss as f64).sum::<f64>() / tail as f64;
    let tokens: usize = run_steps.iter().map(|s| s.tokens).sum();
    let step_ms: Vec<f64> = run_steps.iter().map(|s| s.ms).collect();
    let median_ms = median(&step_ms);
    let comm_ms: Vec<f64> = run_steps.iter().map(|s| s.comm_ms).collect();
    let median_comm_ms = median(&comm_ms);
    let exposed_ms: Vec<f64> = run_steps.iter().map(|s| s.comm_exposed_ms).collect();
    let median_exposed_ms = median(&exposed_ms);
    let summary = json!({
        "event": "summary",
        "steps": history.len(),
        "steps_this_run": run_steps.len(),
        "skipped_steps": trainer.skipped_steps(),
        "final_train_loss": history.last().map(|s| s.loss),
        "final_train_loss_mean_last": final_train,
        "final_val_loss": val_hist.last().map(|v| v.1),
        "seconds": secs,
        "median_step_ms": median_ms,
        "median_comm_ms": median_comm_ms,
        "median_comm_exposed_ms": median_exposed_ms,
        "overlap": args.overlap,
        "ranks": world,
        "zero": args.zero,
        "tokens": tokens,
        "tokens_per_sec": tokens as f64 / secs,
        "parameters": n_params,
        "out": args.out.display().to_string(),
    });
    let losses = json!({
        "train": history,
        "val": val_hist.iter().map(|(s, l)| json!({"step": s, "loss": l})).collect::<Vec<_>>(),
        "summary": summary,
        "args": format!("{args:?}"),
    });
    gpt2::train::save_json(args.out.join("losses.json"), &losses)?;
    let curve = LossCurve { train: history.iter().map(|s| (s.step, s.loss)).collect(), val: val_hist.clone() };
    if !curve.train.is_empty() {
        curve.save_svg(args.out.join("loss.svg"), 800, 480)?;
        curve.save_png(args.out.join("loss.png"), 800, 480)?;
    }
    if args.json {
        println!("{summary}");
    } else {
        eprintln!(
            "done: {} steps in {secs:.1} s ({:.0} tok/s, median step {median_ms:.0} ms); final train loss {:.4} (mean of last {tail}: {final_train:.4}){}",
            run_steps.len(),
            tokens as f64 / secs,
            history.last().map_or(f32::NAN, |s| s.loss),
            val_hist.last().map(|v| format!(", val loss {:.4}", v.1)).unwrap_or_default()
        );
        eprintln!("wrote {}/{{config.json, model.safetensors, losses.json, loss.svg, loss.png}}", args.out.display());
    }
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}
