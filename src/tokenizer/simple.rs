//! Word-level and character-level tokenizers, the simple baselines next to GPT-2 BPE.
//!
//! Both build their vocabulary from a corpus (sorted, so the ids do not depend on the order of
//! the corpus), reserve id 0 for an unknown token, and encode anything outside the vocabulary as
//! that id. All three tokenizers implement [`Tokenize`].
//!
//! ```
//! use gpt2::tokenizer::simple::{CharTokenizer, Tokenize, WordTokenizer};
//! let words = WordTokenizer::from_corpus(["the cat sat", "the dog"], 1).unwrap();
//! let ids = words.encode("the cat ran");
//! assert_eq!(ids[2], WordTokenizer::UNK_ID);
//! assert_eq!(words.decode(&ids).unwrap(), "the cat <|unk|>");
//!
//! let chars = CharTokenizer::from_corpus(["hello"]).unwrap();
//! assert_eq!(chars.vocab_size(), 5); // <unk>, e, h, l, o
//! assert_eq!(chars.decode(&chars.encode("hello")).unwrap(), "hello");
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::Tokenizer;
use crate::error::{Error, Result};

/// What a tokenizer does: text → ids → text.
pub trait Tokenize {
    /// Token ids of `text`.
    fn encode(&self, text: &str) -> Vec<u32>;
    /// Text of `ids`; an id outside the vocabulary is [`Error::TokenOutOfVocab`].
    fn decode(&self, ids: &[u32]) -> Result<String>;
    /// Number of ids.
    fn vocab_size(&self) -> usize;
}

impl Tokenize for Tokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        Tokenizer::encode(self, text)
    }
    fn decode(&self, ids: &[u32]) -> Result<String> {
        Tokenizer::decode(self, ids)
    }
    fn vocab_size(&self) -> usize {
        Tokenizer::vocab_size(self)
    }
}

fn check_ids(ids: &[u32], vocab_size: usize) -> Result<()> {
    match ids.iter().enumerate().find(|(_, &t)| t as usize >= vocab_size) {
        Some((position, &token)) => Err(Error::TokenOutOfVocab { token, position, vocab_size }),
        None => Ok(()),
    }
}

/// Whitespace word tokenizer: a token is a maximal run of non-whitespace characters.
///
/// Decoding joins words with single spaces, so `decode(encode(s))` equals `s` with whitespace
/// runs collapsed when every word is known. Punctuation stays attached to its word
/// (`"cat."` is one word).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordTokenizer {
    words: Vec<String>,
    index: HashMap<String, u32>,
}

impl WordTokenizer {
    /// Id of the unknown-word token.
    pub const UNK_ID: u32 = 0;
    /// Text of the unknown-word token.
    pub const UNK: &'static str = "<|unk|>";

    /// Vocabulary of the words appearing at least `min_count` times (≥ 1) in `corpus`, sorted,
    /// after the unknown token.
    pub fn from_corpus<'a>(corpus: impl IntoIterator<Item = &'a str>, min_count: usize) -> Result<Self> {
        if min_count == 0 {
            return Err(Error::arg("min_count", "must be at least 1"));
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for text in corpus {
            for w in text.split_whitespace() {
                *counts.entry(w).or_default() += 1;
            }
        }
        if counts.is_empty() {
            return Err(Error::EmptyInput("the corpus has no words".into()));
        }
        let words: Vec<String> = counts.into_iter().filter(|&(_, n)| n >= min_count).map(|(w, _)| w.into()).collect();
        if words.is_empty() {
            return Err(Error::arg("min_count", format!("no word appears {min_count} times")));
        }
        Self::from_words(words)
    }

    /// Vocabulary from a word list (ids 1.. in the given order; id 0 is the unknown token). Words
    /// must be non-empty, free of whitespace, distinct, and not the unknown token itself.
    pub fn from_words(words: Vec<String>) -> Result<Self> {
        let mut all = Vec::with_capacity(words.len() + 1);
        all.push(Self::UNK.to_string());
        all.extend(words);
        let mut index = HashMap::with_capacity(all.len());
        for (i, w) in all.iter().enumerate() {
            if w.is_empty() || w.chars().any(char::is_whitespace) {
                return Err(Error::arg("words", format!("{w:?} is empty or contains whitespace")));
            }
            if index.insert(w.clone(), i as u32).is_some() {
                return Err(Error::arg("words", format!("{w:?} appears twice")));
            }
        }
        Ok(WordTokenizer { words: all, index })
    }

    /// Id of `word`, if known.
    pub fn id(&self, word: &str) -> Option<u32> {
        self.index.get(word).copied()
    }

    /// The word with id `id`.
    pub fn word(&self, id: u32) -> Option<&str> {
        self.words.get(id as usize).map(String::as_str)
    }

    /// The vocabulary, by id.
    pub fn words(&self) -> &[String] {
        &self.words
    }
}

impl Tokenize for WordTokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        text.split_whitespace().map(|w| self.id(w).unwrap_or(Self::UNK_ID)).collect()
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        check_ids(ids, self.words.len())?;
        Ok(ids.iter().map(|&i| self.words[i as usize].as_str()).collect::<Vec<_>>().join(" "))
    }

    fn vocab_size(&self) -> usize {
        self.words.len()
    }
}

/// Character tokenizer: one token per Unicode scalar value (`char`).
///
/// `decode(encode(s)) == s` whenever every character of `s` is in the vocabulary; unknown
/// characters decode as U+FFFD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharTokenizer {
    chars: Vec<char>,
    index: HashMap<char, u32>,
}

impl CharTokenizer {
    /// Id of the unknown-character token.
    pub const UNK_ID: u32 = 0;
    /// What the unknown token decodes to.
    pub const UNK: char = char::REPLACEMENT_CHARACTER;

    /// Vocabulary of the distinct characters of `corpus`, sorted, after the unknown token.
    pub fn from_corpus<'a>(corpus: impl IntoIterator<Item = &'a str>) -> Result<Self> {
        let set: BTreeSet<char> = corpus.into_iter().flat_map(str::chars).filter(|&c| c != Self::UNK).collect();
        if set.is_empty() {
            return Err(Error::EmptyInput("the corpus has no characters".into()));
        }
        let chars: Vec<char> = std::iter::once(Self::UNK).chain(set).collect();
        let index = chars.iter().enumerate().map(|(i, &c)| (c, i as u32)).collect();
        Ok(CharTokenizer { chars, index })
    }

    /// Id of `c`, if known.
    pub fn id(&self, c: char) -> Option<u32> {
        self.index.get(&c).copied()
    }

    /// The character with id `id`.
    pub fn char(&self, id: u32) -> Option<char> {
        self.chars.get(id as usize).copied()
    }

    /// The vocabulary, by id.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }
}

impl Tokenize for CharTokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        text.chars().map(|c| self.id(c).unwrap_or(Self::UNK_ID)).collect()
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        check_ids(ids, self.chars.len())?;
        Ok(ids.iter().map(|&i| self.chars[i as usize]).collect())
    }

    fn vocab_size(&self) -> usize {
        self.chars.len()
    }
}
