//! The communication seam of data-parallel training and evaluation: a [`Collective`] is the
//! group of processes ("ranks") that train one model together, with the few collective
//! operations data parallelism needs (all-reduce, reduce-scatter, all-gather, broadcast,
//! barrier).
//!
//! - [`SingleProcess`]: a group of one (every operation is the identity). The default; needs
//!   nothing.
//! - `MpiCollective` (cargo feature `mpi`): `MPI_COMM_WORLD` through rsmpi — run the program
//!   under `mpirun -np N` (see `docs/distributed.md`). Without `mpirun` it is a group of one.
//!
//! Every operation is *collective*: every rank of the group must call it, in the same order,
//! with buffers of the same length; otherwise the group deadlocks (MPI) or the call fails with
//! [`Error::InvalidArgument`] (length checks that can be done locally).
//!
//! ```
//! use gpt2::collective::{Collective, SingleProcess};
//! let c = SingleProcess;
//! let mut g = vec![1.0f32, 2.0];
//! c.all_reduce_sum_f32(&mut g).unwrap(); // a group of one: the sum is the value itself
//! assert_eq!((c.rank(), c.size(), g), (0, 1, vec![1.0, 2.0]));
//! let mut shard = vec![0.0f32; 2];
//! c.reduce_scatter_sum_f32(&[3.0, 4.0], &mut shard).unwrap();
//! assert_eq!(shard, vec![3.0, 4.0]);
//! ```

use crate::error::{Error, Result};

/// A group of ranks that run the same program on different data (see the module docs).
///
/// Implementations must be usable from any thread (`Send + Sync`); calls are not concurrent
/// (the trainer issues them one at a time).
pub trait Collective: Send + Sync + std::fmt::Debug {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;

    /// Number of ranks in the group.
    fn size(&self) -> usize;

    /// Element-wise sum of `buf` over all ranks, written back into `buf` on every rank.
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()>;

    /// Element-wise sum of `buf` over all ranks, written back into `buf` on every rank.
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()>;

    /// Copies `buf` of rank `root` into `buf` of every rank (same length everywhere).
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()>;

    /// Sums `input` (length `size() · output.len()`) over all ranks and gives rank `r` block `r`
    /// of the sum (`input[r·n .. (r+1)·n]` summed) in `output`.
    fn reduce_scatter_sum_f32(&self, input: &[f32], output: &mut [f32]) -> Result<()>;

    /// Concatenates every rank's `input` in rank order into `output` (length
    /// `size() · input.len()`) on every rank.
    fn all_gather_f32(&self, input: &[f32], output: &mut [f32]) -> Result<()>;

    /// Returns when every rank has called it.
    fn barrier(&self) -> Result<()>;

    /// Ends every rank of the group with exit status `code` (`MPI_Abort`); for a group of one,
    /// ends this process. Used when one rank fails while the others may be waiting in a
    /// collective, so that nobody hangs.
    fn abort(&self, code: i32) -> !;

    /// A short description for logs (`"single process"`, `"MPI rank 1 of 4"`).
    fn describe(&self) -> String {
        format!("rank {} of {}", self.rank(), self.size())
    }
}

/// Checks the block lengths of a reduce-scatter / all-gather: `long == size · short`.
pub(crate) fn check_blocks(op: &'static str, size: usize, long: usize, short: usize) -> Result<()> {
    if size.checked_mul(short) != Some(long) {
        return Err(Error::arg(
            "collective",
            format!("{op}: the full buffer holds {long} values, expected {size} ranks × {short}"),
        ));
    }
    Ok(())
}

/// The group of one process: every operation is the identity (a copy for the block operations).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn all_reduce_sum_f32(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }

    fn all_reduce_sum_f64(&self, _buf: &mut [f64]) -> Result<()> {
        Ok(())
    }

    fn broadcast_bytes(&self, _buf: &mut [u8], root: usize) -> Result<()> {
        if root != 0 {
            return Err(Error::arg("root", format!("rank {root} is not below the group size 1")));
        }
        Ok(())
    }

    fn reduce_scatter_sum_f32(&self, input: &[f32], output: &mut [f32]) -> Result<()> {
        check_blocks("reduce_scatter", 1, input.len(), output.len())?;
        output.copy_from_slice(input);
        Ok(())
    }

    fn all_gather_f32(&self, input: &[f32], output: &mut [f32]) -> Result<()> {
        check_blocks("all_gather", 1, output.len(), input.len())?;
        output.copy_from_slice(input);
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }

    fn describe(&self) -> String {
        "single process".into()
    }
}

/// The contiguous block `[start, end)` of `0..n` that rank `rank` of `size` owns when `n` is
/// split into `size` blocks of `⌈n / size⌉` (the last ones shorter or empty) — the sharding of
/// ZeRO-1 and of distributed evaluation.
///
/// ```
/// assert_eq!(gpt2::collective::block_range(10, 4, 0), 0..3);
/// assert_eq!(gpt2::collective::block_range(10, 4, 3), 9..10);
/// assert_eq!(gpt2::collective::block_range(2, 4, 3), 2..2);
/// ```
pub fn block_range(n: usize, size: usize, rank: usize) -> std::ops::Range<usize> {
    let block = n.div_ceil(size.max(1));
    let start = (rank * block).min(n);
    start..(start + block).min(n)
}

#[cfg(feature = "mpi")]
pub use mpi_impl::MpiCollective;

#[cfg(feature = "mpi")]
mod mpi_impl {
    use std::sync::Mutex;

    use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
    use mpi::environment::Universe;
    use mpi::topology::{Communicator, SimpleCommunicator};
    use mpi::Threading;

    use super::{check_blocks, Collective};
    use crate::error::{Error, Result};

    /// Elements per MPI call (MPI counts are `i32`).
    const CHUNK: usize = 1 << 28;

    struct Inner {
        world: SimpleCommunicator,
        /// Receive buffers (MPI has no in-place operation in rsmpi's safe API).
        scratch32: Vec<f32>,
        scratch64: Vec<f64>,
    }

    /// `MPI_COMM_WORLD` as a [`Collective`] (feature `mpi`). Create it once per process with
    /// [`MpiCollective::init`]; dropping it finalizes MPI.
    pub struct MpiCollective {
        inner: Mutex<Inner>,
        rank: usize,
        size: usize,
        threading: Threading,
        // Dropped last: MPI_Finalize.
        _universe: Universe,
    }

    // SAFETY: the MPI handles are only used under `inner`'s mutex, so at most one thread calls
    // MPI at a time, which MPI_THREAD_SERIALIZED (checked in `init`) allows from any thread.
    unsafe impl Send for MpiCollective {}
    unsafe impl Sync for MpiCollective {}

    impl std::fmt::Debug for MpiCollective {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("MpiCollective")
                .field("rank", &self.rank)
                .field("size", &self.size)
                .field("threading", &self.threading)
                .finish()
        }
    }

    impl MpiCollective {
        /// Initializes MPI (`MPI_Init_thread`) and returns `MPI_COMM_WORLD`. Under `mpirun -np N`
        /// the group has `N` ranks; started directly, it is a group of one.
        ///
        /// Errors: [`Error::Collective`] when MPI was already initialized in this process or the
        /// library cannot give at least `MPI_THREAD_SERIALIZED`.
        pub fn init() -> Result<Self> {
            let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
                .ok_or_else(|| Error::Collective("MPI is already initialized in this process".into()))?;
            if threading < Threading::Serialized {
                return Err(Error::Collective(format!(
                    "the MPI library gives thread level {threading:?}, at least Serialized is needed"
                )));
            }
            let world = universe.world();
            let (rank, size) = (world.rank() as usize, world.size() as usize);
            Ok(MpiCollective {
                inner: Mutex::new(Inner { world, scratch32: Vec::new(), scratch64: Vec::new() }),
                rank,
                size,
                threading,
                _universe: universe,
            })
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
            // A panic inside an MPI call leaves no broken invariant in `Inner`.
            self.inner.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    impl Collective for MpiCollective {
        fn rank(&self) -> usize {
            self.rank
        }

        fn size(&self) -> usize {
            self.size
        }

        fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
            let mut g = self.lock();
            let Inner { world, scratch32, .. } = &mut *g;
            for c in buf.chunks_mut(CHUNK) {
                scratch32.resize(c.len(), 0.0);
                world.all_reduce_into(&c[..], &mut scratch32[..], SystemOperation::sum());
                c.copy_from_slice(scratch32);
            }
            Ok(())
        }

        fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
            let mut g = self.lock();
            let Inner { world, scratch64, .. } = &mut *g;
            for c in buf.chunks_mut(CHUNK) {
                scratch64.resize(c.len(), 0.0);
                world.all_reduce_into(&c[..], &mut scratch64[..], SystemOperation::sum());
                c.copy_from_slice(scratch64);
            }
            Ok(())
        }

        fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()> {
            if root >= self.size {
                return Err(Error::arg("root", format!("rank {root} is not below the group size {}", self.size)));
            }
            let g = self.lock();
            let r = g.world.process_at_rank(root as i32);
            for c in buf.chunks_mut(CHUNK) {
                r.broadcast_into(c);
            }
            Ok(())
        }

        fn reduce_scatter_sum_f32(&self, input: &[f32], output: &mut [f32]) -> Result<()> {
            check_blocks("reduce_scatter", self.size, input.len(), output.len())?;
            let g = self.lock();
            if output.len() <= CHUNK {
                g.world.reduce_scatter_block_into(input, output, SystemOperation::sum());
            } else {
                // Block r of chunk k is input[r·n + k·CHUNK ..]: gather the chunk's blocks.
                let n = output.len();
                let mut send = Vec::new();
                for (k, out) in output.chunks_mut(CHUNK).enumerate() {
                    send.clear();
                    for r in 0..self.size {
                        send.extend_from_slice(&input[r * n + k * CHUNK..r * n + k * CHUNK + out.len()]);
                    }
                    g.world.reduce_scatter_block_into(&send[..], out, SystemOperation::sum());
                }
            }
            Ok(())
        }

        fn all_gather_f32(&self, input: &[f32], output: &mut [f32]) -> Result<()> {
            check_blocks("all_gather", self.size, output.len(), input.len())?;
            let g = self.lock();
            if input.len() <= CHUNK {
                g.world.all_gather_into(input, output);
            } else {
                let n = input.len();
                let mut recv = Vec::new();
                for (k, inp) in input.chunks(CHUNK).enumerate() {
                    recv.resize(self.size * inp.len(), 0.0);
                    g.world.all_gather_into(inp, &mut recv[..]);
                    for r in 0..self.size {
                        output[r * n + k * CHUNK..r * n + k * CHUNK + inp.len()]
                            .copy_from_slice(&recv[r * inp.len()..(r + 1) * inp.len()]);
                    }
                }
            }
            Ok(())
        }

        fn barrier(&self) -> Result<()> {
            self.lock().world.barrier();
            Ok(())
        }

        fn abort(&self, code: i32) -> ! {
            // Not under the lock: another thread may hold it inside a collective that will
            // never complete. MPI_Abort is callable from any thread.
            mpi::topology::SimpleCommunicator::world().abort(code)
        }

        fn describe(&self) -> String {
            format!("MPI rank {} of {}", self.rank, self.size)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_process_is_the_identity_and_checks_lengths() {
        let c = SingleProcess;
        let mut a = vec![1.5f32, -2.0];
        c.all_reduce_sum_f32(&mut a).unwrap();
        assert_eq!(a, vec![1.5, -2.0]);
        let mut d = vec![0.25f64];
        c.all_reduce_sum_f64(&mut d).unwrap();
        assert_eq!(d, vec![0.25]);
        let mut b = vec![7u8, 8];
        c.broadcast_bytes(&mut b, 0).unwrap();
        assert_eq!(b, vec![7, 8]);
        assert!(c.broadcast_bytes(&mut b, 1).is_err());
        let mut out = vec![0f32; 3];
        c.all_gather_f32(&[1.0, 2.0, 3.0], &mut out).unwrap();
        assert_eq!(out, vec![1.0, 2.0, 3.0]);
        assert!(c.all_gather_f32(&[1.0], &mut out).is_err());
        assert!(c.reduce_scatter_sum_f32(&[1.0], &mut out).is_err());
        c.barrier().unwrap();
        assert_eq!(c.describe(), "single process");
    }

    #[test]
    fn block_ranges_cover_everything_once() {
        for n in [0usize, 1, 5, 17, 64] {
            for size in 1..6 {
                let mut next = 0;
                for r in 0..size {
                    let b = block_range(n, size, r);
                    assert_eq!(b.start, next.min(n));
                    next = b.end;
                }
                assert_eq!(next, n);
            }
        }
    }
}
