//! The scoring engine: many token sequences → per-target negative log-likelihoods,
//! batched with right padding and an attention mask, one batch of logits alive at a time.

use ndarray::Array2;
use rayon::prelude::*;

use super::stats::token_nll;
use crate::error::{Error, Result};
use crate::model::{ForwardInput, ForwardOptions, Gpt2, LogitsMode};

/// Scored positions whose logits are computed together (`HEAD_ROWS × vocab` f32: 51 MB for
/// GPT-2's 50257 tokens), so memory does not grow with the batch and sequence length.
const HEAD_ROWS: usize = 256;

/// One sequence to score, in "already shifted" form: the logits at input
/// position `j` are scored against `targets[j]` (`None` = ignored, like HF's `-100`).
///
/// Constructors take care of the shift, so the classic off-by-one cannot happen,
/// and drop trailing positions whose target is ignored (causal attention makes
/// them irrelevant to every scored position).
///
/// ```
/// use gpt2::eval::ScoreRow;
/// let row = ScoreRow::next_token(&[5, 6, 7]).unwrap();
/// assert_eq!(row.inputs(), &[5, 6]);
/// assert_eq!(row.targets(), &[Some(6), Some(7)]);
/// let row = ScoreRow::completion(&[1, 2], &[3, 4]).unwrap();
/// assert_eq!(row.inputs(), &[1, 2, 3]);
/// assert_eq!(row.targets(), &[None, Some(3), Some(4)]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreRow {
    inputs: Vec<u32>,
    targets: Vec<Option<u32>>,
}

impl ScoreRow {
    /// Explicit inputs and shifted targets (same length, at least one `Some`).
    pub fn new(inputs: Vec<u32>, mut targets: Vec<Option<u32>>) -> Result<Self> {
        if inputs.len() != targets.len() {
            return Err(Error::Shape(format!("{} inputs but {} targets", inputs.len(), targets.len())));
        }
        let keep = targets.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
        if keep == 0 {
            return Err(Error::EmptyInput("no target token to score".into()));
        }
        let mut inputs = inputs;
        inputs.truncate(keep);
        targets.truncate(keep);
        Ok(ScoreRow { inputs, targets })
    }

    /// Every next-token prediction of `tokens`: `T − 1` targets (needs `T ≥ 2`).
    pub fn next_token(tokens: &[u32]) -> Result<Self> {
        if tokens.len() < 2 {
            return Err(too_short(tokens.len()));
        }
        Self::new(tokens[..tokens.len() - 1].to_vec(), tokens[1..].iter().map(|&t| Some(t)).collect())
    }

    /// HuggingFace `labels` semantics: `labels` has the length of `input_ids` and
    /// is shifted internally (the logits at `j` predict `labels[j + 1]`;
    /// `labels[0]` is never used); `None` marks an ignored label (`-100`).
    pub fn with_labels(input_ids: &[u32], labels: &[Option<u32>]) -> Result<Self> {
        if input_ids.len() != labels.len() {
            return Err(Error::Shape(format!("{} input ids but {} labels", input_ids.len(), labels.len())));
        }
        if input_ids.len() < 2 {
            return Err(too_short(input_ids.len()));
        }
        let n = input_ids.len();
        Self::new(input_ids[..n - 1].to_vec(), labels[1..].to_vec())
    }

    /// `context ++ completion`, scoring only the completion tokens (each given
    /// everything before it). Needs at least one context and one completion token.
    pub fn completion(context: &[u32], completion: &[u32]) -> Result<Self> {
        if context.is_empty() {
            return Err(Error::EmptyInput("completion scoring needs at least one context token".into()));
        }
        if completion.is_empty() {
            return Err(Error::EmptyInput("empty completion".into()));
        }
        let mut inputs = Vec::with_capacity(context.len() + completion.len() - 1);
        inputs.extend_from_slice(context);
        inputs.extend_from_slice(&completion[..completion.len() - 1]);
        let mut targets = vec![None; context.len() - 1];
        targets.extend(completion.iter().map(|&t| Some(t)));
        Self::new(inputs, targets)
    }

    /// Tokens `tokens[first_target..]` scored, each given all tokens before it
    /// inside `tokens` (`first_target ≥ 1`) — one sliding window.
    pub fn tail(tokens: &[u32], first_target: usize) -> Result<Self> {
        if first_target == 0 || first_target >= tokens.len() {
            return Err(Error::arg(
                "first_target",
                format!("must be in 1..{} for a window of {} tokens", tokens.len(), tokens.len()),
            ));
        }
        let n = tokens.len();
        let targets = (1..n).map(|i| (i >= first_target).then_some(tokens[i])).collect();
        Self::new(tokens[..n - 1].to_vec(), targets)
    }

    /// Model inputs `[T]`.
    pub fn inputs(&self) -> &[u32] {
        &self.inputs
    }

    /// Shifted targets `[T]`.
    pub fn targets(&self) -> &[Option<u32>] {
        &self.targets
    }

    /// Number of scored targets.
    pub fn num_targets(&self) -> usize {
        self.targets.iter().filter(|t| t.is_some()).count()
    }
}

pub(crate) fn too_short(n: usize) -> Error {
    Error::EmptyInput(format!("need at least 2 tokens to score a next-token prediction, got {n}"))
}

/// Progress callback: `(rows done, rows total)`, called after every batch.
pub type ProgressFn<'a> = Box<dyn Fn(usize, usize) + Send + Sync + 'a>;

/// Batched evaluation of a model: losses, perplexity, completion scoring, HellaSwag.
///
/// Rows are sorted by length (longest first) and cut into batches of
/// `batch_size`; each batch is right-padded and run through [`Gpt2::forward`] with
/// an attention mask for its final hidden states; logits are then computed only
/// for the positions that have a target, 256 rows at a time into one reused
/// buffer, and reduced to per-token NLLs (in parallel). Peak memory beyond the
/// activations is `256·V·4` bytes (51 MB for GPT-2), whatever `B·T`. Results do
/// not depend on `batch_size` beyond f32 rounding.
///
/// ```
/// use gpt2::{eval::Evaluator, Config, Gpt2};
/// let model = Gpt2::new_random(Config::nano(32, 50), 0).unwrap();
/// let ev = Evaluator::new(&model).with_batch_size(2).unwrap();
/// let r = ev.evaluate(&[vec![1, 2, 3, 4], vec![5, 6]]).unwrap();
/// assert_eq!(r.total.tokens, 3 + 1);
/// let ppl = r.total.perplexity().unwrap();
/// assert!(ppl > 1.0 && ppl.is_finite());
/// ```
pub struct Evaluator<'m> {
    model: &'m Gpt2,
    batch_size: usize,
    progress: Option<ProgressFn<'m>>,
    allow_non_finite: bool,
}

impl std::fmt::Debug for Evaluator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("batch_size", &self.batch_size)
            .field("progress", &self.progress.is_some())
            .field("allow_non_finite", &self.allow_non_finite)
            .finish_non_exhaustive()
    }
}

impl<'m> Evaluator<'m> {
    /// Default batch size (rows per forward pass).
    pub const DEFAULT_BATCH_SIZE: usize = 8;

    /// An evaluator with batch size [`Self::DEFAULT_BATCH_SIZE`] and no progress callback.
    pub fn new(model: &'m Gpt2) -> Self {
        Evaluator { model, batch_size: Self::DEFAULT_BATCH_SIZE, progress: None, allow_non_finite: false }
    }

    /// Whether a non-finite NLL (from a NaN or infinite logit: broken weights) is returned as
    /// is (`true`) instead of failing with [`Error::NonFinite`] (`false`, the default). Without
    /// the check such a model scores as NaN, and HellaSwag's argmin would silently pick
    /// ending 0 for every example.
    ///
    /// ```
    /// use gpt2::{eval::Evaluator, Config, Error, Gpt2};
    /// let mut model = Gpt2::new_random(Config::nano(16, 40), 0).unwrap();
    /// let n = model.params().len();
    /// model.params_mut()[n - 1] = f32::NAN; // ln_f.bias
    /// let ev = Evaluator::new(&model);
    /// assert!(matches!(ev.token_nlls(&[1, 2, 3]), Err(Error::NonFinite { .. })));
    /// let nll = ev.allow_non_finite(true).token_nlls(&[1, 2, 3]).unwrap();
    /// assert!(nll.iter().all(|x| x.is_nan()));
    /// ```
    pub fn allow_non_finite(mut self, allow: bool) -> Self {
        self.allow_non_finite = allow;
        self
    }

    /// Sets the number of rows per forward pass (≥ 1).
    pub fn with_batch_size(mut self, batch_size: usize) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::arg("batch_size", "must be at least 1"));
        }
        self.batch_size = batch_size;
        Ok(self)
    }

    /// Calls `f(rows_done, rows_total)` after every batch.
    pub fn with_progress(mut self, f: impl Fn(usize, usize) + Send + Sync + 'm) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// The model.
    pub fn model(&self) -> &'m Gpt2 {
        self.model
    }

    /// Rows per forward pass.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Calls the progress callback, if any.
    pub(crate) fn report(&self, done: usize, total: usize) {
        if let Some(p) = &self.progress {
            p(done, total);
        }
    }

    /// Checks a row against the model (length, vocabulary).
    fn check_row(&self, row: &ScoreRow) -> Result<()> {
        let cfg = self.model.config();
        if row.inputs.len() > cfg.n_positions {
            return Err(Error::SequenceTooLong { len: row.inputs.len(), n_positions: cfg.n_positions });
        }
        let v = cfg.vocab_size;
        let bad = row
            .inputs
            .iter()
            .copied()
            .chain(row.targets.iter().flatten().copied())
            .enumerate()
            .find(|(_, t)| *t as usize >= v);
        if let Some((position, token)) = bad {
            return Err(Error::TokenOutOfVocab { token, position, vocab_size: v });
        }
        Ok(())
    }

    /// Per-target NLLs (nats, f64) of every row, in each row's target order.
    ///
    /// All rows are validated before any computation.
    pub fn score(&self, rows: &[ScoreRow]) -> Result<Vec<Vec<f64>>> {
        self.score_reporting(rows, &|done| {
            if let Some(p) = &self.progress {
                p(done, rows.len());
            }
        })
    }

    /// [`Evaluator::score`], calling `report(rows done)` after every batch instead of the
    /// progress callback.
    pub(crate) fn score_reporting(&self, rows: &[ScoreRow], report: &dyn Fn(usize)) -> Result<Vec<Vec<f64>>> {
        for row in rows {
            self.check_row(row)?;
        }
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(rows[i].inputs.len()));
        let mut out: Vec<Vec<f64>> = rows.iter().map(|r| Vec::with_capacity(r.num_targets())).collect();
        let v = self.model.config().vocab_size;
        let c = self.model.config().n_embd;
        let mut picked: Vec<f32> = Vec::new();
        let mut logits: Vec<f32> = Vec::new();
        let mut done = 0;
        for chunk in order.chunks(self.batch_size) {
            let t = chunk.iter().map(|&i| rows[i].inputs.len()).max().unwrap_or(0);
            let b = chunk.len();
            let mut tokens = Array2::<u32>::zeros((b, t));
            let mut mask = Array2::from_elem((b, t), false);
            for (bi, &ri) in chunk.iter().enumerate() {
                for (j, &tok) in rows[ri].inputs.iter().enumerate() {
                    tokens[(bi, j)] = tok;
                    mask[(bi, j)] = true;
                }
            }
            let padded = chunk.iter().any(|&i| rows[i].inputs.len() < t);
            let mut input = ForwardInput::new(tokens.view());
            if padded {
                input = input.with_mask(mask.view());
            }
            // Final hidden states only; logits are computed for the scored positions alone, at
            // most HEAD_ROWS rows at a time, into one buffer reused across batches.
            let opts = ForwardOptions { logits: LogitsMode::None, final_hidden: true, ..Default::default() };
            let hidden = self.model.forward(&input, None, &opts)?.final_hidden.expect("final hidden requested");
            let hflat = hidden.as_slice().expect("standard layout");
            // (row, position in the batch, target)
            let mut tasks = Vec::new();
            for (bi, &ri) in chunk.iter().enumerate() {
                for (j, tgt) in rows[ri].targets.iter().enumerate() {
                    if let Some(tg) = tgt {
                        tasks.push((ri, bi * t + j, *tg as usize));
                    }
                }
            }
            for group in tasks.chunks(HEAD_ROWS) {
                picked.clear();
                for &(_, pos, _) in group {
                    picked.extend_from_slice(&hflat[pos * c..(pos + 1) * c]);
                }
                if logits.len() < group.len() * v {
                    logits.resize(group.len() * v, 0.0);
                }
                let block = &mut logits[..group.len() * v];
                self.model.head_logits_into(&picked, block);
                let block = &*block;
                let nlls: Vec<f64> = group
                    .par_iter()
                    .enumerate()
                    .map(|(i, &(_, _, tg))| token_nll(&block[i * v..(i + 1) * v], tg))
                    .collect();
                for (&(ri, pos, tg), nll) in group.iter().zip(nlls) {
                    // NLL = logsumexp(row) − row[target] is finite for every finite f32 row
                    // (formed in f64), so this one test per scored position catches any NaN or
                    // infinite logit in the rows actually used.
                    if !nll.is_finite() && !self.allow_non_finite {
                        return Err(Error::NonFinite {
                            step: 0,
                            what: format!(
                                "evaluation: the logits of row {ri} at position {} (target token {tg}) give NLL {nll}; \
                                 the model produces non-finite values (check its weights)",
                                pos % t
                            ),
                        });
                    }
                    out[ri].push(nll);
                }
            }
            done += b;
            report(done);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Config;

    #[test]
    fn evaluator_and_results_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Evaluator<'static>>();
        assert_send_sync::<ScoreRow>();
        assert_send_sync::<crate::eval::SlidingWindowEval>();
        assert_send_sync::<crate::eval::HellaSwagEval>();
    }

    #[test]
    fn progress_reports_every_batch_and_order_is_preserved() {
        let model = Gpt2::new_random(Config::nano(16, 60), 1).unwrap();
        let calls = std::sync::Mutex::new(Vec::new());
        let ev =
            Evaluator::new(&model).with_batch_size(2).unwrap().with_progress(|d, t| calls.lock().unwrap().push((d, t)));
        let rows: Vec<ScoreRow> = [vec![1, 2], vec![3, 4, 5, 6, 7], vec![8, 9, 10], vec![11, 12, 13, 14, 15, 16]]
            .iter()
            .map(|s| ScoreRow::next_token(s).unwrap())
            .collect();
        let out = ev.score(&rows).unwrap();
        assert_eq!(out.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 4, 2, 5]);
        drop(ev);
        assert_eq!(calls.into_inner().unwrap(), vec![(2, 4), (4, 4)]);
        // each row alone gives the same numbers
        let single = Evaluator::new(&model).with_batch_size(1).unwrap();
        for (row, want) in rows.iter().zip(&out) {
            let got = &single.score(std::slice::from_ref(row)).unwrap()[0];
            for (a, b) in got.iter().zip(want) {
                assert!((a - b).abs() < 1e-5 * b.abs(), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn scored_rows_across_head_blocks_match_full_logits() {
        // 3 rows × 199 targets = 597 scored positions: three LM-head blocks of ≤ HEAD_ROWS,
        // one of them straddling two sequences; some targets ignored (`None`).
        let model = Gpt2::new_random(Config::nano(256, 97), 3).unwrap();
        let seqs: Vec<Vec<u32>> = (0..3u32).map(|r| (0..200u32).map(|i| (i * 31 + r * 7) % 97).collect()).collect();
        let rows: Vec<ScoreRow> = seqs
            .iter()
            .enumerate()
            .map(|(r, s)| {
                let mut targets: Vec<Option<u32>> = s[1..].iter().map(|&x| Some(x)).collect();
                targets[5 + r] = None;
                ScoreRow::new(s[..199].to_vec(), targets).unwrap()
            })
            .collect();
        assert!(rows.iter().map(ScoreRow::num_targets).sum::<usize>() > 2 * HEAD_ROWS);
        let got = Evaluator::new(&model).with_batch_size(3).unwrap().score(&rows).unwrap();
        let opts = ForwardOptions { logits: LogitsMode::All, ..Default::default() };
        for (row, nlls) in rows.iter().zip(&got) {
            let x = Array2::from_shape_vec((1, row.inputs().len()), row.inputs().to_vec()).unwrap();
            let logits = model.forward(&ForwardInput::new(x.view()), None, &opts).unwrap().logits.unwrap();
            let want: Vec<f64> = row
                .targets()
                .iter()
                .enumerate()
                .filter_map(|(j, t)| {
                    t.map(|t| token_nll(logits.slice(ndarray::s![0, j, ..]).as_slice().unwrap(), t as usize))
                })
                .collect();
            assert_eq!(nlls.len(), want.len());
            for (a, b) in nlls.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
            }
        }
    }
}
