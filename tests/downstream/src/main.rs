//! Uses `gpt2` as a dependency, through the public API only. Run by `.ci/run` twice: against the
//! checkout (by path) and against the UNPACKED `cargo package` output (no fixtures inside).
//!
//! `downstream [MODEL REFERENCE]`: with the default model (`gpt2::default_model_dir`, e.g. via
//! `GPT2_MODEL_DIR`): tokenize, perplexity, generate, and check the results are sane. With
//! `MODEL` (a transformers checkpoint directory or hub id) and `REFERENCE` (a
//! fixtures/reference/<model>.safetensors file): the logits of `forward.short.input_ids` must
//! match `forward.short.logits` within 1e-4, and `format!("{model:?}")` must stay under 10 kB.

use gpt2::eval::{Evaluator, SlidingWindow};
use gpt2::generate::{generate, GenerateConfig, SamplingParams};
use gpt2::ndarray::Array2;
use gpt2::{Gpt2, Tokenizer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [model, reference] = args.as_slice() {
        check_reference(model, reference)?;
    }
    let model = Gpt2::load(gpt2::default_model_dir()?)?;
    let tok = Tokenizer::gpt2()?;
    let ids = tok.encode("ROMEO: But soft, what light through yonder window breaks?");
    let ppl = Evaluator::new(&model).sliding_window(&ids, SlidingWindow::new(128, 64))?.perplexity;
    let cfg = GenerateConfig { max_new_tokens: 30, sampling: SamplingParams::greedy(), ..Default::default() };
    let out = generate(&model, &tok, &tok.encode("JULIET:"), &cfg, None)?;
    println!("perplexity {ppl:.2}");
    println!("JULIET:{}", out.samples[0].text);
    assert!(ppl.is_finite() && ppl > 1.0 && ppl < 50257.0, "perplexity {ppl}");
    assert!(!out.samples[0].token_ids.is_empty());
    // greedy decoding is deterministic
    let again = generate(&model, &tok, &tok.encode("JULIET:"), &cfg, None)?;
    assert_eq!(again.samples[0].token_ids, out.samples[0].token_ids);
    // beam search with log-probabilities; explicit sampling constructors; special tokens
    let beams = GenerateConfig::beam(3).num_samples(2).max_new_tokens(12).logprobs(2);
    let out = generate(&model, &tok, &tok.encode("ROMEO:"), &beams, None)?;
    let (a, b) = (&out.samples[0], &out.samples[1]);
    assert!(a.score.unwrap() >= b.score.unwrap());
    assert!(a.logprob_summary().unwrap().perplexity >= 1.0);
    assert_eq!(GenerateConfig::sampling(0.8).top_p(0.9).sampling.top_k, None);
    assert_eq!(tok.encode_with_special("Hello<|endoftext|>"), vec![15496, 50256]);
    assert!(!tok.encode_ordinary("Hello<|endoftext|>").contains(&50256));
    println!("downstream ok");
    Ok(())
}

fn check_reference(model: &str, reference: &str) -> Result<(), Box<dyn std::error::Error>> {
    let model = Gpt2::from_pretrained(model)?;
    let debug = format!("{model:?}");
    assert!(debug.len() < 10_000, "Debug of the model is {} bytes", debug.len());
    let bytes = std::fs::read(reference)?;
    let st = safetensors::SafeTensors::deserialize(&bytes)?;
    let ids = st.tensor("forward.short.input_ids")?;
    let (b, t) = (ids.shape()[0], ids.shape()[1]);
    let ids: Vec<u32> = ids.data().chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as u32).collect();
    let want: Vec<f32> = st
        .tensor("forward.short.logits")?
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let logits = model.logits_batch(Array2::from_shape_vec((b, t), ids)?.view())?;
    assert_eq!(logits.len(), want.len());
    let diff = logits.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    println!("{debug}");
    println!("logits vs transformers: max |Δ| {diff:.2e} over {b}x{t} tokens");
    assert!(diff <= 1e-4, "max |Δ logits| {diff:e} > 1e-4");
    Ok(())
}
