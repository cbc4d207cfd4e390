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
        // K and V of every layer, in bytes, must be addressable (a huge batch is an error, not
        // an overflow or an abort on a request for more than the address space).
        let per_layer = batch
            .checked_mul(config.n_embd)
            .and_then(|n| n.checked_mul(capacity))
            .filter(|&n| n.checked_mul(config.n_layer * 2 * 4).is_some_and(|b| b <= isize::MAX as usize))
            .ok_or_else(|| {
                Error::arg("batch", format!("a cache of {batch} rows × {capacity} positions exceeds the address space"))
            })?;
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
}
