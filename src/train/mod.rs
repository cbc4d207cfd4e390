//! Training: manual backward pass, AdamW, schedules and the [`Trainer`].
//!
//! - [`backprop`]: the training forward pass that saves what backward needs, and the backward
//!   pass through every layer ([`forward_backward`], [`forward_loss`], [`Activations`]).
//! - [`checkpoint`]: [`Checkpoint`] — model + optimizer + step + data position, resumed
//!   bit-identically ([`Trainer::save_checkpoint`], [`Trainer::from_checkpoint`]).
//! - [`optim`]: [`AdamW`] (decoupled weight decay on ≥ 2-D tensors, or on all with
//!   [`DecayGroups::All`]) and global-norm clipping.
//! - [`schedule`]: [`LrSchedule`] (constant, nanoGPT's warmup + cosine).
//! - [`select`]: [`ParamSelection`] / [`GradMask`] — train a subset of the tensors.
//! - [`plot`]: loss curves as SVG / PNG.
//! - [`trainer`]: [`Trainer`] — one optimizer step at a time, with gradient accumulation,
//!   returning [`StepStats`]; [`Trainer::run`] with periodic [`EvalHook`]s (validation loss,
//!   HellaSwag, task metrics).
//! - [`weather`]: the seed exercise's synthetic HMM task (dataset, source, state accuracy).
//!
//! Parameters, gradients and moments share the flat [`ParamLayout`](crate::ParamLayout) order,
//! so zeroing, the norm and the update are single passes over flat buffers.
//! Data comes from any [`BatchSource`](crate::BatchSource) (e.g. [`DataLoader`](crate::DataLoader)).

pub mod backprop;
pub mod checkpoint;
pub mod optim;
pub mod plot;
pub mod schedule;
pub mod select;
pub mod trainer;
pub mod weather;

pub use crate::fsutil::ensure_writable_dir;
pub use backprop::{forward_backward, forward_backward_with, forward_loss, Activations, BackwardOptions};
pub use checkpoint::{Checkpoint, CHECKPOINT_FORMAT};
pub use optim::{clip_grad_norm, grad_norm, AdamW, AdamWConfig, DecayGroups};
pub use schedule::LrSchedule;
pub use select::{GradMask, ParamSelection};
pub use trainer::{
    DataParallel, EvalFn, EvalHook, Metric, Moments, NonFinitePolicy, RunHistory, StepStats, TrainEvent, Trainer,
    TrainerConfig, IGNORE_TARGET,
};

/// Writes `value` as pretty JSON to `path` atomically (temporary file + rename), e.g. a run's
/// loss history.
pub fn save_json(path: impl AsRef<std::path::Path>, value: &serde_json::Value) -> crate::Result<()> {
    use std::io::Write;
    let text = serde_json::to_string_pretty(value).expect("a JSON value serializes");
    crate::fsutil::write_atomic(path.as_ref(), |w| w.write_all(text.as_bytes()))
}
