//! Decode steps allocate nothing once the cache is warm (counted with a global allocator),
//! and `decode_step` gives the same logits as `forward` with `LogitsMode::Last`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use gpt2::{Config, ForwardInput, ForwardOptions, Gpt2, KvCache, LogitsMode, WeightDtype};
use ndarray::Array2;

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set on the threads whose allocations are counted (the test's pool), so tests running
    /// concurrently in the same process do not disturb the count.
    static TRACKED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if TRACKED.with(|t| t.get()) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Wide enough that every GEMV and attention call runs in parallel.
fn model(dtype: WeightDtype) -> Gpt2 {
    Gpt2::new_random(Config::new(2, 4, 256, 128, 3000), 7).unwrap().with_weight_dtype(dtype)
}

#[test]
fn decode_steps_allocate_nothing_and_match_forward() {
    // The loop runs on a pool worker, as `forward` itself does, so rayon's injector queue
    // (which grows in blocks) is not counted.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .start_handler(|_| TRACKED.with(|t| t.set(true)))
        .build()
        .unwrap();
    for dtype in [WeightDtype::F32, WeightDtype::BF16, WeightDtype::Int8] {
        let m = model(dtype);
        let v = m.config().vocab_size;
        pool.install(|| {
            let mut cache = KvCache::new(m.config(), 2, 64).unwrap();
            let prompt = Array2::from_shape_fn((2, 9), |(i, j)| (i * 31 + j * 7) as u32 % 3000);
            let opts = ForwardOptions { logits: LogitsMode::Last, ..Default::default() };
            m.forward(&ForwardInput::new(prompt.view()), Some(&mut cache), &opts).unwrap();
            // reference: the same steps through `forward` on a copy of the cache
            let mut ref_cache = cache.clone();
            let mut logits = vec![0f32; 2 * v];
            let mut tokens = [5u32, 9];
            for _ in 0..4 {
                m.decode_step(&tokens, &mut cache, &mut logits).unwrap(); // warm-up grows scratch
                let t = Array2::from_shape_vec((2, 1), tokens.to_vec()).unwrap();
                let want = m.forward(&ForwardInput::new(t.view()), Some(&mut ref_cache), &opts).unwrap();
                assert_eq!(want.logits.unwrap().as_slice().unwrap(), &logits[..], "{dtype}");
                tokens = [tokens[0] + 1, tokens[1] + 3];
            }
            let before = ALLOCS.load(Ordering::SeqCst);
            for _ in 0..16 {
                m.decode_step(&tokens, &mut cache, &mut logits).unwrap();
                tokens = [tokens[0] + 1, tokens[1] + 3];
            }
            let after = ALLOCS.load(Ordering::SeqCst);
            assert_eq!(after - before, 0, "{dtype}: {} allocations in 16 decode steps", after - before);
            assert_eq!(cache.len(), 9 + 20);
        });
    }
}

#[test]
fn decode_step_rejects_bad_buffers() {
    let m = model(WeightDtype::F32);
    let mut cache = KvCache::new(m.config(), 2, 8).unwrap();
    let mut logits = vec![0f32; 2 * 3000];
    assert!(matches!(m.decode_step(&[1], &mut cache, &mut logits), Err(gpt2::Error::Shape(_))));
    assert!(matches!(m.decode_step(&[1, 2], &mut cache, &mut logits[..10]), Err(gpt2::Error::Shape(_))));
    assert!(matches!(m.decode_step(&[1, 3000], &mut cache, &mut logits), Err(gpt2::Error::TokenOutOfVocab { .. })));
    m.decode_step(&[1, 2], &mut cache, &mut logits).unwrap();
    assert_eq!(cache.len(), 1);
}
