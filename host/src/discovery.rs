//! Finding plugin libraries: which directories to scan, which files in them
//! are candidates (by platform extension, sorted), and the permission rule
//! that refuses files or directories others may write.

use std::env;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::error::{HostError, LoadError};

/// The environment variable listing plugin directories, colon-separated.
pub const PLUGIN_PATH_ENV: &str = "ZU_PLUGIN_PATH";

/// The shared-library extension of this platform (`so`, `dylib`, `dll`).
pub const LIBRARY_EXTENSION: &str = env::consts::DLL_EXTENSION;

/// The directories to scan: the given ones if any, else `ZU_PLUGIN_PATH`,
/// else the default directory (`$HOME/.local/share/zu/plugins`) if it exists.
pub fn plugin_dirs(given: &[PathBuf]) -> Vec<PathBuf> {
    if !given.is_empty() {
        return given.to_vec();
    }
    if let Some(path) = env::var_os(PLUGIN_PATH_ENV) {
        return env::split_paths(&path).filter(|p| !p.as_os_str().is_empty()).collect();
    }
    default_dir().filter(|d| d.is_dir()).into_iter().collect()
}

/// `$HOME/.local/share/zu/plugins`.
pub fn default_dir() -> Option<PathBuf> {
    env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share/zu/plugins"))
}

/// The candidate library files of one directory, sorted by path. Files with
/// another extension and subdirectories are skipped.
pub fn candidates(dir: &Path) -> Result<Vec<PathBuf>, HostError> {
    let read = std::fs::read_dir(dir).map_err(|source| HostError::PluginDir {
        path: dir.to_owned(),
        source,
    })?;
    let mut files: Vec<PathBuf> = read
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension() == Some(OsStr::new(LIBRARY_EXTENSION)))
        .filter(|p| {
            let keep = !p.is_dir();
            if !keep {
                tracing::debug!(path = %p.display(), "skipping directory with a library extension");
            }
            keep
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Refuses a path (file or directory) that users other than its owner may
/// write: anyone who can write it can make the host run their code.
#[cfg(unix)]
pub fn check_permissions(path: &Path) -> Result<(), LoadError> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(()); // a missing file is reported by the loader instead
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(LoadError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Permission bits are not checked on this platform.
#[cfg(not(unix))]
pub fn check_permissions(_path: &Path) -> Result<(), LoadError> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn candidates_are_sorted_and_filtered_by_extension() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b", "a", "c"] {
            std::fs::write(dir.path().join(format!("{name}.{LIBRARY_EXTENSION}")), b"").unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), b"").unwrap();
        let names: Vec<_> = candidates(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn group_or_world_writable_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.so");
        std::fs::write(&f, b"").unwrap();
        for (mode, ok) in [(0o644, true), (0o664, false), (0o646, false), (0o755, true)] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(check_permissions(&f).is_ok(), ok, "mode {mode:o}");
        }
    }

    #[test]
    fn missing_directory_is_a_host_error() {
        let err = candidates(Path::new("/nonexistent/zu-plugins")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/zu-plugins"));
    }
}
