//! Uses `gpt2` as a dependency, through the public API only: load the bundled model, tokenize,
//! perplexity, generate, and check the results are sane. Run by `.ci/run`.

use gpt2::eval::{Evaluator, SlidingWindow};
use gpt2::generate::{generate, GenerateConfig, SamplingParams};
use gpt2::{Gpt2, Tokenizer};

fn main() -> Result<(), gpt2::Error> {
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
    println!("downstream ok");
    Ok(())
}
