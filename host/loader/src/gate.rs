//! The gate every candidate passes before anything opens it: only a regular
//! file (a FIFO would block the host, a device or socket is not a library),
//! at one real path, that only its owner may write, in a directory (and, for
//! a symlink, a target directory) that only its owner may write.

use std::path::{Path, PathBuf};

use zu_runtime::LoadError;

use crate::permissions;

/// What kind of non-regular file `meta` describes.
fn what(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}

/// The candidate's real path, if it may be opened; else why not. A path
/// that cannot be resolved (a dangling symlink) is returned as given, for
/// the loader to report when it fails to open it.
pub fn pass(path: &Path) -> Result<PathBuf, LoadError> {
    let real = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    if let Ok(meta) = std::fs::metadata(&real) {
        if !meta.is_file() {
            return Err(LoadError::NotARegularFile {
                path: path.to_owned(),
                what: what(&meta).to_owned(),
            });
        }
    }
    permissions::check(&real)?;
    if let Some(dir) = real.parent().filter(|d| Some(*d) != path.parent()) {
        permissions::check(dir)?; // where a symlink really points
    }
    Ok(real)
}
