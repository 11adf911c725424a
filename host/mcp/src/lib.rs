//! MCP servers as Zu tools. Each `[mcp.servers.NAME]` of zu.toml is started
//! (stdio) or reached (streamable HTTP) with the official SDK (`rmcp`); each
//! tool it lists becomes a Zu tool `NAME__tool` in the registry, with the
//! envelope the config gives (tier, capabilities, egress), so containment
//! and the ladder apply as to any tool. A server that cannot start is a
//! `LoadFailure` (`mcp_server_failed`).

#![forbid(unsafe_code)]

mod capped;
pub mod config;
mod http;
mod server;
mod tool;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use zu_plugin_api::ports::Envelope;
use zu_plugin_api::version::Kind;
use zu_runtime::{LoadError, LoadFailure, PluginInfo, PluginObject, Registry};

pub use config::{McpConfig, ServerConfig};
pub use server::Server;
pub use tool::McpTool;

/// How a stdio server is started inside a sandbox: `program` (zu's hidden
/// `__jail`) runs with `before`, then the server's command and arguments,
/// and the variables `env` added; `missing` is what its sandbox lacks;
/// `gate` is kept while the server runs, with the descriptor that `pass`
/// hands to the server's jail alone.
pub struct Jail {
    pub program: PathBuf,
    pub before: Vec<String>,
    pub env: Vec<(String, String)>,
    pub missing: Vec<String>,
    pub gate: Option<(Box<dyn std::any::Any + Send + Sync>, std::os::fd::OwnedFd)>,
    pub pass: fn(&mut std::process::Command, &std::os::fd::OwnedFd),
}

/// Makes the [`Jail`] of a server from its name, config, resolved command
/// and working directory (or says why it cannot).
pub type Jailer = Arc<dyn Fn(&str, &ServerConfig, &Path, &Path) -> Result<Jail, String> + Send + Sync>;

/// The running servers; dropping it stops them.
pub struct McpHost {
    servers: Vec<Arc<Server>>,
}

impl Drop for McpHost {
    fn drop(&mut self) {
        for s in &self.servers {
            s.shut();
        }
    }
}

/// Where a server's tools come from, as `zu plugins` shows it.
pub fn origin(server: &str) -> PathBuf {
    PathBuf::from(format!("mcp:{server}"))
}

fn leak(v: &[String]) -> &'static [&'static str] {
    let items: Vec<&'static str> = v.iter().map(|s| &*Box::leak(s.clone().into_boxed_str())).collect();
    Box::leak(items.into_boxed_slice())
}

/// Starts every server of `config` at once (paths relative to `base`) and
/// registers the tools of those that started; each one that did not is a
/// failure on the registry.
/// With a `jailer`, each stdio server runs inside the sandbox it makes.
pub fn start(config: &McpConfig, base: &Path, registry: &mut Registry, jailer: Option<Jailer>) -> McpHost {
    let mut host = McpHost { servers: Vec::new() };
    let mut starting = Vec::new();
    for (name, sc) in &config.servers {
        let fail = |message: String| LoadFailure {
            library: Some(origin(name)),
            kind: Some(Kind::Tools.to_string()),
            name: Some(name.clone()),
            error: LoadError::McpServerFailed {
                server: name.clone(),
                message,
            },
        };
        if let Some(problem) = sc.problem(name) {
            registry.record_failure(fail(problem));
            continue;
        }
        let server = Arc::new(Server::new(name, sc.clone(), base, jailer.clone()));
        let limit = Duration::from_secs_f64(sc.startup_timeout_s);
        let s = server.clone();
        let handle = std::thread::spawn(move || s.start(limit));
        starting.push((name.clone(), sc.clone(), server, handle, fail(String::new())));
    }
    for (name, sc, server, handle, failure) in starting {
        let started = handle.join().unwrap_or_else(|_| Err("starting it panicked".into()));
        let tools = match started {
            Ok(tools) => tools,
            Err(message) => {
                tracing::debug!(server = name, error = %message, "an MCP server did not start");
                registry.record_failure(LoadFailure {
                    error: LoadError::McpServerFailed { server: name, message },
                    ..failure
                });
                continue;
            }
        };
        let envelope = Envelope {
            tier: sc.tier,
            capabilities: leak(&sc.capabilities),
            egress: leak(&sc.egress),
        };
        for t in tools.into_iter().filter(|t| sc.admits(&t.name)) {
            let zu_name = format!("{name}__{}", t.name);
            let tool = McpTool {
                server: server.clone(),
                tool: t.name.to_string(),
                name: zu_name.clone(),
                description: t.description.as_deref().unwrap_or_default().to_owned(),
                input_schema: serde_json::Value::Object((*t.input_schema).clone()),
            };
            let mut info = PluginInfo::native(Kind::Tools, &zu_name, envelope);
            info.library = Some(origin(&name));
            info.sandbox = server.sandbox_missing();
            if let Err(error) = registry.register(info, PluginObject::Tool(Arc::new(tool))) {
                registry.record_failure(LoadFailure {
                    library: Some(origin(&name)),
                    kind: Some(Kind::Tools.to_string()),
                    name: Some(zu_name),
                    error,
                });
            }
        }
        host.servers.push(server);
    }
    host
}
