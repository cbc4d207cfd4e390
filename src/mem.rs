//! Allocations sized from user input: the size is computed with checked arithmetic, compared
//! with the memory the machine has available, and requested with `try_reserve_exact`, so a
//! request that cannot be met is [`Error::OutOfMemory`] naming the bytes — not an allocator
//! abort ("memory allocation failed") or an OOM kill half-way through.
//!
//! ```
//! let avail = gpt2::mem::available_bytes();
//! assert!(avail.map_or(true, |b| b > 0));
//! let e = gpt2::mem::ensure_available(u128::MAX, "a test buffer").unwrap_err();
//! assert!(matches!(e, gpt2::Error::OutOfMemory { .. }));
//! ```

use crate::error::{Error, Result};

/// Memory this process can still get, in bytes: `MemAvailable + SwapFree` from
/// `/proc/meminfo`. `None` where that file does not exist or cannot be parsed.
pub fn available_bytes() -> Option<u128> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u128> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u128 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    };
    Some(field("MemAvailable:")? + field("SwapFree:").unwrap_or(0))
}

fn gib(bytes: u128) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u128 << 30) as f64)
}

/// Errors with [`Error::OutOfMemory`] when `bytes` exceed [`available_bytes`] (nothing is
/// checked where that is unknown).
pub fn ensure_available(bytes: u128, what: &str) -> Result<()> {
    match available_bytes() {
        Some(avail) if bytes > avail => Err(Error::OutOfMemory {
            what: what.to_string(),
            bytes,
            reason: format!("more than the {} of memory + swap available", gib(avail)),
        }),
        _ => Ok(()),
    }
}

/// Bytes of `n` values of `T`, or [`Error::OutOfMemory`] when that overflows.
pub(crate) fn bytes_of<T>(n: usize, what: &str) -> Result<u128> {
    (n as u128).checked_mul(std::mem::size_of::<T>() as u128).ok_or_else(|| Error::OutOfMemory {
        what: what.to_string(),
        bytes: u128::MAX,
        reason: "the size overflows".into(),
    })
}

/// A vector of `n` zeros, allocated fallibly (see the module docs).
pub(crate) fn zeroed_f32(n: usize, what: &str) -> Result<Vec<f32>> {
    let bytes = bytes_of::<f32>(n, what)?;
    ensure_available(bytes, what)?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|e| Error::OutOfMemory {
        what: what.to_string(),
        bytes,
        reason: format!("the allocator refused ({e})"),
    })?;
    v.resize(n, 0.0);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_requests_are_typed_errors() {
        assert!(matches!(zeroed_f32(usize::MAX, "x"), Err(Error::OutOfMemory { .. })));
        assert!(matches!(bytes_of::<f32>(usize::MAX, "x"), Ok(b) if b == usize::MAX as u128 * 4));
        assert_eq!(zeroed_f32(5, "x").unwrap(), vec![0.0; 5]);
        if available_bytes().is_some() {
            // 2^60 bytes exist nowhere
            assert!(matches!(zeroed_f32(1 << 58, "x"), Err(Error::OutOfMemory { bytes, .. }) if bytes == 1 << 60));
        }
    }
}
