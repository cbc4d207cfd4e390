//! Training checkpoints: model + optimizer state + step + data position, resumable
//! bit-identically.
//!
//! A checkpoint is a directory:
//! - `config.json`, `model.safetensors` — the model, exactly as [`Gpt2::save`] writes it (so a
//!   checkpoint is also a loadable model directory),
//! - `optimizer.safetensors` — AdamW moments `adamw.m`, `adamw.v` (f32, trainable tensors only,
//!   layout order),
//! - `trainer.json` — format tag, step, skipped steps, optimizer step count, the full
//!   [`TrainerConfig`], the trainable tensor names, the data source's
//!   [`BatchSource::state`], and a caller-defined `extra` value (e.g. a loss history).
//!
//! Saving writes every file (each with `write_atomic`) into a hidden sibling directory and then
//! swaps it in with renames, so an interrupted save never leaves a half-written checkpoint under
//! the final name (at worst the previous checkpoint remains as `.NAME.old-*` beside it).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use super::trainer::{Trainer, TrainerConfig};
use crate::data::BatchSource;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::model::io::write_safetensors;
use crate::model::Gpt2;
use crate::SaveDtype;

/// Format tag stored in `trainer.json`.
pub const CHECKPOINT_FORMAT: &str = "gpt2.train.Checkpoint/1";

/// The JSON part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Meta {
    format: String,
    step: usize,
    skipped: usize,
    optimizer_steps: u64,
    trainer: TrainerConfig,
    trainable: Vec<String>,
    data: Option<serde_json::Value>,
    extra: serde_json::Value,
}

/// A loaded checkpoint. Turn it into a [`Trainer`] with [`Trainer::from_checkpoint`] and put the
/// data source back with `source.restore(ckpt.data_state.clone().unwrap())`.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The model.
    pub model: Gpt2,
    /// The trainer configuration in force when it was saved.
    pub config: TrainerConfig,
    /// Index of the next step.
    pub step: usize,
    /// Steps skipped for non-finite values so far.
    pub skipped: usize,
    /// AdamW step count (bias correction).
    pub optimizer_steps: u64,
    /// AdamW first moments.
    pub m: Vec<f32>,
    /// AdamW second moments.
    pub v: Vec<f32>,
    /// [`BatchSource::state`] of the training data, if one was given.
    pub data_state: Option<serde_json::Value>,
    /// Whatever the caller stored.
    pub extra: serde_json::Value,
}

fn read_f32(st: &SafeTensors<'_>, file: &Path, name: &str) -> Result<Vec<f32>> {
    let bad = |reason: String| Error::Safetensors { path: file.to_path_buf(), reason };
    let t = st.tensor(name).map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
    if t.dtype() != Dtype::F32 {
        return Err(Error::UnsupportedDtype { name: name.to_string(), dtype: format!("{:?}", t.dtype()) });
    }
    Ok(t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

fn sibling(dir: &Path, tag: &str) -> Result<PathBuf> {
    let name = dir
        .file_name()
        .ok_or_else(|| Error::arg("dir", format!("{} has no final component", dir.display())))?
        .to_string_lossy()
        .into_owned();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    Ok(dir.with_file_name(format!(".{name}.{tag}-{}-{nanos}", std::process::id())))
}

impl Trainer {
    /// Saves a checkpoint of the model, optimizer and step into `dir` (replacing an existing
    /// checkpoint there), with the position of `data` and a caller-defined `extra` value.
    ///
    /// In a data-parallel group this is collective: every rank calls it, the parameters are
    /// checked to be identical on every rank ([`Trainer::check_replicas`]), ZeRO-1 moments are
    /// gathered, and rank 0 alone writes (the other ranks return `Ok` without touching `dir`).
    /// The files are the same as one process's, so any number of ranks can resume from them.
    pub fn save_checkpoint(
        &self,
        dir: impl AsRef<Path>,
        data: Option<&dyn BatchSource>,
        extra: serde_json::Value,
    ) -> Result<()> {
        let dir = dir.as_ref();
        self.check_replicas()?;
        let (m, v) = self.full_moments()?;
        if self.collective().rank() != 0 {
            return Ok(());
        }
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let tmp = sibling(dir, "tmp")?;
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let result = (|| -> Result<()> {
            self.model().save_with_dtype(&tmp, SaveDtype::F32)?;
            let (m, v) = (&m[..], &v[..]);
            let mut meta = BTreeMap::new();
            meta.insert("format".to_string(), CHECKPOINT_FORMAT.to_string());
            let shape = [m.len()];
            write_safetensors(
                &tmp.join("optimizer.safetensors"),
                &[("adamw.m".to_string(), &shape[..], m), ("adamw.v".to_string(), &shape[..], v)],
                SaveDtype::F32,
                &meta,
            )?;
            let meta = Meta {
                format: CHECKPOINT_FORMAT.into(),
                step: self.step_index(),
                skipped: self.skipped_steps(),
                optimizer_steps: self.optimizer().steps(),
                trainer: self.config().clone(),
                trainable: self.mask().trainable_names(self.model().layout()).iter().map(|s| s.to_string()).collect(),
                data: data.map(|d| d.state()),
                extra,
            };
            let json = serde_json::to_string_pretty(&meta).expect("checkpoint metadata serializes");
            write_atomic(&tmp.join("trainer.json"), |w| w.write_all(json.as_bytes()))
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let old = if dir.exists() {
            let old = sibling(dir, "old")?;
            std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
            Some(old)
        } else {
            None
        };
        std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
        if let Some(parent) = dir.parent() {
            let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
            if let Ok(d) = std::fs::File::open(parent) {
                let _ = d.sync_all();
            }
        }
        if let Some(old) = old {
            std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        }
        Ok(())
    }

    /// A trainer that continues exactly where `ckpt` stopped (same model, optimizer state,
    /// step counter and configuration). Errors: the optimizer state does not fit the model or
    /// the trainable tensors.
    pub fn from_checkpoint(ckpt: Checkpoint) -> Result<Trainer> {
        let mut t = Trainer::new(ckpt.model, ckpt.config)?;
        t.optimizer_mut().set_state(ckpt.m, ckpt.v, ckpt.optimizer_steps)?;
        t.set_step_index(ckpt.step, ckpt.skipped);
        Ok(t)
    }
}

impl Checkpoint {
    /// Reads a checkpoint directory written by [`Trainer::save_checkpoint`].
    ///
    /// Errors: [`Error::NotFound`], [`Error::Json`] / [`Error::Safetensors`] for damaged files,
    /// [`Error::InvalidArgument`] for another format or trainable tensors that do not match.
    pub fn load(dir: impl AsRef<Path>) -> Result<Checkpoint> {
        let dir = dir.as_ref();
        let meta_path = dir.join("trainer.json");
        let text = std::fs::read_to_string(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
        let meta: Meta =
            serde_json::from_str(&text).map_err(|e| Error::Json { path: meta_path.clone(), reason: e.to_string() })?;
        if meta.format != CHECKPOINT_FORMAT {
            return Err(Error::arg("checkpoint", format!("format `{}`, expected `{CHECKPOINT_FORMAT}`", meta.format)));
        }
        let model = Gpt2::load(dir)?;
        let mask = meta.trainer.selection.resolve(model.layout())?;
        let names: Vec<String> = mask.trainable_names(model.layout()).iter().map(|s| s.to_string()).collect();
        if names != meta.trainable {
            return Err(Error::arg("checkpoint", "the trainable tensors recorded do not match the selection"));
        }
        let opt_path = dir.join("optimizer.safetensors");
        let bytes = std::fs::read(&opt_path).map_err(|e| Error::io(&opt_path, e))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::Safetensors { path: opt_path.clone(), reason: e.to_string() })?;
        let m = read_f32(&st, &opt_path, "adamw.m")?;
        let v = read_f32(&st, &opt_path, "adamw.v")?;
        Ok(Checkpoint {
            model,
            config: meta.trainer,
            step: meta.step,
            skipped: meta.skipped,
            optimizer_steps: meta.optimizer_steps,
            m,
            v,
            data_state: meta.data,
            extra: meta.extra,
        })
    }
}
