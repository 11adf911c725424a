//! A library's verdict: what the loader's checks say about it before any of
//! its plugins is constructed — refused whole, or each declared plugin
//! admitted (with what it declares) or refused. A probe child computes it;
//! the verdict cache keeps it; the loader acts on it.

use std::path::Path;

use serde::{Deserialize, Serialize};
use zu_plugin_api::ffi::Declaration;
use zu_plugin_api::version::Kind;
use zu_runtime::{LoadError, PluginInfo};

use crate::checks::{check_interface_version, LayoutCache, VersionCheck};
use crate::library;

/// One declared plugin's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Declared {
    /// The kind as declared.
    pub kind: String,
    /// The name as declared.
    pub name: String,
    /// What it declares, if it passed the checks; else why not.
    pub outcome: Result<PluginInfo, LoadError>,
}

/// A library's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// The library as a whole cannot be trusted.
    Refused(LoadError),
    /// Its plugins, each with its own verdict, in declaration order.
    Plugins(Vec<Declared>),
}

/// The checks of one declaration that need no plugin code: kind, the
/// semver caret rule, the FFI layout. `library` names the file in messages.
pub(crate) fn verify(layouts: &mut LayoutCache, library: &Path, decl: &Declaration) -> Result<PluginInfo, LoadError> {
    let library = library.to_owned();
    let name = decl.name().to_owned();
    let kind: Kind = decl.kind().parse().map_err(|_| LoadError::UnknownKind {
        library: library.clone(),
        kind: decl.kind().to_owned(),
        name: name.clone(),
    })?;
    check_interface_version(kind, decl.interface_version()).map_err(|e| match e {
        VersionCheck::Invalid(reason) => LoadError::InvalidVersion {
            library: library.clone(),
            kind,
            name: name.clone(),
            version: decl.interface_version().to_owned(),
            reason,
        },
        VersionCheck::Incompatible => LoadError::IncompatibleInterface {
            library: library.clone(),
            kind,
            name: name.clone(),
            plugin_version: decl.interface_version().to_owned(),
            host_version: kind.interface_version().to_owned(),
        },
    })?;
    layouts
        .check(kind, decl.layout())
        .map_err(|detail| LoadError::LayoutMismatch {
            library: library.clone(),
            kind,
            name: name.clone(),
            detail,
        })?;
    Ok(PluginInfo {
        kind,
        name,
        library: Some(library),
        interface_version: decl.interface_version().to_owned(),
        tier: decl.tier(),
        capabilities: decl.capabilities(),
        egress: decl.egress(),
        sandbox: None,
    })
}

/// Opens `file` (in this process: a probe child, or a host that trusts it)
/// and gives its verdict, naming it `display` in messages. The declarations
/// come back too, for a caller that goes on to construct plugins.
pub(crate) fn examine(layouts: &mut LayoutCache, file: &Path, display: &Path) -> (Verdict, Vec<Declaration>) {
    match library::declarations(display, file) {
        Err(e) => (Verdict::Refused(e), Vec::new()),
        Ok(declarations) => {
            let plugins = declarations
                .iter()
                .map(|d| Declared {
                    kind: d.kind().to_owned(),
                    name: d.name().to_owned(),
                    outcome: verify(layouts, display, d),
                })
                .collect();
            (Verdict::Plugins(plugins), declarations)
        }
    }
}
