//! Bad input to the evaluation API: every case is a typed error, never a panic.

mod common;

use std::path::PathBuf;

use common::fixture;
use gpt2::eval::hellaswag::{parse_hellaswag, render, ReadOptions};
use gpt2::eval::{
    labels_from_hf, read_hellaswag, EvalSummary, Evaluator, HellaSwagExample, HellaSwagStyle, LossStats, ScoreRow,
    SlidingWindow,
};
use gpt2::{Config, Error, Gpt2, Tokenizer};

fn nano() -> Gpt2 {
    Gpt2::new_random(Config::nano(16, 50257), 0).unwrap()
}

fn tmpfile(tag: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gpt2-eval-bad-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("data.jsonl");
    std::fs::write(&p, contents).unwrap();
    p
}

const GOOD: &str = r#"{"activity_label":"Roof shingle removal","ctx_a":"A man is sitting on a roof.","ctx_b":"he","ctx":"A man is sitting on a roof. he","endings":["a.","b.","c.","d."],"label":3}"#;

fn example() -> HellaSwagExample {
    let d = parse_hellaswag(GOOD.as_bytes(), "mem".as_ref(), ReadOptions::default()).unwrap();
    d.examples.into_iter().next().unwrap()
}

#[test]
fn empty_text_and_too_short_sequences() {
    let model = nano();
    let tok = Tokenizer::gpt2().unwrap();
    let ev = Evaluator::new(&model);
    let empty = tok.encode("");
    assert!(matches!(ev.token_nlls(&empty), Err(Error::EmptyInput(_))));
    let e = ev.token_nlls(&tok.encode("Hi")).unwrap_err(); // one token
    assert!(matches!(e, Error::EmptyInput(_)));
    assert!(e.to_string().contains("at least 2 tokens"), "{e}");
    assert!(matches!(ev.evaluate(&[vec![1u32, 2], vec![3]]), Err(Error::EmptyInput(_))));
    assert!(matches!(ev.evaluate::<Vec<u32>>(&[]), Err(Error::EmptyInput(_))));
    assert!(matches!(ev.sliding_window(&[7], SlidingWindow::new(8, 4)), Err(Error::EmptyInput(_))));
    assert!(matches!(ev.sliding_window(&empty, SlidingWindow::new(8, 4)), Err(Error::EmptyInput(_))));
    // nothing to score: all labels ignored
    let labels = labels_from_hf(&[-100, -100, -100]).unwrap();
    assert!(matches!(ev.cross_entropy(&[1, 2, 3], &labels), Err(Error::EmptyInput(_))));
    assert!(matches!(ev.score_completions(&[], &[vec![1u32]]), Err(Error::EmptyInput(_))));
    assert!(matches!(ev.score_completions(&[1], &[Vec::<u32>::new()]), Err(Error::EmptyInput(_))));
    assert!(matches!(EvalSummary::new("m", &model, 1, LossStats::default(), 1.0), Err(Error::EmptyInput(_))));
}

#[test]
fn window_geometry_is_checked() {
    let model = nano(); // n_positions = 16
    let ev = Evaluator::new(&model);
    let tokens: Vec<u32> = (0..40).collect();
    let e = ev.sliding_window(&tokens, SlidingWindow::new(8, 9)).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { name: "stride", .. }), "{e}");
    let e = ev.sliding_window(&tokens, SlidingWindow::new(32, 8)).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { name: "max_length", .. }), "{e}");
    assert!(e.to_string().contains("n_positions = 16"), "{e}");
    assert!(matches!(
        ev.sliding_window(&tokens, SlidingWindow::new(8, 0)),
        Err(Error::InvalidArgument { name: "stride", .. })
    ));
    assert!(matches!(
        ev.sliding_window(&tokens, SlidingWindow::new(1, 1)),
        Err(Error::InvalidArgument { name: "max_length", .. })
    ));
    // the edge cases that are fine
    assert_eq!(ev.sliding_window(&tokens, SlidingWindow::new(16, 16)).unwrap().stats.tokens, 39);
    assert_eq!(ev.sliding_window(&tokens[..2], SlidingWindow::new(2, 1)).unwrap().stats.tokens, 1);
}

#[test]
fn lengths_vocab_labels_and_batch_size() {
    let model = nano();
    let ev = Evaluator::new(&model);
    let long: Vec<u32> = (0..18).collect(); // 17 inputs > 16 positions
    assert!(matches!(ev.evaluate(&[long]), Err(Error::SequenceTooLong { len: 17, n_positions: 16 })));
    assert!(matches!(ev.token_nlls(&[1, 50257]), Err(Error::TokenOutOfVocab { token: 50257, .. })));
    assert!(matches!(ev.cross_entropy(&[1, 2], &[None]), Err(Error::Shape(_))));
    assert!(matches!(labels_from_hf(&[3, -5]), Err(Error::InvalidArgument { name: "labels", .. })));
    assert!(matches!(
        Evaluator::new(&model).with_batch_size(0),
        Err(Error::InvalidArgument { name: "batch_size", .. })
    ));
    assert!(matches!(ScoreRow::new(vec![1, 2], vec![None]), Err(Error::Shape(_))));
    assert!(matches!(ScoreRow::tail(&[1, 2, 3], 0), Err(Error::InvalidArgument { .. })));
    assert!(matches!(ScoreRow::tail(&[1, 2, 3], 3), Err(Error::InvalidArgument { .. })));
}

#[test]
fn malformed_jsonl_reports_the_line() {
    let text = format!("{GOOD}\n\n{{\"ctx\": broken\n{GOOD}\n");
    let p = tmpfile("syntax", text.as_bytes());
    match read_hellaswag(&p, ReadOptions::default()).unwrap_err() {
        Error::Data { path, line, reason } => {
            assert_eq!((path, line), (p.clone(), 3));
            assert!(reason.contains("invalid JSON"), "{reason}");
        }
        e => panic!("unexpected {e}"),
    }
    let cases: [(&str, &str); 9] = [
        (r#"[1, 2]"#, "JSON object"),
        (&GOOD.replace(r#""label":3"#, r#""label":4"#), "label"),
        (&GOOD.replace(r#""label":3"#, r#""label":-1"#), "label"),
        (&GOOD.replace(r#""label":3"#, r#""label":"x""#), "label"),
        (&GOOD.replace(r#","label":3"#, ""), "missing field `label`"),
        (&GOOD.replace(r#""ctx_b":"he""#, r#""ctx_b":7"#), "`ctx_b` must be a string"),
        (
            &GOOD.replace(r#""activity_label":"Roof shingle removal""#, r#""activity_label":null"#),
            "`activity_label` must be a string",
        ),
        (&GOOD.replace(r#""ctx":"A man is sitting on a roof. he","#, ""), "missing field `ctx`"),
        (&GOOD.replace(r#""a.","b.","c.","d.""#, r#""a.","b.",3,"d.""#), "ending must be a string"),
    ];
    for (line, want) in cases {
        let e = parse_hellaswag(format!("{GOOD}\n{line}").as_bytes(), "f.jsonl".as_ref(), ReadOptions::default())
            .unwrap_err();
        match e {
            Error::Data { line: 2, reason, .. } => assert!(reason.contains(want), "{reason} lacks {want}"),
            e => panic!("unexpected {e}"),
        }
    }
    // invalid UTF-8
    let mut bytes = GOOD.as_bytes().to_vec();
    bytes.extend_from_slice(b"\n\xff\xfe\n");
    assert!(matches!(parse_hellaswag(&bytes, "f".as_ref(), ReadOptions::default()), Err(Error::Data { line: 2, .. })));
    // missing file
    assert!(matches!(read_hellaswag("/nonexistent/hs.jsonl", ReadOptions::default()), Err(Error::NotFound(_))));
    // string labels (HF datasets copy) are fine
    let d = parse_hellaswag(
        GOOD.replace(r#""label":3"#, r#""label":"2""#).as_bytes(),
        "f".as_ref(),
        ReadOptions::default(),
    );
    assert_eq!(d.unwrap().examples[0].label, 2);
}

#[test]
fn endings_count_must_be_four() {
    for endings in [r#"["a.","b.","c."]"#, r#"["a.","b.","c.","d.","e."]"#, r#"[]"#, r#""abcd""#] {
        let line = GOOD.replace(r#"["a.","b.","c.","d."]"#, endings);
        match parse_hellaswag(line.as_bytes(), "f".as_ref(), ReadOptions::default()).unwrap_err() {
            Error::Data { line: 1, reason, .. } => assert!(reason.contains("endings"), "{reason}"),
            e => panic!("unexpected {e}"),
        }
    }
    // a hand-built example with three endings is refused by the evaluator too
    let model = nano();
    let tok = Tokenizer::gpt2().unwrap();
    let mut ex = example();
    ex.endings.pop();
    assert!(matches!(
        Evaluator::new(&model).hellaswag(&tok, &[ex], HellaSwagStyle::Completion),
        Err(Error::Data { .. })
    ));
    assert!(matches!(Evaluator::new(&model).hellaswag(&tok, &[], HellaSwagStyle::Harness), Err(Error::EmptyInput(_))));
}

#[test]
fn skip_malformed_counts_and_continues() {
    let bad3 = GOOD.replace(r#"["a.","b.","c.","d."]"#, r#"["a.","b.","c."]"#);
    let text = format!("{GOOD}\nnot json\n{bad3}\n\n{GOOD}\n");
    let p = tmpfile("skip", text.as_bytes());
    let opts = ReadOptions { skip_malformed: true, limit: None };
    let d = read_hellaswag(&p, opts).unwrap();
    assert_eq!(d.examples.len(), 2);
    assert_eq!(d.examples.iter().map(|e| e.line).collect::<Vec<_>>(), vec![1, 5]);
    assert_eq!(d.skipped.iter().map(|s| s.line).collect::<Vec<_>>(), vec![2, 3]);
    assert!(d.skipped[1].reason.contains("expected 4 endings, found 3"), "{}", d.skipped[1].reason);
    // without the option the first malformed line is an error
    assert!(matches!(read_hellaswag(&p, ReadOptions::default()), Err(Error::Data { line: 2, .. })));
    // the real mini file has nothing to skip
    let d = read_hellaswag(fixture("data/hellaswag_mini.jsonl"), opts).unwrap();
    assert_eq!((d.examples.len(), d.skipped.len()), (16, 0));
}

#[test]
fn over_long_examples_completion_refuses_harness_truncates_left() {
    let model = nano(); // n_positions = 16
    let tok = Tokenizer::gpt2().unwrap();
    let mut ex = example();
    ex.ctx =
        "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen"
            .into();
    ex.ctx_a = Some(ex.ctx.clone());
    ex.ctx_b = Some(String::new());
    assert!(matches!(render(&ex, &tok, HellaSwagStyle::Completion, 16), Err(Error::Data { line: 1, .. })));
    let r = render(&ex, &tok, HellaSwagStyle::Harness, 16).unwrap();
    for (c, e) in r.contexts.iter().zip(&r.endings) {
        assert_eq!(c.len() + e.len(), 17, "(ctx + cont)[-(max_length + 1):]");
    }
    // scoring the truncated rows works and equals scoring them by hand
    let ev = Evaluator::new(&model);
    let res = ev.hellaswag(&tok, std::slice::from_ref(&ex), HellaSwagStyle::Harness).unwrap();
    let by_hand = ev.score_completions(&r.contexts[0], &r.endings[..1]).unwrap();
    assert!((res.predictions[0].sum_losses[0] - by_hand[0].sum_nll).abs() < 1e-9);
    // an ending that preprocesses to nothing cannot be normalised by its length
    let mut ex = example();
    ex.endings[2] = " [step] ".into();
    assert!(matches!(render(&ex, &tok, HellaSwagStyle::Harness, 16), Err(Error::Data { .. })));
}

#[test]
fn infinite_loss_gives_infinite_perplexity_not_nan() {
    let s = LossStats { sum_nll: 1e5, tokens: 10 };
    assert_eq!(s.perplexity(), Some(f64::INFINITY));
    let model = nano();
    let sum = EvalSummary::new("m", &model, 1, s, 0.0).unwrap();
    assert_eq!(sum.perplexity, f64::INFINITY);
    let j = serde_json::to_value(&sum).unwrap();
    assert_eq!(j["perplexity"], "inf");
}
