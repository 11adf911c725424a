//! `[mcp.servers.NAME]` in zu.toml: how to start (stdio) or reach
//! (streamable HTTP) one MCP server, which of its tools take part, and the
//! Zu envelope every tool of it gets.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// One MCP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The program of a stdio server (found on zu's PATH).
    pub command: Option<String>,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Variables set for it.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Variables of zu's environment passed through; no other one is.
    #[serde(default)]
    pub env_vars: Vec<String>,
    /// Its working directory (relative to zu.toml).
    pub cwd: Option<PathBuf>,
    /// The endpoint of a streamable-HTTP server.
    pub url: Option<String>,
    /// The variable holding a bearer token for `url`.
    pub bearer_token_env: Option<String>,
    /// Seconds to start and list tools (default 30).
    #[serde(default = "default_startup")]
    pub startup_timeout_s: f64,
    /// Seconds one tool call may take (default 60; the run's deadline caps it).
    #[serde(default = "default_tool_timeout")]
    pub tool_timeout_s: f64,
    /// Only these of its tools take part.
    pub tools: Option<Vec<String>>,
    /// These of its tools do not.
    #[serde(default)]
    pub exclude_tools: Vec<String>,
    /// The tier of every tool of this server (default 1).
    #[serde(default = "one")]
    pub tier: u32,
    /// The capability tokens every tool of it declares.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The egress hosts every tool of it declares (`*` = open).
    #[serde(default)]
    pub egress: Vec<String>,
    /// A stdio server's sandbox: the hosts it reaches, in place of those
    /// `egress` declares (each within them; needs `net`).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// More paths it reads (needs `fs:read`).
    #[serde(default)]
    pub read: Vec<PathBuf>,
    /// More paths it writes (needs `fs:write`), e.g. an npm cache.
    #[serde(default)]
    pub write: Vec<PathBuf>,
    /// Other limits of its sandbox (`memory_mb`, `open_files`,
    /// `file_size_mb`, `processes`), read by the sandbox.
    #[serde(default)]
    pub limits: Option<serde_json::Value>,
    /// More directories it may execute programs from (interpreters).
    #[serde(default)]
    pub exec: Vec<PathBuf>,
    /// Run a stdio server in the sandbox (default true); `false` runs it
    /// with only its own environment and process group.
    #[serde(default = "yes")]
    pub sandbox: bool,
}

fn yes() -> bool {
    true
}

fn default_startup() -> f64 {
    30.0
}

fn default_tool_timeout() -> f64 {
    60.0
}

fn one() -> u32 {
    1
}

/// `[mcp]`: the servers by name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// `[mcp.servers.NAME]` tables.
    #[serde(default)]
    pub servers: BTreeMap<String, ServerConfig>,
}

impl ServerConfig {
    /// What is wrong with the server's config, if anything.
    pub fn problem(&self, name: &str) -> Option<String> {
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if name.is_empty()
            || name.contains("__")
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Some(
                "a server name is letters, digits, '-' and '_' (no '__', which separates it from its tools' names)"
                    .into(),
            );
        }
        match (&self.command, &self.url) {
            (Some(_), Some(_)) => {
                return Some("give command (a stdio server) or url (a streamable-HTTP server), not both".into())
            }
            (None, None) => return Some("give command (a stdio server) or url (a streamable-HTTP server)".into()),
            (None, Some(u)) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                return Some(format!("url {u:?} must start with http:// or https://"))
            }
            _ => {}
        }
        if !positive(self.startup_timeout_s) || !positive(self.tool_timeout_s) {
            return Some("startup_timeout_s and tool_timeout_s must be positive numbers of seconds".into());
        }
        let forbidden = |k: &str| k.starts_with("LD_") || k.starts_with("ZU_SANDBOX");
        if let Some(k) = self.env.keys().chain(self.env_vars.iter()).find(|k| forbidden(k)) {
            return Some(format!(
                "env may not set {k}: LD_* would load code before the sandbox, and ZU_SANDBOX* is zu's own"
            ));
        }
        if self.tier == 0 {
            return Some("tier must be at least 1".into());
        }
        None
    }

    /// Whether `tool` of this server takes part.
    pub fn admits(&self, tool: &str) -> bool {
        self.tools.as_ref().is_none_or(|t| t.iter().any(|x| x == tool)) && !self.exclude_tools.iter().any(|x| x == tool)
    }
}
