//! Bad input yields a typed error, never a panic or garbage.
//! Each case names the entry point and the error variant it must produce.

mod common;

use std::path::{Path, PathBuf};

use common::fixture;
use gpt2::{Config, Error, ForwardInput, Gpt2, KvCache, Tokenizer};
use ndarray::Array2;

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpt2-bad-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tiny() -> Gpt2 {
    Gpt2::load(fixture("models/tiny")).unwrap()
}

/// Copies the tiny fixture into a fresh directory, applying `edit` to the safetensors bytes.
fn tiny_with_bytes(tag: &str, edit: impl FnOnce(Vec<u8>) -> Vec<u8>) -> PathBuf {
    let d = tmpdir(tag);
    std::fs::copy(fixture("models/tiny/config.json"), d.join("config.json")).unwrap();
    let bytes = std::fs::read(fixture("models/tiny/model.safetensors")).unwrap();
    std::fs::write(d.join("model.safetensors"), edit(bytes)).unwrap();
    d
}

/// Rewrites the tiny checkpoint with `f` applied to its (name, shape, data) list.
fn tiny_rewritten(tag: &str, f: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) -> PathBuf {
    let m = tiny();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> =
        m.layout().params().iter().map(|p| (p.name.clone(), p.shape.clone(), m.params()[p.range()].to_vec())).collect();
    f(&mut tensors);
    let d = tmpdir(tag);
    std::fs::copy(fixture("models/tiny/config.json"), d.join("config.json")).unwrap();
    let views: Vec<(String, &[usize], &[f32])> =
        tensors.iter().map(|(n, s, v)| (n.clone(), s.as_slice(), v.as_slice())).collect();
    gpt2::model::io::write_safetensors(&d.join("model.safetensors"), &views, gpt2::SaveDtype::F32, &Default::default())
        .unwrap();
    d
}

fn load_err(p: &Path) -> Error {
    Gpt2::load(p).expect_err("load must fail")
}

#[test]
fn load_missing_path_is_not_found() {
    assert!(matches!(load_err(Path::new("/nonexistent/gpt2/model")), Error::NotFound(_)));
}

#[test]
fn load_dir_without_safetensors_is_not_found() {
    let d = tmpdir("nost");
    std::fs::copy(fixture("models/tiny/config.json"), d.join("config.json")).unwrap();
    assert!(matches!(load_err(&d), Error::NotFound(p) if p.ends_with("model.safetensors")));
}

#[test]
fn load_dir_without_config_is_not_found() {
    let d = tmpdir("nocfg");
    std::fs::copy(fixture("models/tiny/model.safetensors"), d.join("model.safetensors")).unwrap();
    assert!(matches!(load_err(&d), Error::NotFound(p) if p.ends_with("config.json")));
}

#[test]
fn load_truncated_file_is_safetensors_error() {
    let d = tiny_with_bytes("trunc", |b| b[..b.len() - 100].to_vec());
    assert!(matches!(load_err(&d), Error::Safetensors { .. }));
    let d = tiny_with_bytes("trunc-header", |b| b[..20].to_vec());
    assert!(matches!(load_err(&d), Error::Safetensors { .. }));
    let d = tiny_with_bytes("empty", |_| Vec::new());
    assert!(matches!(load_err(&d), Error::Safetensors { .. }));
}

#[test]
fn load_corrupt_header_is_safetensors_error() {
    let d = tiny_with_bytes("corrupt", |mut b| {
        for x in &mut b[8..40] {
            *x = b'#';
        }
        b
    });
    assert!(matches!(load_err(&d), Error::Safetensors { .. }));
    // a header length claiming terabytes
    let d = tiny_with_bytes("huge-header", |mut b| {
        b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        b
    });
    assert!(matches!(load_err(&d), Error::Safetensors { .. }));
}

#[test]
fn load_bad_config_json_is_json_error() {
    let d = tiny_with_bytes("badjson", |b| b);
    std::fs::write(d.join("config.json"), "{ not json").unwrap();
    assert!(matches!(load_err(&d), Error::Json { .. }));
    std::fs::write(d.join("config.json"), r#"{"n_embd": 30, "n_head": 4}"#).unwrap();
    assert!(matches!(load_err(&d), Error::InvalidConfig(_)));
}

#[test]
fn load_wrong_shape_names_tensor_expected_and_found() {
    let d = tiny_rewritten("shape", |ts| {
        let t = ts.iter_mut().find(|t| t.0 == "h.1.attn.c_attn.weight").unwrap();
        t.1 = vec![96, 32]; // nn.Linear orientation instead of Conv1D
    });
    match load_err(&d) {
        Error::ShapeMismatch { name, expected, found } => {
            assert!(name.contains("h.1.attn.c_attn.weight"));
            assert_eq!(expected, vec![32, 96]);
            assert_eq!(found, vec![96, 32]);
        }
        e => panic!("unexpected {e:?}"),
    }
}

#[test]
fn load_missing_tensor_names_it() {
    let d = tiny_rewritten("missing", |ts| ts.retain(|t| t.0 != "h.0.ln_2.bias"));
    assert!(matches!(load_err(&d), Error::MissingTensor(n) if n == "h.0.ln_2.bias"));
}

#[test]
fn load_unexpected_tensor_is_rejected() {
    let d = tiny_rewritten("extra", |ts| ts.push(("h.7.attn.c_attn.weight".into(), vec![2], vec![0.0, 0.0])));
    assert!(matches!(load_err(&d), Error::Safetensors { .. }));
}

#[test]
fn load_untied_lm_head_is_rejected_but_tied_one_accepted() {
    let d = tiny_rewritten("tied", |ts| {
        let wte = ts.iter().find(|t| t.0 == "wte.weight").unwrap().clone();
        ts.push(("lm_head.weight".into(), wte.1, wte.2));
    });
    assert_eq!(Gpt2::load(&d).unwrap().params(), tiny().params());
    let d = tiny_rewritten("untied", |ts| {
        let mut wte = ts.iter().find(|t| t.0 == "wte.weight").unwrap().clone();
        wte.2[0] += 1.0;
        ts.push(("lm_head.weight".into(), wte.1, wte.2));
    });
    assert!(matches!(load_err(&d), Error::Safetensors { .. }));
}

#[test]
fn forward_rejects_out_of_vocab_token() {
    let m = tiny();
    let e = m.logits(&[1, 2, 1000]).unwrap_err();
    assert!(matches!(e, Error::TokenOutOfVocab { token: 1000, position: 2, vocab_size: 1000 }));
}

#[test]
fn forward_rejects_sequence_longer_than_context() {
    let m = tiny();
    let toks = vec![1u32; 65];
    assert!(matches!(m.logits(&toks), Err(Error::SequenceTooLong { len: 65, n_positions: 64 })));
}

#[test]
fn forward_rejects_empty_input() {
    let m = tiny();
    assert!(matches!(m.logits(&[]), Err(Error::EmptyInput(_))));
    let empty = Array2::<u32>::zeros((2, 0));
    assert!(matches!(m.logits_batch(empty.view()), Err(Error::EmptyInput(_))));
}

#[test]
fn forward_rejects_mismatched_mask_and_positions() {
    let m = tiny();
    let toks = Array2::<u32>::ones((2, 3));
    let mask = Array2::from_elem((2, 4), true);
    let input = ForwardInput::new(toks.view()).with_mask(mask.view());
    assert!(matches!(m.forward(&input, None, &Default::default()), Err(Error::Shape(_))));
    let pos = Array2::from_elem((2, 3), 64u32);
    let input = ForwardInput::new(toks.view()).with_positions(pos.view());
    assert!(matches!(m.forward(&input, None, &Default::default()), Err(Error::SequenceTooLong { .. })));
}

#[test]
fn cache_overflow_and_batch_mismatch_are_errors() {
    let m = tiny();
    let mut cache = KvCache::new(m.config(), 1, 4).unwrap();
    let toks = Array2::<u32>::ones((1, 3));
    m.forward(&ForwardInput::new(toks.view()), Some(&mut cache), &Default::default()).unwrap();
    let r = m.forward(&ForwardInput::new(toks.view()), Some(&mut cache), &Default::default());
    assert!(matches!(r, Err(Error::SequenceTooLong { len: 6, n_positions: 4 })));
    let two = Array2::<u32>::ones((2, 1));
    assert!(matches!(
        m.forward(&ForwardInput::new(two.view()), Some(&mut cache), &Default::default()),
        Err(Error::Shape(_))
    ));
    assert!(matches!(KvCache::new(m.config(), 1, 65), Err(Error::SequenceTooLong { .. })));
    assert!(matches!(KvCache::new(m.config(), 0, 8), Err(Error::InvalidArgument { .. })));
}

#[test]
fn config_validation_errors() {
    let mut c = Config::nano(16, 10);
    c.n_head = 5;
    assert!(matches!(Gpt2::new_random(c, 0), Err(Error::InvalidConfig(_))));
    assert!(matches!(Config::preset("gpt5"), Err(Error::InvalidArgument { .. })));
    assert!(matches!(Gpt2::from_params(Config::nano(16, 10), vec![0.0; 3]), Err(Error::Shape(_))));
}

#[test]
fn tokenizer_rejects_unknown_ids_and_invalid_utf8() {
    let tok = Tokenizer::gpt2().unwrap();
    assert!(matches!(tok.decode(&[50257]), Err(Error::TokenOutOfVocab { token: 50257, .. })));
    assert!(matches!(tok.token_string(u32::MAX), Err(Error::TokenOutOfVocab { .. })));
    // "日" is split across byte-level tokens; its first token alone is not valid UTF-8
    let ids = tok.encode("日");
    assert!(ids.len() > 1);
    assert!(matches!(tok.decode(&ids[..1]), Err(Error::InvalidUtf8 { valid_up_to: 0 })));
    assert!(tok.decode_lossy(&ids[..1]).unwrap().contains('\u{FFFD}'));
}

#[test]
fn save_into_unwritable_location_is_io_error() {
    let m = tiny();
    let d = tmpdir("blocked");
    let blocker = d.join("file");
    std::fs::write(&blocker, b"x").unwrap();
    // a directory path below a regular file cannot be created
    assert!(matches!(m.save(blocker.join("sub")), Err(Error::Io { .. })));
}
