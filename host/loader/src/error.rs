//! What stops the loader as a whole (as opposed to one plugin, which is a
//! `LoadFailure` in the registry): a directory or library path that is not there.

use std::path::PathBuf;

/// Bad input to the loader itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoaderError {
    /// A plugin directory that cannot be read.
    ///
    /// ## Resolution
    /// Check the path given with `--plugins` or `ZU_PLUGIN_PATH`.
    #[error("cannot read plugin directory {}: {source}", path.display())]
    PluginDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A library path that does not exist.
    #[error("no plugin library at {}", path.display())]
    MissingLibrary {
        /// The path given.
        path: PathBuf,
    },
}
