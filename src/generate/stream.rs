//! Incremental UTF-8 decoding of a byte-level BPE token stream.

/// Turns token bytes into text as they arrive, emitting only complete UTF-8 characters.
///
/// GPT-2's byte-level BPE can split one character across tokens (an emoji is often 2–3 tokens);
/// `TextStream` holds back an incomplete trailing sequence until the rest arrives. Bytes that
/// can never become valid UTF-8 are emitted as U+FFFD exactly where `String::from_utf8_lossy`
/// would put them, so the concatenation of everything [`push`](Self::push)ed and
/// [`finish`](Self::finish)ed equals `from_utf8_lossy` of all bytes.
///
/// ```
/// use gpt2::generate::TextStream;
/// let mut s = TextStream::new();
/// let bytes = "é!".as_bytes(); // [0xC3, 0xA9, b'!']
/// assert_eq!(s.push(&bytes[..1]), "");   // half a character: held back
/// assert_eq!(s.push(&bytes[1..]), "é!");
/// assert_eq!(s.finish(), "");
/// ```
#[derive(Debug, Clone, Default)]
pub struct TextStream {
    pending: Vec<u8>,
}

impl TextStream {
    /// An empty stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = start + e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[start..valid]).expect("valid prefix"));
                    match e.error_len() {
                        // an invalid sequence: replace it, as from_utf8_lossy does
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start = valid + n;
                        }
                        // incomplete at the end: wait for more bytes
                        None => {
                            start = valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }

    /// Ends the stream: any incomplete trailing sequence becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }

    /// Bytes held back, waiting for the rest of a character.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_by_byte_equals_lossy_decoding() {
        let mut bytes = "héllo 日本語 🎉!".as_bytes().to_vec();
        bytes.extend_from_slice(&[0xFF, b'a', 0xE6, 0x97]); // invalid byte, then a truncated char
        let mut s = TextStream::new();
        let mut text = String::new();
        for b in &bytes {
            let piece = s.push(std::slice::from_ref(b));
            assert!(!piece.is_empty() || s.pending() > 0 || *b == 0xFF || bytes.is_empty());
            text.push_str(&piece);
        }
        text.push_str(&s.finish());
        assert_eq!(text, String::from_utf8_lossy(&bytes));
    }
}
