//! Pre-packed right-hand operands (weights) in f32, f16, bf16 or int8.
//!
//! A [`PackedB`] holds a logical `B[k, n]` cut into panels of 32 columns, each panel stored
//! with its full depth contiguous, so both the GEMM (any K block of a panel is one
//! contiguous slice) and the decode GEMV (one linear stream per panel) read it sequentially:
//!
//! | dtype | layout (zero-padded to whole panels) |
//! |---|---|
//! | f32, f16 | `[n/32][k][32]` |
//! | bf16 | `[n/32][k/2][32]` `u32` pairs: lane j holds `(B[2p, j], B[2p+1, j])` (the `vdpbf16ps` operand) |
//! | int8 | `[n/32][k][32]` `i8` plus one f32 scale per column (symmetric, per output channel) |
//!
//! Reduced-precision values are rounded to nearest-even from f32; products are always
//! accumulated in f32.

use std::fmt;
use std::str::FromStr;

use half::f16;
use rayon::prelude::*;

use super::ukernel::PANEL;
use super::MatRef;
use crate::error::{Error, Result};

/// Storage type of inference weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WeightDtype {
    /// 32-bit float (the master copy; nothing extra is stored).
    #[default]
    F32,
    /// IEEE half precision: f16 storage, f32 arithmetic.
    F16,
    /// bfloat16: bf16 storage; prefill multiplies bf16 × bf16 with f32 accumulation
    /// (`vdpbf16ps`) where the CPU has AVX512-BF16, decode multiplies by f32 activations.
    BF16,
    /// int8 with one f32 scale per output channel (weight-only; f32 activations).
    Int8,
}

impl WeightDtype {
    /// Short name: `"f32"`, `"f16"`, `"bf16"` or `"int8"`.
    pub fn label(self) -> &'static str {
        match self {
            WeightDtype::F32 => "f32",
            WeightDtype::F16 => "f16",
            WeightDtype::BF16 => "bf16",
            WeightDtype::Int8 => "int8",
        }
    }

    /// Bytes per stored weight.
    pub fn size(self) -> usize {
        match self {
            WeightDtype::F32 => 4,
            WeightDtype::F16 | WeightDtype::BF16 => 2,
            WeightDtype::Int8 => 1,
        }
    }
}

impl fmt::Display for WeightDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl FromStr for WeightDtype {
    type Err = Error;

    /// Parses `f32`/`float32`, `f16`/`fp16`/`float16`/`half`, `bf16`/`bfloat16`, `int8`/`i8`/`q8`.
    ///
    /// ```
    /// use gpt2::WeightDtype;
    /// assert_eq!("bf16".parse::<WeightDtype>().unwrap(), WeightDtype::BF16);
    /// assert!("f8".parse::<WeightDtype>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" | "float" => Ok(WeightDtype::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(WeightDtype::F16),
            "bf16" | "bfloat16" => Ok(WeightDtype::BF16),
            "int8" | "i8" | "q8" => Ok(WeightDtype::Int8),
            other => Err(Error::arg("dtype", format!("unknown weight dtype `{other}` (f32, f16, bf16, int8)"))),
        }
    }
}

#[derive(Clone)]
pub(crate) enum PackedData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    /// Pairs along k, `u32` = (low: even k, high: odd k).
    Bf16(Vec<u32>),
    I8 {
        q: Vec<i8>,
        scale: Vec<f32>,
    },
}

/// A weight matrix `B[k, n]` packed for [`gemm`](super::gemm) and the decode GEMV.
///
/// ```
/// use gpt2::kernels::gemm::{gemm, BMat, Epilogue, MatRef, PackedB, WeightDtype};
/// let (m, k, n) = (3, 4, 5);
/// let a: Vec<f32> = (0..m * k).map(|i| i as f32).collect();
/// let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 - 3.0).collect();
/// let packed = PackedB::new(MatRef::row_major(&b, k, n), WeightDtype::BF16);
/// let mut c = vec![0.0; m * n];
/// gemm(&mut c, n, MatRef::row_major(&a, m, k), BMat::Packed(&packed), Epilogue::default());
/// // small integers are exact in bf16
/// assert_eq!(c[0], (0..k).map(|p| a[p] * b[p * n]).sum::<f32>());
/// ```
#[derive(Clone)]
pub struct PackedB {
    k: usize,
    n: usize,
    pub(crate) data: PackedData,
}

impl fmt::Debug for PackedB {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PackedB {{ k: {}, n: {}, dtype: {}, bytes: {} }}", self.k, self.n, self.dtype(), self.bytes())
    }
}

impl PackedB {
    /// Packs `b` (`[k, n]`, any strides) in `dtype`, converting from f32 (round to nearest even;
    /// int8: symmetric per-column scale `max|B[:, j]| / 127`).
    pub fn new(b: MatRef<'_>, dtype: WeightDtype) -> Self {
        let (k, n) = (b.rows(), b.cols());
        let np = n.div_ceil(PANEL);
        let data = match dtype {
            WeightDtype::F32 => {
                let mut d = vec![0f32; np * k * PANEL];
                pack_panels(&mut d, b, k, |x| x);
                PackedData::F32(d)
            }
            WeightDtype::F16 => {
                let mut d = vec![f16::ZERO; np * k * PANEL];
                pack_panels(&mut d, b, k, f16::from_f32);
                PackedData::F16(d)
            }
            WeightDtype::BF16 => {
                let kp = k.div_ceil(2);
                let mut d = vec![0u32; np * kp * PANEL];
                d.par_chunks_mut(kp * PANEL).enumerate().for_each(|(p, panel)| {
                    for j in 0..PANEL.min(n - p * PANEL) {
                        let col = p * PANEL + j;
                        for pp in 0..kp {
                            let lo = bf16_bits(b.at(2 * pp, col));
                            let hi = if 2 * pp + 1 < k { bf16_bits(b.at(2 * pp + 1, col)) } else { 0 };
                            panel[pp * PANEL + j] = lo as u32 | (hi as u32) << 16;
                        }
                    }
                });
                PackedData::Bf16(d)
            }
            WeightDtype::Int8 => {
                let mut scale = vec![1f32; np * PANEL];
                scale[..n].par_iter_mut().enumerate().for_each(|(j, s)| {
                    let amax = (0..k).map(|p| b.at(p, j).abs()).fold(0f32, f32::max);
                    *s = if amax > 0.0 && amax.is_finite() { amax / 127.0 } else { 1.0 };
                });
                let mut q = vec![0i8; np * k * PANEL];
                q.par_chunks_mut(k * PANEL).enumerate().for_each(|(p, panel)| {
                    for j in 0..PANEL.min(n - p * PANEL) {
                        let col = p * PANEL + j;
                        let inv = 1.0 / scale[col];
                        for pp in 0..k {
                            panel[pp * PANEL + j] = (b.at(pp, col) * inv).round().clamp(-127.0, 127.0) as i8;
                        }
                    }
                });
                PackedData::I8 { q, scale }
            }
        };
        PackedB { k, n, data }
    }

    /// Rows of `B` (the shared dimension).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of `B`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Storage type.
    pub fn dtype(&self) -> WeightDtype {
        match self.data {
            PackedData::F32(_) => WeightDtype::F32,
            PackedData::F16(_) => WeightDtype::F16,
            PackedData::Bf16(_) => WeightDtype::BF16,
            PackedData::I8 { .. } => WeightDtype::Int8,
        }
    }

    /// Bytes of packed storage (padding and scales included).
    pub fn bytes(&self) -> usize {
        match &self.data {
            PackedData::F32(d) => d.len() * 4,
            PackedData::F16(d) => d.len() * 2,
            PackedData::Bf16(d) => d.len() * 4,
            PackedData::I8 { q, scale } => q.len() + scale.len() * 4,
        }
    }

    /// Number of 32-column panels.
    pub(crate) fn panels(&self) -> usize {
        self.n.div_ceil(PANEL)
    }

    /// The stored (rounded) value of `B[p, j]` as f32.
    pub fn get(&self, p: usize, j: usize) -> f32 {
        assert!(p < self.k && j < self.n, "PackedB::get({p}, {j}) outside [{}, {}]", self.k, self.n);
        let (panel, jj) = (j / PANEL, j % PANEL);
        match &self.data {
            PackedData::F32(d) => d[(panel * self.k + p) * PANEL + jj],
            PackedData::F16(d) => d[(panel * self.k + p) * PANEL + jj].to_f32(),
            PackedData::Bf16(d) => {
                let w = d[(panel * self.k.div_ceil(2) + p / 2) * PANEL + jj];
                bf16_to_f32(if p.is_multiple_of(2) { w as u16 } else { (w >> 16) as u16 })
            }
            PackedData::I8 { q, scale } => q[(panel * self.k + p) * PANEL + jj] as f32 * scale[j],
        }
    }

    /// Writes rows `p0..p0+kc` of panels `pa..pb` as f32 into `out` (`[pb-pa][kc][32]`).
    pub(crate) fn to_f32_panels(&self, pa: usize, pb: usize, p0: usize, kc: usize, out: &mut [f32]) {
        let k = self.k;
        for (slot, panel) in (pa..pb).enumerate() {
            let dst = &mut out[slot * kc * PANEL..(slot + 1) * kc * PANEL];
            match &self.data {
                PackedData::F32(d) => dst.copy_from_slice(&d[(panel * k + p0) * PANEL..(panel * k + p0 + kc) * PANEL]),
                PackedData::F16(d) => {
                    let src = &d[(panel * k + p0) * PANEL..(panel * k + p0 + kc) * PANEL];
                    f16_to_f32_slice(src, dst);
                }
                PackedData::Bf16(d) => {
                    let kp = k.div_ceil(2);
                    for r in 0..kc {
                        let p = p0 + r;
                        let row = &d[(panel * kp + p / 2) * PANEL..][..PANEL];
                        let even = p.is_multiple_of(2);
                        for (o, &w) in dst[r * PANEL..(r + 1) * PANEL].iter_mut().zip(row) {
                            *o = f32::from_bits(if even { w << 16 } else { w & 0xffff_0000 });
                        }
                    }
                }
                PackedData::I8 { q, scale } => {
                    let s = &scale[panel * PANEL..(panel + 1) * PANEL];
                    let src = &q[(panel * k + p0) * PANEL..(panel * k + p0 + kc) * PANEL];
                    for (orow, qrow) in dst.chunks_exact_mut(PANEL).zip(src.chunks_exact(PANEL)) {
                        for ((o, &qv), &sv) in orow.iter_mut().zip(qrow).zip(s) {
                            *o = qv as f32 * sv;
                        }
                    }
                }
            }
        }
    }
}

/// Rounds to bf16 (nearest even; NaN stays NaN) and returns the bits.
#[inline]
pub(crate) fn bf16_bits(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

/// bf16 bits → f32 (exact).
#[inline]
pub(crate) fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// f16 → f32 for a slice (F16C when the CPU has it).
pub(crate) fn f16_to_f32_slice(src: &[f16], dst: &mut [f32]) {
    use half::slice::HalfFloatSliceExt;
    src.convert_to_f32_slice(&mut dst[..src.len()]);
}

/// Packs `b` into `[np][k][32]` panels of `T`, zero-padding the last panel.
fn pack_panels<T: Copy + Send + Sync + Default>(
    dst: &mut [T],
    b: MatRef<'_>,
    k: usize,
    conv: impl Fn(f32) -> T + Sync,
) {
    let n = b.cols();
    dst.par_chunks_mut((k * PANEL).max(1)).enumerate().for_each(|(p, panel)| {
        let j0 = p * PANEL;
        let w = PANEL.min(n - j0);
        if b.cs() == 1 {
            for pp in 0..k {
                let src = &b.data()[pp * b.rs() + j0..][..w];
                for (d, &s) in panel[pp * PANEL..pp * PANEL + w].iter_mut().zip(src) {
                    *d = conv(s);
                }
            }
        } else {
            for j in 0..w {
                for pp in 0..k {
                    panel[pp * PANEL + j] = conv(b.at(pp, j0 + j));
                }
            }
        }
    });
}
