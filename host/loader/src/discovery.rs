//! Finding plugin libraries: which directories to scan (and, when there are
//! none, where zu looked), and which files in them are candidates (by
//! platform extension, sorted).

use std::env;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::error::LoaderError;

/// The environment variable listing plugin directories, colon-separated.
pub const PLUGIN_PATH_ENV: &str = "ZU_PLUGIN_PATH";

/// The shared-library extension of this platform (`so`, `dylib`, `dll`).
pub const LIBRARY_EXTENSION: &str = env::consts::DLL_EXTENSION;

/// Where the plugin directories came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirSource {
    /// Given explicitly (`--plugins`, a config file).
    Given,
    /// The `ZU_PLUGIN_PATH` environment variable.
    Env,
    /// The default directory, which exists.
    Default,
    /// None: nothing given, `ZU_PLUGIN_PATH` unset, and the default directory
    /// (if `HOME` is set) missing.
    Nowhere {
        /// The default directory that was looked for.
        default: Option<PathBuf>,
    },
}

/// The directories to scan and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDirs {
    /// The directories, in scan order.
    pub dirs: Vec<PathBuf>,
    /// Where they came from.
    pub source: DirSource,
}

impl PluginDirs {
    /// When no directory was found: where zu looked and how to point it at
    /// one, for a message to the user.
    pub fn nowhere_hint(&self) -> Option<String> {
        let DirSource::Nowhere { default } = &self.source else {
            return None;
        };
        let default = match default {
            Some(d) => format!("the default directory {} does not exist", d.display()),
            None => "HOME is unset, so there is no default directory".to_owned(),
        };
        Some(format!(
            "no plugin directory: none was given, {PLUGIN_PATH_ENV} is unset, and {default}; \
             point zu at the directory holding your plugin libraries with --plugins DIR \
             (or {PLUGIN_PATH_ENV}=DIR[:DIR...])"
        ))
    }
}

/// The directories to scan: the given ones if any, else `ZU_PLUGIN_PATH`,
/// else the default directory (`$HOME/.local/share/zu/plugins`) if it exists.
pub fn plugin_dirs(given: &[PathBuf]) -> PluginDirs {
    if !given.is_empty() {
        return PluginDirs {
            dirs: given.to_vec(),
            source: DirSource::Given,
        };
    }
    if let Some(path) = env::var_os(PLUGIN_PATH_ENV) {
        return PluginDirs {
            dirs: env::split_paths(&path).filter(|p| !p.as_os_str().is_empty()).collect(),
            source: DirSource::Env,
        };
    }
    match default_dir() {
        Some(d) if d.is_dir() => PluginDirs {
            dirs: vec![d],
            source: DirSource::Default,
        },
        default => PluginDirs {
            dirs: Vec::new(),
            source: DirSource::Nowhere { default },
        },
    }
}

/// `$HOME/.local/share/zu/plugins`.
pub fn default_dir() -> Option<PathBuf> {
    env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share/zu/plugins"))
}

/// The candidate library files of one directory, sorted by path. Files with
/// another extension and subdirectories are skipped.
pub fn candidates(dir: &Path) -> Result<Vec<PathBuf>, LoaderError> {
    let read = std::fs::read_dir(dir).map_err(|source| LoaderError::PluginDir {
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

#[cfg(all(test, unix))]
mod tests {
    use super::*;

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
    fn missing_directory_is_a_host_error() {
        let err = candidates(Path::new("/nonexistent/zu-plugins")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/zu-plugins"));
    }
}
