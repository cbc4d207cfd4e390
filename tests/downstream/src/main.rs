//! Uses `gpt2` as a dependency, through the public API only: load the bundled model, tokenize,
//! perplexity, generate, and check the results are sane. Run by `.ci/run`.

use gpt2::eval::{Evaluator, SlidingWindow};
use gpt2::generate::{generate, GenerateConfig, SamplingParams};
use gpt2::{Gpt2, Tokenizer};

fn main() -> Result<(), gpt2::Error> {
    let model = Gpt2::load(gpt2::model::io::bundled_model_dir())?;
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
