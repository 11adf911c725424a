//! The eight plugin kinds and the interface version of each. A plugin records
//! the version of its kind it was compiled against; the host accepts it under
//! the semver caret rule (same major, host minor at least the plugin's).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The eight kinds of plugin the registry holds. Serialized as its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Model providers (`ModelProvider`).
    Providers,
    /// Tools the model may call (`Tool`).
    Tools,
    /// Observation-time checks (`Detector`).
    Detectors,
    /// On-final checks of the result (`Validator`).
    Validators,
    /// Sandbox backends (`SandboxBackend`).
    Backends,
    /// Event sinks (`EventSink`).
    Sinks,
    /// Observation-to-action policies (`Policy`).
    Policies,
    /// Inbound triggers that start runs (`Trigger`).
    Triggers,
}

impl Kind {
    /// Every kind, in registry order.
    pub const ALL: [Kind; 8] = [
        Kind::Providers,
        Kind::Tools,
        Kind::Detectors,
        Kind::Validators,
        Kind::Backends,
        Kind::Sinks,
        Kind::Policies,
        Kind::Triggers,
    ];

    /// The kind's registry name (`tools`, `detectors`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Providers => "providers",
            Kind::Tools => "tools",
            Kind::Detectors => "detectors",
            Kind::Validators => "validators",
            Kind::Backends => "backends",
            Kind::Sinks => "sinks",
            Kind::Policies => "policies",
            Kind::Triggers => "triggers",
        }
    }

    /// The interface version of this kind that this crate provides.
    pub const fn interface_version(self) -> &'static str {
        match self {
            Kind::Providers => PROVIDERS,
            Kind::Tools => TOOLS,
            Kind::Detectors => DETECTORS,
            Kind::Validators => VALIDATORS,
            Kind::Backends => BACKENDS,
            Kind::Sinks => SINKS,
            Kind::Policies => POLICIES,
            Kind::Triggers => TRIGGERS,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind name that is not one of the eight.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown plugin kind {0:?} (expected one of providers, tools, detectors, validators, backends, sinks, policies, triggers)")]
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

/// Interface version of `providers`.
pub const PROVIDERS: &str = "1.0.0";
/// Interface version of `tools`.
pub const TOOLS: &str = "1.0.0";
/// Interface version of `detectors`.
pub const DETECTORS: &str = "1.0.0";
/// Interface version of `validators`.
pub const VALIDATORS: &str = "1.0.0";
/// Interface version of `backends`.
pub const BACKENDS: &str = "1.0.0";
/// Interface version of `sinks`.
pub const SINKS: &str = "1.0.0";
/// Interface version of `policies`.
pub const POLICIES: &str = "1.0.0";
/// Interface version of `triggers`.
pub const TRIGGERS: &str = "1.0.0";

/// The interface version table: `(kind, semver)` for every kind.
pub const INTERFACE_VERSION: [(Kind, &str); 8] = [
    (Kind::Providers, PROVIDERS),
    (Kind::Tools, TOOLS),
    (Kind::Detectors, DETECTORS),
    (Kind::Validators, VALIDATORS),
    (Kind::Backends, BACKENDS),
    (Kind::Sinks, SINKS),
    (Kind::Policies, POLICIES),
    (Kind::Triggers, TRIGGERS),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in Kind::ALL {
            assert_eq!(k.as_str().parse::<Kind>(), Ok(k));
        }
        assert!("gadgets".parse::<Kind>().is_err());
    }

    #[test]
    fn table_agrees_with_kind_accessor() {
        for (k, v) in INTERFACE_VERSION {
            assert_eq!(k.interface_version(), v);
        }
    }
}
