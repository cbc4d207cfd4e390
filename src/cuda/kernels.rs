//! The element-wise and reduction kernels of the GPU forward pass: CUDA C source
//! in `kernels.cu` (in this folder), compiled once per [`CudaModel`](super::CudaModel)
//! with NVRTC and launched on the model's stream.
//!
//! Each launcher below states the shapes it expects; pointers are raw device
//! addresses (`u64`) into buffers the caller keeps alive until the stream has
//! run past the launch (see the module docs of [`crate::cuda`]).

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};

use super::{driver_err, DevPtr};
use crate::device::WeightDtype;
use crate::error::{Error, Result};

/// CUDA C source of every kernel (compiled at run time by NVRTC).
pub const SOURCE: &str = include_str!("kernels.cu");

/// Names of the `extern "C"` kernels in [`SOURCE`] that `Kernels::load` looks up.
pub const NAMES: [&str; 12] = [
    "embed_f32",
    "embed_f16",
    "embed_bf16",
    "layernorm",
    "gelu_tanh",
    "add_bias",
    "add_inplace",
    "cast_f16",
    "cast_bf16",
    "kv_scatter",
    "attention",
    "nll_rows",
];

/// Threads per block of the row kernels (layernorm, attention, NLL): a multiple of 32.
const ROW_THREADS: u32 = 256;
/// Threads per block of the element-wise kernels.
const ELEM_THREADS: u32 = 256;
/// Static shared memory a block may use without opting in to more.
const MAX_SHARED_BYTES: usize = 48 * 1024;

/// Loaded kernel handles.
#[derive(Debug)]
pub(crate) struct Kernels {
    embed_f32: CudaFunction,
    embed_f16: CudaFunction,
    embed_bf16: CudaFunction,
    layernorm: CudaFunction,
    gelu_tanh: CudaFunction,
    add_bias: CudaFunction,
    add_inplace: CudaFunction,
    cast_f16: CudaFunction,
    cast_bf16: CudaFunction,
    kv_scatter: CudaFunction,
    attention: CudaFunction,
    nll_rows: CudaFunction,
}

fn elems(n: usize) -> Result<LaunchConfig> {
    let blocks = n.div_ceil(ELEM_THREADS as usize);
    let blocks = u32::try_from(blocks).map_err(|_| Error::Device(format!("{n} elements exceed one launch")))?;
    Ok(LaunchConfig { grid_dim: (blocks.max(1), 1, 1), block_dim: (ELEM_THREADS, 1, 1), shared_mem_bytes: 0 })
}

fn rows(n: usize) -> Result<LaunchConfig> {
    let blocks = u32::try_from(n).map_err(|_| Error::Device(format!("{n} rows exceed one launch")))?;
    Ok(LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (ROW_THREADS, 1, 1), shared_mem_bytes: 0 })
}

/// `usize` → `u32` kernel argument, or a typed error.
pub(crate) fn u32_arg(x: usize, what: &str) -> Result<u32> {
    u32::try_from(x).map_err(|_| Error::Device(format!("{what} = {x} does not fit a 32-bit kernel argument")))
}

impl Kernels {
    /// Compiles [`SOURCE`] with NVRTC and loads every kernel into `ctx`.
    pub fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        let opts = CompileOptions { name: Some("gpt2_kernels.cu".into()), ..Default::default() };
        let ptx = compile_ptx_with_opts(SOURCE, opts)
            .map_err(|e| Error::Device(format!("NVRTC failed to compile the crate's kernels: {e:?}")))?;
        let module = ctx.load_module(ptx).map_err(|e| driver_err(e, "loading the kernel module"))?;
        let f = |name: &str| module.load_function(name).map_err(|e| driver_err(e, &format!("loading kernel `{name}`")));
        Ok(Kernels {
            embed_f32: f("embed_f32")?,
            embed_f16: f("embed_f16")?,
            embed_bf16: f("embed_bf16")?,
            layernorm: f("layernorm")?,
            gelu_tanh: f("gelu_tanh")?,
            add_bias: f("add_bias")?,
            add_inplace: f("add_inplace")?,
            cast_f16: f("cast_f16")?,
            cast_bf16: f("cast_bf16")?,
            kv_scatter: f("kv_scatter")?,
            attention: f("attention")?,
            nll_rows: f("nll_rows")?,
        })
    }

    /// `x[n, c] = wte[tok[r]] + wpe[pos[r]]`; `wte` `[V, c]` in `dtype`, `wpe` `[P, c]` f32.
    #[allow(clippy::too_many_arguments)]
    pub fn embed(
        &self,
        s: &CudaStream,
        x: DevPtr,
        tok: DevPtr,
        pos: DevPtr,
        wte: DevPtr,
        dtype: WeightDtype,
        wpe: DevPtr,
        n: usize,
        c: usize,
    ) -> Result<()> {
        let f = match dtype {
            WeightDtype::F32 => &self.embed_f32,
            WeightDtype::F16 => &self.embed_f16,
            WeightDtype::Bf16 => &self.embed_bf16,
        };
        let (n32, c32) = (u32_arg(n, "rows")?, u32_arg(c, "n_embd")?);
        let mut b = s.launch_builder(f);
        b.arg(&x.0).arg(&tok.0).arg(&pos.0).arg(&wte.0).arg(&wpe.0).arg(&n32).arg(&c32);
        // SAFETY: argument list matches the kernel signature; buffers hold n*c, n, n, V*c, P*c
        // elements and token/position ids were validated on the host.
        unsafe { b.launch(elems(n * c)?) }.map(drop).map_err(|e| driver_err(e, "embed"))
    }

    /// Layernorm of `n` rows of width `c`: `out = ln(x) * w + b`.
    #[allow(clippy::too_many_arguments)]
    pub fn layernorm(
        &self,
        s: &CudaStream,
        out: DevPtr,
        x: DevPtr,
        w: DevPtr,
        bias: DevPtr,
        n: usize,
        c: usize,
        eps: f32,
    ) -> Result<()> {
        let c32 = u32_arg(c, "n_embd")?;
        let mut b = s.launch_builder(&self.layernorm);
        b.arg(&out.0).arg(&x.0).arg(&w.0).arg(&bias.0).arg(&c32).arg(&eps);
        // SAFETY: signature matches; out and x hold n*c floats, w and bias c floats.
        unsafe { b.launch(rows(n)?) }.map(drop).map_err(|e| driver_err(e, "layernorm"))
    }

    /// In-place tanh GELU on `n` floats.
    pub fn gelu(&self, s: &CudaStream, x: DevPtr, n: usize) -> Result<()> {
        let n64 = n as u64;
        let mut b = s.launch_builder(&self.gelu_tanh);
        b.arg(&x.0).arg(&n64);
        // SAFETY: signature matches; x holds n floats.
        unsafe { b.launch(elems(n)?) }.map(drop).map_err(|e| driver_err(e, "gelu"))
    }

    /// `y[rows, m] += bias[m]`.
    pub fn add_bias(&self, s: &CudaStream, y: DevPtr, bias: DevPtr, n_rows: usize, m: usize) -> Result<()> {
        let (r64, m32) = (n_rows as u64, u32_arg(m, "width")?);
        let mut b = s.launch_builder(&self.add_bias);
        b.arg(&y.0).arg(&bias.0).arg(&r64).arg(&m32);
        // SAFETY: signature matches; y holds rows*m floats, bias m floats.
        unsafe { b.launch(elems(n_rows * m)?) }.map(drop).map_err(|e| driver_err(e, "add_bias"))
    }

    /// `x[n] += y[n]`.
    pub fn add_inplace(&self, s: &CudaStream, x: DevPtr, y: DevPtr, n: usize) -> Result<()> {
        let n64 = n as u64;
        let mut b = s.launch_builder(&self.add_inplace);
        b.arg(&x.0).arg(&y.0).arg(&n64);
        // SAFETY: signature matches; x and y hold n floats.
        unsafe { b.launch(elems(n)?) }.map(drop).map_err(|e| driver_err(e, "add_inplace"))
    }

    /// `out[n] = dtype(in[n])` for `dtype` f16 or bf16 (f32 is a caller error).
    pub fn cast(&self, s: &CudaStream, out: DevPtr, input: DevPtr, n: usize, dtype: WeightDtype) -> Result<()> {
        let f = match dtype {
            WeightDtype::F16 => &self.cast_f16,
            WeightDtype::Bf16 => &self.cast_bf16,
            WeightDtype::F32 => return Err(Error::Device("internal: cast to f32 requested".into())),
        };
        let n64 = n as u64;
        let mut b = s.launch_builder(f);
        b.arg(&out.0).arg(&input.0).arg(&n64);
        // SAFETY: signature matches; out holds n u16, input n floats.
        unsafe { b.launch(elems(n)?) }.map(drop).map_err(|e| driver_err(e, "cast"))
    }

    /// Writes k and v of `qkv[b, t, 3·nh·hd]` into `kc`/`vc` `[b, nh, cap, hd]` at `past..past+t`.
    #[allow(clippy::too_many_arguments)]
    pub fn kv_scatter(
        &self,
        s: &CudaStream,
        kc: DevPtr,
        vc: DevPtr,
        qkv: DevPtr,
        (bsz, t, nh, hd): (usize, usize, usize, usize),
        cap: usize,
        past: usize,
    ) -> Result<()> {
        let a = [u32_arg(bsz, "batch")?, u32_arg(t, "t")?, u32_arg(nh, "n_head")?, u32_arg(hd, "head_dim")?];
        let (cap32, past32) = (u32_arg(cap, "capacity")?, u32_arg(past, "past")?);
        let mut b = s.launch_builder(&self.kv_scatter);
        b.arg(&kc.0).arg(&vc.0).arg(&qkv.0).arg(&a[0]).arg(&a[1]).arg(&a[2]).arg(&a[3]).arg(&cap32).arg(&past32);
        // SAFETY: signature matches; past + t <= cap was checked by the caller.
        unsafe { b.launch(elems(bsz * t * nh * hd)?) }.map(drop).map_err(|e| driver_err(e, "kv_scatter"))
    }

    /// Causal attention, `out[b, t, nh·hd]`; `mask` is `[b, past + t]` bytes or null (0).
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        s: &CudaStream,
        out: DevPtr,
        qkv: DevPtr,
        kc: DevPtr,
        vc: DevPtr,
        mask: DevPtr,
        (bsz, t, nh, hd): (usize, usize, usize, usize),
        cap: usize,
        past: usize,
        scale: f32,
    ) -> Result<()> {
        let shared = (hd + past + t) * std::mem::size_of::<f32>();
        if shared > MAX_SHARED_BYTES - 33 * 4 {
            return Err(Error::Device(format!(
                "attention over {} keys needs {shared} bytes of shared memory (limit {MAX_SHARED_BYTES})",
                past + t
            )));
        }
        let (t32, nh32, hd32) = (u32_arg(t, "t")?, u32_arg(nh, "n_head")?, u32_arg(hd, "head_dim")?);
        let (cap32, past32) = (u32_arg(cap, "capacity")?, u32_arg(past, "past")?);
        let cfg = LaunchConfig {
            grid_dim: (t32, nh32, u32_arg(bsz, "batch")?),
            block_dim: (ROW_THREADS, 1, 1),
            shared_mem_bytes: shared as u32,
        };
        let mut b = s.launch_builder(&self.attention);
        b.arg(&out.0).arg(&qkv.0).arg(&kc.0).arg(&vc.0).arg(&mask.0);
        b.arg(&t32).arg(&nh32).arg(&hd32).arg(&cap32).arg(&past32).arg(&scale);
        // SAFETY: signature matches; caches hold b*nh*cap*hd floats with past + t <= cap
        // positions written; mask (when non-null) holds b*(past+t) bytes.
        unsafe { b.launch(cfg) }.map(drop).map_err(|e| driver_err(e, "attention"))
    }

    /// `nll[r] = logsumexp(logits[r]) − logits[r, target[r]]` for `n` rows of width `v`.
    pub fn nll_rows(
        &self,
        s: &CudaStream,
        nll: DevPtr,
        logits: DevPtr,
        target: DevPtr,
        n: usize,
        v: usize,
    ) -> Result<()> {
        let v32 = u32_arg(v, "vocab_size")?;
        let mut b = s.launch_builder(&self.nll_rows);
        b.arg(&nll.0).arg(&logits.0).arg(&target.0).arg(&v32);
        // SAFETY: signature matches; targets were validated (< v) on the host.
        unsafe { b.launch(rows(n)?) }.map(drop).map_err(|e| driver_err(e, "nll_rows"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without NVRTC we cannot compile the source here; at least every kernel the
    /// Rust side loads must be declared, `extern "C"`, exactly once.
    #[test]
    fn every_loaded_kernel_is_declared_once() {
        for name in NAMES {
            let decl = format!("__global__ void {name}(");
            let macro_use = format!("EMBED({name},");
            let n = SOURCE.matches(&decl).count() + SOURCE.matches(&macro_use).count();
            assert_eq!(n, 1, "kernel `{name}` declared {n} times");
        }
        assert_eq!(SOURCE.matches("__global__").count(), SOURCE.matches("extern \"C\" __global__").count());
        // No header includes: NVRTC is given no include path.
        assert!(!SOURCE.contains("#include"));
    }

    #[test]
    fn launch_shapes() {
        let c = elems(1000).unwrap();
        assert_eq!(c.grid_dim.0, 4);
        assert_eq!(elems(0).unwrap().grid_dim.0, 1);
        assert_eq!(rows(7).unwrap().grid_dim.0, 7);
        assert!(u32_arg(1 << 40, "x").is_err());
    }
}
