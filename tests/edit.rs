//! Knowledge editing (src/edit.rs) against a PyTorch re-implementation of ROME's ft_main
//! (fixtures/ref_edit.py, reference/tiny-bpe.edit.*), plus the invariants the API promises.

mod common;

use common::{fixture, Reference};
use gpt2::edit::{edit, EditConfig, EditObjective, EditProbe, EditRequest};
use gpt2::{Error, Gpt2, Tokenizer};

/// Tolerances: losses are compared relatively (1e-4), deltas absolutely (1e-4, the issue's
/// bound; typical agreement is ~1e-7 because Adam's steps are ±lr-sized and the clamp is exact).
const LOSS_RTOL: f64 = 1e-4;
const DELTA_ATOL: f32 = 1e-4;
/// ft_main step-rule cases vs PyTorch float64 (the 1e-5; see the test).
const FT_ATOL: f32 = 1e-5;

fn case_config(case: &serde_json::Value) -> (Vec<EditRequest>, EditConfig) {
    let reqs = case["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            EditRequest::new(
                r["prompt"].as_str().unwrap(),
                r["subject"].as_str().unwrap(),
                r["target_new"].as_str().unwrap(),
            )
        })
        .collect();
    let cfg = EditConfig {
        layers: case["layers"].as_array().unwrap().iter().map(|l| l.as_u64().unwrap() as usize).collect(),
        module_template: case["module"].as_str().unwrap().to_string(),
        lr: case["lr"].as_f64().unwrap(),
        steps: case["steps"].as_u64().unwrap() as usize,
        batch_size: 64,
        norm_constraint: case["norm_constraint"].as_f64().map(|e| e as f32),
        weight_decay: case["weight_decay"].as_f64().unwrap(),
        early_stop_loss: 1e-2,
        objective: case["objective"].as_str().unwrap_or("bag").parse().unwrap(),
    };
    (reqs, cfg)
}

#[test]
fn edits_match_pytorch_ft_main() {
    let reference = Reference::load("tiny-bpe.edit");
    let tok = Tokenizer::gpt2().unwrap();
    for name in ["bag_single", "bag_multi", "sequence"] {
        let case = &reference.json[name];
        let (reqs, cfg) = case_config(case);
        let mut model = Gpt2::load(fixture("models/tiny-bpe")).unwrap();
        let before = model.params().to_vec();
        // the same token ids as the Python tokenizer
        for (r, (p, t)) in
            reqs.iter().zip(case["prompt_ids"].as_array().unwrap().iter().zip(case["target_ids"].as_array().unwrap()))
        {
            let (pi, ti) = r.encode(&tok).unwrap();
            let ids = |v: &serde_json::Value| {
                v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect::<Vec<_>>()
            };
            assert_eq!((pi, ti), (ids(p), ids(t)), "{name}: token ids");
        }
        let out = edit(&mut model, &tok, &reqs, &cfg).unwrap();

        let ref_losses: Vec<f64> = case["losses"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(out.losses.len(), ref_losses.len(), "{name}: steps run");
        for (i, (a, b)) in out.losses.iter().zip(&ref_losses).enumerate() {
            assert!((a - b).abs() <= LOSS_RTOL * b.abs().max(1.0), "{name} step {i}: loss {a} vs torch {b}");
        }

        let ref_params: Vec<String> =
            case["params"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect();
        let names: Vec<String> = out.deltas.iter().map(|d| d.name.clone()).collect();
        assert_eq!(names, ref_params, "{name}: edited tensors");
        for d in &out.deltas {
            let want = reference.f32(&format!("{name}.delta.{}", d.name));
            let want = want.as_slice().unwrap();
            let worst = d.delta.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            println!("{name}: {} max abs delta diff {worst:.3e}", d.name);
            assert!(worst <= DELTA_ATOL, "{name}: {} delta differs by {worst}", d.name);
            if let Some(eps) = cfg.norm_constraint {
                // every edited weight lies in [w0 − ε, w0 + ε] (the bounds as f32 computes them)
                let w = &model.params()[d.range.clone()];
                let outside = w.iter().zip(&d.original).filter(|(&w, &o)| w < o - eps || w > o + eps).count();
                assert_eq!(outside, 0, "{name}: {} has weights outside the ε box", d.name);
                assert!(d.max_abs() <= eps * (1.0 + 1e-3), "{name}: {} max |Δ| {}", d.name, d.max_abs());
            }
        }

        // nothing outside the selection changed, bit for bit
        let after = model.params();
        let mut edited = vec![false; after.len()];
        for d in &out.deltas {
            edited[d.range.clone()].iter_mut().for_each(|e| *e = true);
        }
        let changed_outside =
            after.iter().zip(&before).zip(&edited).filter(|((a, b), e)| !**e && a.to_bits() != b.to_bits()).count();
        assert_eq!(changed_outside, 0, "{name}: frozen weights changed");
        assert!(out.deltas.iter().any(|d| d.max_abs() > 0.0), "{name}: nothing was edited");

        out.restore(&mut model).unwrap();
        assert!(model.params().iter().zip(&before).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}: restore");
        out.reapply(&mut model).unwrap();
        assert_eq!(
            out.deltas[0].delta.iter().zip(&model.params()[out.deltas[0].range.clone()]).count(),
            out.deltas[0].delta.len()
        );
    }
}

/// ft_main's exact step rule on the bundled model (fixtures/ref_edit_ft.py,
/// reference/bundled.edit_ft.*): a batch whose loss is already below 1e-2 gets no update, the
/// loop stops after that epoch, target tokens equal to 50256 carry no loss.
///
/// The reference is the same ft_main code in float64: every 61st delta entry within
/// [`FT_ATOL`], each tensor's full L1 / L2 norm to 1e-3 relative. Adam's update
/// lr·m̂/(√v̂ + 1e-8) is ill-conditioned where an entry's gradient is tiny next to its tensor's
/// largest (f32 rounding decides its sign: PyTorch's own f32 run is up to 1.6e-2 from its f64
/// run there), so the error is also printed on the well-conditioned entries (gradient ≥ 1e-2 ×
/// the tensor's max |g| at every update) beside PyTorch f32's. The old rule's extra update
/// moves the entries by ~1e-2.
#[test]
fn ft_main_early_stop_and_eos_mask_match_pytorch() {
    let reference = Reference::load("bundled.edit_ft");
    let tok = Tokenizer::gpt2().unwrap();
    let ids = |v: &serde_json::Value| -> Vec<Vec<u32>> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect())
            .collect()
    };
    for name in ["early_stop", "masked"] {
        let case = &reference.json[name];
        let (reqs, mut cfg) = case_config(case);
        cfg.batch_size = case["batch_size"].as_u64().unwrap() as usize;
        cfg.early_stop_loss = case["early_stop_loss"].as_f64().unwrap();
        let (prompts, targets) = (ids(&case["prompt_ids"]), ids(&case["target_ids"]));
        for (i, r) in reqs.iter().enumerate() {
            assert_eq!(r.encode(&tok).unwrap(), (prompts[i].clone(), targets[i].clone()), "{name}: token ids");
        }
        let mut model = Gpt2::load(fixture("model")).unwrap();
        let out = edit(&mut model, &tok, &reqs, &cfg).unwrap();
        let ref_losses: Vec<f64> = case["losses"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        println!("{name}: {} updates, losses {:?} (torch f64 {ref_losses:?})", out.updates, out.losses);
        assert_eq!(out.losses.len(), ref_losses.len(), "{name}: epochs run");
        assert_eq!(out.updates as u64, case["updates"].as_u64().unwrap(), "{name}: optimizer updates");
        assert!(out.early_stopped, "{name}");
        for (i, (a, b)) in out.losses.iter().zip(&ref_losses).enumerate() {
            assert!((a - b).abs() <= LOSS_RTOL * b.abs().max(1.0), "{name} epoch {i}: loss {a} vs torch {b}");
        }
        let stride = case["stride"].as_u64().unwrap() as usize;
        let names: Vec<&str> = out.deltas.iter().map(|d| d.name.as_str()).collect();
        let want_names: Vec<&str> = case["params"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
        assert_eq!(names, want_names, "{name}: edited tensors");
        for d in &out.deltas {
            let want = reference.f32(&format!("{name}.delta.{}", d.name));
            let want32 = reference.f32(&format!("{name}.delta_f32.{}", d.name));
            let cond = reference.f32(&format!("{name}.cond.{}", d.name));
            let got: Vec<f32> = d.delta.iter().step_by(stride).copied().collect();
            assert_eq!(got.len(), want.len(), "{name}: {}", d.name);
            let (mut err, mut err32, mut err_all, mut n) = (0f32, 0f32, 0f32, 0usize);
            for (((&g, &w), &w32), &c) in got.iter().zip(want.iter()).zip(want32.iter()).zip(cond.iter()) {
                err_all = err_all.max((g - w).abs());
                if c >= 1e-2 {
                    (err, err32, n) = (err.max((g - w).abs()), err32.max((w32 - w).abs()), n + 1);
                }
            }
            println!(
                "{name}: {:<22} |crate - f64| {err:.1e} (torch f32 {err32:.1e}) on {n}/{} well-conditioned, {err_all:.1e} on all",
                d.name,
                got.len()
            );
            assert!(n > 0 && err_all <= FT_ATOL, "{name}: {} delta differs by {err_all:e} from torch f64", d.name);
            let norms = &case["norms"][&d.name];
            let l1: f64 = d.delta.iter().map(|&x| x.abs() as f64).sum();
            let (w1, w2) = (norms["l1"].as_f64().unwrap(), norms["l2"].as_f64().unwrap());
            assert!((l1 - w1).abs() <= 1e-3 * w1, "{name}: {} L1 {l1} vs {w1}", d.name);
            assert!((d.norm() - w2).abs() <= 1e-3 * w2, "{name}: {} L2 {} vs {w2}", d.name, d.norm());
        }
    }
}

#[test]
fn an_unconstrained_edit_makes_the_target_likelier_and_reports_locality() {
    let tok = Tokenizer::gpt2().unwrap();
    let mut model = Gpt2::load(fixture("models/tiny-bpe")).unwrap();
    let req = EditRequest::new("{} is located in", "The Eiffel Tower", "Rome");
    let neighbours = vec!["The Louvre is located in".to_string(), "Berlin is the capital of".to_string()];
    let before = EditProbe::measure(&model, &tok, &req, Some("Paris"), &neighbours).unwrap();
    let cfg = EditConfig { layers: vec![0, 1], norm_constraint: None, lr: 5e-2, steps: 20, ..EditConfig::default() };
    let out = edit(&mut model, &tok, std::slice::from_ref(&req), &cfg).unwrap();
    let after = EditProbe::measure(&model, &tok, &req, Some("Paris"), &neighbours).unwrap();
    let report = before.compare(&after);
    assert!(report.p_new.1 > report.p_new.0, "{report:?}");
    assert!(report.p_new.1 > report.p_old.unwrap().1, "{report:?}");
    assert!(report.generates_new.1, "{report:?}");
    assert_eq!(report.locality_kl.len(), 2);
    assert!(report.locality_kl.iter().all(|k| k.is_finite() && *k >= 0.0));
    assert!(*out.losses.last().unwrap() < out.losses[0]);
}

#[test]
fn bad_edit_inputs_are_typed_errors() {
    let tok = Tokenizer::gpt2().unwrap();
    let mut model = Gpt2::load(fixture("models/tiny-bpe")).unwrap();
    let ok = EditRequest::new("{} is in", "Paris", "France");
    let cfg = EditConfig::default();
    let cases: Vec<(&str, Vec<EditRequest>, EditConfig)> = vec![
        ("template without {}", vec![EditRequest::new("is located in", "X", "Rome")], cfg.clone()),
        ("empty target", vec![EditRequest::new("{} is in", "X", "  ")], cfg.clone()),
        ("empty subject", vec![EditRequest::new("{} is in", "", "Rome")], cfg.clone()),
        ("no requests", vec![], cfg.clone()),
        (
            "pattern matches nothing",
            vec![ok.clone()],
            EditConfig { module_template: "h.{}.mlp.nope".into(), ..cfg.clone() },
        ),
        (
            "template without {} (module)",
            vec![ok.clone()],
            EditConfig { module_template: "h.0.mlp".into(), ..cfg.clone() },
        ),
        ("layer out of range", vec![ok.clone()], EditConfig { layers: vec![7], ..cfg.clone() }),
        ("no layers", vec![ok.clone()], EditConfig { layers: vec![], ..cfg.clone() }),
        ("negative lr", vec![ok.clone()], EditConfig { lr: -1.0, ..cfg.clone() }),
        ("zero steps", vec![ok.clone()], EditConfig { steps: 0, ..cfg.clone() }),
        ("NaN epsilon", vec![ok.clone()], EditConfig { norm_constraint: Some(f32::NAN), ..cfg.clone() }),
    ];
    let before = model.params().to_vec();
    for (what, reqs, cfg) in cases {
        match edit(&mut model, &tok, &reqs, &cfg) {
            Err(Error::InvalidArgument { .. }) => {}
            other => panic!("{what}: expected InvalidArgument, got {other:?}"),
        }
    }
    assert_eq!(model.params(), &before[..], "a failed edit must not touch the model");
    assert!(matches!("banana".parse::<EditObjective>(), Err(Error::InvalidArgument { .. })));
}

#[test]
fn editing_the_bundled_model_flips_the_fact_with_small_locality_cost() {
    let tok = Tokenizer::gpt2().unwrap();
    let mut model = Gpt2::load(fixture("model")).unwrap();
    let req = EditRequest::new("{} is located in", "The Eiffel Tower", "Rome");
    let neighbours = vec!["To be, or not to be, that is the".to_string()];
    let before = EditProbe::measure(&model, &tok, &req, Some("the"), &neighbours).unwrap();
    let cfg = EditConfig { layers: vec![1, 2], lr: 1e-2, norm_constraint: Some(1e-2), ..EditConfig::default() };
    edit(&mut model, &tok, std::slice::from_ref(&req), &cfg).unwrap();
    let after = EditProbe::measure(&model, &tok, &req, Some("the"), &neighbours).unwrap();
    let r = before.compare(&after);
    // before: the model prefers " the"; after: " Rome" beats it and is generated greedily
    assert!(r.p_old.unwrap().0 > r.p_new.0, "{r:?}");
    assert!(r.p_new.1 > r.p_old.unwrap().1, "{r:?}");
    assert!(r.generates_new.1, "{r:?}");
    assert!(r.locality_kl[0] < 1.0, "{r:?}");
}
