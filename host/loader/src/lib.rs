//! Zu's plugin loader: finds plugin libraries ([`discovery`]), refuses files
//! others may write ([`permissions`]), opens each library once by its real
//! path, and admits its plugins one by one into a `zu_runtime::Registry`:
//! kind, semver, layout, name, then the constructor with the plugin's
//! config. Every refusal is a `LoadFailure` in the registry; loading never
//! returns early on a bad file.
//!
//! ```no_run
//! use zu_loader::Loader;
//! use zu_runtime::Registry;
//!
//! let mut registry = Registry::new();
//! Loader::new().load_dir(&mut registry, "plugins".as_ref())?;
//! for failure in registry.failures() {
//!     eprintln!("[{}] {}", failure.error.code(), failure.error);
//! }
//! # Ok::<(), zu_loader::LoaderError>(())
//! ```

mod checks;
pub mod discovery;
mod error;
mod library;
pub mod permissions;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::Value;
use zu_plugin_api::ffi::{Declaration, FfiKind};
use zu_plugin_api::ports::PluginError;
use zu_plugin_api::version::Kind;
use zu_runtime::registry::origin_of;
use zu_runtime::{LoadError, LoadFailure, PluginInfo, PluginObject, Registry};

use checks::{check_interface_version, LayoutCache, VersionCheck};
pub use error::LoaderError;

/// Loads plugin libraries into a [`Registry`], with per-plugin configs.
#[derive(Default)]
pub struct Loader {
    configs: HashMap<(Kind, String), Value>,
    seen: HashSet<PathBuf>,
    layouts: LayoutCache,
}

/// What one library contributed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LibraryReport {
    /// `(kind, name)` of each plugin that entered the registry.
    pub loaded: Vec<(Kind, String)>,
    /// How many failures were recorded for the library.
    pub failed: usize,
}

impl Loader {
    /// A loader with no plugin configs (every plugin gets `null`).
    pub fn new() -> Self {
        Loader::default()
    }

    /// Sets the JSON config passed to the constructor of `kind`/`name`.
    pub fn set_config(&mut self, kind: Kind, name: &str, config: Value) {
        self.configs.insert((kind, name.to_owned()), config);
    }

    /// Scans every directory in order (each one's files sorted) and loads
    /// every candidate library.
    pub fn load_dirs(&mut self, registry: &mut Registry, dirs: &[PathBuf]) -> Result<(), LoaderError> {
        for dir in dirs {
            self.load_dir(registry, dir)?;
        }
        Ok(())
    }

    /// Loads every candidate library of one directory, in sorted order. A
    /// directory others may write is refused whole.
    pub fn load_dir(&mut self, registry: &mut Registry, dir: &Path) -> Result<(), LoaderError> {
        let files = discovery::candidates(dir)?;
        if let Err(error) = permissions::check(dir) {
            registry.record_failure(LoadFailure {
                library: Some(dir.to_owned()),
                kind: None,
                name: None,
                error,
            });
            return Ok(());
        }
        for file in files {
            self.load_file(registry, &file);
        }
        Ok(())
    }

    /// Loads one library file; every refusal is recorded in `registry`.
    pub fn load_file(&mut self, registry: &mut Registry, path: &Path) -> LibraryReport {
        let before = registry.failures().len();
        let mut report = LibraryReport::default();
        let real = path.canonicalize().unwrap_or_else(|_| path.to_owned());
        if !self.seen.insert(real.clone()) {
            tracing::debug!(library = %path.display(), real = %real.display(), "already loaded; skipping");
            return report;
        }
        let _span = tracing::debug_span!("load_library", library = %path.display()).entered();
        match library::declarations(path, &real) {
            Ok(declarations) => {
                for decl in declarations {
                    match self.admit(registry, path, &decl) {
                        Ok(entry) => report.loaded.push(entry),
                        Err(error) => registry.record_failure(LoadFailure {
                            library: Some(path.to_owned()),
                            kind: Some(decl.kind().to_owned()),
                            name: Some(decl.name().to_owned()),
                            error,
                        }),
                    }
                }
            }
            Err(error) => registry.record_failure(LoadFailure {
                library: Some(path.to_owned()),
                kind: None,
                name: None,
                error,
            }),
        }
        report.failed = registry.failures().len() - before;
        report
    }

    /// Runs the per-plugin checks in order and, if all pass, constructs the
    /// plugin and registers it.
    fn admit(&mut self, registry: &mut Registry, path: &Path, decl: &Declaration) -> Result<(Kind, String), LoadError> {
        let library = path.to_owned();
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
        self.layouts
            .check(kind, decl.layout())
            .map_err(|detail| LoadError::LayoutMismatch {
                library: library.clone(),
                kind,
                name: name.clone(),
                detail,
            })?;
        let info = PluginInfo {
            kind,
            name: name.clone(),
            library: Some(library),
            interface_version: decl.interface_version().to_owned(),
            tier: decl.tier(),
            capabilities: decl.capabilities(),
            egress: decl.egress(),
        };
        registry.check_name_free(&info)?;
        // `null` tells the plugin it was given no config (see `Plugin::new`).
        let config = self.configs.get(&(kind, name.clone())).cloned().unwrap_or(Value::Null);
        let object = construct(kind, decl, &config).map_err(|e| constructor_error(&info, e))?;
        registry.register(info, object)?;
        Ok((kind, name))
    }
}

/// A constructor's error as a load error of the right code.
fn constructor_error(info: &PluginInfo, e: PluginError) -> LoadError {
    let (origin, kind, name) = (origin_of(info.library.as_deref()), info.kind, info.name.clone());
    match e {
        PluginError::Panicked(message) => LoadError::ConstructorPanicked {
            origin,
            kind,
            name,
            message,
        },
        other => LoadError::ConstructorFailed {
            origin,
            kind,
            name,
            message: other.to_string(),
        },
    }
}

macro_rules! constructors {
    ($($(#[$doc:meta])* $Kind:ident { name: $name:ident, object: $Object:ident, $($rest:tt)* }),* $(,)?) => {
        /// Calls the constructor of a declaration whose kind and layout were
        /// checked, and imports the object as its kind's port.
        fn construct(kind: Kind, decl: &Declaration, config: &Value) -> Result<PluginObject, PluginError> {
            let config = config.to_string();
            Ok(match kind {
                $(Kind::$Kind => {
                    type Object = zu_plugin_api::ffi::kind::$name::Object;
                    debug_assert_eq!(decl.kind(), Kind::$Kind.as_str());
                    // SAFETY: `admit` parsed the declared kind into this kind
                    // and checked the declaration's layout against `Object`'s.
                    let object = unsafe { decl.construct::<Object>(&config) }?;
                    PluginObject::$Object(object.import())
                })*
            })
        }
    };
}

zu_plugin_api::__for_each_kind!(constructors);
