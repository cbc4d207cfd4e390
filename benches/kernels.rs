//! Kernel benchmarks on GPT-2 124M shapes.
//!
//! `cargo bench --bench kernels [-- FILTER]`. Throughput units: for `matmul` and `attention`
//! one "element" is one floating-point operation (criterion prints Gelem/s = GFLOP/s); `gemv`
//! reports bytes of weights read; the element-wise kernels report bytes of their input.
//! Groups:
//! - `matmul`: prefill `[1024, 768]·[768, 2304 | 3072]`, `[1024, 3072]·[3072, 768]` (Conv1D
//!   weights, bias epilogue) and the LM head `[256, 768]·[768, 50257]` (tied `wte`, transposed);
//!   plus one shape on one thread against `matrixmultiply`'s sgemm (the previous kernel).
//! - `matmul_dtype`: the `[1024, 768]·[768, 3072]` prefill with packed f32/f16/bf16/int8 weights.
//! - `gemv`: one-token decode `[1, K]·[K, N]` for f32 (unpacked) and packed f16/bf16/int8.
//! - `layernorm`, `gelu`, `softmax`: `[1024, 768]`, `[1024, 3072]`, rows of 1024 and 50257.
//! - `attention`: causal prefill, 12 heads of 64, T = 64…1024; one decode query over T keys.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gpt2::kernels::attention::{attention_forward, AttnDims, HeadView};
use gpt2::kernels::gelu::gelu_inplace;
use gpt2::kernels::gemm::{gemm, BMat, Epilogue, MatRef, PackedB, WeightDtype};
use gpt2::kernels::layernorm::layernorm_forward;
use gpt2::kernels::softmax::softmax_inplace;

fn data(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| (((i * 7919 + seed * 104_729) % 2000) as f32 - 1000.0) * 1e-3).collect()
}

fn matmul(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    for &(m, k, n, transposed) in &[
        (1024usize, 768usize, 2304usize, false),
        (1024, 768, 3072, false),
        (1024, 3072, 768, false),
        (256, 768, 50257, true),
    ] {
        let a = data(m * k, 1);
        let w = data(k * n, 2);
        let bias = data(n, 3);
        let mut out = vec![0f32; m * n];
        let b = if transposed { MatRef::row_major(&w, n, k).t() } else { MatRef::row_major(&w, k, n) };
        let epi = if transposed { Epilogue::default() } else { Epilogue::bias(&bias) };
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let name = format!("{m}x{k}x{n}{}", if transposed { "t" } else { "" });
        g.bench_function(BenchmarkId::new("gemm", &name), |bench| {
            bench.iter(|| gemm(&mut out, n, MatRef::row_major(&a, m, k), BMat::F32(b), epi))
        });
    }
    // one thread: the packed micro-kernel against matrixmultiply's sgemm
    let (m, k, n) = (256usize, 768usize, 3072usize);
    let (a, w) = (data(m * k, 1), data(k * n, 2));
    let mut out = vec![0f32; m * n];
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool");
    g.throughput(Throughput::Elements((2 * m * k * n) as u64));
    g.bench_function(BenchmarkId::new("gemm_1thread", format!("{m}x{k}x{n}")), |bench| {
        bench.iter(|| {
            pool.install(|| {
                gemm(
                    &mut out,
                    n,
                    MatRef::row_major(&a, m, k),
                    BMat::F32(MatRef::row_major(&w, k, n)),
                    Epilogue::default(),
                )
            })
        })
    });
    g.bench_function(BenchmarkId::new("matrixmultiply_1thread", format!("{m}x{k}x{n}")), |bench| {
        bench.iter(|| {
            // SAFETY: all three matrices are contiguous row-major buffers of the stated sizes.
            unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    k as isize,
                    1,
                    w.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    out.as_mut_ptr(),
                    n as isize,
                    1,
                )
            }
        })
    });
    g.finish();
}

fn matmul_dtype(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul_dtype");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    let (m, k, n) = (1024usize, 768usize, 3072usize);
    let a = data(m * k, 1);
    let w = data(k * n, 2);
    let mut out = vec![0f32; m * n];
    g.throughput(Throughput::Elements((2 * m * k * n) as u64));
    for dtype in [WeightDtype::F32, WeightDtype::F16, WeightDtype::BF16, WeightDtype::Int8] {
        let p = PackedB::new(MatRef::row_major(&w, k, n), dtype);
        g.bench_function(BenchmarkId::new(dtype.label(), format!("{m}x{k}x{n}")), |bench| {
            bench.iter(|| gemm(&mut out, n, MatRef::row_major(&a, m, k), BMat::Packed(&p), Epilogue::default()))
        });
    }
    g.finish();
}

fn gemv(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemv");
    g.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    for &(k, n, transposed) in
        &[(768usize, 2304usize, false), (768, 3072, false), (3072, 768, false), (768, 50257, true)]
    {
        let x = data(k, 1);
        let w = data(k * n, 2);
        let mut out = vec![0f32; n];
        let b = if transposed { MatRef::row_major(&w, n, k).t() } else { MatRef::row_major(&w, k, n) };
        let name = format!("1x{k}x{n}{}", if transposed { "t" } else { "" });
        g.throughput(Throughput::Bytes((k * n * 4) as u64));
        g.bench_function(BenchmarkId::new("f32", &name), |bench| {
            bench.iter(|| gemm(&mut out, n, MatRef::row_major(&x, 1, k), BMat::F32(b), Epilogue::default()))
        });
        for dtype in [WeightDtype::F16, WeightDtype::BF16, WeightDtype::Int8] {
            let p = PackedB::new(b, dtype);
            g.throughput(Throughput::Bytes(p.bytes() as u64));
            g.bench_function(BenchmarkId::new(dtype.label(), &name), |bench| {
                bench.iter(|| gemm(&mut out, n, MatRef::row_major(&x, 1, k), BMat::Packed(&p), Epilogue::default()))
            });
        }
    }
    g.finish();
}

fn elementwise(c: &mut Criterion) {
    let mut g = c.benchmark_group("elementwise");
    g.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    let (n, ch) = (1024usize, 768usize);
    let x = data(n * ch, 1);
    let (w, b) = (data(ch, 2), data(ch, 3));
    let mut out = vec![0f32; n * ch];
    g.throughput(Throughput::Bytes((n * ch * 4) as u64));
    g.bench_function(BenchmarkId::new("layernorm", format!("{n}x{ch}")), |bench| {
        bench.iter(|| layernorm_forward(&mut out, None, None, &x, &w, &b, ch, 1e-5))
    });
    let mut h = data(n * 3072, 4);
    g.throughput(Throughput::Bytes((n * 3072 * 4) as u64));
    g.bench_function(BenchmarkId::new("gelu", format!("{n}x3072")), |bench| bench.iter(|| gelu_inplace(&mut h)));
    for &(rows, len) in &[(1024usize, 1024usize), (8, 50257)] {
        let mut s = data(rows * len, 5);
        g.throughput(Throughput::Bytes((rows * len * 4) as u64));
        g.bench_function(BenchmarkId::new("softmax", format!("{rows}x{len}")), |bench| {
            bench.iter(|| s.chunks_exact_mut(len).for_each(softmax_inplace))
        });
    }
    g.finish();
}

fn attention(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    let (nh, hd) = (12usize, 64usize);
    let ch = nh * hd;
    for &t in &[64usize, 128, 256, 512, 1024] {
        let qkv = data(t * 3 * ch, 1);
        let mut out = vec![0f32; t * ch];
        let (q, k, v) = (
            HeadView::from_qkv(&qkv, 0, t, ch, hd),
            HeadView::from_qkv(&qkv, 1, t, ch, hd),
            HeadView::from_qkv(&qkv, 2, t, ch, hd),
        );
        let d = AttnDims::new(1, t, 0, nh, hd);
        // causal: QKᵀ and PV over t(t+1)/2 query-key pairs
        g.throughput(Throughput::Elements((4 * nh * hd * t * (t + 1) / 2) as u64));
        g.bench_function(BenchmarkId::new("prefill", format!("T{t}")), |bench| {
            bench.iter(|| attention_forward(&mut out, None, q, k, v, None, d))
        });
        // one new query over t cached keys ([1, NH, t, hd] cache layout)
        let kc = data(nh * t * hd, 2);
        let vc = data(nh * t * hd, 3);
        let qd = data(ch, 4);
        let q1 = HeadView { data: &qd, b_stride: ch, h_stride: hd, t_stride: ch };
        let kv = HeadView { data: &kc, b_stride: nh * t * hd, h_stride: t * hd, t_stride: hd };
        let vv = HeadView { data: &vc, ..kv };
        let d1 = AttnDims::new(1, 1, t - 1, nh, hd);
        let mut o1 = vec![0f32; ch];
        g.throughput(Throughput::Elements((4 * nh * hd * t) as u64));
        g.bench_function(BenchmarkId::new("decode", format!("T{t}")), |bench| {
            bench.iter(|| attention_forward(&mut o1, None, q1, kv, vv, None, d1))
        });
    }
    g.finish();
}

criterion_group!(benches, matmul, matmul_dtype, gemv, elementwise, attention);
criterion_main!(benches);
