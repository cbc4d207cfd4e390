//! Training behaviour: checkpoint resume is bit-identical, parameter subsets, dropout,
//! non-finite guard, changing batch shapes.

use gpt2::data::{BatchSource, DataLoader, LoaderConfig, TokenShard};
use gpt2::train::{
    forward_backward, forward_backward_with, forward_loss, Activations, AdamWConfig, BackwardOptions, Checkpoint,
    LrSchedule, NonFinitePolicy, ParamSelection, Trainer, TrainerConfig,
};
use gpt2::{Config, Error, Gpt2};
use ndarray::{Array2, ArrayView2};

fn small_config(dropout: f32) -> Config {
    let mut c = Config::new(2, 2, 16, 16, 50);
    c.resid_pdrop = dropout;
    c.embd_pdrop = dropout;
    c.attn_pdrop = dropout;
    c
}

fn loader() -> DataLoader {
    let tokens: Vec<u32> = (0..2000u32).map(|i| (i * 7 + i / 13) % 50).collect();
    let shard = TokenShard::from_tokens("mem", &tokens).unwrap();
    DataLoader::new(vec![shard], LoaderConfig::new(2, 8).with_shuffle(11)).unwrap()
}

fn trainer_config() -> TrainerConfig {
    TrainerConfig {
        optimizer: AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, ..Default::default() },
        schedule: LrSchedule::WarmupCosine { max_lr: 3e-3, min_lr: 3e-4, warmup_steps: 2, decay_steps: 8 },
        grad_accum: 2,
        grad_clip: Some(1.0),
        non_finite: NonFinitePolicy::Error,
        selection: ParamSelection::all().exclude("wpe.weight"),
        seed: 5,
        dropout: None,
    }
}

fn tmp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("gpt2-train-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn interrupted_and_resumed_training_is_bit_identical() {
    let model = Gpt2::new_random(small_config(0.1), 3).unwrap();
    // uninterrupted: 8 steps
    let mut data = loader();
    let mut t = Trainer::new(model.clone(), trainer_config()).unwrap();
    let full: Vec<u32> = (0..8).map(|_| t.step(&mut data).unwrap().loss.to_bits()).collect();
    let full_params = t.model().params().to_vec();

    // 4 steps, checkpoint, drop everything, resume for 4 more
    let dir = tmp_dir("resume");
    let mut first = Vec::new();
    {
        let mut data = loader();
        let mut t = Trainer::new(model, trainer_config()).unwrap();
        for _ in 0..4 {
            first.push(t.step(&mut data).unwrap().loss.to_bits());
        }
        t.save_checkpoint(&dir, Some(&data), serde_json::json!({"note": "half way"})).unwrap();
        // saving again over an existing checkpoint replaces it
        t.save_checkpoint(&dir, Some(&data), serde_json::json!({"note": "half way"})).unwrap();
    }
    let ckpt = Checkpoint::load(&dir).unwrap();
    assert_eq!(ckpt.step, 4);
    assert_eq!(ckpt.extra["note"], "half way");
    let mut data = loader();
    data.restore(ckpt.data_state.clone().unwrap()).unwrap();
    let mut t = Trainer::from_checkpoint(ckpt).unwrap();
    for _ in 0..4 {
        first.push(t.step(&mut data).unwrap().loss.to_bits());
    }
    assert_eq!(first, full, "losses differ after resume");
    let same = t.model().params().iter().zip(&full_params).all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "parameters differ after resume");
    // the checkpoint's current step directory is also a plain model directory, and the
    // directory holds only the pointer and that step directory
    assert!(Gpt2::load(Checkpoint::current_dir(&dir).unwrap()).is_ok());
    let mut inside: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    inside.sort();
    assert_eq!(inside, ["latest", "step-00000004-1"], "saved twice at step 4: the second save supersedes the first");
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name().to_string_lossy().contains(&format!("gpt2-train-test-resume-{}.", std::process::id()))
        })
        .collect();
    assert!(leftovers.is_empty(), "temporary checkpoint directories left behind");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(matches!(Checkpoint::load(&dir), Err(Error::NotFound(_))));
}

#[test]
fn frozen_tensors_stay_fixed_and_trainable_gradients_are_unchanged() {
    let model = Gpt2::new_random(small_config(0.0), 4).unwrap();
    let x = Array2::from_shape_fn((2, 8), |(b, t)| ((b * 8 + t) * 3 % 50) as u32);
    let y = Array2::from_shape_fn((2, 8), |(b, t)| ((b * 8 + t) * 5 % 50) as i32);
    let mut acts = Activations::new();
    let mut full = vec![0f32; model.num_parameters()];
    forward_backward(&model, &mut acts, &mut full, x.view(), y.view(), 1.0).unwrap();

    let sel = ParamSelection::none().include("h.1.mlp.c_proj.*").include("ln_f.*");
    let mask = sel.resolve(model.layout()).unwrap();
    let mut part = vec![0f32; model.num_parameters()];
    let opts = BackwardOptions { mask: &mask, ..Default::default() };
    forward_backward_with(&model, &mut acts, &mut part, x.view(), y.view(), &opts).unwrap();
    for p in model.layout().params() {
        let (f, g) = (&full[p.range()], &part[p.range()]);
        if mask.wants(p.offset) {
            assert_eq!(f, g, "{} gradient changed by masking", p.name);
        } else {
            assert!(g.iter().all(|&v| v == 0.0), "{} got a gradient", p.name);
        }
    }

    let cfg = TrainerConfig { selection: sel, schedule: LrSchedule::Constant(1e-2), ..Default::default() };
    let mut t = Trainer::new(model.clone(), cfg).unwrap();
    assert_eq!(t.optimizer().moments().0.len(), 16 * 64 + 16 + 2 * 16);
    for _ in 0..3 {
        t.step_on(&[(x.view(), y.view())]).unwrap();
    }
    for p in model.layout().params() {
        let changed = t.model().params()[p.range()] != model.params()[p.range()];
        assert_eq!(changed, mask.wants(p.offset), "{}", p.name);
    }
}

/// Central differences of the whole model's loss (dropout masks fixed by the seed).
fn check_model_gradient(model: &Gpt2, x: ArrayView2<u32>, y: ArrayView2<i32>, seed: Option<u64>) {
    let mut acts = Activations::new();
    let mut grads = vec![0f32; model.num_parameters()];
    let opts = BackwardOptions { dropout_seed: seed, ..Default::default() };
    forward_backward_with(model, &mut acts, &mut grads, x, y, &opts).unwrap();
    let mut probe = model.clone();
    let mut loss_at = |i: usize, v: f32| {
        let old = probe.params()[i];
        probe.params_mut()[i] = v;
        let mut g = vec![0f32; probe.num_parameters()];
        let l = forward_backward_with(&probe, &mut acts, &mut g, x, y, &opts).unwrap();
        probe.params_mut()[i] = old;
        l as f64
    };
    let mut checked = 0;
    for p in model.layout().params() {
        // a few coordinates of every tensor (largest-gradient one included)
        let r = p.range();
        let best = r.clone().max_by(|&a, &b| grads[a].abs().total_cmp(&grads[b].abs())).unwrap();
        for i in [best, r.start + r.len() / 3, r.end - 1] {
            // small step: with dropout the loss is strongly curved along some coordinates
            let h = 2.5e-3f32;
            let w = model.params()[i];
            let fd = (loss_at(i, w + h) - loss_at(i, w - h)) / (2.0 * h as f64);
            let g = grads[i] as f64;
            assert!((fd - g).abs() < 1e-3 + 3e-2 * g.abs(), "{} [{i}] (dropout {seed:?}): fd {fd} vs grad {g}", p.name);
            checked += 1;
        }
    }
    assert!(checked >= 3 * model.layout().params().len());
}

#[test]
fn whole_model_gradient_matches_finite_differences_with_and_without_dropout() {
    let x = Array2::from_shape_fn((2, 6), |(b, t)| ((b * 6 + t) * 7 % 50) as u32);
    let y = Array2::from_shape_fn((2, 6), |(b, t)| if t == 2 { -1 } else { ((b * 6 + t) * 11 % 50) as i32 });
    check_model_gradient(&Gpt2::new_random(small_config(0.0), 8).unwrap(), x.view(), y.view(), None);
    let drop = Gpt2::new_random(small_config(0.2), 8).unwrap();
    check_model_gradient(&drop, x.view(), y.view(), Some(42));

    // train mode differs from eval mode, and repeats for the same seed
    let mut acts = Activations::new();
    let mut g = vec![0f32; drop.num_parameters()];
    let train = |seed, acts: &mut Activations, g: &mut Vec<f32>| {
        let opts = BackwardOptions { dropout_seed: Some(seed), ..Default::default() };
        forward_backward_with(&drop, acts, g, x.view(), y.view(), &opts).unwrap()
    };
    let (a, b, c) = (train(1, &mut acts, &mut g), train(1, &mut acts, &mut g), train(2, &mut acts, &mut g));
    let eval = forward_loss(&drop, &mut acts, x.view(), y.view()).unwrap();
    assert_eq!(a.to_bits(), b.to_bits());
    assert_ne!(a, c);
    assert_ne!(a, eval);
    let no_drop_seed = forward_backward(&drop, &mut acts, &mut g, x.view(), y.view(), 1.0).unwrap();
    assert_eq!(no_drop_seed.to_bits(), eval.to_bits(), "no seed = eval mode");
}

/// `TrainerConfig::dropout` replaces the model config's dropout in training; evaluation
/// (`loss_on`, `eval_loss`, the `Evaluator`) never applies dropout.
#[test]
fn dropout_override_and_eval_without_dropout() {
    let x = Array2::from_shape_fn((2, 6), |(b, t)| ((b * 6 + t) * 7 % 50) as u32);
    let y = Array2::from_shape_fn((2, 6), |(b, t)| ((b * 6 + t) * 11 % 50) as i32);
    let cfg = |dropout| TrainerConfig { schedule: LrSchedule::Constant(1e-3), seed: 3, dropout, ..Default::default() };
    let step_loss = |model: &Gpt2, dropout: Option<f32>| {
        let mut t = Trainer::new(model.clone(), cfg(dropout)).unwrap();
        let st = t.step_on(&[(x.view(), y.view())]).unwrap();
        (st.loss, t.into_model())
    };
    let with_drop = Gpt2::new_random(small_config(0.3), 8).unwrap();
    let no_drop = Gpt2::from_params(small_config(0.0), with_drop.params().to_vec()).unwrap();
    let mut acts = Activations::new();
    let eval = forward_loss(&with_drop, &mut acts, x.view(), y.view()).unwrap();
    assert_eq!(eval.to_bits(), forward_loss(&no_drop, &mut acts, x.view(), y.view()).unwrap().to_bits());

    // Some(0.0) on a config with 0.3: training loss = the eval loss, and the update equals the
    // one of the same model whose config has no dropout
    let (l0, m0) = step_loss(&with_drop, Some(0.0));
    let (l_ref, m_ref) = step_loss(&no_drop, None);
    assert_eq!(l0.to_bits(), l_ref.to_bits());
    assert!((l0 - eval).abs() < 1e-6, "{l0} vs eval {eval}");
    assert_eq!(m0.params(), m_ref.params());
    // None keeps the config's 0.3 (train loss differs from eval); Some(0.3) on a config with 0
    // gives exactly that run (same masks from the same seed)
    let (l_cfg, m_cfg) = step_loss(&with_drop, None);
    assert!((l_cfg - eval).abs() > 1e-3, "dropout 0.3 must change the training loss");
    let (l_over, m_over) = step_loss(&no_drop, Some(0.3));
    assert_eq!(l_over.to_bits(), l_cfg.to_bits());
    assert_eq!(m_over.params(), m_cfg.params());

    // evaluation paths never apply dropout, whatever the model config and the override say
    for dropout in [None, Some(0.5)] {
        let mut t = Trainer::new(with_drop.clone(), cfg(dropout)).unwrap();
        let a = t.loss_on(x.view(), y.view()).unwrap();
        let b = t.loss_on(x.view(), y.view()).unwrap();
        assert_eq!((a.to_bits(), b.to_bits()), (eval.to_bits(), eval.to_bits()));
        let mut src = loader();
        let e1 = t.eval_loss(&mut src, 2).unwrap();
        let mut t2 = Trainer::new(no_drop.clone(), cfg(None)).unwrap();
        let e2 = t2.eval_loss(&mut loader(), 2).unwrap();
        assert_eq!(e1.to_bits(), e2.to_bits(), "eval_loss applies no dropout");
    }
    let ev = gpt2::eval::Evaluator::new(&with_drop);
    let ids: Vec<u32> = x.row(0).to_vec();
    let labels: Vec<Option<u32>> = ids[1..].iter().map(|&t| Some(t)).chain([None]).collect();
    let a = ev.cross_entropy(&ids, &labels).unwrap();
    let b = gpt2::eval::Evaluator::new(&no_drop).cross_entropy(&ids, &labels).unwrap();
    assert_eq!(a, b, "the Evaluator applies no dropout");

    // out of range
    for bad in [1.0f32, -0.1, f32::NAN] {
        let e = Trainer::new(no_drop.clone(), cfg(Some(bad))).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{bad}: {e}");
        let opts = BackwardOptions { dropout_seed: Some(1), dropout: Some(bad), ..Default::default() };
        let mut g = vec![0f32; no_drop.num_parameters()];
        let e = forward_backward_with(&no_drop, &mut acts, &mut g, x.view(), y.view(), &opts).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{bad}: {e}");
    }
}

#[test]
fn non_finite_values_stop_or_skip_the_step() {
    // a NaN in ln_f gives a NaN loss; one in h.0.ln_1 (swallowed by the attention softmax in
    // the forward) still gives a NaN gradient norm
    for name in ["ln_f.weight", "h.0.ln_1.weight"] {
        non_finite_case(name);
    }
}

fn non_finite_case(name: &str) {
    let mut model = Gpt2::new_random(small_config(0.0), 1).unwrap();
    let off = model.layout().get(name).unwrap().offset;
    model.params_mut()[off] = f32::NAN;
    let x = Array2::from_shape_fn((1, 4), |(_, t)| t as u32);
    let y = Array2::from_shape_fn((1, 4), |(_, t)| t as i32 + 1);
    let mut t = Trainer::new(model.clone(), TrainerConfig::default()).unwrap();
    match t.step_on(&[(x.view(), y.view())]) {
        Err(Error::NonFinite { step: 0, .. }) => {}
        other => panic!("expected NonFinite, got {other:?}"),
    }
    let cfg = TrainerConfig { non_finite: NonFinitePolicy::Skip, ..Default::default() };
    let mut t = Trainer::new(model.clone(), cfg).unwrap();
    let st = t.step_on(&[(x.view(), y.view())]).unwrap();
    assert!(st.skipped && !(st.loss.is_finite() && st.grad_norm.is_finite()), "{st:?}");
    assert_eq!(st.loss.is_nan(), name == "ln_f.weight");
    assert_eq!(t.skipped_steps(), 1);
    assert_eq!(t.optimizer().steps(), 0);
    let unchanged = t.model().params().iter().zip(model.params()).all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(unchanged);
}

#[test]
fn batch_shape_can_change_between_calls() {
    let model = Gpt2::new_random(small_config(0.0), 2).unwrap();
    let mut shared = Activations::new();
    for &(b, t) in &[(1usize, 16usize), (3, 5), (2, 16), (1, 1), (4, 9)] {
        let x = Array2::from_shape_fn((b, t), |(i, j)| ((i * 31 + j * 7) % 50) as u32);
        let y = Array2::from_shape_fn((b, t), |(i, j)| ((i * 17 + j * 3 + 1) % 50) as i32);
        let mut g1 = vec![0f32; model.num_parameters()];
        let mut g2 = vec![0f32; model.num_parameters()];
        let l1 = forward_backward(&model, &mut shared, &mut g1, x.view(), y.view(), 1.0).unwrap();
        let l2 = forward_backward(&model, &mut Activations::new(), &mut g2, x.view(), y.view(), 1.0).unwrap();
        assert_eq!(l1.to_bits(), l2.to_bits(), "({b}, {t})");
        assert_eq!(g1, g2, "({b}, {t})");
        // the loss-only forward agrees with the training forward
        let l3 = forward_loss(&model, &mut shared, x.view(), y.view()).unwrap();
        assert!((l3 - l1).abs() < 1e-6);
    }
    // bad input is a typed error
    let x = Array2::<u32>::zeros((1, 17));
    let y = Array2::<i32>::zeros((1, 17));
    let mut g = vec![0f32; model.num_parameters()];
    assert!(matches!(
        forward_backward(&model, &mut shared, &mut g, x.view(), y.view(), 1.0),
        Err(Error::SequenceTooLong { .. })
    ));
    let y = Array2::from_elem((1, 4), -1i32);
    let x = Array2::<u32>::zeros((1, 4));
    assert!(matches!(
        forward_backward(&model, &mut shared, &mut g, x.view(), y.view(), 1.0),
        Err(Error::EmptyInput(_))
    ));
    let y = Array2::from_elem((1, 4), 50i32);
    assert!(matches!(
        forward_backward(&model, &mut shared, &mut g, x.view(), y.view(), 1.0),
        Err(Error::TokenOutOfVocab { .. })
    ));
    assert!(matches!(
        forward_backward(&model, &mut shared, &mut g[1..], x.view(), y.view(), 1.0),
        Err(Error::Shape(_))
    ));
}

/// Shortened `train_weather`: the loss falls and the decoded states beat the majority class.
#[test]
fn weather_task_loss_falls_and_beats_the_majority_baseline() {
    use gpt2::train::weather::{state_accuracy, WeatherSource, BLOCK_SIZE, VOCAB};
    let model = Gpt2::new_random(Config::nano(BLOCK_SIZE, VOCAB), 1337).unwrap();
    let cfg = TrainerConfig {
        optimizer: AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, ..Default::default() },
        schedule: LrSchedule::Constant(5e-4),
        grad_clip: Some(1.0),
        ..Default::default()
    };
    let mut t = Trainer::new(model, cfg).unwrap();
    let mut data = WeatherSource::new(64, 1337);
    let h = t.run(&mut data, 200, &mut [], |_| {}).unwrap();
    let mean = |s: &[gpt2::train::StepStats]| s.iter().map(|x| x.loss as f64).sum::<f64>() / s.len() as f64;
    let (first, last) = (h.steps[0].loss as f64, mean(&h.steps[180..]));
    eprintln!("weather: loss {first:.4} -> {last:.4} (mean of the last 20)");
    // ln 8 = 2.08 at initialisation; the full 2000-step run reaches ≈ 0.25
    assert!(first > 1.8 && last < 0.6, "loss {first} -> {last}");
    let acc = state_accuracy(data.hmm(), 500, 99, |x| t.model().logits_batch(x)).unwrap();
    eprintln!("weather: accuracy {acc:?}");
    assert!(acc.model > acc.majority + 0.1, "{acc:?}");
    assert!(acc.bayes >= acc.majority && acc.model <= 1.0);
}

/// Finite differences of `L = Σ out ⊙ g` for the matmul kernels the training uses
/// (`out = x·w + b` and the tied head `out = x·wtᵀ`); the other kernels' checks live beside them.
#[test]
fn matmul_backward_kernels_match_finite_differences() {
    use gpt2::kernels::matmul::{matmul_backward, matmul_bt_backward, matmul_forward_naive};
    let (m, k, n) = (5, 4, 6);
    let val = |i: usize, s: usize| ((i * 7919 + s * 104_729) % 97) as f32 / 97.0 - 0.5;
    let x: Vec<f32> = (0..m * k).map(|i| val(i, 1)).collect();
    let w: Vec<f32> = (0..k * n).map(|i| val(i, 2)).collect();
    let b: Vec<f32> = (0..n).map(|i| val(i, 3)).collect();
    let g: Vec<f32> = (0..m * n).map(|i| val(i, 4)).collect();
    let loss = |x: &[f32], w: &[f32], b: Option<&[f32]>| {
        let mut o = vec![0f32; m * n];
        matmul_forward_naive(&mut o, x, w, b, m, k, n);
        o.iter().zip(&g).map(|(&a, &c)| a as f64 * c as f64).sum::<f64>()
    };
    let fd = |f: &dyn Fn(f32) -> f64| (f(1e-2) - f(-1e-2)) / 2e-2;
    let (mut dx, mut dw, mut db) = (vec![0f32; m * k], vec![0f32; k * n], vec![0f32; n]);
    matmul_backward(Some(&mut dx), Some(&mut dw), Some(&mut db), &g, &x, &w, m, k, n);
    let close = |a: f64, b: f32| (a - b as f64).abs() < 1e-4 * (1.0 + a.abs());
    for i in 0..m * k {
        assert!(
            close(
                fd(&|e| {
                    let mut p = x.clone();
                    p[i] += e;
                    loss(&p, &w, Some(&b))
                }),
                dx[i]
            ),
            "dx[{i}]"
        );
    }
    for i in 0..k * n {
        assert!(
            close(
                fd(&|e| {
                    let mut p = w.clone();
                    p[i] += e;
                    loss(&x, &p, Some(&b))
                }),
                dw[i]
            ),
            "dw[{i}]"
        );
    }
    for i in 0..n {
        assert!(
            close(
                fd(&|e| {
                    let mut p = b.clone();
                    p[i] += e;
                    loss(&x, &w, Some(&p))
                }),
                db[i]
            ),
            "db[{i}]"
        );
    }
    // tied head: wt [n, k] is wᵀ
    let wt: Vec<f32> = (0..n * k).map(|i| w[(i % k) * n + i / k]).collect();
    let (mut dx2, mut dwt) = (vec![0f32; m * k], vec![0f32; n * k]);
    matmul_bt_backward(Some(&mut dx2), Some(&mut dwt), &g, &x, &wt, m, k, n);
    for (a, b) in dx2.iter().zip(&dx) {
        assert!((a - b).abs() < 1e-6);
    }
    for j in 0..n {
        for p in 0..k {
            assert!((dwt[j * k + p] - dw[p * n + j]).abs() < 1e-6);
        }
    }
}
