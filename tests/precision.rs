//! Reduced-precision inference weights (f16, bf16, int8): error against transformers' f32
//! logits and against the crate's own f32 path, perplexity cost on the bundled model, the
//! decode (GEMV) path against the prefill (GEMM) path, and re-packing after `params_mut`.
//! Tolerances (measured values in docs/numerics.md, bounds ≈ 3× the measurement):

mod common;

use common::{fixture, Reference};
use gpt2::eval::{Evaluator, SlidingWindow};
use gpt2::{ForwardInput, ForwardOptions, Gpt2, KvCache, LoadOptions, LogitsMode, Tokenizer, WeightDtype};
use ndarray::{s, Array2, Ix2, Ix3};

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Max |Δlogit| against transformers (f32) on the `tiny` fixture (logits std ≈ 2.8); the f32
/// bound is the parity tolerance, the others are ≈ 3× the measured error.
const TINY_TOL: [(WeightDtype, f32); 4] =
    [(WeightDtype::F32, 1e-4), (WeightDtype::F16, 2e-2), (WeightDtype::BF16, 2e-1), (WeightDtype::Int8, 5e-1)];

#[test]
fn tiny_logits_in_each_dtype_are_close_to_transformers() {
    let r = Reference::load("tiny");
    let ids = r.u32("forward.short.input_ids").into_dimensionality::<Ix2>().unwrap();
    let want = r.f32("forward.short.logits").into_dimensionality::<Ix3>().unwrap();
    for (dtype, tol) in TINY_TOL {
        let model = Gpt2::load_with(fixture("models/tiny"), &LoadOptions { dtype }).unwrap();
        assert_eq!(model.dtype_label(), dtype.label());
        let got = model.logits_batch(ids.view()).unwrap();
        let d = max_abs(got.as_slice().unwrap(), want.as_slice().unwrap());
        eprintln!("tiny {dtype}: max |Δlogit| = {d:.3e}");
        assert!(d <= tol, "{dtype}: {d} > {tol}");
        if dtype != WeightDtype::F32 {
            // the reduced-precision path is really taken
            assert!(d > 1e-5, "{dtype}: error {d} is f32-level");
            assert!(model.packed_bytes() > 0);
        }
    }
}

#[test]
fn bundled_model_perplexity_cost_is_small() {
    let mut model = Gpt2::load(fixture("model")).unwrap();
    let tok = Tokenizer::gpt2().unwrap();
    let text = std::fs::read_to_string(fixture("corpus/shakespeare_val.txt")).unwrap();
    let mut tokens = tok.encode(&text[..20_000]);
    tokens.truncate(2048);
    let window = SlidingWindow::new(256, 128);
    let ppl = |m: &Gpt2| Evaluator::new(m).sliding_window(&tokens, window).unwrap().perplexity;
    let base = ppl(&model);
    // relative perplexity change bounds
    for (dtype, bound) in [(WeightDtype::F16, 1e-6), (WeightDtype::BF16, 3e-3), (WeightDtype::Int8, 1e-2)] {
        model.set_weight_dtype(dtype);
        let p = ppl(&model);
        let rel = (p / base - 1.0).abs();
        eprintln!("bundled {dtype}: perplexity {p:.4} vs f32 {base:.4} ({:+.4}%)", 100.0 * (p / base - 1.0));
        assert!(rel <= bound, "{dtype}: perplexity {p} vs {base}");
    }
}

#[test]
fn decode_path_agrees_with_prefill_in_each_dtype() {
    for dtype in [WeightDtype::F16, WeightDtype::BF16, WeightDtype::Int8] {
        let model = Gpt2::load_with(fixture("models/tiny-bpe"), &LoadOptions { dtype }).unwrap();
        let ids = Array2::from_shape_fn((2, 12), |(i, j)| ((i * 977 + j * 131) % 50257) as u32);
        let full = model.logits_batch(ids.view()).unwrap();
        let mut cache = KvCache::new(model.config(), 2, 12).unwrap();
        let opts = ForwardOptions { logits: LogitsMode::Last, ..Default::default() };
        model.forward(&ForwardInput::new(ids.slice(s![.., ..8])), Some(&mut cache), &opts).unwrap();
        let v = model.config().vocab_size;
        let mut logits = vec![0f32; 2 * v];
        for t in 8..12 {
            let step: Vec<u32> = ids.column(t).to_vec();
            model.decode_step(&step, &mut cache, &mut logits).unwrap();
            for b in 0..2 {
                let want = full.slice(s![b, t, ..]).to_owned();
                let d = max_abs(&logits[b * v..(b + 1) * v], want.as_slice().unwrap());
                // GEMV and GEMM differ only in summation order (bf16 prefill also rounds
                // activations to bf16, so it gets the bf16 bound)
                let tol = if dtype == WeightDtype::BF16 { 1.5e-1 } else { 1e-4 };
                assert!(d <= tol, "{dtype} t={t} b={b}: {d}");
            }
        }
    }
}

#[test]
fn packed_weights_follow_parameter_edits() {
    let mut model = Gpt2::load_with(fixture("models/tiny"), &LoadOptions { dtype: WeightDtype::BF16 }).unwrap();
    let ids = Array2::from_shape_fn((1, 6), |(_, j)| j as u32 * 3);
    let before = model.logits_batch(ids.view()).unwrap();
    let off = model.layout().require("h.0.mlp.c_fc.weight").unwrap().offset;
    for w in &mut model.params_mut()[off..off + 500] {
        *w *= -2.0;
    }
    assert_eq!(model.weight_dtype(), WeightDtype::BF16);
    let after = model.logits_batch(ids.view()).unwrap();
    assert!(max_abs(before.as_slice().unwrap(), after.as_slice().unwrap()) > 1e-2);
    // and equals a model packed from scratch with the edited parameters
    let fresh = Gpt2::from_params(model.config().clone(), model.params().to_vec())
        .unwrap()
        .with_weight_dtype(WeightDtype::BF16);
    assert_eq!(fresh.logits_batch(ids.view()).unwrap(), after);
}
