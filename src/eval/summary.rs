//! Results summary: one serializable struct per evaluation run, printed as a table.

use serde::{Deserialize, Serialize};

use super::stats::LossStats;
use crate::error::{Error, Result};
use crate::model::Gpt2;

/// Serde helper for floats that may be `±inf` / `NaN`, which JSON cannot hold:
/// finite values are numbers, the others the strings `"inf"`, `"-inf"`, `"nan"`.
pub mod float_or_inf {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes a float, non-finite values as strings.
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("nan")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    /// Reads a number or one of `"inf"`, `"-inf"`, `"nan"` (also `Infinity` spellings).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum F {
            N(f64),
            S(String),
        }
        match F::deserialize(d)? {
            F::N(x) => Ok(x),
            F::S(s) => match s.to_ascii_lowercase().as_str() {
                "inf" | "+inf" | "infinity" => Ok(f64::INFINITY),
                "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
                "nan" => Ok(f64::NAN),
                _ => Err(serde::de::Error::custom(format!("not a float: {s}"))),
            },
        }
    }
}

/// Summary of one evaluation run (perplexity-style), as printed by the examples.
///
/// ```
/// use gpt2::{eval::{EvalSummary, LossStats}, Config, Gpt2};
/// let model = Gpt2::new_random(Config::nano(16, 40), 0).unwrap();
/// let s = EvalSummary::new("random", &model, 4, LossStats { sum_nll: 30.0, tokens: 10 }, 0.5).unwrap();
/// assert_eq!((s.device.as_str(), s.dtype.as_str()), ("cpu", "f32"));
/// assert!((s.perplexity - 3f64.exp()).abs() < 1e-9);
/// assert_eq!(s.tokens_per_second, 20.0);
/// let json = serde_json::to_value(&s).unwrap();
/// assert_eq!(json["avg_loss"], 3.0);
/// assert!(s.table().contains("perplexity"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    /// Model id or path.
    pub model: String,
    /// Where it ran ([`Gpt2::device_label`]).
    pub device: String,
    /// Compute dtype ([`Gpt2::dtype_label`]).
    pub dtype: String,
    /// Rows per forward pass.
    pub batch_size: usize,
    /// Scored tokens.
    pub tokens: usize,
    /// Mean NLL per scored token (nats).
    #[serde(with = "float_or_inf")]
    pub avg_loss: f64,
    /// `exp(avg_loss)`; `"inf"` in JSON when it overflows.
    #[serde(with = "float_or_inf")]
    pub perplexity: f64,
    /// Wall-clock seconds of the evaluation.
    pub seconds: f64,
    /// `tokens / seconds`.
    #[serde(with = "float_or_inf")]
    pub tokens_per_second: f64,
}

impl EvalSummary {
    /// Builds a summary from a token-weighted accumulator and the elapsed time.
    pub fn new(
        model_id: impl Into<String>,
        model: &Gpt2,
        batch_size: usize,
        stats: LossStats,
        seconds: f64,
    ) -> Result<Self> {
        let avg_loss = stats.mean().ok_or_else(|| Error::EmptyInput("no scored tokens to summarize".into()))?;
        Ok(EvalSummary {
            model: model_id.into(),
            device: model.device_label().to_string(),
            dtype: model.dtype_label().to_string(),
            batch_size,
            tokens: stats.tokens,
            avg_loss,
            perplexity: super::stats::perplexity_from_loss(avg_loss),
            seconds,
            tokens_per_second: if seconds > 0.0 { stats.tokens as f64 / seconds } else { f64::INFINITY },
        })
    }

    /// Milliseconds per scored token.
    pub fn ms_per_token(&self) -> f64 {
        1e3 * self.seconds / self.tokens.max(1) as f64
    }

    /// A Markdown table with one row.
    pub fn table(&self) -> String {
        Self::table_of(std::slice::from_ref(self))
    }

    /// A Markdown table of several runs: model, device, dtype, batch size,
    /// tokens, avg loss, perplexity, latency (s), tokens/s, ms/token.
    pub fn table_of(rows: &[EvalSummary]) -> String {
        let mut s = String::from(
            "| model | device | dtype | batch size | tokens | avg loss | perplexity | latency (s) | tokens/s | ms/token |\n\
             |---|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in rows {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.4} | {:.3} | {:.3} | {:.1} | {:.3} |\n",
                r.model,
                r.device,
                r.dtype,
                r.batch_size,
                r.tokens,
                r.avg_loss,
                r.perplexity,
                r.seconds,
                r.tokens_per_second,
                r.ms_per_token()
            ));
        }
        s
    }
}

impl std::fmt::Display for EvalSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.table())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Config;

    #[test]
    fn infinite_perplexity_round_trips_through_json() {
        let model = Gpt2::new_random(Config::nano(16, 40), 0).unwrap();
        let s = EvalSummary::new("m", &model, 1, LossStats { sum_nll: f64::INFINITY, tokens: 3 }, 1.0).unwrap();
        assert_eq!(s.perplexity, f64::INFINITY);
        let j = serde_json::to_string(&s).unwrap();
        assert!(j.contains(r#""perplexity":"inf""#), "{j}");
        let back: EvalSummary = serde_json::from_str(&j).unwrap();
        assert_eq!(back.perplexity, f64::INFINITY);
        assert!(s.table().contains("inf"));
        assert!(EvalSummary::new("m", &model, 1, LossStats::default(), 1.0).is_err());
    }
}
