//! Learning-rate schedules.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Learning rate as a function of the optimizer step (0-based).
///
/// ```
/// use gpt2::train::LrSchedule;
/// let s = LrSchedule::WarmupCosine { max_lr: 6e-4, min_lr: 6e-5, warmup_steps: 10, decay_steps: 100 };
/// assert!((s.lr(0) - 6e-4 / 11.0).abs() < 1e-12); // nanoGPT: lr·(it+1)/(warmup+1)
/// assert!((s.lr(10) - 6e-4).abs() < 1e-12);
/// assert!((s.lr(55) - (6e-5 + 0.5 * (6e-4 - 6e-5))).abs() < 1e-12);
/// assert_eq!(s.lr(1000), 6e-5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum LrSchedule {
    /// The same rate at every step.
    Constant(f64),
    /// nanoGPT's `get_lr`: linear warmup `max_lr·(it+1)/(warmup+1)` for `it < warmup_steps`,
    /// then cosine decay from `max_lr` to `min_lr` at step `decay_steps`, then `min_lr`.
    WarmupCosine {
        /// Peak rate, reached at `warmup_steps`.
        max_lr: f64,
        /// Final rate.
        min_lr: f64,
        /// Steps of linear warmup.
        warmup_steps: usize,
        /// Step at which the decay reaches `min_lr` (≥ `warmup_steps`).
        decay_steps: usize,
    },
}

impl LrSchedule {
    /// The rate at step `it`.
    pub fn lr(&self, it: usize) -> f64 {
        match *self {
            LrSchedule::Constant(lr) => lr,
            LrSchedule::WarmupCosine { max_lr, min_lr, warmup_steps, decay_steps } => {
                if it < warmup_steps {
                    return max_lr * (it + 1) as f64 / (warmup_steps + 1) as f64;
                }
                if it > decay_steps {
                    return min_lr;
                }
                if decay_steps == warmup_steps {
                    return max_lr;
                }
                let ratio = (it - warmup_steps) as f64 / (decay_steps - warmup_steps) as f64;
                let coeff = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos());
                min_lr + coeff * (max_lr - min_lr)
            }
        }
    }

    /// Checks the settings. Errors: [`Error::InvalidArgument`] for negative / non-finite rates,
    /// `min_lr > max_lr`, or `decay_steps < warmup_steps`.
    pub fn validate(&self) -> Result<()> {
        let rate = |name: &'static str, x: f64| {
            if x.is_finite() && x >= 0.0 {
                Ok(())
            } else {
                Err(Error::arg(name, format!("learning rate {x} must be finite and ≥ 0")))
            }
        };
        match *self {
            LrSchedule::Constant(lr) => rate("lr", lr),
            LrSchedule::WarmupCosine { max_lr, min_lr, warmup_steps, decay_steps } => {
                rate("lr", max_lr)?;
                rate("min_lr", min_lr)?;
                if min_lr > max_lr {
                    return Err(Error::arg("min_lr", format!("{min_lr} exceeds the peak rate {max_lr}")));
                }
                if decay_steps < warmup_steps {
                    return Err(Error::arg(
                        "decay_steps",
                        format!("{decay_steps} is shorter than the warmup ({warmup_steps} steps)"),
                    ));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_cosine_is_continuous_and_monotone_after_warmup() {
        let s = LrSchedule::WarmupCosine { max_lr: 1.0, min_lr: 0.1, warmup_steps: 5, decay_steps: 50 };
        s.validate().unwrap();
        for it in 0..5 {
            assert!(s.lr(it) < s.lr(it + 1));
        }
        for it in 5..60 {
            assert!(s.lr(it + 1) <= s.lr(it));
        }
        assert!((s.lr(50) - 0.1).abs() < 1e-12);
        assert!(LrSchedule::Constant(-1.0).validate().is_err());
        let bad = LrSchedule::WarmupCosine { max_lr: 1.0, min_lr: 2.0, warmup_steps: 0, decay_steps: 1 };
        assert!(bad.validate().is_err());
    }
}
