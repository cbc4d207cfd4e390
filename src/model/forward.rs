//! The inference forward pass: embed → blocks → ln_f → tied LM head.

use ndarray::{Array3, Array4, ArrayView2};

use super::kv_cache::{KvCache, Workspace};
use super::precision::{Linear, PackedWeights};
use super::Gpt2;
use crate::error::{Error, Result};
use crate::kernels::attention::{attention_probs, AttnDims, HeadView};
use crate::kernels::embed::embed_forward;
use crate::kernels::flash::attention_fast_in;
use crate::kernels::gemm::{gemm, Epilogue, MatRef};
use crate::kernels::layernorm::layernorm_forward;

/// Input of one forward call: token ids `[B, T]`, and optionally an attention
/// mask and explicit position ids.
#[derive(Debug, Clone)]
pub struct ForwardInput<'a> {
    /// Token ids `[B, T]`.
    pub tokens: ArrayView2<'a, u32>,
    /// `[B, T]`, `true` for real tokens, `false` for padding. Padded positions are
    /// never attended to, and position ids are derived from the mask
    /// (`cumsum(mask) − 1`, continuing from the cache), so a padded batch gives
    /// each row the same result as running it alone.
    pub attention_mask: Option<ArrayView2<'a, bool>>,
    /// Explicit position ids `[B, T]` (override the mask-derived ones).
    pub position_ids: Option<ArrayView2<'a, u32>>,
}

impl<'a> ForwardInput<'a> {
    /// Tokens only: every position is real, positions count from the cache length.
    pub fn new(tokens: ArrayView2<'a, u32>) -> Self {
        ForwardInput { tokens, attention_mask: None, position_ids: None }
    }

    /// Adds an attention mask.
    pub fn with_mask(mut self, mask: ArrayView2<'a, bool>) -> Self {
        self.attention_mask = Some(mask);
        self
    }

    /// Adds explicit position ids.
    pub fn with_positions(mut self, positions: ArrayView2<'a, u32>) -> Self {
        self.position_ids = Some(positions);
        self
    }
}

/// Which logits to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogitsMode {
    /// Every position: `[B, T, V]`.
    #[default]
    All,
    /// Only the last position of each row: `[B, 1, V]` (generation).
    Last,
    /// No logits (hidden states only).
    None,
}

/// What a forward call returns besides the defaults.
#[derive(Debug, Clone, Default)]
pub struct ForwardOptions {
    /// Which logits to compute.
    pub logits: LogitsMode,
    /// Return the final hidden states (after `ln_f`), `[B, T, C]`.
    pub final_hidden: bool,
    /// Return every block's input residual stream plus the final `ln_f` output
    /// (`n_layer + 1` arrays of `[B, T, C]`, like HF `output_hidden_states`).
    pub hidden_states: bool,
    /// Return per-layer attention probabilities `[B, NH, T, Tk]`.
    pub attentions: bool,
}

/// Result of [`Gpt2::forward`].
#[derive(Debug, Clone, Default)]
pub struct ForwardOutput {
    /// Logits `[B, T, V]` (or `[B, 1, V]` in [`LogitsMode::Last`]).
    pub logits: Option<Array3<f32>>,
    /// Final hidden states after `ln_f`, `[B, T, C]`.
    pub final_hidden: Option<Array3<f32>>,
    /// Residual stream entering each block, then the `ln_f` output.
    pub hidden_states: Vec<Array3<f32>>,
    /// Per layer attention probabilities `[B, NH, T, Tk]`.
    pub attentions: Vec<Array4<f32>>,
}

impl Gpt2 {
    /// Runs the model. With a `cache`, the new tokens are appended after the
    /// cached positions (prefill or decode) and their keys/values are stored.
    ///
    /// ```
    /// use gpt2::ndarray::array;
    /// use gpt2::{Config, ForwardInput, ForwardOptions, Gpt2, KvCache, LogitsMode};
    /// let model = Gpt2::new_random(Config::nano(16, 100), 0)?;
    /// // a batch of 2 rows, the second left-padded (mask false = padding)
    /// let tokens = array![[5u32, 6, 7], [0, 8, 9]];
    /// let mask = array![[true, true, true], [false, true, true]];
    /// let out = model.forward(&ForwardInput::new(tokens.view()).with_mask(mask.view()), None, &ForwardOptions::default())?;
    /// assert_eq!(out.logits.unwrap().dim(), (2, 3, 100));
    /// // prefill a cache, then decode one token, asking only for the last position's logits
    /// let mut cache = KvCache::new(model.config(), 1, 16)?;
    /// let opts = ForwardOptions { logits: LogitsMode::Last, ..Default::default() };
    /// model.forward(&ForwardInput::new(array![[5u32, 6]].view()), Some(&mut cache), &opts)?;
    /// let step = model.forward(&ForwardInput::new(array![[7u32]].view()), Some(&mut cache), &opts)?;
    /// let full = model.logits(&[5, 6, 7])?;
    /// let last = step.logits.unwrap();
    /// assert!((last[[0, 0, 3]] - full[[2, 3]]).abs() < 1e-4);
    /// # Ok::<(), gpt2::Error>(())
    /// ```
    pub fn forward(
        &self,
        input: &ForwardInput<'_>,
        cache: Option<&mut KvCache>,
        opts: &ForwardOptions,
    ) -> Result<ForwardOutput> {
        // One hop onto the rayon pool for the whole pass: the kernels' parallel loops then start
        // from a worker thread instead of each blocking the caller (≈ 60 hand-offs per decode step).
        rayon::scope(|_| self.forward_on_pool(input, cache, opts, None))
    }

    /// One allocation-free decode step: appends `tokens` (`[B]`, one new token per cache row)
    /// to `cache` and writes the next-token logits `[B, vocab_size]` into `logits`.
    ///
    /// Equivalent to [`forward`](Self::forward) with `[B, 1]` tokens and [`LogitsMode::Last`],
    /// but the logits go to a caller buffer, and all scratch lives in the cache, so once the
    /// cache is warm a step allocates nothing.
    ///
    /// ```
    /// use gpt2::{Config, ForwardInput, ForwardOptions, Gpt2, KvCache, LogitsMode};
    /// let model = Gpt2::new_random(Config::nano(32, 50), 1).unwrap();
    /// let mut cache = KvCache::new(model.config(), 1, 32).unwrap();
    /// let prompt = ndarray::arr2(&[[1u32, 2, 3]]);
    /// let opts = ForwardOptions { logits: LogitsMode::Last, ..Default::default() };
    /// model.forward(&ForwardInput::new(prompt.view()), Some(&mut cache), &opts).unwrap();
    /// let mut logits = vec![0f32; 50];
    /// model.decode_step(&[4], &mut cache, &mut logits).unwrap();
    /// assert_eq!(cache.len(), 4);
    /// ```
    ///
    /// Errors: as [`forward`](Self::forward); [`Error::Shape`] when `tokens` does not have one
    /// id per cache row or `logits` is not `[B, vocab_size]`.
    pub fn decode_step(&self, tokens: &[u32], cache: &mut KvCache, logits: &mut [f32]) -> Result<()> {
        let b = cache.batch();
        if tokens.len() != b {
            return Err(Error::Shape(format!("decode_step got {} tokens for a cache of {b} rows", tokens.len())));
        }
        let v = self.config.vocab_size;
        if logits.len() != b * v {
            return Err(Error::Shape(format!("decode_step logits buffer has {} values, needs {b}×{v}", logits.len())));
        }
        let view = ArrayView2::from_shape((b, 1), tokens).map_err(|e| Error::Shape(e.to_string()))?;
        let opts = ForwardOptions { logits: LogitsMode::Last, ..Default::default() };
        let input = ForwardInput::new(view);
        rayon::scope(|_| self.forward_on_pool(&input, Some(cache), &opts, Some(logits))).map(|_| ())
    }

    /// LM-head logits of final hidden states (after `ln_f`): `hidden` `[n, C]` → `logits`
    /// `[n, V]` (overwritten), with the same weights and kernels as [`forward`](Self::forward).
    /// Lets scorers compute logits only for the positions they score, a block of rows at a time.
    pub(crate) fn head_logits_into(&self, hidden: &[f32], logits: &mut [f32]) {
        rayon::scope(|_| self.lm_head(self.packed_weights(), hidden, logits));
    }

    /// The tied LM head: `hidden` `[n, C]` → `logits` `[n, V]` (overwritten).
    fn lm_head(&self, packed: Option<&PackedWeights>, hidden: &[f32], logits: &mut [f32]) {
        let (c, v) = (self.config.n_embd, self.config.vocab_size);
        let n = hidden.len() / c;
        debug_assert_eq!(hidden.len(), n * c);
        debug_assert_eq!(logits.len(), n * v);
        gemm(logits, v, MatRef::row_major(hidden, n, c), self.head_weight(packed), Epilogue::default());
    }

    fn forward_on_pool(
        &self,
        input: &ForwardInput<'_>,
        cache: Option<&mut KvCache>,
        opts: &ForwardOptions,
        logits_into: Option<&mut [f32]>,
    ) -> Result<ForwardOutput> {
        match cache {
            Some(cache) => {
                let mut ws = std::mem::take(&mut cache.ws);
                let r = self.forward_impl(input, Some(&mut *cache), &mut ws, opts, logits_into);
                cache.ws = ws;
                r
            }
            None => {
                let mut ws = Workspace::default();
                self.forward_impl(input, None, &mut ws, opts, logits_into)
            }
        }
    }

    /// Checks tokens, shapes and lengths; returns (B, T, past).
    fn validate_input(&self, input: &ForwardInput<'_>, cache: Option<&KvCache>) -> Result<(usize, usize, usize)> {
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
                if c.batch() != b {
                    return Err(Error::Shape(format!("cache holds {} rows, input has {b}", c.batch())));
                }
                if c.k.len() != cfg.n_layer || c.dims() != (cfg.n_head, cfg.head_dim()) {
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

    fn forward_impl(
        &self,
        input: &ForwardInput<'_>,
        mut cache: Option<&mut KvCache>,
        ws: &mut Workspace,
        opts: &ForwardOptions,
        logits_into: Option<&mut [f32]>,
    ) -> Result<ForwardOutput> {
        let (b, t, past) = self.validate_input(input, cache.as_deref())?;
        let cfg = &self.config;
        let (c, h, v, nh) = (cfg.n_embd, cfg.mlp_hidden(), cfg.vocab_size, cfg.n_head);
        let hd = c / nh;
        let n = b * t;
        let tk = past + t;
        let eps = cfg.layer_norm_epsilon;
        let p = &self.params;
        let lay = &self.layout;
        let packed = self.packed_weights();
        ws.ensure(n, c, h);

        // --- positions and key mask ---------------------------------------------------
        ws.pos.clear();
        ws.mask.clear();
        ws.mask.reserve(b * cache.as_ref().map_or(t, |cc| cc.capacity()));
        let has_mask = input.attention_mask.is_some() || cache.as_ref().is_some_and(|c| c.valid[..].iter().any(|v| !v));
        for bi in 0..b {
            let mut next = cache.as_ref().map_or(0, |c| c.next_pos[bi]);
            if let Some(cc) = cache.as_ref() {
                ws.mask.extend_from_slice(&cc.valid[bi * cc.capacity()..bi * cc.capacity() + past]);
            }
            for ti in 0..t {
                let real = input.attention_mask.as_ref().is_none_or(|m| m[(bi, ti)]);
                ws.mask.push(real);
                let pos = match &input.position_ids {
                    Some(pids) => pids[(bi, ti)],
                    None => next.min(cfg.n_positions as u32 - 1),
                };
                ws.pos.push(pos);
                if real {
                    next += 1;
                }
            }
            if let Some(cc) = cache.as_deref_mut() {
                cc.next_pos[bi] = next;
                let cap = cc.capacity();
                cc.valid[bi * cap + past..bi * cap + past + t].copy_from_slice(&ws.mask[bi * tk + past..bi * tk + tk]);
            }
        }
        let key_mask = if has_mask { Some(&ws.mask[..]) } else { None };

        // --- embeddings -----------------------------------------------------------------
        ws.tokens.clear();
        ws.tokens.extend(input.tokens.iter().copied());
        let max_keys = cache.as_ref().map_or(tk, |cc| cc.capacity());
        ws.attn.ensure(max_keys);
        let wte = &p[lay.wte..lay.wte + v * c];
        let wpe = &p[lay.wpe..lay.wpe + cfg.n_positions * c];
        embed_forward(&mut ws.x[..n * c], &ws.tokens, &ws.pos, wte, wpe, c);

        let mut out = ForwardOutput::default();
        let to3 = |buf: &[f32]| Array3::from_shape_vec((b, t, c), buf[..n * c].to_vec()).expect("shape");

        // --- blocks -----------------------------------------------------------------------
        for (l, o) in lay.blocks.iter().enumerate() {
            if opts.hidden_states {
                out.hidden_states.push(to3(&ws.x));
            }
            let x = &mut ws.x[..n * c];
            let ln = &mut ws.ln[..n * c];
            layernorm_forward(ln, None, None, x, &p[o.ln_1_w..o.ln_1_w + c], &p[o.ln_1_b..o.ln_1_b + c], c, eps);
            let qkv = &mut ws.qkv[..n * 3 * c];
            let w = self.linear_weight(packed, l, Linear::Qkv);
            gemm(qkv, 3 * c, MatRef::row_major(ln, n, c), w, Epilogue::bias(&p[o.attn_b..o.attn_b + 3 * c]));
            let qkv = &ws.qkv[..n * 3 * c];

            let q = HeadView::from_qkv(qkv, 0, t, c, hd);
            let dims = AttnDims::new(b, t, past, nh, hd).with_scale(cfg.attn_scale(l));
            let mut probs = if opts.attentions { Some(vec![0f32; b * nh * t * tk]) } else { None };
            let att = &mut ws.att[..n * c];
            match cache.as_deref_mut() {
                Some(cc) => {
                    let cap = cc.capacity();
                    let (kc, vc) = (&mut cc.k[l], &mut cc.v[l]);
                    for bi in 0..b {
                        for ti in 0..t {
                            let row = &qkv[(bi * t + ti) * 3 * c..(bi * t + ti + 1) * 3 * c];
                            for hh in 0..nh {
                                let dst = ((bi * nh + hh) * cap + past + ti) * hd;
                                kc[dst..dst + hd].copy_from_slice(&row[c + hh * hd..c + (hh + 1) * hd]);
                                vc[dst..dst + hd].copy_from_slice(&row[2 * c + hh * hd..2 * c + (hh + 1) * hd]);
                            }
                        }
                    }
                    let kview = HeadView { data: &cc.k[l], b_stride: nh * cap * hd, h_stride: cap * hd, t_stride: hd };
                    let vview = HeadView { data: &cc.v[l], ..kview };
                    attention_fast_in(att, q, kview, vview, key_mask, dims, &ws.attn);
                    if let Some(pr) = probs.as_deref_mut() {
                        attention_probs(pr, q, kview, key_mask, dims);
                    }
                }
                None => {
                    let k = HeadView::from_qkv(qkv, 1, t, c, hd);
                    let vv = HeadView::from_qkv(qkv, 2, t, c, hd);
                    attention_fast_in(att, q, k, vv, key_mask, dims, &ws.attn);
                    if let Some(pr) = probs.as_deref_mut() {
                        attention_probs(pr, q, k, key_mask, dims);
                    }
                }
            }
            if let Some(pr) = probs {
                out.attentions.push(Array4::from_shape_vec((b, nh, t, tk), pr).expect("shape"));
            }
            // x += att·W + b (residual fused into the GEMM's store)
            let w = self.linear_weight(packed, l, Linear::AttnProj);
            let epi = Epilogue { bias: Some(&p[o.attn_proj_b..o.attn_proj_b + c]), accumulate: true, gelu: false };
            gemm(x, c, MatRef::row_major(att, n, c), w, epi);

            layernorm_forward(ln, None, None, x, &p[o.ln_2_w..o.ln_2_w + c], &p[o.ln_2_b..o.ln_2_b + c], c, eps);
            let fc = &mut ws.fc[..n * h];
            let w = self.linear_weight(packed, l, Linear::Fc);
            let epi = Epilogue { bias: Some(&p[o.fc_b..o.fc_b + h]), accumulate: false, gelu: true };
            gemm(fc, h, MatRef::row_major(ln, n, c), w, epi);
            let w = self.linear_weight(packed, l, Linear::FcProj);
            let epi = Epilogue { bias: Some(&p[o.fc_proj_b..o.fc_proj_b + c]), accumulate: true, gelu: false };
            gemm(x, c, MatRef::row_major(fc, n, h), w, epi);
        }

        // --- final layernorm and tied LM head -----------------------------------------------
        let ln = &mut ws.ln[..n * c];
        layernorm_forward(
            ln,
            None,
            None,
            &ws.x[..n * c],
            &p[lay.ln_f_w..lay.ln_f_w + c],
            &p[lay.ln_f_b..lay.ln_f_b + c],
            c,
            eps,
        );
        if opts.hidden_states {
            out.hidden_states.push(to3(ln));
        }
        if opts.final_hidden {
            out.final_hidden = Some(to3(ln));
        }
        match opts.logits {
            LogitsMode::All => {
                let mut logits = vec![0f32; n * v];
                self.lm_head(packed, ln, &mut logits);
                out.logits = Some(Array3::from_shape_vec((b, t, v), logits).expect("shape"));
            }
            LogitsMode::Last => {
                let rows: &[f32] = if t == 1 {
                    ln
                } else {
                    ws.last.clear();
                    for bi in 0..b {
                        let r = bi * t + t - 1;
                        ws.last.extend_from_slice(&ln[r * c..(r + 1) * c]);
                    }
                    &ws.last
                };
                match logits_into {
                    Some(dst) => self.lm_head(packed, rows, dst),
                    None => {
                        let mut logits = vec![0f32; b * v];
                        self.lm_head(packed, rows, &mut logits);
                        out.logits = Some(Array3::from_shape_vec((b, 1, v), logits).expect("shape"));
                    }
                }
            }
            LogitsMode::None => {}
        }
        if let Some(cc) = cache {
            cc.set_len(past + t);
        }
        Ok(out)
    }
}
