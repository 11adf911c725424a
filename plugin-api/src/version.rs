//! The eight plugin kinds and the interface version of each, declared once in
//! [`__for_each_kind!`](crate::__for_each_kind). A plugin records the version
//! of its kind it was compiled against; the host accepts it under the semver
//! caret rule (same major, host minor at least the plugin's).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The one table of plugin kinds. Every place that needs one line per kind —
/// the [`Kind`] enum and its interface versions, the FFI objects, the export
/// macro's arms, the registry's objects and getters, the loader's layout and
/// constructor dispatch, the testing round trips — is generated from it by
/// passing a macro that receives the rows (after any `prefix` tokens given
/// after its name, such as a `$` for a macro that defines a macro):
///
/// `Kind { name, object, getter, version, port, ffi, export, import }`
///
/// - `Kind`: the [`Kind`] variant; `name`: its registry name (`tools`);
/// - `object`/`getter`: the registry's object variant and typed getter;
/// - `version`: the interface version this crate provides;
/// - `port`: the author's trait; `ffi`: its `#[sabi_trait]` object;
/// - `export`: the plugin-side guard that wraps an author's value;
/// - `import`: how the host turns the FFI object into the port trait.
///
/// Adding a kind: a row here, its port trait (`ports.rs`) and its FFI trait
/// with both sides (`ffi/objects.rs`, `ffi/export.rs`, `ffi/import.rs`).
#[doc(hidden)]
#[macro_export]
macro_rules! __for_each_kind {
    ($callback:ident $(, $prefix:tt)*) => {
        $callback! {
            $($prefix)*
            /// Model providers (`ModelProvider`).
            Providers { name: providers, object: Provider, getter: provider, version: "1.0.0",
                port: ModelProvider, ffi: ProviderFfi_TO, export: ProviderGuard, import: ImportedProvider::new },
            /// Tools the model may call (`Tool`).
            Tools { name: tools, object: Tool, getter: tool, version: "1.0.0",
                port: Tool, ffi: ToolFfi_TO, export: Guard, import: std::convert::identity },
            /// Observation-time checks (`Detector`).
            Detectors { name: detectors, object: Detector, getter: detector, version: "1.0.0",
                port: Detector, ffi: DetectorFfi_TO, export: Guard, import: std::convert::identity },
            /// On-final checks of the result (`Validator`).
            Validators { name: validators, object: Validator, getter: validator, version: "1.0.0",
                port: Validator, ffi: ValidatorFfi_TO, export: Guard, import: std::convert::identity },
            /// Sandbox backends (`SandboxBackend`).
            Backends { name: backends, object: Backend, getter: backend, version: "1.0.0",
                port: SandboxBackend, ffi: BackendFfi_TO, export: Guard, import: std::convert::identity },
            /// Event sinks (`EventSink`).
            Sinks { name: sinks, object: Sink, getter: sink, version: "1.0.0",
                port: EventSink, ffi: SinkFfi_TO, export: Guard, import: std::convert::identity },
            /// Observation-to-action policies (`Policy`).
            Policies { name: policies, object: Policy, getter: policy, version: "1.0.0",
                port: Policy, ffi: PolicyFfi_TO, export: Guard, import: std::convert::identity },
            /// Inbound triggers that start runs (`Trigger`).
            Triggers { name: triggers, object: Trigger, getter: trigger, version: "1.0.0",
                port: Trigger, ffi: TriggerFfi_TO, export: Guard, import: std::convert::identity },
        }
    };
}

macro_rules! kind_enum {
    ($($(#[$doc:meta])* $Kind:ident { name: $name:ident, noun: $noun:ident, version: $version:literal, }),* $(,)?) => {
        /// The eight kinds of plugin the registry holds. Serialized as its name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Kind {
            $($(#[$doc])* $Kind,)*
        }

        impl Kind {
            /// Every kind, in registry order.
            pub const ALL: [Kind; [$(Kind::$Kind),*].len()] = [$(Kind::$Kind),*];

            /// The kind's registry name (`tools`, `detectors`, ...).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Kind::$Kind => stringify!($name),)*
                }
            }

            /// One plugin of the kind, for messages (`tool`, `provider`, ...).
            pub const fn noun(self) -> &'static str {
                match self {
                    $(Kind::$Kind => stringify!($noun),)*
                }
            }

            /// The interface version of this kind that this crate provides.
            pub const fn interface_version(self) -> &'static str {
                match self {
                    $(Kind::$Kind => $version,)*
                }
            }
        }

        /// Every kind's name, comma-separated, for messages.
        pub const KIND_NAMES: &str = concat!($(stringify!($name), ", "),*);

        /// The interface version table: `(kind, semver)` for every kind.
        pub const INTERFACE_VERSION: [(Kind, &str); Kind::ALL.len()] = [$((Kind::$Kind, $version)),*];
    };
}

/// Reorders a row's fields for [`kind_enum!`]: it needs the name and version.
macro_rules! kind_rows {
    ($($(#[$doc:meta])* $Kind:ident { name: $name:ident, object: $o:ident, getter: $g:ident, version: $version:literal, $($rest:tt)* }),* $(,)?) => {
        kind_enum! { $($(#[$doc])* $Kind { name: $name, noun: $g, version: $version, }),* }
    };
}

crate::__for_each_kind!(kind_rows);

/// The zu-plugin-api version plugins built against this copy of the API
/// report in their root module.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind name that is not one of the eight.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown plugin kind {0:?} (expected one of {kinds})", kinds = KIND_NAMES.trim_end_matches(", "))]
pub struct UnknownKind(pub String);

impl FromStr for Kind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, UnknownKind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in Kind::ALL {
            assert_eq!(k.as_str().parse::<Kind>(), Ok(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert!("gadgets".parse::<Kind>().is_err());
        assert_eq!(Kind::ALL.len(), 8);
    }

    #[test]
    fn table_agrees_with_kind_accessor() {
        for (k, v) in INTERFACE_VERSION {
            assert_eq!(k.interface_version(), v);
            semver::Version::parse(v).unwrap();
        }
        assert!(UnknownKind("x".into()).to_string().ends_with("policies, triggers)"));
    }
}
