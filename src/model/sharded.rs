//! Sharded safetensors checkpoints (`model.safetensors.index.json` + `model-0000k-of-0000n`
//! shards, what transformers' `save_pretrained(max_shard_size=…)` writes for large models), and
//! the typed error for checkpoints that exist only as PyTorch pickles (`pytorch_model.bin`),
//! which this crate never unpickles.
//!
//! Loading reads one shard at a time into memory (owned reads; hub-cache symlinks are
//! followed), so the peak memory is the f32 parameter buffer plus the largest shard. The index
//! is checked against the shards: every tensor must be in the shard the index names, shard
//! names must be plain file names in the checkpoint's directory, and the config must fit in the
//! shards' total size before the parameter buffer is allocated.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::SafeTensors;

use super::io::{convert_into, dtype_size, is_buffer, strip, write_safetensors, SaveDtype};
use super::{Config, Gpt2, ParamLayout};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

/// The index file of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Largest index file read (a 1.5B-parameter GPT-2's index is about 50 kB).
const MAX_INDEX_BYTES: u64 = 64 << 20;

/// The layouts [`Gpt2::load`] handles besides a single safetensors file: `Some` for a sharded
/// checkpoint (directory with an index and no `model.safetensors`, or the index file itself) and
/// for PyTorch pickles (an error); `None` to let the single-file loader proceed.
pub(super) fn load_other_layouts(path: &Path) -> Option<Result<Gpt2>> {
    if path.is_dir() {
        if path.join("model.safetensors").exists() {
            return None;
        }
        if path.join(INDEX_FILE).exists() {
            return Some(load_sharded(&path.join(INDEX_FILE)));
        }
        for bin in ["pytorch_model.bin", "pytorch_model.bin.index.json"] {
            if path.join(bin).exists() {
                return Some(Err(pickle_error(&path.join(bin), path)));
            }
        }
        return None;
    }
    let name = path.file_name()?.to_string_lossy();
    if name.ends_with(".safetensors.index.json") {
        return Some(load_sharded(path));
    }
    if name.ends_with(".bin") || name.ends_with(".pt") || name.ends_with(".pth") || name.ends_with(".bin.index.json") {
        return Some(Err(pickle_error(path, path.parent().unwrap_or(Path::new(".")))));
    }
    None
}

fn pickle_error(file: &Path, dir: &Path) -> Error {
    let d = dir.display();
    Error::UnsupportedCheckpoint {
        path: file.to_path_buf(),
        reason: format!(
            "{} is a pickled PyTorch checkpoint, which this crate does not read (unpickling can run arbitrary \
             code); convert it once to safetensors with transformers: python -c \"from transformers import \
             GPT2LMHeadModel as M; M.from_pretrained('{d}').save_pretrained('{d}')\" (writes model.safetensors), \
             or download the model's model.safetensors",
            file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned()),
        ),
    }
}

/// The `weight_map` of an index file: tensor name → shard file name.
fn read_index(index: &Path) -> Result<BTreeMap<String, String>> {
    let bytes = read_regular(index, MAX_INDEX_BYTES)?;
    let json_err = |reason: String| Error::Json { path: index.to_path_buf(), reason };
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| json_err(e.to_string()))?;
    let map =
        v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| json_err("no `weight_map` object".into()))?;
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let shard = v.as_str().ok_or_else(|| json_err(format!("weight_map[{k:?}] is not a string")))?;
        let plain = Path::new(shard).file_name().is_some_and(|n| n == shard)
            && !shard.contains(['/', '\\'])
            && shard != ".."
            && shard.ends_with(".safetensors");
        if !plain {
            return Err(json_err(format!(
                "weight_map[{k:?}] = {shard:?} is not a .safetensors file name in the checkpoint's directory"
            )));
        }
        out.insert(k.clone(), shard.to_string());
    }
    if out.is_empty() {
        return Err(json_err("`weight_map` is empty".into()));
    }
    Ok(out)
}

/// Reads a whole regular file (symlinks followed) of at most `limit` bytes.
fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::Safetensors { path: path.to_path_buf(), reason: "not a regular file".into() });
    }
    if meta.len() > limit {
        return Err(Error::Safetensors {
            path: path.to_path_buf(),
            reason: format!("{} bytes is more than the {limit} this file may have", meta.len()),
        });
    }
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Loads a sharded checkpoint from its index file (`config.json` beside it).
fn load_sharded(index: &Path) -> Result<Gpt2> {
    let dir = index.parent().unwrap_or(Path::new("."));
    let weight_map = read_index(index)?;
    let config = Config::from_json_file(&dir.join("config.json"))?;
    let shards: BTreeSet<&str> = weight_map.values().map(String::as_str).collect();
    let mut total = 0u64;
    for s in &shards {
        let p = dir.join(s);
        let meta = std::fs::metadata(&p).map_err(|e| Error::io(&p, e))?;
        total = total.saturating_add(meta.len());
    }
    // every parameter takes at least 2 bytes: refuse before allocating for an absurd config
    let needed = config.checked_num_parameters().map(|n| n as u64 * 2);
    if needed.is_none_or(|n| n > total) {
        return Err(Error::Safetensors {
            path: index.to_path_buf(),
            reason: format!(
                "the config needs {} parameters but the {} shards hold only {total} bytes",
                config.num_parameters(),
                shards.len()
            ),
        });
    }
    let layout = ParamLayout::new(&config);
    let mut params = vec![0f32; layout.total()];
    let mut seen: HashSet<String> = HashSet::new();
    let mut listed_found = 0usize;
    let mut lm_head: Option<(PathBuf, String)> = None;
    for shard in &shards {
        let file = dir.join(shard);
        let bytes = read_regular(&file, u64::MAX)?;
        let st_err = |reason: String| Error::Safetensors { path: file.clone(), reason };
        let st = SafeTensors::deserialize(&bytes).map_err(|e| st_err(e.to_string()))?;
        for name in st.names() {
            match weight_map.get(name) {
                Some(s) if s == shard => listed_found += 1,
                Some(s) => return Err(st_err(format!("tensor `{name}` is here but the index puts it in {s}"))),
                None => return Err(st_err(format!("tensor `{name}` is not in the index {}", index.display()))),
            }
            let key = strip(name);
            if is_buffer(key) {
                continue;
            }
            if key == "lm_head.weight" {
                lm_head = Some((file.clone(), name.to_string()));
                continue;
            }
            let info = layout
                .get(key)
                .ok_or_else(|| st_err(format!("unexpected tensor `{name}` (not a GPT-2 parameter for this config)")))?;
            if !seen.insert(info.name.clone()) {
                return Err(st_err(format!("tensor `{key}` appears twice")));
            }
            let view = st.tensor(name).map_err(|e| st_err(e.to_string()))?;
            if view.shape() != info.shape.as_slice() {
                return Err(Error::ShapeMismatch {
                    name: name.to_string(),
                    expected: info.shape.clone(),
                    found: view.shape().to_vec(),
                });
            }
            convert_into(&mut params[info.range()], view.data(), view.dtype(), name)?;
        }
    }
    if listed_found != weight_map.len() {
        let missing = weight_map.len() - listed_found;
        return Err(Error::Safetensors {
            path: index.to_path_buf(),
            reason: format!("{missing} tensor(s) listed in the index are not in their shards"),
        });
    }
    for info in layout.params() {
        if !seen.contains(&info.name) {
            return Err(Error::MissingTensor(info.name.clone()));
        }
    }
    if let Some((file, name)) = lm_head {
        let bytes = read_regular(&file, u64::MAX)?;
        let st_err = |reason: String| Error::Safetensors { path: file.clone(), reason };
        let st = SafeTensors::deserialize(&bytes).map_err(|e| st_err(e.to_string()))?;
        let view = st.tensor(&name).map_err(|e| st_err(e.to_string()))?;
        let wte = layout.require("wte.weight")?;
        if view.shape() != wte.shape.as_slice() {
            return Err(Error::ShapeMismatch { name, expected: wte.shape.clone(), found: view.shape().to_vec() });
        }
        dtype_size(view.dtype(), &name)?;
        let mut head = vec![0f32; wte.shape.iter().product()];
        convert_into(&mut head, view.data(), view.dtype(), &name)?;
        if head.iter().zip(&params[wte.range()]).any(|(a, b)| a.to_bits() != b.to_bits()) {
            return Err(st_err(
                "lm_head.weight differs from wte.weight; GPT-2 ties them and untied heads are not supported".into(),
            ));
        }
    }
    Gpt2::from_params(config, params)
}

/// `model-00001-of-00003.safetensors`-style names.
fn shard_name(k: usize, n: usize) -> String {
    format!("model-{k:05}-of-{n:05}.safetensors")
}

fn is_shard_name(name: &str) -> bool {
    let b = name.as_bytes();
    name.len() == "model-00001-of-00003.safetensors".len()
        && name.starts_with("model-")
        && name.ends_with(".safetensors")
        && &name[11..15] == "-of-"
        && b[6..11].iter().chain(&b[15..20]).all(u8::is_ascii_digit)
}

impl Gpt2 {
    /// Saves like [`Gpt2::save_with_dtype`], splitting the weights into shards of at most
    /// `max_shard_size` bytes (a tensor larger than that gets a shard of its own) with a
    /// `model.safetensors.index.json`, the layout transformers' `save_pretrained(max_shard_size=…)`
    /// writes and `from_pretrained` reads. When everything fits in one shard, a plain
    /// `model.safetensors` is written instead (as transformers does).
    ///
    /// Files are written atomically, shards first and the index last; a `model.safetensors` and
    /// shards of an earlier save that the new index does not name are then removed, so the
    /// directory holds exactly one checkpoint.
    ///
    /// ```
    /// use gpt2::{Config, Gpt2, SaveDtype};
    /// let model = Gpt2::new_random(Config::new(2, 2, 16, 8, 64), 0)?;
    /// let dir = std::env::temp_dir().join(format!("gpt2-sharded-doc-{}", std::process::id()));
    /// model.save_sharded(&dir, SaveDtype::F32, 4096)?;
    /// assert!(dir.join("model.safetensors.index.json").exists());
    /// assert_eq!(Gpt2::load(&dir)?.params(), model.params());
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), gpt2::Error>(())
    /// ```
    pub fn save_sharded(&self, dir: impl AsRef<Path>, dtype: SaveDtype, max_shard_size: usize) -> Result<()> {
        let dir = dir.as_ref();
        if max_shard_size == 0 {
            return Err(Error::arg("max_shard_size", "must be positive"));
        }
        let tensors: Vec<(String, &[usize], &[f32])> = self
            .layout
            .params()
            .iter()
            .map(|p| (format!("transformer.{}", p.name), p.shape.as_slice(), &self.params[p.range()]))
            .collect();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut size = 0usize;
        for (i, (_, _, data)) in tensors.iter().enumerate() {
            let bytes = data.len().saturating_mul(dtype.size());
            if groups.is_empty() || (size > 0 && size.saturating_add(bytes) > max_shard_size) {
                groups.push(Vec::new());
                size = 0;
            }
            groups.last_mut().expect("pushed").push(i);
            size = size.saturating_add(bytes);
        }
        if groups.len() <= 1 {
            self.save_with_dtype(dir, dtype)?;
            let _ = std::fs::remove_file(dir.join(INDEX_FILE));
            remove_stale_shards(dir, &BTreeSet::new());
            return Ok(());
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let json = super::io::hf_config_json(&self.config, dtype);
        write_atomic(&dir.join("config.json"), |w| w.write_all(json.as_bytes()))?;
        let n = groups.len();
        let mut weight_map = serde_json::Map::new();
        let mut names = BTreeSet::new();
        let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        for (k, group) in groups.iter().enumerate() {
            let file = shard_name(k + 1, n);
            let part: Vec<(String, &[usize], &[f32])> = group.iter().map(|&i| tensors[i].clone()).collect();
            write_safetensors(&dir.join(&file), &part, dtype, &meta)?;
            for (name, _, _) in &part {
                weight_map.insert(name.clone(), file.clone().into());
            }
            names.insert(file);
        }
        let total: usize = tensors.iter().map(|(_, _, d)| d.len() * dtype.size()).sum();
        let index = serde_json::json!({
            "metadata": {"total_parameters": self.num_parameters(), "total_size": total},
            "weight_map": weight_map,
        });
        let text = serde_json::to_string_pretty(&index).expect("json");
        write_atomic(&dir.join(INDEX_FILE), |w| w.write_all(text.as_bytes()))?;
        let _ = std::fs::remove_file(dir.join("model.safetensors"));
        remove_stale_shards(dir, &names);
        Ok(())
    }
}

/// Removes `model-NNNNN-of-NNNNN.safetensors` files in `dir` that are not in `keep`.
fn remove_stale_shards(dir: &Path, keep: &BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if is_shard_name(&name) && !keep.contains(&name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names() {
        assert_eq!(shard_name(1, 3), "model-00001-of-00003.safetensors");
        assert!(is_shard_name("model-00001-of-00003.safetensors"));
        assert!(!is_shard_name("model-0000a-of-00003.safetensors"));
        assert!(!is_shard_name("model.safetensors"));
    }
}
