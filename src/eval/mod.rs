//! Evaluation: per-token NLL, cross-entropy with an ignore mask, token-weighted
//! batched evaluation, sliding-window perplexity, masked completion scoring,
//! HellaSwag (build-nanogpt and lm-evaluation-harness styles) and a results summary.
//!
//! Everything runs on [`Gpt2::forward`](crate::Gpt2::forward) through one
//! engine, [`Evaluator::score`]: rows are right-padded with an attention mask,
//! batched, and reduced to per-token NLLs one batch of logits at a time.
//! Losses are accumulated token-weighted ([`LossStats`]): the global mean is
//! `Σ NLL / Σ tokens`, never a mean of batch means.
//!
//! ```
//! use gpt2::{eval::{Evaluator, SlidingWindow}, Config, Gpt2};
//! let model = Gpt2::new_random(Config::nano(16, 64), 0).unwrap();
//! let tokens: Vec<u32> = (0..50).map(|i| (i * 13 % 64) as u32).collect();
//! let ev = Evaluator::new(&model).with_batch_size(4).unwrap();
//! let r = ev.sliding_window(&tokens, SlidingWindow::new(16, 8)).unwrap();
//! assert_eq!(r.stats.tokens, 49); // every token after the first, once
//! println!("ppl {:.2} (HF guide recipe: {:.2})", r.perplexity, r.hf_guide.perplexity);
//! ```

pub mod completion;
pub mod hellaswag;
pub mod loss;
pub mod perplexity;
pub mod score;
pub mod stats;
pub mod summary;

pub use completion::{argmin_first, CompletionScore};
pub use hellaswag::{read_hellaswag, HellaSwagEval, HellaSwagExample, HellaSwagPrediction, HellaSwagStyle};
pub use loss::{labels_from_hf, SequenceEval, IGNORE_INDEX};
pub use perplexity::{HfGuideNumber, SlidingWindow, SlidingWindowEval, SlidingWindowStream, Window};
pub use score::{Evaluator, ProgressFn, ScoreRow};
pub use stats::{perplexity_from_loss, LossStats, TextNormalized};
pub use summary::EvalSummary;
