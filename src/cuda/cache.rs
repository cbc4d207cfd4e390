//! The device-resident key/value cache and the per-call scratch buffers.

use std::sync::Arc;

use cudarc::driver::{CudaStream, DeviceRepr, ValidAsZeroBits};

use super::DevBuf;
use crate::error::{Error, Result};
use crate::model::{Config, ForwardInput};

/// Scratch activations on the device, grown on demand and reused across calls
/// (held by a [`CudaKvCache`], or made for one call without a cache).
#[derive(Debug, Default)]
pub(crate) struct DevWorkspace {
    pub x: Option<DevBuf<f32>>,
    pub ln: Option<DevBuf<f32>>,
    pub qkv: Option<DevBuf<f32>>,
    pub att: Option<DevBuf<f32>>,
    pub proj: Option<DevBuf<f32>>,
    pub fc: Option<DevBuf<f32>>,
    /// 16-bit copy of a GEMM input (f16/bf16 weights only).
    pub half: Option<DevBuf<u16>>,
    pub tokens: Option<DevBuf<u32>>,
    pub pos: Option<DevBuf<u32>>,
    pub targets: Option<DevBuf<u32>>,
    pub mask: Option<DevBuf<u8>>,
    pub logits: Option<DevBuf<f32>>,
    pub nll: Option<DevBuf<f32>>,
    /// Keys/values of one layer when running without a cache.
    pub k: Option<DevBuf<f32>>,
    pub v: Option<DevBuf<f32>>,
}

/// Makes `slot` hold at least `len` elements (contents are not preserved) and returns it.
pub(crate) fn grow<'a, T: DeviceRepr + ValidAsZeroBits>(
    slot: &'a mut Option<DevBuf<T>>,
    stream: &Arc<CudaStream>,
    len: usize,
    what: &str,
) -> Result<&'a mut DevBuf<T>> {
    if slot.as_ref().is_none_or(|b| b.len() < len) {
        *slot = None; // free first, so peak memory is the new size only
        *slot = Some(DevBuf::zeros(stream, len, what)?);
    }
    Ok(slot.as_mut().expect("just filled"))
}

/// Keys and values of past positions on the GPU, for a batch of `B` rows; the
/// device counterpart of [`KvCache`](crate::KvCache), with the same rules
/// (caller-owned, prefill then decode, padding remembered per row).
///
/// Create it with [`CudaModel::new_cache`](super::CudaModel::new_cache); it can
/// only be used with the model that made it.
#[derive(Debug)]
pub struct CudaKvCache {
    pub(crate) stream: Arc<CudaStream>,
    batch: usize,
    capacity: usize,
    n_head: usize,
    head_dim: usize,
    /// Per layer: keys `[B, NH, capacity, hd]`.
    pub(crate) k: Vec<DevBuf<f32>>,
    /// Per layer: values `[B, NH, capacity, hd]`.
    pub(crate) v: Vec<DevBuf<f32>>,
    /// Host copy of `[B, capacity]`: true where the position holds a real token.
    pub(crate) valid: Vec<bool>,
    /// `[B]`: position id the next real token of each row gets.
    pub(crate) next_pos: Vec<u32>,
    len: usize,
    pub(crate) ws: DevWorkspace,
}

impl CudaKvCache {
    pub(crate) fn new(stream: &Arc<CudaStream>, config: &Config, batch: usize, capacity: usize) -> Result<Self> {
        if batch == 0 {
            return Err(Error::arg("batch", "must be at least 1"));
        }
        if capacity == 0 || capacity > config.n_positions {
            return Err(Error::SequenceTooLong { len: capacity, n_positions: config.n_positions });
        }
        let per_layer = batch * config.n_embd * capacity;
        let mut k = Vec::with_capacity(config.n_layer);
        let mut v = Vec::with_capacity(config.n_layer);
        for _ in 0..config.n_layer {
            k.push(DevBuf::zeros(stream, per_layer, "the KV cache")?);
            v.push(DevBuf::zeros(stream, per_layer, "the KV cache")?);
        }
        Ok(CudaKvCache {
            stream: stream.clone(),
            batch,
            capacity,
            n_head: config.n_head,
            head_dim: config.head_dim(),
            k,
            v,
            valid: vec![false; batch * capacity],
            next_pos: vec![0; batch],
            len: 0,
            ws: DevWorkspace::default(),
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

    /// Forgets every cached position (keeps the device memory; stale keys are
    /// never read because attention only visits positions below `len`).
    pub fn reset(&mut self) {
        self.len = 0;
        self.valid.fill(false);
        self.next_pos.fill(0);
    }

    /// Keeps only the first `len` positions.
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

    /// Bytes of device memory held by the keys and values.
    pub fn device_bytes(&self) -> usize {
        (self.k.iter().chain(&self.v)).map(|b| b.len() * 4).sum()
    }

    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len;
    }

    pub(crate) fn dims(&self) -> (usize, usize, usize) {
        (self.k.len(), self.n_head, self.head_dim)
    }
}

/// Positions and key mask of one call, computed on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// `[B·T]` position ids.
    pub pos: Vec<u32>,
    /// `[B, past + T]`, 1 for a real key.
    pub mask: Vec<u8>,
    /// False when every key is real (the kernel then skips the mask).
    pub has_mask: bool,
}

/// Cache state a plan reads and updates: `(valid [B, cap], cap, next_pos [B])`.
pub(crate) type CacheState<'a> = (&'a mut [bool], usize, &'a mut [u32]);

/// Position ids and key mask exactly as the CPU forward derives them: explicit
/// `position_ids` win; otherwise each row counts its real tokens from the
/// cache's `next_pos` (`cumsum(mask) − 1`), clamped to the context. The cache's
/// validity and next positions are updated for the new tokens.
pub(crate) fn plan(input: &ForwardInput<'_>, state: Option<CacheState<'_>>, past: usize, n_positions: usize) -> Plan {
    let (b, t) = input.tokens.dim();
    let tk = past + t;
    let mut pos = Vec::with_capacity(b * t);
    let mut mask = Vec::with_capacity(b * tk);
    let (mut valid, cap, mut next_pos) = match state {
        Some((v, c, n)) => (Some(v), c, Some(n)),
        None => (None, 0, None),
    };
    let mut has_mask = input.attention_mask.is_some();
    for bi in 0..b {
        let mut next = next_pos.as_ref().map_or(0, |n| n[bi]);
        if let Some(v) = valid.as_ref() {
            let row = &v[bi * cap..bi * cap + past];
            has_mask |= row.iter().any(|&x| !x);
            mask.extend(row.iter().map(|&x| x as u8));
        }
        for ti in 0..t {
            let real = input.attention_mask.as_ref().is_none_or(|m| m[(bi, ti)]);
            mask.push(real as u8);
            pos.push(match &input.position_ids {
                Some(p) => p[(bi, ti)],
                None => next.min(n_positions as u32 - 1),
            });
            if real {
                next += 1;
            }
        }
        if let Some(n) = next_pos.as_mut() {
            n[bi] = next;
        }
        if let Some(v) = valid.as_mut() {
            for ti in 0..t {
                v[bi * cap + past + ti] = mask[bi * tk + past + ti] == 1;
            }
        }
    }
    Plan { pos, mask, has_mask }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn plain_input_counts_positions_without_a_mask() {
        let tok = array![[5u32, 6, 7]];
        let p = plan(&ForwardInput::new(tok.view()), None, 0, 16);
        assert_eq!(p.pos, vec![0, 1, 2]);
        assert_eq!(p.mask, vec![1, 1, 1]);
        assert!(!p.has_mask);
    }

    #[test]
    fn left_padding_gives_mask_derived_positions_and_is_remembered() {
        let tok = array![[0u32, 0, 7], [4, 5, 6]];
        let m = array![[false, false, true], [true, true, true]];
        let (mut valid, mut next) = (vec![false; 2 * 8], vec![0u32; 2]);
        let p = plan(&ForwardInput::new(tok.view()).with_mask(m.view()), Some((&mut valid, 8, &mut next)), 0, 16);
        assert_eq!(p.pos, vec![0, 0, 0, 0, 1, 2]);
        assert_eq!(p.mask, vec![0, 0, 1, 1, 1, 1]);
        assert!(p.has_mask);
        assert_eq!(next, vec![1, 3]);
        assert_eq!(&valid[..3], &[false, false, true]);
        // Decode one token: the cached padding still masks, positions continue per row.
        let tok2 = array![[9u32], [9]];
        let p2 = plan(&ForwardInput::new(tok2.view()), Some((&mut valid, 8, &mut next)), 3, 16);
        assert_eq!(p2.pos, vec![1, 3]);
        assert_eq!(p2.mask, vec![0, 0, 1, 1, 1, 1, 1, 1]);
        assert!(p2.has_mask);
        assert_eq!(next, vec![2, 4]);
    }

    #[test]
    fn explicit_positions_win_and_clamp_applies_otherwise() {
        let tok = array![[1u32, 2]];
        let pids = array![[7u32, 3]];
        let p = plan(&ForwardInput::new(tok.view()).with_positions(pids.view()), None, 0, 16);
        assert_eq!(p.pos, vec![7, 3]);
        let (mut valid, mut next) = (vec![false; 4], vec![3u32]);
        let p = plan(&ForwardInput::new(tok.view()), Some((&mut valid, 4, &mut next)), 2, 4);
        assert_eq!(p.pos, vec![3, 3]);
    }
}
