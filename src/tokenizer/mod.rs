//! GPT-2 byte-level BPE tokenizer (tiktoken-rs `r50k_base`, vocabulary embedded — nothing is fetched).

mod bpe;
mod pretokenize;
pub mod simple;
pub mod trace;

use std::sync::Arc;

use tiktoken_rs::CoreBPE;

pub use self::pretokenize::safe_cut;
use crate::error::{Error, Result};

/// The GPT-2 end-of-text token id.
pub const EOT: u32 = 50256;
/// Size of the GPT-2 vocabulary.
pub const GPT2_VOCAB_SIZE: usize = 50257;

/// GPT-2 byte-level BPE. Cheap to clone (the vocabulary is shared).
///
/// Encoding gives tiktoken's `r50k_base` ids for every input, but cannot overflow a stack or take
/// quadratic time: the pre-tokenizer runs without backtracking (see [`safe_cut`] for where it always
/// splits) and each piece is merged in `O(n log n)`, so a million consecutive newlines or a 10 MB
/// "word" encode like any other text.
///
/// ```
/// let tok = gpt2::Tokenizer::gpt2().unwrap();
/// let ids = tok.encode("Hello world");
/// assert_eq!(ids, vec![15496, 995]);
/// assert_eq!(tok.decode(&ids).unwrap(), "Hello world");
/// assert_eq!(tok.token_string(995).unwrap(), "Ġworld");
/// ```
#[derive(Clone)]
pub struct Tokenizer {
    bpe: Arc<CoreBPE>,
    enc: Arc<Encoder>,
}

/// The encoding side: pre-tokenizer and merge ranks.
#[derive(Debug)]
struct Encoder {
    split: pretokenize::Splitter,
    ranks: bpe::Ranks,
}

/// The literal text of the end-of-text token.
const ENDOFTEXT: &str = "<|endoftext|>";

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("vocab", &"r50k_base").finish()
    }
}

/// GPT-2's reversible byte → printable character map (`Ġ` is the space byte).
pub fn byte_to_unicode(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    if printable(b) {
        return b as char;
    }
    // non-printable bytes are mapped, in order, to 256, 257, ...
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).expect("valid char")
}

impl Tokenizer {
    /// The GPT-2 tokenizer (r50k_base).
    pub fn gpt2() -> Result<Self> {
        let bpe = tiktoken_rs::r50k_base().map_err(|e| Error::InvalidConfig(format!("tokenizer: {e}")))?;
        let tokens = (0..EOT).map(|id| {
            Ok((bpe.decode_bytes(&[id]).map_err(|e| Error::InvalidConfig(format!("tokenizer: {e:?}")))?, id))
        });
        let ranks = bpe::Ranks::new(tokens.collect::<Result<Vec<_>>>()?)
            .filter(|r| r.len() == EOT as usize)
            .ok_or_else(|| Error::InvalidConfig("tokenizer: vocabulary lacks a byte or repeats a token".into()))?;
        let enc = Encoder { split: pretokenize::Splitter::new()?, ranks };
        Ok(Tokenizer { bpe: Arc::new(bpe), enc: Arc::new(enc) })
    }

    /// Number of token ids (50257).
    pub fn vocab_size(&self) -> usize {
        GPT2_VOCAB_SIZE
    }

    /// The `<|endoftext|>` id (50256).
    pub fn eot(&self) -> u32 {
        EOT
    }

    /// Encodes text as **ordinary text**: `<|endoftext|>` in the text is just characters
    /// (`<`, `|`, `endoftext`, …), never the EOT id — the same as
    /// [`encode_ordinary`](Self::encode_ordinary) and tiktoken's `encode_ordinary`.
    ///
    /// This differs from transformers' `GPT2TokenizerFast`, which turns `<|endoftext|>` in text
    /// into id 50256; use [`encode_with_special`](Self::encode_with_special) for that. The crate
    /// keeps `encode` ordinary on purpose: every caller that feeds data (shard writing, the
    /// evaluators, HellaSwag, the examples) must not let text forge a document boundary, and
    /// untrusted input stays safe by default.
    ///
    /// ```
    /// let tok = gpt2::Tokenizer::gpt2().unwrap();
    /// let ids = tok.encode("Hello<|endoftext|>");
    /// assert!(ids.len() > 2 && !ids.contains(&50256)); // "Hello" + pieces of the marker
    /// ```
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.encode_ordinary(text)
    }

    /// Encodes text with no special tokens (tiktoken's `encode_ordinary`): the call for
    /// untrusted input and training data.
    ///
    /// ```
    /// let tok = gpt2::Tokenizer::gpt2().unwrap();
    /// assert!(!tok.encode_ordinary("a<|endoftext|>b").contains(&50256));
    /// ```
    pub fn encode_ordinary(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3);
        self.encode_into(text, &mut out);
        out
    }

    /// Appends the ids of `text` (as [`Tokenizer::encode`], ordinary text) to `out`.
    pub fn encode_into(&self, text: &str, out: &mut Vec<u32>) {
        let mut scratch = bpe::Scratch::default();
        let Encoder { split, ranks } = &*self.enc;
        split.for_each_piece(text, |piece| ranks.encode_piece(piece.as_bytes(), &mut scratch, out));
    }

    /// Encodes text the way transformers' GPT-2 tokenizer does by default: `<|endoftext|>` in
    /// the text becomes the EOT id (50256); the text around it is encoded ordinarily.
    ///
    /// ```
    /// let tok = gpt2::Tokenizer::gpt2().unwrap();
    /// assert_eq!(tok.encode_with_special("Hello<|endoftext|>"), vec![15496, 50256]);
    /// ```
    pub fn encode_with_special(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3);
        for (i, part) in text.split(ENDOFTEXT).enumerate() {
            if i > 0 {
                out.push(EOT);
            }
            self.encode_into(part, &mut out);
        }
        out
    }

    /// [`encode`](Self::encode) (ordinary text) of many texts, in parallel (rayon), in order.
    ///
    /// ```
    /// let tok = gpt2::Tokenizer::gpt2().unwrap();
    /// assert_eq!(tok.encode_batch(&["Hello", " world"]), vec![vec![15496], vec![995]]);
    /// ```
    pub fn encode_batch<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Vec<Vec<u32>> {
        use rayon::prelude::*;
        texts.par_iter().map(|t| self.encode_ordinary(t.as_ref())).collect()
    }

    /// [`encode_with_special`](Self::encode_with_special) of many texts, in parallel, in order.
    ///
    /// ```
    /// let tok = gpt2::Tokenizer::gpt2().unwrap();
    /// assert_eq!(tok.encode_batch_with_special(&["Hi<|endoftext|>"]), vec![vec![17250, 50256]]);
    /// ```
    pub fn encode_batch_with_special<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Vec<Vec<u32>> {
        use rayon::prelude::*;
        texts.par_iter().map(|t| self.encode_with_special(t.as_ref())).collect()
    }

    /// [`decode`](Self::decode) of many sequences, in parallel, in order (the first error wins).
    ///
    /// ```
    /// let tok = gpt2::Tokenizer::gpt2().unwrap();
    /// assert_eq!(tok.decode_batch(&[vec![15496], vec![995]]).unwrap(), vec!["Hello", " world"]);
    /// ```
    pub fn decode_batch<I: AsRef<[u32]> + Sync>(&self, batch: &[I]) -> Result<Vec<String>> {
        use rayon::prelude::*;
        batch.par_iter().map(|ids| self.decode(ids.as_ref())).collect()
    }

    /// [`decode_lossy`](Self::decode_lossy) of many sequences, in parallel, in order.
    ///
    /// ```
    /// let tok = gpt2::Tokenizer::gpt2().unwrap();
    /// assert_eq!(tok.decode_batch_lossy(&[&[15496u32][..]]).unwrap(), vec!["Hello"]);
    /// ```
    pub fn decode_batch_lossy<I: AsRef<[u32]> + Sync>(&self, batch: &[I]) -> Result<Vec<String>> {
        use rayon::prelude::*;
        batch.par_iter().map(|ids| self.decode_lossy(ids.as_ref())).collect()
    }

    /// Raw bytes of a token sequence (may end inside a multi-byte character).
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        if let Some((position, &token)) = ids.iter().enumerate().find(|(_, &t)| t as usize >= GPT2_VOCAB_SIZE) {
            return Err(Error::TokenOutOfVocab { token, position, vocab_size: GPT2_VOCAB_SIZE });
        }
        self.bpe.decode_bytes(ids).map_err(|e| Error::TokenOutOfVocab {
            token: e.token,
            position: 0,
            vocab_size: GPT2_VOCAB_SIZE,
        })
    }

    /// Decodes to a string; bytes that are not valid UTF-8 are an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let bytes = self.decode_bytes(ids)?;
        String::from_utf8(bytes).map_err(|e| Error::InvalidUtf8 { valid_up_to: e.utf8_error().valid_up_to() })
    }

    /// Decodes to a string, replacing invalid UTF-8 with U+FFFD.
    pub fn decode_lossy(&self, ids: &[u32]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }

    /// The token's vocabulary string in GPT-2's byte-to-unicode form (`Ġ` = space).
    pub fn token_string(&self, id: u32) -> Result<String> {
        Ok(self.decode_bytes(&[id])?.into_iter().map(byte_to_unicode).collect())
    }

    /// Token strings (`Ġ` form) of a sequence.
    pub fn token_strings(&self, ids: &[u32]) -> Result<Vec<String>> {
        ids.iter().map(|&i| self.token_string(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_matches_gpt2() {
        assert_eq!(byte_to_unicode(b' '), 'Ġ');
        assert_eq!(byte_to_unicode(b'\n'), 'Ċ');
        assert_eq!(byte_to_unicode(b'a'), 'a');
        let all: std::collections::HashSet<char> = (0..=255u8).map(byte_to_unicode).collect();
        assert_eq!(all.len(), 256);
    }
}
