//! Sliding-window perplexity for texts longer than the model's context
//! (HF "Perplexity of fixed-length models" windows, scored exactly), plus the
//! guide's own number for comparison with published figures.

use serde::{Deserialize, Serialize};

use super::score::{too_short, Evaluator, ScoreRow};
use super::stats::{perplexity_from_loss, LossStats};
use crate::error::{Error, Result};

/// Window geometry: each forward pass sees at most `max_length` tokens and the
/// window start advances by `stride` (`1 ≤ stride ≤ max_length`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlidingWindow {
    /// Tokens per forward pass (`2 ≤ max_length ≤ n_positions`).
    pub max_length: usize,
    /// How far the window start moves each step.
    pub stride: usize,
}

/// One window: the model sees `tokens[begin..end]` and is scored on
/// `tokens[first_target..end]` (each given every window token before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// First input token.
    pub begin: usize,
    /// One past the last input token.
    pub end: usize,
    /// First scored token (`begin < first_target ≤ end`; `first_target == end` scores nothing).
    pub first_target: usize,
    /// The guide's weight for this window, `trg_len − 1` (used only by the HF-guide number).
    pub guide_weight: usize,
}

impl Window {
    /// Tokens of context the first scored token gets.
    pub fn context(&self) -> usize {
        self.first_target - self.begin
    }
}

impl SlidingWindow {
    /// A window geometry (checked when used).
    pub fn new(max_length: usize, stride: usize) -> Self {
        SlidingWindow { max_length, stride }
    }

    /// Checks `2 ≤ max_length ≤ n_positions` and `1 ≤ stride ≤ max_length`.
    pub fn validate(&self, n_positions: usize) -> Result<()> {
        if self.max_length < 2 {
            return Err(Error::arg("max_length", format!("must be at least 2, got {}", self.max_length)));
        }
        if self.max_length > n_positions {
            return Err(Error::arg(
                "max_length",
                format!("{} exceeds the model's context n_positions = {n_positions}", self.max_length),
            ));
        }
        if self.stride == 0 {
            return Err(Error::arg("stride", "must be at least 1"));
        }
        if self.stride > self.max_length {
            return Err(Error::arg(
                "stride",
                format!(
                    "{} is larger than max_length = {}: tokens between windows would never be scored",
                    self.stride, self.max_length
                ),
            ));
        }
        Ok(())
    }

    /// The HF guide's loop: `begin = k·stride`, `end = min(begin + max_length, n)`,
    /// `trg_len = end − prev_end`; labels on the last `trg_len` tokens; the
    /// internal shift means a window's first token is never scored. `stride`
    /// is the step used.
    fn plan(&self, n: usize, step: usize) -> Vec<Window> {
        let mut out = Vec::new();
        let mut prev_end = 0;
        let mut begin = 0;
        while begin < n {
            let end = (begin + self.max_length).min(n);
            let trg_len = end - prev_end;
            out.push(Window { begin, end, first_target: prev_end.max(begin + 1).min(end), guide_weight: trg_len - 1 });
            prev_end = end;
            if end == n {
                break;
            }
            begin += step;
        }
        out
    }

    /// Exact windows for a text of `n` tokens: every token after the first is
    /// scored exactly once, with at least `max_length − stride` tokens of
    /// context (the first window's tokens get all preceding ones). Identical to
    /// the guide's windows when `stride < max_length`; for `stride == max_length`
    /// (disjoint windows) the step is `max_length − 1`, because a window's first
    /// token has nothing to be predicted from.
    ///
    /// ```
    /// use gpt2::eval::SlidingWindow;
    /// let w = SlidingWindow::new(4, 2).exact_windows(9);
    /// let spans: Vec<_> = w.iter().map(|w| (w.begin, w.first_target, w.end)).collect();
    /// assert_eq!(spans, vec![(0, 1, 4), (2, 4, 6), (4, 6, 8), (6, 8, 9)]);
    /// ```
    pub fn exact_windows(&self, n: usize) -> Vec<Window> {
        self.plan(n, self.stride.min(self.max_length.saturating_sub(1)).max(1))
    }

    /// The windows of the HF guide's recipe as written (step `stride`).
    pub fn hf_guide_windows(&self, n: usize) -> Vec<Window> {
        self.plan(n, self.stride.max(1))
    }
}

/// The number the HF guide's recipe prints: per window the mean loss over the
/// tokens HF actually scores, weighted by `trg_len − 1`
/// (`num_valid_tokens − batch_size`), summed, divided by the summed weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HfGuideNumber {
    /// `Σ loss_w·(trg_len_w − 1) / Σ (trg_len_w − 1)`.
    #[serde(with = "super::summary::float_or_inf")]
    pub avg_loss: f64,
    /// `exp(avg_loss)`.
    #[serde(with = "super::summary::float_or_inf")]
    pub perplexity: f64,
    /// Tokens the guide's forward passes actually scored.
    pub scored_tokens: usize,
    /// `Σ (trg_len − 1)`, the guide's token count.
    pub counted_tokens: usize,
    /// Forward passes (windows).
    pub windows: usize,
}

/// Result of [`Evaluator::sliding_window`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlidingWindowEval {
    /// The geometry used.
    pub window: SlidingWindow,
    /// Exact: every token after the first, scored once (`tokens = n − 1`).
    pub stats: LossStats,
    /// `stats.sum_nll / stats.tokens`.
    #[serde(with = "super::summary::float_or_inf")]
    pub avg_loss: f64,
    /// `exp(avg_loss)` (`+inf` on overflow).
    #[serde(with = "super::summary::float_or_inf")]
    pub perplexity: f64,
    /// Exact per-token NLLs: entry `i` belongs to token `i + 1`.
    pub token_nlls: Vec<f64>,
    /// Number of exact windows (forward rows).
    pub windows: usize,
    /// The HF guide's number (labelled; not the exact one).
    pub hf_guide: HfGuideNumber,
}

impl Evaluator<'_> {
    /// Sliding-window perplexity of one token stream (see [`SlidingWindow`]);
    /// windows are batched `batch_size` at a time.
    ///
    /// ```
    /// use gpt2::{eval::{Evaluator, SlidingWindow}, Config, Gpt2};
    /// let model = Gpt2::new_random(Config::nano(8, 30), 0).unwrap();
    /// let tokens: Vec<u32> = (0..40).map(|i| (i * 7 % 30) as u32).collect();
    /// let r = Evaluator::new(&model).sliding_window(&tokens, SlidingWindow::new(8, 4)).unwrap();
    /// assert_eq!(r.stats.tokens, 39);
    /// assert_eq!(r.token_nlls.len(), 39);
    /// ```
    pub fn sliding_window(&self, tokens: &[u32], window: SlidingWindow) -> Result<SlidingWindowEval> {
        window.validate(self.model().config().n_positions)?;
        if tokens.len() < 2 {
            return Err(too_short(tokens.len()));
        }
        let n = tokens.len();
        let exact = window.exact_windows(n);
        let guide = window.hf_guide_windows(n);
        let exact_nlls = self.score_windows(tokens, &exact)?;
        let token_nlls: Vec<f64> = exact_nlls.iter().flatten().copied().collect();
        debug_assert_eq!(token_nlls.len(), n - 1);
        let guide_nlls = if guide == exact { exact_nlls } else { self.score_windows(tokens, &guide)? };

        let (mut sum, mut weight, mut scored) = (0.0f64, 0usize, 0usize);
        for (w, nlls) in guide.iter().zip(&guide_nlls) {
            scored += nlls.len();
            // A window that scores nothing has weight 0 (the literal recipe gives NaN·0 there).
            if w.guide_weight > 0 && !nlls.is_empty() {
                sum += LossStats::from_nlls(nlls).mean().unwrap_or(0.0) * w.guide_weight as f64;
                weight += w.guide_weight;
            }
        }
        let guide_loss = if weight > 0 { sum / weight as f64 } else { f64::NAN };
        let stats = LossStats::from_nlls(&token_nlls);
        let avg_loss = stats.mean().expect("n ≥ 2 tokens scored");
        Ok(SlidingWindowEval {
            window,
            stats,
            avg_loss,
            perplexity: perplexity_from_loss(avg_loss),
            token_nlls,
            windows: exact.len(),
            hf_guide: HfGuideNumber {
                avg_loss: guide_loss,
                perplexity: perplexity_from_loss(guide_loss),
                scored_tokens: scored,
                counted_tokens: weight,
                windows: guide.len(),
            },
        })
    }

    /// NLLs of each window's scored tokens (empty for windows that score nothing).
    fn score_windows(&self, tokens: &[u32], windows: &[Window]) -> Result<Vec<Vec<f64>>> {
        let scoring: Vec<usize> = (0..windows.len()).filter(|&i| windows[i].first_target < windows[i].end).collect();
        let rows = scoring
            .iter()
            .map(|&i| {
                let w = windows[i];
                ScoreRow::tail(&tokens[w.begin..w.end], w.first_target - w.begin)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut scored = self.score(&rows)?.into_iter();
        let mut out = vec![Vec::new(); windows.len()];
        for i in scoring {
            out[i] = scored.next().expect("one result per row");
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(ws: &[Window]) -> Vec<usize> {
        ws.iter().flat_map(|w| w.first_target..w.end).collect()
    }

    #[test]
    fn exact_windows_score_every_token_once() {
        for n in 2..60 {
            for l in 2..12 {
                for s in 1..=l {
                    let w = SlidingWindow::new(l, s);
                    let ws = w.exact_windows(n);
                    assert_eq!(covered(&ws), (1..n).collect::<Vec<_>>(), "n={n} L={l} S={s}");
                    for x in &ws {
                        assert!(x.end - x.begin <= l);
                        if x.begin > 0 {
                            assert!(x.context() >= l - s.min(l - 1), "context {x:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn guide_windows_drop_one_token_per_disjoint_window() {
        let w = SlidingWindow::new(4, 4);
        let g = w.hf_guide_windows(12);
        assert_eq!(covered(&g), vec![1, 2, 3, 5, 6, 7, 9, 10, 11]);
        assert_eq!(g.iter().map(|x| x.guide_weight).sum::<usize>(), 9);
        // overlapping: same windows as exact, but weights trg_len − 1 undercount
        let w = SlidingWindow::new(4, 2);
        let g = w.hf_guide_windows(9);
        assert_eq!(g, w.exact_windows(9));
        assert_eq!(g.iter().map(|x| x.guide_weight).collect::<Vec<_>>(), vec![3, 1, 1, 0]);
    }

    #[test]
    fn validation() {
        assert!(SlidingWindow::new(8, 9).validate(16).is_err());
        assert!(SlidingWindow::new(32, 8).validate(16).is_err());
        assert!(SlidingWindow::new(8, 0).validate(16).is_err());
        assert!(SlidingWindow::new(1, 1).validate(16).is_err());
        assert!(SlidingWindow::new(16, 16).validate(16).is_ok());
    }
}
