//! GPT-2's pre-tokenizer in linear time, with no backtracking and no recursion.
//!
//! tiktoken's `r50k_base` cuts text with [`GPT2_SPLIT_PATTERN`](super::trace::GPT2_SPLIT_PATTERN),
//! `'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s`. The look-ahead
//! `(?!\S)` needs a backtracking engine, and fancy-regex's backtracking stack overflows on about a
//! million consecutive whitespace characters (tiktoken-rs then panics). This module gives the same
//! pieces without a backtracking engine: the first four alternatives and a plain `\s+` run through
//! the `regex` crate (finite automata, linear time, leftmost-first like a backtracking engine), and
//! the whitespace rules are applied by hand to the `\s+` run `r` found at a position:
//! - `r` reaches the end of the text: one piece (`\s++$`);
//! - `r` has two or more characters: all but its last character is one piece (`\s+(?!\S)` backtracks
//!   by one character), and matching resumes at the last character, which a following word may
//!   take as its leading space (` ?\p{L}++`) or which is a piece of its own (`\s`);
//! - `r` is one character: one piece (`\s`).
//!
//! Where the pattern always splits: every piece is either whitespace only or (an optional leading
//! space and then) non-whitespace only, so a piece never holds a non-whitespace character followed
//! by a whitespace character. Cutting a text between such a pair, encoding the parts separately and
//! concatenating the ids gives the ids of the whole text ([`safe_cut`]); that is how long inputs are
//! encoded in bounded memory.

use regex::Regex;

use crate::error::{Error, Result};

/// The pattern without look-ahead or possessive quantifiers; the whitespace alternatives are
/// resolved in [`Splitter::for_each_piece`].
const PATTERN: &str = r"'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+";

/// GPT-2's pre-tokenizer (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Splitter {
    re: Regex,
}

impl Splitter {
    pub(crate) fn new() -> Result<Self> {
        let re = Regex::new(PATTERN).map_err(|e| Error::InvalidConfig(format!("split regex: {e}")))?;
        Ok(Splitter { re })
    }

    /// Calls `f` with every piece of `text`, in order; the pieces concatenate to `text`.
    pub(crate) fn for_each_piece<'t>(&self, text: &'t str, mut f: impl FnMut(&'t str)) {
        let mut pos = 0;
        while pos < text.len() {
            // The pattern matches every character, so the match starts at `pos`.
            let end = match self.re.find_at(text, pos) {
                Some(m) if m.start() == pos => m.end(),
                _ => text.len(), // unreachable; keeps the pieces a tiling of `text`
            };
            let piece = &text[pos..end];
            let last = piece.chars().next_back().unwrap_or(' ');
            if last.is_whitespace() && end < text.len() && piece.len() > last.len_utf8() {
                // `\s+(?!\S)`: the run minus its last character; resume at that character.
                let cut = end - last.len_utf8();
                f(&text[pos..cut]);
                pos = cut;
            } else {
                f(piece);
                pos = end;
            }
        }
    }

    /// The pieces of `text`, in order.
    pub(crate) fn pieces<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut out = Vec::new();
        self.for_each_piece(text, |p| out.push(p));
        out
    }
}

/// The last byte index `i` of `text` where GPT-2's pre-tokenizer always splits: `text[..i]` ends
/// with a non-whitespace character and `text[i..]` starts with a whitespace character. Encoding
/// `text[..i]` and `text[i..]` separately gives the ids of `text` (see the module docs). `None`
/// when there is no such place (one long word, one long whitespace run).
///
/// Only the last `max_scan` bytes are searched (use `usize::MAX` for all), so a caller that grows
/// a buffer can look for a cut in the newest part only.
///
/// ```
/// use gpt2::tokenizer::safe_cut;
/// assert_eq!(safe_cut("one two\r\nthree", usize::MAX), Some(7)); // before "\r\n"
/// assert_eq!(safe_cut("   leading", usize::MAX), None);
/// let tok = gpt2::Tokenizer::gpt2().unwrap();
/// let text = "a line\r\n\r\n  another\tline";
/// let i = safe_cut(text, usize::MAX).unwrap();
/// let mut ids = tok.encode(&text[..i]);
/// ids.extend(tok.encode(&text[i..]));
/// assert_eq!(ids, tok.encode(text));
/// ```
pub fn safe_cut(text: &str, max_scan: usize) -> Option<usize> {
    let floor = text.len().saturating_sub(max_scan);
    let mut after_is_space = false; // whether the character at the current boundary is whitespace
    for (i, c) in text.char_indices().rev() {
        if i + c.len_utf8() < floor {
            break;
        }
        let space = c.is_whitespace();
        if after_is_space && !space {
            return Some(i + c.len_utf8());
        }
        after_is_space = space;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::trace::GPT2_SPLIT_PATTERN;

    fn reference(text: &str) -> Vec<&str> {
        let re = fancy_regex::Regex::new(GPT2_SPLIT_PATTERN).unwrap();
        re.find_iter(text).map(|m| m.unwrap().as_str()).collect()
    }

    #[test]
    fn pieces_equal_the_backtracking_pattern() {
        let s = Splitter::new().unwrap();
        let cases = [
            "",
            " ",
            "  ",
            "a",
            "Hello world",
            "a  b",
            "a \n b",
            "a\n\nb",
            "a\t\t b",
            "x\r\n\r\ny",
            "end  ",
            "end\n",
            "  lead",
            "\u{3000}\u{3000}漢字\u{a0}x",
            "it's they'll we've I'm you're he'd 's 'S '",
            " 's  'll",
            "12 345 6a7 ½ Ⅻ",
            "!!! ?? . ,\u{85}x",
            "🚀 🚀🚀  é\u{301}",
            "a\u{2028}\u{2029}b \u{1680}c",
        ];
        for c in cases {
            assert_eq!(s.pieces(c), reference(c), "{c:?}");
        }
        // every class mixed, deterministically
        let alphabet: Vec<char> = " \t\n\r\u{b}\u{c}\u{85}\u{a0}\u{3000}ab'sdlt1½.!é漢🚀".chars().collect();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for len in 0..400 {
            let text: String = (0..len % 40)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    alphabet[(state % alphabet.len() as u64) as usize]
                })
                .collect();
            assert_eq!(s.pieces(&text), reference(&text), "{text:?}");
        }
    }

    #[test]
    fn safe_cut_is_between_non_space_and_space() {
        assert_eq!(safe_cut("ab cd", usize::MAX), Some(2));
        assert_eq!(safe_cut("ab\u{3000}", usize::MAX), Some(2));
        assert_eq!(safe_cut("ab", usize::MAX), None);
        assert_eq!(safe_cut(" \n\t", usize::MAX), None);
        assert_eq!(safe_cut("", usize::MAX), None);
        assert_eq!(safe_cut("a b cdefgh", 4), None);
        assert_eq!(safe_cut("a b cdefgh", 7), Some(3));
    }
}
