//! The key/value cache the caller owns for incremental decoding.

use crate::error::{Error, Result};
use crate::model::config::Config;

/// Scratch activations reused across forward calls (no per-token allocation).
#[derive(Debug, Default, Clone)]
pub(crate) struct Workspace {
    /// Residual stream `[N, C]`.
    pub x: Vec<f32>,
    /// Layernorm output `[N, C]`.
    pub ln: Vec<f32>,
    /// Fused q/k/v `[N, 3C]`.
    pub qkv: Vec<f32>,
    /// Attention output `[N, C]`.
    pub att: Vec<f32>,
    /// MLP hidden `[N, H]`.
    pub fc: Vec<f32>,
    /// Positions `[N]`.
    pub pos: Vec<u32>,
    /// Key mask `[B, Tk]` for the current call.
    pub mask: Vec<bool>,
    /// Token ids `[N]` of the current call.
    pub tokens: Vec<u32>,
    /// Last-position hidden states `[B, C]` (logits of the last position only).
    pub last: Vec<f32>,
    /// Attention scratch, one slot per rayon thread.
    pub attn: crate::kernels::flash::AttnScratch,
}

impl Workspace {
    /// Grows the buffers to hold `n` rows.
    pub fn ensure(&mut self, n: usize, c: usize, h: usize) {
        fn grow(v: &mut Vec<f32>, len: usize) {
            if v.len() < len {
                v.resize(len, 0.0);
            }
        }
        grow(&mut self.x, n * c);
        grow(&mut self.ln, n * c);
        grow(&mut self.qkv, n * 3 * c);
        grow(&mut self.att, n * c);
        grow(&mut self.fc, n * h);
    }
}

/// Keys and values of past positions, per layer, for a batch of `B` rows.
///
/// Create one per generation stream (or batch), pass it to
/// [`Gpt2::forward`](crate::Gpt2::forward) for the prompt (prefill) and then for
/// each new token (decode). The cache also remembers which positions were
/// padding and the next position id of every row, so left-padded batches get
/// mask-derived position ids automatically.
///
/// ```
/// use gpt2::{Config, Gpt2, KvCache};
/// let model = Gpt2::new_random(Config::nano(32, 50), 1).unwrap();
/// let mut cache = KvCache::new(model.config(), 1, 32).unwrap();
/// assert_eq!((cache.len(), cache.capacity()), (0, 32));
/// cache.reset();
/// ```
#[derive(Debug, Clone)]
pub struct KvCache {
    batch: usize,
    capacity: usize,
    n_head: usize,
    head_dim: usize,
    /// Per layer: keys `[B, NH, capacity, hd]`.
    pub(crate) k: Vec<Vec<f32>>,
    /// Per layer: values `[B, NH, capacity, hd]`.
    pub(crate) v: Vec<Vec<f32>>,
    /// `[B, capacity]`: true where the position holds a real token.
    pub(crate) valid: Vec<bool>,
    /// `[B]`: position id the next real token of each row gets.
    pub(crate) next_pos: Vec<u32>,
    len: usize,
    pub(crate) ws: Workspace,
}

impl KvCache {
    /// A cache for `batch` rows and up to `capacity` positions (≤ `n_positions`).
    ///
    /// Errors: [`Error::InvalidArgument`] (`batch` is 0, or the cache's bytes would exceed the
    /// address space), [`Error::SequenceTooLong`] (`capacity` is 0 or above `n_positions`).
    pub fn new(config: &Config, batch: usize, capacity: usize) -> Result<Self> {
        if batch == 0 {
            return Err(Error::arg("batch", "must be at least 1"));
        }
        if capacity == 0 || capacity > config.n_positions {
            return Err(Error::SequenceTooLong { len: capacity, n_positions: config.n_positions });
        }
        let per_layer = Self::per_layer_len(config.n_layer, config.n_embd, batch, capacity)?;
        Ok(KvCache {
            batch,
            capacity,
            n_head: config.n_head,
            head_dim: config.head_dim(),
            k: vec![vec![0.0; per_layer]; config.n_layer],
            v: vec![vec![0.0; per_layer]; config.n_layer],
            valid: vec![false; batch * capacity],
            next_pos: vec![0; batch],
            len: 0,
            ws: Workspace::default(),
        })
    }

    /// Floats of K (or V) per layer for `batch` rows × `capacity` positions, checked: K and V of
    /// every layer, in bytes, must be addressable (a huge batch is an error, not an overflow or
    /// an abort on a request for more than the address space).
    pub(crate) fn per_layer_len(n_layer: usize, n_embd: usize, batch: usize, capacity: usize) -> Result<usize> {
        batch
            .checked_mul(n_embd)
            .and_then(|n| n.checked_mul(capacity))
            .filter(|&n| n.checked_mul(n_layer * 2 * 4).is_some_and(|b| b <= isize::MAX as usize))
            .ok_or_else(|| {
                Error::arg("batch", format!("a cache of {batch} rows × {capacity} positions exceeds the address space"))
            })
    }

    /// Number of positions already cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum number of positions.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of rows.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Forgets every cached position (keeps the memory).
    pub fn reset(&mut self) {
        self.len = 0;
        self.valid.fill(false);
        self.next_pos.fill(0);
    }

    /// Keeps only the first `len` positions (e.g. to re-use a shared prompt).
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        self.len = len;
        for b in 0..self.batch {
            let row = &mut self.valid[b * self.capacity..(b + 1) * self.capacity];
            row[len..].fill(false);
            self.next_pos[b] = row[..len].iter().filter(|&&v| v).count() as u32;
        }
    }

    /// Whether cached position `t` of row `b` is a real token.
    pub fn is_valid(&self, b: usize, t: usize) -> bool {
        b < self.batch && t < self.len && self.valid[b * self.capacity + t]
    }

    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len;
    }

    pub(crate) fn dims(&self) -> (usize, usize) {
        (self.n_head, self.head_dim)
    }

    /// Makes row `r` a copy of row `src[r]` for every `r` (cached positions, padding and next
    /// position ids), in place: beam search reorders its beams this way each step. Only rows
    /// whose source differs are written, and only their `len()` cached positions are copied (the
    /// rest of the capacity is untouched), so a step where most beams keep their row costs
    /// little; the cache itself is never reallocated.
    ///
    /// Errors: [`Error::Shape`] when `src` does not have one entry per row;
    /// [`Error::InvalidArgument`] when an entry is not a row index.
    ///
    /// ```
    /// use gpt2::{Config, ForwardInput, ForwardOptions, Gpt2, KvCache};
    /// let model = Gpt2::new_random(Config::nano(16, 50), 1).unwrap();
    /// let mut cache = KvCache::new(model.config(), 2, 16).unwrap();
    /// let x = ndarray::Array2::from_shape_vec((2, 2), vec![1u32, 2, 3, 4]).unwrap();
    /// model.forward(&ForwardInput::new(x.view()), Some(&mut cache), &ForwardOptions::default()).unwrap();
    /// cache.reorder_rows(&[1, 1]).unwrap(); // both rows now hold the prompt [3, 4]
    /// assert!(cache.reorder_rows(&[0, 2]).is_err());
    /// ```
    pub fn reorder_rows(&mut self, src: &[usize]) -> Result<()> {
        if src.len() != self.batch {
            return Err(Error::Shape(format!(
                "reorder_rows got {} indices for a cache of {} rows",
                src.len(),
                self.batch
            )));
        }
        if let Some(&bad) = src.iter().find(|&&s| s >= self.batch) {
            return Err(Error::arg("src", format!("row {bad} does not exist (the cache has {} rows)", self.batch)));
        }
        let moved: Vec<(usize, usize)> =
            src.iter().enumerate().filter(|&(r, &s)| r != s).map(|(r, &s)| (r, s)).collect();
        if moved.is_empty() {
            return Ok(());
        }
        let (nh, hd, cap, len) = (self.n_head, self.head_dim, self.capacity, self.len);
        let block = len * hd;
        // Gather every moved row's new content before writing any (a source may also be a
        // destination), then scatter.
        let mut tmp = vec![0f32; moved.len() * nh * block];
        for layer in self.k.iter_mut().chain(self.v.iter_mut()) {
            for (i, &(_, s)) in moved.iter().enumerate() {
                for h in 0..nh {
                    let from = (s * nh + h) * cap * hd;
                    let to = (i * nh + h) * block;
                    tmp[to..to + block].copy_from_slice(&layer[from..from + block]);
                }
            }
            for (i, &(r, _)) in moved.iter().enumerate() {
                for h in 0..nh {
                    let to = (r * nh + h) * cap * hd;
                    let from = (i * nh + h) * block;
                    layer[to..to + block].copy_from_slice(&tmp[from..from + block]);
                }
            }
        }
        let valid: Vec<Vec<bool>> = moved.iter().map(|&(_, s)| self.valid[s * cap..(s + 1) * cap].to_vec()).collect();
        let next: Vec<u32> = moved.iter().map(|&(_, s)| self.next_pos[s]).collect();
        for (i, &(r, _)) in moved.iter().enumerate() {
            self.valid[r * cap..(r + 1) * cap].copy_from_slice(&valid[i]);
            self.next_pos[r] = next[i];
        }
        Ok(())
    }

    /// A cache of `batch() · n` rows in which rows `i·n .. (i+1)·n` are copies of row `i`
    /// (cached positions, padding and next position ids included): prefill a prompt once,
    /// then decode several samples of it.
    ///
    /// ```
    /// use gpt2::{Config, ForwardInput, ForwardOptions, Gpt2, KvCache};
    /// let model = Gpt2::new_random(Config::nano(16, 50), 1).unwrap();
    /// let mut one = KvCache::new(model.config(), 1, 16).unwrap();
    /// let prompt = ndarray::Array2::from_shape_vec((1, 3), vec![4u32, 8, 15]).unwrap();
    /// model.forward(&ForwardInput::new(prompt.view()), Some(&mut one), &ForwardOptions::default()).unwrap();
    /// let three = one.repeat_rows(3).unwrap();
    /// assert_eq!((three.batch(), three.len()), (3, 3));
    /// ```
    pub fn repeat_rows(&self, n: usize) -> Result<KvCache> {
        if n == 0 {
            return Err(Error::arg("n", "must be at least 1"));
        }
        let (b, cap, nh, hd, len) = (self.batch, self.capacity, self.n_head, self.head_dim, self.len);
        let bn = b.checked_mul(n).ok_or_else(|| Error::arg("n", format!("{b} rows × {n} copies overflow")))?;
        let per_layer = Self::per_layer_len(self.k.len(), nh * hd, bn, cap)?;
        let head = cap * hd;
        let repeat = |src: &Vec<f32>| {
            let mut dst = vec![0f32; per_layer];
            for r in 0..b {
                for j in 0..n {
                    for h in 0..nh {
                        let s = (r * nh + h) * head;
                        let d = ((r * n + j) * nh + h) * head;
                        dst[d..d + len * hd].copy_from_slice(&src[s..s + len * hd]);
                    }
                }
            }
            dst
        };
        let rows = |src: &[bool], w: usize| -> Vec<bool> {
            (0..b).flat_map(|r| std::iter::repeat_n(&src[r * w..(r + 1) * w], n).flatten().copied()).collect()
        };
        Ok(KvCache {
            batch: bn,
            capacity: cap,
            n_head: nh,
            head_dim: hd,
            k: self.k.iter().map(repeat).collect(),
            v: self.v.iter().map(repeat).collect(),
            valid: rows(&self.valid, cap),
            next_pos: self.next_pos.iter().flat_map(|&p| std::iter::repeat_n(p, n)).collect(),
            len,
            ws: Workspace::default(),
        })
    }
}
