//! Checkpoints as users have them (fixtures/ref_hub.py, reference/tiny.hub.*): hub ids resolved in
//! a Hugging Face cache built here in the exact hub layout (refs → snapshots → symlinked blobs),
//! sharded safetensors both ways through transformers, `pytorch_model.bin`-only directories,
//! `generation_config.json`, and `scale_attn_by_inverse_layer_idx` in forward, backward and
//! KV-cached decoding against transformers.

mod common;

use std::path::{Path, PathBuf};

use common::{fixture, max_abs_diff, Reference};
use gpt2::generate::{generate, GenerateConfig, SamplingParams};
use gpt2::model::hub::HubCache;
use gpt2::train::{forward_backward, Activations};
use gpt2::{Error, GenerationConfig, Gpt2, SaveDtype, Tokenizer};
use ndarray::{Ix1, Ix2, Ix3};

fn reference() -> Reference {
    Reference::load("tiny.hub")
}

/// A fresh temporary directory for one test.
fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpt2-hub-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Puts the files of `src` into `cache` as `huggingface_hub` does: content in `blobs/<hash>`,
/// `snapshots/<commit>/<file>` a relative symlink to it, `refs/main` holding the commit.
fn add_to_cache(cache: &Path, repo_id: &str, commit: &str, src: &Path) -> PathBuf {
    let repo = cache.join(format!("models--{}", repo_id.replace('/', "--")));
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    for (i, e) in std::fs::read_dir(src).unwrap().enumerate() {
        let e = e.unwrap();
        let blob = format!("{commit}{i:04}blob");
        std::fs::copy(e.path(), repo.join("blobs").join(&blob)).unwrap();
        let link = snap.join(e.file_name());
        #[cfg(unix)]
        std::os::unix::fs::symlink(Path::new("../../blobs").join(&blob), &link).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(e.path(), &link).unwrap();
    }
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    snap
}

fn logits_of(model: &Gpt2, x: &ndarray::Array2<u32>) -> ndarray::Array3<f32> {
    model.logits_batch(x.view()).unwrap()
}

#[test]
fn hub_ids_resolve_through_a_cache_in_the_hub_layout() {
    let cache_dir = tmp("cache");
    let snap = add_to_cache(&cache_dir, "test-org/tiny-bpe", "0123456789abcdef", &fixture("models/tiny-bpe"));
    let cache = HubCache::new(&cache_dir);
    assert_eq!(cache.snapshot("test-org/tiny-bpe", "main").unwrap(), snap);
    assert_eq!(cache.snapshot("test-org/tiny-bpe", "0123456789abcdef").unwrap(), snap, "a commit hash works too");
    assert!(matches!(cache.snapshot("test-org/tiny-bpe", "v2"), Err(Error::ModelNotFound { .. })));
    assert!(matches!(cache.snapshot("test-org/missing", "main"), Err(Error::ModelNotFound { .. })));
    assert!(matches!(cache.snapshot("../escape", "main"), Err(Error::InvalidArgument { .. })));
    assert!(matches!(cache.snapshot("test-org/tiny-bpe", "../../x"), Err(Error::InvalidArgument { .. })));

    // the model behind the symlinks generates transformers' greedy ids
    let model = Gpt2::load(&snap).unwrap();
    let tok = Tokenizer::gpt2().unwrap();
    let gen: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("reference/tiny-bpe.generate.json")).unwrap()).unwrap();
    let prompt: Vec<u32> = gen["prompts"][0].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let want: Vec<u32> = gen["alone"][0].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let cfg = GenerateConfig { max_new_tokens: 20, sampling: SamplingParams::greedy(), ..Default::default() };
    let out = generate(&model, &tok, &prompt, &cfg, None).unwrap();
    assert_eq!(out.samples[0].token_ids, want);
    std::fs::remove_dir_all(&cache_dir).unwrap();
}

/// `generate --model org/name --greedy` with `HF_HOME` pointing at the cache prints transformers'
/// greedy ids. Needs the example binary, which `cargo test` builds; skipped (with a note)
/// when only this test target was built.
#[test]
fn generate_example_resolves_a_hub_id_through_hf_home() {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("examples").join("generate");
    if !bin.exists() {
        eprintln!("skipped: {} not built (run the whole `cargo test --release`)", bin.display());
        return;
    }
    let home = tmp("hf-home");
    add_to_cache(&home.join("hub"), "test-org/tiny-bpe", "feedface", &fixture("models/tiny-bpe"));
    let gen: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("reference/tiny-bpe.generate.json")).unwrap()).unwrap();
    let want: Vec<u64> = gen["alone"][1].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    let run = |model: &str| {
        std::process::Command::new(&bin)
            .args(["--model", model, "--greedy", "--json", "--max-new-tokens", "20"])
            .args(["--prompt", "The quick brown fox jumps over"])
            .env("HF_HOME", &home)
            .env_remove("HF_HUB_CACHE")
            .output()
            .unwrap()
    };
    let out = run("test-org/tiny-bpe");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<u64> = j["samples"][0]["token_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(got, want);
    // a wrong --model: one readable line naming it and how to get it
    let out = run("test-org/not-there");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("test-org/not-there") && err.contains("huggingface-cli download"), "{err}");
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn transformers_sharded_checkpoint_loads_and_matches_the_single_file() {
    let r = Reference::load("tiny");
    let x = r.u32("forward.short.input_ids").into_dimensionality::<Ix2>().unwrap();
    let want = r.f32("forward.short.logits").into_dimensionality::<Ix3>().unwrap();
    let dir = fixture("models/tiny-sharded");
    assert!(!dir.join("model.safetensors").exists() && dir.join("model.safetensors.index.json").exists());
    let sharded = Gpt2::load(&dir).unwrap();
    assert_eq!(sharded.params(), Gpt2::load(fixture("models/tiny")).unwrap().params(), "bit-identical");
    let d = max_abs_diff(logits_of(&sharded, &x).iter(), want.iter());
    assert!(d <= 1e-4, "max |Δ logits| {d:e}");
    eprintln!("sharded tiny logits max |Δ| {d:.2e}");
    // the index file itself can be passed, and the checkpoint found through a cache
    Gpt2::load(dir.join("model.safetensors.index.json")).unwrap();
    let cache_dir = tmp("sharded-cache");
    let snap = add_to_cache(&cache_dir, "org/tiny-sharded", "c0ffee", &dir);
    assert_eq!(HubCache::new(&cache_dir).snapshot("org/tiny-sharded", "main").unwrap(), snap);
    assert_eq!(Gpt2::load(&snap).unwrap().params(), sharded.params());
    std::fs::remove_dir_all(&cache_dir).unwrap();
}

/// `fixtures/models/tiny-sharded-rs` was written by `save_sharded` and loaded by transformers in
/// fixtures/ref_hub.py (rs.*); the writer must still produce exactly those files.
/// `GPT2_BLESS=1` rewrites them (then re-run the script).
#[test]
fn crate_written_shards_load_in_transformers() {
    let model = Gpt2::load(fixture("models/tiny")).unwrap();
    let out = tmp("rs-shards");
    model.save_sharded(&out, SaveDtype::F32, 100_000).unwrap();
    let committed = fixture("models/tiny-sharded-rs");
    if std::env::var_os("GPT2_BLESS").is_some() {
        let _ = std::fs::remove_dir_all(&committed);
        std::fs::create_dir_all(&committed).unwrap();
        for e in std::fs::read_dir(&out).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), committed.join(e.file_name())).unwrap();
        }
    }
    let mut names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for n in &names {
        assert_eq!(std::fs::read(out.join(n)).unwrap(), std::fs::read(committed.join(n)).unwrap(), "{n} changed");
    }
    let r = reference();
    let files: Vec<&str> = r.json["rs.files"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(files.len() >= 2, "{files:?}");
    for f in &files {
        assert!(names.iter().any(|n| n == f), "{f} not written");
    }
    let d = r.json["rs.max_abs_diff"].as_f64().unwrap();
    assert!(d <= 1e-5, "transformers' logits from our shards differ by {d:e}");
    // and we read back what we wrote
    assert_eq!(Gpt2::load(&out).unwrap().params(), model.params());
    // saving again with one big shard leaves exactly one checkpoint (no stale index or shards)
    model.save_sharded(&out, SaveDtype::F32, usize::MAX).unwrap();
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert_eq!(Gpt2::load(&out).unwrap().params(), model.params());
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn broken_sharded_checkpoints_are_typed_errors() {
    let src = fixture("models/tiny-sharded");
    let case = |name: &str, edit: &dyn Fn(&Path)| -> Error {
        let d = tmp(name);
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
        }
        edit(&d);
        let err = Gpt2::load(&d).unwrap_err();
        std::fs::remove_dir_all(&d).unwrap();
        err
    };
    let index = |d: &Path| d.join("model.safetensors.index.json");
    let rewrite = |d: &Path, from: &str, to: &str| {
        let s = std::fs::read_to_string(index(d)).unwrap();
        std::fs::write(index(d), s.replacen(from, to, 1)).unwrap();
    };
    let e = case("missing-shard", &|d| std::fs::remove_file(d.join("model-00002-of-00003.safetensors")).unwrap());
    assert!(matches!(e, Error::NotFound(ref p) if p.ends_with("model-00002-of-00003.safetensors")), "{e}");
    let e = case("escape", &|d| rewrite(d, "model-00001-of-00003.safetensors", "../model-00001-of-00003.safetensors"));
    assert!(matches!(e, Error::Json { .. }), "{e}");
    let e = case("moved", &|d| rewrite(d, "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors"));
    assert!(matches!(e, Error::Safetensors { .. }), "{e}");
    let e = case("not-json", &|d| std::fs::write(index(d), "{").unwrap());
    assert!(matches!(e, Error::Json { .. }), "{e}");
    let e = case("truncated", &|d| {
        let p = d.join("model-00003-of-00003.safetensors");
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() - 10]).unwrap();
    });
    assert!(matches!(e, Error::Safetensors { .. }), "{e}");
    let e = case("no-config", &|d| std::fs::remove_file(d.join("config.json")).unwrap());
    assert!(matches!(e, Error::NotFound(_)), "{e}");
}

#[test]
fn pytorch_bin_only_is_a_typed_error_naming_the_file() {
    let d = tmp("bin-only");
    std::fs::copy(fixture("models/tiny/config.json"), d.join("config.json")).unwrap();
    // never unpickled: the content does not matter
    std::fs::write(d.join("pytorch_model.bin"), b"PK\x03\x04 not read").unwrap();
    for path in [d.clone(), d.join("pytorch_model.bin")] {
        let err = Gpt2::load(&path).unwrap_err();
        assert!(matches!(err, Error::UnsupportedCheckpoint { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("pytorch_model.bin") && msg.contains("save_pretrained"), "{msg}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn generation_config_fills_generate_defaults_like_transformers() {
    let r = reference();
    let dir = fixture("models/tiny-sharded");
    let g = GenerationConfig::from_checkpoint(&dir).unwrap().unwrap();
    assert_eq!((g.bos_token_id, g.pad_token_id, g.eos_token_id.as_slice()), (Some(999), Some(0), &[7, 999][..]));
    let model = Gpt2::load(&dir).unwrap();
    let tok = Tokenizer::gpt2().unwrap();
    let prompt: Vec<u32> = r.u32("gen.prompt").into_dimensionality::<Ix1>().unwrap().to_vec();
    let want: Vec<u32> = r.u32("gen.ids").into_dimensionality::<Ix1>().unwrap().to_vec();
    let mut cfg = GenerateConfig::default();
    g.apply_to(&mut cfg, prompt.len());
    assert!(cfg.sampling.is_greedy());
    assert_eq!((cfg.max_new_tokens, cfg.eos_token_id, cfg.stop_token_ids.as_slice()), (9, Some(7), &[999][..]));
    let out = generate(&model, &tok, &prompt, &cfg, None).unwrap();
    assert_eq!(out.samples[0].token_ids, want);
}

/// `scale_attn_by_inverse_layer_idx = true`: logits, loss, gradients and greedy KV-cached decoding
/// against transformers.
#[test]
fn inverse_layer_idx_scaling_matches_transformers() {
    let r = reference();
    let base = Gpt2::load(fixture("models/tiny")).unwrap();
    let mut cfg = base.config().clone();
    cfg.scale_attn_by_inverse_layer_idx = true;
    let model = Gpt2::from_params(cfg, base.params().to_vec()).unwrap();
    let x = r.u32("inv.x").into_dimensionality::<Ix2>().unwrap();
    let y = r.i32("inv.y").into_dimensionality::<Ix2>().unwrap();
    let want = r.f32("inv.logits");
    let got = logits_of(&model, &x);
    let d = max_abs_diff(got.iter(), want.iter());
    assert!(d <= 1e-5, "logits max |Δ| {d:e}");
    eprintln!("inverse-layer-idx logits max |Δ| {d:.2e}");
    let d_plain = max_abs_diff(logits_of(&base, &x).iter(), want.iter());
    assert!(d_plain > 0.1, "the flag must change the logits ({d_plain})");
    // reorder_and_upcast_attn changes nothing in f32
    let up = r.f32("upcast.logits");
    let d = max_abs_diff(got.index_axis(ndarray::Axis(0), 0).iter(), up.iter());
    assert!(d <= 1e-5, "upcast logits max |Δ| {d:e}");
    eprintln!("reorder_and_upcast_attn logits max |Δ| {d:.2e}");

    let mut acts = Activations::new();
    let mut grads = vec![0f32; model.num_parameters()];
    let loss = forward_backward(&model, &mut acts, &mut grads, x.view(), y.view(), 1.0).unwrap();
    let want_loss = r.json["inv.loss"].as_f64().unwrap() as f32;
    assert!((loss - want_loss).abs() <= 1e-5 * want_loss.abs(), "loss {loss} vs {want_loss}");
    eprintln!("loss rel err {:.2e}", ((loss - want_loss) / want_loss).abs());
    for name in r.json["inv.grad_names"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        let info = model.layout().get(name).unwrap();
        let want = r.f32(&format!("inv.grad.{name}"));
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = max_abs_diff(grads[info.range()].iter(), want.iter());
        assert!(d <= 1e-4 * scale + 1e-7, "grad {name}: max |Δ| {d:e} (max |g| {scale:e})");
        eprintln!("grad {name}: max |Δ| {d:.2e} (max |g| {scale:.2e})");
    }

    let tok = Tokenizer::gpt2().unwrap();
    let prompt: Vec<u32> = r.u32("inv.prompt").into_dimensionality::<Ix1>().unwrap().to_vec();
    let want: Vec<u32> = r.u32("inv.greedy").into_dimensionality::<Ix1>().unwrap().to_vec();
    let gcfg = GenerateConfig {
        max_new_tokens: 20,
        sampling: SamplingParams::greedy(),
        eos_token_id: None,
        ..Default::default()
    };
    let out = generate(&model, &tok, &prompt, &gcfg, None).unwrap();
    assert_eq!(out.samples[0].token_ids, want, "KV-cached greedy decoding");
}
