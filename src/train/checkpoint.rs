//! Training checkpoints: model + optimizer state + step + data position, resumable
//! bit-identically.
//!
//! A checkpoint directory holds step directories and a pointer:
//! - `step-N/` — one complete checkpoint:
//!   - `config.json`, `model.safetensors` — the model, exactly as [`Gpt2::save`] writes it (so a
//!     step directory is also a loadable model directory),
//!   - `optimizer.safetensors` — AdamW moments `adamw.m`, `adamw.v` (f32, trainable tensors
//!     only, layout order),
//!   - `trainer.json` — format tag, step, skipped steps, optimizer step count, the full
//!     [`TrainerConfig`], the trainable tensor names, the data source's
//!     [`BatchSource::state`], and a caller-defined `extra` value (e.g. a loss history);
//! - `latest` — a one-line file naming the current step directory.
//!
//! A save writes a new step directory under a hidden temporary name, renames it into place and
//! then replaces `latest` with one atomic rename — the only moment the current checkpoint
//! changes — before deleting what it superseded (see [`Trainer::save_checkpoint`]). Directories
//! of the legacy layout (the four files directly in the checkpoint directory) still load.

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

/// Name of the pointer file inside a checkpoint directory.
pub(crate) const LATEST: &str = "latest";

/// Files of the legacy layout (a checkpoint written directly into the directory).
const LEGACY_FILES: [&str; 4] = ["config.json", "model.safetensors", "optimizer.safetensors", "trainer.json"];

/// The steps of the save protocol, in order. A fault-injection hook is called after each one
/// (after every single removal for [`SaveStage::RemovedOld`]); see
/// [`Trainer::save_checkpoint`] for what a crash after each step leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SaveStage {
    /// Stale temporaries of dead saves removed (once per removal).
    RemovedStale,
    /// The hidden temporary step directory exists.
    TempCreated,
    /// `config.json` + `model.safetensors` written (each fsynced) into it.
    ModelWritten,
    /// `optimizer.safetensors` written.
    OptimizerWritten,
    /// `trainer.json` written.
    MetaWritten,
    /// The temporary directory fsynced.
    TempSynced,
    /// The temporary directory renamed to its final `step-…` name.
    StepRenamed,
    /// The checkpoint directory fsynced (the new step directory is durable).
    RootSynced,
    /// The new pointer written to a temporary file and fsynced.
    PointerWritten,
    /// The pointer renamed over `latest`: the commit point.
    PointerRenamed,
    /// The checkpoint directory fsynced (the new pointer is durable).
    PointerSynced,
    /// One superseded step directory, legacy file or stale temporary removed.
    RemovedOld,
}

/// What a save hook does: `Err` aborts the save on the spot, as a crash would (nothing is
/// cleaned up).
pub(crate) type SaveHook<'a> = &'a mut dyn FnMut(SaveStage) -> Result<()>;

/// The fault-injection hook of a save and whether it fired.
struct Protocol<'a> {
    hook: SaveHook<'a>,
    crashed: bool,
}

impl Protocol<'_> {
    fn at(&mut self, stage: SaveStage) -> Result<()> {
        let r = (self.hook)(stage);
        self.crashed |= r.is_err();
        r
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))
}

fn nanos() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
}

/// A hidden name `.{target}.{tag}-{pid}-{n}` of this process.
fn temp_name(target: &str, tag: &str) -> String {
    format!(".{target}.{tag}-{}-{}", std::process::id(), nanos())
}

/// Whether a temporary of process `pid` is stale: its process has exited, or it is this
/// process's own leftover (an aborted save; saves into one checkpoint directory are not run
/// concurrently from one process).
fn stale(pid: u32) -> bool {
    pid == std::process::id() || crate::fsutil::process_gone(pid)
}

/// `.{target}.{tag}-{pid}-{n}` → `(target, pid)` for `tag` in `tmp`, `old` (the legacy layout's
/// swap directories use both).
fn parse_hidden(name: &str) -> Option<(&str, u32)> {
    if let Some(p) = crate::fsutil::parse_temp_name(name) {
        return Some(p);
    }
    let rest = name.strip_prefix('.')?;
    let (target, tail) = rest.rsplit_once(".old-")?;
    let (pid, n) = tail.split_once('-')?;
    n.parse::<u64>().ok()?;
    Some((target, pid.parse().ok()?))
}

fn remove_path(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// Stale temporaries inside the checkpoint directory: step directories and pointer files
/// being written by saves that died.
fn stale_temps(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some((target, pid)) = crate::fsutil::parse_temp_name(name) {
            let ours = target.starts_with("step-") || target == LATEST || LEGACY_FILES.contains(&target);
            if ours && stale(pid) {
                out.push(e.path());
            }
        }
    }
    out
}

/// Reads the `latest` pointer of a checkpoint directory: `Ok(None)` when there is none.
fn read_pointer(dir: &Path) -> Result<Option<String>> {
    let path = dir.join(LATEST);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let name = text.trim_end_matches('\n');
    let valid = name.starts_with("step-")
        && !name.contains(['/', '\\', '\0'])
        && Path::new(name).components().count() == 1
        && !name.contains("..");
    if !valid {
        return Err(Error::Data {
            path,
            line: 1,
            reason: format!("{name:?} is not the name of a step directory (`step-…`)"),
        });
    }
    Ok(Some(name.to_string()))
}

impl Checkpoint {
    /// The directory holding the current checkpoint of checkpoint directory `dir`: the step
    /// directory its `latest` pointer names, or `dir` itself for the legacy layout (a
    /// checkpoint written directly into `dir`). The result is also a plain model directory
    /// ([`Gpt2::load`] reads it).
    ///
    /// Errors: [`Error::NotFound`] when `dir` does not exist, [`Error::Data`] for a pointer
    /// that does not name a step directory.
    pub fn current_dir(dir: impl AsRef<Path>) -> Result<PathBuf> {
        let dir = dir.as_ref();
        if !dir.exists() {
            return Err(Error::NotFound(dir.to_path_buf()));
        }
        Ok(match read_pointer(dir)? {
            Some(name) => dir.join(name),
            None => dir.to_path_buf(),
        })
    }
}

impl Trainer {
    /// Saves a checkpoint of the model, optimizer and step into checkpoint directory `dir`
    /// (replacing the checkpoint there), with the position of `data` and a caller-defined
    /// `extra` value.
    ///
    /// Layout and protocol: the checkpoint is written into a hidden temporary directory
    /// `dir/.step-N.tmp-PID-…` (every file fsynced), which is fsynced and renamed to
    /// `dir/step-N` (`step-N-k` if that name is taken); then a pointer file naming it is
    /// written, fsynced and renamed over `dir/latest` — the single atomic commit point — and
    /// only then are the superseded step directories, the files of a legacy-layout checkpoint
    /// in `dir`, and the temporaries of dead saves (including the `.NAME.tmp-*` / `.NAME.old-*`
    /// siblings of the legacy protocol) removed. Temporaries of dead saves are also removed
    /// before writing, so repeated crashes do not fill the disk. A crash at any point leaves
    /// `latest` naming a complete checkpoint (the new one from the pointer rename on, the
    /// previous one before it; a legacy checkpoint stays loadable until the first new pointer
    /// exists). [`Checkpoint::load`] reads either layout.
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
        self.save_checkpoint_with_hook(dir.as_ref(), data, extra, &mut |_| Ok(()))
    }

    /// [`Self::save_checkpoint`] calling `hook` after every step of the protocol (fault
    /// injection: a hook error aborts like a crash, leaving everything as it is).
    pub(crate) fn save_checkpoint_with_hook(
        &self,
        dir: &Path,
        data: Option<&dyn BatchSource>,
        extra: serde_json::Value,
        hook: SaveHook<'_>,
    ) -> Result<()> {
        // Data parallel: collective up to here; rank 0 alone writes.
        self.check_replicas()?;
        let (m, v) = self.full_moments()?;
        if self.collective().rank() != 0 {
            return Ok(());
        }
        let mut p = Protocol { hook, crashed: false };
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let current = read_pointer(dir)?;
        // Best effort: leftovers never make a save fail.
        for stale in stale_temps(dir) {
            let _ = remove_path(&stale);
            p.at(SaveStage::RemovedStale)?;
        }
        let base = format!("step-{:08}", self.step_index());
        let name = std::iter::once(base.clone())
            .chain((1..).map(|k| format!("{base}-{k}")))
            .find(|n| !dir.join(n).exists())
            .expect("an unused name");
        let tmp = dir.join(temp_name(&name, "tmp"));
        std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let written = self.write_step(&tmp, data, extra, (&m[..], &v[..]), &mut p);
        if let Err(e) = written {
            if !p.crashed {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            return Err(e);
        }
        let target = dir.join(&name);
        std::fs::rename(&tmp, &target).map_err(|e| Error::io(&target, e))?;
        p.at(SaveStage::StepRenamed)?;
        sync_dir(dir)?;
        p.at(SaveStage::RootSynced)?;
        let ptr_tmp = dir.join(temp_name(LATEST, "tmp"));
        let wrote = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&ptr_tmp)?;
            f.write_all(format!("{name}\n").as_bytes())?;
            f.sync_all()
        })();
        if let Err(e) = wrote {
            let _ = std::fs::remove_file(&ptr_tmp);
            return Err(Error::io(&ptr_tmp, e));
        }
        p.at(SaveStage::PointerWritten)?;
        let latest = dir.join(LATEST);
        std::fs::rename(&ptr_tmp, &latest).map_err(|e| Error::io(&latest, e))?;
        p.at(SaveStage::PointerRenamed)?;
        sync_dir(dir)?;
        p.at(SaveStage::PointerSynced)?;
        // Committed: everything else is garbage (the previous step directory first).
        let mut garbage: Vec<PathBuf> = current.iter().filter(|c| **c != name).map(|c| dir.join(c)).collect();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                let superseded = n.starts_with("step-") && n != name && e.path().is_dir();
                if (superseded || LEGACY_FILES.contains(&n.as_str())) && !garbage.contains(&e.path()) {
                    garbage.push(e.path());
                }
            }
        }
        garbage.extend(stale_temps(dir));
        // The legacy protocol's swap directories beside `dir`, of dead processes.
        if let (Some(parent), Some(base)) = (dir.parent(), dir.file_name().and_then(|n| n.to_str())) {
            let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
            if let Ok(entries) = std::fs::read_dir(parent) {
                for e in entries.flatten() {
                    let n = e.file_name();
                    let Some(n) = n.to_str() else { continue };
                    if matches!(parse_hidden(n), Some((t, pid)) if t == base && stale(pid)) {
                        garbage.push(e.path());
                    }
                }
            }
        }
        // Best effort: the new checkpoint is committed whatever happens here.
        for g in garbage {
            let _ = remove_path(&g);
            p.at(SaveStage::RemovedOld)?;
        }
        Ok(())
    }

    /// Writes the checkpoint files into the (temporary) step directory `dir` and fsyncs it.
    fn write_step(
        &self,
        dir: &Path,
        data: Option<&dyn BatchSource>,
        extra: serde_json::Value,
        moments: (&[f32], &[f32]),
        p: &mut Protocol<'_>,
    ) -> Result<()> {
        p.at(SaveStage::TempCreated)?;
        self.model().save_with_dtype(dir, SaveDtype::F32)?;
        p.at(SaveStage::ModelWritten)?;
        let (m, v) = moments;
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), CHECKPOINT_FORMAT.to_string());
        let shape = [m.len()];
        write_safetensors(
            &dir.join("optimizer.safetensors"),
            &[("adamw.m".to_string(), &shape[..], m), ("adamw.v".to_string(), &shape[..], v)],
            SaveDtype::F32,
            &meta,
        )?;
        p.at(SaveStage::OptimizerWritten)?;
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
        write_atomic(&dir.join("trainer.json"), |w| w.write_all(json.as_bytes()))?;
        p.at(SaveStage::MetaWritten)?;
        sync_dir(dir)?;
        p.at(SaveStage::TempSynced)
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
    /// Reads the current checkpoint of a checkpoint directory written by
    /// [`Trainer::save_checkpoint`] (the step directory `latest` names), or a checkpoint of the
    /// legacy layout (files directly in `dir`, as earlier versions wrote them).
    ///
    /// Errors: [`Error::NotFound`], [`Error::Json`] / [`Error::Safetensors`] for damaged files,
    /// [`Error::Data`] for a `latest` pointer that names no step directory,
    /// [`Error::InvalidArgument`] for another format or trainable tensors that do not match.
    pub fn load(dir: impl AsRef<Path>) -> Result<Checkpoint> {
        let dir = &Self::current_dir(dir)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DataLoader, LoaderConfig, TokenShard};
    use crate::model::Config;

    const TOTAL: usize = 8;

    fn loader() -> DataLoader {
        let tokens: Vec<u32> = (0..2000u32).map(|i| (i * 7 + i / 13) % 50).collect();
        let shard = TokenShard::from_tokens("mem", &tokens).unwrap();
        DataLoader::new(vec![shard], LoaderConfig::new(2, 8).with_shuffle(11)).unwrap()
    }

    fn trainer(model: Gpt2) -> Trainer {
        let cfg = TrainerConfig { grad_clip: Some(1.0), seed: 5, ..Default::default() };
        Trainer::new(model, cfg).unwrap()
    }

    fn bits(xs: &[f32]) -> Vec<u32> {
        xs.iter().map(|x| x.to_bits()).collect()
    }

    /// Resumes from `dir` and trains to step `TOTAL`: (step resumed at, loss bits, final params).
    fn resume(dir: &Path) -> (usize, Vec<u32>, Vec<u32>) {
        let ck = Checkpoint::load(dir).unwrap_or_else(|e| panic!("no resumable checkpoint: {e}"));
        let step = ck.step;
        let mut data = loader();
        data.restore(ck.data_state.clone().unwrap()).unwrap();
        let mut t = Trainer::from_checkpoint(ck).unwrap();
        let losses = (step..TOTAL).map(|_| t.step(&mut data).unwrap().loss.to_bits()).collect();
        (step, losses, bits(t.model().params()))
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    /// Copies the files of a step directory into `dir`: a checkpoint in the legacy layout.
    fn write_legacy(t: &Trainer, data: &DataLoader, dir: &Path) {
        let scratch = dir.with_extension("scratch");
        t.save_checkpoint(&scratch, Some(data), serde_json::Value::Null).unwrap();
        let step = Checkpoint::current_dir(&scratch).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        for f in LEGACY_FILES {
            std::fs::copy(step.join(f), dir.join(f)).unwrap();
        }
        std::fs::remove_dir_all(&scratch).unwrap();
        assert_eq!(Checkpoint::current_dir(dir).unwrap(), dir, "legacy layout: no pointer");
    }

    /// Kill (fault-inject) after every step of the save protocol, starting from a checkpoint
    /// in the current and in the legacy layout: a resumable checkpoint always exists and
    /// resumes bit-identically, and the next successful save leaves only `latest` and one step
    /// directory (no temporaries, no legacy files, no legacy swap directories beside it).
    #[test]
    fn a_crash_after_any_step_of_a_save_leaves_a_resumable_checkpoint() {
        let model = Gpt2::new_random(Config::new(2, 2, 16, 16, 50), 3).unwrap();
        let mut data = loader();
        let mut t = trainer(model.clone());
        let full: Vec<u32> = (0..TOTAL).map(|_| t.step(&mut data).unwrap().loss.to_bits()).collect();
        let final_params = bits(t.model().params());
        let root = std::env::temp_dir().join(format!("gpt2-ckpt-fault-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut stages = Vec::new();
        for legacy in [false, true] {
            for k in 1.. {
                let dir = root.join(format!("ckpt-{legacy}-{k}"));
                let mut data = loader();
                let mut t = trainer(model.clone());
                for _ in 0..2 {
                    t.step(&mut data).unwrap();
                }
                if legacy {
                    write_legacy(&t, &data, &dir);
                    // swap directories a killed save of the legacy protocol left beside it
                    for tag in ["tmp", "old"] {
                        let name = format!(".ckpt-{legacy}-{k}.{tag}-4294967295-1");
                        std::fs::create_dir_all(root.join(name).join("x")).unwrap();
                    }
                } else {
                    t.save_checkpoint(&dir, Some(&data), serde_json::Value::Null).unwrap();
                }
                for _ in 0..2 {
                    t.step(&mut data).unwrap();
                }
                let mut calls = 0;
                let mut crash_at = None;
                let r = t.save_checkpoint_with_hook(&dir, Some(&data), serde_json::Value::Null, &mut |stage| {
                    calls += 1;
                    if calls == k {
                        crash_at = Some(stage);
                        return Err(Error::arg("fault", format!("injected crash after {stage:?}")));
                    }
                    Ok(())
                });
                assert_eq!(r.is_err(), crash_at.is_some());
                let (step, losses, params) = resume(&dir);
                let at = format!("legacy {legacy}, crash after {crash_at:?} (hook call {k})");
                assert!(step == 2 || step == 4, "{at}: checkpoint at step {step}");
                if matches!(
                    crash_at,
                    Some(SaveStage::PointerRenamed | SaveStage::PointerSynced | SaveStage::RemovedOld)
                ) || crash_at.is_none()
                {
                    assert_eq!(step, 4, "{at}: the pointer moved, the new checkpoint is current");
                } else {
                    assert_eq!(step, 2, "{at}: before the pointer moved, the previous checkpoint is current");
                }
                assert_eq!(losses, full[step..], "{at}: losses differ after resume");
                assert!(params == final_params, "{at}: parameters differ after resume");
                // the next successful save cleans up everything
                t.save_checkpoint(&dir, Some(&data), serde_json::Value::Null).unwrap();
                let left = entries(&dir);
                assert_eq!(left.len(), 2, "{at}: after the next save: {left:?}");
                assert!(left[0] == LATEST && left[1].starts_with("step-00000004"), "{at}: {left:?}");
                let (step, losses, params) = resume(&dir);
                assert!(step == 4 && losses == full[4..] && params == final_params, "{at}: after the next save");
                let beside: Vec<String> = entries(&root).into_iter().filter(|n| n.starts_with('.')).collect();
                assert!(beside.is_empty(), "{at}: legacy swap directories left: {beside:?}");
                std::fs::remove_dir_all(&dir).unwrap();
                match crash_at {
                    Some(s) => stages.push(s),
                    None => break,
                }
            }
        }
        std::fs::remove_dir_all(&root).unwrap();
        use SaveStage::*;
        for s in [
            TempCreated,
            ModelWritten,
            OptimizerWritten,
            MetaWritten,
            TempSynced,
            StepRenamed,
            RootSynced,
            PointerWritten,
            PointerRenamed,
            PointerSynced,
            RemovedOld,
        ] {
            assert!(stages.contains(&s), "no crash was injected after {s:?}: {stages:?}");
        }
    }

    #[test]
    fn pointers_that_name_no_step_directory_are_errors() {
        let dir = std::env::temp_dir().join(format!("gpt2-ckpt-pointer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for bad in ["../elsewhere", "/etc", "step-1/../../x", "model", ""] {
            std::fs::write(dir.join(LATEST), format!("{bad}\n")).unwrap();
            assert!(matches!(Checkpoint::load(&dir), Err(Error::Data { .. })), "{bad:?}");
        }
        std::fs::write(dir.join(LATEST), "step-00000007\n").unwrap();
        assert!(matches!(Checkpoint::load(&dir), Err(Error::NotFound(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
