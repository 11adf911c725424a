//! Opening one library file: the only code in Zu that maps a plugin library
//! into the process. By path (never by root-module type), then the root
//! module's layout, its `unwinds` flag, and its declaration list.

use std::path::Path;

use abi_stable::abi_stability::abi_checking::check_layout_compatibility;
use abi_stable::library::{lib_header_from_path, LibraryError};
use abi_stable::StableAbi;
use zu_plugin_api::ffi::{Declaration, ZuRootModule_Ref};
use zu_runtime::LoadError;

use crate::checks::{first_line, short_layout_error};

/// Opens the library `file` and returns its declarations, or the
/// library-level reason it cannot be trusted; messages name it `path`.
pub(crate) fn declarations(path: &Path, file: &Path) -> Result<Vec<Declaration>, LoadError> {
    let library = path.to_owned();
    let header = lib_header_from_path(file).map_err(|e| match e {
        LibraryError::OpenError { err, .. } => LoadError::NotALibrary {
            library: library.clone(),
            // The loader's message names the file it opened (a private
            // copy in the cache): the user knows it by `path`.
            reason: {
                let copy = file.display().to_string();
                let reason = err.to_string().replace(&format!("{copy}: "), "");
                reason.replace(&copy, &path.display().to_string())
            },
        },
        LibraryError::GetSymbolError { .. } => LoadError::NotAPlugin {
            library: library.clone(),
        },
        other => LoadError::AbiMismatch {
            library: library.clone(),
            detail: first_line(&other.to_string()),
        },
    })?;
    let abi_mismatch = |detail: String| LoadError::AbiMismatch {
        library: library.clone(),
        detail,
    };
    match header.layout() {
        Some(layout) => check_layout_compatibility(<ZuRootModule_Ref as StableAbi>::LAYOUT, layout)
            .map_err(|e| abi_mismatch(short_layout_error(&e)))?,
        None => {
            return Err(abi_mismatch(
                "the library exports no root-module layout to check".into(),
            ))
        }
    }
    // SAFETY: the root module's layout was checked just above.
    let module = unsafe { header.init_root_module_with_unchecked_layout::<ZuRootModule_Ref>() }
        .map_err(|e| abi_mismatch(first_line(&e.to_string())))?;
    if !module.unwinds() {
        return Err(LoadError::AbortsOnPanic { library });
    }
    tracing::debug!(api_version = %module.api_version(), "opened root module");
    let declarations = (module.declarations())()
        .into_result()
        .map_err(|e| abi_mismatch(format!("its declaration list failed: {}", e.message)))?;
    Ok(declarations.into_vec())
}
