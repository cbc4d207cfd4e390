//! GEMM / GEMV against the f64 oracle on odd shapes, every layout, epilogue and micro-kernel.

use super::packed::bf16_bits;
use super::ukernel::all_kernels;
use super::*;

pub(crate) fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

fn tol(k: usize) -> f32 {
    1e-6 + 4e-7 * k as f32
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (9, 1, 3),
    (13, 7, 5),
    (14, 32, 32),
    (15, 33, 33),
    (28, 256, 64),
    (29, 257, 65),
    (100, 300, 97),
    (9, 513, 40),
    (47, 600, 530),
    (30, 1024, 200),
    (12, 0, 10),
];

/// The A operand in three layouts holding the same logical matrix.
fn a_layouts(a: &[f32], m: usize, k: usize) -> Vec<(&'static str, Vec<f32>, usize, usize)> {
    let mut col = vec![0f32; m * k];
    let mut strided = vec![0f32; m * (k + 3) * 2 + 1];
    for i in 0..m {
        for p in 0..k {
            col[p * m + i] = a[i * k + p];
            strided[i * (k + 3) * 2 + p * 2] = a[i * k + p];
        }
    }
    vec![("row", a.to_vec(), k, 1), ("col", col, 1, m), ("strided", strided, (k + 3) * 2, 2)]
}

#[test]
fn every_kernel_layout_and_epilogue_matches_oracle() {
    for ker in all_kernels() {
        for &(m, k, n) in SHAPES {
            let a = rand_vec(m * k, 1);
            let b = rand_vec(k * n, 2);
            let bias = rand_vec(n, 3);
            let c0 = rand_vec(m * (n + 2), 4);
            let bt: Vec<f32> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect(); // [n, k]
            let packed = PackedB::new(MatRef::row_major(&b, k, n), WeightDtype::F32);
            for (aname, adata, rs, cs) in a_layouts(&a, m, k) {
                let am = MatRef::new(&adata, m, k, rs, cs);
                let bmats = [
                    ("b-row", BMat::F32(MatRef::row_major(&b, k, n))),
                    ("b-t", BMat::F32(MatRef::row_major(&bt, n, k).t())),
                    ("b-packed", BMat::Packed(&packed)),
                ];
                for (bname, bm) in bmats {
                    for (ename, epi) in [
                        ("plain", Epilogue::default()),
                        ("bias", Epilogue::bias(&bias)),
                        ("acc", Epilogue { accumulate: true, ..Default::default() }),
                        ("all", Epilogue { bias: Some(&bias), accumulate: true, gelu: true }),
                        ("gelu", Epilogue { bias: Some(&bias), accumulate: false, gelu: true }),
                    ] {
                        let ldc = n + 2;
                        let mut want = c0.clone();
                        gemm_naive(&mut want, ldc, MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n), epi);
                        let mut got = c0.clone();
                        gemm_with(&ker, false, true, &mut got, ldc, am, bm, epi);
                        let d = max_diff(&got, &want);
                        assert!(d <= tol(k), "{} {aname} {bname} {ename} ({m},{k},{n}): {d}", ker.name);
                        // padding columns of C untouched
                        for i in 0..m {
                            assert_eq!(&got[i * ldc + n..i * ldc + ldc], &c0[i * ldc + n..i * ldc + ldc]);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn gemv_path_matches_oracle_for_small_m() {
    // up to SMALL_M rows: one GEMV pass; up to GEMV_CHUNKED_M: several passes of ≤ SMALL_M rows
    for m in 1..=GEMV_CHUNKED_M {
        for &(k, n) in &[(1, 1), (7, 5), (33, 47), (768, 97), (300, 1000), (64, 2048)] {
            let a = rand_vec(m * k, 5 + m as u64);
            let b = rand_vec(k * n, 6);
            let bias = rand_vec(n, 7);
            let bt: Vec<f32> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect();
            let epis = [
                Epilogue::default(),
                Epilogue { bias: Some(&bias), accumulate: true, gelu: false },
                Epilogue { bias: Some(&bias), accumulate: false, gelu: true },
            ];
            for epi in epis {
                let c0 = rand_vec(m * n, 8);
                let mut want = c0.clone();
                gemm_naive(&mut want, n, MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n), epi);
                for (name, bm) in [
                    ("row", BMat::F32(MatRef::row_major(&b, k, n))),
                    ("t", BMat::F32(MatRef::row_major(&bt, n, k).t())),
                ] {
                    let mut got = c0.clone();
                    gemm(&mut got, n, MatRef::row_major(&a, m, k), bm, epi);
                    let d = max_diff(&got, &want);
                    assert!(d <= tol(k), "gemv {name} m={m} ({k},{n}): {d}");
                }
                for dtype in [WeightDtype::F32, WeightDtype::F16, WeightDtype::BF16, WeightDtype::Int8] {
                    let pb = PackedB::new(MatRef::row_major(&b, k, n), dtype);
                    // oracle on the stored (rounded) weights: only accumulation error remains
                    let stored: Vec<f32> = (0..k * n).map(|x| pb.get(x / n, x % n)).collect();
                    let mut want = c0.clone();
                    gemm_naive(&mut want, n, MatRef::row_major(&a, m, k), MatRef::row_major(&stored, k, n), epi);
                    let mut got = c0.clone();
                    gemm(&mut got, n, MatRef::row_major(&a, m, k), BMat::Packed(&pb), epi);
                    let d = max_diff(&got, &want);
                    assert!(d <= tol(k), "gemv packed {dtype} m={m} ({k},{n}): {d}");
                }
            }
        }
    }
}

#[test]
fn packed_low_precision_gemm_matches_oracle_on_stored_weights() {
    for &(m, k, n) in &[(9, 1, 3), (15, 33, 33), (29, 257, 65), (100, 300, 97), (30, 600, 530)] {
        let a = rand_vec(m * k, 11);
        let b = rand_vec(k * n, 12);
        let bias = rand_vec(n, 13);
        let epi = Epilogue { bias: Some(&bias), accumulate: true, gelu: true };
        let c0 = rand_vec(m * n, 14);
        for dtype in [WeightDtype::F16, WeightDtype::BF16, WeightDtype::Int8] {
            let pb = PackedB::new(MatRef::row_major(&b, k, n), dtype);
            let stored: Vec<f32> = (0..k * n).map(|x| pb.get(x / n, x % n)).collect();
            let mut want = c0.clone();
            gemm_naive(&mut want, n, MatRef::row_major(&a, m, k), MatRef::row_major(&stored, k, n), epi);
            // widening path (every kernel)
            for ker in all_kernels() {
                let mut got = c0.clone();
                gemm_with(&ker, false, false, &mut got, n, MatRef::row_major(&a, m, k), BMat::Packed(&pb), epi);
                let d = max_diff(&got, &want);
                assert!(d <= tol(k), "{} {dtype} ({m},{k},{n}): {d}", ker.name);
            }
            if dtype == WeightDtype::BF16 && has_bf16_dot() {
                // vdpbf16ps also rounds A to bf16: compare with that oracle
                let abf: Vec<f32> = a.iter().map(|&x| packed::bf16_to_f32(bf16_bits(x))).collect();
                let mut want = c0.clone();
                gemm_naive(&mut want, n, MatRef::row_major(&abf, m, k), MatRef::row_major(&stored, k, n), epi);
                let mut got = c0.clone();
                // the GEMM path (short row counts take the GEMV path, which keeps A in f32)
                let ker = ukernel::f32_kernel();
                gemm_with(&ker, false, true, &mut got, n, MatRef::row_major(&a, m, k), BMat::Packed(&pb), epi);
                let d = max_diff(&got, &want);
                assert!(d <= tol(k), "bf16 dot ({m},{k},{n}): {d}");
            }
        }
    }
}

#[test]
fn packed_rounding_error_is_bounded() {
    let (k, n) = (70, 45);
    let b: Vec<f32> = rand_vec(k * n, 21).iter().map(|x| x * 7.0).collect();
    for (dtype, rel) in [(WeightDtype::F32, 0.0), (WeightDtype::F16, 1.0 / 2048.0), (WeightDtype::BF16, 1.0 / 256.0)] {
        let pb = PackedB::new(MatRef::row_major(&b, k, n), dtype);
        for p in 0..k {
            for j in 0..n {
                let (x, y) = (b[p * n + j], pb.get(p, j));
                assert!((x - y).abs() <= rel * x.abs(), "{dtype} {x} → {y}");
            }
        }
    }
    let pb = PackedB::new(MatRef::row_major(&b, k, n), WeightDtype::Int8);
    for j in 0..n {
        let amax = (0..k).map(|p| b[p * n + j].abs()).fold(0f32, f32::max);
        for p in 0..k {
            assert!((b[p * n + j] - pb.get(p, j)).abs() <= amax / 254.0 * 1.0001);
        }
    }
    assert_eq!(pb.dtype(), WeightDtype::Int8);
    assert_eq!((pb.k(), pb.n()), (k, n));
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let (m, k, n) = (300, 700, 300);
    let a = rand_vec(m * k, 31);
    let b = rand_vec(k * n, 32);
    let bias = rand_vec(n, 33);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let mut c = vec![0f32; m * n];
        pool.install(|| {
            gemm(
                &mut c,
                n,
                MatRef::row_major(&a, m, k),
                BMat::F32(MatRef::row_major(&b, k, n)),
                Epilogue { bias: Some(&bias), accumulate: false, gelu: true },
            )
        });
        c
    };
    assert_eq!(run(1), run(3));
}

#[test]
#[should_panic(expected = "gemm: A is")]
fn mismatched_shapes_panic_with_a_message() {
    let a = [0f32; 6];
    let b = [0f32; 6];
    let mut c = [0f32; 4];
    gemm(&mut c, 2, MatRef::row_major(&a, 2, 3), BMat::F32(MatRef::row_major(&b, 2, 3)), Epilogue::default());
}

#[test]
fn chunked_gemv_reads_strided_rows() {
    // A is a [m, k] window (row stride k + 5) of a wider buffer; m spans two GEMV chunks.
    let (m, k, n) = (13, 70, 45);
    let lda = k + 5;
    let buf = rand_vec(m * lda, 21);
    let a = MatRef::new(&buf, m, k, lda, 1);
    let b = rand_vec(k * n, 22);
    let dense: Vec<f32> = (0..m * k).map(|x| buf[(x / k) * lda + x % k]).collect();
    let mut want = vec![0f32; m * n];
    gemm_naive(&mut want, n, MatRef::row_major(&dense, m, k), MatRef::row_major(&b, k, n), Epilogue::default());
    let mut got = vec![0f32; m * n];
    gemm(&mut got, n, a, BMat::F32(MatRef::row_major(&b, k, n)), Epilogue::default());
    let d = max_diff(&got, &want);
    assert!(d <= tol(k), "strided chunked gemv: {d}");
}
