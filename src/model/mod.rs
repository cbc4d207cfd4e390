//! The GPT-2 model: parameters, forward pass, loading and saving.

pub mod config;
mod forward;
pub mod generation_config;
pub mod hub;
pub mod init;
pub mod io;
pub mod kv_cache;
pub mod params;
pub mod precision;
mod sharded;

use ndarray::{Array2, Array3, ArrayView2, ArrayViewD, IxDyn};

use crate::error::{Error, Result};
pub use config::Config;
pub use forward::{ForwardInput, ForwardOptions, ForwardOutput, LogitsMode};
pub use generation_config::GenerationConfig;
pub use kv_cache::KvCache;
pub use params::{ParamInfo, ParamLayout};
pub use precision::LoadOptions;
pub use sharded::INDEX_FILE;

/// A GPT-2 language model held in f32: one flat parameter buffer plus its layout, and
/// optionally a packed f16/bf16/int8 copy of the matrices used by inference
/// (see [`LoadOptions`], [`Gpt2::set_weight_dtype`]).
///
/// `Gpt2` is `Send + Sync`; all inference methods take `&self`, so one model
/// can serve many threads (each with its own [`KvCache`]).
///
/// ```
/// use gpt2::{Config, Gpt2};
/// let model = Gpt2::new_random(Config::nano(16, 100), 0).unwrap();
/// let logits = model.logits(&[1, 2, 3]).unwrap();
/// assert_eq!(logits.dim(), (3, 100));
/// ```
///
/// `{:?}` prints a summary (config, parameter count, dtype, device), never the weights.
#[derive(Clone)]
pub struct Gpt2 {
    config: Config,
    layout: ParamLayout,
    params: Vec<f32>,
    dtype: crate::kernels::gemm::WeightDtype,
    packed: precision::PackedCell,
}

impl std::fmt::Debug for Gpt2 {
    /// A summary: the config, the parameter count, the weight dtype and the device (a few hundred
    /// bytes whatever the model's size; the weights are not printed).
    ///
    /// ```
    /// let model = gpt2::Gpt2::new_random(gpt2::Config::nano(16, 100), 0).unwrap();
    /// let s = format!("{model:?}");
    /// assert!(s.starts_with("Gpt2 { config: Config {") && s.contains("num_parameters: ") && s.len() < 10_000);
    /// ```
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpt2")
            .field("config", &self.config)
            .field("num_parameters", &self.params.len())
            .field("dtype", &self.dtype_label())
            .field("device", &self.device_label())
            .finish()
    }
}

impl Gpt2 {
    /// Wraps a flat parameter buffer laid out as [`ParamLayout::new`] describes.
    pub fn from_params(config: Config, params: Vec<f32>) -> Result<Self> {
        config.validate()?;
        let layout = ParamLayout::new(&config);
        if params.len() != layout.total() {
            return Err(Error::Shape(format!(
                "parameter buffer has {} values, the config needs {}",
                params.len(),
                layout.total()
            )));
        }
        Ok(Gpt2 { config, layout, params, dtype: Default::default(), packed: Default::default() })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The name → (offset, shape) table of the parameter buffer.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// All parameters, flat.
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// All parameters, flat and mutable (training, editing). Drops the packed
    /// reduced-precision copy, if any; it is rebuilt from the new values on the next forward.
    pub fn params_mut(&mut self) -> &mut [f32] {
        self.packed.reset();
        &mut self.params
    }

    /// One named tensor (HF key, with or without the `transformer.` prefix).
    pub fn param(&self, name: &str) -> Result<ArrayViewD<'_, f32>> {
        let info = self.layout.require(name)?;
        Ok(ArrayViewD::from_shape(IxDyn(&info.shape), &self.params[info.range()]).expect("layout shape"))
    }

    /// Number of parameters.
    pub fn num_parameters(&self) -> usize {
        self.params.len()
    }

    /// The device the forward pass runs on: always [`Device::Cpu`](crate::device::Device::Cpu)
    /// (the GPU model is `gpt2::cuda::CudaModel`, behind the `cuda` feature).
    pub fn device(&self) -> crate::device::Device {
        crate::device::Device::Cpu
    }

    /// Where the forward pass runs, as reported in evaluation summaries
    /// (`self.device().label()`, i.e. `"cpu"`).
    ///
    /// ```
    /// # use gpt2::{Config, Gpt2};
    /// let model = Gpt2::new_random(Config::nano(16, 100), 0).unwrap();
    /// assert_eq!(model.device_label(), "cpu");
    /// ```
    pub fn device_label(&self) -> String {
        self.device().label()
    }

    /// The storage type of the weights the forward pass multiplies with, as reported in
    /// evaluation summaries: `"f32"` (default; f16/bf16 checkpoints are upcast on load),
    /// or `"f16"`, `"bf16"`, `"int8"` after [`Gpt2::load_with`] / [`Gpt2::set_weight_dtype`].
    /// Arithmetic is always accumulated in f32.
    ///
    /// ```
    /// # use gpt2::{Config, Gpt2};
    /// let model = Gpt2::new_random(Config::nano(16, 100), 0).unwrap();
    /// assert_eq!(model.dtype_label(), "f32");
    /// ```
    pub fn dtype_label(&self) -> &'static str {
        self.dtype.label()
    }

    /// Logits for every position of one sequence: `[T, vocab_size]`.
    pub fn logits(&self, tokens: &[u32]) -> Result<Array2<f32>> {
        let t = tokens.len();
        let view = ArrayView2::from_shape((1, t), tokens).map_err(|e| Error::Shape(e.to_string()))?;
        let out = self.logits_batch(view)?;
        let v = self.config.vocab_size;
        Ok(out.into_shape_with_order((t, v)).expect("one row"))
    }

    /// Logits for a batch of equal-length sequences `[B, T]` → `[B, T, vocab_size]`.
    pub fn logits_batch(&self, tokens: ArrayView2<'_, u32>) -> Result<Array3<f32>> {
        let out = self.forward(&ForwardInput::new(tokens), None, &ForwardOptions::default())?;
        Ok(out.logits.expect("logits requested"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Gpt2>();
        assert_send_sync::<KvCache>();
    }
}
