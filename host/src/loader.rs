//! Opening plugin libraries and admitting their plugins one by one. A library
//! is opened by path (never by root-module type), at most once per real path;
//! each declaration passes kind, semver, layout and name checks before its
//! constructor is called. Every refusal is recorded; nothing returns early.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use abi_stable::abi_stability::abi_checking::{check_layout_compatibility, AbiInstabilityErrors};
use abi_stable::library::{lib_header_from_path, LibraryError};
use abi_stable::type_layout::TypeLayout;
use abi_stable::StableAbi;
use serde_json::Value;
use zu_plugin_api::ffi::{self, Declaration, FfiKind, ZuRootModule_Ref};
use zu_plugin_api::ports::PluginError;
use zu_plugin_api::version::Kind;

use crate::discovery;
use crate::error::{HostError, LoadError};
use crate::registry::{origin_of, LoadFailure, PluginInfo, PluginObject, Registry};

/// Loads plugin libraries into a [`Registry`], with per-plugin configs.
#[derive(Default)]
pub struct Loader {
    configs: HashMap<(Kind, String), Value>,
    seen: HashSet<PathBuf>,
    checked_layouts: HashSet<(Kind, usize)>,
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
    pub fn load_dirs(&mut self, registry: &mut Registry, dirs: &[PathBuf]) -> Result<(), HostError> {
        for dir in dirs {
            self.load_dir(registry, dir)?;
        }
        Ok(())
    }

    /// Loads every candidate library of one directory, in sorted order. A
    /// directory others may write is refused whole.
    pub fn load_dir(&mut self, registry: &mut Registry, dir: &Path) -> Result<(), HostError> {
        let files = discovery::candidates(dir)?;
        if let Err(error) = discovery::check_permissions(dir) {
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
        match open_root_module(path, &real) {
            Ok(module) => {
                for decl in module.declarations {
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
        self.check_layout(kind, decl.layout())
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

    /// Compares the plugin's layout of the kind's FFI object with the host's;
    /// a layout that passed once is not checked again.
    fn check_layout(&mut self, kind: Kind, plugin: &'static TypeLayout) -> Result<(), String> {
        let key = (kind, plugin as *const TypeLayout as usize);
        if self.checked_layouts.contains(&key) {
            return Ok(());
        }
        check_layout_compatibility(host_layout(kind), plugin).map_err(|e| short_layout_error(&e))?;
        self.checked_layouts.insert(key);
        Ok(())
    }
}

/// A constructor's error as a load error of the right code.
pub(crate) fn constructor_error(info: &PluginInfo, e: PluginError) -> LoadError {
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

struct OpenedLibrary {
    declarations: Vec<Declaration>,
}

/// Opens the library and returns its declarations, or the library-level reason
/// it cannot be trusted.
fn open_root_module(path: &Path, real: &Path) -> Result<OpenedLibrary, LoadError> {
    let library = path.to_owned();
    discovery::check_permissions(real)?;
    if let Some(dir) = real.parent().filter(|d| Some(*d) != path.parent()) {
        discovery::check_permissions(dir)?; // where a symlink really points
    }
    let header = lib_header_from_path(real).map_err(|e| match e {
        LibraryError::OpenError { err, .. } => LoadError::NotALibrary {
            library: library.clone(),
            reason: err.to_string(),
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
    Ok(OpenedLibrary {
        declarations: declarations.into_vec(),
    })
}

enum VersionCheck {
    Invalid(String),
    Incompatible,
}

/// The caret rule: a plugin built against `P` runs on a host providing `H`
/// when `H` matches `^P` (same major and `H >= P`; on `0.y`, the same minor).
fn check_interface_version(kind: Kind, declared: &str) -> Result<(), VersionCheck> {
    let plugin = semver::Version::parse(declared).map_err(|e| VersionCheck::Invalid(e.to_string()))?;
    let host = semver::Version::parse(kind.interface_version()).expect("the host's interface table is valid semver");
    let req = semver::VersionReq {
        comparators: vec![semver::Comparator {
            op: semver::Op::Caret,
            major: plugin.major,
            minor: Some(plugin.minor),
            patch: Some(plugin.patch),
            pre: plugin.pre.clone(),
        }],
    };
    if req.matches(&host) {
        Ok(())
    } else {
        Err(VersionCheck::Incompatible)
    }
}

fn host_layout(kind: Kind) -> &'static TypeLayout {
    match kind {
        Kind::Providers => <ffi::ProviderObject as StableAbi>::LAYOUT,
        Kind::Tools => <ffi::ToolObject as StableAbi>::LAYOUT,
        Kind::Detectors => <ffi::DetectorObject as StableAbi>::LAYOUT,
        Kind::Validators => <ffi::ValidatorObject as StableAbi>::LAYOUT,
        Kind::Backends => <ffi::BackendObject as StableAbi>::LAYOUT,
        Kind::Sinks => <ffi::SinkObject as StableAbi>::LAYOUT,
        Kind::Policies => <ffi::PolicyObject as StableAbi>::LAYOUT,
        Kind::Triggers => <ffi::TriggerObject as StableAbi>::LAYOUT,
    }
}

/// Calls the constructor of a declaration whose kind and layout were checked.
fn construct(kind: Kind, decl: &Declaration, config: &Value) -> Result<PluginObject, PluginError> {
    let config = config.to_string();
    fn typed<O: FfiKind>(decl: &Declaration, config: &str) -> Result<O, PluginError> {
        debug_assert_eq!(decl.kind(), O::KIND.as_str());
        // SAFETY: `admit` parsed the declared kind into `O::KIND` and checked
        // the declaration's layout against `O::LAYOUT` before calling this.
        unsafe { decl.construct::<O>(config) }
    }
    Ok(match kind {
        Kind::Providers => PluginObject::Provider(Arc::new(ffi::ImportedProvider::new(typed::<ffi::ProviderObject>(
            decl, &config,
        )?))),
        Kind::Tools => PluginObject::Tool(Arc::new(typed::<ffi::ToolObject>(decl, &config)?)),
        Kind::Detectors => PluginObject::Detector(Arc::new(typed::<ffi::DetectorObject>(decl, &config)?)),
        Kind::Validators => PluginObject::Validator(Arc::new(typed::<ffi::ValidatorObject>(decl, &config)?)),
        Kind::Backends => PluginObject::Backend(Arc::new(typed::<ffi::BackendObject>(decl, &config)?)),
        Kind::Sinks => PluginObject::Sink(Arc::new(typed::<ffi::SinkObject>(decl, &config)?)),
        Kind::Policies => PluginObject::Policy(Arc::new(typed::<ffi::PolicyObject>(decl, &config)?)),
        Kind::Triggers => PluginObject::Trigger(Arc::new(typed::<ffi::TriggerObject>(decl, &config)?)),
    })
}

fn first_line(s: &str) -> String {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_owned()
}

/// Boils abi_stable's layout report (kilobytes) down to its first fact:
/// "at PATH: WHAT: expected X, found Y". The full report goes to the debug log.
fn short_layout_error(errors: &AbiInstabilityErrors) -> String {
    tracing::debug!(report = %errors, "full layout comparison");
    let Some(first) = errors.errors.iter().find(|e| !e.errs.is_empty()) else {
        return "the layouts differ".to_owned();
    };
    let path: Vec<String> = first
        .stack_trace
        .iter()
        .map(|step| match &step.expected {
            abi_stable::type_layout::TLFieldOrFunction::Field(f) => f.name().to_owned(),
            abi_stable::type_layout::TLFieldOrFunction::Function(f) => f.name.as_str().to_owned(),
        })
        .collect();
    let text = first.to_string();
    let mut lines = text.lines().map(str::trim);
    let what = lines
        .by_ref()
        .find_map(|l| l.strip_prefix("Error:"))
        .map(str::trim)
        .unwrap_or("layouts differ")
        .to_owned();
    let expected = lines
        .by_ref()
        .skip_while(|l| *l != "Expected:")
        .nth(1)
        .unwrap_or("")
        .to_owned();
    let found = lines.skip_while(|l| *l != "Found:").nth(1).unwrap_or("").to_owned();
    let at = if path.is_empty() {
        "the root".to_owned()
    } else {
        path.join(".")
    };
    if expected.is_empty() && found.is_empty() {
        format!("at {at}: {what}")
    } else {
        format!("at {at}: {what}: expected {expected}, found {found}")
    }
}

/// A JSON value given inline or as `@FILE`.
pub fn json_arg(raw: &str) -> Result<Value, String> {
    let text = match raw.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?,
        None => raw.to_owned(),
    };
    serde_json::from_str(&text).map_err(|e| format!("not valid JSON: {e}"))
}

/// Parses `KIND.NAME=JSON`, where JSON may be `@FILE`.
pub fn parse_config_arg(arg: &str) -> Result<(Kind, String, Value), HostError> {
    let bad = |reason: String| HostError::BadConfig {
        given: arg.to_owned(),
        reason,
    };
    let (key, json) = arg.split_once('=').ok_or_else(|| bad("missing '='".into()))?;
    let (kind, name) = key
        .split_once('.')
        .ok_or_else(|| bad(format!("{key:?} is not KIND.NAME")))?;
    let kind: Kind = kind
        .parse()
        .map_err(|e: zu_plugin_api::version::UnknownKind| bad(e.to_string()))?;
    if name.is_empty() {
        return Err(bad("the plugin name is empty".into()));
    }
    Ok((kind, name.to_owned(), json_arg(json).map_err(bad)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(declared: &str) -> &'static str {
        match check_interface_version(Kind::Tools, declared) {
            Ok(()) => "ok",
            Err(VersionCheck::Invalid(_)) => "invalid",
            Err(VersionCheck::Incompatible) => "incompatible",
        }
    }

    #[test]
    fn caret_rule_against_host_tools_1_0_0() {
        assert_eq!(zu_plugin_api::version::TOOLS, "1.0.0");
        assert_eq!(check("1.0.0"), "ok");
        assert_eq!(check("1.1.0"), "incompatible"); // plugin needs a newer minor
        assert_eq!(check("2.0.0"), "incompatible");
        assert_eq!(check("0.9.0"), "incompatible");
        assert_eq!(check("one"), "invalid");
        assert_eq!(check("1.0"), "invalid");
    }

    #[test]
    fn layouts_of_different_kinds_do_not_match_and_the_message_is_short() {
        let err = check_layout_compatibility(host_layout(Kind::Tools), host_layout(Kind::Detectors)).unwrap_err();
        let msg = short_layout_error(&err);
        assert!(msg.starts_with("at "), "{msg}");
        assert!(msg.len() < 400, "{} bytes: {msg}", msg.len());
        assert!(check_layout_compatibility(host_layout(Kind::Tools), host_layout(Kind::Tools)).is_ok());
    }

    #[test]
    fn config_args_parse_and_refuse_clearly() {
        let (k, n, v) = parse_config_arg(r#"tools.file_read={"root": "docs"}"#).unwrap();
        assert_eq!(
            (k, n.as_str(), v["root"].as_str()),
            (Kind::Tools, "file_read", Some("docs"))
        );
        for bad in ["tools.x", "toolsx={}", "gadgets.x={}", "tools.={}", "tools.x={nope"] {
            let err = parse_config_arg(bad).unwrap_err();
            assert!(matches!(err, HostError::BadConfig { .. }), "{bad}");
        }
    }
}
