//! The crate's one error type.
//!
//! Every fallible public function returns [`Result<T>`]. Variants carry the
//! offending values so a message tells the user what to fix.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in this crate. Messages (`Display`) name the file, option or value
/// involved and, where there is one, the fix.
///
/// ```
/// use gpt2::{Error, Gpt2};
/// match Gpt2::load("/no/such/model") {
///     Err(Error::NotFound(path)) => assert_eq!(path, std::path::Path::new("/no/such/model")),
///     other => panic!("{other:?}"),
/// }
/// let err = gpt2::Config::from_json_str(r#"{"n_embd": 10, "n_head": 3}"#, "config.json").unwrap_err();
/// assert!(matches!(err, Error::InvalidConfig(_)));
/// assert_eq!(err.to_string(), "invalid config: n_embd (10) must be divisible by n_head (3)");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on `path` failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A file or directory that must exist does not.
    #[error("not found: {0}")]
    NotFound(PathBuf),

    /// A model named by a hub id (or the default model) is neither a local path nor in the
    /// local Hugging Face cache; `reason` says what was looked at and how to get it.
    #[error("model `{name}` not found: {reason}")]
    ModelNotFound {
        /// The id or name asked for.
        name: String,
        /// What was tried and how to get the model.
        reason: String,
    },

    /// A checkpoint exists but in a format this crate does not read (e.g. only a pickled
    /// `pytorch_model.bin`); `reason` says how to convert it.
    #[error("unsupported checkpoint {path}: {reason}")]
    UnsupportedCheckpoint {
        /// The file or directory involved.
        path: PathBuf,
        /// What it holds and how to convert it.
        reason: String,
    },

    /// A safetensors file could not be parsed (truncated, corrupt header, bad offsets).
    #[error("invalid safetensors file {path}: {reason}")]
    Safetensors {
        /// File involved.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A `config.json` (or other JSON document) could not be parsed.
    #[error("invalid JSON in {path}: {reason}")]
    Json {
        /// File involved (or `<string>`).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A model configuration is inconsistent.
    #[error("invalid config: {0}")]
    InvalidConfig(String),

    /// A tensor required by the model is absent from the checkpoint.
    #[error("missing tensor `{0}` in checkpoint")]
    MissingTensor(String),

    /// A tensor has the wrong shape.
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// Tensor name.
        name: String,
        /// Shape the model needs.
        expected: Vec<usize>,
        /// Shape found.
        found: Vec<usize>,
    },

    /// A tensor is stored with a dtype this crate does not read.
    #[error("tensor `{name}` has unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// Tensor name.
        name: String,
        /// The dtype found.
        dtype: String,
    },

    /// Input token sequence is empty.
    #[error("empty input: {0}")]
    EmptyInput(String),

    /// A token id is not in the vocabulary.
    #[error("token id {token} at position {position} is out of vocabulary (vocab_size = {vocab_size})")]
    TokenOutOfVocab {
        /// Offending token.
        token: u32,
        /// Flat position in the input.
        position: usize,
        /// Model vocabulary size.
        vocab_size: usize,
    },

    /// Input is longer than the model's context.
    #[error("sequence length {len} exceeds the model's context n_positions = {n_positions}")]
    SequenceTooLong {
        /// Requested length (including any cached positions).
        len: usize,
        /// The model's maximum.
        n_positions: usize,
    },

    /// Array shapes passed to a function do not agree.
    #[error("shape error: {0}")]
    Shape(String),

    /// Byte sequence produced by decoding is not valid UTF-8.
    #[error("decoded bytes are not valid UTF-8 (valid up to byte {valid_up_to})")]
    InvalidUtf8 {
        /// Length of the longest valid prefix.
        valid_up_to: usize,
    },

    /// A caller-supplied option is out of its valid range.
    #[error("invalid argument `{name}`: {reason}")]
    InvalidArgument {
        /// Option name.
        name: &'static str,
        /// Why it is invalid.
        reason: String,
    },

    /// A data file (JSONL, token shard) is malformed.
    #[error("malformed data in {path} (line {line}): {reason}")]
    Data {
        /// File involved.
        path: PathBuf,
        /// 1-based line or record number (0 when not applicable).
        line: usize,
        /// What is wrong.
        reason: String,
    },

    /// A computation produced a non-finite value: a loss or gradient in training, the logits
    /// scored by evaluation or sampled by generation (e.g. NaN weights).
    #[error("non-finite value at step {step}: {what}")]
    NonFinite {
        /// Optimizer step (training), decode step (generation; 0 = the prefill's logits), or 0
        /// (evaluation).
        step: usize,
        /// Which quantity, and where (sequence, position, token).
        what: String,
    },

    /// The ranks of a data-parallel group disagree (parameters, settings, step counts), or a
    /// collective operation failed.
    #[error("data-parallel group: {0}")]
    Collective(String),

    /// A buffer sized from user input cannot be allocated: its size overflows, exceeds the
    /// memory this machine has available, or the allocator refused it.
    #[error("cannot allocate {bytes} bytes for {what}: {reason}")]
    OutOfMemory {
        /// What the buffer is for.
        what: String,
        /// Bytes requested (saturated at `u128::MAX` when the size itself overflows).
        bytes: u128,
        /// Why it failed.
        reason: String,
    },

    /// The requested compute device is unavailable.
    #[error("device error: {0}")]
    Device(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            return Error::NotFound(path.into());
        }
        Error::Io { path: path.into(), source }
    }

    /// Builds an [`Error::InvalidArgument`].
    pub(crate) fn arg(name: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument { name, reason: reason.into() }
    }
}
