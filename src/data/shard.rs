//! Token shard files: NumPy `.npy` (uint16, as build-nanogpt's `fineweb.py` writes them with
//! `np.save`) and llm.c `.bin` token files (1024-byte header + uint16 tokens).
//!
//! Both hold a flat little-endian `u16` token stream. Every header field is validated against the
//! file size before any token is read, so a corrupt header fails with [`Error::Data`] instead of
//! reading past the end or allocating what it claims. Files are not memory-mapped: tokens are read
//! with positioned reads (`pread`) into the caller's buffer, so a shard rewritten or truncated by
//! another process while it is open (`np.save` over a shard in use) gives an [`Error::Data`]
//! ("changed size") instead of killing the process with `SIGBUS`.
//!
//! ```
//! use gpt2::data::{ShardFormat, TokenShard};
//! let dir = std::env::temp_dir().join(format!("gpt2-shard-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("demo_train_000000.npy");
//! gpt2::data::save_shard(&path, &[50256, 15496, 995], ShardFormat::Npy).unwrap();
//! let shard = TokenShard::open(&path).unwrap();
//! assert_eq!(shard.format(), Some(ShardFormat::Npy));
//! assert_eq!(shard.to_vec().unwrap(), vec![50256, 15496, 995]);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// First 6 bytes of every `.npy` file.
pub const NPY_MAGIC: &[u8; 6] = b"\x93NUMPY";
/// llm.c GPT-2 token file magic (`header[0]`).
pub const BIN_MAGIC: i32 = 20240520;
/// llm.c GPT-2 token file version (`header[1]`): uint16 tokens.
pub const BIN_VERSION: i32 = 1;
/// llm.c Llama-3 token file magic (uint32 tokens; recognised only to name it in the error).
const BIN_MAGIC_LLAMA3: i32 = 20240801;
/// Size of the llm.c header: 256 little-endian int32 values.
pub const BIN_HEADER_BYTES: usize = 256 * 4;
/// NumPy aligns the end of the header to this many bytes.
const NPY_ALIGN: usize = 64;
/// NumPy pads the header so the leading dimension can grow to this many digits in place.
const NPY_GROWTH_AXIS_MAX_DIGITS: usize = 21;

/// On-disk format of a token shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ShardFormat {
    /// NumPy `.npy` v1.0, dtype `<u2`, 1-D (build-nanogpt `fineweb.py`).
    #[default]
    Npy,
    /// llm.c `.bin`: 256 × int32 header (magic 20240520, version 1, token count) + uint16 tokens.
    Bin,
}

impl ShardFormat {
    /// File extension without the dot (`"npy"` / `"bin"`).
    pub fn extension(self) -> &'static str {
        match self {
            ShardFormat::Npy => "npy",
            ShardFormat::Bin => "bin",
        }
    }

    /// The format whose extension `path` has, if any.
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "npy" => Some(ShardFormat::Npy),
            "bin" => Some(ShardFormat::Bin),
            _ => None,
        }
    }
}

impl std::str::FromStr for ShardFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "npy" => Ok(ShardFormat::Npy),
            "bin" => Ok(ShardFormat::Bin),
            _ => Err(Error::arg("format", format!("unknown shard format `{s}` (expected `npy` or `bin`)"))),
        }
    }
}

impl std::fmt::Display for ShardFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.extension())
    }
}

enum Storage {
    /// An open shard file and its size when it was opened.
    File {
        file: File,
        size: u64,
    },
    Owned(Vec<u8>),
}

/// A read-only stream of `u16` tokens: a shard file (read with `pread`) or an in-memory buffer.
///
/// `Send + Sync`; reading tokens never allocates except in [`TokenShard::to_vec`].
pub struct TokenShard {
    path: PathBuf,
    format: Option<ShardFormat>,
    storage: Storage,
    /// Byte offset of the first token.
    offset: usize,
    len: usize,
}

impl std::fmt::Debug for TokenShard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenShard")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("len", &self.len)
            .finish()
    }
}

fn data_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Data { path: path.to_path_buf(), line: 0, reason: reason.into() }
}

impl TokenShard {
    /// Opens a shard file, detecting the format from its magic bytes (`\x93NUMPY` → `.npy`,
    /// int32 20240520 → llm.c `.bin`; otherwise the extension decides which parser reports the
    /// error). Only the header is read here (headers and sizes are validated before returning);
    /// tokens are read on demand with positioned reads. The path must be a regular file (a FIFO
    /// or device is refused, see [`crate::fsutil::open_regular`]).
    ///
    /// Errors: [`Error::NotFound`] / [`Error::Io`]; [`Error::Data`] for a bad magic, unsupported
    /// version or dtype, a shape that is not 1-D, a truncated header, or a token count that does
    /// not match the file size.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = crate::fsutil::open_regular(path)?;
        let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if size == 0 {
            return Err(data_err(path, "empty file (no shard header)"));
        }
        let total = usize::try_from(size).map_err(|_| data_err(path, "file too large for this platform"))?;
        let read = |n: usize| -> Result<Vec<u8>> {
            let mut buf = vec![0u8; n.min(total)];
            crate::fsutil::read_exact_at(&file, &mut buf, 0).map_err(|e| Error::io(path, e))?;
            Ok(buf)
        };
        // the header's own size, then the header (never more than the file holds)
        let first = read(12)?;
        let head_len = if first.starts_with(NPY_MAGIC) && first.len() >= 10 {
            match first[6] {
                1 => 10 + u16::from_le_bytes([first[8], first[9]]) as usize,
                _ if first.len() >= 12 => 12 + u32::from_le_bytes([first[8], first[9], first[10], first[11]]) as usize,
                _ => first.len(),
            }
        } else {
            BIN_HEADER_BYTES
        };
        let head = if head_len > total { first } else { read(head_len)? };
        let (format, offset, len) = parse_shard(path, &head, total)?;
        Ok(TokenShard {
            path: path.to_path_buf(),
            format: Some(format),
            storage: Storage::File { file, size },
            offset,
            len,
        })
    }

    /// A shard from the bytes of a `.npy` / `.bin` file held in memory, validated exactly as
    /// [`TokenShard::open`] validates a file (`name` is used in messages and, through its
    /// extension, to pick the parser that reports a bad magic).
    ///
    /// ```
    /// use gpt2::data::{shard::write_shard_to, ShardFormat, TokenShard};
    /// let mut bytes = Vec::new();
    /// write_shard_to(&mut bytes, &[7, 8, 9], ShardFormat::Bin).unwrap();
    /// let shard = TokenShard::from_bytes("mem.bin", bytes.clone()).unwrap();
    /// assert_eq!(shard.to_vec().unwrap(), vec![7, 8, 9]);
    /// bytes.pop();
    /// assert!(TokenShard::from_bytes("mem.bin", bytes).is_err());
    /// ```
    pub fn from_bytes(name: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self> {
        let path = name.into();
        if bytes.is_empty() {
            return Err(data_err(&path, "empty file (no shard header)"));
        }
        let (format, offset, len) = parse_shard(&path, &bytes, bytes.len())?;
        Ok(TokenShard { path, format: Some(format), storage: Storage::Owned(bytes), offset, len })
    }

    /// An in-memory shard holding `tokens` (each must fit in `u16`); `name` is only used in
    /// messages. Errors: [`Error::TokenOutOfVocab`] (vocab_size 65536) for a token ≥ 65536.
    pub fn from_tokens(name: impl Into<PathBuf>, tokens: &[u32]) -> Result<Self> {
        let mut bytes = Vec::with_capacity(tokens.len() * 2);
        for (position, &t) in tokens.iter().enumerate() {
            let t16 =
                u16::try_from(t).map_err(|_| Error::TokenOutOfVocab { token: t, position, vocab_size: 1 << 16 })?;
            bytes.extend_from_slice(&t16.to_le_bytes());
        }
        Ok(TokenShard { path: name.into(), format: None, storage: Storage::Owned(bytes), offset: 0, len: tokens.len() })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` when the shard holds no token.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// File path (or the name given to [`TokenShard::from_tokens`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// File format; `None` for an in-memory shard.
    pub fn format(&self) -> Option<ShardFormat> {
        self.format
    }

    /// Token `i`. Errors: [`Error::InvalidArgument`] past the end; as [`TokenShard::read_into`].
    pub fn get(&self, i: usize) -> Result<u32> {
        let mut t = [0u32];
        self.read_into(i, &mut t)?;
        Ok(t[0])
    }

    /// Copies tokens `start .. start + out.len()` into `out`.
    ///
    /// Errors: [`Error::InvalidArgument`] when the range runs past the end; for a file,
    /// [`Error::Data`] when the file no longer has the size it had when opened (rewritten or
    /// truncated in place by another process) or ends early, and [`Error::Io`] when reading fails.
    pub fn read_into(&self, start: usize, out: &mut [u32]) -> Result<()> {
        let end = start.checked_add(out.len()).filter(|&e| e <= self.len).ok_or_else(|| {
            Error::arg("start", format!("range {start}..+{} is past the end of {} tokens", out.len(), self.len))
        })?;
        let decode = |out: &mut [u32], src: &[u8]| {
            for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = u16::from_le_bytes([b[0], b[1]]) as u32;
            }
        };
        match &self.storage {
            Storage::Owned(bytes) => decode(out, &bytes[self.offset + 2 * start..self.offset + 2 * end]),
            Storage::File { file, size } => {
                let changed = |now: u64| {
                    data_err(
                        &self.path,
                        format!(
                            "the file changed size while in use ({size} bytes when opened, {now} now); was it \
                             rewritten in place? Shards must not change while training reads them"
                        ),
                    )
                };
                let now = file.metadata().map_err(|e| Error::io(&self.path, e))?.len();
                if now != *size {
                    return Err(changed(now));
                }
                const BLOCK: usize = 8192;
                let mut buf = [0u8; 2 * BLOCK];
                for (k, chunk) in out.chunks_mut(BLOCK).enumerate() {
                    let at = (self.offset + 2 * (start + k * BLOCK)) as u64;
                    let bytes = &mut buf[..2 * chunk.len()];
                    crate::fsutil::read_exact_at(file, bytes, at).map_err(|e| {
                        if e.kind() == std::io::ErrorKind::UnexpectedEof {
                            changed(file.metadata().map_or(0, |m| m.len()))
                        } else {
                            Error::io(&self.path, e)
                        }
                    })?;
                    decode(chunk, bytes);
                }
            }
        }
        Ok(())
    }

    /// All tokens (allocates `4 × len` bytes). Errors: as [`TokenShard::read_into`].
    pub fn to_vec(&self) -> Result<Vec<u32>> {
        let mut out = vec![0u32; self.len];
        self.read_into(0, &mut out)?;
        Ok(out)
    }
}

/// Detects the format of a shard from its first bytes `bytes` (the whole header, or the whole file
/// when shorter) and validates them against the file size `total`; returns (format, data offset,
/// tokens).
fn parse_shard(path: &Path, bytes: &[u8], total: usize) -> Result<(ShardFormat, usize, usize)> {
    let format = if bytes.starts_with(NPY_MAGIC) {
        ShardFormat::Npy
    } else if bytes.len() >= 4 && [BIN_MAGIC, BIN_MAGIC_LLAMA3].contains(&read_i32(bytes, 0)) {
        ShardFormat::Bin
    } else {
        match ShardFormat::from_path(path) {
            Some(f) => f,
            None => {
                return Err(data_err(
                    path,
                    "not a token shard: neither the NumPy magic \\x93NUMPY nor the llm.c magic 20240520",
                ))
            }
        }
    };
    let (offset, len) = match format {
        ShardFormat::Npy => parse_npy(bytes, total).map_err(|r| data_err(path, format!("invalid .npy shard: {r}")))?,
        ShardFormat::Bin => {
            parse_bin(bytes, total).map_err(|r| data_err(path, format!("invalid llm.c .bin shard: {r}")))?
        }
    };
    Ok((format, offset, len))
}

fn read_i32(bytes: &[u8], i: usize) -> i32 {
    i32::from_le_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]])
}

/// Validates an llm.c token file from its header `bytes` and size `total`; returns (data offset,
/// token count).
fn parse_bin(bytes: &[u8], total: usize) -> std::result::Result<(usize, usize), String> {
    if total < BIN_HEADER_BYTES || bytes.len() < BIN_HEADER_BYTES {
        return Err(format!("truncated header: the file has {total} bytes, the header alone needs {BIN_HEADER_BYTES}"));
    }
    let magic = read_i32(bytes, 0);
    if magic == BIN_MAGIC_LLAMA3 {
        return Err("Llama-3 token file (magic 20240801, uint32 tokens) is not supported; \
                    only GPT-2 token files (magic 20240520, uint16 tokens)"
            .into());
    }
    if magic != BIN_MAGIC {
        return Err(format!("bad magic {magic}, expected {BIN_MAGIC}"));
    }
    let version = read_i32(bytes, 1);
    if version != BIN_VERSION {
        return Err(format!("unsupported version {version}, expected {BIN_VERSION} (uint16 tokens)"));
    }
    let ntok = read_i32(bytes, 2);
    let ntok = usize::try_from(ntok).map_err(|_| format!("negative token count {ntok} in the header"))?;
    let have = total - BIN_HEADER_BYTES;
    if have != 2 * ntok {
        return Err(format!(
            "token count mismatch: the header says {ntok} tokens ({} bytes) but the file holds {have} bytes \
             after the header ({})",
            2 * ntok,
            if have < 2 * ntok { "truncated file" } else { "trailing bytes" }
        ));
    }
    Ok((BIN_HEADER_BYTES, ntok))
}

/// Validates a `.npy` file holding a 1-D `<u2` array from its first bytes `bytes` (at least the
/// whole header when the file holds it) and its size `total`; returns (data offset, token count).
fn parse_npy(bytes: &[u8], total: usize) -> std::result::Result<(usize, usize), String> {
    if !bytes.starts_with(NPY_MAGIC) {
        return Err("bad magic: a .npy file starts with \\x93NUMPY".into());
    }
    if bytes.len() < 10 {
        return Err(format!("truncated header: the file has only {total} bytes"));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_start, header_len) = match major {
        1 => (10, u16::from_le_bytes([bytes[8], bytes[9]]) as usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(format!("truncated header: the file has only {total} bytes"));
            }
            (12, u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize)
        }
        _ => return Err(format!("unsupported format version {major}.{minor} (expected 1.0, 2.0 or 3.0)")),
    };
    let data_start = header_start + header_len;
    if data_start > total || data_start > bytes.len() {
        return Err(format!(
            "truncated header: it claims {header_len} bytes but the file has only {} after the prefix",
            total - header_start
        ));
    }
    let text = std::str::from_utf8(&bytes[header_start..data_start])
        .map_err(|_| "the header dictionary is not valid text".to_string())?;
    let header = NpyHeader::parse(text)?;
    match header.descr.as_str() {
        "<u2" => {}
        ">u2" => return Err("dtype '>u2' (big-endian uint16) is not supported; token shards are '<u2'".into()),
        d => {
            return Err(format!(
                "dtype '{d}' is not supported: token shards must be uint16 ('<u2') as fineweb.py writes them \
                 (convert with `arr.astype(np.uint16)` after checking every id is < 65536)"
            ))
        }
    }
    if header.fortran_order {
        return Err("fortran_order True is not supported (np.save writes 1-D arrays with False)".into());
    }
    let n = match header.shape.as_slice() {
        [n] => *n,
        s => return Err(format!("shape {s:?} is not 1-D; a token shard is a flat array")),
    };
    let need = n.checked_mul(2).ok_or_else(|| format!("shape ({n},) overflows"))?;
    let have = total - data_start;
    if have != need {
        return Err(format!(
            "token count mismatch: the header says {n} tokens ({need} bytes) but the file holds {have} bytes \
             after the header ({})",
            if have < need { "truncated file" } else { "trailing bytes" }
        ));
    }
    Ok((data_start, n))
}

/// The three keys of a `.npy` header dictionary.
#[derive(Debug, PartialEq)]
struct NpyHeader {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// A Python literal as it appears in `.npy` headers.
#[derive(Debug)]
enum PyLit {
    Str(String),
    Bool(bool),
    Int(usize),
    Seq(Vec<PyLit>),
}

struct LitParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> LitParser<'a> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("malformed header dictionary: expected '{}' at byte {}", c as char, self.i))
        }
    }

    fn value(&mut self, depth: usize) -> std::result::Result<PyLit, String> {
        if depth > 8 {
            return Err("malformed header dictionary: nesting too deep".into());
        }
        match self.peek() {
            Some(q @ (b'\'' | b'"')) => {
                self.i += 1;
                let start = self.i;
                while self.i < self.s.len() && self.s[self.i] != q {
                    if self.s[self.i] == b'\\' {
                        return Err("malformed header dictionary: escapes in strings are not supported".into());
                    }
                    self.i += 1;
                }
                if self.i >= self.s.len() {
                    return Err("malformed header dictionary: unterminated string".into());
                }
                let v = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                self.i += 1;
                Ok(PyLit::Str(v))
            }
            Some(open @ (b'(' | b'[')) => {
                let close = if open == b'(' { b')' } else { b']' };
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    if self.peek() == Some(close) {
                        self.i += 1;
                        return Ok(PyLit::Seq(items));
                    }
                    items.push(self.value(depth + 1)?);
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(c) if c == close => {}
                        _ => return Err(format!("malformed header dictionary: bad sequence at byte {}", self.i)),
                    }
                }
            }
            Some(c) if c.is_ascii_digit() => {
                let start = self.i;
                while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                    self.i += 1;
                }
                let digits = std::str::from_utf8(&self.s[start..self.i]).expect("ascii digits");
                // Python 2 era files write longs as `123L`.
                if self.s.get(self.i) == Some(&b'L') {
                    self.i += 1;
                }
                digits.parse().map(PyLit::Int).map_err(|_| format!("dimension {digits} is too large"))
            }
            Some(_) => {
                for (word, v) in [("True", true), ("False", false)] {
                    if self.s[self.i..].starts_with(word.as_bytes()) {
                        self.i += word.len();
                        return Ok(PyLit::Bool(v));
                    }
                }
                Err(format!("malformed header dictionary: unexpected text at byte {}", self.i))
            }
            None => Err("malformed header dictionary: unexpected end".into()),
        }
    }
}

impl NpyHeader {
    fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut p = LitParser { s: text.as_bytes(), i: 0 };
        p.expect(b'{')?;
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        loop {
            if p.peek() == Some(b'}') {
                p.i += 1;
                break;
            }
            let key = match p.value(0)? {
                PyLit::Str(k) => k,
                other => return Err(format!("malformed header dictionary: key {other:?} is not a string")),
            };
            p.expect(b':')?;
            let v = p.value(0)?;
            let slot_taken = match key.as_str() {
                "descr" => descr.replace(v).is_some(),
                "fortran_order" => fortran.replace(v).is_some(),
                "shape" => shape.replace(v).is_some(),
                k => return Err(format!("unexpected key '{k}' in the header dictionary")),
            };
            if slot_taken {
                return Err(format!("duplicate key '{key}' in the header dictionary"));
            }
            match p.peek() {
                Some(b',') => p.i += 1,
                Some(b'}') => {}
                _ => return Err(format!("malformed header dictionary: expected ',' or '}}' at byte {}", p.i)),
            }
        }
        if p.peek().is_some() {
            return Err(format!("malformed header dictionary: trailing text at byte {}", p.i));
        }
        let descr = match descr {
            Some(PyLit::Str(d)) => d,
            Some(PyLit::Seq(_)) => return Err("structured dtypes are not supported; token shards are '<u2'".into()),
            Some(v) => return Err(format!("'descr' must be a string, found {v:?}")),
            None => return Err("the header dictionary has no 'descr'".into()),
        };
        let fortran_order = match fortran {
            Some(PyLit::Bool(b)) => b,
            Some(v) => return Err(format!("'fortran_order' must be True or False, found {v:?}")),
            None => return Err("the header dictionary has no 'fortran_order'".into()),
        };
        let shape = match shape {
            Some(PyLit::Seq(items)) => items
                .into_iter()
                .map(|d| match d {
                    PyLit::Int(n) => Ok(n),
                    v => Err(format!("'shape' must hold integers, found {v:?}")),
                })
                .collect::<std::result::Result<Vec<_>, _>>()?,
            Some(v) => return Err(format!("'shape' must be a tuple, found {v:?}")),
            None => return Err("the header dictionary has no 'shape'".into()),
        };
        Ok(NpyHeader { descr, fortran_order, shape })
    }
}

/// The `.npy` v1.0 header `np.save` writes for a 1-D `<u2` array of `n` elements (current NumPy
/// layout: sorted keys, growth-axis padding, total length a multiple of 64, ending in `\n`).
pub fn npy_header(n: usize) -> Vec<u8> {
    let mut dict = format!("{{'descr': '<u2', 'fortran_order': False, 'shape': ({n},), }}");
    let digits = n.to_string().len();
    dict.push_str(&" ".repeat(NPY_GROWTH_AXIS_MAX_DIGITS.saturating_sub(digits)));
    let hlen = dict.len() + 1;
    let padlen = NPY_ALIGN - ((8 + 2 + hlen) % NPY_ALIGN);
    let total = hlen + padlen;
    let mut out = Vec::with_capacity(10 + total);
    out.extend_from_slice(NPY_MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(total as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', padlen));
    out.push(b'\n');
    out
}

/// The llm.c header for `n` uint16 tokens: 256 int32 values `[20240520, 1, n, 0, …]`.
/// Errors: [`Error::InvalidArgument`] when `n ≥ 2³¹` (llm.c stores the count as int32).
pub fn bin_header(n: usize) -> Result<Vec<u8>> {
    let n =
        i32::try_from(n).map_err(|_| Error::arg("tokens", format!("{n} tokens do not fit an llm.c .bin (< 2^31)")))?;
    let mut out = vec![0u8; BIN_HEADER_BYTES];
    out[0..4].copy_from_slice(&BIN_MAGIC.to_le_bytes());
    out[4..8].copy_from_slice(&BIN_VERSION.to_le_bytes());
    out[8..12].copy_from_slice(&n.to_le_bytes());
    Ok(out)
}

/// Writes `tokens` in `format` to `w` (header, then little-endian `u16`s).
pub fn write_shard_to<W: Write>(w: &mut W, tokens: &[u16], format: ShardFormat) -> Result<()> {
    let header = match format {
        ShardFormat::Npy => npy_header(tokens.len()),
        ShardFormat::Bin => bin_header(tokens.len())?,
    };
    let io = |e| Error::io("<writer>", e);
    w.write_all(&header).map_err(io)?;
    let mut buf = Vec::with_capacity(2 * tokens.len().min(1 << 16));
    for chunk in tokens.chunks(1 << 16) {
        buf.clear();
        buf.extend(chunk.iter().flat_map(|t| t.to_le_bytes()));
        w.write_all(&buf).map_err(io)?;
    }
    Ok(())
}

/// Saves `tokens` as a shard file, atomically (temporary file + fsync + rename).
pub fn save_shard(path: impl AsRef<Path>, tokens: &[u16], format: ShardFormat) -> Result<()> {
    let path = path.as_ref();
    if format == ShardFormat::Bin {
        bin_header(tokens.len())?;
    }
    crate::fsutil::write_atomic(path, |w| {
        write_shard_to(w, tokens, format).map_err(|e| match e {
            Error::Io { source, .. } => source,
            other => std::io::Error::other(other.to_string()),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_literal_parser() {
        let h = NpyHeader::parse("{'descr': '<u2', 'fortran_order': False, 'shape': (12L,), }   \n").unwrap();
        assert_eq!(h, NpyHeader { descr: "<u2".into(), fortran_order: false, shape: vec![12] });
        let h = NpyHeader::parse("{\"shape\": (3, 4), \"fortran_order\": True, \"descr\": \"<f4\"}").unwrap();
        assert_eq!(h.shape, vec![3, 4]);
        assert!(h.fortran_order);
        assert!(NpyHeader::parse("{'descr': [('a', '<u2')], 'fortran_order': False, 'shape': (1,)}").is_err());
        assert!(NpyHeader::parse("{'descr': '<u2', 'fortran_order': False}").is_err());
        assert!(NpyHeader::parse("{'descr': '<u2', 'descr': '<u2', 'fortran_order': False, 'shape': ()}").is_err());
        assert!(NpyHeader::parse("{'descr': '<u2', 'fortran_order': Maybe, 'shape': ()}").is_err());
        assert!(
            NpyHeader::parse("{'descr': '<u2', 'fortran_order': False, 'shape': (99999999999999999999999,)}").is_err()
        );
        assert!(NpyHeader::parse(&"(".repeat(100)).is_err());
    }

    #[test]
    fn npy_header_is_aligned() {
        for n in [0, 5, 1 << 20, usize::MAX] {
            let h = npy_header(n);
            assert_eq!(h.len() % 64, 0);
            assert_eq!(*h.last().unwrap(), b'\n');
            let bytes = [h.clone(), vec![0; 2 * n.min(1 << 20)]].concat();
            let (off, len) = parse_npy(&bytes, bytes.len()).unwrap_or((0, 0));
            if n <= 1 << 20 {
                assert_eq!((off, len), (h.len(), n));
            }
        }
    }
}
