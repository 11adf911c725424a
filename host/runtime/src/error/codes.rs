//! The stable codes of [`LoadError`], for scripts and `zu --help`, and
//! what each means for a library's next probe.

use super::LoadError;

impl LoadError {
    /// Every code [`LoadError::code`] answers, in its order (`zu --help`
    /// and the docs list them from here).
    pub const CODES: [&'static str; 22] = [
        "not_a_library",
        "not_a_plugin",
        "abi_mismatch",
        "unknown_kind",
        "invalid_version",
        "incompatible_interface",
        "layout_mismatch",
        "constructor_failed",
        "constructor_panicked",
        "name_taken",
        "reserved_name",
        "grant_too_wide",
        "insecure_permissions",
        "aborts_on_panic",
        "not_a_regular_file",
        "probe_crashed",
        "probe_exited",
        "probe_timeout",
        "probe_garbled",
        "constructor_timeout",
        "constructor_crashed",
        "mcp_server_failed",
    ];

    /// The stable, snake_case code of this error, for scripts.
    pub fn code(&self) -> &'static str {
        match self {
            LoadError::NotALibrary { .. } => "not_a_library",
            LoadError::NotAPlugin { .. } => "not_a_plugin",
            LoadError::AbiMismatch { .. } => "abi_mismatch",
            LoadError::UnknownKind { .. } => "unknown_kind",
            LoadError::InvalidVersion { .. } => "invalid_version",
            LoadError::IncompatibleInterface { .. } => "incompatible_interface",
            LoadError::LayoutMismatch { .. } => "layout_mismatch",
            LoadError::ConstructorFailed { .. } => "constructor_failed",
            LoadError::ConstructorPanicked { .. } => "constructor_panicked",
            LoadError::NameTaken { .. } => "name_taken",
            LoadError::ReservedName { .. } => "reserved_name",
            LoadError::GrantTooWide { .. } => "grant_too_wide",
            LoadError::InsecurePermissions { .. } => "insecure_permissions",
            LoadError::AbortsOnPanic { .. } => "aborts_on_panic",
            LoadError::NotARegularFile { .. } => "not_a_regular_file",
            LoadError::ProbeCrashed { .. } => "probe_crashed",
            LoadError::ProbeExited { .. } => "probe_exited",
            LoadError::ProbeTimeout { .. } => "probe_timeout",
            LoadError::ProbeGarbled { .. } => "probe_garbled",
            LoadError::ConstructorTimeout { .. } => "constructor_timeout",
            LoadError::ConstructorCrashed { .. } => "constructor_crashed",
            LoadError::McpServerFailed { .. } => "mcp_server_failed",
        }
    }

    /// Whether the library must stay refused until its file changes: it
    /// crashed, hung or garbled the probe.
    pub fn quarantines(&self) -> bool {
        matches!(
            self,
            LoadError::ProbeCrashed { .. }
                | LoadError::ProbeExited { .. }
                | LoadError::ProbeTimeout { .. }
                | LoadError::ProbeGarbled { .. }
        )
    }

    /// The same refusal, marked as coming from the verdict cache.
    pub fn as_quarantined(mut self) -> Self {
        match &mut self {
            LoadError::ProbeCrashed { quarantined, .. }
            | LoadError::ProbeExited { quarantined, .. }
            | LoadError::ProbeTimeout { quarantined, .. }
            | LoadError::ProbeGarbled { quarantined, .. } => *quarantined = true,
            _ => {}
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::LoadError;

    #[test]
    fn codes_lists_every_code_that_code_answers() {
        let source = include_str!("codes.rs");
        let body = source.split("pub fn code(&self)").nth(1).unwrap();
        let body = body.split("\n    }\n").next().unwrap();
        let answered: Vec<&str> = body
            .lines()
            .filter_map(|l| l.split("=> \"").nth(1))
            .map(|rest| rest.trim_end_matches("\","))
            .collect();
        assert_eq!(answered, LoadError::CODES.to_vec());
    }
}
