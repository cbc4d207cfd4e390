//! Loading and saving HuggingFace GPT-2 checkpoints (safetensors + config.json).
//!
//! Reads both key layouts (`transformer.h.0…` as transformers' `save_pretrained`
//! writes, and bare `h.0…` as the original hub file has), skips the causal-mask
//! buffers (`attn.bias`, `attn.masked_bias`), accepts a tied `lm_head.weight`,
//! converts F32/F16/BF16/F64 to f32, and checks every shape. The file is
//! memory-mapped and copied tensor by tensor into the flat parameter buffer;
//! pages already copied are released so peak memory stays near the file size.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors};

use super::{Config, Gpt2, ParamLayout};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

/// Storage dtype for saved weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaveDtype {
    /// 32-bit float (exact).
    #[default]
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
}

impl SaveDtype {
    fn tag(self) -> &'static str {
        match self {
            SaveDtype::F32 => "F32",
            SaveDtype::F16 => "F16",
            SaveDtype::BF16 => "BF16",
        }
    }
    fn size(self) -> usize {
        match self {
            SaveDtype::F32 => 4,
            _ => 2,
        }
    }
}

/// Metadata key under which [`Gpt2::save`] stores the config JSON inside the file.
pub const CONFIG_METADATA_KEY: &str = "gpt2.config";

impl Gpt2 {
    /// Loads a checkpoint from a directory (`config.json` + `model.safetensors`, the
    /// hub layout) or a single `.safetensors` file. For a bare file the config is
    /// taken from the file's metadata (written by [`Gpt2::save`]), else from a
    /// `config.json` beside it, else inferred from tensor shapes with GPT-2's
    /// head width of 64.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(Error::NotFound(path.to_path_buf()));
        }
        let (file, config_path) = if path.is_dir() {
            let st = path.join("model.safetensors");
            if !st.exists() {
                return Err(Error::NotFound(st));
            }
            (st, Some(path.join("config.json")))
        } else {
            let sibling = path.parent().map(|d| d.join("config.json"));
            (path.to_path_buf(), sibling)
        };
        let f = std::fs::File::open(&file).map_err(|e| Error::io(&file, e))?;
        // SAFETY: the map is read-only; a concurrent truncation by another process could
        // fault, which is the documented caveat of memory-mapping any file.
        let mmap = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::io(&file, e))?;
        let st_err = |reason: String| Error::Safetensors { path: file.clone(), reason };
        let (_, meta) = SafeTensors::read_metadata(&mmap).map_err(|e| st_err(e.to_string()))?;
        let tensors = SafeTensors::deserialize(&mmap).map_err(|e| st_err(e.to_string()))?;

        let config = match meta.metadata().as_ref().and_then(|m| m.get(CONFIG_METADATA_KEY)) {
            Some(json) => {
                let c: Config = serde_json::from_str(json)
                    .map_err(|e| Error::Json { path: file.clone(), reason: e.to_string() })?;
                c.validate()?;
                c
            }
            None => match config_path.filter(|p| p.exists()) {
                Some(p) => Config::from_json_file(&p)?,
                None if path.is_dir() => return Err(Error::NotFound(path.join("config.json"))),
                None => infer_config(&tensors)?,
            },
        };
        let model = load_tensors(&file, &mmap, &tensors, config)?;
        Ok(model)
    }

    /// Saves as a HuggingFace-loadable directory: `dir/config.json` and
    /// `dir/model.safetensors` (keys with the `transformer.` prefix, tied head
    /// omitted), both written atomically.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        self.save_with_dtype(dir, SaveDtype::F32)
    }

    /// Like [`save`](Self::save) with a chosen storage dtype (f16/bf16 halve the size).
    pub fn save_with_dtype(&self, dir: impl AsRef<Path>, dtype: SaveDtype) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        self.save_safetensors(dir.join("model.safetensors"), dtype)?;
        let cfg_path = dir.join("config.json");
        let mut json = self.config.to_hf_json();
        if dtype != SaveDtype::F32 {
            // tell transformers which dtype the weights are stored in
            let mut v: serde_json::Value = serde_json::from_str(&json).expect("json");
            let name = if dtype == SaveDtype::F16 { "float16" } else { "bfloat16" };
            v["torch_dtype"] = name.into();
            v["dtype"] = name.into();
            json = serde_json::to_string_pretty(&v).expect("json");
        }
        write_atomic(&cfg_path, |w| w.write_all(json.as_bytes()))
    }

    /// Writes only the safetensors file (config embedded in its metadata).
    pub fn save_safetensors(&self, file: impl AsRef<Path>, dtype: SaveDtype) -> Result<()> {
        let tensors: Vec<(String, &[usize], &[f32])> = self
            .layout
            .params()
            .iter()
            .map(|p| (format!("transformer.{}", p.name), p.shape.as_slice(), &self.params[p.range()]))
            .collect();
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        meta.insert(CONFIG_METADATA_KEY.to_string(), serde_json::to_string(&self.config).expect("json"));
        write_safetensors(file.as_ref(), &tensors, dtype, &meta)
    }
}

/// Streams tensors into a safetensors file (atomic), converting from f32 to `dtype`.
pub fn write_safetensors(
    file: &Path,
    tensors: &[(String, &[usize], &[f32])],
    dtype: SaveDtype,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::to_value(metadata).expect("json"));
    let mut offset = 0usize;
    for (name, shape, data) in tensors {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::Shape(format!("tensor {name}: shape {shape:?} but {} values", data.len())));
        }
        let bytes = n * dtype.size();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype.tag(), "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut header = serde_json::to_string(&header).expect("json").into_bytes();
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    write_atomic(file, |w| {
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(&header)?;
        let mut buf = Vec::with_capacity(1 << 16);
        for (_, _, data) in tensors {
            for chunk in data.chunks(1 << 14) {
                buf.clear();
                for &x in chunk {
                    match dtype {
                        SaveDtype::F32 => buf.extend_from_slice(&x.to_le_bytes()),
                        SaveDtype::F16 => buf.extend_from_slice(&half::f16::from_f32(x).to_le_bytes()),
                        SaveDtype::BF16 => buf.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes()),
                    }
                }
                w.write_all(&buf)?;
            }
        }
        Ok(())
    })
}

/// Non-weight buffers found in hub checkpoints.
fn is_buffer(key: &str) -> bool {
    key.ends_with(".attn.bias") || key.ends_with(".attn.masked_bias")
}

fn strip(key: &str) -> &str {
    key.strip_prefix("transformer.").unwrap_or(key)
}

/// Infers a config from tensor shapes (GPT-2 head width 64).
fn infer_config(st: &SafeTensors<'_>) -> Result<Config> {
    let mut wte = None;
    let mut wpe = None;
    let mut fc = None;
    let mut n_layer = 0usize;
    for (name, view) in st.tensors() {
        let key = strip(&name);
        match key {
            "wte.weight" => wte = Some(view.shape().to_vec()),
            "wpe.weight" => wpe = Some(view.shape().to_vec()),
            "h.0.mlp.c_fc.weight" => fc = Some(view.shape().to_vec()),
            _ => {}
        }
        if let Some(rest) = key.strip_prefix("h.") {
            if let Some(i) = rest.split('.').next().and_then(|s| s.parse::<usize>().ok()) {
                n_layer = n_layer.max(i + 1);
            }
        }
    }
    let wte = wte.ok_or_else(|| Error::MissingTensor("wte.weight".into()))?;
    let wpe = wpe.ok_or_else(|| Error::MissingTensor("wpe.weight".into()))?;
    let fc = fc.ok_or_else(|| Error::MissingTensor("h.0.mlp.c_fc.weight".into()))?;
    if wte.len() != 2 || wpe.len() != 2 || fc.len() != 2 {
        return Err(Error::InvalidConfig("cannot infer config: embedding/MLP tensors are not 2-D".into()));
    }
    let c = wte[1];
    if c % 64 != 0 {
        return Err(Error::InvalidConfig(format!(
            "cannot infer n_head for n_embd = {c} (not a multiple of GPT-2's head width 64); put a config.json beside the file"
        )));
    }
    let mut cfg = Config::new(n_layer, c / 64, c, wpe[0], wte[0]);
    if fc[1] != 4 * c {
        cfg.n_inner = Some(fc[1]);
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Copies every expected tensor into a fresh flat buffer, checking shapes.
fn load_tensors(file: &Path, mmap: &memmap2::Mmap, st: &SafeTensors<'_>, config: Config) -> Result<Gpt2> {
    let layout = ParamLayout::new(&config);
    let mut params = vec![0f32; layout.total()];
    let mut seen: HashSet<String> = HashSet::new();
    let mut lm_head: Option<String> = None;
    let base = mmap.as_ptr() as usize;
    for name in st.names() {
        let key = strip(name);
        if is_buffer(key) {
            continue;
        }
        if key == "lm_head.weight" {
            lm_head = Some(name.to_string());
            continue;
        }
        let info = layout.get(key).ok_or_else(|| Error::Safetensors {
            path: file.to_path_buf(),
            reason: format!("unexpected tensor `{name}` (not a GPT-2 parameter for this config)"),
        })?;
        if !seen.insert(info.name.clone()) {
            return Err(Error::Safetensors {
                path: file.to_path_buf(),
                reason: format!("tensor `{key}` appears twice"),
            });
        }
        let view =
            st.tensor(name).map_err(|e| Error::Safetensors { path: file.to_path_buf(), reason: e.to_string() })?;
        if view.shape() != info.shape.as_slice() {
            return Err(Error::ShapeMismatch {
                name: name.to_string(),
                expected: info.shape.clone(),
                found: view.shape().to_vec(),
            });
        }
        convert_into(&mut params[info.range()], view.data(), view.dtype(), name)?;
        release_pages(mmap, view.data().as_ptr() as usize + view.data().len() - base);
    }
    for info in layout.params() {
        if !seen.contains(&info.name) {
            return Err(Error::MissingTensor(info.name.clone()));
        }
    }
    if let Some(name) = lm_head {
        let view =
            st.tensor(&name).map_err(|e| Error::Safetensors { path: file.to_path_buf(), reason: e.to_string() })?;
        let wte = layout.require("wte.weight")?;
        if view.shape() != wte.shape.as_slice() {
            return Err(Error::ShapeMismatch { name, expected: wte.shape.clone(), found: view.shape().to_vec() });
        }
        let mut head = vec![0f32; wte.len()];
        convert_into(&mut head, view.data(), view.dtype(), &name)?;
        if head != params[wte.range()] {
            return Err(Error::Safetensors {
                path: file.to_path_buf(),
                reason: "lm_head.weight differs from wte.weight; GPT-2 ties them and untied heads are not supported"
                    .into(),
            });
        }
    }
    Gpt2::from_params(config, params)
}

/// Converts little-endian tensor bytes of `dtype` into f32.
fn convert_into(dst: &mut [f32], bytes: &[u8], dtype: Dtype, name: &str) -> Result<()> {
    let size = match dtype {
        Dtype::F32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
        Dtype::F64 => 8,
        other => return Err(Error::UnsupportedDtype { name: name.to_string(), dtype: format!("{other:?}") }),
    };
    if bytes.len() != dst.len() * size {
        return Err(Error::ShapeMismatch {
            name: name.to_string(),
            expected: vec![dst.len() * size],
            found: vec![bytes.len()],
        });
    }
    match dtype {
        Dtype::F32 => {
            for (d, b) in dst.iter_mut().zip(bytes.chunks_exact(4)) {
                *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Dtype::F16 => {
            for (d, b) in dst.iter_mut().zip(bytes.chunks_exact(2)) {
                *d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        Dtype::BF16 => {
            for (d, b) in dst.iter_mut().zip(bytes.chunks_exact(2)) {
                *d = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        Dtype::F64 => {
            for (d, b) in dst.iter_mut().zip(bytes.chunks_exact(8)) {
                *d = f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32;
            }
        }
        _ => unreachable!(),
    }
    Ok(())
}

/// Tells the kernel the mapped pages up to `end` are no longer needed, so the
/// copy does not double the resident memory. Purely an optimisation.
#[cfg(unix)]
fn release_pages(mmap: &memmap2::Mmap, end: usize) {
    const PAGE: usize = 4096;
    let len = (end / PAGE) * PAGE;
    if len > 0 {
        // SAFETY: DontNeed on a read-only file mapping only drops cached pages; later
        // reads fault them back in from the file.
        let _ = unsafe { mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, 0, len.min(mmap.len())) };
    }
}

#[cfg(not(unix))]
fn release_pages(_mmap: &memmap2::Mmap, _end: usize) {}

/// Path helper used by examples: the default bundled model directory.
pub fn bundled_model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join("model")
}
