//! Crash-safe file writes, and reads that cannot hang on a FIFO or device.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Opens `path` for reading if it is a regular file (after following symlinks). A FIFO, socket,
/// device or directory is refused with an [`Error::Io`] of kind `InvalidInput` instead of being
/// opened: opening a FIFO for reading blocks until a writer appears, and reading a device may
/// never end. On Unix the file is opened non-blocking and checked through the open handle
/// (`fstat`), so a path swapped for a FIFO between a check and the open cannot hang either.
/// A missing file is [`Error::NotFound`].
///
/// ```
/// let dir = std::env::temp_dir();
/// assert!(gpt2::fsutil::open_regular(&dir).is_err()); // a directory
/// ```
pub fn open_regular(path: &Path) -> Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK: opening a FIFO returns at once; it has no effect on regular-file reads.
        opts.custom_flags(NONBLOCK);
    }
    let file = opts.open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        let kind = if meta.is_dir() { "a directory" } else { "not a regular file (a FIFO, socket or device)" };
        return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::InvalidInput, kind)));
    }
    Ok(file)
}

#[cfg(all(unix, any(target_os = "linux", target_os = "android")))]
const NONBLOCK: i32 = 0o4000;
#[cfg(all(unix, not(any(target_os = "linux", target_os = "android"))))]
const NONBLOCK: i32 = 0x0004; // macOS and the BSDs

/// Fills `buf` from `file` at byte `offset` without moving a shared cursor (`pread`); a file that
/// ends first is an `UnexpectedEof` error.
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let (mut done, mut buf) = (0u64, buf);
        while !buf.is_empty() {
            match std::os::windows::fs::FileExt::seek_read(file, buf, offset + done) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    done += n as u64;
                    buf = &mut buf[n..];
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Reads the whole of `path`, which must be a regular file (see [`open_regular`]).
///
/// ```
/// let p = std::env::temp_dir().join(format!("gpt2-read-regular-{}", std::process::id()));
/// std::fs::write(&p, b"abc").unwrap();
/// assert_eq!(gpt2::fsutil::read_regular(&p).unwrap(), b"abc");
/// # std::fs::remove_file(&p).unwrap();
/// ```
pub fn read_regular(path: &Path) -> Result<Vec<u8>> {
    let mut file = open_regular(path)?;
    let mut out = Vec::with_capacity(file.metadata().map_or(0, |m| m.len() as usize).min(1 << 30));
    file.read_to_end(&mut out).map_err(|e| Error::io(path, e))?;
    Ok(out)
}

/// Temporary sibling path used while `path` is being written.
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Whether process `pid` is known to have exited (`/proc/{pid}` is absent while `/proc/self`
/// exists). `false` where there is no `/proc`: then nothing is ever treated as dead.
pub(crate) fn process_gone(pid: u32) -> bool {
    let proc = Path::new("/proc");
    proc.join("self").exists() && !proc.join(pid.to_string()).exists()
}

/// Splits a temporary file name `.{target}.tmp-{pid}-{n}` into `(target, pid)`.
pub(crate) fn parse_temp_name(name: &str) -> Option<(&str, u32)> {
    let rest = name.strip_prefix('.')?;
    let (target, tail) = rest.rsplit_once(".tmp-")?;
    let (pid, n) = tail.split_once('-')?;
    n.parse::<u64>().ok()?;
    Some((target, pid.parse().ok()?))
}

/// Removes the temporary files that [`write_atomic`] left in `dir` when its process died
/// mid-write (SIGKILL, power loss), for the target names `select` accepts. Only files of
/// processes that no longer exist are touched (checked through `/proc`; where there is no
/// `/proc`, nothing is removed), so concurrent writers are safe. Best effort: returns how many
/// files were removed and ignores errors.
pub(crate) fn remove_stale_temps(dir: &Path, select: impl Fn(&str) -> bool) -> usize {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return 0;
    }
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((target, pid)) = parse_temp_name(name) else { continue };
        if pid != me && select(target) && !proc.join(pid.to_string()).exists() {
            removed += usize::from(std::fs::remove_file(entry.path()).is_ok());
        }
    }
    removed
}

/// Creates `dir` (with its parents) and proves it writable by creating, writing, fsyncing and
/// removing a hidden probe file in it — so a run that will write its results there fails
/// before its first step, not after hours of work.
///
/// Errors: [`Error::Io`] / [`Error::NotFound`] naming the path that failed (e.g. a parent that
/// is a file, a read-only directory).
///
/// ```
/// let dir = std::env::temp_dir().join(format!("gpt2-doc-writable-{}", std::process::id()));
/// gpt2::train::ensure_writable_dir(&dir).unwrap();
/// assert!(dir.is_dir() && std::fs::read_dir(&dir).unwrap().next().is_none());
/// assert!(gpt2::train::ensure_writable_dir(std::path::Path::new("/dev/null/run")).is_err());
/// std::fs::remove_dir(&dir).unwrap();
/// ```
pub fn ensure_writable_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    let r = (|| -> std::io::Result<()> {
        let mut f = File::create(&probe)?;
        f.write_all(b"probe")?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&probe);
    r.map_err(|e| Error::io(&probe, e))
}

/// Writes `path` atomically: the content goes to a temporary file in the same
/// directory, is flushed and fsynced, then renamed over `path` (and the directory
/// fsynced). A crash leaves either the old file or the new one, never a torn one;
/// readers never see the temporary name as a finished file.
pub fn write_atomic<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
{
    let tmp = temp_path(path);
    let result = (|| -> std::io::Result<()> {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        write(&mut w)?;
        w.flush()?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_parse_back() {
        let t = temp_path(Path::new("/x/model.safetensors"));
        let name = t.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_temp_name(name), Some(("model.safetensors", std::process::id())));
        assert_eq!(parse_temp_name(".a.tmp-b.tmp-12-3"), Some(("a.tmp-b", 12)));
        assert_eq!(parse_temp_name("model.safetensors"), None);
        assert_eq!(parse_temp_name(".x.tmp-12"), None);
        assert_eq!(parse_temp_name(".x.tmp-abc-1"), None);
    }

    #[test]
    fn stale_temps_of_dead_processes_are_removed_live_ones_kept() {
        let dir = std::env::temp_dir().join(format!("gpt2-fsutil-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // a PID that cannot exist (above Linux's pid_max limit of 2^22), ours, and a live one (1)
        let dead = dir.join(".m.safetensors.tmp-4294967295-0");
        let mine = dir.join(format!(".m.safetensors.tmp-{}-0", std::process::id()));
        let live = dir.join(".m.safetensors.tmp-1-0");
        let other = dir.join(".config.json.tmp-4294967295-0");
        for p in [&dead, &mine, &live, &other] {
            std::fs::write(p, b"partial").unwrap();
        }
        let n = remove_stale_temps(&dir, |t| t == "m.safetensors");
        if Path::new("/proc/self").exists() {
            assert_eq!(n, 1);
            assert!(!dead.exists());
        }
        assert!(mine.exists() && live.exists() && other.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
