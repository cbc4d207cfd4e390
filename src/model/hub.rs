//! Finding checkpoints the way users have them: a local path, a Hugging Face hub id resolved in
//! the local hub cache (offline; nothing is ever downloaded), and the default model.
//!
//! The cache layout is `huggingface_hub`'s: `<cache>/models--<org>--<name>/refs/<revision>` holds
//! a commit hash, `<cache>/models--<org>--<name>/snapshots/<hash>/` holds the files (usually
//! symlinks into `../../blobs/`). The cache directory is, in order, `$HF_HUB_CACHE`,
//! `$HF_HOME/hub`, `$XDG_CACHE_HOME/huggingface/hub`, `~/.cache/huggingface/hub`
//! ([`HubCache::from_env`]).
//!
//! ```
//! use gpt2::model::hub::HubCache;
//! # let tmp = std::env::temp_dir().join(format!("gpt2-hub-doc-{}", std::process::id()));
//! # let snap = tmp.join("models--org--tiny/snapshots/abc123");
//! # std::fs::create_dir_all(&snap).unwrap();
//! # std::fs::create_dir_all(tmp.join("models--org--tiny/refs")).unwrap();
//! # std::fs::write(tmp.join("models--org--tiny/refs/main"), "abc123").unwrap();
//! // `tmp` is a hub cache holding `org/tiny` at revision `main` = commit abc123
//! let cache = HubCache::new(&tmp);
//! assert_eq!(cache.snapshot("org/tiny", "main").unwrap(), snap);
//! assert!(cache.snapshot("org/other", "main").is_err());
//! # std::fs::remove_dir_all(&tmp).unwrap();
//! ```

use std::path::{Path, PathBuf};

use super::{Gpt2, LoadOptions};
use crate::error::{Error, Result};

/// Environment variable naming the default model directory ([`default_model_dir`]).
pub const MODEL_DIR_ENV: &str = "GPT2_MODEL_DIR";

/// The hub id [`default_model_dir`] looks for in the Hugging Face cache.
pub const DEFAULT_HUB_ID: &str = "openai-community/gpt2";

/// A local Hugging Face hub cache directory (the `hub` folder, holding `models--*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubCache {
    root: PathBuf,
}

impl HubCache {
    /// A cache rooted at `root` (the folder that holds `models--<org>--<name>`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        HubCache { root: root.into() }
    }

    /// The cache `huggingface_hub` uses: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `$XDG_CACHE_HOME/huggingface/hub`, else `$HOME/.cache/huggingface/hub` (`%USERPROFILE%` on
    /// Windows). `None` when none of these variables is set. The directory need not exist.
    pub fn from_env() -> Option<Self> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let root = var("HF_HUB_CACHE")
            .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
            .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface").join("hub")))
            .or_else(|| var("HOME").or_else(|| var("USERPROFILE")).map(|h| h.join(".cache/huggingface/hub")))?;
        Some(HubCache { root })
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The snapshot directory of `repo_id` (`org/name`, or a legacy bare `name`) at `revision`
    /// (a branch or tag name with a `refs/<revision>` file, or a commit hash with a snapshot).
    ///
    /// Errors: [`Error::InvalidArgument`] for a malformed id or revision,
    /// [`Error::ModelNotFound`] (with the paths looked at and how to download the model) when the
    /// cache does not hold it.
    pub fn snapshot(&self, repo_id: &str, revision: &str) -> Result<PathBuf> {
        check_repo_id(repo_id)?;
        check_revision(revision)?;
        let repo = self.root.join(format!("models--{}", repo_id.replace('/', "--")));
        let not_found = |what: String| Error::ModelNotFound { name: repo_id.to_string(), reason: what };
        if !repo.is_dir() {
            return Err(not_found(format!(
                "not a local path, and not in the Hugging Face cache ({} does not exist); {}",
                repo.display(),
                download_hint(repo_id)
            )));
        }
        let ref_file = repo.join("refs").join(revision);
        let commit = match std::fs::read_to_string(&ref_file) {
            Ok(s) => s.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => revision.to_string(),
            Err(e) => return Err(Error::io(&ref_file, e)),
        };
        check_revision(&commit).map_err(|_| Error::Data {
            path: ref_file.clone(),
            line: 1,
            reason: format!("not a commit hash: {commit:?}"),
        })?;
        let snap = repo.join("snapshots").join(&commit);
        if !snap.is_dir() {
            return Err(not_found(format!(
                "the Hugging Face cache has no snapshot for revision `{revision}` (looked for {} and {}); {}",
                ref_file.display(),
                snap.display(),
                download_hint(repo_id)
            )));
        }
        Ok(snap)
    }
}

fn download_hint(repo_id: &str) -> String {
    format!(
        "download it with `huggingface-cli download {repo_id} config.json model.safetensors` (or \
         `hf download …`), set HF_HOME / HF_HUB_CACHE to the cache that has it, or pass a local directory"
    )
}

/// `org/name` or `name`, each part `[A-Za-z0-9._-]+`, not starting with `.` or `-`.
fn check_repo_id(id: &str) -> Result<()> {
    let parts: Vec<&str> = id.split('/').collect();
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 96
            && !p.starts_with(['.', '-'])
            && !p.contains("--")
            && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    if parts.len() > 2 || !parts.iter().all(|p| ok_part(p)) {
        return Err(Error::arg(
            "model",
            format!("`{id}` is neither an existing path nor a Hugging Face hub id like `openai-community/gpt2`"),
        ));
    }
    Ok(())
}

/// A branch, tag or commit name usable as one path component.
fn check_revision(rev: &str) -> Result<()> {
    let ok = !rev.is_empty()
        && rev.len() <= 128
        && rev != "."
        && rev != ".."
        && rev.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(Error::arg("revision", format!("`{rev}` is not a branch, tag or commit name")));
    }
    Ok(())
}

/// Splits `org/name@revision` into the id and the revision (default `main`).
fn split_revision(name: &str) -> (&str, &str) {
    match name.rsplit_once('@') {
        Some((id, rev)) => (id, rev),
        None => (name, "main"),
    }
}

/// Resolves what a user passes as a model: an existing file or directory is returned as is;
/// otherwise `name` is read as a hub id (`org/name`, optionally `@revision`, default `main`) and
/// looked up in the local Hugging Face cache ([`HubCache::from_env`]). Nothing is downloaded.
///
/// Errors: [`Error::ModelNotFound`] naming what was tried and how to get the model;
/// [`Error::InvalidArgument`] when `name` is neither a path nor a well-formed hub id.
///
/// ```
/// let err = gpt2::model::hub::resolve("no-such-org/no-such-model").unwrap_err();
/// assert!(err.to_string().contains("huggingface-cli download no-such-org/no-such-model"));
/// ```
pub fn resolve(name: &str) -> Result<PathBuf> {
    let path = Path::new(name);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    let (id, rev) = split_revision(name);
    check_repo_id(id).map_err(|_| Error::NotFound(path.to_path_buf()))?;
    match HubCache::from_env() {
        Some(cache) => cache.snapshot(id, rev),
        None => Err(Error::ModelNotFound {
            name: name.to_string(),
            reason: format!(
                "not a local path, and no Hugging Face cache is configured (HF_HUB_CACHE, HF_HOME and HOME are \
                 unset); {}",
                download_hint(id)
            ),
        }),
    }
}

impl Gpt2 {
    /// Loads a model the way transformers' `from_pretrained` finds one, offline: `name` is a
    /// local directory or `.safetensors` file, or a hub id such as `openai-community/gpt2`
    /// (optionally `org/name@revision`) resolved in the local Hugging Face cache
    /// ([`resolve`]). The snapshot may hold `model.safetensors` or a sharded checkpoint
    /// (`model.safetensors.index.json`); see [`Gpt2::load`].
    ///
    /// ```
    /// use gpt2::Gpt2;
    /// # let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/tiny");
    /// let model = Gpt2::from_pretrained(dir.to_str().unwrap())?; // a path works too
    /// assert_eq!(model.config().n_layer, 2);
    /// let err = Gpt2::from_pretrained("some-org/not-downloaded").unwrap_err();
    /// assert!(matches!(err, gpt2::Error::ModelNotFound { .. }));
    /// # Ok::<(), gpt2::Error>(())
    /// ```
    pub fn from_pretrained(name: &str) -> Result<Self> {
        Self::load(resolve(name)?)
    }

    /// [`Gpt2::from_pretrained`] with load options (weight dtype).
    pub fn from_pretrained_with(name: &str, opts: &LoadOptions) -> Result<Self> {
        Self::load_with(resolve(name)?, opts)
    }
}

/// Where the default model is: the directory named by `$GPT2_MODEL_DIR` when set; else this
/// crate's bundled Shakespeare model (`fixtures/model/`) when the program runs from a checkout of
/// the crate (found next to the running executable, e.g. `target/release/examples/…`, or above
/// the current directory); else `openai-community/gpt2` in the Hugging Face cache.
///
/// The bundled model is not part of the published package. Errors: [`Error::ModelNotFound`]
/// saying how to get a model.
///
/// ```no_run
/// let model = gpt2::Gpt2::load(gpt2::default_model_dir()?)?;
/// # Ok::<(), gpt2::Error>(())
/// ```
pub fn default_model_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(MODEL_DIR_ENV).filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        if !dir.exists() {
            return Err(Error::ModelNotFound {
                name: dir.display().to_string(),
                reason: format!("{MODEL_DIR_ENV} names a path that does not exist"),
            });
        }
        return Ok(dir);
    }
    if let Some(dir) =
        checkout_file(Path::new("fixtures/model/model.safetensors")).and_then(|f| f.parent().map(Path::to_path_buf))
    {
        return Ok(dir);
    }
    let cached = HubCache::from_env().map(|c| c.snapshot(DEFAULT_HUB_ID, "main"));
    match cached {
        Some(Ok(dir)) => Ok(dir),
        _ => Err(Error::ModelNotFound {
            name: "the default model".into(),
            reason: format!(
                "{MODEL_DIR_ENV} is not set, this program does not run from a checkout of the gpt2 crate (which \
                 bundles fixtures/model/), and {DEFAULT_HUB_ID} is not in the Hugging Face cache; set \
                 {MODEL_DIR_ENV}=DIR or {}",
                download_hint(DEFAULT_HUB_ID)
            ),
        }),
    }
}

/// Loads the default model ([`default_model_dir`]).
pub fn default_model() -> Result<Gpt2> {
    Gpt2::load(default_model_dir()?)
}

/// `rel` inside a checkout of this crate: searched in the ancestors of the running executable
/// and of the current directory, in a directory whose `Cargo.toml` declares this package.
pub(crate) fn checkout_file(rel: &Path) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok();
    let cwd = std::env::current_dir().ok();
    let starts = exe.iter().chain(cwd.iter());
    for start in starts {
        for dir in start.ancestors() {
            let candidate = dir.join(rel);
            if candidate.is_file() && is_this_crate(&dir.join("Cargo.toml")) {
                return Some(candidate);
            }
        }
    }
    None
}

fn is_this_crate(manifest: &Path) -> bool {
    std::fs::read_to_string(manifest).is_ok_and(|s| s.contains(&format!("name = \"{}\"", env!("CARGO_PKG_NAME"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_revisions_are_checked() {
        for id in ["openai-community/gpt2", "gpt2", "a.b/c_d-e"] {
            check_repo_id(id).unwrap();
        }
        for id in ["", "a/b/c", "../x", "a/..", "-a/b", "a//b", "a b", "/abs", "a/b--c"] {
            assert!(check_repo_id(id).is_err(), "{id}");
        }
        for rev in ["main", "v1.0", "0123abcd"] {
            check_revision(rev).unwrap();
        }
        for rev in ["", "..", "a/b", "x\n"] {
            assert!(check_revision(rev).is_err(), "{rev:?}");
        }
        assert_eq!(split_revision("a/b@v2"), ("a/b", "v2"));
        assert_eq!(split_revision("a/b"), ("a/b", "main"));
    }
}
