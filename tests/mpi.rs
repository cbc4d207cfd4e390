//! Data parallelism under `mpirun -np 2` (feature `mpi`; needs Open MPI's `mpirun` on PATH).
//!
//! The `train` and `hellaswag` examples are built with `--features mpi` and launched exactly as a
//! user would: `mpirun -np 2 train … --grad-accum 1` must equal one process with
//! `--grad-accum 2` on the same global batch (per-step losses, validation loss and final
//! weights), ZeRO-1 must equal plain data parallelism, distributed HellaSwag must equal one
//! process, and a rank killed mid-run must end the group (non-zero exit, bounded time) with a
//! checkpoint that still resumes, also on a different number of ranks.
//!
//! Every run uses `RAYON_NUM_THREADS=1`, so the one-process and two-rank runs use the same
//! kernels with the same thread count; the comparisons are then exact in practice, and the
//! stated tolerance is 1e-5.
#![cfg(feature = "mpi")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use gpt2::data::{write_shards, SplitNaming, WriterOptions};
use gpt2::{Gpt2, Tokenizer};
use serde_json::Value;

const TOL: f32 = 1e-5;

/// `target/<profile>/examples/<name>`, built with `--features mpi` first (cheap when current).
fn example(name: &str) -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf(); // target/<profile>
    BUILT.call_once(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--features", "mpi", "--example", "train", "--example", "hellaswag"]);
        if profile_dir.ends_with("release") {
            cmd.arg("--release");
        }
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
        let st = cmd.status().expect("cargo runs");
        assert!(st.success(), "building the examples with --features mpi failed");
    });
    profile_dir.join("examples").join(name)
}

fn tmp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpt2-mpi-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Token shards of the bundled Shakespeare validation text: shard 0 val, shards 1.. train.
fn corpus_shards(tag: &str) -> PathBuf {
    let dir = tmp_dir(tag).join("shards");
    let (_, val_txt) = gpt2::data::shakespeare_corpus().expect("the bundled corpus (a git checkout)");
    let opts = WriterOptions { shard_size: 40_000, naming: SplitNaming::FirstShardVal, ..WriterOptions::new(&dir) };
    write_shards(&[val_txt], &Tokenizer::gpt2().unwrap(), opts, &mut |_| {}).unwrap();
    dir
}

/// A command for `np` ranks (`np == 0`: the example started directly, one process).
fn launch(np: usize, exe: &Path, args: &[String]) -> Command {
    let mut cmd = if np == 0 {
        Command::new(exe)
    } else {
        let mut c = Command::new("mpirun");
        c.args(["--oversubscribe", "-np", &np.to_string()]).arg(exe);
        c
    };
    cmd.args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RAYON_NUM_THREADS", "1")
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

fn run_ok(np: usize, exe: &Path, args: &[String]) -> Output {
    let out = launch(np, exe, args).output().expect("the launcher starts (is Open MPI's mpirun on PATH?)");
    assert!(
        out.status.success(),
        "np {np}: {} {args:?} failed\nstdout:\n{}\nstderr:\n{}",
        exe.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn events<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|v| v["event"] == kind).collect()
}

fn train_args(data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--data",
        data.to_str().unwrap(),
        "--init",
        "fixtures/model",
        "--batch-size",
        "2",
        "--seq-len",
        "32",
        "--lr",
        "1e-3",
        "--warmup",
        "3",
        "--weight-decay",
        "0.1",
        "--grad-clip",
        "2.0",
        "--eval-batches",
        "5",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn max_weight_diff(a: &Path, b: &Path) -> f32 {
    let (a, b) = (Gpt2::load(a).unwrap(), Gpt2::load(b).unwrap());
    common::max_abs_diff(a.params(), b.params())
}

/// Per-step losses and validation losses of two runs agree within [`TOL`].
fn assert_same_curve(what: &str, a: &[Value], b: &[Value]) {
    for kind in ["step", "val"] {
        let key = if kind == "step" { "loss" } else { "val_loss" };
        let (ea, eb) = (events(a, kind), events(b, kind));
        assert_eq!(ea.len(), eb.len(), "{what}: number of {kind} events");
        for (x, y) in ea.iter().zip(&eb) {
            let (lx, ly) = (x[key].as_f64().unwrap() as f32, y[key].as_f64().unwrap() as f32);
            assert!((lx - ly).abs() <= TOL, "{what}: step {} {key} {lx} vs {ly}", x["step"]);
        }
    }
}

#[test]
fn two_ranks_equal_one_process_with_double_accumulation_and_zero1_equals_plain() {
    let train = example("train");
    let data = corpus_shards("dp");
    let root = data.parent().unwrap().to_path_buf();
    let steps = ["--steps", "12", "--eval-every", "6"];
    let one = json_lines(&run_ok(
        0,
        &train,
        &train_args(&data, &root.join("one"), &[&steps[..], &["--grad-accum", "2"]].concat()),
    ));
    let two = json_lines(&run_ok(
        2,
        &train,
        &train_args(&data, &root.join("two"), &[&steps[..], &["--grad-accum", "1"]].concat()),
    ));
    let zero = json_lines(&run_ok(
        2,
        &train,
        &train_args(&data, &root.join("zero"), &[&steps[..], &["--grad-accum", "1", "--zero", "1"]].concat()),
    ));
    let overlap = json_lines(&run_ok(
        2,
        &train,
        &train_args(&data, &root.join("overlap"), &[&steps[..], &["--grad-accum", "1", "--overlap"]].concat()),
    ));
    // rank 0 alone prints: one start line, 12 steps
    assert_eq!(events(&two, "start").len(), 1);
    assert_eq!(events(&two, "start")[0]["ranks"], 2);
    assert_eq!(events(&two, "step").len(), 12);
    assert_eq!(events(&two, "val").len(), 2);
    // the setting is exercised: warmup, clipping (some norm above 2.0), weight decay
    let norms: Vec<f64> = events(&one, "step").iter().map(|s| s["grad_norm"].as_f64().unwrap()).collect();
    assert!(norms.iter().any(|&n| n > 2.0), "clipping never fired: {norms:?}");
    assert!(events(&one, "step")[0]["lr"].as_f64().unwrap() < 1e-3);
    // per-step communication time is reported (and is zero for one process)
    assert!(events(&two, "step").iter().all(|s| s["comm_ms"].as_f64().unwrap() > 0.0));
    assert!(events(&one, "step").iter().all(|s| s["comm_ms"].as_f64().unwrap() == 0.0));

    assert_same_curve("np 2 vs one process", &one, &two);
    assert_same_curve("ZeRO-1 vs plain np 2", &two, &zero);
    let d = max_weight_diff(&root.join("one"), &root.join("two"));
    assert!(d <= TOL, "final weights np 2 vs one process: max |Δ| = {d}");
    let d = max_weight_diff(&root.join("two"), &root.join("zero"));
    assert!(d <= TOL, "final weights ZeRO-1 vs plain: max |Δ| = {d}");
    assert_same_curve("overlapped vs plain all-reduce", &two, &overlap);
    let d = max_weight_diff(&root.join("two"), &root.join("overlap"));
    assert!(d <= TOL, "final weights overlapped vs plain all-reduce: max |Δ| = {d}");
    assert!(events(&overlap, "step").iter().all(|s| s["comm_exposed_ms"].as_f64().unwrap() > 0.0));
    // only rank 0 wrote outputs (one losses.json, no stray files from rank 1)
    assert!(root.join("two/losses.json").is_file());
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn overlapped_all_reduce_with_accumulation_equals_plain() {
    // rank r's micro-batches 0 and 1 are global micro-batches r and 2 + r; the overlapped path
    // adds the last one's buckets to the first's as backward finishes them
    let train = example("train");
    let data = corpus_shards("accum");
    let root = data.parent().unwrap().to_path_buf();
    let a = ["--steps", "5", "--grad-accum", "2"];
    let plain = json_lines(&run_ok(2, &train, &train_args(&data, &root.join("plain"), &a)));
    let over =
        json_lines(&run_ok(2, &train, &train_args(&data, &root.join("over"), &[&a[..], &["--overlap"]].concat())));
    assert_eq!(events(&plain, "step").len(), 5);
    assert_same_curve("overlap with accumulation", &plain, &over);
    let d = max_weight_diff(&root.join("plain"), &root.join("over"));
    assert!(d <= TOL, "final weights: max |Δ| = {d}");
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn distributed_hellaswag_equals_one_process() {
    let hs = example("hellaswag");
    for style in ["completion", "harness"] {
        let args: Vec<String> = ["--model", "fixtures/model", "--json", "--style", style].map(String::from).to_vec();
        let one: Value = serde_json::from_slice(&run_ok(0, &hs, &args).stdout).unwrap();
        let out = run_ok(2, &hs, &args);
        let two: Value = serde_json::from_slice(&out.stdout).expect("rank 0 alone prints one JSON document");
        assert_eq!(two["ranks"], 2);
        for key in ["n", "acc", "acc_norm", "predictions"] {
            assert_eq!(one[key], two[key], "{style}: {key}");
        }
    }
}

#[test]
fn a_killed_rank_ends_the_group_and_the_checkpoint_resumes() {
    let train = example("train");
    let data = corpus_shards("fault");
    let root = data.parent().unwrap().to_path_buf();
    let out = root.join("run");
    let args = train_args(&data, &out, &["--steps", "100000", "--checkpoint-every", "2"]);
    let mut child = launch(2, &train, &args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    // wait for the first checkpoint
    let meta = out.join("checkpoint/latest"); // the commit point of a checkpoint
    let t0 = Instant::now();
    while !meta.is_file() {
        assert!(t0.elapsed() < Duration::from_secs(120), "no checkpoint after 120 s");
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    // SIGKILL one rank (a child of mpirun): the other must not hang
    let ranks = children(child.id());
    assert_eq!(ranks.len(), 2, "mpirun's children: {ranks:?}");
    let victim = *ranks.iter().max().unwrap();
    let killed_at = Instant::now();
    assert!(Command::new("kill").args(["-9", &victim.to_string()]).status().unwrap().success());
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if killed_at.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the group still runs 60 s after a rank was killed");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let waited = killed_at.elapsed();
    assert!(!status.success(), "a killed rank must make the run fail");
    eprintln!("group ended {:.1} s after the kill ({status})", waited.as_secs_f64());

    // the last checkpoint is intact and resumes on 2 ranks, and on 1 (loader remapped)
    let ckpt = gpt2::train::Checkpoint::load(out.join("checkpoint")).expect("checkpoint intact");
    assert!(ckpt.step >= 2 && ckpt.step % 2 == 0, "step {}", ckpt.step);
    let steps = (ckpt.step + 2).to_string();
    for np in [2, 0] {
        let dir = root.join(format!("resumed{np}"));
        let mut a = train_args(&data, &dir, &["--steps", &steps]);
        a.extend(["--resume".to_string(), out.join("checkpoint").display().to_string()]);
        let lines = json_lines(&run_ok(np, &train, &a));
        let st = events(&lines, "step");
        assert_eq!(st.len(), 2, "np {np}: resumed steps");
        assert_eq!(st[0]["step"].as_u64().unwrap() as usize, ckpt.step);
    }
    // both resumptions read the same global batches: same losses
    let l2: Value = serde_json::from_str(&std::fs::read_to_string(root.join("resumed2/losses.json")).unwrap()).unwrap();
    let l1: Value = serde_json::from_str(&std::fs::read_to_string(root.join("resumed0/losses.json")).unwrap()).unwrap();
    let tail = |v: &Value| -> Vec<f64> {
        let t = v["train"].as_array().unwrap();
        t[t.len() - 2..].iter().map(|s| s["loss"].as_f64().unwrap()).collect()
    };
    let (a, b) = (tail(&l2), tail(&l1));
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= TOL as f64), "resumed on 2 vs 1 rank(s): {a:?} vs {b:?}");
    let _ = std::fs::remove_dir_all(root);
}

/// Process ids whose parent is `pid` (from /proc).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        // pid (comm) state ppid …; comm may contain spaces: split after the last ')'
        let rest = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
        let ppid = rest.split_whitespace().nth(1).and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}
