//! Shared helpers for the integration tests: fixture paths and reference readers.
#![allow(dead_code)]

use std::path::PathBuf;

use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::{Dtype, SafeTensors};

/// `fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel)
}

/// Reference outputs dumped by `fixtures/make_fixtures.py` for one model.
pub struct Reference {
    bytes: Vec<u8>,
    pub json: serde_json::Value,
}

impl Reference {
    pub fn load(model: &str) -> Self {
        let bytes = std::fs::read(fixture(&format!("reference/{model}.safetensors"))).expect("reference tensors");
        let json = serde_json::from_str(
            &std::fs::read_to_string(fixture(&format!("reference/{model}.json"))).expect("reference json"),
        )
        .expect("json");
        Reference { bytes, json }
    }

    fn view(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("reference parses")
    }

    pub fn has(&self, name: &str) -> bool {
        self.view().names().contains(&name)
    }

    /// A float32 tensor.
    pub fn f32(&self, name: &str) -> ArrayD<f32> {
        let st = self.view();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("reference tensor {name}"));
        assert_eq!(t.dtype(), Dtype::F32, "{name}");
        let v: Vec<f32> = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        ArrayD::from_shape_vec(IxDyn(t.shape()), v).unwrap()
    }

    /// An int32 tensor as u32 (token ids) — negative values are an error.
    pub fn u32(&self, name: &str) -> ArrayD<u32> {
        self.i32(name).mapv(|x| u32::try_from(x).expect("non-negative id"))
    }

    /// An int32 tensor.
    pub fn i32(&self, name: &str) -> ArrayD<i32> {
        let st = self.view();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("reference tensor {name}"));
        assert_eq!(t.dtype(), Dtype::I32, "{name}");
        let v: Vec<i32> = t.data().chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        ArrayD::from_shape_vec(IxDyn(t.shape()), v).unwrap()
    }
}

/// Largest absolute difference between two equally long sequences.
pub fn max_abs_diff<'a>(a: impl IntoIterator<Item = &'a f32>, b: impl IntoIterator<Item = &'a f32>) -> f32 {
    let mut n = 0usize;
    let m = a
        .into_iter()
        .zip(b)
        .map(|(x, y)| {
            n += 1;
            if x.is_nan() || y.is_nan() {
                f32::INFINITY
            } else {
                (x - y).abs()
            }
        })
        .fold(0.0, f32::max);
    assert!(n > 0, "compared nothing");
    m
}

/// Asserts `max |a - b| <= tol`, printing the measured error.
pub fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    let d = max_abs_diff(a, b);
    eprintln!("{what}: max |diff| = {d:.3e} (tol {tol:.0e})");
    assert!(d <= tol, "{what}: max |diff| = {d:e} > {tol:e}");
}
