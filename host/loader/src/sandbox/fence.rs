//! What a sandbox keeps out, and paths judged where they lead: the paths a
//! plugin's config names, the protected paths (zu's cache, the plugin
//! directories, the home directory) and the private files (zu.toml, the
//! logs) that no readable directory may hand a plugin.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Absolute paths its config names (string values that are paths that
/// exist, or whose directory exists), resolved against `cwd`.
pub(super) fn config_paths(config: &Value, cwd: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    match config {
        Value::String(s) if looks_like_path(s) => {
            let p = real(&cwd.join(s));
            if p.exists() {
                out.push(p);
            } else if let Some(dir) = p.ancestors().skip(1).find(|d| d.is_dir()) {
                // A file to be made (a new log, in directories to be made): the
                // nearest directory there is, for it and its companions.
                out.push(dir.to_owned());
            }
        }
        Value::Object(map) => map.values().for_each(|v| out.extend(config_paths(v, cwd))),
        Value::Array(items) => items.iter().for_each(|v| out.extend(config_paths(v, cwd))),
        _ => {}
    }
    out
}

/// `path` with `..` and symbolic links resolved — as far as it exists, the
/// rest appended — so that what it is compared with (the protected and
/// private paths, canonical) is what Landlock will be given.
pub fn real(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let mut rest = Vec::new();
    let mut base = path;
    while let Some(parent) = base.parent() {
        rest.push(base.file_name().map(|n| n.to_owned()));
        if let Ok(p) = parent.canonicalize() {
            // What does not exist yet may not climb out either.
            if rest.iter().all(|r| r.is_some()) {
                return rest.into_iter().rev().flatten().fold(p, |acc, n| acc.join(n));
            }
            return p;
        }
        base = parent;
    }
    path.to_owned()
}

/// Whether `dir` is, or holds, one of `protected`.
pub(super) fn holds_any(dir: &Path, protected: &[PathBuf]) -> bool {
    protected.iter().any(|p| p.starts_with(dir))
}

/// What a plugin's sandbox keeps out: `protected` (no plugin writes it, and
/// a working directory holding it is not read by default), the `settings`
/// file (zu.toml: never read; a sink whose log sits beside it writes its
/// directory, which `required` refuses) and other plugins' `logs` (never
/// read, and no directory holding one is written).
pub struct Fence<'a> {
    pub protected: &'a [PathBuf],
    pub settings: &'a [PathBuf],
    pub logs: &'a [PathBuf],
}

/// Whether `path` is one of `private` or a companion beside one (`-wal`,
/// `-shm`, `-journal`: any name that begins with the file's).
pub(super) fn is_private(path: &Path, private: &[PathBuf]) -> bool {
    private.iter().any(|f| {
        path == f
            || (path.parent() == f.parent()
                && path
                    .file_name()
                    .zip(f.file_name())
                    .is_some_and(|(p, f)| p.as_encoded_bytes().starts_with(f.as_encoded_bytes())))
    })
}

/// `path`, or, when it holds a private file, what beside it may be read:
/// the entries of its directories that are not private (down to a few
/// levels; files made there later are not among them).
pub(super) fn readable_except(path: &Path, private: &[PathBuf], depth: usize) -> Vec<PathBuf> {
    if is_private(path, private) {
        return Vec::new();
    }
    if !private.iter().any(|f| f.starts_with(path)) {
        return vec![path.to_owned()];
    }
    if depth == 0 {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| readable_except(&e.path(), private, depth - 1))
        .collect()
}

/// Whether `path` lies inside one of `protected` other than the home
/// directory (the verdict cache, a plugin directory), where nothing is
/// written even by name.
pub(super) fn within_zu(path: &Path, protected: &[PathBuf]) -> bool {
    let home = std::env::var_os("HOME").map(|h| real(Path::new(&h)));
    protected
        .iter()
        .any(|p| Some(p) != home.as_ref() && path.starts_with(p))
}

/// What no plugin may write, and no plugin reads by default: the verdict
/// cache, the plugin directories and the home directory (`zu`'s own files).
pub fn protected_paths(cache: Option<&Path>, plugin_dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = cache.into_iter().map(Path::to_path_buf).collect();
    out.extend(plugin_dirs.iter().cloned());
    out.extend(std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from));
    out.into_iter().map(|p| p.canonicalize().unwrap_or(p)).collect()
}

pub(super) fn looks_like_path(s: &str) -> bool {
    !s.is_empty() && s.len() < 4096 && !s.contains("://") && !s.contains('\n') && (s.contains('/') || s.contains('.'))
}
