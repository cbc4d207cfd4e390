//! Where a model runs ([`Device`]) and in which element type its weights are
//! held ([`WeightDtype`]), with the rules that resolve a request to what
//! actually runs.
//!
//! Both types are always compiled, so code that takes a `--device` option
//! builds with or without the `cuda` feature; without it, asking for a GPU is an
//! [`Error::Device`] and [`Device::Auto`] resolves to the CPU.
//!
//! ```
//! use gpt2::device::{Device, WeightDtype};
//! let d: Device = "auto".parse().unwrap();
//! let d = d.resolve().unwrap(); // Cpu without the `cuda` feature or without a GPU
//! assert!(d.label() == "cpu" || d.label().starts_with("cuda:"));
//! // f16 weights are a GPU feature: on the CPU the request falls back to f32.
//! assert_eq!(WeightDtype::F16.resolve(Device::Cpu), WeightDtype::F32);
//! ```

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A compute device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// The host CPU (the crate's reference path, always available).
    #[default]
    Cpu,
    /// An NVIDIA GPU by ordinal (needs the `cuda` feature, a driver and a GPU).
    Cuda(usize),
    /// `Cuda(0)` when the `cuda` feature is on and a driver and GPU are present, else `Cpu`.
    Auto,
}

impl Device {
    /// Resolves [`Device::Auto`] and checks that the device exists.
    ///
    /// * `Cpu` → `Cpu`.
    /// * `Cuda(i)` → `Cuda(i)` when the `cuda` feature is compiled in, the CUDA
    ///   libraries load and ordinal `i` exists; otherwise [`Error::Device`] saying
    ///   which of these failed (no feature, no driver, no GPU, bad ordinal).
    /// * `Auto` → `Cuda(0)` when that would succeed, else `Cpu` (never an error).
    ///
    /// ```
    /// use gpt2::device::Device;
    /// assert_eq!(Device::Cpu.resolve().unwrap(), Device::Cpu);
    /// assert!(Device::Cuda(10_000).resolve().is_err());
    /// ```
    pub fn resolve(self) -> Result<Device> {
        match self {
            Device::Cpu => Ok(Device::Cpu),
            Device::Cuda(i) => {
                let n = cuda_device_count()?;
                if i >= n {
                    return Err(Error::Device(format!(
                        "bad CUDA ordinal {i}: {n} device{} present",
                        if n == 1 { " is" } else { "s are" }
                    )));
                }
                Ok(Device::Cuda(i))
            }
            Device::Auto => match cuda_device_count() {
                Ok(n) if n > 0 => Ok(Device::Cuda(0)),
                _ => Ok(Device::Cpu),
            },
        }
    }

    /// Short name used in summaries and `--device` options: `"cpu"`, `"cuda:0"`, `"auto"`.
    ///
    /// ```
    /// use gpt2::device::Device;
    /// assert_eq!(Device::Cuda(1).label(), "cuda:1");
    /// assert_eq!(Device::Cpu.label(), "cpu");
    /// ```
    pub fn label(&self) -> String {
        match self {
            Device::Cpu => "cpu".to_string(),
            Device::Cuda(i) => format!("cuda:{i}"),
            Device::Auto => "auto".to_string(),
        }
    }

    /// True for [`Device::Cuda`].
    pub fn is_cuda(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

impl FromStr for Device {
    type Err = Error;

    /// Parses `cpu`, `auto`, `cuda` (= `cuda:0`) or `cuda:N` (case-insensitive).
    ///
    /// ```
    /// use gpt2::device::Device;
    /// assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda(0));
    /// assert_eq!("CUDA:3".parse::<Device>().unwrap(), Device::Cuda(3));
    /// assert!("gpu".parse::<Device>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "cpu" => Ok(Device::Cpu),
            "auto" => Ok(Device::Auto),
            "cuda" => Ok(Device::Cuda(0)),
            _ => match t.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Ok(Device::Cuda(i)),
                _ => Err(Error::arg("device", format!("`{s}` is not one of cpu, auto, cuda, cuda:N"))),
            },
        }
    }
}

/// Number of CUDA devices, or why none can be used.
///
/// Without the `cuda` feature this is always an [`Error::Device`] saying so.
/// With it, the CUDA driver library is loaded on first use (dynamic loading);
/// a missing driver, NVRTC or cuBLAS library is an error, never a panic.
pub fn cuda_device_count() -> Result<usize> {
    #[cfg(feature = "cuda")]
    {
        crate::cuda::device_count()
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(Error::Device("this build of gpt2 has no CUDA support (rebuild with `--features cuda`)".into()))
    }
}

/// True when [`Device::Auto`] would pick a GPU.
pub fn cuda_available() -> bool {
    cuda_device_count().is_ok_and(|n| n > 0)
}

/// Element type in which the large weight matrices are held on the device.
///
/// Activations, layernorm parameters and biases stay f32 in every case, and
/// matmuls accumulate in f32; f16/bf16 halve the weight memory and feed tensor
/// cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WeightDtype {
    /// 32-bit float (exact; the reference).
    #[default]
    F32,
    /// IEEE half precision (GPU only).
    F16,
    /// bfloat16 (GPU only).
    Bf16,
}

impl WeightDtype {
    /// The dtype that actually runs on `device`.
    ///
    /// The CPU path computes in f32 only (the crate has no fast half-precision CPU
    /// kernels), so f16/bf16 requested for [`Device::Cpu`] fall back to f32; the
    /// resolved value is what summaries report. On a GPU every dtype is honoured.
    /// [`Device::Auto`] should be resolved first; it is treated like the CPU.
    ///
    /// ```
    /// use gpt2::device::{Device, WeightDtype};
    /// assert_eq!(WeightDtype::Bf16.resolve(Device::Cpu).label(), "f32");
    /// assert_eq!(WeightDtype::Bf16.resolve(Device::Cuda(0)), WeightDtype::Bf16);
    /// ```
    pub fn resolve(self, device: Device) -> WeightDtype {
        match device {
            Device::Cuda(_) => self,
            Device::Cpu | Device::Auto => WeightDtype::F32,
        }
    }

    /// `"f32"`, `"f16"` or `"bf16"`.
    pub fn label(&self) -> &'static str {
        match self {
            WeightDtype::F32 => "f32",
            WeightDtype::F16 => "f16",
            WeightDtype::Bf16 => "bf16",
        }
    }

    /// Bytes per element.
    pub fn size(&self) -> usize {
        match self {
            WeightDtype::F32 => 4,
            WeightDtype::F16 | WeightDtype::Bf16 => 2,
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

    /// Parses `f32`, `f16` or `bf16` (also `float32`, `float16`, `bfloat16`; case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" | "fp32" => Ok(WeightDtype::F32),
            "f16" | "float16" | "fp16" | "half" => Ok(WeightDtype::F16),
            "bf16" | "bfloat16" => Ok(WeightDtype::Bf16),
            _ => Err(Error::arg("dtype", format!("`{s}` is not one of f32, f16, bf16"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_label_round_trip() {
        for d in [Device::Cpu, Device::Auto, Device::Cuda(0), Device::Cuda(7)] {
            assert_eq!(d.label().parse::<Device>().unwrap(), d);
        }
        for w in [WeightDtype::F32, WeightDtype::F16, WeightDtype::Bf16] {
            assert_eq!(w.label().parse::<WeightDtype>().unwrap(), w);
        }
        assert!(matches!("cuda:x".parse::<Device>(), Err(Error::InvalidArgument { name: "device", .. })));
        assert!(matches!("f8".parse::<WeightDtype>(), Err(Error::InvalidArgument { name: "dtype", .. })));
    }

    #[test]
    fn auto_never_fails_and_cpu_dtype_falls_back() {
        let d = Device::Auto.resolve().unwrap();
        assert_ne!(d, Device::Auto);
        assert_eq!(d.is_cuda(), cuda_available());
        for w in [WeightDtype::F32, WeightDtype::F16, WeightDtype::Bf16] {
            assert_eq!(w.resolve(Device::Cpu), WeightDtype::F32);
            assert_eq!(w.resolve(Device::Cuda(0)), w);
        }
    }

    #[test]
    fn unavailable_gpu_is_a_typed_error() {
        // 10 000 GPUs exist nowhere: bad ordinal with the feature, "no CUDA support" without.
        match Device::Cuda(10_000).resolve() {
            Err(Error::Device(msg)) => assert!(!msg.is_empty()),
            other => panic!("expected Error::Device, got {other:?}"),
        }
    }
}
