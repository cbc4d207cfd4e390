//! Data parallelism without MPI: an in-process [`Collective`] whose ranks are threads, so the
//! default build tests the data-parallel `Trainer` (all-reduce before clipping, ZeRO-1 blocks,
//! the overlapped all-reduce, exact distributed evaluation, checkpoints) against one process
//! with N× gradient accumulation. `tests/mpi.rs` does the same through `mpirun` (feature `mpi`).

use std::sync::{Arc, Barrier, Mutex};

use gpt2::data::{BatchSource, DataLoader, LoaderConfig, TokenShard};
use gpt2::train::{Checkpoint, DataParallel, LrSchedule, Trainer, TrainerConfig};
use gpt2::{Collective, Config, Gpt2, Result};

/// What every rank of a [`ThreadGroup`] shares.
#[derive(Debug)]
struct Shared {
    n: usize,
    barrier: Barrier,
    f32s: Mutex<Vec<Vec<f32>>>,
    f64s: Mutex<Vec<Vec<f64>>>,
    bytes: Mutex<Vec<Vec<u8>>>,
}

/// One rank of a group of threads: each operation publishes this rank's buffer, waits for
/// every rank, combines the buffers in rank order (sums start from rank 0's value), and waits
/// again before the slots can be reused.
#[derive(Debug, Clone)]
struct ThreadGroup {
    rank: usize,
    shared: Arc<Shared>,
}

impl ThreadGroup {
    fn new(n: usize) -> Vec<ThreadGroup> {
        let shared = Arc::new(Shared {
            n,
            barrier: Barrier::new(n),
            f32s: Mutex::new(vec![Vec::new(); n]),
            f64s: Mutex::new(vec![Vec::new(); n]),
            bytes: Mutex::new(vec![Vec::new(); n]),
        });
        (0..n).map(|rank| ThreadGroup { rank, shared: shared.clone() }).collect()
    }

    fn exchange_f32(&self, mine: &[f32]) -> Vec<Vec<f32>> {
        self.shared.f32s.lock().unwrap()[self.rank] = mine.to_vec();
        self.shared.barrier.wait();
        let all = self.shared.f32s.lock().unwrap().clone();
        self.shared.barrier.wait();
        all
    }

    fn sum_f32(&self, mine: &[f32]) -> Vec<f32> {
        let all = self.exchange_f32(mine);
        let mut out = all[0].clone();
        for other in &all[1..] {
            out.iter_mut().zip(other).for_each(|(a, b)| *a += b);
        }
        out
    }
}

impl Collective for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.n
    }

    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        let s = self.sum_f32(buf);
        buf.copy_from_slice(&s);
        Ok(())
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.shared.f64s.lock().unwrap()[self.rank] = buf.to_vec();
        self.shared.barrier.wait();
        let all = self.shared.f64s.lock().unwrap().clone();
        self.shared.barrier.wait();
        buf.copy_from_slice(&all[0]);
        for other in &all[1..] {
            buf.iter_mut().zip(other).for_each(|(a, b)| *a += b);
        }
        Ok(())
    }

    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()> {
        self.shared.bytes.lock().unwrap()[self.rank] = buf.to_vec();
        self.shared.barrier.wait();
        let all = self.shared.bytes.lock().unwrap().clone();
        self.shared.barrier.wait();
        buf.copy_from_slice(&all[root]);
        Ok(())
    }

    fn reduce_scatter_sum_f32(&self, input: &[f32], output: &mut [f32]) -> Result<()> {
        assert_eq!(input.len(), self.shared.n * output.len());
        let s = self.sum_f32(input);
        let n = output.len();
        output.copy_from_slice(&s[self.rank * n..(self.rank + 1) * n]);
        Ok(())
    }

    fn all_gather_f32(&self, input: &[f32], output: &mut [f32]) -> Result<()> {
        assert_eq!(output.len(), self.shared.n * input.len());
        let all = self.exchange_f32(input);
        output.copy_from_slice(&all.concat());
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.shared.barrier.wait();
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

fn model() -> Gpt2 {
    Gpt2::new_random(Config::nano(16, 64), 7).unwrap()
}

fn trainer_config(grad_accum: usize) -> TrainerConfig {
    let mut cfg = TrainerConfig {
        schedule: LrSchedule::WarmupCosine { max_lr: 3e-3, min_lr: 3e-4, warmup_steps: 2, decay_steps: 8 },
        grad_accum,
        grad_clip: Some(0.5),
        ..Default::default()
    };
    cfg.optimizer.weight_decay = 0.1;
    cfg
}

fn shard() -> TokenShard {
    let tokens: Vec<u32> = (0..20_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) % 64).collect();
    TokenShard::from_tokens("synthetic", &tokens).unwrap()
}

fn loader(rank: usize, world: usize) -> DataLoader {
    DataLoader::new(vec![shard()], LoaderConfig::new(2, 8).with_rank(rank, world)).unwrap()
}

/// One process, `grad_accum = k`: losses, validation loss and final parameters.
fn single(k: usize, steps: usize) -> (Vec<f32>, f32, Vec<f32>) {
    let mut t = Trainer::new(model(), trainer_config(k)).unwrap();
    let mut data = loader(0, 1);
    let losses = (0..steps).map(|_| t.step(&mut data).unwrap().loss).collect();
    let val = t.eval_loss(&mut loader(0, 1), 5).unwrap();
    (losses, val, t.model().params().to_vec())
}

/// `n` thread ranks, `grad_accum = k` each; every rank's results.
fn group(n: usize, k: usize, steps: usize, dp: DataParallel) -> Vec<(Vec<f32>, f32, Vec<f32>)> {
    let handles: Vec<_> = ThreadGroup::new(n)
        .into_iter()
        .map(|comm| {
            std::thread::spawn(move || {
                let rank = comm.rank();
                let t = Trainer::new(model(), trainer_config(k)).unwrap();
                let mut t = t.distributed(Arc::new(comm), dp).unwrap();
                let mut data = loader(rank, n);
                let losses: Vec<f32> = (0..steps).map(|_| t.step(&mut data).unwrap().loss).collect();
                let val = t.eval_loss(&mut loader(0, 1), 5).unwrap();
                (losses, val, t.model().params().to_vec())
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn two_thread_ranks_equal_one_process_with_double_accumulation() {
    let (losses, val, params) = single(2, 8);
    for dp in [
        DataParallel::default(),
        DataParallel { zero: 1, ..Default::default() },
        DataParallel { overlap: true, bucket_bytes: 4096, ..Default::default() },
    ] {
        // plain and overlapped: bit for bit (the same per-micro-batch gradients, added in the
        // same order); ZeRO-1's global norm adds the blocks' partial sums in another order
        let tol = if dp.zero == 1 { 1e-5 } else { 0.0 };
        for (rank, (l, v, p)) in group(2, 1, 8, dp).iter().enumerate() {
            assert!(max_diff(l, &losses) <= tol, "{dp:?} rank {rank}: losses {l:?} vs {losses:?}");
            assert!((v - val).abs() <= tol, "{dp:?} rank {rank}: val loss");
            assert!(max_diff(p, &params) <= tol, "{dp:?} rank {rank}: parameters {}", max_diff(p, &params));
        }
    }
}

#[test]
fn more_ranks_and_accumulation_agree_within_rounding_and_zero1_equals_plain() {
    // 3 ranks × 2 micro-batches vs one process × 6: the additions associate differently
    let (losses, val, params) = single(6, 6);
    let plain = group(3, 2, 6, DataParallel::default());
    let zero = group(3, 2, 6, DataParallel { zero: 1, ..Default::default() });
    let overlap = group(3, 2, 6, DataParallel { overlap: true, bucket_bytes: 4096, ..Default::default() });
    for (l, v, p) in &plain {
        assert!(max_diff(l, &losses) <= 1e-5, "{l:?} vs {losses:?}");
        assert!((v - val).abs() <= 1e-5);
        assert!(max_diff(p, &params) <= 1e-4, "parameters: {}", max_diff(p, &params));
        // ranks hold identical replicas; ZeRO-1 and overlap change nothing
        assert_eq!(p, &plain[0].2);
    }
    for (other, tol) in [(&zero, 1e-5), (&overlap, 0.0)] {
        for (l, v, p) in other.iter() {
            assert!(max_diff(l, &plain[0].0) <= tol && (v - plain[0].1).abs() <= tol);
            assert!(max_diff(p, &plain[0].2) <= tol, "{}", max_diff(p, &plain[0].2));
        }
    }
}

#[test]
fn zero1_checkpoint_gathers_the_moments_and_resumes_on_another_world_size() {
    let dir = std::env::temp_dir().join(format!("gpt2-dp-ckpt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // reference: one process, 4 steps, checkpoint after 2
    let mut t = Trainer::new(model(), trainer_config(2)).unwrap();
    let mut data = loader(0, 1);
    for _ in 0..2 {
        t.step(&mut data).unwrap();
    }
    let (m_ref, v_ref) = (t.optimizer().moments().0.to_vec(), t.optimizer().moments().1.to_vec());
    let later: Vec<f32> = (0..2).map(|_| t.step(&mut data).unwrap().loss).collect();

    // 2 ZeRO-1 ranks, 2 steps, checkpoint (collective; rank 0 writes)
    let d = dir.clone();
    let handles: Vec<_> = ThreadGroup::new(2)
        .into_iter()
        .map(|comm| {
            let d = d.clone();
            std::thread::spawn(move || {
                let rank = comm.rank();
                let t = Trainer::new(model(), trainer_config(1)).unwrap();
                let mut t = t.distributed(Arc::new(comm), DataParallel { zero: 1, ..Default::default() }).unwrap();
                let mut data = loader(rank, 2);
                for _ in 0..2 {
                    t.step(&mut data).unwrap();
                }
                assert!(t.optimizer().moments().0.len() < m_len());
                t.save_checkpoint(&d, Some(&data), serde_json::json!({"world_size": 2})).unwrap();
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    let ckpt = Checkpoint::load(&dir).unwrap();
    assert_eq!(ckpt.step, 2);
    assert!(max_diff(&ckpt.m, &m_ref) <= 1e-6 && max_diff(&ckpt.v, &v_ref) <= 1e-6);

    // resume on one process: grad_accum 2 keeps the global batch, the loader position is remapped
    let data_state = ckpt.data_state.clone().unwrap();
    let mut ckpt = ckpt;
    ckpt.config.grad_accum = 2;
    let mut t = Trainer::from_checkpoint(ckpt).unwrap();
    let mut data = loader(0, 1);
    data.restore(data_state.clone()).unwrap();
    let resumed: Vec<f32> = (0..2).map(|_| t.step(&mut data).unwrap().loss).collect();
    assert!(max_diff(&resumed, &later) <= 1e-5, "{resumed:?} vs {later:?}");
    // a position that 3 ranks cannot split evenly is refused with a message that says so
    let mut three = DataLoader::new(vec![shard()], LoaderConfig::new(2, 8).with_rank(0, 3)).unwrap();
    let err = three.restore(data_state).unwrap_err().to_string();
    assert!(err.contains("2 data-parallel ranks") && err.contains("3 ranks"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn m_len() -> usize {
    model().num_parameters()
}

#[test]
fn ranks_with_different_parameters_are_an_error() {
    let handles: Vec<_> = ThreadGroup::new(2)
        .into_iter()
        .map(|comm| {
            std::thread::spawn(move || {
                let mut m = model();
                if comm.rank() == 1 {
                    m.params_mut()[3] += 1.0;
                }
                Trainer::new(m, trainer_config(1)).unwrap().distributed(Arc::new(comm), DataParallel::default()).err()
            })
        })
        .collect();
    for h in handles {
        let e = h.join().unwrap().expect("every rank gets the error");
        assert!(matches!(e, gpt2::Error::Collective(_)), "{e}");
    }
}
