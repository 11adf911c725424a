//! One MCP server as Zu uses it: started with only the environment its
//! config names (or reached over streamable HTTP), its tools listed within
//! `startup_timeout_s`, each call bounded by `tool_timeout_s` and the run's
//! time left. A server that dies or hangs is stopped (its whole process
//! group) and started again for the next call.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult, Tool};
use rmcp::service::{RunningService, ServiceError};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use zu_plugin_api::contracts::JsonObject;
use zu_plugin_api::ports::{PluginError, MAX_OBSERVATION_BYTES};

use crate::capped::{CappedLines, CUT_CODE, CUT_MESSAGE};
use crate::config::ServerConfig;

/// The longest message a stdio server may send (a tool result's observation
/// is then checked against [`MAX_OBSERVATION_BYTES`]); past it the message is
/// cut while it is read and the call is refused as too large.
pub const MAX_MESSAGE_BYTES: usize = 4 * MAX_OBSERVATION_BYTES;

type Client = RunningService<RoleClient, ()>;

/// How much of a server's stderr is kept for messages.
const STDERR_TAIL: usize = 2000;

/// The runtime every MCP connection runs on (one per process, never dropped).
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        // HTTPS servers: rustls with ring, installed once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("zu-mcp")
            .enable_all()
            .build()
            .expect("a tokio runtime for MCP connections")
    })
}

/// A connected server.
struct Live {
    client: Client,
    /// The process group of a stdio server.
    group: Option<i32>,
    stderr: Arc<Mutex<String>>,
    /// Set when the server sent a message over the cap with no id to answer.
    lost: Option<Arc<AtomicBool>>,
    /// A stdio server's process (killed when dropped).
    process: Option<Box<dyn process_wrap::tokio::ChildWrapper>>,
    /// The egress gate of its sandbox (closed when dropped).
    _gate: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// One configured server.
pub struct Server {
    pub(crate) name: String,
    config: ServerConfig,
    base: PathBuf,
    live: Mutex<Option<Live>>,
    jailer: Option<crate::Jailer>,
    /// What the sandbox of its last start lacks (`None`: it ran in none).
    missing: Mutex<Option<Vec<String>>>,
}

/// The file `program` names on zu's PATH (as a shell would find it).
fn find(program: &str) -> Result<PathBuf, String> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("command {program:?} is not on PATH"))
}

fn tail(stderr: &Mutex<String>) -> String {
    let s = stderr.lock().unwrap_or_else(|p| p.into_inner());
    let t = s.trim();
    if t.is_empty() {
        String::new()
    } else {
        format!(
            "; its stderr ends: {}",
            t.chars()
                .rev()
                .take(400)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<String>()
        )
    }
}

impl Server {
    pub(crate) fn new(name: &str, config: ServerConfig, base: &Path, jailer: Option<crate::Jailer>) -> Self {
        Server {
            name: name.to_owned(),
            config,
            base: base.to_owned(),
            live: Mutex::new(None),
            jailer,
            missing: Mutex::new(None),
        }
    }

    /// What its sandbox lacks, as `PluginInfo::sandbox` says it.
    pub(crate) fn sandbox_missing(&self) -> Option<Vec<String>> {
        self.missing.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Starts or reaches the server and lists its tools.
    async fn connect(&self) -> Result<(Live, Vec<Tool>), String> {
        let c = &self.config;
        let stderr = Arc::new(Mutex::new(String::new()));
        let (mut lost, mut process, mut gate, mut gate_end) = (None, None, None, None);
        let (client, group) = match (&c.command, &c.url) {
            (Some(command), _) => {
                let program = find(command)?;
                // The jail's own variables go last: no config can replace them.
                let mut jail_env = Vec::new();
                let cwd = c.cwd.as_ref().map(|d| self.base.join(d));
                let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
                let jailed = self.jailer.is_some() && c.sandbox;
                let mut cmd = match self.jailer.as_ref().filter(|_| c.sandbox) {
                    Some(jailer) => {
                        let jail = jailer(&self.name, c, &program, cwd.as_deref().unwrap_or(&here))?;
                        *self.missing.lock().unwrap_or_else(|p| p.into_inner()) = Some(jail.missing.clone());
                        let mut cmd = tokio::process::Command::new(&jail.program);
                        cmd.args(&jail.before).arg(&program).env_clear();
                        jail_env = jail.env;
                        if let Some((keep, end)) = jail.gate {
                            (jail.pass)(cmd.as_std_mut(), &end);
                            (gate, gate_end) = (Some(keep), Some(end));
                        }
                        cmd
                    }
                    None => {
                        let mut cmd = tokio::process::Command::new(&program);
                        cmd.env_clear();
                        cmd
                    }
                };
                cmd.args(&c.args);
                for var in &c.env_vars {
                    if let Some(v) = std::env::var_os(var) {
                        cmd.env(var, v);
                    }
                }
                cmd.envs(&c.env);
                cmd.envs(jail_env);
                if let Some(dir) = &cwd {
                    cmd.current_dir(dir);
                }
                cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
                let mut wrap = process_wrap::tokio::CommandWrap::from(cmd);
                wrap.wrap(process_wrap::tokio::ProcessGroup::leader());
                wrap.wrap(process_wrap::tokio::KillOnDrop);
                let mut child = wrap.spawn().map_err(|e| format!("cannot start {command:?}: {e}"))?;
                // The child has its own end of the gate now: ours closes.
                drop(gate_end.take());
                let (Some(input), Some(output), err) = (
                    child.inner_mut().stdin().take(),
                    child.inner_mut().stdout().take(),
                    child.inner_mut().stderr().take(),
                ) else {
                    return Err(format!("cannot start {command:?}: no pipes to it"));
                };
                let group = child.id().map(|p| p as i32);
                let output = CappedLines::new(output, MAX_MESSAGE_BYTES);
                lost = Some(output.lost.clone());
                process = Some(child);
                if let Some(mut err) = err {
                    let keep = stderr.clone();
                    tokio::spawn(async move {
                        let mut buf = [0u8; 1024];
                        while let Ok(n) = err.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            let mut s = keep.lock().unwrap_or_else(|p| p.into_inner());
                            s.push_str(&String::from_utf8_lossy(&buf[..n]));
                            if s.len() > STDERR_TAIL * 2 {
                                let cut = s.len() - STDERR_TAIL;
                                let cut = (cut..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(s.len());
                                s.drain(..cut);
                            }
                        }
                    });
                }
                let client = ().serve((output, input)).await;
                let client = client.map_err(|e| {
                    let said = tail(&stderr);
                    // A shim (pyenv, asdf) or a launcher runs programs its sandbox does not list.
                    let hint = if said.contains("Permission denied") && jailed {
                        "; in its sandbox it executes only its command, the interpreters its #! line names and `exec` (name the real interpreter as the command, or grant what it runs: exec = [...])"
                    } else {
                        ""
                    };
                    format!("no MCP handshake ({e}){said}{hint}")
                })?;
                (client, group)
            }
            (None, Some(url)) => {
                let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
                // Server-sent events past the message cap end the stream instead of growing.
                config.max_sse_event_size = MAX_MESSAGE_BYTES;
                if let Some(var) = &c.bearer_token_env {
                    let token =
                        std::env::var(var).map_err(|_| format!("bearer_token_env names ${var}, which is not set"))?;
                    config = config.auth_header(token);
                }
                let transport =
                    StreamableHttpClientTransport::with_client(crate::http::CappedHttp::new(MAX_MESSAGE_BYTES), config);
                let client = ().serve(transport).await.map_err(|e| format!("no MCP handshake with {url} ({e})"))?;
                (client, None)
            }
            (None, None) => return Err("no command and no url".into()),
        };
        let tools = client
            .list_all_tools()
            .await
            .map_err(|e| format!("cannot list its tools ({e}){}", tail(&stderr)))?;
        Ok((
            Live {
                client,
                group,
                stderr,
                lost,
                process,
                _gate: gate,
            },
            tools,
        ))
    }

    /// Connects within `limit` and keeps the connection; the server's tools.
    pub(crate) fn start(&self, limit: Duration) -> Result<Vec<Tool>, String> {
        let out = runtime().block_on(async { tokio::time::timeout(limit, self.connect()).await });
        match out {
            Ok(Ok((live, tools))) => {
                self.replace(Some(live));
                Ok(tools)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!(
                "did not start and list its tools within {:.0} s (startup_timeout_s)",
                limit.as_secs_f64()
            )),
        }
    }

    /// Puts `next` in place of the connection, stopping the old server.
    fn replace(&self, next: Option<Live>) {
        let old = std::mem::replace(&mut *self.live.lock().unwrap_or_else(|p| p.into_inner()), next);
        if let Some(old) = old {
            stop(old);
        }
    }

    /// Calls `tool` with `args`, within `tool_timeout_s` and `time_left`.
    pub(crate) fn call(
        &self,
        tool: &str,
        args: JsonObject,
        time_left: Option<Duration>,
    ) -> Result<JsonObject, PluginError> {
        let budget = Duration::from_secs_f64(self.config.tool_timeout_s);
        let limit = time_left.map_or(budget, |t| t.min(budget));
        let gone = |what: String| {
            PluginError::ProcessEnded(format!(
                "(MCP server {:?}) {what}; it starts again for the next call",
                self.name
            ))
        };
        if self.live.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
            let startup = Duration::from_secs_f64(self.config.startup_timeout_s).min(limit);
            self.start(startup).map_err(|e| {
                PluginError::failed(format!("MCP server {:?} could not be started again: {e}", self.name))
            })?;
        }
        let guard = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let Some(live) = guard.as_ref() else {
            return Err(PluginError::failed(format!(
                "MCP server {:?} is not running",
                self.name
            )));
        };
        let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(args);
        let out = runtime().block_on(async { tokio::time::timeout(limit, live.client.call_tool(params)).await });
        let stderr = live.stderr.clone();
        let lost = live.lost.as_ref().is_some_and(|l| l.load(Ordering::Acquire));
        drop(guard);
        let too_large = PluginError::TooLarge {
            limit: MAX_OBSERVATION_BYTES,
        };
        match out {
            Ok(Ok(result)) => Ok(observation(result)),
            Ok(Err(ServiceError::McpError(e))) if e.code.0 == CUT_CODE && e.message.starts_with(CUT_MESSAGE) => {
                Err(too_large)
            }
            Ok(Err(_)) if lost => {
                // Cut with no id to answer: the stream ended there; start afresh.
                self.replace(None);
                Err(too_large)
            }
            Ok(Err(ServiceError::McpError(e))) => Err(PluginError::failed(format!(
                "MCP server {:?}: {}",
                self.name, e.message
            ))),
            Ok(Err(e)) => {
                self.replace(None);
                Err(gone(format!("ended during the call ({e}){}", tail(&stderr))))
            }
            Err(_) => {
                self.replace(None);
                Err(gone(format!(
                    "did not answer within {:.1} s and was stopped",
                    limit.as_secs_f64()
                )))
            }
        }
    }

    /// Stops the server, if it runs.
    pub(crate) fn shut(&self) {
        self.replace(None);
    }
}

/// Stops a connection: the whole process group of a stdio server at once
/// (an `npx` and the server it started), then the client inside the runtime.
fn stop(live: Live) {
    if let Some(group) = live.group {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(group), nix::sys::signal::Signal::SIGKILL);
    }
    {
        let _enter = runtime().enter();
        drop(live.client);
    }
    // Reaped before this returns: a stopped server is gone, not dying. (Stop
    // is called from zu's threads, never from inside the MCP runtime.)
    if let Some(mut process) = live.process {
        let _ = runtime().block_on(async { tokio::time::timeout(Duration::from_secs(5), process.wait()).await });
    }
}

/// A tool result as an observation: the text of its content (under
/// `content`, so the loop stores it as retrieved content), its structured
/// content, and `error` when the server flagged the result as one.
fn observation(result: CallToolResult) -> JsonObject {
    let parts: Vec<String> = result
        .content
        .iter()
        .map(|b| match b.as_text() {
            Some(t) => t.text.clone(),
            None => serde_json::to_string(b).unwrap_or_default(),
        })
        .collect();
    let text = parts.join("\n");
    let mut obs = JsonObject::new();
    if result.is_error == Some(true) {
        obs.insert(
            "error".into(),
            Value::String(if text.is_empty() {
                "the tool reported an error".into()
            } else {
                text.clone()
            }),
        );
    }
    obs.insert("content".into(), text.into());
    if let Some(s) = result.structured_content {
        obs.insert("structured".into(), s);
    }
    if obs.is_empty() {
        obs.insert("content".into(), json!(""));
    }
    obs
}
