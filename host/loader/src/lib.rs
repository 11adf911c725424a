//! Zu's plugin loader: finds plugin libraries ([`discovery`]), lets through
//! only regular files only their owner may write ([`gate`]), gets each
//! library's [`verdict`] — from a probe child under a deadline ([`probe`])
//! or the [`cache`] — and admits its plugins into a `zu_runtime::Registry`,
//! each constructed under a deadline in the host or in the library's own
//! process ([`isolate`]). Every refusal is a `LoadFailure`; loading never
//! returns early on a bad file.
//!
//! [`Loader::new`] trusts what it loads (an embedder's own plugins: no
//! probe, in the host); [`Loader::protected`] is what `zu` uses.
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

pub mod cache;
mod checks;
pub mod discovery;
mod error;
pub mod gate;
pub mod guard;
pub mod isolate;
mod library;
pub mod permissions;
pub mod pipe;
pub mod probe;
mod protect;
pub mod sandbox;
pub mod verdict;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use zu_plugin_api::ffi::{Declaration, FfiKind};
use zu_plugin_api::ports::PluginError;
use zu_plugin_api::version::Kind;
use zu_runtime::registry::origin_of;
use zu_runtime::{LoadError, LoadFailure, PluginInfo, PluginObject, Registry};

use checks::LayoutCache;
pub use error::LoaderError;
pub use protect::{Isolation, Protection};
use sandbox::Policy;
use verdict::Verdict;

/// Loads plugin libraries into a [`Registry`], with per-plugin configs.
pub struct Loader {
    configs: HashMap<(Kind, String), Value>,
    seen: HashSet<PathBuf>,
    layouts: LayoutCache,
    protection: Option<protect::Protected>,
    construct_timeout: Duration,
}

impl Default for Loader {
    fn default() -> Self {
        Loader::new()
    }
}

/// What one library contributed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LibraryReport {
    /// `(kind, name)` of each plugin that entered the registry.
    pub loaded: Vec<(Kind, String)>,
    /// How many failures were recorded for the library.
    pub failed: usize,
}

/// A library that passed the gate: its path as given and its real path.
struct Candidate {
    path: PathBuf,
    real: PathBuf,
}

/// A library's verdict and the file to open for it.
struct Judged {
    verdict: Verdict,
    /// What the host or the plugin process opens: the private copy, or
    /// (unprotected) the library itself.
    file: PathBuf,
    /// The declarations, when the library is already open in this process.
    opened: Option<&'static [Declaration]>,
    from_cache: bool,
}

fn failure(library: &Path, kind: Option<&str>, name: Option<&str>, error: LoadError) -> LoadFailure {
    LoadFailure {
        library: Some(library.to_owned()),
        kind: kind.map(String::from),
        name: name.map(String::from),
        error,
    }
}

impl Loader {
    /// A loader that trusts what it loads: each library is opened in this
    /// process without a probe, and its plugins run here (an embedder's own
    /// plugins, tests). Every plugin gets `null` config until set.
    pub fn new() -> Self {
        Loader {
            configs: HashMap::new(),
            seen: HashSet::new(),
            layouts: LayoutCache::default(),
            protection: None,
            construct_timeout: probe::DEFAULT_TIMEOUT,
        }
    }

    /// A loader that opens nothing before a probe vouched for it, keeps
    /// verdicts in a cache, loads private copies, and runs each plugin in the
    /// host or in its library's process as `protection` says.
    pub fn protected(protection: Protection) -> Self {
        let construct_timeout = protection.probe_timeout;
        Loader {
            protection: Some(protect::Protected::new(protection)),
            construct_timeout,
            ..Loader::new()
        }
    }

    /// Forgets every cached verdict (`zu plugins --rescan`).
    pub fn forget_verdicts(&mut self) -> std::io::Result<()> {
        match &mut self.protection {
            Some(p) => p.forget(),
            None => Ok(()),
        }
    }

    /// Sets the JSON config passed to the constructor of `kind`/`name`.
    pub fn set_config(&mut self, kind: Kind, name: &str, config: Value) {
        self.configs.insert((kind, name.to_owned()), config);
    }

    /// Scans every directory in order (each one's files sorted) and loads
    /// every candidate library; one probe serves them all.
    pub fn load_dirs(&mut self, registry: &mut Registry, dirs: &[PathBuf]) -> Result<(), LoaderError> {
        let mut candidates = Vec::new();
        for dir in dirs {
            let files = discovery::candidates(dir)?;
            if let Err(error) = permissions::check(dir) {
                registry.record_failure(failure(dir, None, None, error));
                continue;
            }
            candidates.extend(files.iter().filter_map(|f| self.pass_gate(registry, f)));
        }
        self.load_candidates(registry, candidates);
        Ok(())
    }

    /// Discovery alone: the verdict of every candidate library of `dirs`
    /// (from the cache, or a probe), constructing nothing. Refusals at the
    /// gate are verdicts too.
    pub fn survey(&mut self, dirs: &[PathBuf]) -> Result<Vec<(PathBuf, Verdict)>, LoaderError> {
        let mut scratch = Registry::new();
        let mut candidates = Vec::new();
        for dir in dirs {
            candidates.extend(
                discovery::candidates(dir)?
                    .iter()
                    .filter_map(|f| self.pass_gate(&mut scratch, f)),
            );
        }
        let judged: Vec<Verdict> = match &mut self.protection {
            Some(p) => p.judge(&candidates).into_iter().map(|j| j.verdict).collect(),
            None => candidates
                .iter()
                .map(|c| verdict::examine(&mut self.layouts, &c.real, &c.path).0)
                .collect(),
        };
        let mut out: Vec<(PathBuf, Verdict)> = scratch
            .failures()
            .iter()
            .filter_map(|f| Some((f.library.clone()?, Verdict::Refused(f.error.clone()))))
            .collect();
        out.extend(candidates.into_iter().map(|c| c.path).zip(judged));
        Ok(out)
    }

    /// Loads every candidate library of one directory, in sorted order. A
    /// directory others may write is refused whole.
    pub fn load_dir(&mut self, registry: &mut Registry, dir: &Path) -> Result<(), LoaderError> {
        self.load_dirs(registry, &[dir.to_owned()])
    }

    /// Loads one library file; every refusal is recorded in `registry`.
    pub fn load_file(&mut self, registry: &mut Registry, path: &Path) -> LibraryReport {
        let before = (registry.failures().len(), registry.entries().count());
        if let Some(c) = self.pass_gate(registry, path) {
            self.load_candidates(registry, vec![c]);
        }
        let mut report = LibraryReport {
            failed: registry.failures().len() - before.0,
            ..LibraryReport::default()
        };
        report.loaded = registry
            .entries()
            .filter(|e| e.info.library.as_deref() == Some(path))
            .map(|e| (e.info.kind, e.info.name.clone()))
            .collect();
        report
    }

    /// Dedupes by real path and applies the gate; a refusal is recorded.
    fn pass_gate(&mut self, registry: &mut Registry, path: &Path) -> Option<Candidate> {
        match gate::pass(path) {
            Ok(real) => {
                if !self.seen.insert(real.clone()) {
                    tracing::debug!(library = %path.display(), real = %real.display(), "already loaded; skipping");
                    return None;
                }
                Some(Candidate {
                    path: path.to_owned(),
                    real,
                })
            }
            Err(error) => {
                registry.record_failure(failure(path, None, None, error));
                None
            }
        }
    }

    fn load_candidates(&mut self, registry: &mut Registry, candidates: Vec<Candidate>) {
        let judged: Vec<Judged> = match &mut self.protection {
            Some(p) => p.judge(&candidates),
            None => candidates
                .iter()
                .map(|c| {
                    let (verdict, declarations) = verdict::examine(&mut self.layouts, &c.real, &c.path);
                    Judged {
                        verdict,
                        file: c.real.clone(),
                        opened: Some(Box::leak(declarations.into_boxed_slice())),
                        from_cache: false,
                    }
                })
                .collect(),
        };
        for (candidate, judged) in candidates.iter().zip(judged) {
            let _span = tracing::debug_span!("load_library", library = %candidate.path.display()).entered();
            self.admit_library(registry, &candidate.path, judged);
        }
    }

    /// Acts on one library's verdict: records its refusals and constructs
    /// and registers each admitted plugin in its isolation mode.
    fn admit_library(&mut self, registry: &mut Registry, path: &Path, mut judged: Judged) {
        let verdict = std::mem::replace(&mut judged.verdict, Verdict::Plugins(Vec::new()));
        let plugins = match verdict {
            Verdict::Refused(e) => {
                let e = if judged.from_cache && e.quarantines() {
                    e.as_quarantined()
                } else {
                    e
                };
                registry.record_failure(failure(path, None, None, e));
                return;
            }
            Verdict::Plugins(plugins) => plugins,
        };
        // One process per sandbox: plugins with different policies never share one.
        let mut supervisors: HashMap<Policy, Arc<isolate::Supervisor>> = HashMap::new();
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let protected = self
            .protection
            .as_ref()
            .map(|p| p.protected_paths(path))
            .unwrap_or_default();
        for declared in plugins {
            let mut info = match declared.outcome {
                Ok(info) => info,
                Err(e) => {
                    registry.record_failure(failure(path, Some(&declared.kind), Some(&declared.name), e));
                    continue;
                }
            };
            let (kind, name) = (info.kind, info.name.clone());
            let admitted = registry.check_name_free(&info).and_then(|()| {
                // `null` tells the plugin it was given no config (see `Plugin::new`).
                let config = self.configs.get(&(kind, name.clone())).cloned().unwrap_or(Value::Null);
                match self.isolation_of(kind, &name) {
                    Isolation::InProcess => self.construct_here(path, &mut judged, &info, config),
                    Isolation::Process => {
                        let p = self
                            .protection
                            .as_ref()
                            .expect("process isolation is only set when protected");
                        let policy =
                            p.policy(&info, &config, &cwd, &protected)
                                .map_err(|e| LoadError::GrantTooWide {
                                    origin: path.display().to_string(),
                                    kind,
                                    name: name.clone(),
                                    message: e.to_string(),
                                })?;
                        let sup = supervisors
                            .entry(policy.clone())
                            .or_insert_with(|| p.supervisor(&judged.file, path, policy));
                        sup.construct(kind, &name, &config)?;
                        // Judged here from what this kernel offers; the process's
                        // own report (its library ran first) can only add to it.
                        let (policy, applied) = sup.sandbox();
                        let mut missing = match &policy {
                            Some(policy) => policy.missing_here(),
                            None => vec!["every layer (the sandbox is off)".to_owned()],
                        };
                        match applied {
                            Some(a) => missing.extend(a.missing().into_iter().map(str::to_owned)),
                            None => missing.push("every layer (no report)".to_owned()),
                        }
                        missing.sort();
                        missing.dedup();
                        info.sandbox = Some(missing);
                        Ok(isolate::remote::object(sup.clone(), kind, &name))
                    }
                }
            });
            match admitted.and_then(|object| registry.register(info, object)) {
                Ok(()) => {}
                Err(e) => registry.record_failure(failure(path, Some(kind.as_str()), Some(&name), e)),
            }
        }
    }

    fn isolation_of(&self, kind: Kind, name: &str) -> Isolation {
        self.protection
            .as_ref()
            .map_or(Isolation::InProcess, |p| p.isolation_of(kind, name))
    }

    /// Constructs a plugin in this process, under the constructor deadline.
    /// A protected loader opens the (probed) private copy here first.
    fn construct_here(
        &mut self,
        path: &Path,
        judged: &mut Judged,
        info: &PluginInfo,
        config: Value,
    ) -> Result<PluginObject, LoadError> {
        let declarations = match judged.opened {
            Some(d) => d,
            None => {
                let (verdict, declarations) = verdict::examine(&mut self.layouts, &judged.file, path);
                if let Verdict::Refused(e) = verdict {
                    return Err(e);
                }
                let leaked: &'static [Declaration] = Box::leak(declarations.into_boxed_slice());
                judged.opened = Some(leaked);
                leaked
            }
        };
        let decl = declarations
            .iter()
            .find(|d| d.kind() == info.kind.as_str() && d.name() == info.name)
            .ok_or_else(|| LoadError::ConstructorFailed {
                origin: path.display().to_string(),
                kind: info.kind,
                name: info.name.clone(),
                message: "the library no longer declares it".into(),
            })?;
        verdict::verify(&mut self.layouts, path, decl)?;
        let kind = info.kind;
        let deadline = Instant::now() + self.construct_timeout;
        let mut runner = zu_runtime::deadline::DeadlineRunner::new();
        let name = info.name.clone();
        let call = move || zu_runtime::deadline::within(deadline, &name, || construct(kind, decl, &config));
        match runner.call(deadline, call) {
            Ok(Ok(object)) => Ok(object),
            Ok(Err(e)) => Err(constructor_error(info, e)),
            Err(zu_runtime::deadline::CallError::TimedOut | zu_runtime::deadline::CallError::Cancelled(_)) => {
                Err(LoadError::ConstructorTimeout {
                    origin: origin_of(info.library.as_deref()),
                    kind,
                    name: info.name.clone(),
                    millis: self.construct_timeout.as_millis() as u64,
                })
            }
            Err(zu_runtime::deadline::CallError::Panicked(m)) => Err(constructor_error(info, PluginError::Panicked(m))),
        }
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

/// A panic in the plugin process's own code while constructing.
pub(crate) fn panicked_while_constructing(
    library: &Path,
    kind: Kind,
    name: &str,
    payload: &(dyn std::any::Any + Send),
) -> LoadError {
    LoadError::ConstructorPanicked {
        origin: library.display().to_string(),
        kind,
        name: name.to_owned(),
        message: zu_plugin_api::ports::panic_message(payload),
    }
}

macro_rules! constructors {
    ($($(#[$doc:meta])* $Kind:ident { name: $name:ident, object: $Object:ident, $($rest:tt)* }),* $(,)?) => {
        /// Calls the constructor of a declaration whose kind and layout were
        /// checked, and imports the object as its kind's port.
        pub(crate) fn construct(kind: Kind, decl: &Declaration, config: &Value) -> Result<PluginObject, PluginError> {
            let config = config.to_string();
            Ok(match kind {
                $(Kind::$Kind => {
                    type Object = zu_plugin_api::ffi::kind::$name::Object;
                    debug_assert_eq!(decl.kind(), Kind::$Kind.as_str());
                    // SAFETY: the caller verified the declaration (`verdict::verify`):
                    // its kind is this kind and its layout is `Object`'s.
                    let object = unsafe { decl.construct::<Object>(&config) }?;
                    PluginObject::$Object(object.import())
                })*
            })
        }
    };
}

zu_plugin_api::__for_each_kind!(constructors);
