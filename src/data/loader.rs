//! Training batches `(x, y)` of `[B, T]` token ids from token shards.
//!
//! The walk follows build-nanogpt's `DataLoaderLite` and llm.c's `DataLoader`: shards are visited
//! in order; inside a shard the tokens are cut into *global windows* of `B·T·W` tokens
//! (`W` = world size), and rank `r` reads the `B·T + 1` tokens starting at
//! `window·B·T·W + r·B·T` — so ranks read disjoint tokens, and `y` is `x` shifted by one.
//! A shard of `n` tokens has `⌊(n − 1) / (B·T·W)⌋` windows (the tail is skipped); after the last
//! shard a new epoch starts at the first.
//!
//! With a shuffle seed, each epoch visits the shards in a seeded random order and the windows of
//! each shard in a seeded random order (the same on every rank, so ranks stay disjoint).
//! Everything depends only on the seed and the position, so a [`LoaderPosition`] — epoch, shard
//! cursor, window cursor — stored in a checkpoint resumes the exact batch sequence.
//!
//! ```
//! use gpt2::data::{BatchSource, DataLoader, LoaderConfig, TokenShard};
//! let tokens: Vec<u32> = (0..100).collect();
//! let shard = TokenShard::from_tokens("demo", &tokens).unwrap();
//! let mut loader = DataLoader::new(vec![shard], LoaderConfig::new(2, 4)).unwrap();
//! let (x, y) = loader.next_batch().unwrap();
//! assert_eq!(x.row(0).to_vec(), vec![0, 1, 2, 3]);
//! assert_eq!(y.row(1).to_vec(), vec![5, 6, 7, 8]);
//! let saved = loader.state();
//! let next = loader.next_batch().unwrap();
//! loader.restore(saved).unwrap();
//! assert_eq!(loader.next_batch().unwrap(), next);
//! ```

use std::path::{Path, PathBuf};

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use super::shard::{ShardFormat, TokenShard, BIN_MAGIC, NPY_MAGIC};
use super::writer::tokenize_to_vec;
use super::BatchSource;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tokenizer::{Tokenizer, EOT};

/// Which part of a shard directory to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training shards (`*_train_*`).
    Train,
    /// Validation shards (`*_val_*`; also `valid` / `validation`).
    Val,
}

impl Split {
    /// `"train"` / `"val"`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }

    fn matches(self, word: &str) -> bool {
        match self {
            Split::Train => word == "train",
            Split::Val => matches!(word, "val" | "valid" | "validation"),
        }
    }
}

/// The `.npy` / `.bin` shard files of `split` in `dir`, sorted by file name.
///
/// A file belongs to a split when its name, cut at `_`, `-` and `.`, contains the word `train`
/// (train) or `val` / `valid` / `validation` (val) — fineweb.py's `edufineweb_val_000000.npy`,
/// llm.c's `tiny_shakespeare_train.bin`. When no shard in `dir` is marked either way, the first
/// shard (by name) is val and the others are train (fineweb.py's "first shard = val").
/// Hidden files (temporary files of an unfinished write) are ignored.
///
/// Errors: [`Error::NotFound`] / [`Error::Io`]; [`Error::Data`] when the split has no shard.
pub fn list_shards(dir: &Path, split: Split) -> Result<Vec<PathBuf>> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !name.starts_with('.') && ShardFormat::from_path(&path).is_some() && path.is_file() {
            all.push((name, path));
        }
    }
    all.sort();
    let words = |name: &str| name.split(['_', '-', '.']).map(str::to_ascii_lowercase).collect::<Vec<_>>();
    let marked = |name: &str, s: Split| words(name).iter().any(|w| s.matches(w));
    let any_marked = all.iter().any(|(n, _)| marked(n, Split::Train) || marked(n, Split::Val));
    let picked: Vec<PathBuf> = if any_marked {
        all.into_iter().filter(|(n, _)| marked(n, split)).map(|(_, p)| p).collect()
    } else {
        let skip = usize::from(split == Split::Train);
        let take = if split == Split::Val { 1 } else { usize::MAX };
        all.into_iter().skip(skip).take(take).map(|(_, p)| p).collect()
    };
    if picked.is_empty() {
        return Err(Error::Data {
            path: dir.to_path_buf(),
            line: 0,
            reason: format!("no `{}` token shards (*.npy / *.bin) in this directory", split.name()),
        });
    }
    Ok(picked)
}

/// Batch geometry, data-parallel rank and shuffling of a [`DataLoader`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderConfig {
    /// Rows per batch (B).
    pub batch_size: usize,
    /// Tokens per row (T).
    pub seq_len: usize,
    /// This process's data-parallel rank (0-based).
    pub rank: usize,
    /// Number of data-parallel ranks (1 = no sharding).
    pub world_size: usize,
    /// Seed of the per-epoch shuffle of shard and window order; `None` reads in file order.
    pub shuffle_seed: Option<u64>,
    /// When set, every batch token must be below it ([`Error::TokenOutOfVocab`] otherwise).
    pub vocab_size: Option<usize>,
}

impl LoaderConfig {
    /// `B × T` batches, rank 0 of 1, no shuffle, no vocabulary check.
    pub fn new(batch_size: usize, seq_len: usize) -> Self {
        LoaderConfig { batch_size, seq_len, rank: 0, world_size: 1, shuffle_seed: None, vocab_size: None }
    }

    /// Reads the part of rank `rank` among `world_size` ranks.
    pub fn with_rank(mut self, rank: usize, world_size: usize) -> Self {
        self.rank = rank;
        self.world_size = world_size;
        self
    }

    /// Shuffles shard and window order each epoch with `seed`.
    pub fn with_shuffle(mut self, seed: u64) -> Self {
        self.shuffle_seed = Some(seed);
        self
    }

    /// Checks every token against `vocab_size`.
    pub fn with_vocab_size(mut self, vocab_size: usize) -> Self {
        self.vocab_size = Some(vocab_size);
        self
    }

    fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::arg("batch_size", "must be at least 1"));
        }
        if self.seq_len == 0 {
            return Err(Error::arg("seq_len", "must be at least 1"));
        }
        if self.world_size == 0 {
            return Err(Error::arg("world_size", "must be at least 1"));
        }
        if self.rank >= self.world_size {
            return Err(Error::arg("rank", format!("rank {} is not below world_size {}", self.rank, self.world_size)));
        }
        if self.batch_size.checked_mul(self.seq_len).and_then(|x| x.checked_mul(self.world_size)).is_none() {
            return Err(Error::arg("batch_size", "batch_size × seq_len × world_size overflows"));
        }
        Ok(())
    }

    /// Tokens of one rank's batch (`B·T`).
    pub fn tokens_per_batch(&self) -> usize {
        self.batch_size * self.seq_len
    }
}

/// Where a [`DataLoader`] is: the next batch comes from window cursor `window` of the shard at
/// cursor `shard` of epoch `epoch`'s shard order (cursors index the shuffled orders when
/// shuffling, the file orders otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct LoaderPosition {
    /// Completed passes over the data.
    pub epoch: u64,
    /// Cursor into this epoch's shard order.
    pub shard: usize,
    /// Cursor into the current shard's window order.
    pub window: usize,
}

/// What [`BatchSource::state`] stores: the position plus what it is only valid for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SavedState {
    kind: String,
    position: LoaderPosition,
    batch_size: usize,
    seq_len: usize,
    rank: usize,
    world_size: usize,
    shuffle_seed: Option<u64>,
    shard_tokens: Vec<usize>,
}

const STATE_KIND: &str = "gpt2.data.DataLoader/1";

/// Sequential (optionally shuffled) `[B, T]` batches over token shards; see the module docs.
#[derive(Debug)]
pub struct DataLoader {
    shards: Vec<TokenShard>,
    cfg: LoaderConfig,
    /// Global windows per shard (file order).
    windows: Vec<usize>,
    pos: LoaderPosition,
    /// Shard order of `pos.epoch` (identity without shuffle).
    shard_order: Vec<usize>,
    /// Window order of `(epoch, shard)` when shuffling.
    window_order: Option<((u64, usize), Vec<usize>)>,
    buf: Vec<u32>,
}

fn permutation(n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
    v
}

impl DataLoader {
    /// A loader over `shards` (read in the given order).
    ///
    /// Errors: [`Error::InvalidArgument`] for a zero size, `rank ≥ world_size`, no shard, or
    /// shards too small for one batch (each usable shard needs `B·T·W + 1` tokens).
    pub fn new(shards: Vec<TokenShard>, cfg: LoaderConfig) -> Result<Self> {
        cfg.validate()?;
        if shards.is_empty() {
            return Err(Error::arg("shards", "no token shard given"));
        }
        let global = cfg.tokens_per_batch() * cfg.world_size;
        let windows: Vec<usize> = shards.iter().map(|s| s.len().saturating_sub(1) / global).collect();
        if windows.iter().all(|&w| w == 0) {
            let largest = shards.iter().map(TokenShard::len).max().unwrap_or(0);
            return Err(Error::arg(
                "batch_size",
                format!(
                    "shards too small: one batch needs B·T·world_size + 1 = {} tokens in a shard, the largest of {} \
                     shard(s) holds {largest}",
                    global + 1,
                    shards.len()
                ),
            ));
        }
        let mut loader = DataLoader {
            buf: vec![0; cfg.tokens_per_batch() + 1],
            shard_order: Vec::new(),
            window_order: None,
            pos: LoaderPosition::default(),
            shards,
            cfg,
            windows,
        };
        loader.reset();
        Ok(loader)
    }

    /// Opens `path`: a directory of shards (the files of `split`, see [`list_shards`]), one
    /// `.npy` / `.bin` shard file, or a text / JSONL file, tokenized in memory with GPT-2's BPE
    /// (an EOT before each document, as the shard writer does). `split` only applies to
    /// directories.
    pub fn open(path: impl AsRef<Path>, split: Split, cfg: LoaderConfig) -> Result<Self> {
        let path = path.as_ref();
        let shards = if path.is_dir() {
            list_shards(path, split)?.iter().map(TokenShard::open).collect::<Result<Vec<_>>>()?
        } else if is_shard_file(path)? {
            vec![TokenShard::open(path)?]
        } else {
            let tokens = tokenize_to_vec(path, &Tokenizer::gpt2()?, Some(EOT))?;
            vec![TokenShard::from_tokens(path, &tokens)?]
        };
        DataLoader::new(shards, cfg)
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// The shards, in file order.
    pub fn shards(&self) -> &[TokenShard] {
        &self.shards
    }

    /// Total tokens in all shards.
    pub fn num_tokens(&self) -> usize {
        self.shards.iter().map(TokenShard::len).sum()
    }

    /// Batches this rank reads per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.windows.iter().sum()
    }

    /// The position of the next batch.
    pub fn position(&self) -> LoaderPosition {
        self.pos
    }

    /// Moves to `pos`. Errors: [`Error::InvalidArgument`] when `pos` is outside the data.
    pub fn seek(&mut self, pos: LoaderPosition) -> Result<()> {
        if pos.shard > self.shards.len() {
            return Err(Error::arg("position", format!("shard cursor {} > {} shards", pos.shard, self.shards.len())));
        }
        if pos.shard < self.shards.len() {
            let order = self.order_for_epoch(pos.epoch);
            let w = self.windows[order[pos.shard]];
            if pos.window > w {
                return Err(Error::arg("position", format!("window cursor {} > {w} windows", pos.window)));
            }
            self.shard_order = order;
        } else {
            if pos.window != 0 {
                return Err(Error::arg("position", "window cursor must be 0 past the last shard"));
            }
            self.shard_order = self.order_for_epoch(pos.epoch);
        }
        self.pos = pos;
        Ok(())
    }

    /// Back to the first batch of epoch 0 (e.g. before each validation pass).
    pub fn reset(&mut self) {
        self.pos = LoaderPosition::default();
        self.shard_order = self.order_for_epoch(0);
    }

    fn epoch_rng(&self, epoch: u64) -> Option<Rng> {
        self.cfg.shuffle_seed.map(|seed| Rng::new(seed).fork(epoch))
    }

    fn order_for_epoch(&self, epoch: u64) -> Vec<usize> {
        match self.epoch_rng(epoch) {
            Some(rng) => permutation(self.shards.len(), &mut rng.fork(u64::MAX)),
            None => (0..self.shards.len()).collect(),
        }
    }

    fn window_index(&mut self, shard: usize, cursor: usize) -> usize {
        let Some(rng) = self.epoch_rng(self.pos.epoch) else { return cursor };
        let key = (self.pos.epoch, shard);
        if self.window_order.as_ref().map(|(k, _)| *k) != Some(key) {
            self.window_order = Some((key, permutation(self.windows[shard], &mut rng.fork(shard as u64))));
        }
        self.window_order.as_ref().expect("just set").1[cursor]
    }
}

fn is_shard_file(path: &Path) -> Result<bool> {
    if ShardFormat::from_path(path).is_some() {
        return Ok(true);
    }
    use std::io::Read;
    let mut head = [0u8; 6];
    let mut f = crate::fsutil::open_regular(path)?;
    let n = f.read(&mut head).map_err(|e| Error::io(path, e))?;
    Ok(head[..n].starts_with(NPY_MAGIC) || (n >= 4 && head[..4] == BIN_MAGIC.to_le_bytes()))
}

impl BatchSource for DataLoader {
    fn next_batch(&mut self) -> Result<(Array2<u32>, Array2<u32>)> {
        let shard = loop {
            if self.pos.shard >= self.shards.len() {
                let epoch =
                    self.pos.epoch.checked_add(1).ok_or_else(|| Error::arg("position", "epoch counter overflows"))?;
                self.pos = LoaderPosition { epoch, shard: 0, window: 0 };
                self.shard_order = self.order_for_epoch(self.pos.epoch);
            }
            let s = self.shard_order[self.pos.shard];
            if self.pos.window < self.windows[s] {
                break s;
            }
            self.pos.shard += 1;
            self.pos.window = 0;
        };
        let window = self.window_index(shard, self.pos.window);
        let (b, t) = (self.cfg.batch_size, self.cfg.seq_len);
        let bt = b * t;
        let start = window * bt * self.cfg.world_size + self.cfg.rank * bt;
        self.shards[shard].read_into(start, &mut self.buf)?;
        if let Some(v) = self.cfg.vocab_size {
            if let Some(i) = self.buf.iter().position(|&tok| tok as usize >= v) {
                return Err(Error::TokenOutOfVocab { token: self.buf[i], position: start + i, vocab_size: v });
            }
        }
        let x = Array2::from_shape_vec((b, t), self.buf[..bt].to_vec()).expect("B*T tokens");
        let y = Array2::from_shape_vec((b, t), self.buf[1..].to_vec()).expect("B*T tokens");
        self.pos.window += 1;
        Ok((x, y))
    }

    fn state(&self) -> serde_json::Value {
        let saved = SavedState {
            kind: STATE_KIND.into(),
            position: self.pos,
            batch_size: self.cfg.batch_size,
            seq_len: self.cfg.seq_len,
            rank: self.cfg.rank,
            world_size: self.cfg.world_size,
            shuffle_seed: self.cfg.shuffle_seed,
            shard_tokens: self.shards.iter().map(TokenShard::len).collect(),
        };
        serde_json::to_value(saved).expect("plain data serializes")
    }

    fn restore(&mut self, state: serde_json::Value) -> Result<()> {
        let saved: SavedState = serde_json::from_value(state)
            .map_err(|e| Error::Json { path: PathBuf::from("<data loader state>"), reason: e.to_string() })?;
        if saved.kind != STATE_KIND {
            return Err(Error::arg("state", format!("state of `{}`, expected `{STATE_KIND}`", saved.kind)));
        }
        let mismatch = |what: &str, a: String, b: String| {
            Error::arg(
                "state",
                format!("saved for {what} {a}, but this loader has {b}; resume with the same data and settings"),
            )
        };
        let cfg = &self.cfg;
        // The position is global (every rank of a group is at the same one), so any rank may
        // restore any rank's state; another world size is remapped below when possible.
        for (what, a, b) in [("batch_size", saved.batch_size, cfg.batch_size), ("seq_len", saved.seq_len, cfg.seq_len)]
        {
            if a != b {
                return Err(mismatch(what, a.to_string(), b.to_string()));
            }
        }
        if saved.shuffle_seed != cfg.shuffle_seed {
            return Err(mismatch(
                "shuffle_seed",
                format!("{:?}", saved.shuffle_seed),
                format!("{:?}", cfg.shuffle_seed),
            ));
        }
        let tokens: Vec<usize> = self.shards.iter().map(TokenShard::len).collect();
        if saved.shard_tokens != tokens {
            let describe = |t: &[usize]| {
                format!("{} shard(s) of {} tokens in all", t.len(), t.iter().map(|&n| n as u128).sum::<u128>())
            };
            return Err(mismatch("data", describe(&saved.shard_tokens), describe(&tokens)));
        }
        let mut position = saved.position;
        if saved.world_size != cfg.world_size {
            let (n, m) = (saved.world_size, cfg.world_size);
            if saved.shuffle_seed.is_some() {
                return Err(Error::arg(
                    "state",
                    format!(
                        "saved by {n} data-parallel ranks with shuffling, and the shuffled window order depends on \
                         the number of ranks: resume with {n} ranks"
                    ),
                ));
            }
            // `window` global windows of n·B·T tokens are done in this shard.
            let done = position.window as u128 * n as u128;
            if done % m as u128 != 0 {
                return Err(Error::arg(
                    "state",
                    format!(
                        "saved by {n} data-parallel ranks {done} batches into a shard, which {m} ranks cannot \
                         continue evenly: resume with a number of ranks that divides {done}"
                    ),
                ));
            }
            position.window = (done / m as u128) as usize;
        }
        self.seek(position)
    }
}
