//! Byte-pair merging of one pre-tokenized piece in `O(n log n)` time, for pieces of any length.
//!
//! The rule is tiktoken's: repeatedly merge the adjacent pair of symbols whose concatenation is the
//! vocabulary token of lowest rank (in GPT-2 a token's rank is its id), the leftmost one on ties,
//! until no adjacent pair is a token. Symbols are kept as a linked list over byte positions and the
//! candidate pairs in a min-heap keyed by `(rank, start)`; a heap entry is stale (skipped) when its
//! two-symbol span no longer exists. A pair's rank depends only on its bytes, so a live entry is
//! always the pair the scan-all-pairs rule would pick.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// Byte string → rank (token id) of the GPT-2 vocabulary, without `<|endoftext|>`.
#[derive(Debug, Clone)]
pub(crate) struct Ranks {
    map: HashMap<Vec<u8>, u32, rustc_hash::FxBuildHasher>,
    byte: [u32; 256],
}

/// Reusable buffers for [`Ranks::merge`], so encoding many pieces does not allocate per piece.
/// Positions are `u32` (half the memory traffic of `usize` on the heap); pieces of 4 GiB or more
/// use a one-off `usize` scratch.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    small: Buffers<u32>,
    large: Buffers<usize>,
    large_used: bool,
}

#[derive(Debug, Default)]
struct Buffers<P> {
    next: Vec<P>,
    prev: Vec<P>,
    heap: Vec<Reverse<(u32, P, P)>>,
}

/// A byte position type for the merge loop.
trait Pos: Copy + Ord + std::fmt::Debug {
    const DEAD: Self;
    fn of(i: usize) -> Self;
    fn at(self) -> usize;
}

impl Pos for u32 {
    const DEAD: Self = u32::MAX;
    fn of(i: usize) -> Self {
        i as u32
    }
    fn at(self) -> usize {
        self as usize
    }
}

impl Pos for usize {
    const DEAD: Self = usize::MAX;
    fn of(i: usize) -> Self {
        i
    }
    fn at(self) -> usize {
        self
    }
}

impl Scratch {
    /// End of the symbol starting at byte `start` after [`Ranks::merge`].
    pub(crate) fn next_end(&self, start: usize) -> usize {
        if self.large_used {
            self.large.next[start]
        } else {
            self.small.next[start] as usize
        }
    }
}

impl Ranks {
    /// Ranks from `(bytes, rank)` pairs; every single byte must be a token.
    pub(crate) fn new(tokens: impl IntoIterator<Item = (Vec<u8>, u32)>) -> Option<Self> {
        let map: HashMap<Vec<u8>, u32, rustc_hash::FxBuildHasher> = tokens.into_iter().collect();
        let mut byte = [0u32; 256];
        for (b, r) in byte.iter_mut().enumerate() {
            *r = *map.get(&[b as u8][..])?;
        }
        Some(Ranks { map, byte })
    }

    /// Number of tokens.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Rank of a byte string, if it is a token.
    pub(crate) fn get(&self, bytes: &[u8]) -> Option<u32> {
        match bytes {
            [b] => Some(self.byte[*b as usize]),
            _ => self.map.get(bytes).copied(),
        }
    }

    /// Appends the token ids of `piece` to `out`.
    pub(crate) fn encode_piece(&self, piece: &[u8], scratch: &mut Scratch, out: &mut Vec<u32>) {
        if let Some(r) = self.get(piece) {
            out.push(r);
            return;
        }
        self.merge(piece, scratch, |_, _, _, _| {});
        let mut i = 0;
        while i < piece.len() {
            // every symbol left is a token: a byte, or the result of a merge
            let end = scratch.next_end(i);
            out.push(self.get(&piece[i..end]).unwrap_or(u32::MAX));
            i = end;
        }
    }

    /// Runs the merges of `piece` (non-empty), calling `on_merge(left_start, right_start,
    /// right_end, rank)` for each, in order. Afterwards [`Scratch::next_end`] gives the end of
    /// the final symbol starting at a byte, for the symbol starts reached from 0.
    pub(crate) fn merge(&self, piece: &[u8], scratch: &mut Scratch, on_merge: impl FnMut(usize, usize, usize, u32)) {
        // u32::MAX marks dead positions, so positions stay below it
        scratch.large_used = piece.len() >= u32::MAX as usize - 1;
        if scratch.large_used {
            self.merge_with(piece, &mut scratch.large, on_merge);
        } else {
            self.merge_with(piece, &mut scratch.small, on_merge);
        }
    }

    fn merge_with<P: Pos>(
        &self,
        piece: &[u8],
        bufs: &mut Buffers<P>,
        mut on_merge: impl FnMut(usize, usize, usize, u32),
    ) {
        let n = piece.len();
        let Buffers { next, prev, heap } = bufs;
        next.clear();
        next.extend((1..=n).map(P::of));
        // `prev[s]` is the start of the symbol before the one at `s`; DEAD when `s` starts none
        prev.clear();
        prev.extend((0..n).map(|i| P::of(i.saturating_sub(1))));
        let mut entries = std::mem::take(heap);
        entries.clear();
        entries.extend(
            (0..n.saturating_sub(1))
                .filter_map(|i| self.get(&piece[i..i + 2]).map(|r| Reverse((r, P::of(i), P::of(i + 2))))),
        );
        let mut queue = BinaryHeap::from(entries); // O(n) heapify
        while let Some(Reverse((rank, start, end))) = queue.pop() {
            // live iff `start` begins a symbol and the symbol after it ends at `end`
            let (s, e) = (start.at(), end.at());
            if prev[s] == P::DEAD {
                continue;
            }
            let mid = next[s].at();
            if mid >= e || next[mid] != end {
                continue;
            }
            on_merge(s, mid, e, rank);
            next[s] = end;
            prev[mid] = P::DEAD;
            if e < n {
                prev[e] = start;
                let after = next[e];
                if let Some(r) = self.get(&piece[s..after.at()]) {
                    queue.push(Reverse((r, start, after)));
                }
            }
            if s > 0 {
                let p = prev[s];
                if let Some(r) = self.get(&piece[p.at()..e]) {
                    queue.push(Reverse((r, p, end)));
                }
            }
        }
        *heap = queue.into_vec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tiktoken's `_byte_pair_merge`: scan all pairs, merge the lowest rank, leftmost on ties.
    fn naive(ranks: &Ranks, piece: &[u8]) -> Vec<u32> {
        let mut syms: Vec<Vec<u8>> = piece.iter().map(|&b| vec![b]).collect();
        loop {
            let best = (0..syms.len().saturating_sub(1))
                .filter_map(|i| ranks.get(&[syms[i].clone(), syms[i + 1].clone()].concat()).map(|r| (r, i)))
                .min();
            let Some((_, i)) = best else { break };
            let right = syms.remove(i + 1);
            syms[i].extend(right);
        }
        syms.iter().map(|s| ranks.get(s).unwrap()).collect()
    }

    #[test]
    fn heap_merge_equals_the_scan_all_pairs_rule() {
        // a toy vocabulary with ties and overlapping pairs
        let mut tokens: Vec<(Vec<u8>, u32)> = (0..=255u8).map(|b| (vec![b], 1000 + b as u32)).collect();
        for (i, t) in ["aa", "ab", "ba", "aaa", "aab", "bab", "abab", "aaaa", "bb", "abb"].iter().enumerate() {
            tokens.push((t.as_bytes().to_vec(), i as u32 * 3 % 7 + i as u32));
        }
        let ranks = Ranks::new(tokens).unwrap();
        let mut scratch = Scratch::default();
        let mut state = 7u64;
        for len in 1..300 {
            let piece: Vec<u8> = (0..len)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    if (state >> 33) % 3 == 0 {
                        b'b'
                    } else {
                        b'a'
                    }
                })
                .collect();
            let mut got = Vec::new();
            ranks.encode_piece(&piece, &mut scratch, &mut got);
            assert_eq!(got, naive(&ranks, &piece), "{:?}", String::from_utf8_lossy(&piece));
        }
    }
}
