//! Loading and saving HuggingFace GPT-2 checkpoints (safetensors + config.json).
//!
//! Reads both key layouts (`transformer.h.0…` as transformers' `save_pretrained`
//! writes, and bare `h.0…` as the original hub file has), skips the causal-mask
//! buffers (`attn.bias`, `attn.masked_bias`), accepts a tied `lm_head.weight`,
//! converts F32/F16/BF16/F64 to f32, and checks every shape. The file is not
//! memory-mapped (a file truncated or rewritten by another process while mapped kills the
//! reader with `SIGBUS`): the header is read into memory and the tensors are read with
//! positioned reads, in file order and in chunks of 4 MiB, into the flat parameter buffer,
//! so the peak resident memory of loading an f32 checkpoint is the parameter buffer plus one
//! chunk (see docs/reliability.md). A file that changes size while it is read is an
//! [`Error::Safetensors`] ("changed while loading"). Every header field is checked against the
//! file size before anything is allocated, and a FIFO or device given as the checkpoint or
//! `config.json` is refused before any read (it would block forever).

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;

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
    pub(super) fn size(self) -> usize {
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
    /// hub layout; or `config.json` + a sharded `model.safetensors.index.json`, see
    /// [`Gpt2::save_sharded`]) or a single `.safetensors` file. A directory or file holding only a
    /// PyTorch pickle (`pytorch_model.bin`) is refused with [`Error::UnsupportedCheckpoint`],
    /// which says how to convert it. To find a model by hub id, see [`Gpt2::from_pretrained`].
    ///
    /// ```
    /// use gpt2::Gpt2;
    /// # let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/tiny");
    /// let model = Gpt2::load(&dir)?; // config.json + model.safetensors
    /// let logits = model.logits(&[1, 2, 3])?;
    /// assert_eq!(logits.dim(), (3, model.config().vocab_size));
    /// assert!(matches!(Gpt2::load("/no/such/dir"), Err(gpt2::Error::NotFound(_))));
    /// # Ok::<(), gpt2::Error>(())
    /// ```
    ///
    /// For a bare file the config is
    /// taken from the file's metadata (written by [`Gpt2::save`]), else from a
    /// `config.json` beside it, else inferred from tensor shapes with GPT-2's
    /// head width of 64.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(Error::NotFound(path.to_path_buf()));
        }
        if let Some(loaded) = super::sharded::load_other_layouts(path) {
            return loaded; // sharded checkpoint, or a typed error for PyTorch pickles
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
        let f = crate::fsutil::open_regular(&file)?;
        let reader = FileReader::new(&f, &file)?;
        let image = reader.header_image()?;
        let image = &image[..reader.len()?];
        let (meta_config, tensors) = parse_safetensors(&file, image)?;
        let config = match meta_config {
            Some(c) => c,
            None => match config_path.filter(|p| p.exists()) {
                Some(p) => Config::from_json_file(&p)?,
                None if path.is_dir() => return Err(Error::NotFound(path.join("config.json"))),
                None => infer_config(&tensors)?,
            },
        };
        let model = load_tensors(&file, image, Some(&reader), &tensors, config)?;
        reader.check_unchanged()?;
        Ok(model)
    }

    /// Loads a model from the bytes of a `.safetensors` file already in memory (downloaded,
    /// embedded, or fuzzed). The config is `config` when given, else the one stored in the
    /// file's metadata by [`Gpt2::save`], else inferred from tensor shapes as
    /// [`Gpt2::load`] does for a bare file.
    ///
    /// Every header field is checked against `bytes.len()` before anything is allocated:
    /// a header or config that claims more data than the buffer holds is an error, never an
    /// allocation of the claimed size.
    ///
    /// Errors: [`Error::Safetensors`] (corrupt or truncated data, unexpected or duplicate
    /// tensors, a config needing more data than present), [`Error::Json`] /
    /// [`Error::InvalidConfig`] (embedded config), [`Error::MissingTensor`],
    /// [`Error::ShapeMismatch`], [`Error::UnsupportedDtype`].
    ///
    /// ```
    /// use gpt2::{Config, Gpt2};
    /// let model = Gpt2::new_random(Config::new(1, 1, 4, 4, 8), 0).unwrap();
    /// let dir = std::env::temp_dir().join(format!("gpt2-from-bytes-doc-{}", std::process::id()));
    /// model.save(&dir).unwrap();
    /// let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    /// let back = Gpt2::load_from_bytes(&bytes, None).unwrap();
    /// assert_eq!(back.params(), model.params());
    /// assert!(Gpt2::load_from_bytes(&bytes[..bytes.len() - 1], None).is_err());
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn load_from_bytes(bytes: &[u8], config: Option<Config>) -> Result<Self> {
        let file = Path::new("<bytes>");
        let (meta_config, tensors) = parse_safetensors(file, bytes)?;
        let config = match config {
            Some(c) => {
                c.validate()?;
                c
            }
            None => match meta_config {
                Some(c) => c,
                None => infer_config(&tensors)?,
            },
        };
        load_tensors(file, bytes, None, &tensors, config)
    }

    /// Saves as a HuggingFace-loadable directory: `dir/config.json` and
    /// `dir/model.safetensors` (keys with the `transformer.` prefix, tied head
    /// omitted), both written atomically.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        self.save_with_dtype(dir, SaveDtype::F32)
    }

    /// Like [`save`](Self::save) with a chosen storage dtype (f16/bf16 halve the size).
    ///
    /// Crash safety: each file is written atomically (temp file in `dir`, fsync, rename, fsync
    /// of `dir`), `config.json` first and `model.safetensors` last, so `model.safetensors`
    /// marks a finished checkpoint: a crash leaves either the previous checkpoint or the new
    /// one (never a torn file), and a first save interrupted before its weights leaves no
    /// `model.safetensors` at all. The weights also carry the config in their metadata, which
    /// [`Gpt2::load`] prefers over `config.json`. Temporary files that a killed earlier save left
    /// in `dir` (hidden `.model.safetensors.tmp-PID-N`, never read by the loader) are removed.
    pub fn save_with_dtype(&self, dir: impl AsRef<Path>, dtype: SaveDtype) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        crate::fsutil::remove_stale_temps(dir, |t| t == "config.json" || t == "model.safetensors");
        let cfg_path = dir.join("config.json");
        let json = hf_config_json(&self.config, dtype);
        write_atomic(&cfg_path, |w| w.write_all(json.as_bytes()))?;
        self.save_safetensors(dir.join("model.safetensors"), dtype)
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
pub(super) fn is_buffer(key: &str) -> bool {
    key.ends_with(".attn.bias") || key.ends_with(".attn.masked_bias")
}

pub(super) fn strip(key: &str) -> &str {
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
                n_layer = n_layer.max(i.saturating_add(1));
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

/// Parses the safetensors header of `bytes` (validated against the buffer length by the
/// safetensors crate) and the config embedded in its metadata, if any.
fn parse_safetensors<'a>(file: &Path, bytes: &'a [u8]) -> Result<(Option<Config>, SafeTensors<'a>)> {
    let st_err = |reason: String| Error::Safetensors { path: file.to_path_buf(), reason };
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| st_err(e.to_string()))?;
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| st_err(e.to_string()))?;
    let config = match meta.metadata().as_ref().and_then(|m| m.get(CONFIG_METADATA_KEY)) {
        Some(json) => Some(Config::from_json_str(json, file)?),
        None => None,
    };
    Ok((config, tensors))
}

/// Bytes of tensor data in a safetensors buffer (after the 8-byte length and the header).
fn data_bytes(bytes: &[u8]) -> usize {
    let n = bytes.get(..8).map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    bytes.len().saturating_sub(8).saturating_sub(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Refuses a config whose parameters cannot possibly be in the file (each element takes at
/// least 2 bytes), before the layout and the parameter buffer are allocated. Names the first
/// missing tensor when one is missing (scanning at most as many layers as the file can hold).
fn check_config_fits(file: &Path, st: &SafeTensors<'_>, data_bytes: usize, config: &Config) -> Result<()> {
    let needed = config.checked_num_parameters().unwrap_or(usize::MAX);
    if needed <= data_bytes / 2 {
        return Ok(());
    }
    let present: HashSet<&str> = st.names().into_iter().map(strip).collect();
    let block = [
        "ln_1.weight",
        "ln_1.bias",
        "attn.c_attn.weight",
        "attn.c_attn.bias",
        "attn.c_proj.weight",
        "attn.c_proj.bias",
        "ln_2.weight",
        "ln_2.bias",
        "mlp.c_fc.weight",
        "mlp.c_fc.bias",
        "mlp.c_proj.weight",
        "mlp.c_proj.bias",
    ];
    let layers = config.n_layer.min(present.len() / block.len() + 1);
    let names = ["wte.weight".to_string(), "wpe.weight".to_string()]
        .into_iter()
        .chain((0..layers).flat_map(|l| block.iter().map(move |s| format!("h.{l}.{s}"))))
        .chain(["ln_f.weight".to_string(), "ln_f.bias".to_string()]);
    for name in names {
        if !present.contains(name.as_str()) {
            return Err(Error::MissingTensor(name));
        }
    }
    Err(Error::Safetensors {
        path: file.to_path_buf(),
        reason: format!(
            "the config needs {} parameters (at least {} bytes) but the file holds only {data_bytes} bytes of tensor \
             data; the tensors do not match the config",
            config.num_parameters(),
            config.num_parameters().saturating_mul(2)
        ),
    })
}

/// Reads a safetensors file with positioned reads (no memory map, so no `SIGBUS` when another
/// process truncates or replaces the file).
struct FileReader<'a> {
    file: &'a std::fs::File,
    path: &'a Path,
    size: u64,
}

impl<'a> FileReader<'a> {
    fn new(file: &'a std::fs::File, path: &'a Path) -> Result<Self> {
        let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
        Ok(FileReader { file, path, size })
    }

    fn changed(&self) -> Error {
        let now = self.file.metadata().map_or(0, |m| m.len());
        Error::Safetensors {
            path: self.path.to_path_buf(),
            reason: format!(
                "the file changed while loading ({} bytes when opened, {now} now); was it replaced in place?",
                self.size
            ),
        }
    }

    /// An image of the file as long as the file whose header bytes are read and whose tensor
    /// data is left as untouched zero pages of an anonymous map (never resident): enough for the
    /// safetensors parser to validate every offset against the file size, at no memory cost.
    fn header_image(&self) -> Result<memmap2::MmapMut> {
        let len = self.len()?;
        let mut image = memmap2::MmapMut::map_anon(len.max(1)).map_err(|e| Error::io(self.path, e))?;
        let first = len.min(8);
        self.read_at(0, &mut image[..first])?;
        let n = image.get(..8).filter(|_| first == 8).map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
        let head = usize::try_from(n).unwrap_or(usize::MAX).saturating_add(8).min(len);
        self.read_at(0, &mut image[..head])?;
        Ok(image)
    }

    /// The file size (as opened).
    fn len(&self) -> Result<usize> {
        usize::try_from(self.size).map_err(|_| Error::Safetensors {
            path: self.path.to_path_buf(),
            reason: format!("{} bytes do not fit in memory on this platform", self.size),
        })
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        crate::fsutil::read_exact_at(self.file, buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.changed()
            } else {
                Error::io(self.path, e)
            }
        })
    }

    /// The bytes `view` (a slice of the header image) stands for, read from the file into `buf`.
    fn read_view<'b>(&self, image_base: usize, view: &[u8], buf: &'b mut Vec<u8>) -> Result<&'b [u8]> {
        buf.resize(view.len(), 0);
        self.read_at((view.as_ptr() as usize - image_base) as u64, buf)?;
        Ok(buf)
    }

    fn check_unchanged(&self) -> Result<()> {
        match self.file.metadata() {
            Ok(m) if m.len() == self.size => Ok(()),
            _ => Err(self.changed()),
        }
    }
}

/// Copies every expected tensor into a fresh flat buffer, checking shapes. With `reader`, `bytes`
/// is a header image (see [`FileReader::header_image`]) and tensor data is read from the file.
fn load_tensors(
    file: &Path,
    bytes: &[u8],
    reader: Option<&FileReader<'_>>,
    st: &SafeTensors<'_>,
    config: Config,
) -> Result<Gpt2> {
    check_config_fits(file, st, data_bytes(bytes), &config)?;
    let layout = ParamLayout::new(&config);
    let mut params = vec![0f32; layout.total()];
    let mut seen: HashSet<String> = HashSet::new();
    let mut lm_head: Option<String> = None;
    let base = bytes.as_ptr() as usize;
    let mut chunk_buf = Vec::new();
    // In file order: sequential reads.
    let mut names = st.names();
    names.sort_by_key(|n| st.tensor(n).map_or(0, |v| v.data().as_ptr() as usize));
    for name in names {
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
        // Copy in chunks of ~4 MiB, so the resident set is the f32 buffer plus one chunk.
        let size = dtype_size(view.dtype(), name)?;
        let dst = &mut params[info.range()];
        if view.data().len() != dst.len() * size {
            return Err(Error::ShapeMismatch {
                name: name.to_string(),
                expected: vec![dst.len() * size],
                found: vec![view.data().len()],
            });
        }
        let per_chunk = (4 << 20) / size;
        for (d, b) in dst.chunks_mut(per_chunk).zip(view.data().chunks(per_chunk * size)) {
            let b = match reader {
                Some(r) => r.read_view(base, b, &mut chunk_buf)?,
                None => b,
            };
            convert_into(d, b, view.dtype(), name)?;
        }
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
        // Compare chunk by chunk (bitwise) so a tied head costs no second copy of `wte`.
        let size = dtype_size(view.dtype(), &name)?;
        let mut head = vec![0f32; 4096];
        for (chunk, w) in view.data().chunks(4096 * size).zip(params[wte.range()].chunks(4096)) {
            let chunk = match reader {
                Some(r) => r.read_view(base, chunk, &mut chunk_buf)?,
                None => chunk,
            };
            convert_into(&mut head[..w.len()], chunk, view.dtype(), &name)?;
            if head[..w.len()].iter().zip(w).any(|(a, b)| a.to_bits() != b.to_bits()) {
                return Err(Error::Safetensors {
                    path: file.to_path_buf(),
                    reason: "lm_head.weight differs from wte.weight; GPT-2 ties them and untied heads are not \
                             supported"
                        .into(),
                });
            }
        }
    }
    Gpt2::from_params(config, params)
}

/// Bytes per element of a dtype this crate reads.
pub(super) fn dtype_size(dtype: Dtype, name: &str) -> Result<usize> {
    match dtype {
        Dtype::F32 => Ok(4),
        Dtype::F16 | Dtype::BF16 => Ok(2),
        Dtype::F64 => Ok(8),
        other => Err(Error::UnsupportedDtype { name: name.to_string(), dtype: format!("{other:?}") }),
    }
}

/// Converts little-endian tensor bytes of `dtype` into f32.
pub(super) fn convert_into(dst: &mut [f32], bytes: &[u8], dtype: Dtype, name: &str) -> Result<()> {
    let size = dtype_size(dtype, name)?;
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

/// `config.json` as transformers writes it, telling it which dtype the weights are stored in
/// (`torch_dtype` / `dtype`) when that is not f32. Shared by the single-file and sharded savers.
pub(crate) fn hf_config_json(config: &Config, dtype: SaveDtype) -> String {
    let json = config.to_hf_json();
    if dtype == SaveDtype::F32 {
        return json;
    }
    let mut v: serde_json::Value = serde_json::from_str(&json).expect("json");
    let name = if dtype == SaveDtype::F16 { "float16" } else { "bfloat16" };
    v["torch_dtype"] = name.into();
    v["dtype"] = name.into();
    serde_json::to_string_pretty(&v).expect("json")
}
