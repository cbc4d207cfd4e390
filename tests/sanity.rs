//! Sanity checks that need no reference: an untrained model is guessing.

use gpt2::{Config, Gpt2, Tokenizer};

/// Mean next-token cross-entropy of `tokens` under `model`.
fn mean_loss(model: &Gpt2, tokens: &[u32]) -> f64 {
    let logits = model.logits(tokens).unwrap();
    let mut total = 0.0f64;
    for t in 0..tokens.len() - 1 {
        let row = logits.row(t);
        let lse = gpt2::kernels::softmax::logsumexp(row.as_slice().unwrap()) as f64;
        total += lse - row[tokens[t + 1] as usize] as f64;
    }
    total / (tokens.len() - 1) as f64
}

#[test]
fn fresh_124m_model_loss_is_ln_vocab() {
    let tok = Tokenizer::gpt2().unwrap();
    let model = Gpt2::new_random(Config::gpt2_124m(), 1337).unwrap();
    assert_eq!(model.num_parameters(), 124_439_808);
    let text = "It was the best of times, it was the worst of times, it was the age of wisdom, \
                it was the age of foolishness, it was the epoch of belief, it was the epoch of incredulity.";
    let ids = tok.encode(text);
    let loss = mean_loss(&model, &ids);
    let uniform = (50257f64).ln();
    eprintln!("fresh 124M loss = {loss:.4}, ln(50257) = {uniform:.4}");
    assert!((loss - uniform).abs() < 0.1, "loss {loss} vs ln(V) {uniform}");
}

#[test]
fn initialization_is_seeded() {
    let a = Gpt2::new_random(Config::nano(16, 50), 3).unwrap();
    let b = Gpt2::new_random(Config::nano(16, 50), 3).unwrap();
    let c = Gpt2::new_random(Config::nano(16, 50), 4).unwrap();
    assert_eq!(a.params(), b.params());
    assert_ne!(a.params(), c.params());
}
