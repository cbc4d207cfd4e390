//! Peak memory of loading a checkpoint stays near the file size (the file is memory-mapped and
//! released chunk by chunk while copied). Linux only (`/proc/self/status`, `clear_refs`).
//!
//! The measurement runs in a child process (this test binary re-run) so the test harness's
//! own allocations do not count: the child resets its peak RSS, loads, and reports the peak
//! above its resident set before the load. The 124M numbers are measured with
//! `examples/model_info.rs`; see docs/reliability.md.

use std::path::PathBuf;
use std::process::Command;

use gpt2::{Config, Gpt2, SaveDtype};

const CHILD_ENV: &str = "GPT2_RSS_CHILD_MODEL";

fn status_kb(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
}

#[test]
#[ignore = "run by load_peak_rss_stays_near_file_size as a child process"]
fn child_load() {
    let Some(path) = std::env::var_os(CHILD_ENV).map(PathBuf::from) else {
        return;
    };
    std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs");
    let before = status_kb("VmRSS:").unwrap();
    let m = Gpt2::load(&path).unwrap();
    let peak = status_kb("VmHWM:").unwrap();
    println!("RSS-RESULT {} {}", (peak - before) * 1024, m.num_parameters());
}

fn measure(dir: &std::path::Path) -> u64 {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["child_load", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find_map(|l| l.split("RSS-RESULT ").nth(1)).unwrap_or_else(|| panic!("{stdout}"));
    line.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn load_peak_rss_stays_near_file_size() {
    if !std::path::Path::new("/proc/self/clear_refs").exists() {
        eprintln!("no /proc/self/clear_refs: skipped");
        return;
    }
    // ~64 MB in f32: a 50257 × 256 embedding (51 MB, the largest tensor) plus 4 blocks.
    let model = Gpt2::new_random(Config::new(4, 4, 256, 256, 50257), 0).unwrap();
    let root = std::env::temp_dir().join(format!("gpt2-rss-{}", std::process::id()));
    for (dtype, name, budget) in [(SaveDtype::F32, "f32", 1.10), (SaveDtype::F16, "f16", 2.15)] {
        let dir = root.join(name);
        model.save_with_dtype(&dir, dtype).unwrap();
        let file = std::fs::metadata(dir.join("model.safetensors")).unwrap().len();
        let peak = measure(&dir);
        let ratio = peak as f64 / file as f64;
        eprintln!("{name}: file {file} bytes, load peak {peak} bytes above the baseline ({ratio:.3}× the file)");
        // f32: the parameter buffer is the file; f16: it is twice the file.
        assert!(ratio <= budget, "{name}: loading peaked at {ratio:.3}× the file size (budget {budget}×)");
        assert!(peak as f64 >= 0.9 * (model.num_parameters() * 4) as f64, "{name}: the measurement saw no load");
    }
    std::fs::remove_dir_all(&root).unwrap();
}
