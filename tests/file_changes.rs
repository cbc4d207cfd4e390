//! Files that change under a reader (issue 17, item 2). With memory maps, another process
//! truncating `model.safetensors` while it loads, or `np.save` rewriting a shard that training
//! reads, killed the reader with SIGBUS. Files are now read with positioned reads: a load gives
//! the right model or a typed error, a shard read gives the right tokens or `Error::Data`.
#![cfg(unix)]

mod common;

use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use gpt2::data::{save_shard, BatchSource, DataLoader, LoaderConfig, ShardFormat, Split, TokenShard};
use gpt2::{Error, Gpt2};

fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("gpt2-file-changes-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn checkpoint_truncated_and_restored_while_loading_never_kills_the_loader() {
    let src = common::fixture("model");
    let dir = scratch("model");
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let good = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = dir.join("model.safetensors");
    std::fs::write(&st, &good).unwrap();
    let reference = Gpt2::load(&dir).unwrap();

    let stop = AtomicBool::new(false);
    let rewrites = AtomicUsize::new(0);
    let (mut ok, mut failed) = (0, 0);
    std::thread::scope(|s| {
        s.spawn(|| {
            // truncate in place, then write the same bytes back (same inode, as `np.save` or
            // `cp` over a file do), as fast as possible
            let f = std::fs::OpenOptions::new().write(true).open(&st).unwrap();
            while !stop.load(Ordering::Relaxed) {
                f.set_len(good.len() as u64 / 3).unwrap();
                std::thread::yield_now();
                f.write_all_at(&good, 0).unwrap();
                rewrites.fetch_add(1, Ordering::Relaxed);
            }
        });
        for _ in 0..60 {
            match Gpt2::load(&dir) {
                // every byte written back is the original: a finished load is the original model
                Ok(m) => {
                    assert_eq!(m.params(), reference.params());
                    ok += 1;
                }
                Err(Error::Safetensors { .. } | Error::Io { .. } | Error::ShapeMismatch { .. }) => failed += 1,
                Err(e) => panic!("unexpected error kind: {e}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    eprintln!("{ok} loads succeeded, {failed} saw the file change ({} rewrites)", rewrites.load(Ordering::Relaxed));
    assert_eq!(ok + failed, 60);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shard_rewritten_in_place_during_training_is_a_data_error() {
    let dir = scratch("shard");
    let p = dir.join("run_train_000000.npy");
    let tokens: Vec<u16> = (0..4000).map(|i| (i % 50000) as u16).collect();
    save_shard(&p, &tokens, ShardFormat::Npy).unwrap();
    let mut loader = DataLoader::open(&p, Split::Train, LoaderConfig::new(2, 16)).unwrap();
    let (x, _) = loader.next_batch().unwrap();
    assert_eq!(x[(0, 0)], 0);
    // np.save over the shard in use: truncate, then write a different (shorter) array in place
    save_shard(dir.join("other.npy"), &tokens[..100], ShardFormat::Npy).unwrap();
    std::fs::write(&p, std::fs::read(dir.join("other.npy")).unwrap()).unwrap();
    match loader.next_batch() {
        Err(Error::Data { path, reason, .. }) => {
            assert_eq!(path, p);
            assert!(reason.contains("changed size"), "{reason}");
        }
        other => panic!("expected Error::Data, got {other:?}"),
    }
    // a shard that shrinks between the size check and the read (a read past the new end)
    let shard = TokenShard::open(dir.join("other.npy")).unwrap();
    std::fs::OpenOptions::new().write(true).open(dir.join("other.npy")).unwrap().set_len(0).unwrap();
    assert!(matches!(shard.read_into(0, &mut [0; 100]), Err(Error::Data { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}
