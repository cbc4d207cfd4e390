//! BPE "show your work": how GPT-2 turns a text into tokens, step by step.
//!
//! Byte-level BPE happens in two stages:
//! 1. **Pre-tokenization.** A regular expression cuts the text into pieces (words with their
//!    leading space, runs of digits, runs of punctuation, whitespace). Merges never cross a piece
//!    boundary.
//! 2. **Merging.** Each piece starts as its UTF-8 bytes, one symbol per byte. Repeatedly, the
//!    adjacent pair whose concatenation has the lowest *rank* (earliest learned merge) is merged,
//!    until no adjacent pair is in the vocabulary. The remaining symbols are the tokens.
//!
//! In GPT-2's vocabulary (`r50k_base`) a token's rank is its id, so ranks come straight from the
//! tokenizer: the bytes of id `i` have rank `i`. Ties (the same pair at two places) merge the
//! leftmost first — exactly what tiktoken does, so the traced tokens are tiktoken's tokens.
//!
//! ```
//! use gpt2::tokenizer::{trace::BpeTracer, Tokenizer};
//! let tracer = BpeTracer::new(&Tokenizer::gpt2().unwrap()).unwrap();
//! let trace = tracer.trace("Hello world").unwrap();
//! assert_eq!(trace.token_strings(), ["Hello", "Ġworld"]);
//! let piece = &trace.pieces[1];
//! assert_eq!(piece.symbols, ["Ġ", "w", "o", "r", "l", "d"]);
//! assert_eq!(piece.merges.last().unwrap().merged, "Ġworld");
//! ```

use std::fmt;

use serde::Serialize;

use super::bpe::{Ranks, Scratch};
use super::pretokenize::Splitter;
use super::{byte_to_unicode, Tokenizer, EOT};
use crate::error::{Error, Result};

/// The pre-tokenization pattern of tiktoken's `r50k_base` (GPT-2): contractions, optional space +
/// letters, optional space + digits, optional space + other symbols, then whitespace runs (a run
/// followed by a word leaves its last space to that word).
pub const GPT2_SPLIT_PATTERN: &str = r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s";

/// Traces GPT-2 byte-level BPE. Build once (it indexes the whole vocabulary), trace many texts.
///
/// Tracing takes `O(n log n)` time in the length of a piece, and the text listing
/// (`Display`) stays linear in the number of merges: a piece of more than
/// [`FULL_LISTING_SYMBOLS`] symbols shows a window of symbols around each merge instead of the
/// whole list.
///
/// `BpeTracer` is `Send + Sync`.
#[derive(Debug)]
pub struct BpeTracer {
    ranks: Ranks,
    split: Splitter,
}

/// Pieces with at most this many initial symbols list every symbol after each merge in the text
/// listing; longer pieces list [`WINDOW_SYMBOLS`] symbols on each side of the merged one.
pub const FULL_LISTING_SYMBOLS: usize = 64;
/// Symbols shown on each side of a merge in the listing of a long piece.
pub const WINDOW_SYMBOLS: usize = 8;

/// One merge step: `left` + `right` → `merged`, at symbol index `position` (before the merge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MergeStep {
    /// Left symbol (`Ġ` form).
    pub left: String,
    /// Right symbol (`Ġ` form).
    pub right: String,
    /// The merged symbol (`Ġ` form) — a vocabulary token.
    pub merged: String,
    /// Rank of the merged symbol (its token id in GPT-2): lower merges first.
    pub rank: u32,
    /// Index of `left` in the symbol list before this merge.
    pub position: usize,
}

/// The work done on one pre-tokenized piece.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PieceTrace {
    /// The piece as text (lossy if it is not valid UTF-8, see [`PieceTrace::bytes`]).
    pub text: String,
    /// The piece's bytes.
    pub bytes: Vec<u8>,
    /// Initial symbols: one per byte, `Ġ` form.
    pub symbols: Vec<String>,
    /// Merges in the order applied.
    pub merges: Vec<MergeStep>,
    /// Final token ids.
    pub tokens: Vec<u32>,
    /// Final tokens, `Ġ` form.
    pub token_strings: Vec<String>,
}

impl PieceTrace {
    /// The symbol list after the first `steps` merges (`0` = the bytes, `merges.len()` = the tokens).
    pub fn symbols_after(&self, steps: usize) -> Vec<String> {
        let mut syms = self.symbols.clone();
        for m in self.merges.iter().take(steps) {
            let right = syms.remove(m.position + 1);
            syms[m.position].push_str(&right);
        }
        syms
    }
}

/// The trace of a whole text: its pieces in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BpeTrace {
    /// The traced text.
    pub text: String,
    /// Pre-tokenized pieces with their merges.
    pub pieces: Vec<PieceTrace>,
}

impl BpeTrace {
    /// All token ids (equal to [`Tokenizer::encode`]).
    pub fn tokens(&self) -> Vec<u32> {
        self.pieces.iter().flat_map(|p| p.tokens.iter().copied()).collect()
    }

    /// All tokens in `Ġ` form.
    pub fn token_strings(&self) -> Vec<String> {
        self.pieces.iter().flat_map(|p| p.token_strings.iter().cloned()).collect()
    }

    /// Total number of merges applied.
    pub fn num_merges(&self) -> usize {
        self.pieces.iter().map(|p| p.merges.len()).sum()
    }
}

impl fmt::Display for BpeTrace {
    /// A readable step-by-step listing, one block per piece.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.pieces {
            if p.symbols.len() <= FULL_LISTING_SYMBOLS {
                writeln!(f, "piece {:?}: {}", p.text, p.symbols.join(" "))?;
                for (i, m) in p.merges.iter().enumerate() {
                    let syms = p.symbols_after(i + 1);
                    writeln!(
                        f,
                        "  merge {} + {} -> {} (rank {}): {}",
                        m.left,
                        m.right,
                        m.merged,
                        m.rank,
                        syms.join(" ")
                    )?;
                }
            } else {
                write_long_piece(f, p)?;
            }
            let ids: Vec<String> = p.tokens.iter().map(u32::to_string).collect();
            writeln!(f, "  tokens: {} = [{}]", p.token_strings.join(" "), ids.join(", "))?;
        }
        Ok(())
    }
}

/// Counts of live symbol starts over byte positions (a Fenwick tree), to map a symbol index to its
/// byte offset in `O(log n)`.
struct Starts {
    tree: Vec<usize>,
}

impl Starts {
    fn all(n: usize) -> Self {
        let mut tree = vec![0; n + 1];
        for i in 1..=n {
            tree[i] += 1;
            let j = i + (i & i.wrapping_neg());
            if j <= n {
                tree[j] += tree[i];
            }
        }
        Starts { tree }
    }

    fn remove(&mut self, pos: usize) {
        let mut i = pos + 1;
        while i < self.tree.len() {
            self.tree[i] -= 1;
            i += i & i.wrapping_neg();
        }
    }

    /// Number of live starts before byte `pos`.
    fn rank(&self, pos: usize) -> usize {
        let (mut i, mut sum) = (pos, 0);
        while i > 0 {
            sum += self.tree[i];
            i -= i & i.wrapping_neg();
        }
        sum
    }

    /// Byte offset of the live start with index `k` (0-based), if any.
    fn select(&self, k: usize) -> Option<usize> {
        let n = self.tree.len() - 1;
        let (mut pos, mut rest) = (0, k + 1);
        let mut step = n.checked_next_power_of_two().unwrap_or(0);
        while step > 0 {
            if pos + step <= n && self.tree[pos + step] < rest {
                pos += step;
                rest -= self.tree[pos];
            }
            step /= 2;
        }
        (pos < n).then_some(pos)
    }
}

/// The listing of a long piece: per merge, the merged symbol with [`WINDOW_SYMBOLS`] neighbours on
/// each side, so the output grows linearly with the number of merges.
fn write_long_piece(f: &mut fmt::Formatter<'_>, p: &PieceTrace) -> fmt::Result {
    let n = p.bytes.len();
    writeln!(f, "piece {:?} ({n} bytes): {} …", p.text, p.symbols[..WINDOW_SYMBOLS * 2].join(" "))?;
    // symbol boundaries as a linked list over byte offsets, replayed merge by merge
    let mut next: Vec<usize> = (1..=n).collect();
    let mut starts = Starts::all(n);
    let symbol = |next: &[usize], s: usize| gpt2_form(&p.bytes[s..next[s]]);
    for m in &p.merges {
        let Some(left) = starts.select(m.position) else { break };
        let right = next[left];
        if right >= n {
            break;
        }
        next[left] = next[right];
        starts.remove(right);
        let first = m.position.saturating_sub(WINDOW_SYMBOLS);
        let mut parts = Vec::with_capacity(2 * WINDOW_SYMBOLS + 3);
        if first > 0 {
            parts.push("…".to_string());
        }
        let mut s = starts.select(first).unwrap_or(n);
        let mut k = first;
        while s < n && k <= m.position + WINDOW_SYMBOLS {
            parts.push(if k == m.position { format!("[{}]", symbol(&next, s)) } else { symbol(&next, s) });
            s = next[s];
            k += 1;
        }
        if s < n {
            parts.push("…".to_string());
        }
        writeln!(
            f,
            "  merge {} + {} -> {} (rank {}) at {}: {}",
            m.left,
            m.right,
            m.merged,
            m.rank,
            m.position,
            parts.join(" ")
        )?;
    }
    Ok(())
}

fn gpt2_form(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| byte_to_unicode(b)).collect()
}

impl BpeTracer {
    /// Indexes the vocabulary of `tokenizer` (bytes → rank for ids `0..50256`; `<|endoftext|>` is
    /// special and never produced by merges).
    pub fn new(tokenizer: &Tokenizer) -> Result<Self> {
        let tokens = (0..EOT).map(|id| Ok((tokenizer.decode_bytes(&[id])?, id))).collect::<Result<Vec<_>>>()?;
        let ranks = Ranks::new(tokens).ok_or_else(|| Error::InvalidConfig("vocabulary lacks a single byte".into()))?;
        if ranks.len() != EOT as usize {
            return Err(Error::InvalidConfig(format!("vocabulary has {} distinct byte strings", ranks.len())));
        }
        Ok(BpeTracer { ranks, split: Splitter::new()? })
    }

    /// Rank of a byte string, if it is a vocabulary token.
    pub fn rank(&self, bytes: &[u8]) -> Option<u32> {
        self.ranks.get(bytes)
    }

    /// GPT-2 pre-tokenization: the pieces of `text`, in order (their concatenation is `text`).
    /// Linear time on any input (see [`Tokenizer`]); never fails.
    pub fn pretokenize<'t>(&self, text: &'t str) -> Result<Vec<&'t str>> {
        Ok(self.split.pieces(text))
    }

    /// Traces the whole text: pre-tokenization, then the merges of every piece.
    pub fn trace(&self, text: &str) -> Result<BpeTrace> {
        let pieces = self.pretokenize(text)?.into_iter().map(|p| self.trace_bytes(p.as_bytes())).collect();
        Ok(BpeTrace { text: text.to_string(), pieces })
    }

    /// Traces the merges of one piece given as bytes (no pre-tokenization). An empty slice gives
    /// an empty trace.
    pub fn trace_bytes(&self, bytes: &[u8]) -> PieceTrace {
        let mut merges = Vec::new();
        let mut bounds = Vec::new();
        if !bytes.is_empty() {
            // lowest rank, leftmost on ties (as tiktoken); stop when no adjacent pair is a token
            let mut starts = Starts::all(bytes.len());
            let mut scratch = Scratch::default();
            self.ranks.merge(bytes, &mut scratch, |left, mid, end, rank| {
                merges.push(MergeStep {
                    left: gpt2_form(&bytes[left..mid]),
                    right: gpt2_form(&bytes[mid..end]),
                    merged: gpt2_form(&bytes[left..end]),
                    rank,
                    position: starts.rank(left),
                });
                starts.remove(mid);
            });
            let mut i = 0;
            while i < bytes.len() {
                bounds.push(i);
                i = scratch.next_end(i);
            }
        }
        bounds.push(bytes.len());
        // every final symbol is a token: a byte or the result of a merge
        let tokens: Vec<u32> =
            bounds.windows(2).map(|w| self.ranks.get(&bytes[w[0]..w[1]]).unwrap_or(u32::MAX)).collect();
        let token_strings = bounds.windows(2).map(|w| gpt2_form(&bytes[w[0]..w[1]])).collect();
        PieceTrace {
            text: String::from_utf8_lossy(bytes).into_owned(),
            bytes: bytes.to_vec(),
            symbols: bytes.iter().map(|&b| byte_to_unicode(b).to_string()).collect(),
            merges,
            tokens,
            token_strings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_vocabulary_token_is_reached_by_its_own_merges() {
        // tiktoken returns a piece that is itself a token directly; tracing must agree.
        let tok = Tokenizer::gpt2().unwrap();
        let tracer = BpeTracer::new(&tok).unwrap();
        for id in 0..EOT {
            let bytes = tok.decode_bytes(&[id]).unwrap();
            assert_eq!(tracer.trace_bytes(&bytes).tokens, vec![id], "token {id}");
        }
    }

    #[test]
    fn symbols_after_replays_merges() {
        let tracer = BpeTracer::new(&Tokenizer::gpt2().unwrap()).unwrap();
        let p = tracer.trace_bytes(b" lower");
        assert_eq!(p.symbols_after(0), p.symbols);
        assert_eq!(p.symbols_after(p.merges.len()), p.token_strings);
        assert!(tracer.trace_bytes(b"").tokens.is_empty());
    }
}
