//! [`CudaModel`]: weights resident on one GPU and the forward pass over them.

use std::sync::{Arc, Mutex};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaStream};
use ndarray::{Array2, Array3, ArrayView2};

use super::cache::{grow, plan, CudaKvCache, DevWorkspace};
use super::gemm::{self, GemmArgs};
use super::kernels::Kernels;
use super::weights::{pack, PackedLayout};
use super::{check_libraries, driver_err, DevBuf, DevPtr};
use crate::device::{Device, WeightDtype};
use crate::error::{Error, Result};
use crate::model::{Config, ForwardInput, ForwardOptions, ForwardOutput, LogitsMode};
use crate::Gpt2;

/// A GPT-2 model whose weights live on an NVIDIA GPU.
///
/// Built from a CPU [`Gpt2`] with [`CudaModel::new`]; the CPU model can be
/// dropped afterwards. The forward API mirrors [`Gpt2::forward`]: same input,
/// options and output types, with a [`CudaKvCache`] in place of the CPU cache.
/// Per-layer attention probabilities (`ForwardOptions::attentions`) are not
/// computed on the GPU.
///
/// `CudaModel` is `Send + Sync`; concurrent calls are serialised on the model's
/// stream.
pub struct CudaModel {
    config: Config,
    ordinal: usize,
    dtype: WeightDtype,
    // Field order is drop order: buffers and handles go before the stream and context.
    mats: DevBuf<u8>,
    vecs: DevBuf<f32>,
    layout: PackedLayout,
    kernels: Kernels,
    blas: CudaBlas,
    stream: Arc<CudaStream>,
    ctx: Arc<CudaContext>,
    lock: Mutex<()>,
}

impl std::fmt::Debug for CudaModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaModel")
            .field("device", &self.device_label())
            .field("dtype", &self.dtype)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl CudaModel {
    /// Uploads `model`'s weights to `device` with the matmul weights held as
    /// `dtype` (f32 is exact; f16/bf16 halve the memory, accumulation stays f32),
    /// and compiles the kernels.
    ///
    /// `device` may be [`Device::Cuda`] or [`Device::Auto`]; it is an
    /// [`Error::Device`] when no usable GPU is found (no driver, no device, bad
    /// ordinal, missing cuBLAS/NVRTC, out of memory) and an
    /// [`Error::InvalidArgument`] for [`Device::Cpu`] (use the [`Gpt2`] itself).
    pub fn new(model: &Gpt2, device: Device, dtype: WeightDtype) -> Result<Self> {
        let ordinal = match device.resolve()? {
            Device::Cuda(i) => i,
            Device::Cpu if device == Device::Auto => {
                return Err(Error::Device(
                    "no usable CUDA device (Device::Auto resolved to the CPU); run the Gpt2 model on the CPU".into(),
                ))
            }
            _ => return Err(Error::arg("device", "CudaModel runs on a CUDA device; use Gpt2 itself on the CPU")),
        };
        check_libraries()?;
        let ctx = CudaContext::new(ordinal).map_err(|e| driver_err(e, &format!("opening cuda:{ordinal}")))?;
        // SAFETY: every buffer of this model lives on the one stream created below.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| driver_err(e, "creating a stream"))?;
        let blas =
            CudaBlas::new(stream.clone()).map_err(|e| Error::Device(format!("creating a cuBLAS handle: {e:?}")))?;
        gemm::configure(&blas)?;
        let kernels = Kernels::load(&ctx)?;
        let config = model.config().clone();
        let host = pack(&config, model.layout(), model.params(), dtype);
        let mats = DevBuf::upload(&stream, &host.mats, "the weight matrices")?;
        let vecs = DevBuf::upload(&stream, &host.vecs, "the bias/layernorm/position weights")?;
        stream.synchronize().map_err(|e| driver_err(e, "uploading the weights"))?;
        Ok(CudaModel {
            config,
            ordinal,
            dtype,
            mats,
            vecs,
            layout: host.layout,
            kernels,
            blas,
            stream,
            ctx,
            lock: Mutex::new(()),
        })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }

    /// `"cuda:N"`, for summaries.
    pub fn device_label(&self) -> String {
        self.device().label()
    }

    /// Element type of the matmul weights.
    pub fn dtype(&self) -> WeightDtype {
        self.dtype
    }

    /// `"f32"`, `"f16"` or `"bf16"`, for summaries.
    pub fn dtype_label(&self) -> &'static str {
        self.dtype.label()
    }

    /// Bytes of device memory held by the weights.
    pub fn weight_bytes(&self) -> usize {
        self.mats.len() + self.vecs.len() * 4
    }

    /// The GPU's name as the driver reports it.
    pub fn device_name(&self) -> Result<String> {
        self.ctx.name().map_err(|e| driver_err(e, "querying the device name"))
    }

    /// Waits until all queued work on the model's stream has finished (benchmarks).
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| driver_err(e, "synchronising"))
    }

    /// A device KV cache for `batch` rows and up to `capacity` positions.
    pub fn new_cache(&self, batch: usize, capacity: usize) -> Result<CudaKvCache> {
        self.ctx.bind_to_thread().map_err(|e| driver_err(e, "binding the context"))?;
        CudaKvCache::new(&self.stream, &self.config, batch, capacity)
    }

    /// Logits for every position of one sequence: `[T, vocab_size]`.
    pub fn logits(&self, tokens: &[u32]) -> Result<Array2<f32>> {
        let t = tokens.len();
        let view = ArrayView2::from_shape((1, t), tokens).map_err(|e| Error::Shape(e.to_string()))?;
        let out = self.logits_batch(view)?;
        Ok(out.into_shape_with_order((t, self.config.vocab_size)).expect("one row"))
    }

    /// Logits for a batch of equal-length sequences `[B, T]` → `[B, T, vocab_size]`.
    pub fn logits_batch(&self, tokens: ArrayView2<'_, u32>) -> Result<Array3<f32>> {
        let out = self.forward(&ForwardInput::new(tokens), None, &ForwardOptions::default())?;
        Ok(out.logits.expect("logits requested"))
    }

    /// Runs the model on the GPU; see [`Gpt2::forward`] for the semantics of the
    /// input, the cache and the options. Only the requested outputs are copied back.
    pub fn forward(
        &self,
        input: &ForwardInput<'_>,
        cache: Option<&mut CudaKvCache>,
        opts: &ForwardOptions,
    ) -> Result<ForwardOutput> {
        self.run(input, cache, opts, None).map(|(out, _)| out)
    }

    /// Per-token negative log-likelihood `[B, T]` of `targets` (the token that
    /// should follow each input position), computed on the device from the
    /// logits (`logsumexp(logits) − logits[target]`); only `B·T` floats are
    /// copied back. The mean over the positions you score is the loss, its
    /// `exp` the perplexity.
    pub fn token_nll(&self, input: &ForwardInput<'_>, targets: ArrayView2<'_, u32>) -> Result<Array2<f32>> {
        let (b, t) = input.tokens.dim();
        if targets.dim() != (b, t) {
            return Err(Error::Shape(format!("targets are {:?}, tokens are [{b}, {t}]", targets.dim())));
        }
        let v = self.config.vocab_size;
        for (i, &tok) in targets.iter().enumerate() {
            if tok as usize >= v {
                return Err(Error::TokenOutOfVocab { token: tok, position: i, vocab_size: v });
            }
        }
        let tg: Vec<u32> = targets.iter().copied().collect();
        let opts = ForwardOptions { logits: LogitsMode::None, ..Default::default() };
        let (_, nll) = self.run(input, None, &opts, Some(&tg))?;
        Ok(Array2::from_shape_vec((b, t), nll.expect("targets given")).expect("shape"))
    }

    fn validate(&self, input: &ForwardInput<'_>, cache: Option<&CudaKvCache>) -> Result<(usize, usize, usize)> {
        let (b, t) = input.tokens.dim();
        if b == 0 || t == 0 {
            return Err(Error::EmptyInput(format!("token batch has shape [{b}, {t}]")));
        }
        let cfg = &self.config;
        for (i, &tok) in input.tokens.iter().enumerate() {
            if tok as usize >= cfg.vocab_size {
                return Err(Error::TokenOutOfVocab { token: tok, position: i, vocab_size: cfg.vocab_size });
            }
        }
        if let Some(m) = &input.attention_mask {
            if m.dim() != (b, t) {
                return Err(Error::Shape(format!("attention mask is {:?}, tokens are [{b}, {t}]", m.dim())));
            }
        }
        if let Some(p) = &input.position_ids {
            if p.dim() != (b, t) {
                return Err(Error::Shape(format!("position ids are {:?}, tokens are [{b}, {t}]", p.dim())));
            }
            if let Some(&bad) = p.iter().find(|&&x| x as usize >= cfg.n_positions) {
                return Err(Error::SequenceTooLong { len: bad as usize + 1, n_positions: cfg.n_positions });
            }
        }
        let past = match cache {
            Some(c) => {
                if !Arc::ptr_eq(&c.stream, &self.stream) {
                    return Err(Error::arg("cache", "this CudaKvCache was made by another CudaModel"));
                }
                if c.batch() != b {
                    return Err(Error::Shape(format!("cache holds {} rows, input has {b}", c.batch())));
                }
                if c.dims() != (cfg.n_layer, cfg.n_head, cfg.head_dim()) {
                    return Err(Error::Shape("cache was created for a different model config".into()));
                }
                if c.len() + t > c.capacity() {
                    return Err(Error::SequenceTooLong { len: c.len() + t, n_positions: c.capacity() });
                }
                c.len()
            }
            None => 0,
        };
        if past + t > cfg.n_positions {
            return Err(Error::SequenceTooLong { len: past + t, n_positions: cfg.n_positions });
        }
        Ok((b, t, past))
    }

    /// Address of element `off` of the matrix buffer.
    fn mat(&self, off: usize) -> DevPtr {
        self.mats.at(off * self.dtype.size())
    }

    /// `out[rows, m] = inp[rows, k] · W[k, m] + bias` (Conv1D; W at `w` in the
    /// matrix buffer, bias at `bias` in the vector buffer).
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &self,
        half: Option<&DevBuf<u16>>,
        out: DevPtr,
        inp: DevPtr,
        w: usize,
        bias: usize,
        rows: usize,
        k: usize,
        m: usize,
    ) -> Result<()> {
        let b = self.gemm_input(half, inp, rows * k)?;
        // SAFETY: W holds k*m elements at `w`; inp/half hold rows*k, out rows*m (workspace sizes).
        unsafe { gemm::gemm(&self.blas, &GemmArgs::conv1d(rows, k, m), self.mat(w), b, self.dtype, out) }?;
        self.kernels.add_bias(&self.stream, out, self.vecs.at(bias), rows, m)
    }

    /// The GEMM operand for activations `inp` (`n` floats): itself for f32
    /// weights, else its 16-bit copy in `half`.
    fn gemm_input(&self, half: Option<&DevBuf<u16>>, inp: DevPtr, n: usize) -> Result<DevPtr> {
        match (self.dtype, half) {
            (WeightDtype::F32, _) => Ok(inp),
            (d, Some(h)) => {
                assert!(h.len() >= n, "half scratch too small");
                self.kernels.cast(&self.stream, h.ptr(), inp, n, d)?;
                Ok(h.ptr())
            }
            (_, None) => Err(Error::Device("internal: missing half-precision scratch".into())),
        }
    }

    fn run(
        &self,
        input: &ForwardInput<'_>,
        mut cache: Option<&mut CudaKvCache>,
        opts: &ForwardOptions,
        targets: Option<&[u32]>,
    ) -> Result<(ForwardOutput, Option<Vec<f32>>)> {
        if opts.attentions {
            return Err(Error::arg("attentions", "attention probabilities are only returned by the CPU model"));
        }
        let (b, t, past) = self.validate(input, cache.as_deref())?;
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.ctx.bind_to_thread().map_err(|e| driver_err(e, "binding the context"))?;

        let mut ws = match cache.as_deref_mut() {
            Some(c) => std::mem::take(&mut c.ws),
            None => DevWorkspace::default(),
        };
        let r = self.run_with(input, cache.as_deref_mut(), opts, targets, &mut ws, (b, t, past));
        if let Some(c) = cache {
            c.ws = ws;
            if r.is_ok() {
                c.set_len(past + t);
            }
        }
        r
    }

    #[allow(clippy::type_complexity)]
    fn run_with(
        &self,
        input: &ForwardInput<'_>,
        mut cache: Option<&mut CudaKvCache>,
        opts: &ForwardOptions,
        targets: Option<&[u32]>,
        ws: &mut DevWorkspace,
        (b, t, past): (usize, usize, usize),
    ) -> Result<(ForwardOutput, Option<Vec<f32>>)> {
        let cfg = &self.config;
        let (c, h, v, nh) = (cfg.n_embd, cfg.mlp_hidden(), cfg.vocab_size, cfg.n_head);
        let hd = c / nh;
        let (n, tk, eps) = (b * t, past + t, cfg.layer_norm_epsilon);
        let s = &self.stream;
        let k = &self.kernels;
        let lay = &self.layout;

        // --- host-side plan: positions and key mask (updates the cache's bookkeeping) ---
        let state = cache.as_deref_mut().map(|cc| {
            let cap = cc.capacity();
            (&mut cc.valid[..], cap, &mut cc.next_pos[..])
        });
        let p = plan(input, state, past, cfg.n_positions);

        // --- workspace ---------------------------------------------------------------------
        let tokens: Vec<u32> = input.tokens.iter().copied().collect();
        grow(&mut ws.tokens, s, n, "token ids")?.write(s, 0, &tokens)?;
        grow(&mut ws.pos, s, n, "position ids")?.write(s, 0, &p.pos)?;
        let mask = if p.has_mask {
            let m = grow(&mut ws.mask, s, b * tk, "the attention mask")?;
            m.write(s, 0, &p.mask)?;
            m.ptr()
        } else {
            DevPtr::NULL
        };
        let x = grow(&mut ws.x, s, n * c, "activations")?.ptr();
        let ln = grow(&mut ws.ln, s, n * c, "activations")?.ptr();
        let qkv = grow(&mut ws.qkv, s, n * 3 * c, "activations")?.ptr();
        let att = grow(&mut ws.att, s, n * c, "activations")?.ptr();
        let proj = grow(&mut ws.proj, s, n * c, "activations")?.ptr();
        let fc = grow(&mut ws.fc, s, n * h, "activations")?.ptr();
        if self.dtype != WeightDtype::F32 {
            grow(&mut ws.half, s, n * h.max(c), "half-precision activations")?;
        }
        let (kv_cap, kv_past) = match cache.as_deref() {
            Some(cc) => (cc.capacity(), past),
            None => {
                grow(&mut ws.k, s, n * c, "keys")?;
                grow(&mut ws.v, s, n * c, "values")?;
                (t, 0)
            }
        };
        let half = ws.half.as_ref();

        // --- embeddings --------------------------------------------------------------------
        let tok_ptr = ws.tokens.as_ref().expect("grown").ptr();
        let pos_ptr = ws.pos.as_ref().expect("grown").ptr();
        k.embed(s, x, tok_ptr, pos_ptr, self.mat(lay.wte), self.dtype, self.vecs.at(lay.wpe), n, c)?;

        let mut out = ForwardOutput::default();
        let read3 = |buf: &Option<DevBuf<f32>>| -> Result<Array3<f32>> {
            let mut host = vec![0f32; n * c];
            buf.as_ref().expect("grown").read(s, 0, &mut host)?;
            Ok(Array3::from_shape_vec((b, t, c), host).expect("shape"))
        };

        // --- blocks ------------------------------------------------------------------------
        for (l, o) in lay.blocks.iter().enumerate() {
            if opts.hidden_states {
                out.hidden_states.push(read3(&ws.x)?);
            }
            k.layernorm(s, ln, x, self.vecs.at(o.ln_1_w), self.vecs.at(o.ln_1_b), n, c, eps)?;
            self.linear(half, qkv, ln, o.attn_w, o.attn_b, n, c, 3 * c)?;
            let (kc, vc) = match cache.as_deref() {
                Some(cc) => (cc.k[l].ptr(), cc.v[l].ptr()),
                None => (ws.k.as_ref().expect("grown").ptr(), ws.v.as_ref().expect("grown").ptr()),
            };
            k.kv_scatter(s, kc, vc, qkv, (b, t, nh, hd), kv_cap, kv_past)?;
            k.attention(s, att, qkv, kc, vc, mask, (b, t, nh, hd), kv_cap, kv_past, self.config.attn_scale(l))?;
            self.linear(half, proj, att, o.attn_proj_w, o.attn_proj_b, n, c, c)?;
            k.add_inplace(s, x, proj, n * c)?;
            k.layernorm(s, ln, x, self.vecs.at(o.ln_2_w), self.vecs.at(o.ln_2_b), n, c, eps)?;
            self.linear(half, fc, ln, o.fc_w, o.fc_b, n, c, h)?;
            k.gelu(s, fc, n * h)?;
            self.linear(half, proj, fc, o.fc_proj_w, o.fc_proj_b, n, h, c)?;
            k.add_inplace(s, x, proj, n * c)?;
        }

        // --- final layernorm and tied LM head ------------------------------------------------
        k.layernorm(s, ln, x, self.vecs.at(lay.ln_f_w), self.vecs.at(lay.ln_f_b), n, c, eps)?;
        if opts.hidden_states {
            out.hidden_states.push(read3(&ws.ln)?);
        }
        if opts.final_hidden {
            out.final_hidden = Some(read3(&ws.ln)?);
        }
        let all_on_device = opts.logits == LogitsMode::All || targets.is_some();
        if all_on_device || opts.logits == LogitsMode::Last {
            let hin = self.gemm_input(half, ln, n * c)?;
            let (rows, g, hptr) = if all_on_device {
                (n, GemmArgs::lm_head(n, c, v, c), hin)
            } else {
                // Last position of each row: rows t-1, 2t-1, ... are t*c elements apart. The
                // GEMM operand holds elements of the weight dtype (f32 `ln` or its 16-bit copy).
                let off = ((t - 1) * c * self.dtype.size()) as u64;
                (b, GemmArgs::lm_head(b, c, v, t * c), DevPtr(hin.0 + off))
            };
            let logits = grow(&mut ws.logits, s, rows * v, "logits")?;
            // SAFETY: wte holds v*c elements; hptr addresses `rows` rows of c at stride g.ldb
            // inside the n*c activations; logits hold rows*v floats.
            unsafe { gemm::gemm(&self.blas, &g, self.mat(lay.wte), hptr, self.dtype, logits.ptr()) }?;
            let logits = ws.logits.as_ref().expect("grown");
            if opts.logits != LogitsMode::None {
                let (rows_out, t_out) = if opts.logits == LogitsMode::All { (n, t) } else { (b, 1) };
                let mut host = vec![0f32; rows_out * v];
                if opts.logits == LogitsMode::All || !all_on_device {
                    logits.read(s, 0, &mut host)?;
                } else {
                    // Logits of every position are on the device (for the NLL); return the last ones.
                    for bi in 0..b {
                        logits.read(s, (bi * t + t - 1) * v, &mut host[bi * v..(bi + 1) * v])?;
                    }
                }
                out.logits = Some(Array3::from_shape_vec((b, t_out, v), host).expect("shape"));
            }
        }
        let nll = match targets {
            Some(tg) => {
                grow(&mut ws.targets, s, n, "targets")?.write(s, 0, tg)?;
                let nll = grow(&mut ws.nll, s, n, "losses")?.ptr();
                let logits = ws.logits.as_ref().expect("computed above").ptr();
                k.nll_rows(s, nll, logits, ws.targets.as_ref().expect("grown").ptr(), n, v)?;
                let mut host = vec![0f32; n];
                ws.nll.as_ref().expect("grown").read(s, 0, &mut host)?;
                Some(host)
            }
            None => None,
        };
        s.synchronize().map_err(|e| driver_err(e, "running the forward pass"))?;
        Ok((out, nll))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_types_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<CudaModel>();
        assert_send_sync::<CudaKvCache>();
    }

    #[test]
    fn cpu_device_is_rejected_without_touching_the_driver() {
        let m = Gpt2::new_random(Config::nano(8, 16), 0).unwrap();
        assert!(matches!(
            CudaModel::new(&m, Device::Cpu, WeightDtype::F32),
            Err(Error::InvalidArgument { name: "device", .. })
        ));
    }
}
