//! HellaSwag: the official JSONL format and two scoring styles.
//!
//! * [`HellaSwagStyle::Completion`] — Karpathy's build-nanogpt / llm.c
//!   `hellaswag.py`: the raw `ctx` is encoded, each ending is encoded separately
//!   as `" " + ending` and appended; `acc` picks the smallest summed NLL over the
//!   ending tokens, `acc_norm` the smallest mean NLL per ending **token**.
//! * [`HellaSwagStyle::Harness`] — EleutherAI lm-evaluation-harness `hellaswag`
//!   (zero-shot): context `preprocess(activity_label + ": " + ctx_a + " " +
//!   ctx_b.capitalize())`, continuation `" " + preprocess(ending)`, encoded
//!   jointly (`_encode_pair`: the context's trailing whitespace moves into the
//!   continuation, continuation tokens = `encode(context + continuation)` after
//!   `len(encode(context))`), inputs longer than the context window truncated
//!   from the left; `acc` = largest log-likelihood, `acc_norm` = largest
//!   log-likelihood per **character** of the preprocessed ending (Python `len`).
//!
//! Ties resolve to the first ending in both styles (`argmin` / `argmax`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::completion::argmin_first;
use super::score::{Evaluator, ScoreRow};
use crate::collective::{block_range, Collective};
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// Number of endings per HellaSwag example.
pub const NUM_ENDINGS: usize = 4;

/// One HellaSwag example (the official JSONL fields this crate uses).
///
/// `ctx`, `endings` and `label` are all the completion style reads (build-nanogpt's
/// `render_example` reads nothing else); `activity_label`, `ctx_a` and `ctx_b` are
/// needed only by the harness style, which names the first missing one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HellaSwagExample {
    /// ActivityNet or WikiHow category (harness style only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_label: Option<String>,
    /// First part of the context (harness style only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctx_a: Option<String>,
    /// Second (often incomplete) part of the context (harness style only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctx_b: Option<String>,
    /// The full context as the dataset stores it (`ctx_a + " " + ctx_b` in practice).
    pub ctx: String,
    /// Exactly four candidate endings.
    pub endings: Vec<String>,
    /// Index of the correct ending, `0..4`.
    pub label: usize,
    /// 1-based line of the example in its file (0 when not read from a file).
    #[serde(default)]
    pub line: usize,
}

/// Options of [`read_hellaswag`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Skip malformed lines (counting them) instead of failing on the first one.
    pub skip_malformed: bool,
    /// Stop after this many valid examples.
    pub limit: Option<usize>,
}

/// A malformed line that was skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedLine {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub reason: String,
}

/// Examples read from a HellaSwag JSONL file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HellaSwagData {
    /// Valid examples, in file order.
    pub examples: Vec<HellaSwagExample>,
    /// Malformed lines skipped (only with [`ReadOptions::skip_malformed`]).
    pub skipped: Vec<SkippedLine>,
}

/// Reads a HellaSwag JSONL file (one JSON object per line, blank lines ignored).
///
/// Every line must have a string `ctx`, an array of exactly four string
/// `endings` and a `label` in `0..4` (a number or a string of digits, as the HF
/// datasets copy stores it); `activity_label`, `ctx_a` and `ctx_b` are optional
/// (the harness style needs them) but must be strings when present. A malformed line is
/// an [`Error::Data`] with its 1-based line number, or, with
/// [`ReadOptions::skip_malformed`], recorded in [`HellaSwagData::skipped`].
pub fn read_hellaswag(path: impl AsRef<Path>, opts: ReadOptions) -> Result<HellaSwagData> {
    let path = path.as_ref();
    let bytes = crate::fsutil::read_regular(path)?;
    parse_hellaswag(&bytes, path, opts)
}

/// [`read_hellaswag`] on bytes already in memory; `path` only labels errors.
///
/// ```
/// use gpt2::eval::hellaswag::{parse_hellaswag, ReadOptions};
/// let line = r#"{"activity_label":"A","ctx_a":"x.","ctx_b":"he","ctx":"x. he","endings":["a","b","c","d"],"label":2}"#;
/// let text = format!("{line}\nnot json\n");
/// assert!(parse_hellaswag(text.as_bytes(), "mem".as_ref(), ReadOptions::default()).is_err());
/// let opts = ReadOptions { skip_malformed: true, limit: None };
/// let d = parse_hellaswag(text.as_bytes(), "mem".as_ref(), opts).unwrap();
/// assert_eq!((d.examples.len(), d.skipped.len(), d.skipped[0].line), (1, 1, 2));
/// ```
pub fn parse_hellaswag(bytes: &[u8], path: &Path, opts: ReadOptions) -> Result<HellaSwagData> {
    let mut data = HellaSwagData::default();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        if opts.limit.is_some_and(|l| data.examples.len() >= l) {
            break;
        }
        let line = i + 1;
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_line(raw) {
            Ok(mut ex) => {
                ex.line = line;
                data.examples.push(ex);
            }
            Err(reason) if opts.skip_malformed => data.skipped.push(SkippedLine { line, reason }),
            Err(reason) => return Err(Error::Data { path: path.to_path_buf(), line, reason }),
        }
    }
    Ok(data)
}

fn parse_line(raw: &[u8]) -> std::result::Result<HellaSwagExample, String> {
    let text = std::str::from_utf8(raw).map_err(|e| format!("invalid UTF-8: {e}"))?;
    let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = v.as_object().ok_or("expected a JSON object")?;
    let optional = |key: &str| -> std::result::Result<Option<String>, String> {
        match obj.get(key) {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!("field `{key}` must be a string, found {other}")),
            None => Ok(None),
        }
    };
    let string = |key: &str| optional(key)?.ok_or_else(|| format!("missing field `{key}`"));
    let endings = match obj.get("endings") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|e| e.as_str().map(str::to_owned).ok_or_else(|| format!("every ending must be a string, found {e}")))
            .collect::<std::result::Result<Vec<_>, _>>()?,
        Some(other) => return Err(format!("field `endings` must be an array, found {other}")),
        None => return Err("missing field `endings`".into()),
    };
    if endings.len() != NUM_ENDINGS {
        return Err(format!("expected {NUM_ENDINGS} endings, found {}", endings.len()));
    }
    let label = match obj.get("label") {
        Some(Value::Number(n)) => n.as_u64().map(|x| x as usize),
        Some(Value::String(s)) => s.trim().parse::<usize>().ok(),
        Some(other) => return Err(format!("field `label` must be an integer, found {other}")),
        None => return Err("missing field `label`".into()),
    }
    .filter(|&l| l < NUM_ENDINGS)
    .ok_or_else(|| format!("label must be an integer in 0..{NUM_ENDINGS}, found {}", obj["label"]))?;
    Ok(HellaSwagExample {
        activity_label: optional("activity_label")?,
        ctx_a: optional("ctx_a")?,
        ctx_b: optional("ctx_b")?,
        ctx: string("ctx")?,
        endings,
        label,
        line: 0,
    })
}

/// Scoring style; see the module documentation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HellaSwagStyle {
    /// build-nanogpt / llm.c: raw `ctx`, per-token normalisation.
    #[default]
    Completion,
    /// lm-evaluation-harness: preprocessed query, per-character normalisation.
    Harness,
}

impl std::str::FromStr for HellaSwagStyle {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "completion" => Ok(HellaSwagStyle::Completion),
            "harness" => Ok(HellaSwagStyle::Harness),
            other => Err(Error::arg("style", format!("`{other}` is not `completion` or `harness`"))),
        }
    }
}

impl std::fmt::Display for HellaSwagStyle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HellaSwagStyle::Completion => "completion",
            HellaSwagStyle::Harness => "harness",
        })
    }
}

/// Python's `str.isspace` (Unicode White_Space plus the separators U+001C–U+001F).
pub(crate) fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.capitalize()`: the first character in title case, the rest lower case.
///
/// ```
/// assert_eq!(gpt2::eval::hellaswag::py_capitalize("tHE Man"), "The man");
/// assert_eq!(gpt2::eval::hellaswag::py_capitalize("ǆemal"), "ǅemal");
/// ```
pub fn py_capitalize(s: &str) -> String {
    let mut chars = s.chars();
    let Some(first) = chars.next() else { return String::new() };
    let mut out = String::with_capacity(s.len());
    // Title case differs from upper case only for these digraphs.
    match first {
        'Ǆ' | 'ǅ' | 'ǆ' => out.push('ǅ'),
        'Ǉ' | 'ǈ' | 'ǉ' => out.push('ǈ'),
        'Ǌ' | 'ǋ' | 'ǌ' => out.push('ǋ'),
        'Ǳ' | 'ǲ' | 'ǳ' => out.push('ǲ'),
        c => out.extend(c.to_uppercase()),
    }
    // Lower-case the rest as a whole string (final-sigma rule, like Python).
    out.push_str(&chars.as_str().to_lowercase());
    out
}

/// lm-evaluation-harness `hellaswag/utils.py::preprocess`: strip, `" [title]"` →
/// `". "`, delete `[...]` spans (non-greedy, not across newlines), `"  "` → `" "`.
///
/// ```
/// use gpt2::eval::hellaswag::harness_preprocess;
/// // the same strings as CPython's `re` / `str.replace` give:
/// assert_eq!(harness_preprocess(" Fix a tire [title] Remove the wheel. [step] Lift it. "),
///            "Fix a tire. Remove the wheel. Lift it.");
/// // three spaces become two: `replace("  ", " ")` runs once, like Python
/// assert_eq!(harness_preprocess("Remove the wheel.  [step] Lift it."), "Remove the wheel.  Lift it.");
/// ```
pub fn harness_preprocess(text: &str) -> String {
    let t = text.trim_matches(py_space).replace(" [title]", ". ");
    let t = remove_bracket_spans(&t);
    t.replace("  ", " ")
}

/// `re.sub(r"\[.*?\]", "", s)`: `.` does not match `\n`.
fn remove_bracket_spans(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        match after.find([']', '\n']) {
            Some(j) if after.as_bytes()[j] == b']' => {
                out.push_str(&rest[..open]);
                rest = &after[j + 1..];
            }
            _ => {
                out.push_str(&rest[..open + 1]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One example turned into token rows for a style.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedExample {
    /// Per ending: context tokens fed to the model before the ending.
    pub contexts: Vec<Vec<u32>>,
    /// Per ending: the scored continuation tokens.
    pub endings: Vec<Vec<u32>>,
    /// Per ending: the `acc_norm` divisor (token count, or character count for the harness).
    pub norm: Vec<f64>,
}

/// Renders an example into token rows (see the module docs). `n_positions`
/// bounds the model input: the harness truncates contexts from the left as
/// lm-evaluation-harness does; the completion style refuses over-long rows.
pub fn render(
    ex: &HellaSwagExample,
    tok: &Tokenizer,
    style: HellaSwagStyle,
    n_positions: usize,
) -> Result<RenderedExample> {
    let bad = |reason: String| Error::Data { path: PathBuf::from("<hellaswag>"), line: ex.line, reason };
    let mut r = RenderedExample { contexts: Vec::new(), endings: Vec::new(), norm: Vec::new() };
    match style {
        HellaSwagStyle::Completion => {
            let ctx = tok.encode(&ex.ctx);
            if ctx.is_empty() {
                return Err(bad("`ctx` encodes to no tokens".into()));
            }
            for (k, e) in ex.endings.iter().enumerate() {
                let end = tok.encode(&format!(" {e}"));
                if ctx.len() + end.len() - 1 > n_positions {
                    return Err(bad(format!(
                        "context + ending {k} are {} tokens, longer than the model's context (n_positions = \
                         {n_positions})",
                        ctx.len() + end.len() - 1
                    )));
                }
                r.norm.push(end.len() as f64);
                r.contexts.push(ctx.clone());
                r.endings.push(end);
            }
        }
        HellaSwagStyle::Harness => {
            let field = |name: &str, v: &Option<String>| {
                v.clone().ok_or_else(|| bad(format!("missing field `{name}` (the harness style needs it)")))
            };
            let (label, ctx_a, ctx_b) =
                (field("activity_label", &ex.activity_label)?, field("ctx_a", &ex.ctx_a)?, field("ctx_b", &ex.ctx_b)?);
            let query = harness_preprocess(&format!("{label}: {ctx_a} {}", py_capitalize(&ctx_b)));
            for e in &ex.endings {
                let choice = harness_preprocess(e);
                let chars = choice.chars().count();
                if chars == 0 {
                    return Err(bad("an ending is empty after preprocessing (acc_norm would divide by 0)".into()));
                }
                let (mut ctx, cont) = encode_pair(tok, &query, &format!(" {choice}"));
                if cont.is_empty() || cont.len() > n_positions {
                    return Err(bad(format!("continuation has {} tokens (context window {n_positions})", cont.len())));
                }
                // (ctx + cont)[-(n_positions + 1):][:-1]
                let total = ctx.len() + cont.len();
                if total > n_positions + 1 {
                    ctx.drain(..total - (n_positions + 1));
                }
                r.norm.push(chars as f64);
                r.contexts.push(ctx);
                r.endings.push(cont);
            }
        }
    }
    Ok(r)
}

/// Splits `examples` into those [`render`] accepts for a model with context `n_positions` and
/// those it refuses (an over-long completion-style example, an ending empty after the harness
/// preprocessing), which are returned as [`SkippedLine`]s with their reason — what a
/// `--skip-malformed` run skips instead of aborting.
///
/// ```
/// use gpt2::eval::hellaswag::{parse_hellaswag, partition_renderable, HellaSwagStyle, ReadOptions};
/// let tok = gpt2::Tokenizer::gpt2().unwrap();
/// let line = |ctx: &str| format!(r#"{{"ctx":"{ctx}","endings":["a","b","c","d"],"label":0}}"#);
/// let text = format!("{}\n{}\n", line("Hi."), line(&"word ".repeat(40)));
/// let data = parse_hellaswag(text.as_bytes(), "mem".as_ref(), ReadOptions::default()).unwrap();
/// let (ok, skipped) = partition_renderable(data.examples, &tok, HellaSwagStyle::Completion, 16);
/// assert_eq!((ok.len(), skipped.len(), skipped[0].line), (1, 1, 2));
/// ```
pub fn partition_renderable(
    examples: Vec<HellaSwagExample>,
    tok: &Tokenizer,
    style: HellaSwagStyle,
    n_positions: usize,
) -> (Vec<HellaSwagExample>, Vec<SkippedLine>) {
    let mut skipped = Vec::new();
    let kept = examples
        .into_iter()
        .filter(|ex| match render(ex, tok, style, n_positions) {
            Ok(_) => true,
            Err(e) => {
                let reason = match e {
                    Error::Data { reason, .. } => reason,
                    other => other.to_string(),
                };
                skipped.push(SkippedLine { line: ex.line, reason });
                false
            }
        })
        .collect();
    (kept, skipped)
}

/// lm-evaluation-harness `_encode_pair` for decoder-only models (empty context → EOT).
fn encode_pair(tok: &Tokenizer, context: &str, continuation: &str) -> (Vec<u32>, Vec<u32>) {
    if context.is_empty() {
        return (vec![tok.eot()], tok.encode(continuation));
    }
    let trimmed = context.trim_end_matches(py_space);
    let (context, continuation) = (trimmed, format!("{}{continuation}", &context[trimmed.len()..]));
    let whole = tok.encode(&format!("{context}{continuation}"));
    let ctx = tok.encode(context);
    let cont = whole.get(ctx.len()..).unwrap_or(&[]).to_vec();
    (ctx, cont)
}

/// Per-example outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HellaSwagPrediction {
    /// 1-based line in the file.
    pub line: usize,
    /// Correct ending.
    pub label: usize,
    /// Ending with the smallest summed NLL.
    pub pred: usize,
    /// Ending with the smallest normalised NLL.
    pub pred_norm: usize,
    /// Σ NLL over each ending's tokens (= −log-likelihood).
    pub sum_losses: Vec<f64>,
    /// `sum_losses` divided by the ending's token count (completion) or character count (harness).
    pub avg_losses: Vec<f64>,
}

/// Result of [`Evaluator::hellaswag`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HellaSwagEval {
    /// Scoring style.
    pub style: HellaSwagStyle,
    /// Examples scored.
    pub n: usize,
    /// Fraction with `pred == label`.
    pub acc: f64,
    /// Fraction with `pred_norm == label`.
    pub acc_norm: f64,
    /// Per-example predictions.
    pub predictions: Vec<HellaSwagPrediction>,
}

impl Evaluator<'_> {
    /// Scores HellaSwag examples in a style; all endings of all examples are
    /// batched `batch_size` rows at a time.
    pub fn hellaswag(
        &self,
        tok: &Tokenizer,
        examples: &[HellaSwagExample],
        style: HellaSwagStyle,
    ) -> Result<HellaSwagEval> {
        if examples.is_empty() {
            return Err(Error::EmptyInput("no HellaSwag examples".into()));
        }
        let n_pos = self.model().config().n_positions;
        let mut rows = Vec::with_capacity(examples.len() * NUM_ENDINGS);
        let mut norms = Vec::with_capacity(examples.len());
        for ex in examples {
            if ex.endings.len() != NUM_ENDINGS || ex.label >= NUM_ENDINGS {
                return Err(Error::Data {
                    path: PathBuf::from("<hellaswag>"),
                    line: ex.line,
                    reason: format!("need {NUM_ENDINGS} endings and a label below {NUM_ENDINGS}"),
                });
            }
            let r = render(ex, tok, style, n_pos)?;
            for (c, e) in r.contexts.iter().zip(&r.endings) {
                rows.push(ScoreRow::completion(c, e)?);
            }
            norms.push(r.norm);
        }
        let nlls = self.score(&rows)?;
        let mut predictions = Vec::with_capacity(examples.len());
        for (i, ex) in examples.iter().enumerate() {
            let sum_losses: Vec<f64> =
                nlls[i * NUM_ENDINGS..(i + 1) * NUM_ENDINGS].iter().map(|n| n.iter().sum()).collect();
            let avg_losses: Vec<f64> = sum_losses.iter().zip(&norms[i]).map(|(s, d)| s / d).collect();
            predictions.push(HellaSwagPrediction {
                line: ex.line,
                label: ex.label,
                pred: argmin_first(&sum_losses).unwrap_or(0),
                pred_norm: argmin_first(&avg_losses).unwrap_or(0),
                sum_losses,
                avg_losses,
            });
        }
        Ok(summarize(style, predictions))
    }

    /// [`hellaswag`](Self::hellaswag) split across the ranks of a data-parallel group
    /// (collective: every rank passes the same examples). Rank `r` scores block `r` of the
    /// examples ([`block_range`]); the per-ending losses are summed over the ranks exactly
    /// (each value comes from one rank, the others add zeros), so every rank gets the whole
    /// result, the same as one process computing the same per-example losses.
    ///
    /// ```
    /// use gpt2::eval::hellaswag::{read_hellaswag, ReadOptions};
    /// use gpt2::eval::{Evaluator, HellaSwagStyle};
    /// use gpt2::{Gpt2, SingleProcess, Tokenizer};
    /// let model = Gpt2::load(gpt2::default_model_dir().unwrap()).unwrap();
    /// let tok = Tokenizer::gpt2().unwrap();
    /// let file = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/data/hellaswag_mini.jsonl");
    /// let ex = read_hellaswag(file, ReadOptions { limit: Some(2), ..Default::default() }).unwrap().examples;
    /// let ev = Evaluator::new(&model);
    /// let one = ev.hellaswag(&tok, &ex, HellaSwagStyle::Completion).unwrap();
    /// let split = ev.hellaswag_distributed(&tok, &ex, HellaSwagStyle::Completion, &SingleProcess).unwrap();
    /// assert_eq!(one, split);
    /// ```
    pub fn hellaswag_distributed(
        &self,
        tok: &Tokenizer,
        examples: &[HellaSwagExample],
        style: HellaSwagStyle,
        comm: &dyn Collective,
    ) -> Result<HellaSwagEval> {
        if comm.size() == 1 {
            return self.hellaswag(tok, examples, style);
        }
        if examples.is_empty() {
            return Err(Error::EmptyInput("no HellaSwag examples".into()));
        }
        let mine = block_range(examples.len(), comm.size(), comm.rank());
        // [sum_losses (4), avg_losses (4)] per example, zero where another rank scores it
        let mut losses = vec![0f64; examples.len() * 2 * NUM_ENDINGS];
        let local =
            if mine.is_empty() { Ok(None) } else { self.hellaswag(tok, &examples[mine.clone()], style).map(Some) };
        // A rank whose examples fail still joins the reduction (with NaN), so no rank hangs.
        let mut failed = [0f64];
        match &local {
            Ok(Some(res)) => {
                for (p, i) in res.predictions.iter().zip(mine.clone()) {
                    let at = i * 2 * NUM_ENDINGS;
                    losses[at..at + NUM_ENDINGS].copy_from_slice(&p.sum_losses);
                    losses[at + NUM_ENDINGS..at + 2 * NUM_ENDINGS].copy_from_slice(&p.avg_losses);
                }
            }
            Ok(None) => {}
            Err(_) => failed[0] = 1.0,
        }
        comm.all_reduce_sum_f64(&mut failed)?;
        local?;
        if failed[0] > 0.0 {
            return Err(Error::Collective(format!("HellaSwag scoring failed on {} rank(s)", failed[0] as usize)));
        }
        comm.all_reduce_sum_f64(&mut losses)?;
        let predictions = examples
            .iter()
            .zip(losses.chunks_exact(2 * NUM_ENDINGS))
            .map(|(ex, l)| {
                let (sum_losses, avg_losses) = (l[..NUM_ENDINGS].to_vec(), l[NUM_ENDINGS..].to_vec());
                HellaSwagPrediction {
                    line: ex.line,
                    label: ex.label,
                    pred: argmin_first(&sum_losses).unwrap_or(0),
                    pred_norm: argmin_first(&avg_losses).unwrap_or(0),
                    sum_losses,
                    avg_losses,
                }
            })
            .collect();
        Ok(summarize(style, predictions))
    }
}

/// Accuracies of a list of predictions.
fn summarize(style: HellaSwagStyle, predictions: Vec<HellaSwagPrediction>) -> HellaSwagEval {
    let n = predictions.len();
    let acc = predictions.iter().filter(|p| p.pred == p.label).count() as f64 / n as f64;
    let acc_norm = predictions.iter().filter(|p| p.pred_norm == p.label).count() as f64 / n as f64;
    HellaSwagEval { style, n, acc, acc_norm, predictions }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_matches_python_semantics() {
        // re.sub(r"\[.*?\]", "", s) examples, worked out with CPython 3.
        assert_eq!(remove_bracket_spans("a [b] c [d"), "a  c [d");
        assert_eq!(remove_bracket_spans("[a [b] c]"), " c]");
        assert_eq!(remove_bracket_spans("x [a\nb] y [z]"), "x [a\nb] y ");
        assert_eq!(remove_bracket_spans("[]"), "");
        // "   " → "  " (non-overlapping replace), like Python
        assert_eq!(harness_preprocess("a   b"), "a  b");
        assert_eq!(harness_preprocess("\u{1f} x \u{a0}"), "x");
        assert_eq!(py_capitalize("hELLO wORLD"), "Hello world");
        assert_eq!(py_capitalize(""), "");
        assert_eq!(py_capitalize("ΣΑΣ"), "Σας");
    }

    #[test]
    fn encode_pair_moves_trailing_space() {
        let tok = Tokenizer::gpt2().unwrap();
        let (c, e) = encode_pair(&tok, "Hello ", "world");
        assert_eq!(c, tok.encode("Hello"));
        assert_eq!(e, tok.encode(" world"));
        let (c, e) = encode_pair(&tok, "", " world");
        assert_eq!((c, e), (vec![50256], tok.encode(" world")));
    }

    #[test]
    fn style_parses() {
        assert_eq!("harness".parse::<HellaSwagStyle>().unwrap(), HellaSwagStyle::Harness);
        assert!("nope".parse::<HellaSwagStyle>().is_err());
    }
}
