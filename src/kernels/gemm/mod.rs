//! Packed, cache-blocked GEMM with run-time selected micro-kernels and fused epilogues.
//!
//! `C[m, n] = epilogue(A[m, k] · B[k, n])`, where the epilogue adds a bias row, adds the
//! previous contents of C (a residual connection, or gradient accumulation), and/or applies
//! GELU — in the micro-kernel's registers, before C is written once.
//!
//! Structure (BLIS-like, tuned for AVX-512 with 2–16 cores):
//! - **B** is packed into panels of 32 columns with their whole depth contiguous (see
//!   [`PackedB`]); weights can be packed once ahead of time (f32, f16, bf16 or int8), other
//!   operands are packed per call in column chunks, in parallel.
//! - **A** is read in place (row- or column-major), so activations are never copied; only a
//!   partial last row block is copied into a zero-padded tile.
//! - The output is cut into tiles (≤ 512 columns × enough rows for ≥ 4 tasks per thread) that
//!   rayon runs in parallel; within a tile K is blocked by 256 so the B block stays in L2 and
//!   the 14 A rows of the current micro-tile stay in L1.
//! - Micro-kernels: AVX-512 14×32 (28 accumulators), AVX2+FMA 6×16, portable 4×16; with
//!   bf16 weights and AVX512-BF16, a 14×32 `vdpbf16ps` kernel on bf16-rounded activations.
//!   f16 and int8 weights are widened to f32 one L2-sized block at a time.
//! - Eight rows or fewer ([`SMALL_M`]): the memory-bound GEMV path in `kernels::gemv` (private).

pub mod packed;
pub(crate) mod ukernel;

use rayon::prelude::*;

use packed::{bf16_bits, PackedData};
pub use packed::{PackedB, WeightDtype};
use ukernel::{F32Kernel, TileEpi, PANEL};

/// Rows at or below which [`gemm`] uses the streaming GEMV kernels (decode).
pub const SMALL_M: usize = 8;

/// Row counts up to this use [`SMALL_M`]-row GEMV passes instead of the packed GEMM.
const GEMV_CHUNKED_M: usize = 16;
/// Depth of one K block (f32 elements; bf16 uses the same number of pairs ÷ 2).
pub(crate) const KC: usize = 256;
/// Widest output tile.
const NB_MAX: usize = 512;
/// Floats of on-the-fly packed B per chunk (16 MiB).
const PACK_CHUNK: usize = 1 << 22;

/// A read-only strided f32 matrix: element `(i, j)` is `data[i·rs + j·cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatRef<'a> {
    /// A `[rows, cols]` view with row stride `rs` and column stride `cs`.
    ///
    /// # Panics
    /// If the last element lies outside `data`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        if rows > 0 && cols > 0 {
            let last = (rows - 1) * rs + (cols - 1) * cs;
            assert!(last < data.len(), "MatRef [{rows}, {cols}] (strides {rs}, {cs}) exceeds {} values", data.len());
        }
        MatRef { data, rows, cols, rs, cs }
    }

    /// A contiguous row-major `[rows, cols]` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        MatRef { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row stride.
    pub fn rs(&self) -> usize {
        self.rs
    }

    /// Column stride.
    pub fn cs(&self) -> usize {
        self.cs
    }

    /// Backing slice.
    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    /// Element `(i, j)`.
    #[inline]
    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs]
    }
}

/// The right-hand operand of [`gemm`].
#[derive(Clone, Copy, Debug)]
pub enum BMat<'a> {
    /// Plain f32 (packed per call).
    F32(MatRef<'a>),
    /// Packed ahead of time (any [`WeightDtype`]).
    Packed(&'a PackedB),
}

impl BMat<'_> {
    /// `(k, n)`.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            BMat::F32(m) => (m.rows(), m.cols()),
            BMat::Packed(p) => (p.k(), p.n()),
        }
    }
}

/// What happens to `A·B` before it is stored: `C = gelu?(A·B + bias + (accumulate ? C : 0))`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// Added to every row (`[n]`).
    pub bias: Option<&'a [f32]>,
    /// Add the previous contents of C (residual add, gradient accumulation).
    pub accumulate: bool,
    /// Apply GELU (tanh form) last.
    pub gelu: bool,
}

impl<'a> Epilogue<'a> {
    /// Only a bias.
    pub fn bias(bias: &'a [f32]) -> Self {
        Epilogue { bias: Some(bias), ..Default::default() }
    }
}

/// `C[m, n] = epilogue(A[m, k] · B[k, n])`, C row-major with leading dimension `ldc`.
///
/// Shapes: a `[m, k]`, b `[k, n]`, c `[m, ldc]` (ldc ≥ n), bias `[n]`.
///
/// ```
/// use gpt2::kernels::gemm::{gemm, BMat, Epilogue, MatRef};
/// let a = [1.0, 2.0, 3.0, 4.0]; // [2, 2]
/// let b = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]; // [2, 3]
/// let mut c = [10.0; 6];
/// let epi = Epilogue { bias: Some(&[0.5, 0.5, 0.5]), accumulate: true, gelu: false };
/// gemm(&mut c, 3, MatRef::row_major(&a, 2, 2), BMat::F32(MatRef::row_major(&b, 2, 3)), epi);
/// assert_eq!(c, [11.5, 12.5, 13.5, 13.5, 14.5, 17.5]);
/// ```
///
/// # Panics
/// If the shapes disagree or a buffer is too small.
pub fn gemm(c: &mut [f32], ldc: usize, a: MatRef<'_>, b: BMat<'_>, epi: Epilogue<'_>) {
    gemm_with(&ukernel::f32_kernel(), true, true, c, ldc, a, b, epi)
}

/// Name of the f32 micro-kernel [`gemm`] uses on this CPU (e.g. `"avx512-14x32"`).
pub fn kernel_name() -> &'static str {
    ukernel::f32_kernel().name
}

/// Whether bf16 weights use the `vdpbf16ps` kernel here (AVX512-BF16).
pub fn has_bf16_dot() -> bool {
    ukernel::bf16_kernel().is_some()
}

/// Raw pointer that may cross threads; every task writes a disjoint region.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub *mut T);
// SAFETY: tasks write disjoint regions (documented at each use).
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    #[inline(always)]
    pub fn get(self) -> *mut T {
        self.0
    }
}

#[derive(Clone, Copy)]
struct ConstPtr<T>(*const T);
// SAFETY: read-only shared data.
unsafe impl<T> Send for ConstPtr<T> {}
unsafe impl<T> Sync for ConstPtr<T> {}
impl<T> ConstPtr<T> {
    #[inline(always)]
    fn get(self) -> *const T {
        self.0
    }
}

fn check_shapes(c: &[f32], ldc: usize, a: &MatRef<'_>, b: &BMat<'_>, epi: &Epilogue<'_>) -> (usize, usize, usize) {
    let (m, k) = (a.rows(), a.cols());
    let (kb, n) = b.dims();
    assert_eq!(k, kb, "gemm: A is [{m}, {k}] but B is [{kb}, {n}]");
    assert!(ldc >= n, "gemm: ldc {ldc} < n {n}");
    if m > 0 && n > 0 {
        assert!(c.len() >= (m - 1) * ldc + n, "gemm: C has {} values, needs [{m}, {n}] with ldc {ldc}", c.len());
    }
    if let Some(bias) = epi.bias {
        assert!(bias.len() >= n, "gemm: bias has {} values, n = {n}", bias.len());
    }
    (m, k, n)
}

/// [`gemm`] with an explicit micro-kernel (tests run every kernel the CPU supports).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_with(
    ker: &F32Kernel,
    allow_gemv: bool,
    allow_bf16: bool,
    c: &mut [f32],
    ldc: usize,
    a: MatRef<'_>,
    b: BMat<'_>,
    epi: Epilogue<'_>,
) {
    let (m, k, n) = check_shapes(c, ldc, &a, &b, &epi);
    if m == 0 || n == 0 {
        return;
    }
    if allow_gemv && m <= SMALL_M && super::gemv::gemv(c, ldc, a, b, epi) {
        return;
    }
    if allow_gemv && m <= GEMV_CHUNKED_M && a.cs() == 1 {
        // Short prompts: a few GEMV passes of ≤ SMALL_M rows each stream the weights directly
        // (no B packing, whose cost is not amortised over so few rows).
        let (rs, data) = (a.rs(), a.data());
        let mut r0 = 0;
        while r0 < m {
            let r1 = (r0 + SMALL_M).min(m);
            let rows = MatRef::new(&data[r0 * rs..(r1 - 1) * rs + k], r1 - r0, k, rs, 1);
            if !super::gemv::gemv(&mut c[r0 * ldc..], ldc, rows, b, epi) {
                break;
            }
            r0 = r1;
        }
        if r0 == m {
            return;
        }
        assert_eq!(r0, 0, "gemm: GEMV chunks stopped part-way");
    }
    // A in place when one of its strides is 1, else a row-major copy.
    let copy;
    let asrc = if a.cs() == 1 {
        ASrc { ptr: ConstPtr(a.data().as_ptr()), lda: a.rs(), rows: true }
    } else if a.rs() == 1 {
        ASrc { ptr: ConstPtr(a.data().as_ptr()), lda: a.cs(), rows: false }
    } else {
        copy = (0..m * k).map(|x| a.at(x / k, x % k)).collect::<Vec<f32>>();
        ASrc { ptr: ConstPtr(copy.as_ptr()), lda: k, rows: true }
    };
    let ctx = Ctx { m, k, c: SendPtr(c.as_mut_ptr()), ldc, epi };
    match b {
        BMat::F32(bm) => {
            let chunk = ((PACK_CHUNK / k.max(1)) / PANEL * PANEL).max(PANEL);
            let mut buf: Vec<f32> = Vec::new();
            for j0 in (0..n).step_by(chunk) {
                let w = chunk.min(n - j0);
                let np = w.div_ceil(PANEL);
                buf.clear();
                buf.resize(np * k * PANEL, 0.0);
                pack_f32_panels(&mut buf, bm, j0, w);
                let src = BSrc::F32 { ptr: ConstPtr(buf.as_ptr()), pstride: k * PANEL, col0: j0 };
                run_tiles_f32(&ctx, ker, &asrc, j0, j0 + w, &src);
            }
        }
        BMat::Packed(pb) => match &pb.data {
            PackedData::F32(d) => {
                let src = BSrc::F32 { ptr: ConstPtr(d.as_ptr()), pstride: k * PANEL, col0: 0 };
                run_tiles_f32(&ctx, ker, &asrc, 0, n, &src);
            }
            PackedData::Bf16(d) if allow_bf16 && ukernel::bf16_kernel().is_some() => {
                let (mr, kern) = ukernel::bf16_kernel().expect("checked");
                run_bf16(&ctx, mr, kern, a, d, n);
            }
            _ => run_tiles_f32(&ctx, ker, &asrc, 0, n, &BSrc::Convert(pb)),
        },
    }
}

/// Where the micro-kernel reads A.
#[derive(Clone, Copy)]
struct ASrc {
    ptr: ConstPtr<f32>,
    lda: usize,
    /// Row-major (`a[i·lda + p]`) or column-major (`a[i + p·lda]`).
    rows: bool,
}

enum BSrc<'a> {
    /// f32 panels; panel of column `j` at `ptr + (j − col0)/32 · pstride`.
    F32 { ptr: ConstPtr<f32>, pstride: usize, col0: usize },
    /// Packed low-precision weights, widened per block.
    Convert(&'a PackedB),
}
// SAFETY: BSrc only holds read-only pointers to data that outlives the call.
unsafe impl Sync for BSrc<'_> {}

struct Ctx<'a> {
    m: usize,
    k: usize,
    c: SendPtr<f32>,
    ldc: usize,
    epi: Epilogue<'a>,
}

/// Tile sizes `(mb, nb)` for `m` rows and `ncols` columns: ≤ 512 columns, and enough row
/// blocks for about four tasks per thread.
fn plan(m: usize, ncols: usize, mr: usize, threads: usize) -> (usize, usize) {
    let nt = ncols.div_ceil(NB_MAX).max(1);
    let nb = ncols.div_ceil(nt).next_multiple_of(PANEL);
    let nt = ncols.div_ceil(nb);
    let want = 4 * threads.max(1);
    let mt = want.div_ceil(nt).max(1);
    let mb = m.div_ceil(mt).next_multiple_of(mr).max(mr);
    (mb, nb)
}

/// Packs columns `j0..j0+w` of `b` into `[w/32][k][32]` f32 panels (in parallel).
fn pack_f32_panels(dst: &mut [f32], b: MatRef<'_>, j0: usize, w: usize) {
    let k = b.rows();
    if k == 0 {
        return;
    }
    dst.par_chunks_mut(k * PANEL).enumerate().for_each(|(p, panel)| {
        let c0 = j0 + p * PANEL;
        let cw = PANEL.min(j0 + w - c0);
        if b.cs() == 1 {
            let rs = b.rs();
            let data = b.data();
            for (pp, drow) in panel.chunks_exact_mut(PANEL).enumerate() {
                drow[..cw].copy_from_slice(&data[pp * rs + c0..pp * rs + c0 + cw]);
            }
        } else if b.rs() == 1 {
            // transposed source: column j is contiguous; transpose through L1-sized blocks
            let cs = b.cs();
            let data = b.data();
            const KB: usize = 64;
            for p0 in (0..k).step_by(KB) {
                let p1 = (p0 + KB).min(k);
                for j in 0..cw {
                    let src = &data[(c0 + j) * cs + p0..(c0 + j) * cs + p1];
                    for (q, &v) in src.iter().enumerate() {
                        panel[(p0 + q) * PANEL + j] = v;
                    }
                }
            }
        } else {
            for pp in 0..k {
                for j in 0..cw {
                    panel[pp * PANEL + j] = b.at(pp, c0 + j);
                }
            }
        }
    });
}

/// Per-task scratch: a zero-padded A tail tile and widened B blocks.
#[derive(Default)]
struct Scratch {
    a_tail: Vec<f32>,
    b: Vec<f32>,
}

fn run_tiles_f32(ctx: &Ctx<'_>, ker: &F32Kernel, a: &ASrc, j0: usize, j1: usize, b: &BSrc<'_>) {
    let threads = rayon::current_num_threads();
    let (mb, nb) = plan(ctx.m, j1 - j0, ker.mr, threads);
    let (mt, nt) = (ctx.m.div_ceil(mb), (j1 - j0).div_ceil(nb));
    let job = |s: &mut Scratch, t: usize| {
        let (ti, tj) = (t / nt, t % nt);
        let (m0, c0) = (ti * mb, j0 + tj * nb);
        // SAFETY: tiles are disjoint in C; all pointers were bounds-checked by the caller.
        unsafe { tile_f32(ctx, ker, a, m0, (m0 + mb).min(ctx.m), c0, (c0 + nb).min(j1), b, s) };
    };
    if mt * nt == 1 || threads == 1 {
        let mut s = Scratch::default();
        (0..mt * nt).for_each(|t| job(&mut s, t));
    } else {
        (0..mt * nt).into_par_iter().for_each_init(Scratch::default, job);
    }
}

/// One output tile `[m0, m1) × [c0, c1)`.
///
/// # Safety
/// The tile lies inside C and no other task writes it; A and B cover the ranges read.
#[allow(clippy::too_many_arguments)]
unsafe fn tile_f32(
    ctx: &Ctx<'_>,
    ker: &F32Kernel,
    a: &ASrc,
    m0: usize,
    m1: usize,
    c0: usize,
    c1: usize,
    b: &BSrc<'_>,
    s: &mut Scratch,
) {
    let k = ctx.k;
    let mr = ker.mr;
    let nkb = k.div_ceil(KC).max(1);
    for kb in 0..nkb {
        let pc = kb * KC;
        let kc = KC.min(k - pc);
        let first = kb == 0;
        let (bbase, pstride): (*const f32, usize) = match b {
            BSrc::F32 { ptr, pstride, col0 } => (ptr.0.add((c0 - col0) / PANEL * pstride + pc * PANEL), *pstride),
            BSrc::Convert(pb) => {
                let (pa, pz) = (c0 / PANEL, c1.div_ceil(PANEL));
                s.b.resize((pz - pa) * kc * PANEL, 0.0);
                pb.to_f32_panels(pa, pz, pc, kc, &mut s.b);
                (s.b.as_ptr(), kc * PANEL)
            }
        };
        let epi = TileEpi {
            load_c: ctx.epi.accumulate || !first,
            bias: std::ptr::null(),
            gelu: ctx.epi.gelu && kb + 1 == nkb,
        };
        for ir in (m0..m1).step_by(mr) {
            let mrr = mr.min(m1 - ir);
            let (ap, lda, rows) = if mrr == mr && a.rows && a.lda % 1024 == 0 && c1 - c0 > 2 * PANEL {
                // rows 4 KiB-multiples apart all land in the same L1 sets: copy the block to a
                // padded stride (reused by every micro-tile of this row block)
                let ld = kc + 16;
                s.a_tail.clear();
                s.a_tail.resize(mr * ld, 0.0);
                for i in 0..mr {
                    let src = std::slice::from_raw_parts(a.ptr.0.add((ir + i) * a.lda + pc), kc);
                    s.a_tail[i * ld..i * ld + kc].copy_from_slice(src);
                }
                (s.a_tail.as_ptr(), ld, true)
            } else if mrr == mr {
                let p = if a.rows { a.ptr.0.add(ir * a.lda + pc) } else { a.ptr.0.add(ir + pc * a.lda) };
                (p, a.lda, a.rows)
            } else {
                s.a_tail.clear();
                s.a_tail.resize(mr * kc, 0.0);
                for i in 0..mrr {
                    for p in 0..kc {
                        s.a_tail[i * kc + p] = if a.rows {
                            *a.ptr.0.add((ir + i) * a.lda + pc + p)
                        } else {
                            *a.ptr.0.add(ir + i + (pc + p) * a.lda)
                        };
                    }
                }
                (s.a_tail.as_ptr(), kc, true)
            };
            let kern = if rows { ker.rows } else { ker.cols };
            // rows of the next A block, one per micro-tile call, so it is in cache when needed
            let next = ir + mr;
            let prefetch_next = a.rows && next + mr <= m1;
            for (t, jt) in (c0..c1).step_by(ker.nr).enumerate() {
                if prefetch_next && t < mr {
                    let row = a.ptr.get().add((next + t) * a.lda + pc);
                    for q in (0..kc).step_by(16) {
                        prefetch(row.add(q));
                    }
                }
                let rel = jt - c0;
                let bp = bbase.add(rel / PANEL * pstride + rel % PANEL);
                let cp = ctx.c.get().add(ir * ctx.ldc + jt);
                let mut e = epi;
                if first {
                    if let Some(bias) = ctx.epi.bias {
                        e.bias = bias.as_ptr().add(jt);
                    }
                }
                kern(kc, ap, lda, bp, cp, ctx.ldc, mrr, ker.nr.min(c1 - jt), e);
            }
        }
    }
}

/// Single-threaded `C[m, n] (+)= A[m, k] · B[k, n]` for small products inside other kernels
/// (attention tiles): A row-major (`lda`), B as f32 panels (`b` = row 0 of the first panel,
/// panels `pstride` apart), C row-major (`ldc`); `load_c` accumulates. K is one block.
///
/// # Safety
/// A readable for `m` rows × `k`, B for `⌈n/32⌉` panels × `k` rows, C writable for `m × n`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_seq(
    ker: &F32Kernel,
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    pstride: usize,
    c: *mut f32,
    ldc: usize,
    load_c: bool,
    tail: &mut Vec<f32>,
) {
    let mr = ker.mr;
    let epi = TileEpi { load_c, bias: std::ptr::null(), gelu: false };
    for ir in (0..m).step_by(mr) {
        let mrr = mr.min(m - ir);
        let (ap, la) = if mrr == mr {
            (a.add(ir * lda), lda)
        } else {
            tail.clear();
            tail.resize(mr * k, 0.0);
            for i in 0..mrr {
                tail[i * k..(i + 1) * k].copy_from_slice(std::slice::from_raw_parts(a.add((ir + i) * lda), k));
            }
            (tail.as_ptr(), k)
        };
        for jt in (0..n).step_by(ker.nr) {
            let bp = b.add(jt / PANEL * pstride + jt % PANEL);
            (ker.rows)(k, ap, la, bp, c.add(ir * ldc + jt), ldc, mrr, ker.nr.min(n - jt), epi);
        }
    }
}

/// Hints the cache line holding `p` into L1 (a no-op off x86-64).
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// bf16 weights with `vdpbf16ps`: A rounded to bf16 pairs once, then tiles as in f32.
fn run_bf16(ctx: &Ctx<'_>, mr: usize, kern: ukernel::UkrBf16, a: MatRef<'_>, bdata: &[u32], n: usize) {
    let (m, k) = (ctx.m, ctx.k);
    let kp = k.div_ceil(2);
    let mut abf = vec![0u32; m * kp];
    abf.par_chunks_mut(kp.max(1) * 16).enumerate().for_each(|(blk, rows)| {
        for (r, row) in rows.chunks_exact_mut(kp.max(1)).enumerate() {
            let i = blk * 16 + r;
            if a.cs() == 1 && k > 0 {
                // a contiguous row in bf16 is exactly the (even, odd) pair layout
                bf16_row(&a.data()[i * a.rs()..i * a.rs() + k], row);
                continue;
            }
            for (pp, w) in row.iter_mut().enumerate() {
                let lo = bf16_bits(a.at(i, 2 * pp)) as u32;
                let hi = if 2 * pp + 1 < k { bf16_bits(a.at(i, 2 * pp + 1)) as u32 } else { 0 };
                *w = lo | hi << 16;
            }
        }
    });
    let threads = rayon::current_num_threads();
    let (mb, nb) = plan(m, n, mr, threads);
    let (mt, nt) = (m.div_ceil(mb), n.div_ceil(nb));
    let ap = ConstPtr(abf.as_ptr());
    let bp = ConstPtr(bdata.as_ptr());
    let kcp = KC / 2;
    let job = |tail: &mut Vec<u32>, t: usize| {
        let (ti, tj) = (t / nt, t % nt);
        let (m0, c0) = (ti * mb, tj * nb);
        let (m1, c1) = ((m0 + mb).min(m), (c0 + nb).min(n));
        let nkb = kp.div_ceil(kcp).max(1);
        for kb in 0..nkb {
            let pc = kb * kcp;
            let kc = kcp.min(kp - pc);
            let first = kb == 0;
            let epi = TileEpi {
                load_c: ctx.epi.accumulate || !first,
                bias: std::ptr::null(),
                gelu: ctx.epi.gelu && kb + 1 == nkb,
            };
            for ir in (m0..m1).step_by(mr) {
                let mrr = mr.min(m1 - ir);
                // SAFETY: rows ir..ir+mr exist when mrr == mr; else a zero-padded copy is used.
                let (aptr, lda) = unsafe {
                    if mrr == mr {
                        (ap.get().add(ir * kp + pc), kp)
                    } else {
                        tail.clear();
                        tail.resize(mr * kc, 0);
                        for i in 0..mrr {
                            tail[i * kc..(i + 1) * kc]
                                .copy_from_slice(std::slice::from_raw_parts(ap.get().add((ir + i) * kp + pc), kc));
                        }
                        (tail.as_ptr(), kc)
                    }
                };
                for jt in (c0..c1).step_by(PANEL) {
                    let mut e = epi;
                    // SAFETY: panel jt/32 exists; the (ir, jt) tile belongs to this task.
                    unsafe {
                        if first {
                            if let Some(bias) = ctx.epi.bias {
                                e.bias = bias.as_ptr().add(jt);
                            }
                        }
                        let b = bp.get().add((jt / PANEL) * kp * PANEL + pc * PANEL);
                        let cp = ctx.c.get().add(ir * ctx.ldc + jt);
                        kern(kc, aptr, lda, b, cp, ctx.ldc, mrr, PANEL.min(c1 - jt), e);
                    }
                }
            }
        }
    };
    if mt * nt == 1 || threads == 1 {
        let mut tail = Vec::new();
        (0..mt * nt).for_each(|t| job(&mut tail, t));
    } else {
        (0..mt * nt).into_par_iter().for_each_init(Vec::new, job);
    }
}

/// Rounds a row to bf16 (nearest even) into `(even, odd)` pairs; an odd tail gets a zero partner.
fn bf16_row(src: &[f32], dst: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::has_avx512_bf16() {
        // SAFETY: feature detected; `dst` holds ⌈len/2⌉ pairs.
        unsafe { bf16_row_avx512(src, dst) };
        return;
    }
    for (pp, w) in dst.iter_mut().enumerate() {
        let lo = bf16_bits(src[2 * pp]) as u32;
        let hi = src.get(2 * pp + 1).map_or(0, |&x| bf16_bits(x) as u32);
        *w = lo | hi << 16;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx512vl,avx512bw")]
unsafe fn bf16_row_avx512(src: &[f32], dst: &mut [u32]) {
    use std::arch::x86_64::*;
    let n = src.len();
    let d = dst.as_mut_ptr() as *mut u16;
    let mut j = 0;
    while j + 16 <= n {
        let v: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(_mm512_loadu_ps(src.as_ptr().add(j))));
        _mm256_storeu_si256(d.add(j) as *mut __m256i, v);
        j += 16;
    }
    while j < n {
        *d.add(j) = bf16_bits(src[j]);
        j += 1;
    }
    if n % 2 == 1 {
        *d.add(n) = 0;
    }
}

/// Naive oracle: `c = gelu?(a·b + bias + (accumulate ? c : 0))`, sums in f64.
pub fn gemm_naive(c: &mut [f32], ldc: usize, a: MatRef<'_>, b: MatRef<'_>, epi: Epilogue<'_>) {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    assert_eq!(k, b.rows());
    for i in 0..m {
        for j in 0..n {
            let mut s: f64 = (0..k).map(|p| a.at(i, p) as f64 * b.at(p, j) as f64).sum();
            if let Some(bias) = epi.bias {
                s += bias[j] as f64;
            }
            if epi.accumulate {
                s += c[i * ldc + j] as f64;
            }
            let v = s as f32;
            c[i * ldc + j] = if epi.gelu { super::gelu::gelu_naive(v) } else { v };
        }
    }
}

#[cfg(test)]
mod tests;
