//! Logits parity with transformers' GPT2LMHeadModel (references from fixtures/make_fixtures.py).
//! Tolerance: max |diff| ≤ 1e-4 in f32 (see docs/numerics.md).

mod common;

use common::{assert_close, fixture, Reference};
use gpt2::{ForwardInput, ForwardOptions, Gpt2, LogitsMode};
use ndarray::{s, Ix2, Ix3};

const TOL: f32 = 1e-4;

fn check_full_logits(model: &Gpt2, reference: &Reference, key: &str, tol: f32) {
    let ids = reference.u32(&format!("forward.{key}.input_ids")).into_dimensionality::<Ix2>().unwrap();
    let want = reference.f32(&format!("forward.{key}.logits")).into_dimensionality::<Ix3>().unwrap();
    let got = model.logits_batch(ids.view()).unwrap();
    assert_eq!(got.dim(), want.dim());
    assert_close(key, got.as_slice().unwrap(), want.as_slice().unwrap(), tol);
}

#[test]
fn tiny_logits_match_transformers_batched_and_at_full_context() {
    let model = Gpt2::load(fixture("models/tiny")).unwrap();
    let r = Reference::load("tiny");
    assert_eq!(model.config().n_positions, 64);
    for key in ["full", "short", "one"] {
        check_full_logits(&model, &r, key, TOL);
    }
}

#[test]
fn single_sequence_api_equals_batched_rows() {
    let model = Gpt2::load(fixture("models/tiny")).unwrap();
    let r = Reference::load("tiny");
    let ids = r.u32("forward.short.input_ids").into_dimensionality::<Ix2>().unwrap();
    let want = r.f32("forward.short.logits").into_dimensionality::<Ix3>().unwrap();
    for row in 0..ids.nrows() {
        let toks: Vec<u32> = ids.row(row).to_vec();
        let got = model.logits(&toks).unwrap();
        let w = want.slice(s![row, .., ..]).to_owned();
        assert_close("row", got.as_slice().unwrap(), w.as_slice().unwrap(), TOL);
    }
}

#[test]
fn last_only_logits_equal_last_row_of_full() {
    let model = Gpt2::load(fixture("models/tiny")).unwrap();
    let r = Reference::load("tiny");
    let ids = r.u32("forward.short.input_ids").into_dimensionality::<Ix2>().unwrap();
    let want = r.f32("forward.short.logits").into_dimensionality::<Ix3>().unwrap();
    let opts = ForwardOptions { logits: LogitsMode::Last, ..Default::default() };
    let out = model.forward(&ForwardInput::new(ids.view()), None, &opts).unwrap();
    let got = out.logits.unwrap();
    let t = ids.ncols();
    let w = want.slice(s![.., t - 1..t, ..]).to_owned();
    assert_close("last", got.as_slice().unwrap(), w.as_slice().unwrap(), TOL);
}

#[test]
fn half_precision_checkpoints_load_and_match() {
    for name in ["tiny-f16", "tiny-bf16"] {
        let model = Gpt2::load(fixture(&format!("models/{name}"))).unwrap();
        let r = Reference::load(name);
        check_full_logits(&model, &r, "short", TOL);
    }
}

#[test]
fn bare_safetensors_file_infers_config() {
    let model = Gpt2::load(fixture("models/tiny-single.safetensors")).unwrap();
    let c = model.config();
    assert_eq!((c.n_layer, c.n_head, c.n_embd, c.n_positions, c.vocab_size), (1, 1, 64, 32, 300));
    check_full_logits(&model, &Reference::load("tiny-single"), "short", TOL);
}

#[test]
fn hub_layout_with_mask_buffers_and_full_vocab_matches() {
    let model = Gpt2::load(fixture("models/tiny-bpe")).unwrap();
    let r = Reference::load("tiny-bpe");
    let ids = r.u32("forward.full.input_ids").into_dimensionality::<Ix2>().unwrap();
    assert_eq!(ids.ncols(), model.config().n_positions);
    let logits = model.logits_batch(ids.view()).unwrap();
    // first 512 vocabulary columns everywhere
    let head = r.f32("forward.full.logits_head").into_dimensionality::<Ix3>().unwrap();
    let got_head = logits.slice(s![.., .., ..512]).to_owned();
    assert_close("logits[..., :512]", got_head.as_slice().unwrap(), head.as_slice().unwrap(), TOL);
    // the whole distribution at every position through logsumexp and argmax
    let lse = r.f32("forward.full.logsumexp").into_dimensionality::<Ix2>().unwrap();
    let argmax = r.u32("forward.full.argmax").into_dimensionality::<Ix2>().unwrap();
    let (b, t, _) = logits.dim();
    let mut got_lse = Vec::new();
    for bi in 0..b {
        for ti in 0..t {
            let row = logits.slice(s![bi, ti, ..]);
            got_lse.push(gpt2::kernels::softmax::logsumexp(row.as_slice().unwrap()));
            let am = row
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc })
                .0;
            assert_eq!(am as u32, argmax[(bi, ti)], "argmax at ({bi},{ti})");
        }
    }
    assert_close("logsumexp", &got_lse, lse.as_slice().unwrap(), TOL);
    // full rows at two positions
    let at = r.f32("forward.full.logits_at").into_dimensionality::<Ix2>().unwrap();
    for (k, &(bi, ti)) in [(0usize, 0usize), (0, 127)].iter().enumerate() {
        let got = logits.slice(s![bi, ti, ..]).to_owned();
        let want = at.row(k).to_owned();
        assert_close("full row", got.as_slice().unwrap(), want.as_slice().unwrap(), TOL);
    }
}

#[test]
fn save_then_load_round_trips_bit_exactly() {
    let model = Gpt2::load(fixture("models/tiny-bpe")).unwrap();
    let dir = std::env::temp_dir().join(format!("gpt2-roundtrip-{}", std::process::id()));
    model.save(&dir).unwrap();
    let back = Gpt2::load(&dir).unwrap();
    assert_eq!(back.config(), model.config());
    assert!(back.params() == model.params(), "round trip changed parameters");
    // also as a bare file (config from the embedded metadata)
    let file = dir.join("bare.safetensors");
    model.save_safetensors(&file, gpt2::SaveDtype::F32).unwrap();
    let bare = Gpt2::load(&file).unwrap();
    assert!(bare.params() == model.params());
    std::fs::remove_dir_all(&dir).unwrap();
}
