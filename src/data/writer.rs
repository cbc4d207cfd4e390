//! Tokenizes text files and JSONL into token shards (`.npy` or llm.c `.bin`).
//!
//! The layout follows build-nanogpt's `fineweb.py`: every document is preceded by the
//! end-of-text token (50256), documents are concatenated, and the stream is cut into shards of
//! exactly `shard_size` tokens (a document may straddle two shards; the last shard holds the
//! remainder). Each shard is written atomically. Progress is reported through a callback so the
//! library stays free of terminal output.
//!
//! Inputs: a file ending in `.jsonl` / `.ndjson` holds one JSON object per line, whose string
//! field `text` (configurable) is one document; blank lines are skipped. Any other file is UTF-8
//! text and is one document. Text files are read in blocks of about
//! [`WriterOptions::text_chunk_bytes`] and cut only between a non-whitespace and a whitespace
//! character ([`read_text_blocks`]; `\n` and `\r\n` line ends alike), where GPT-2's
//! pre-tokenizer always splits — so the tokens are identical to encoding the whole file at once,
//! with bounded memory.
//!
//! ```
//! use gpt2::data::{ShardFormat, ShardWriter, TokenShard, WriterOptions};
//! let dir = std::env::temp_dir().join(format!("gpt2-writer-doc-{}", std::process::id()));
//! let mut opts = WriterOptions::new(&dir);
//! opts.shard_size = 4;
//! let mut w = ShardWriter::new(opts).unwrap();
//! w.push_document(&[1, 2, 3]).unwrap();
//! w.push_document(&[4]).unwrap();
//! let summary = w.finish().unwrap();
//! let tokens: Vec<Vec<u32>> = summary.shards.iter().map(|s| TokenShard::open(&s.path).unwrap().to_vec().unwrap()).collect();
//! assert_eq!(tokens, vec![vec![50256, 1, 2, 3], vec![50256, 4]]);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::shard::{save_shard, ShardFormat};
use crate::error::{Error, Result};
use crate::tokenizer::{safe_cut, Tokenizer, EOT};

/// How shard files are named: `{prefix}_{split}_{index:06}.{ext}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitNaming {
    /// Every shard gets this split name (e.g. `"train"`, `"val"`); indices start at 0.
    Split(String),
    /// fineweb.py's convention: shard 0 is `val`, every later shard is `train`.
    FirstShardVal,
}

/// Options of a [`ShardWriter`].
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Output directory (created if missing).
    pub out_dir: PathBuf,
    /// File-name prefix (default `"shard"`).
    pub prefix: String,
    /// Tokens per shard (default 100 000 000, as fineweb.py); the last shard holds the rest.
    pub shard_size: usize,
    /// File format (default `.npy`).
    pub format: ShardFormat,
    /// Split naming (default `Split("train")`).
    pub naming: SplitNaming,
    /// Token written before each document (default `Some(50256)`, GPT-2's `<|endoftext|>`).
    pub eot: Option<u32>,
    /// JSONL field holding the document text (default `"text"`).
    pub text_field: String,
    /// Target block size when reading text files (default 1 MiB).
    pub text_chunk_bytes: usize,
}

impl WriterOptions {
    /// Defaults for writing into `out_dir`.
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        WriterOptions {
            out_dir: out_dir.into(),
            prefix: "shard".into(),
            shard_size: 100_000_000,
            format: ShardFormat::Npy,
            naming: SplitNaming::Split("train".into()),
            eot: Some(EOT),
            text_field: "text".into(),
            text_chunk_bytes: 1 << 20,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad_name = |s: &str| s.is_empty() || s.contains(['/', '\\', '\0']) || s.starts_with('.');
        if bad_name(&self.prefix) {
            return Err(Error::arg("prefix", format!("`{}` is not a plain file-name prefix", self.prefix)));
        }
        if let SplitNaming::Split(s) = &self.naming {
            if bad_name(s) {
                return Err(Error::arg("split", format!("`{s}` is not a plain split name")));
            }
        }
        if self.shard_size == 0 {
            return Err(Error::arg("shard_size", "must be at least 1 token"));
        }
        if self.format == ShardFormat::Bin && self.shard_size > i32::MAX as usize {
            return Err(Error::arg("shard_size", "an llm.c .bin shard holds fewer than 2^31 tokens"));
        }
        if let Some(e) = self.eot {
            if e > u16::MAX as u32 {
                return Err(Error::arg("eot", format!("token {e} does not fit in uint16")));
            }
        }
        if self.text_chunk_bytes == 0 {
            return Err(Error::arg("text_chunk_bytes", "must be positive"));
        }
        Ok(())
    }

    fn split_for(&self, index: usize) -> &str {
        match &self.naming {
            SplitNaming::Split(s) => s,
            SplitNaming::FirstShardVal if index == 0 => "val",
            SplitNaming::FirstShardVal => "train",
        }
    }

    /// The path of shard `index`.
    pub fn shard_path(&self, index: usize) -> PathBuf {
        let split = self.split_for(index);
        self.out_dir.join(format!("{}_{split}_{index:06}.{}", self.prefix, self.format.extension()))
    }
}

/// One shard written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShardInfo {
    /// File written.
    pub path: PathBuf,
    /// Split name in the file name.
    pub split: String,
    /// Tokens in the file.
    pub tokens: usize,
}

/// What a writer produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WriteSummary {
    /// Shards in order.
    pub shards: Vec<ShardInfo>,
    /// Documents written.
    pub documents: usize,
    /// Tokens written (EOT separators included).
    pub tokens: u64,
}

/// Progress of [`write_shards`], passed to its callback.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WriteProgress {
    /// Input bytes consumed so far (all files).
    pub bytes_done: u64,
    /// Total input bytes (all files).
    pub bytes_total: u64,
    /// Documents written so far.
    pub documents: usize,
    /// Tokens written so far.
    pub tokens: u64,
    /// Shard files finished so far.
    pub shards: usize,
}

/// Streams documents into fixed-size shards. Call [`ShardWriter::finish`] to write the last
/// (partial) shard; dropping the writer without it loses the buffered tokens.
#[derive(Debug)]
pub struct ShardWriter {
    opts: WriterOptions,
    buf: Vec<u16>,
    shards: Vec<ShardInfo>,
    documents: usize,
    tokens: u64,
}

impl ShardWriter {
    /// Creates the output directory (and removes temporary shard files that killed writers left
    /// there). Errors: [`Error::InvalidArgument`] for bad options or
    /// when the directory already holds shards with this prefix and split (they would mix with
    /// the new ones when loading; remove them or choose another prefix); [`Error::Io`].
    pub fn new(opts: WriterOptions) -> Result<Self> {
        opts.validate()?;
        std::fs::create_dir_all(&opts.out_dir).map_err(|e| Error::io(&opts.out_dir, e))?;
        // Temp files of shard writes killed mid-way (hidden, never listed as shards).
        crate::fsutil::remove_stale_temps(&opts.out_dir, |t| ShardFormat::from_path(Path::new(t)).is_some());
        let splits: Vec<&str> = match &opts.naming {
            SplitNaming::Split(s) => vec![s.as_str()],
            SplitNaming::FirstShardVal => vec!["val", "train"],
        };
        let starts: Vec<String> = splits.iter().map(|s| format!("{}_{s}_", opts.prefix)).collect();
        for entry in std::fs::read_dir(&opts.out_dir).map_err(|e| Error::io(&opts.out_dir, e))? {
            let path = entry.map_err(|e| Error::io(&opts.out_dir, e))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if let Some(start) = starts.iter().find(|s| name.starts_with(s.as_str())) {
                if ShardFormat::from_path(&path).is_some() {
                    return Err(Error::arg(
                        "out_dir",
                        format!(
                            "{} already holds shards named `{start}*` (e.g. {name}); remove them or use another prefix",
                            opts.out_dir.display()
                        ),
                    ));
                }
            }
        }
        let cap = opts.shard_size.min(1 << 20);
        Ok(ShardWriter { opts, buf: Vec::with_capacity(cap), shards: Vec::new(), documents: 0, tokens: 0 })
    }

    /// Starts a new document: writes the EOT token (if configured), then `tokens`.
    /// Errors: [`Error::TokenOutOfVocab`] (vocab_size 65536) for a token that does not fit
    /// uint16 — nothing of the document is written then; I/O errors of finished shards.
    pub fn push_document(&mut self, tokens: &[u32]) -> Result<()> {
        check_u16(tokens)?;
        if let Some(e) = self.opts.eot {
            self.push_unchecked(&[e])?;
        }
        self.push_unchecked(tokens)?;
        self.documents += 1;
        Ok(())
    }

    /// Appends tokens to the current document (no EOT). Errors as [`ShardWriter::push_document`].
    pub fn push_tokens(&mut self, tokens: &[u32]) -> Result<()> {
        check_u16(tokens)?;
        self.push_unchecked(tokens)
    }

    fn push_unchecked(&mut self, mut tokens: &[u32]) -> Result<()> {
        while !tokens.is_empty() {
            let room = self.opts.shard_size - self.buf.len();
            let (now, rest) = tokens.split_at(room.min(tokens.len()));
            self.buf.extend(now.iter().map(|&t| t as u16));
            self.tokens += now.len() as u64;
            tokens = rest;
            if self.buf.len() == self.opts.shard_size {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let index = self.shards.len();
        let path = self.opts.shard_path(index);
        save_shard(&path, &self.buf, self.opts.format)?;
        self.shards.push(ShardInfo { path, split: self.opts.split_for(index).to_string(), tokens: self.buf.len() });
        self.buf.clear();
        Ok(())
    }

    /// Documents started so far.
    pub fn documents(&self) -> usize {
        self.documents
    }

    /// Tokens accepted so far (buffered or written).
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Shards finished so far.
    pub fn shards(&self) -> &[ShardInfo] {
        &self.shards
    }

    /// Writes the last partial shard (if any tokens are buffered) and returns the summary.
    pub fn finish(mut self) -> Result<WriteSummary> {
        if !self.buf.is_empty() {
            self.flush()?;
        }
        Ok(WriteSummary { shards: self.shards, documents: self.documents, tokens: self.tokens })
    }
}

fn check_u16(tokens: &[u32]) -> Result<()> {
    match tokens.iter().position(|&t| t > u16::MAX as u32) {
        Some(position) => Err(Error::TokenOutOfVocab { token: tokens[position], position, vocab_size: 1 << 16 }),
        None => Ok(()),
    }
}

/// A piece of a document's tokens, as produced while reading an input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocPiece<'a> {
    /// The first tokens of a new document.
    Start(&'a [u32]),
    /// More tokens of the current document.
    More(&'a [u32]),
}

/// `true` for a JSONL input (by extension).
pub fn is_jsonl(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("jsonl" | "ndjson"))
}

/// Tokenizes one input file (text: one document; JSONL: one document per line) and passes the
/// tokens, in order, to `sink`; `bytes` is called with the number of input bytes consumed after
/// each piece. Errors: [`Error::Data`] (with the 1-based line) for invalid UTF-8, invalid JSON,
/// or a JSONL record without a string `text_field`; I/O errors; whatever `sink` returns.
pub fn tokenize_file(
    path: &Path,
    tokenizer: &Tokenizer,
    text_field: &str,
    chunk_bytes: usize,
    sink: &mut dyn FnMut(DocPiece<'_>) -> Result<()>,
    bytes: &mut dyn FnMut(u64),
) -> Result<()> {
    let file = crate::fsutil::open_regular(path)?;
    if is_jsonl(path) {
        tokenize_jsonl(path, BufReader::with_capacity(1 << 20, file), tokenizer, text_field, sink, bytes)
    } else {
        tokenize_text(path, file, tokenizer, chunk_bytes.max(1), sink, bytes)
    }
}

fn tokenize_jsonl(
    path: &Path,
    mut r: impl BufRead,
    tokenizer: &Tokenizer,
    field: &str,
    sink: &mut dyn FnMut(DocPiece<'_>) -> Result<()>,
    bytes: &mut dyn FnMut(u64),
) -> Result<()> {
    let mut line = Vec::new();
    let mut lineno = 0usize;
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok(());
        }
        lineno += 1;
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            bytes(n as u64);
            continue;
        }
        let data = |reason: String| Error::Data { path: path.to_path_buf(), line: lineno, reason };
        let v: serde_json::Value = serde_json::from_slice(&line).map_err(|e| data(format!("invalid JSON: {e}")))?;
        let text = match v.get(field) {
            Some(serde_json::Value::String(s)) => s,
            Some(other) => return Err(data(format!("field \"{field}\" is not a string (found {other})"))),
            None => return Err(data(format!("record has no \"{field}\" field"))),
        };
        sink(DocPiece::Start(&tokenizer.encode(text)))?;
        bytes(n as u64);
    }
}

fn tokenize_text(
    path: &Path,
    file: File,
    tokenizer: &Tokenizer,
    chunk_bytes: usize,
    sink: &mut dyn FnMut(DocPiece<'_>) -> Result<()>,
    bytes: &mut dyn FnMut(u64),
) -> Result<()> {
    let mut first = true;
    let mut ids = Vec::new();
    read_text_blocks(path, file, chunk_bytes, &mut |text| {
        ids.clear();
        tokenizer.encode_into(text, &mut ids);
        // An empty file is still one (empty) document, as fineweb.py writes for "".
        if first {
            sink(DocPiece::Start(&ids))?;
            first = false;
        } else if !ids.is_empty() {
            sink(DocPiece::More(&ids))?;
        }
        bytes(text.len() as u64);
        Ok(())
    })
}

/// Reads UTF-8 text from `reader` in blocks of about `chunk_bytes`, cut only where GPT-2's
/// pre-tokenizer always splits ([`safe_cut`]: between a non-whitespace and a whitespace
/// character, so `\r\n` line ends cut as well as `\n`), and calls `block` with each block in
/// order (at least once: an empty input gives one empty block). Encoding each block and
/// concatenating the ids gives the ids of the whole text, with memory bounded by the block size
/// — or by the longest stretch without a cut point (one huge "word" or whitespace run).
///
/// Errors: [`Error::Data`] with the 1-based line for invalid UTF-8 (`path` labels errors), I/O
/// errors, and whatever `block` returns.
///
/// ```
/// use gpt2::data::writer::read_text_blocks;
/// let text = "one line\r\nanother line\r\n".repeat(100);
/// let mut blocks = Vec::new();
/// read_text_blocks("mem.txt".as_ref(), text.as_bytes(), 64, &mut |b| Ok(blocks.push(b.to_string()))).unwrap();
/// assert!(blocks.len() > 10);
/// assert_eq!(blocks.concat(), text);
/// let tok = gpt2::Tokenizer::gpt2().unwrap();
/// let ids: Vec<u32> = blocks.iter().flat_map(|b| tok.encode(b)).collect();
/// assert_eq!(ids, tok.encode(&text));
/// ```
pub fn read_text_blocks(
    path: &Path,
    mut reader: impl Read,
    chunk_bytes: usize,
    block: &mut dyn FnMut(&str) -> Result<()>,
) -> Result<()> {
    let chunk_bytes = chunk_bytes.max(1);
    let mut pending: Vec<u8> = Vec::new();
    let mut lines_before = 0usize; // newlines in the text already passed on (for error lines)
    let mut searched = 0usize; // leading bytes of `pending` known to hold no cut point
    let mut eof = false;
    let mut emitted = false;
    while !eof || !pending.is_empty() || !emitted {
        if !eof {
            let start = pending.len();
            pending.resize(start + chunk_bytes, 0);
            let mut got = 0;
            while got < chunk_bytes {
                let n = match reader.read(&mut pending[start + got..]) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::io(path, e)),
                };
                if n == 0 {
                    eof = true;
                    break;
                }
                got += n;
            }
            pending.truncate(start + got);
        }
        // the longest valid UTF-8 prefix (a character cut by the block end waits for the next read)
        let valid = match std::str::from_utf8(&pending) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_none() && !eof => e.valid_up_to(),
            Err(e) => {
                let line = lines_before + 1 + pending[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count();
                return Err(Error::Data {
                    path: path.to_path_buf(),
                    line,
                    reason: format!("invalid UTF-8 (text inputs must be UTF-8): {e}"),
                });
            }
        };
        let text = std::str::from_utf8(&pending[..valid]).unwrap_or_default();
        let cut = if eof {
            valid
        } else {
            // only the part not searched before (plus one character of overlap) can hold a new cut
            match safe_cut(text, valid - searched.min(valid) + 4) {
                Some(p) => p,
                None => {
                    searched = valid; // keep reading: one very long word or whitespace run
                    continue;
                }
            }
        };
        block(&text[..cut])?;
        emitted = true;
        lines_before += text.as_bytes()[..cut].iter().filter(|&&b| b == b'\n').count();
        pending.drain(..cut);
        searched = 0;
    }
    Ok(())
}

/// Tokenizes `inputs` (in order) with `tokenizer` and writes shards as `opts` says, calling
/// `progress` as input is consumed. Returns what was written.
///
/// Errors: [`Error::EmptyInput`] for no input; see [`ShardWriter::new`] and [`tokenize_file`].
pub fn write_shards<P: AsRef<Path>>(
    inputs: &[P],
    tokenizer: &Tokenizer,
    opts: WriterOptions,
    progress: &mut dyn FnMut(&WriteProgress),
) -> Result<WriteSummary> {
    if inputs.is_empty() {
        return Err(Error::EmptyInput("no input files to tokenize".into()));
    }
    let mut state = WriteProgress::default();
    for p in inputs {
        let p = p.as_ref();
        state.bytes_total += std::fs::metadata(p).map_err(|e| Error::io(p, e))?.len();
    }
    let (field, chunk) = (opts.text_field.clone(), opts.text_chunk_bytes);
    let mut writer = ShardWriter::new(opts)?;
    progress(&state);
    for path in inputs {
        let path = path.as_ref();
        let mut done = 0u64;
        let mut sink = |piece: DocPiece<'_>| match piece {
            DocPiece::Start(t) => writer.push_document(t),
            DocPiece::More(t) => writer.push_tokens(t),
        };
        let mut on_bytes = |n: u64| done += n;
        tokenize_file(path, tokenizer, &field, chunk, &mut sink, &mut on_bytes)?;
        state.bytes_done += done;
        state.documents = writer.documents();
        state.tokens = writer.tokens();
        state.shards = writer.shards().len();
        progress(&state);
    }
    let summary = writer.finish()?;
    state.shards = summary.shards.len();
    progress(&state);
    Ok(summary)
}

/// Tokenizes `path` (text or JSONL, as [`write_shards`] reads it) into one token stream with an
/// EOT before each document (when `eot` is `Some`).
pub fn tokenize_to_vec(path: &Path, tokenizer: &Tokenizer, eot: Option<u32>) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    let mut sink = |piece: DocPiece<'_>| {
        match piece {
            DocPiece::Start(t) => {
                out.extend(eot);
                out.extend_from_slice(t);
            }
            DocPiece::More(t) => out.extend_from_slice(t),
        }
        Ok(())
    };
    tokenize_file(path, tokenizer, "text", 1 << 20, &mut sink, &mut |_| {})?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(text: &[u8], chunk: usize) -> Result<Vec<String>> {
        let mut out = Vec::new();
        read_text_blocks(Path::new("t.txt"), text, chunk, &mut |b| {
            out.push(b.to_string());
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn text_blocks_cut_before_whitespace_only() {
        assert_eq!(blocks(b"ab\ncd", 3).unwrap(), ["ab", "\ncd"]);
        assert_eq!(blocks(b"ab\r\ncd\r\nef", 4).unwrap(), ["ab", "\r\ncd", "\r\nef"]);
        assert_eq!(blocks(b"", 4).unwrap(), [""]);
        // no cut point: one block
        assert_eq!(blocks(b"abcdefgh", 2).unwrap(), ["abcdefgh"]);
        // a multi-byte character split by the block size waits for its other bytes
        assert_eq!(blocks("é é é".as_bytes(), 1).unwrap().concat(), "é é é");
        let e = blocks(b"ok\nline\n\xff", 4).unwrap_err();
        assert!(matches!(e, Error::Data { line: 3, .. }), "{e}");
        let e = blocks(b"ok \xe9", 64).unwrap_err();
        assert!(matches!(e, Error::Data { line: 1, .. }), "{e}");
    }
}
