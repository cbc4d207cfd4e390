//! Evaluation API vs transformers / faithful Python re-implementations
//! (`fixtures/ref_eval.py` → `fixtures/reference/tiny-bpe.eval.*`).
//!
//! Tolerances: 1e-4 relative against the references, 1e-5 relative between
//! batch sizes 1, 3 and 8; HellaSwag predictions and accuracies exact.

mod common;

use common::{fixture, Reference};
use gpt2::eval::hellaswag::{harness_preprocess, py_capitalize, read_hellaswag, ReadOptions};
use gpt2::eval::{labels_from_hf, Evaluator, HellaSwagEval, HellaSwagStyle, ScoreRow, SlidingWindow};
use gpt2::{Gpt2, Tokenizer};
use serde_json::Value;

const REL: f64 = 1e-4;
const BATCH_REL: f64 = 1e-5;
const BATCH_SIZES: [usize; 3] = [1, 3, 8];

fn setup() -> (Gpt2, Tokenizer, Reference) {
    let model = Gpt2::load(fixture("models/tiny-bpe")).expect("tiny-bpe");
    (model, Tokenizer::gpt2().unwrap(), Reference::load("tiny-bpe.eval"))
}

fn rel(a: f64, b: f64) -> f64 {
    if a == b {
        return 0.0;
    }
    (a - b).abs() / b.abs().max(1e-12)
}

/// Asserts every pair within `tol` relative; returns the largest relative error.
fn assert_rel(what: &str, got: &[f64], want: &[f64], tol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    assert!(!got.is_empty(), "{what}: compared nothing");
    let worst = got.iter().zip(want).map(|(&a, &b)| rel(a, b)).fold(0.0, f64::max);
    eprintln!("{what}: max rel err {worst:.2e} (tol {tol:.0e})");
    assert!(worst <= tol, "{what}: max rel err {worst:e} > {tol:e}");
    worst
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("number expected, got {v}"))
}

fn ids(r: &Reference, name: &str) -> Vec<u32> {
    r.u32(name).iter().copied().collect()
}

fn floats(r: &Reference, name: &str) -> Vec<f64> {
    r.f32(name).iter().map(|&x| x as f64).collect()
}

#[test]
fn single_texts_per_token_nll_loss_and_perplexity() {
    let (model, tok, r) = setup();
    let ev = Evaluator::new(&model);
    for (i, case) in r.json["single"].as_array().unwrap().iter().enumerate() {
        let tokens = ids(&r, &format!("single.{i}.input_ids"));
        assert_eq!(tok.encode(case["text"].as_str().unwrap()), tokens, "tokenization of text {i}");
        let nll = ev.token_nlls(&tokens).unwrap();
        assert_rel(&format!("single {i} per-token NLL"), &nll, &floats(&r, &format!("single.{i}.nll")), REL);
        let stats = ev.evaluate(&[&tokens]).unwrap().total;
        assert_eq!(stats.tokens as u64, case["tokens"].as_u64().unwrap());
        assert_rel(&format!("single {i} loss"), &[stats.mean().unwrap()], &[f(&case["loss"])], REL);
        assert_rel(&format!("single {i} perplexity"), &[stats.perplexity().unwrap()], &[f(&case["perplexity"])], REL);
    }
}

#[test]
fn ignore_mask_matches_hf_labels() {
    let (model, _, r) = setup();
    let input: Vec<u32> = ids(&r, "labels.input_ids");
    let hf: Vec<i64> = r.i32("labels.labels").iter().map(|&x| x as i64).collect();
    let labels = labels_from_hf(&hf).unwrap();
    let ce = Evaluator::new(&model).cross_entropy(&input, &labels).unwrap();
    assert_eq!(ce.tokens as u64, r.json["labels"]["tokens"].as_u64().unwrap());
    assert_rel("labels -100 loss", &[ce.mean().unwrap()], &[f(&r.json["labels"]["loss"])], REL);
}

#[test]
fn padded_batch_is_token_weighted_and_batch_size_invariant() {
    let (model, tok, r) = setup();
    let b = &r.json["batch"];
    let texts: Vec<&str> = b["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let seqs: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t)).collect();
    let hf_loss = f(&b["loss"]);

    let mut totals = Vec::new();
    for bs in BATCH_SIZES {
        let ev = Evaluator::new(&model).with_batch_size(bs).unwrap();
        // per-token NLLs of every row of the padded batch
        let rows: Vec<ScoreRow> = seqs.iter().map(|s| ScoreRow::next_token(s).unwrap()).collect();
        for (i, nll) in ev.score(&rows).unwrap().iter().enumerate() {
            assert_rel(&format!("bs {bs} row {i} NLL"), nll, &floats(&r, &format!("batch.{i}.nll")), REL);
        }
        let res = ev.evaluate(&seqs).unwrap();
        assert_eq!(res.total.tokens as u64, b["tokens"].as_u64().unwrap());
        let total = res.total.mean().unwrap();
        assert_rel(&format!("bs {bs} token-weighted loss vs HF batch loss"), &[total], &[hf_loss], REL);
        assert_rel(&format!("bs {bs} perplexity"), &[res.total.perplexity().unwrap()], &[f(&b["perplexity"])], REL);
        let row_means: Vec<f64> = res.per_sequence.iter().map(|s| s.mean().unwrap()).collect();
        let want: Vec<f64> = b["row_means"].as_array().unwrap().iter().map(f).collect();
        assert_rel(&format!("bs {bs} row means"), &row_means, &want, REL);

        // The classic mistake reproduces HF's mean of batch losses, and is far off.
        let wrong = res.mean_of_batch_means(2).unwrap();
        assert_rel("mean of batch means (bs 2)", &[wrong], &[f(&b["mean_of_batch_means_bs2"])], REL);
        assert!((wrong - total).abs() > 0.1, "mean of batch means {wrong} should differ from {total}");
        let of_rows = row_means.iter().sum::<f64>() / row_means.len() as f64;
        assert!((of_rows - total).abs() > 0.1, "mean of row means {of_rows} should differ from {total}");
        totals.push(total);
    }
    // batched == unbatched: the same number whatever the batch size
    assert_rel("batch sizes 3, 8 vs 1 (total)", &totals[1..], &[totals[0]; 2], BATCH_REL);

    // HF-style padded input_ids + labels (-100 on padding) give HF's loss too.
    let padded = r.u32("batch.input_ids");
    let mask = r.i32("batch.attention_mask");
    let inputs: Vec<Vec<u32>> = padded.outer_iter().map(|row| row.iter().copied().collect()).collect();
    let labels: Vec<Vec<Option<u32>>> = padded
        .outer_iter()
        .zip(mask.outer_iter())
        .map(|(row, m)| row.iter().zip(m.iter()).map(|(&t, &m)| (m == 1).then_some(t)).collect())
        .collect();
    let pairs: Vec<(&[u32], &[Option<u32>])> = inputs.iter().zip(&labels).map(|(i, l)| (&i[..], &l[..])).collect();
    let stats: gpt2::eval::LossStats =
        Evaluator::new(&model).with_batch_size(3).unwrap().cross_entropy_batch(&pairs).unwrap().into_iter().sum();
    assert_rel("padded input_ids + -100 labels", &[stats.mean().unwrap()], &[hf_loss], REL);
}

#[test]
fn sliding_window_exact_and_hf_guide_numbers() {
    let (model, tok, r) = setup();
    let s = &r.json["sliding"];
    let tokens = ids(&r, "sliding.input_ids");
    assert_eq!(tok.encode(s["text"].as_str().unwrap()), tokens);
    for case in s["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let w = SlidingWindow::new(
            case["max_length"].as_u64().unwrap() as usize,
            case["stride"].as_u64().unwrap() as usize,
        );
        let (ex, hf) = (&case["exact"], &case["hf_guide"]);
        let mut avgs = Vec::new();
        for bs in BATCH_SIZES {
            let res = Evaluator::new(&model).with_batch_size(bs).unwrap().sliding_window(&tokens, w).unwrap();
            assert_rel(
                &format!("{name} bs {bs} per-token NLL"),
                &res.token_nlls,
                &floats(&r, &format!("sliding.{name}.nll")),
                REL,
            );
            assert_eq!(res.stats.tokens as u64, ex["tokens"].as_u64().unwrap());
            assert_eq!(res.stats.tokens, tokens.len() - 1, "every token after the first, once");
            assert_eq!(res.windows as u64, ex["windows"].as_u64().unwrap());
            assert_rel(&format!("{name} exact loss"), &[res.avg_loss], &[f(&ex["avg_loss"])], REL);
            assert_rel(&format!("{name} exact ppl"), &[res.perplexity], &[f(&ex["perplexity"])], REL);
            assert_rel(&format!("{name} HF-guide loss"), &[res.hf_guide.avg_loss], &[f(&hf["avg_loss"])], REL);
            assert_rel(&format!("{name} HF-guide ppl"), &[res.hf_guide.perplexity], &[f(&hf["perplexity"])], REL);
            assert_eq!(res.hf_guide.windows as u64, hf["windows"].as_u64().unwrap());
            assert_eq!(res.hf_guide.counted_tokens as u64, hf["counted_tokens"].as_u64().unwrap());
            assert_eq!(res.hf_guide.scored_tokens as u64, hf["scored_tokens"].as_u64().unwrap());
            // the guide's number is a different number (that is why it is labelled)
            assert!((res.hf_guide.avg_loss - res.avg_loss).abs() > 1e-5, "{name}");
            avgs.push(res.avg_loss);
        }
        assert_rel(&format!("{name} batch sizes 3, 8 vs 1"), &avgs[1..], &[avgs[0]; 2], BATCH_REL);
    }
}

#[test]
fn completion_scoring_matches_reference() {
    let (model, _, r) = setup();
    let c = &r.json["completion"];
    let ctx = ids(&r, "completion.context");
    let cands = c["candidates"].as_array().unwrap();
    let comps: Vec<Vec<u32>> = (0..cands.len()).map(|i| ids(&r, &format!("completion.{i}.tokens"))).collect();
    let mut first = Vec::new();
    for bs in BATCH_SIZES {
        let got = Evaluator::new(&model).with_batch_size(bs).unwrap().score_completions(&ctx, &comps).unwrap();
        for (g, want) in got.iter().zip(cands) {
            assert_eq!(g.tokens as u64, want["tokens"].as_u64().unwrap());
        }
        let sums: Vec<f64> = got.iter().map(|g| g.sum_nll).collect();
        let means: Vec<f64> = got.iter().map(|g| g.mean_nll).collect();
        assert_rel(
            &format!("completion bs {bs} sum"),
            &sums,
            &cands.iter().map(|c| f(&c["sum"])).collect::<Vec<_>>(),
            REL,
        );
        assert_rel(
            &format!("completion bs {bs} mean"),
            &means,
            &cands.iter().map(|c| f(&c["mean"])).collect::<Vec<_>>(),
            REL,
        );
        if first.is_empty() {
            first = sums;
        } else {
            assert_rel("completion batch-size invariance", &sums, &first, BATCH_REL);
        }
    }
}

fn check_hellaswag(got: &HellaSwagEval, want: &Value, tag: &str) -> Vec<f64> {
    assert_eq!(got.n as u64, want["n"].as_u64().unwrap(), "{tag} n");
    assert_eq!(got.acc, f(&want["acc"]), "{tag} acc");
    assert_eq!(got.acc_norm, f(&want["acc_norm"]), "{tag} acc_norm");
    let preds = want["predictions"].as_array().unwrap();
    let (mut sums, mut wsums, mut avgs, mut wavgs) = (vec![], vec![], vec![], vec![]);
    for (i, (g, w)) in got.predictions.iter().zip(preds).enumerate() {
        assert_eq!(g.label as u64, w["label"].as_u64().unwrap(), "{tag} example {i} label");
        assert_eq!(g.pred as u64, w["pred"].as_u64().unwrap(), "{tag} example {i} pred");
        assert_eq!(g.pred_norm as u64, w["pred_norm"].as_u64().unwrap(), "{tag} example {i} pred_norm");
        assert_eq!(g.line, i + 1);
        sums.extend(&g.sum_losses);
        avgs.extend(&g.avg_losses);
        wsums.extend(w["sum_losses"].as_array().unwrap().iter().map(f));
        wavgs.extend(w["avg_losses"].as_array().unwrap().iter().map(f));
    }
    assert_rel(&format!("{tag} sum_losses"), &sums, &wsums, REL);
    assert_rel(&format!("{tag} avg_losses"), &avgs, &wavgs, REL);
    sums
}

#[test]
fn hellaswag_both_styles_reproduce_reference_implementations() {
    let (model, tok, r) = setup();
    let h = &r.json["hellaswag"];
    let data = read_hellaswag(fixture(h["file"].as_str().unwrap()), ReadOptions::default()).unwrap();
    assert_eq!(data.examples.len(), 16);
    assert!(data.skipped.is_empty());
    for (style, key) in [(HellaSwagStyle::Completion, "completion"), (HellaSwagStyle::Harness, "harness")] {
        let mut first: Vec<f64> = Vec::new();
        for bs in BATCH_SIZES {
            let ev = Evaluator::new(&model).with_batch_size(bs).unwrap();
            let got = ev.hellaswag(&tok, &data.examples, style).unwrap();
            assert_eq!(got.style, style);
            let sums = check_hellaswag(&got, &h[key], &format!("{key} bs {bs}"));
            if first.is_empty() {
                first = sums;
            } else {
                assert_rel(&format!("{key} batch-size invariance"), &sums, &first, BATCH_REL);
            }
        }
    }
    // The harness's text preprocessing, string for string.
    for (ex, w) in data.examples.iter().zip(h["harness"]["predictions"].as_array().unwrap()) {
        let (label, ctx_a, ctx_b) = (ex.activity_label.as_ref(), ex.ctx_a.as_ref(), ex.ctx_b.as_ref());
        let query =
            harness_preprocess(&format!("{}: {} {}", label.unwrap(), ctx_a.unwrap(), py_capitalize(ctx_b.unwrap())));
        assert_eq!(query, w["query"].as_str().unwrap());
        let choices: Vec<String> = ex.endings.iter().map(|e| harness_preprocess(e)).collect();
        let want: Vec<&str> = w["choices"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        assert_eq!(choices, want);
    }
}

/// build-nanogpt's `render_example` reads only `ctx`, `endings` and `label`: a file of such
/// records scores in completion style exactly like the reference
/// (`fixtures/ref_hellaswag_minimal.py`, bundled model); the harness style names the field
/// it lacks.
#[test]
fn hellaswag_minimal_records_score_in_completion_style() {
    let model = Gpt2::load(fixture("model")).expect("bundled model");
    let tok = Tokenizer::gpt2().unwrap();
    let text = std::fs::read_to_string(fixture("reference/bundled.hellaswag_minimal.json")).unwrap();
    let want: Value = serde_json::from_str(&text).unwrap();
    let data = read_hellaswag(fixture(want["file"].as_str().unwrap()), ReadOptions::default()).unwrap();
    assert_eq!(data.examples.len(), 16);
    assert!(data.examples.iter().all(|e| e.activity_label.is_none() && e.ctx_a.is_none() && e.ctx_b.is_none()));
    let ev = Evaluator::new(&model).with_batch_size(8).unwrap();
    let got = ev.hellaswag(&tok, &data.examples, HellaSwagStyle::Completion).unwrap();
    check_hellaswag(&got, &want, "minimal completion");
    let e = ev.hellaswag(&tok, &data.examples, HellaSwagStyle::Harness).unwrap_err();
    assert!(matches!(e, gpt2::Error::Data { line: 1, .. }), "{e}");
    assert!(e.to_string().contains("missing field `activity_label`"), "{e}");
    // with activity_label present, the next missing field is named
    let mut ex = data.examples[0].clone();
    ex.activity_label = Some("Roof shingle removal".into());
    let e = ev.hellaswag(&tok, &[ex], HellaSwagStyle::Harness).unwrap_err();
    assert!(e.to_string().contains("missing field `ctx_a`"), "{e}");
}

#[test]
fn limit_reads_a_prefix() {
    let (model, tok, r) = setup();
    let opts = ReadOptions { limit: Some(5), ..Default::default() };
    let data = read_hellaswag(fixture("data/hellaswag_mini.jsonl"), opts).unwrap();
    assert_eq!(data.examples.len(), 5);
    let got = Evaluator::new(&model).hellaswag(&tok, &data.examples, HellaSwagStyle::Harness).unwrap();
    let want = &r.json["hellaswag"]["harness"]["predictions"].as_array().unwrap()[..5];
    for (g, w) in got.predictions.iter().zip(want) {
        assert_eq!(g.pred as u64, w["pred"].as_u64().unwrap());
    }
}
