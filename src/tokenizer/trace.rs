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

use std::collections::HashMap;
use std::fmt;

use fancy_regex::Regex;
use serde::Serialize;

use super::{byte_to_unicode, Tokenizer, EOT};
use crate::error::{Error, Result};

/// The pre-tokenization pattern of tiktoken's `r50k_base` (GPT-2): contractions, optional space +
/// letters, optional space + digits, optional space + other symbols, then whitespace runs (a run
/// followed by a word leaves its last space to that word).
pub const GPT2_SPLIT_PATTERN: &str = r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s";

/// Traces GPT-2 byte-level BPE. Build once (it indexes the whole vocabulary), trace many texts.
///
/// `BpeTracer` is `Send + Sync`.
#[derive(Debug)]
pub struct BpeTracer {
    ranks: HashMap<Vec<u8>, u32>,
    regex: Regex,
}

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
            writeln!(f, "piece {:?}: {}", p.text, p.symbols.join(" "))?;
            for (i, m) in p.merges.iter().enumerate() {
                let syms = p.symbols_after(i + 1);
                writeln!(f, "  merge {} + {} -> {} (rank {}): {}", m.left, m.right, m.merged, m.rank, syms.join(" "))?;
            }
            let ids: Vec<String> = p.tokens.iter().map(u32::to_string).collect();
            writeln!(f, "  tokens: {} = [{}]", p.token_strings.join(" "), ids.join(", "))?;
        }
        Ok(())
    }
}

fn gpt2_form(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| byte_to_unicode(b)).collect()
}

impl BpeTracer {
    /// Indexes the vocabulary of `tokenizer` (bytes → rank for ids `0..50256`; `<|endoftext|>` is
    /// special and never produced by merges).
    pub fn new(tokenizer: &Tokenizer) -> Result<Self> {
        let mut ranks = HashMap::with_capacity(EOT as usize);
        for id in 0..EOT {
            ranks.insert(tokenizer.decode_bytes(&[id])?, id);
        }
        if ranks.len() != EOT as usize {
            return Err(Error::InvalidConfig(format!("vocabulary has {} distinct byte strings", ranks.len())));
        }
        let regex = Regex::new(GPT2_SPLIT_PATTERN).map_err(|e| Error::InvalidConfig(format!("split regex: {e}")))?;
        Ok(BpeTracer { ranks, regex })
    }

    /// Rank of a byte string, if it is a vocabulary token.
    pub fn rank(&self, bytes: &[u8]) -> Option<u32> {
        self.ranks.get(bytes).copied()
    }

    /// GPT-2 pre-tokenization: the pieces of `text`, in order (their concatenation is `text`).
    pub fn pretokenize<'t>(&self, text: &'t str) -> Result<Vec<&'t str>> {
        self.regex
            .find_iter(text)
            .map(|m| m.map(|m| m.as_str()).map_err(|e| Error::arg("text", format!("pre-tokenization failed: {e}"))))
            .collect()
    }

    /// Traces the whole text: pre-tokenization, then the merges of every piece.
    pub fn trace(&self, text: &str) -> Result<BpeTrace> {
        let pieces = self.pretokenize(text)?.into_iter().map(|p| self.trace_bytes(p.as_bytes())).collect();
        Ok(BpeTrace { text: text.to_string(), pieces })
    }

    /// Traces the merges of one piece given as bytes (no pre-tokenization). An empty slice gives
    /// an empty trace.
    pub fn trace_bytes(&self, bytes: &[u8]) -> PieceTrace {
        // bounds[i]..bounds[i+1] is symbol i; pair[i] is the rank of symbols i and i+1 joined.
        let mut bounds: Vec<usize> = (0..=bytes.len()).collect();
        let rank_of = |a: usize, b: usize| self.ranks.get(&bytes[a..b]).copied().unwrap_or(u32::MAX);
        let mut pair: Vec<u32> = (0..bytes.len().saturating_sub(1)).map(|i| rank_of(i, i + 2)).collect();
        let mut merges = Vec::new();
        // lowest rank, leftmost on ties (as tiktoken); stop when no adjacent pair is a token
        while let Some((i, r)) =
            pair.iter().copied().enumerate().filter(|&(_, r)| r != u32::MAX).min_by_key(|&(i, r)| (r, i))
        {
            merges.push(MergeStep {
                left: gpt2_form(&bytes[bounds[i]..bounds[i + 1]]),
                right: gpt2_form(&bytes[bounds[i + 1]..bounds[i + 2]]),
                merged: gpt2_form(&bytes[bounds[i]..bounds[i + 2]]),
                rank: r,
                position: i,
            });
            bounds.remove(i + 1);
            pair.remove(i);
            if i > 0 {
                pair[i - 1] = rank_of(bounds[i - 1], bounds[i + 1]);
            }
            if i < pair.len() {
                pair[i] = rank_of(bounds[i], bounds[i + 2]);
            }
        }
        let tokens: Vec<u32> = bounds
            .windows(2)
            .map(|w| self.ranks.get(&bytes[w[0]..w[1]]).copied().expect("every single byte is a token"))
            .collect();
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
