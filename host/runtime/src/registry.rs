//! The one registry the loop reads: plugins of eight kinds by name, whether
//! they came from a library or were registered in-process, plus a record of
//! every plugin that was refused. No name is ever silently shadowed.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;
use std::path::PathBuf;
use std::sync::Arc;

use rustc_hash::FxHasher;
use serde::Serialize;
use zu_plugin_api::events as ev;
use zu_plugin_api::ports::{self, Envelope};
use zu_plugin_api::version::Kind;

use crate::error::LoadError;

macro_rules! plugin_object {
    ($($(#[$doc:meta])* $Kind:ident { name: $name:ident, object: $Object:ident, getter: $getter:ident, version: $v:literal,
        port: $port:ident, $($rest:tt)* }),* $(,)?) => {
        /// A live plugin instance, typed by kind: the port trait of its kind.
        #[derive(Clone)]
        pub enum PluginObject {
            $($(#[$doc])* $Object(Arc<dyn ports::$port>),)*
        }

        impl PluginObject {
            /// The kind this object implements.
            pub fn kind(&self) -> Kind {
                match self {
                    $(PluginObject::$Object(_) => Kind::$Kind,)*
                }
            }
        }

        impl Registry {
            $(
                #[doc = concat!("The `", stringify!($port), "` registered under `name`, if any.")]
                pub fn $getter(&self, name: &str) -> Option<Arc<dyn ports::$port>> {
                    match &self.get(Kind::$Kind, name)?.object {
                        PluginObject::$Object(o) => Some(o.clone()),
                        _ => None,
                    }
                }
            )*
        }
    };
}

zu_plugin_api::__for_each_kind!(plugin_object);

/// What the registry knows about a plugin besides the object itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PluginInfo {
    /// Its kind.
    pub kind: Kind,
    /// Its registry name.
    pub name: String,
    /// The library it came from; `None` for in-process plugins.
    pub library: Option<PathBuf>,
    /// The interface version of its kind it was built against.
    pub interface_version: String,
    /// Its tool tier.
    pub tier: u32,
    /// Its capability tokens.
    pub capabilities: Vec<String>,
    /// Its egress hosts (`*` = open).
    pub egress: Vec<String>,
    /// Its sandbox: `None` when it runs in no sandbox (in zu's process, or
    /// an MCP server reached over HTTP); else the layers its sandbox lacks
    /// on this kernel (empty: every layer enforced).
    #[serde(default)]
    pub sandbox: Option<Vec<String>>,
}

impl PluginInfo {
    /// The info of an in-process plugin built against this host's API.
    pub fn native(kind: Kind, name: &str, envelope: Envelope) -> Self {
        PluginInfo {
            kind,
            name: name.to_owned(),
            library: None,
            interface_version: kind.interface_version().to_owned(),
            tier: envelope.tier,
            capabilities: envelope.capabilities.iter().map(|c| (*c).to_owned()).collect(),
            egress: envelope.egress.iter().map(|c| (*c).to_owned()).collect(),
            sandbox: None,
        }
    }

    /// Why `required` containment refuses this plugin, if it does: it runs
    /// in no sandbox, or its sandbox lacks layers (and it is not in
    /// `trusted`, as `KIND.NAME`).
    pub fn containment_gap(&self, trusted: &[String]) -> Option<String> {
        let key = format!("{}.{}", self.kind, self.name);
        match &self.sandbox {
            _ if trusted.contains(&key) => None,
            None => Some(format!(
                "{key} runs in no sandbox (in zu's process or over HTTP); run it in a plugin process, or mark it trusted"
            )),
            Some(missing) if missing.is_empty() => None,
            Some(missing) => Some(format!("{key}: its sandbox lacks {}", missing.join(", "))),
        }
    }

    /// Where the plugin came from: its library path, or `in-process`.
    pub fn origin(&self) -> String {
        origin_of(self.library.as_deref())
    }
}

/// Where a plugin came from: its library path, or `in-process`.
pub fn origin_of(library: Option<&std::path::Path>) -> String {
    library.map_or_else(|| "in-process".to_owned(), |p| p.display().to_string())
}

/// One registered plugin.
#[derive(Clone)]
pub struct Entry {
    /// Its metadata.
    pub info: PluginInfo,
    /// The live instance.
    pub object: PluginObject,
}

/// A plugin (or a whole library) that did not enter the registry, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadFailure {
    /// The file, when the failure came from one.
    pub library: Option<PathBuf>,
    /// The plugin's kind as declared, when the failure is about one plugin.
    pub kind: Option<String>,
    /// The plugin's name, when the failure is about one plugin.
    pub name: Option<String>,
    /// The typed reason.
    pub error: LoadError,
}

/// One kind's plugins by name (hashed: registration and lookup do not
/// compare strings along a tree; listings sort).
type ByName = HashMap<String, Entry, BuildHasherDefault<FxHasher>>;

/// Plugins by kind and name, and the failures met while loading them.
#[derive(Default)]
pub struct Registry {
    items: BTreeMap<Kind, ByName>,
    failures: Vec<LoadFailure>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Adds a plugin. Refuses, with [`LoadError::NameTaken`], a name its kind
    /// already holds. The kind is taken from the object.
    pub fn register(&mut self, info: PluginInfo, object: PluginObject) -> Result<(), LoadError> {
        debug_assert_eq!(info.kind, object.kind());
        self.check_name_free(&info)?;
        tracing::debug!(kind = %info.kind, name = %info.name, origin = %info.origin(), "registered plugin");
        self.items
            .entry(info.kind)
            .or_default()
            .insert(info.name.clone(), Entry { info, object });
        Ok(())
    }

    /// Registers a native Rust plugin (embedding): `registry.register_native(
    /// MyTool::NAME, MyTool::ENVELOPE, PluginObject::Tool(Arc::new(tool)))`.
    pub fn register_native(&mut self, name: &str, envelope: Envelope, object: PluginObject) -> Result<(), LoadError> {
        self.register(PluginInfo::native(object.kind(), name, envelope), object)
    }

    /// `Err(NameTaken)` if `info`'s kind already holds its name;
    /// `Err(ReservedName)` if it is a source zu writes its own events under.
    pub fn check_name_free(&self, info: &PluginInfo) -> Result<(), LoadError> {
        if ev::is_reserved_source(&info.name) {
            return Err(LoadError::ReservedName {
                origin: info.origin(),
                kind: info.kind,
                name: info.name.clone(),
                reserved: ev::RESERVED_SOURCES.join(", "),
            });
        }
        match self.items.get(&info.kind).and_then(|m| m.get(&info.name)) {
            Some(existing) => Err(LoadError::NameTaken {
                origin: info.origin(),
                kind: info.kind,
                name: info.name.clone(),
                first: existing.info.origin(),
            }),
            None => Ok(()),
        }
    }

    /// Records a plugin or library that was refused.
    pub fn record_failure(&mut self, failure: LoadFailure) {
        tracing::debug!(code = failure.error.code(), error = %failure.error, "refused");
        self.failures.push(failure);
    }

    /// Every refusal so far, in the order met.
    pub fn failures(&self) -> &[LoadFailure] {
        &self.failures
    }

    /// The names registered for `kind`, sorted.
    pub fn names(&self, kind: Kind) -> Vec<String> {
        self.entries_of(kind).map(|e| e.info.name.clone()).collect()
    }

    /// The entry for `kind`/`name`.
    pub fn get(&self, kind: Kind, name: &str) -> Option<&Entry> {
        self.items.get(&kind)?.get(name)
    }

    /// Every registered plugin, by kind (registry order) then name.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        Kind::ALL.into_iter().flat_map(|k| self.entries_of(k))
    }

    /// Every registered plugin of one kind, by name.
    pub fn entries_of(&self, kind: Kind) -> impl Iterator<Item = &Entry> {
        let mut entries: Vec<&Entry> = self.items.get(&kind).map_or_else(Vec::new, |m| m.values().collect());
        entries.sort_unstable_by(|a, b| a.info.name.cmp(&b.info.name));
        entries.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zu_plugin_api::prelude::*;

    struct Noop;
    impl Tool for Noop {
        fn call(&self, _: &dyn RunContext, _: JsonObject) -> Result<JsonObject, PluginError> {
            Ok(JsonObject::new())
        }
    }

    #[test]
    fn a_name_zu_writes_its_own_events_under_is_refused_in_any_case() {
        let mut reg = Registry::new();
        for name in ["loop", "Loader", " pipeline ", "HARNESS"] {
            let e = reg
                .register_native(name, Envelope::NONE, PluginObject::Tool(Arc::new(Noop)))
                .unwrap_err();
            assert_eq!(e.code(), "reserved_name", "{name}");
            assert!(e.to_string().contains("rename the plugin"), "{e}");
        }
        assert!(reg.names(Kind::Tools).is_empty());
        reg.register_native("loops", Envelope::NONE, PluginObject::Tool(Arc::new(Noop)))
            .unwrap();
    }

    #[test]
    fn native_registration_is_visible_by_kind_and_name() {
        let mut reg = Registry::new();
        reg.register_native("noop", Envelope::NONE, PluginObject::Tool(Arc::new(Noop)))
            .unwrap();
        assert_eq!(reg.names(Kind::Tools), vec!["noop"]);
        assert!(reg.tool("noop").is_some());
        assert!(reg.detector("noop").is_none());
        assert!(reg.names(Kind::Detectors).is_empty());
        let info = &reg.get(Kind::Tools, "noop").unwrap().info;
        assert_eq!(info.interface_version, Kind::Tools.interface_version());
        assert_eq!(info.origin(), "in-process");
    }

    #[test]
    fn listings_are_by_kind_then_name_whatever_the_registration_order() {
        struct NoVerdict;
        impl zu_plugin_api::ports::Validator for NoVerdict {
            fn check(
                &self,
                _: &zu_plugin_api::contracts::RunResult,
                _: &dyn RunContext,
            ) -> Result<Option<zu_plugin_api::ports::Verdict>, PluginError> {
                Ok(None)
            }
        }
        let mut reg = Registry::new();
        for name in ["m", "z", "a", "q"] {
            reg.register_native(name, Envelope::NONE, PluginObject::Tool(Arc::new(Noop)))
                .unwrap();
        }
        reg.register_native("v", Envelope::NONE, PluginObject::Validator(Arc::new(NoVerdict)))
            .unwrap();
        assert_eq!(reg.names(Kind::Tools), ["a", "m", "q", "z"]);
        let listed: Vec<(Kind, &str)> = reg.entries().map(|e| (e.info.kind, e.info.name.as_str())).collect();
        let mut expected: Vec<(Kind, &str)> = ["a", "m", "q", "z"].map(|n| (Kind::Tools, n)).to_vec();
        expected.push((Kind::Validators, "v"));
        expected.sort_by_key(|(k, _)| Kind::ALL.iter().position(|x| x == k));
        assert_eq!(listed, expected);
    }

    #[test]
    fn a_second_plugin_with_the_same_name_is_refused_not_shadowing() {
        let mut reg = Registry::new();
        reg.register_native("noop", Envelope::NONE, PluginObject::Tool(Arc::new(Noop)))
            .unwrap();
        let err = reg
            .register_native("noop", Envelope::NONE, PluginObject::Tool(Arc::new(Noop)))
            .unwrap_err();
        assert_eq!(err.code(), "name_taken");
        assert_eq!(reg.names(Kind::Tools).len(), 1);
    }
}
