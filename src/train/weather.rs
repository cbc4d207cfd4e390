//! The seed exercise's synthetic "weather" task: a hidden Markov model whose hidden states (the
//! weather) must be inferred from observations.
//!
//! Three hidden states and five observation symbols, with fixed probabilities
//! ([`WeatherHmm::standard`]). A sample is a chain of [`CHAIN`] steps, written as one token
//! sequence: the observations (tokens `0..5`) followed by the states (tokens `5..8`), 12 tokens.
//! With block size 11, `x = seq[0..11]`, `y = seq[1..12]` and the targets that predict an
//! observation are ignored, so the model is trained only to name the states (given all
//! observations and the earlier states).
//!
//! Batches depend only on `(seed, batch index)`, so a [`WeatherSource`]'s position is one number.

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use super::trainer::IGNORE_TARGET;
use crate::data::BatchSource;
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Observation symbols.
pub const N_OBS: usize = 5;
/// Hidden states.
pub const N_STATES: usize = 3;
/// Vocabulary: observations `0..5`, states `5..8`.
pub const VOCAB: usize = N_OBS + N_STATES;
/// Steps of one chain.
pub const CHAIN: usize = 6;
/// Model context: the 12-token sequence minus one.
pub const BLOCK_SIZE: usize = 2 * CHAIN - 1;

/// HMM parameters (rows are probability distributions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeatherHmm {
    /// `p(state_0)`.
    pub initial: [f64; N_STATES],
    /// `p(state_t+1 | state_t)`.
    pub transition: [[f64; N_STATES]; N_STATES],
    /// `p(obs | state)`.
    pub emission: [[f64; N_OBS]; N_STATES],
}

fn draw(p: &[f64], rng: &mut Rng) -> usize {
    let u = rng.next_f64();
    let mut acc = 0.0;
    for (i, &q) in p.iter().enumerate() {
        acc += q;
        if u < acc {
            return i;
        }
    }
    // rounding: the last outcome with non-zero probability
    p.iter().rposition(|&q| q > 0.0).unwrap_or(0)
}

impl WeatherHmm {
    /// The exercise's probabilities: initial `[.5, .3, .2]`; transition
    /// `[[.5, .5, 0], [0, .5, .5], [.5, 0, .5]]`; emission
    /// `[[.5, 0, .2, 0, .3], [0, .5, .4, 0, .1], [0, 0, .1, .5, .4]]`.
    pub fn standard() -> Self {
        WeatherHmm {
            initial: [0.5, 0.3, 0.2],
            transition: [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]],
            emission: [[0.5, 0.0, 0.2, 0.0, 0.3], [0.0, 0.5, 0.4, 0.0, 0.1], [0.0, 0.0, 0.1, 0.5, 0.4]],
        }
    }

    /// One chain: `(observations, states)`, each of length [`CHAIN`].
    pub fn sample(&self, rng: &mut Rng) -> ([usize; CHAIN], [usize; CHAIN]) {
        let mut obs = [0; CHAIN];
        let mut states = [0; CHAIN];
        let mut s = draw(&self.initial, rng);
        for t in 0..CHAIN {
            if t > 0 {
                s = draw(&self.transition[s], rng);
            }
            states[t] = s;
            obs[t] = draw(&self.emission[s], rng);
        }
        (obs, states)
    }

    /// The 12-token sequence of a chain: observations, then `N_OBS + state`.
    pub fn tokens(obs: &[usize; CHAIN], states: &[usize; CHAIN]) -> [u32; 2 * CHAIN] {
        let mut seq = [0u32; 2 * CHAIN];
        for t in 0..CHAIN {
            seq[t] = obs[t] as u32;
            seq[CHAIN + t] = (N_OBS + states[t]) as u32;
        }
        seq
    }

    /// A training batch `(x, y)` of `b` chains, `[b, 11]` each; `y` is [`IGNORE_TARGET`] where
    /// it would predict an observation.
    pub fn batch(&self, b: usize, rng: &mut Rng) -> (Array2<u32>, Array2<u32>) {
        let mut x = Array2::zeros((b, BLOCK_SIZE));
        let mut y = Array2::zeros((b, BLOCK_SIZE));
        for r in 0..b {
            let (o, s) = self.sample(rng);
            let seq = Self::tokens(&o, &s);
            for t in 0..BLOCK_SIZE {
                x[(r, t)] = seq[t];
                y[(r, t)] = if t + 1 < CHAIN { IGNORE_TARGET } else { seq[t + 1] };
            }
        }
        (x, y)
    }

    /// Posterior marginals `p(state_t | all observations)` (forward–backward), `[CHAIN][N_STATES]`.
    #[allow(clippy::needless_range_loop)] // the recursions read clearest with explicit indices
    pub fn posterior(&self, obs: &[usize; CHAIN]) -> [[f64; N_STATES]; CHAIN] {
        let mut alpha = [[0f64; N_STATES]; CHAIN];
        let mut beta = [[1f64; N_STATES]; CHAIN];
        for s in 0..N_STATES {
            alpha[0][s] = self.initial[s] * self.emission[s][obs[0]];
        }
        for t in 1..CHAIN {
            for s in 0..N_STATES {
                let prior: f64 = (0..N_STATES).map(|p| alpha[t - 1][p] * self.transition[p][s]).sum();
                alpha[t][s] = prior * self.emission[s][obs[t]];
            }
        }
        for t in (0..CHAIN - 1).rev() {
            for s in 0..N_STATES {
                beta[t][s] =
                    (0..N_STATES).map(|n| self.transition[s][n] * self.emission[n][obs[t + 1]] * beta[t + 1][n]).sum();
            }
        }
        let mut post = [[0f64; N_STATES]; CHAIN];
        for t in 0..CHAIN {
            let z: f64 = (0..N_STATES).map(|s| alpha[t][s] * beta[t][s]).sum();
            for s in 0..N_STATES {
                post[t][s] = alpha[t][s] * beta[t][s] / z.max(f64::MIN_POSITIVE);
            }
        }
        post
    }
}

/// An endless [`BatchSource`] of weather batches; batch `i` comes from `Rng::new(seed).fork(i)`.
///
/// ```
/// use gpt2::data::BatchSource;
/// use gpt2::train::weather::{WeatherSource, BLOCK_SIZE};
/// let mut src = WeatherSource::new(4, 7);
/// let (x, y) = src.next_batch().unwrap();
/// assert_eq!(x.dim(), (4, BLOCK_SIZE));
/// assert_eq!(y[(0, 0)], gpt2::train::IGNORE_TARGET); // predicting an observation: ignored
/// assert!(y[(0, 5)] >= 5); // the first state
/// ```
#[derive(Debug, Clone)]
pub struct WeatherSource {
    hmm: WeatherHmm,
    batch_size: usize,
    seed: u64,
    next: u64,
}

impl WeatherSource {
    /// Batches of `batch_size` chains of the standard HMM.
    pub fn new(batch_size: usize, seed: u64) -> Self {
        WeatherSource { hmm: WeatherHmm::standard(), batch_size, seed, next: 0 }
    }

    /// The HMM.
    pub fn hmm(&self) -> &WeatherHmm {
        &self.hmm
    }
}

impl BatchSource for WeatherSource {
    fn next_batch(&mut self) -> Result<(Array2<u32>, Array2<u32>)> {
        if self.batch_size == 0 {
            return Err(Error::arg("batch_size", "must be at least 1"));
        }
        let mut rng = Rng::new(self.seed).fork(self.next);
        self.next += 1;
        Ok(self.hmm.batch(self.batch_size, &mut rng))
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({"kind": "gpt2.train.WeatherSource/1", "seed": self.seed, "batch_size": self.batch_size, "next": self.next})
    }

    fn restore(&mut self, state: serde_json::Value) -> Result<()> {
        let ok = state["kind"] == "gpt2.train.WeatherSource/1"
            && state["seed"].as_u64() == Some(self.seed)
            && state["batch_size"].as_u64() == Some(self.batch_size as u64);
        match (ok, state["next"].as_u64()) {
            (true, Some(n)) => {
                self.next = n;
                Ok(())
            }
            _ => Err(Error::arg("state", "not a state of a WeatherSource with this seed and batch size")),
        }
    }
}

/// State accuracy of a model on fresh chains.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WeatherAccuracy {
    /// Chains evaluated.
    pub chains: usize,
    /// Fraction of states the model names correctly, decoding greedily (its own earlier
    /// predictions fed back), choosing among the three state tokens.
    pub model: f64,
    /// Fraction correct when always naming the most frequent state of these chains.
    pub majority: f64,
    /// Fraction correct of the per-step posterior argmax `p(state_t | observations)` (the best a
    /// decoder that sees only the observations can do on average).
    pub bayes: f64,
}

/// Decodes `chains` fresh chains (seeded) with `logits`, a function from a token batch
/// `[B, T]` to logits `[B, T, V]` (e.g. `|x| model.logits_batch(x)`).
pub fn state_accuracy(
    hmm: &WeatherHmm,
    chains: usize,
    seed: u64,
    mut logits: impl FnMut(ndarray::ArrayView2<'_, u32>) -> Result<ndarray::Array3<f32>>,
) -> Result<WeatherAccuracy> {
    if chains == 0 {
        return Err(Error::arg("chains", "must be at least 1"));
    }
    let mut rng = Rng::new(seed);
    let samples: Vec<_> = (0..chains).map(|_| hmm.sample(&mut rng)).collect();
    let mut seq = Array2::<u32>::zeros((chains, 2 * CHAIN - 1));
    for (r, (o, _)) in samples.iter().enumerate() {
        for t in 0..CHAIN {
            seq[(r, t)] = o[t] as u32;
        }
    }
    let mut correct = 0usize;
    for k in 0..CHAIN {
        let len = CHAIN + k;
        let lg = logits(seq.slice(ndarray::s![.., ..len]))?;
        for (r, (_, s)) in samples.iter().enumerate() {
            let row = lg.slice(ndarray::s![r, len - 1, N_OBS..VOCAB]);
            let best = (0..N_STATES).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap_or(0);
            if best == s[k] {
                correct += 1;
            }
            if len < 2 * CHAIN - 1 {
                seq[(r, len)] = (N_OBS + best) as u32;
            }
        }
    }
    let mut counts = [0usize; N_STATES];
    let mut bayes = 0usize;
    for (o, s) in &samples {
        let post = hmm.posterior(o);
        for t in 0..CHAIN {
            counts[s[t]] += 1;
            let best = (0..N_STATES).max_by(|&a, &b| post[t][a].total_cmp(&post[t][b])).unwrap_or(0);
            bayes += usize::from(best == s[t]);
        }
    }
    let total = (chains * CHAIN) as f64;
    Ok(WeatherAccuracy {
        chains,
        model: correct as f64 / total,
        majority: *counts.iter().max().unwrap_or(&0) as f64 / total,
        bayes: bayes as f64 / total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_follow_the_hmm() {
        let hmm = WeatherHmm::standard();
        let mut rng = Rng::new(1);
        let n = 20_000;
        let mut first = [0usize; N_STATES];
        let mut trans = [[0usize; N_STATES]; N_STATES];
        for _ in 0..n {
            let (o, s) = hmm.sample(&mut rng);
            first[s[0]] += 1;
            for t in 0..CHAIN {
                assert!(hmm.emission[s[t]][o[t]] > 0.0, "impossible emission");
                if t > 0 {
                    trans[s[t - 1]][s[t]] += 1;
                }
            }
        }
        for (s, &c) in first.iter().enumerate() {
            assert!((c as f64 / n as f64 - hmm.initial[s]).abs() < 0.015);
        }
        assert_eq!(trans[0][2] + trans[1][0] + trans[2][1], 0, "impossible transitions");
        let (x, y) = hmm.batch(3, &mut rng);
        for r in 0..3 {
            assert!((0..CHAIN - 1).all(|t| y[(r, t)] == IGNORE_TARGET));
            assert!((CHAIN - 1..BLOCK_SIZE).all(|t| (N_OBS as u32..VOCAB as u32).contains(&y[(r, t)])));
            assert_eq!(x[(r, CHAIN)], y[(r, CHAIN - 1)]);
        }
        let post = hmm.posterior(&[0, 0, 2, 1, 4, 3]);
        assert!((post[0][0] - 1.0).abs() < 1e-12 && (post[5][2] - 1.0).abs() < 1e-12);
    }
}
