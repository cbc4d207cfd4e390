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

/// Plans one family of windows (exact or HF-guide) incrementally, as tokens arrive: window `k`
/// starts at `k·step`; a window is emitted once it is known to be full and not the last one, and
/// the rest at [`Planner::finish`] — the same windows [`SlidingWindow::plan`] gives for the whole
/// stream.
#[derive(Debug, Clone)]
struct Planner {
    max_length: usize,
    step: usize,
    next_begin: usize,
    prev_end: usize,
    done: bool,
}

impl Planner {
    fn new(max_length: usize, step: usize) -> Self {
        Planner { max_length, step, next_begin: 0, prev_end: 0, done: false }
    }

    fn window(&mut self, n: usize) -> Window {
        let begin = self.next_begin;
        let end = (begin + self.max_length).min(n);
        let w = Window {
            begin,
            end,
            first_target: self.prev_end.max(begin + 1).min(end),
            guide_weight: end - self.prev_end - 1,
        };
        self.prev_end = end;
        self.done = end == n;
        self.next_begin += self.step;
        w
    }

    /// Up to `limit` more of the windows that `available` tokens determine for sure (full, and
    /// not the last).
    fn ready(&mut self, available: usize, out: &mut Vec<Window>, limit: usize) {
        for _ in 0..limit {
            if self.done || self.next_begin + self.max_length >= available {
                break;
            }
            out.push(self.window(usize::MAX));
        }
    }

    /// Up to `limit` more of the remaining windows of a stream of `n` tokens.
    fn finish(&mut self, n: usize, out: &mut Vec<Window>, limit: usize) {
        for _ in 0..limit {
            if self.done || self.next_begin >= n {
                break;
            }
            out.push(self.window(n));
        }
    }
}

/// Streaming sliding-window evaluation ([`Evaluator::sliding_window_stream`]): push tokens in
/// pieces of any size, get the same numbers as [`Evaluator::sliding_window`] on the whole stream
/// from [`SlidingWindowStream::finish`]. Windows are scored a block at a time as soon as they
/// are complete, and tokens no later window needs are dropped, so memory is bounded by one block
/// of windows plus what one `push` hands over — not by the length of the stream. Per-token NLLs
/// are kept only when asked for ([`SlidingWindowStream::keep_token_nlls`]), since they take 8
/// bytes per token.
///
/// ```
/// use gpt2::{eval::{Evaluator, SlidingWindow}, Config, Gpt2};
/// let model = Gpt2::new_random(Config::nano(8, 30), 0).unwrap();
/// let tokens: Vec<u32> = (0..100).map(|i| (i * 7 % 30) as u32).collect();
/// let ev = Evaluator::new(&model);
/// let mut stream = ev.sliding_window_stream(SlidingWindow::new(8, 4)).unwrap();
/// for piece in tokens.chunks(9) {
///     stream.push(piece).unwrap();
/// }
/// let streamed = stream.finish().unwrap();
/// let whole = ev.sliding_window(&tokens, SlidingWindow::new(8, 4)).unwrap();
/// assert_eq!(streamed.stats, whole.stats);
/// assert_eq!(streamed.hf_guide, whole.hf_guide);
/// assert!(streamed.token_nlls.is_empty());
/// ```
pub struct SlidingWindowStream<'e, 'm> {
    ev: &'e Evaluator<'m>,
    window: SlidingWindow,
    /// Tokens from index `base` of the stream on.
    buf: Vec<u32>,
    base: usize,
    /// Tokens pushed so far.
    total: usize,
    exact: Planner,
    /// The HF-guide windows when they differ from the exact ones (`stride == max_length`).
    guide: Option<Planner>,
    pending_exact: Vec<Window>,
    pending_guide: Vec<Window>,
    block: usize,
    keep_nlls: bool,
    /// Number of windows, for the progress callback: `None` = count as they come.
    total_rows: Option<usize>,
    rows_done: usize,
    // results so far
    stats: LossStats,
    token_nlls: Vec<f64>,
    exact_windows: usize,
    guide_sum: f64,
    guide_weight: usize,
    guide_scored: usize,
    guide_windows: usize,
}

impl std::fmt::Debug for SlidingWindowStream<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlidingWindowStream")
            .field("window", &self.window)
            .field("tokens", &self.total)
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl SlidingWindowStream<'_, '_> {
    /// Windows scored per block (at least one batch).
    pub fn block_windows(&self) -> usize {
        self.block
    }

    /// Keeps the exact per-token NLLs for [`SlidingWindowEval::token_nlls`] (8 bytes per token;
    /// off by default).
    pub fn keep_token_nlls(mut self, keep: bool) -> Self {
        self.keep_nlls = keep;
        self
    }

    /// Tokens pushed so far.
    pub fn tokens(&self) -> usize {
        self.total
    }

    /// Appends tokens to the stream and scores every window that is complete once a block of
    /// them is ready. Errors: [`Error::TokenOutOfVocab`] for an id outside the model's
    /// vocabulary (checked before anything is kept), and whatever scoring returns.
    pub fn push(&mut self, tokens: &[u32]) -> Result<()> {
        let v = self.ev.model().config().vocab_size;
        if let Some((i, &t)) = tokens.iter().enumerate().find(|(_, &t)| t as usize >= v) {
            return Err(Error::TokenOutOfVocab { token: t, position: self.total + i, vocab_size: v });
        }
        self.buf.extend_from_slice(tokens);
        self.total += tokens.len();
        self.plan(false)
    }

    /// Plans windows a block at a time, scoring each full block; at the end of the stream
    /// (`last`) also the final windows, and scores what is left.
    fn plan(&mut self, last: bool) -> Result<()> {
        loop {
            let (n, block) = (self.total, self.block);
            let room = block - self.pending_exact.len().min(block);
            if last {
                self.exact.finish(n, &mut self.pending_exact, room);
            } else {
                self.exact.ready(n, &mut self.pending_exact, room);
            }
            if let Some(g) = &mut self.guide {
                let room = block - self.pending_guide.len().min(block);
                if last {
                    g.finish(n, &mut self.pending_guide, room);
                } else {
                    g.ready(n, &mut self.pending_guide, room);
                }
            }
            if self.pending_exact.len() >= block || self.pending_guide.len() >= block {
                self.flush()?;
            } else {
                if last {
                    self.flush()?;
                }
                return Ok(());
            }
        }
    }

    /// Scores the windows that are planned, then drops the tokens no later window needs.
    fn flush(&mut self) -> Result<()> {
        let exact = std::mem::take(&mut self.pending_exact);
        let nlls = self.score_windows(&exact)?;
        for (w, nlls) in exact.iter().zip(&nlls) {
            for &x in nlls {
                self.stats.sum_nll += x;
            }
            self.stats.tokens += nlls.len();
            if self.keep_nlls {
                self.token_nlls.extend_from_slice(nlls);
            }
            if self.guide.is_none() {
                self.add_guide(w, nlls);
            }
        }
        self.exact_windows += exact.len();
        if self.guide.is_some() {
            let guide = std::mem::take(&mut self.pending_guide);
            let nlls = self.score_windows(&guide)?;
            for (w, nlls) in guide.iter().zip(&nlls) {
                self.add_guide(w, nlls);
            }
        }
        let keep_from = self.exact.next_begin.min(self.guide.as_ref().map_or(usize::MAX, |g| g.next_begin));
        let drop = keep_from.min(self.total).saturating_sub(self.base);
        if drop > 0 {
            self.buf.drain(..drop);
            self.base += drop;
        }
        Ok(())
    }

    fn add_guide(&mut self, w: &Window, nlls: &[f64]) {
        self.guide_windows += 1;
        self.guide_scored += nlls.len();
        // A window that scores nothing has weight 0 (the literal recipe gives NaN·0 there).
        if w.guide_weight > 0 && !nlls.is_empty() {
            self.guide_sum += LossStats::from_nlls(nlls).mean().unwrap_or(0.0) * w.guide_weight as f64;
            self.guide_weight += w.guide_weight;
        }
    }

    /// NLLs of each window's scored tokens (empty for windows that score nothing).
    fn score_windows(&mut self, windows: &[Window]) -> Result<Vec<Vec<f64>>> {
        let scoring: Vec<usize> = (0..windows.len()).filter(|&i| windows[i].first_target < windows[i].end).collect();
        let rows = scoring
            .iter()
            .map(|&i| {
                let w = windows[i];
                ScoreRow::tail(&self.buf[w.begin - self.base..w.end - self.base], w.first_target - w.begin)
            })
            .collect::<Result<Vec<_>>>()?;
        let (before, ev) = (self.rows_done, self.ev);
        let total = self.total_rows.unwrap_or(before + rows.len());
        let mut scored = ev.score_reporting(&rows, &|done| ev.report(before + done, total))?.into_iter();
        self.rows_done += rows.len();
        let mut out = vec![Vec::new(); windows.len()];
        for i in scoring {
            out[i] = scored.next().unwrap_or_default();
        }
        Ok(out)
    }

    /// Scores the remaining windows and returns the result, as [`Evaluator::sliding_window`]
    /// gives for all the tokens pushed. Errors: [`Error::EmptyInput`] for fewer than 2 tokens.
    pub fn finish(mut self) -> Result<SlidingWindowEval> {
        if self.total < 2 {
            return Err(too_short(self.total));
        }
        self.plan(true)?;
        let guide_loss = if self.guide_weight > 0 { self.guide_sum / self.guide_weight as f64 } else { f64::NAN };
        let avg_loss = self.stats.mean().unwrap_or(f64::NAN);
        Ok(SlidingWindowEval {
            window: self.window,
            stats: self.stats,
            avg_loss,
            perplexity: perplexity_from_loss(avg_loss),
            token_nlls: self.token_nlls,
            windows: self.exact_windows,
            hf_guide: HfGuideNumber {
                avg_loss: guide_loss,
                perplexity: perplexity_from_loss(guide_loss),
                scored_tokens: self.guide_scored,
                counted_tokens: self.guide_weight,
                windows: self.guide_windows,
            },
        })
    }
}

impl<'m> Evaluator<'m> {
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
        let mut stream = self.sliding_window_stream(window)?.keep_token_nlls(true);
        if tokens.len() < 2 {
            return Err(too_short(tokens.len()));
        }
        let n = tokens.len();
        let count = |ws: Vec<Window>| ws.iter().filter(|w| w.first_target < w.end).count();
        let guide_rows = if stream.guide.is_some() { count(window.hf_guide_windows(n)) } else { 0 };
        stream.total_rows = Some(count(window.exact_windows(n)) + guide_rows);
        stream.push(tokens)?;
        let r = stream.finish()?;
        debug_assert_eq!(r.token_nlls.len(), n - 1);
        Ok(r)
    }

    /// A streaming sliding-window evaluation (see [`SlidingWindowStream`]): memory bounded by
    /// one block of windows, for token streams of any length. The progress callback receives
    /// `(windows scored, windows planned so far)`.
    ///
    /// Errors: [`Error::InvalidArgument`] for an invalid geometry.
    pub fn sliding_window_stream<'e>(&'e self, window: SlidingWindow) -> Result<SlidingWindowStream<'e, 'm>> {
        window.validate(self.model().config().n_positions)?;
        let exact_step = window.stride.min(window.max_length.saturating_sub(1)).max(1);
        let guide_step = window.stride.max(1);
        Ok(SlidingWindowStream {
            ev: self,
            window,
            buf: Vec::new(),
            base: 0,
            total: 0,
            exact: Planner::new(window.max_length, exact_step),
            guide: (guide_step != exact_step).then(|| Planner::new(window.max_length, guide_step)),
            pending_exact: Vec::new(),
            pending_guide: Vec::new(),
            block: (self.batch_size() * 16).max(256),
            keep_nlls: false,
            total_rows: None,
            rows_done: 0,
            stats: LossStats::default(),
            token_nlls: Vec::new(),
            exact_windows: 0,
            guide_sum: 0.0,
            guide_weight: 0,
            guide_scored: 0,
            guide_windows: 0,
        })
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
    fn incremental_planner_equals_whole_plan() {
        for n in 1..50 {
            for l in 2..9 {
                for step in 1..=l {
                    let whole = SlidingWindow::new(l, step).plan(n, step);
                    for piece in [1, 3, 7, 50] {
                        let mut p = Planner::new(l, step);
                        let mut got = Vec::new();
                        let mut have = 0;
                        while have < n {
                            have = (have + piece).min(n);
                            p.ready(have, &mut got, piece % 4 + 1);
                            p.ready(have, &mut got, usize::MAX);
                        }
                        while !p.done && p.next_begin < n {
                            p.finish(n, &mut got, 2);
                        }
                        assert_eq!(got, whole, "n={n} l={l} step={step} piece={piece}");
                    }
                }
            }
        }
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
