//! Helpers shared by the examples (`mod common;` in each; not an example itself).
#![allow(dead_code)]

use std::path::PathBuf;

/// The bundled model when present, else the tiny BPE test fixture.
pub fn default_model() -> PathBuf {
    let bundled = gpt2::model::io::bundled_model_dir();
    if bundled.exists() {
        bundled
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/tiny-bpe")
    }
}

/// CPU time of all threads of this process (Linux `schedstat`, ns precision), if readable.
/// On a shared machine wall time includes waiting for a core; CPU time does not.
pub fn cpu_seconds() -> Option<f64> {
    let mut total = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let s = std::fs::read_to_string(entry.ok()?.path().join("schedstat")).ok()?;
        total += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total as f64 * 1e-9)
}
