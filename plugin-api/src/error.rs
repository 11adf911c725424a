//! What goes wrong in a plugin call: [`PluginError`] (panics included, caught
//! on the plugin's side), a guard's [`SecurityBlock`], and the helpers that
//! turn a panic payload into text and refuse an oversized answer unencoded.

use serde::{Deserialize, Serialize};

/// The text of a caught panic payload (`&str` or `String`; anything else
/// is described, not shown).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

/// A byte buffer that refuses to grow past a limit, so an oversized value is
/// detected without ever being encoded whole.
struct Capped {
    buf: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            return Err(std::io::Error::other("over the size limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The JSON text of `value` if it fits in `limit` bytes, else
/// [`PluginError::TooLarge`], found without encoding an oversized value whole.
pub fn to_json_capped<T: Serialize + ?Sized>(value: &T, limit: usize) -> Result<String, PluginError> {
    let mut out = Capped {
        buf: Vec::with_capacity(256),
        limit,
    };
    match serde_json::to_writer(&mut out, value) {
        Ok(()) => Ok(String::from_utf8(out.buf).expect("serde_json writes UTF-8")),
        Err(e) if e.is_io() => Err(PluginError::TooLarge { limit }),
        Err(e) => Err(PluginError::failed(format!("cannot encode JSON: {e}"))),
    }
}

/// A guard refused an action: what kind of refusal, what was refused, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityBlock {
    /// The category, e.g. `ssrf`, `path_escape`, `fetch_blocked`.
    pub kind: String,
    /// What was refused (a host, a path), when known.
    #[serde(default)]
    pub target: Option<String>,
    /// A sentence saying what was refused and why.
    pub message: String,
}

/// What went wrong inside a plugin call. Panics inside a plugin arrive as
/// [`PluginError::Panicked`]; they never unwind into the host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum PluginError {
    /// The call failed; the message says why.
    #[error("{0}")]
    Failed(String),
    /// The call was refused for security reasons (an SSRF target, a path
    /// escaping its root); the loop records it as `harness.defense.blocked`.
    #[error("security block ({}): {}", .0.kind, .0.message)]
    SecurityBlock(SecurityBlock),
    /// The arguments or the config were not what the plugin accepts.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The plugin panicked; the panic was caught on the plugin's side.
    #[error("plugin panicked: {0}")]
    Panicked(String),
    /// The answer is larger than the host accepts (`limit` bytes of JSON).
    #[error("the answer exceeds the size limit of {limit} bytes of JSON")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The plugin runs in a process of its own, and that process ended
    /// during the call (it crashed, aborted or exited): the host contained
    /// it and starts a fresh one for the next call. Raised by the host.
    #[error("the plugin's process {0}")]
    ProcessEnded(String),
}

impl PluginError {
    /// The error for a caught panic, with the panic's message.
    pub fn from_panic(payload: &(dyn std::any::Any + Send)) -> Self {
        PluginError::Panicked(panic_message(payload))
    }
    /// A generic failure with a message.
    pub fn failed(msg: impl Into<String>) -> Self {
        PluginError::Failed(msg.into())
    }
    /// A bad argument or config value.
    pub fn invalid(msg: impl Into<String>) -> Self {
        PluginError::InvalidInput(msg.into())
    }
    /// An OS error that is what a sandbox answers (EACCES, EPERM), as the
    /// model and the log should see it: a `sandbox` security block naming the
    /// capability and the target — "requires fs:read access to /etc/shadow" —
    /// which the loop records as `harness.defense.blocked`. `None` for any
    /// other error. `e.map_err(|e| PluginError::denied(&e, CAP_FS_READ,
    /// path).unwrap_or_else(|| PluginError::failed(...)))`.
    pub fn denied(e: &std::io::Error, capability: &str, target: impl std::fmt::Display) -> Option<Self> {
        matches!(e.raw_os_error(), Some(1 | 13)).then(|| {
            PluginError::security_block(
                "sandbox",
                Some(target.to_string()),
                format!(
                    "requires {capability} access to {target} ({e}); the plugin must declare {capability}, and zu.toml [grants.KIND.NAME] can place it"
                ),
            )
        })
    }

    /// Where the plugin runs in zu's sandbox with its network scoped to the
    /// hosts it was granted, and `host:port` is not one of them: a `sandbox`
    /// security block ("requires net access to host:port") naming how to
    /// grant it. `None` outside such a sandbox or for a granted host: then a
    /// failure to reach it is the host's own. Call it when a connection fails.
    pub fn net_denied(host: &str, port: u16) -> Option<Self> {
        let granted = std::env::var(SANDBOX_HOSTS_ENV).ok()?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        if granted.split(',').any(|g| g == target) {
            return None;
        }
        Some(PluginError::security_block(
            "sandbox",
            Some(target.clone()),
            format!(
                "requires net access to {target}; the plugin must declare net and the host (egress), and zu.toml [grants.KIND.NAME] hosts = [...] (or zu run --allow-net KIND.NAME={target}) grants it"
            ),
        ))
    }

    /// A security refusal of `kind` (e.g. `ssrf`), naming the refused target.
    pub fn security_block(kind: impl Into<String>, target: Option<String>, msg: impl Into<String>) -> Self {
        PluginError::SecurityBlock(SecurityBlock {
            kind: kind.into(),
            target,
            message: msg.into(),
        })
    }
}

/// The variable in which zu tells a sandboxed process, whose network it
/// scoped, the hosts it may reach (`host:port`, comma-separated).
pub const SANDBOX_HOSTS_ENV: &str = "ZU_SANDBOX_HOSTS";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_outside_the_sandboxs_grant_is_named_and_a_granted_one_is_not() {
        assert!(
            PluginError::net_denied("example.com", 443).is_none(),
            "outside a sandbox"
        );
        std::env::set_var(SANDBOX_HOSTS_ENV, "api.example.com:443,[::1]:8080");
        assert!(PluginError::net_denied("API.example.com", 443).is_none());
        assert!(PluginError::net_denied("[::1]", 8080).is_none());
        match PluginError::net_denied("evil.example.org", 80) {
            Some(PluginError::SecurityBlock(b)) => {
                assert_eq!(b.target.as_deref(), Some("evil.example.org:80"));
                assert!(
                    b.message.contains("requires net access to evil.example.org:80"),
                    "{}",
                    b.message
                );
            }
            other => panic!("{other:?}"),
        }
        std::env::remove_var(SANDBOX_HOSTS_ENV);
    }

    #[test]
    fn a_denied_os_error_names_the_capability_and_the_target() {
        let denied = std::io::Error::from_raw_os_error(13);
        match PluginError::denied(&denied, "fs:read", "/etc/shadow") {
            Some(PluginError::SecurityBlock(b)) => {
                assert_eq!((b.kind.as_str(), b.target.as_deref()), ("sandbox", Some("/etc/shadow")));
                assert!(
                    b.message.starts_with("requires fs:read access to /etc/shadow"),
                    "{}",
                    b.message
                );
            }
            other => panic!("{other:?}"),
        }
        let missing = std::io::Error::from_raw_os_error(2);
        assert_eq!(PluginError::denied(&missing, "fs:read", "x"), None);
    }
    use crate::ports::MAX_OBSERVATION_BYTES;

    #[test]
    fn size_is_checked_without_encoding_everything() {
        let big = serde_json::json!({"blob": "x".repeat(2_000_000)});
        let limit = MAX_OBSERVATION_BYTES;
        assert_eq!(to_json_capped(&big, limit), Err(PluginError::TooLarge { limit }));
        assert_eq!(
            to_json_capped(&serde_json::json!({"ok": true}), limit).unwrap(),
            r#"{"ok":true}"#
        );
    }

    #[test]
    fn panic_payloads_become_messages() {
        let caught = std::panic::catch_unwind(|| panic!("boom {}", 7)).unwrap_err();
        assert_eq!(
            PluginError::from_panic(&*caught),
            PluginError::Panicked("boom 7".into())
        );
        let odd = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(panic_message(&*odd), "a panic with a non-string payload");
    }
}
