//! The per-plugin checks that need no plugin code: the semver caret rule on a
//! declared interface version, and abi_stable's layout comparison of the
//! kind's FFI object (cached per layout), boiled down to one readable fact.

use std::collections::HashSet;

use abi_stable::abi_stability::abi_checking::{check_layout_compatibility, AbiInstabilityErrors};
use abi_stable::type_layout::TypeLayout;
use abi_stable::StableAbi;
use zu_plugin_api::version::Kind;

/// Why a declared interface version is refused.
pub(crate) enum VersionCheck {
    /// Not a semantic version; the parser's reason.
    Invalid(String),
    /// A version this host does not provide.
    Incompatible,
}

/// The caret rule: a plugin built against `P` runs on a host providing `H`
/// when `H` matches `^P` (same major and `H >= P`; on `0.y`, the same minor).
pub(crate) fn check_interface_version(kind: Kind, declared: &str) -> Result<(), VersionCheck> {
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

macro_rules! host_layouts {
    ($($(#[$doc:meta])* $Kind:ident { name: $name:ident, $($rest:tt)* }),* $(,)?) => {
        /// The layout of `kind`'s FFI object as this host compiled it.
        pub(crate) fn host_layout(kind: Kind) -> &'static TypeLayout {
            match kind {
                $(Kind::$Kind => <zu_plugin_api::ffi::kind::$name::Object as StableAbi>::LAYOUT,)*
            }
        }
    };
}

zu_plugin_api::__for_each_kind!(host_layouts);

/// Layout comparisons that passed, by kind and the plugin's layout address
/// (a comparison costs ~0.2 ms and abi_stable does not cache it).
#[derive(Default)]
pub(crate) struct LayoutCache(HashSet<(Kind, usize)>);

impl LayoutCache {
    /// Compares the plugin's layout of the kind's FFI object with the host's.
    pub(crate) fn check(&mut self, kind: Kind, plugin: &'static TypeLayout) -> Result<(), String> {
        let key = (kind, plugin as *const TypeLayout as usize);
        if self.0.contains(&key) {
            return Ok(());
        }
        check_layout_compatibility(host_layout(kind), plugin).map_err(|e| short_layout_error(&e))?;
        self.0.insert(key);
        Ok(())
    }
}

/// The first non-blank line of a message.
pub(crate) fn first_line(s: &str) -> String {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_owned()
}

/// Boils abi_stable's layout report (kilobytes) down to its first fact:
/// "at PATH: WHAT: expected X, found Y". The full report goes to the debug log.
pub(crate) fn short_layout_error(errors: &AbiInstabilityErrors) -> String {
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
        assert_eq!(Kind::Tools.interface_version(), "1.0.0");
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
}
