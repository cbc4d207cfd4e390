//! GPT-2 inference on NVIDIA GPUs (the `cuda` feature): cuBLAS matmuls and a
//! few small NVRTC-compiled kernels, through [`cudarc`] with the CUDA libraries
//! loaded at run time (the crate builds without the CUDA toolkit).
//!
//! * [`CudaModel::new`] uploads a [`Gpt2`](crate::Gpt2)'s weights once (matmul
//!   weights in f32, f16 or bf16; everything else f32) and compiles the kernels.
//! * [`CudaModel::forward`] takes the same [`ForwardInput`](crate::ForwardInput)
//!   and [`ForwardOptions`](crate::ForwardOptions) as the CPU model and returns a
//!   [`ForwardOutput`](crate::ForwardOutput); activations stay on the device and
//!   only what the options ask for (logits, all or last position; hidden states)
//!   is copied back.
//! * [`CudaKvCache`] keeps keys and values on the device for prefill + decode.
//! * [`CudaModel::token_nll`] computes per-token negative log-likelihoods on the
//!   device, so loss/perplexity never copies `[N, V]` logits back.
//!
//! Errors from the driver, cuBLAS or NVRTC become [`Error::Device`] with the
//! cause spelled out (no driver, no device, bad ordinal, out of memory).
//!
//! # Execution model and safety
//!
//! Each model owns one CUDA stream and one cuBLAS handle; every launch, copy and
//! GEMM of a forward call is queued on that stream, in order, under the model's
//! lock (so a model can be shared between threads: calls are serialised). Kernels
//! take raw device addresses (`DevPtr`) into buffers owned by the model, the
//! cache or the call's workspace, all of which outlive the stream work because
//! each call ends by synchronising the stream (the copies back to the host need
//! that anyway). cudarc's per-buffer event tracking is switched off since there
//! is a single stream.
//!
//! ```no_run
//! # fn main() -> gpt2::Result<()> {
//! use gpt2::cuda::CudaModel;
//! use gpt2::device::WeightDtype;
//! use gpt2::{Device, Gpt2};
//! let cpu = Gpt2::load("fixtures/models/tiny")?;
//! let gpu = CudaModel::new(&cpu, Device::Cuda(0), WeightDtype::F16)?;
//! let logits = gpu.logits(&[1, 2, 3])?; // [3, vocab_size]
//! println!("{} {} {:?}", gpu.device_label(), gpu.dtype_label(), logits.dim());
//! # Ok(())
//! # }
//! ```

mod cache;
pub mod gemm;
pub mod kernels;
mod model;
mod weights;

use std::sync::Arc;

use cudarc::driver::result::DriverError;
use cudarc::driver::sys::CUresult;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DeviceRepr, ValidAsZeroBits};

pub use cache::CudaKvCache;
pub use model::CudaModel;

use crate::error::{Error, Result};

/// A raw device address (0 = null), passed to kernels and cuBLAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DevPtr(pub u64);

impl DevPtr {
    /// The null pointer (optional kernel arguments).
    pub const NULL: DevPtr = DevPtr(0);
}

/// A device buffer of `T` with element-offset addressing.
#[derive(Debug)]
pub(crate) struct DevBuf<T> {
    slice: CudaSlice<T>,
    base: u64,
}

impl<T: DeviceRepr + ValidAsZeroBits> DevBuf<T> {
    /// `len` zeroed elements (at least one, so the address is never null).
    pub fn zeros(stream: &Arc<CudaStream>, len: usize, what: &str) -> Result<Self> {
        let slice = stream.alloc_zeros::<T>(len.max(1)).map_err(|e| {
            driver_err(e, &format!("allocating {what} ({:.1} MiB)", (len * size_of::<T>()) as f64 / (1 << 20) as f64))
        })?;
        Ok(Self::wrap(slice, stream))
    }

    /// A new buffer holding `data`.
    pub fn upload(stream: &Arc<CudaStream>, data: &[T], what: &str) -> Result<Self> {
        let slice = stream.clone_htod(data).map_err(|e| {
            driver_err(
                e,
                &format!("uploading {what} ({:.1} MiB)", std::mem::size_of_val(data) as f64 / (1 << 20) as f64),
            )
        })?;
        Ok(Self::wrap(slice, stream))
    }

    fn wrap(slice: CudaSlice<T>, stream: &Arc<CudaStream>) -> Self {
        // Event tracking is off (single stream), so the guard returned with the address is inert.
        let base = {
            let (base, _guard) = slice.device_ptr(stream);
            base
        };
        DevBuf { slice, base }
    }
}

impl<T> DevBuf<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.slice.len()
    }

    /// Address of element `i` (`i == len` allowed, as for slices).
    pub fn at(&self, i: usize) -> DevPtr {
        assert!(i <= self.slice.len(), "device offset {i} past buffer of {}", self.slice.len());
        DevPtr(self.base + (i * size_of::<T>()) as u64)
    }

    /// Address of element 0.
    pub fn ptr(&self) -> DevPtr {
        DevPtr(self.base)
    }

    /// Copies `src` into elements `at..at + src.len()` (queued on `stream`; the host
    /// buffer may be dropped on return: pageable copies are staged by the driver).
    pub fn write(&mut self, stream: &CudaStream, at: usize, src: &[T]) -> Result<()> {
        assert!(at + src.len() <= self.len(), "device write past the buffer");
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: the destination range lies inside this buffer (checked above).
        unsafe { cudarc::driver::result::memcpy_htod_async(self.at(at).0, src, stream.cu_stream()) }
            .map_err(|e| driver_err(e, "copying to the device"))
    }

    /// Copies elements `at..at + dst.len()` to `dst` and waits for the stream
    /// (so every earlier launch has finished and its errors surface here).
    pub fn read(&self, stream: &CudaStream, at: usize, dst: &mut [T]) -> Result<()> {
        assert!(at + dst.len() <= self.len(), "device read past the buffer");
        if !dst.is_empty() {
            // SAFETY: the source range lies inside this buffer (checked above).
            unsafe { cudarc::driver::result::memcpy_dtoh_async(dst, self.at(at).0, stream.cu_stream()) }
                .map_err(|e| driver_err(e, "copying from the device"))?;
        }
        stream.synchronize().map_err(|e| driver_err(e, "running the forward pass"))
    }
}

/// Turns a driver error into [`Error::Device`], naming the common causes.
pub(crate) fn driver_err(e: DriverError, what: &str) -> Error {
    match e.0 {
        CUresult::CUDA_ERROR_OUT_OF_MEMORY => Error::Device(format!("out of GPU memory while {what}")),
        CUresult::CUDA_ERROR_NO_DEVICE => Error::Device("no CUDA device found (the driver reports none)".into()),
        CUresult::CUDA_ERROR_INVALID_DEVICE => Error::Device(format!("invalid CUDA device ordinal while {what}")),
        _ => Error::Device(format!("CUDA error while {what}: {e:?}")),
    }
}

/// Number of CUDA devices; an error when the driver library is missing or fails.
///
/// Never panics: cudarc's loader panics when a library or symbol is missing, so
/// presence is checked first and the driver calls run under `catch_unwind`.
pub(crate) fn device_count() -> Result<usize> {
    // SAFETY: only tries to open the shared library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(Error::Device(
            "no CUDA driver: libcuda could not be loaded (is an NVIDIA driver installed?)".into(),
        ));
    }
    let r = std::panic::catch_unwind(|| {
        cudarc::driver::result::init()?;
        cudarc::driver::result::device::get_count()
    });
    match r {
        Ok(Ok(n)) => Ok(n.max(0) as usize),
        Ok(Err(e)) if e.0 == CUresult::CUDA_ERROR_NO_DEVICE => Ok(0),
        Ok(Err(e)) => Err(driver_err(e, "initialising the CUDA driver")),
        Err(_) => Err(Error::Device("the CUDA driver library is unusable (missing symbol; driver too old?)".into())),
    }
}

/// Checks that cuBLAS and NVRTC can be loaded (the driver is checked by [`device_count`]).
pub(crate) fn check_libraries() -> Result<()> {
    // SAFETY: only try to open the shared libraries.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err(Error::Device(
            "cuBLAS (libcublas) could not be loaded: install the CUDA 12 runtime libraries".into(),
        ));
    }
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(Error::Device(
            "NVRTC (libnvrtc) could not be loaded: install the CUDA 12 runtime libraries".into(),
        ));
    }
    Ok(())
}
