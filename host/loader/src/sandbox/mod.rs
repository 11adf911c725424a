//! The sandbox a plugin process, the probe child and a stdio MCP server run
//! in, made from the envelope and the user's grants: what it may read, write
//! and execute (Landlock), which system calls fail with EPERM (seccomp), its
//! namespaces (a user namespace of its own; with `net`, a network whose only
//! ways out are zu's forwarders), its resource limits and its environment.
//! A process applies it to itself first thing, before it opens any library
//! or execs a server, so no plugin code ever runs outside it.

mod dns;
mod enter;
mod fence;
mod files;
mod gate;
mod hosts;
mod limits;
mod log_files;
mod namespace;
mod netlink;
mod netns;
mod server;
mod syscalls;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use zu_plugin_api::ports::{CAP_FS_READ, CAP_FS_WRITE, CAP_NET, CAP_SUBPROCESS};
use zu_plugin_api::version::Kind;

pub use enter::{enter, environment, jail, pass_gate, JAIL_COMMAND, POLICY_ENV};
use fence::{config_paths, holds_any, is_private, readable_except, within_zu};
pub use fence::{protected_paths, real, Fence};
pub use gate::{Gate, GATE_ENV};
pub use hosts::EGRESS_OPEN;
pub use limits::Limits;

/// What one sandboxed process may do. Plugins whose policies differ never
/// share a process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Policy {
    /// Readable (files and everything beneath directories), beyond the
    /// system paths every process needs.
    pub read: Vec<PathBuf>,
    /// Writable (and readable).
    pub write: Vec<PathBuf>,
    /// Readable and executable (an MCP server's command and interpreters).
    #[serde(default)]
    pub exec: Vec<PathBuf>,
    /// `subprocess`: may fork and execute programs from the system paths
    /// (or, with `exec_only`, from `exec` alone).
    pub subprocess: bool,
    /// Executes only what `exec` lists, not the system paths (an MCP
    /// server: its command, its interpreters and what its grant names).
    #[serde(default)]
    pub exec_only: bool,
    /// `net`: may open network sockets.
    pub net: bool,
    /// With `net`, the hosts it reaches (`host:port` each, sorted), through
    /// the egress gate's forwarders; `["*"]`: the open network, as granted.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The variables of zu's environment the process gets (no others).
    pub env: Vec<String>,
    /// Resource limits.
    pub limits: Limits,
    /// `fs:write`: its process gets a scratch directory of its own to write
    /// (`TMPDIR`), made when it starts and removed with it.
    #[serde(default)]
    pub scratch: bool,
    /// Files it reads and writes, with no right beside them: a sink's log
    /// and an SQLite log's companions (those there when its process starts).
    #[serde(default)]
    pub write_files: Vec<PathBuf>,
    /// Makes `write_files` (a writer's log) when its process starts.
    #[serde(default)]
    pub make_files: bool,
    /// A private file its write rights reach: zu.toml in a directory it
    /// writes (a grant, or the directory of a file a tool's config names).
    #[serde(default)]
    pub writes_private: Option<PathBuf>,
    /// The host found that processes may make namespaces here (so the
    /// sandboxed process tries, and says so when it cannot).
    #[serde(default)]
    pub namespaces: bool,
}

/// What the user grants a plugin beyond its defaults (zu.toml
/// `[grants.KIND.NAME]`): never more than it declared — `read` needs
/// `fs:read`, `write` needs `fs:write`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// More paths to read.
    #[serde(default)]
    pub read: Vec<PathBuf>,
    /// More paths to write.
    #[serde(default)]
    pub write: Vec<PathBuf>,
    /// The hosts it reaches (`host`, `host:port`, or `*` for any), in place
    /// of those it declared: each within its declaration.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// More variables of zu's environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Other resource limits.
    #[serde(default)]
    pub limits: Option<Limits>,
}

/// A sandbox that would give more than the plugin declared, or reach what
/// zu keeps for itself; the message says which and what to change.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GrantTooWide(pub String);

impl GrantTooWide {
    fn undeclared(what: String, capability: &str) -> Self {
        GrantTooWide(format!(
            "the grant gives {what} to a plugin that does not declare {capability}; remove it from the grant (a grant narrows or places what a plugin declared, never widens it)"
        ))
    }
}

/// The layer a `net` sandbox lacks without a network namespace: sockets
/// limited to the granted hosts.
const NET_SCOPED: &str = "network scoped to the granted hosts (a network namespace)";
/// The layer a sandbox lacks without a user namespace of its own.
const NAMESPACE: &str = "processes counted per sandbox (a user namespace)";

/// What a process's sandbox enforced, as `harness.sandbox.applied` records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Landlock: `fully`, `partly` or `not` enforced.
    pub files: String,
    /// The kernel's Landlock ABI (0 when it has none).
    pub landlock_abi: i32,
    /// The seccomp filter is installed.
    pub syscalls: bool,
    /// The resource limits are set.
    pub limits: bool,
    /// It runs in a user namespace of its own.
    #[serde(default)]
    pub namespace: bool,
    /// Network: `denied` (no socket), `scoped` (a namespace whose only ways
    /// out are the granted hosts' forwarders), `open` (granted `*`), or
    /// `unscoped` (`net` without a namespace: this kernel offers none).
    pub net: String,
}

impl Applied {
    /// The layers a `required` run needs that this one lacks.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.files != "fully" {
            out.push("files (Landlock)");
        }
        if !self.syscalls {
            out.push("system calls (seccomp)");
        }
        if !self.limits {
            out.push("resource limits");
        }
        if !self.namespace {
            out.push(NAMESPACE);
        }
        if self.net == "unscoped" {
            out.push(NET_SCOPED);
        }
        out
    }
}

/// The environment variable names a plugin's config names (`api_key_env`,
/// `bearer_token_env`, any `*_env` key with a string value).
fn config_variables(config: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Value::Object(map) = config {
        for (k, v) in map {
            match v {
                Value::String(s) if k.ends_with("_env") && !s.is_empty() => out.push(s.clone()),
                Value::Object(_) => out.extend(config_variables(v)),
                _ => {}
            }
        }
    }
    out
}

impl Policy {
    /// The probe child's: nothing but the system paths and the libraries it opens.
    pub fn deny_all(libraries: &[PathBuf]) -> Policy {
        Policy {
            read: libraries.to_vec(),
            namespaces: namespace::available(),
            ..Policy::default()
        }
    }

    /// The policy of plugin `kind`/`name` with `envelope` and `config`:
    /// `fs:read` reads the working directory and the paths its config names;
    /// `fs:write` writes the paths its config names (a file's directory); `subprocess` and `net` as declared; the
    /// environment holds the variables its config names and, for a provider,
    /// `NAME_API_KEY` when zu has it.
    pub fn for_plugin(
        info: &zu_runtime::PluginInfo,
        config: &Value,
        cwd: &Path,
        grant: Option<&Grant>,
        fence: &Fence,
    ) -> Result<Policy, GrantTooWide> {
        let (kind, name) = (info.kind, info.name.as_str());
        let protected = fence.protected;
        let has = |cap: &str| info.capabilities.iter().any(|c| c == cap);
        if let Some(g) = grant {
            for (paths, cap, what) in [(&g.read, CAP_FS_READ, "read"), (&g.write, CAP_FS_WRITE, "write")] {
                if let Some(p) = paths.first().filter(|_| !has(cap)) {
                    return Err(GrantTooWide::undeclared(
                        format!("{what} access to {}", p.display()),
                        cap,
                    ));
                }
            }
        }
        let mut named = config_paths(config, cwd);
        // A sink writes its log's files alone, and reads no more of their
        // directory; one that reads a log (zu events, zu serve: `read_only`)
        // reads the directory, to follow a log replaced there, and writes nothing.
        let (logs, log_dirs) = match kind == Kind::Sinks && has(CAP_FS_WRITE) {
            true => log_files::named(config, cwd),
            false => Default::default(),
        };
        named.retain(|n| !logs.iter().any(|f| f.starts_with(n)));
        let reader = config.get("read_only") == Some(&Value::Bool(true));
        if reader {
            let dirs = logs.iter().filter_map(|f| f.parent().map(Path::to_path_buf));
            named.extend(dirs.filter(|d| d.is_dir()));
        }
        let mut p = Policy {
            subprocess: has(CAP_SUBPROCESS),
            net: has(CAP_NET),
            env: config_variables(config),
            namespaces: namespace::available(),
            ..Policy::default()
        };
        if p.net {
            let granted = grant.map(|g| g.hosts.as_slice()).filter(|h| !h.is_empty());
            p.hosts = hosts::reached(&info.egress, granted, config)?;
        } else if let Some(h) = grant.and_then(|g| g.hosts.first()) {
            return Err(GrantTooWide::undeclared(format!("network access to {h}"), CAP_NET));
        }
        if has(CAP_FS_READ) {
            // Not by default when the working directory holds what zu keeps
            // or the home directory (`~/.ssh`): only what the config names.
            if !holds_any(cwd, protected) {
                p.read.push(cwd.to_owned());
            }
            p.read.extend(named.iter().cloned());
            p.keep_out_of_reads(&[fence.settings, fence.logs].concat());
        }
        if has(CAP_FS_WRITE) {
            p.scratch = true;
            if kind == Kind::Sinks {
                // A reader writes an SQLite log's shared index (`-shm`) when
                // it is there; it makes nothing.
                p.write_files = logs;
                if !reader {
                    p.make_files = true;
                    p.write.extend(log_dirs);
                }
            } else {
                // A file's directory: a database writes companions beside it (-wal, -shm).
                p.write.extend(named.into_iter().map(|n| {
                    if n.is_file() {
                        n.parent().map_or(n.clone(), Path::to_path_buf)
                    } else {
                        n
                    }
                }));
            }
        }
        if kind == Kind::Providers {
            // Only when zu has it: a policy that names nothing more is shared
            // with the library's other plugins (one process fewer).
            let key = format!("{}_API_KEY", name.to_ascii_uppercase().replace('-', "_"));
            if std::env::var_os(&key).is_some() {
                p.env.push(key);
            }
        }
        if let Some(g) = grant {
            p.read.extend(g.read.iter().map(|r| real(&cwd.join(r))));
            p.write.extend(g.write.iter().map(|w| real(&cwd.join(w))));
            p.env.extend(g.env.iter().cloned());
            if let Some(l) = &g.limits {
                p.limits = l.clone();
            }
        }
        // Another plugin's log is never reachable; zu.toml in a directory it
        // writes is (Landlock grants a directory whole), which `required`
        // refuses (`missing_here`).
        if let Some(w) = p.write.iter().find(|w| holds_any(w, fence.logs)) {
            let held = fence.logs.iter().find(|h| h.starts_with(w)).expect("held");
            return Err(GrantTooWide(format!(
                "its sandbox would write {}, which holds {} (another plugin's log); give it a directory of its own",
                w.display(),
                held.display()
            )));
        }
        p.writes_private = fence
            .settings
            .iter()
            .find(|f| p.write.iter().any(|w| f.starts_with(w)))
            .cloned();
        if let Some(w) = p.write.iter().find(|w| holds_any(w, protected)) {
            let held = protected.iter().find(|h| h.starts_with(w)).expect("held");
            return Err(GrantTooWide(format!(
                "its sandbox would write {}, which holds {} (the verdict cache, a plugin directory or the home directory); put its log (or what it writes) in a directory of its own",
                w.display(),
                held.display()
            )));
        }
        let zu_own = |w: &PathBuf| within_zu(w, protected);
        if let Some(w) = p.write.iter().chain(&p.write_files).find(|w| zu_own(w)) {
            return Err(GrantTooWide(format!(
                "its sandbox would write {}, inside the verdict cache or a plugin directory; put its log (or what it writes) in a directory of its own",
                w.display()
            )));
        }
        let private = [fence.settings, fence.logs].concat();
        if let Some(f) = p.write_files.iter().find(|f| is_private(f, &private)) {
            return Err(GrantTooWide(format!(
                "its log would be {}, which is zu's settings file or another plugin's log; give it a file of its own",
                f.display()
            )));
        }
        p.read.sort();
        p.read.dedup();
        p.write.sort();
        p.write.dedup();
        p.env.sort();
        p.env.dedup();
        Ok(p)
    }

    /// Takes `private` files (zu.toml, others' logs) out of what it reads,
    /// wherever they sit in it.
    pub fn keep_out_of_reads(&mut self, private: &[PathBuf]) {
        self.read = self.read.iter().flat_map(|r| readable_except(r, private, 4)).collect();
    }

    /// With `net`, whether it reaches the open network (granted `*`).
    pub fn open_network(&self) -> bool {
        self.net && self.hosts.iter().any(|h| h == EGRESS_OPEN)
    }

    /// With `net` scoped to hosts, the egress gate for a process with this
    /// policy (its notes naming `label`) and the descriptor to hand it.
    pub fn gate(&self, label: &str) -> Option<(Gate, std::os::fd::OwnedFd)> {
        if !self.net || self.open_network() || !self.namespaces {
            return None;
        }
        match Gate::open(&self.hosts, label) {
            Ok(g) => Some(g),
            Err(e) => {
                // The process then sits in a namespace with no way out.
                tracing::warn!(error = %e, "the egress gate could not be opened");
                None
            }
        }
    }

    /// The layers this policy lacks on this kernel, as `required` judges.
    pub fn missing_here(&self) -> Vec<String> {
        let (abi, seccomp, namespaces) = kernel();
        let mut out = Vec::new();
        if abi < 6 {
            out.push("files (Landlock ABI 6 or later)".to_owned());
        }
        if !seccomp {
            out.push("system calls (seccomp)".to_owned());
        }
        if let Some(f) = &self.writes_private {
            out.push(format!(
                "files kept from {} (it writes the directory holding it: grant it a directory of its own)",
                f.display()
            ));
        }
        if !namespaces {
            out.push(NAMESPACE.to_owned());
            if self.net && !self.open_network() {
                out.push(NET_SCOPED.to_owned());
            }
        }
        out
    }
}

/// What this kernel offers: the Landlock ABI (0: none), whether seccomp
/// filters can be installed, and whether a process may make user, network
/// and mount namespaces.
pub fn kernel() -> (i32, bool, bool) {
    (files::abi(), syscalls::available(), namespace::available())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use zu_plugin_api::ports::Envelope;
    use zu_runtime::PluginInfo;

    const SINK: &[&str] = &[CAP_FS_READ, CAP_FS_WRITE];

    fn fence(protected: &[PathBuf]) -> Fence<'_> {
        Fence {
            protected,
            settings: &[],
            logs: &[],
        }
    }

    fn info(kind: Kind, name: &str, capabilities: &'static [&'static str]) -> PluginInfo {
        PluginInfo::native(
            kind,
            name,
            Envelope {
                tier: 1,
                capabilities,
                egress: &[],
            },
        )
    }

    #[test]
    fn a_policy_follows_the_envelope_and_the_paths_and_variables_its_config_names() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("new.db");
        let cwd = Path::new("/");
        let p = Policy::for_plugin(
            &info(Kind::Sinks, "sqlite", SINK),
            &json!({"path": log}),
            cwd,
            None,
            &fence(&[]),
        )
        .unwrap();
        assert_eq!(p.write_files, vec![log.clone()], "its log's file, not its directory");
        assert!(p.write.is_empty());
        assert!(!p.net && !p.subprocess);
        let none = Policy::for_plugin(
            &info(Kind::Tools, "t", &[]),
            &json!({"root": dir.path()}),
            cwd,
            None,
            &fence(&[]),
        )
        .unwrap();
        assert!(
            none.read.is_empty() && none.write.is_empty(),
            "nothing declared, nothing granted"
        );
        std::env::set_var("OPENAI_API_KEY", "k");
        let openai = Policy::for_plugin(
            &info(Kind::Providers, "openai", &[]),
            &json!({"api_key_env": "MY_KEY", "nested": {"token_env": "T"}, "x_env": 3}),
            cwd,
            None,
            &fence(&[]),
        )
        .unwrap();
        assert_eq!(openai.env, vec!["MY_KEY", "OPENAI_API_KEY", "T"]);
        let wide = Grant {
            write: vec!["/srv".into()],
            ..Grant::default()
        };
        let e = Policy::for_plugin(
            &info(Kind::Tools, "t", &[CAP_FS_READ]),
            &json!(null),
            cwd,
            Some(&wide),
            &fence(&[]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not declare fs:write"), "{e}");
        // A log beside the verdict cache: its file is written, not the directory.
        let cache = dir.path().join("cache");
        let beside = Policy::for_plugin(
            &info(Kind::Sinks, "s", SINK),
            &json!({"path": log}),
            cwd,
            None,
            &fence(&[cache]),
        )
        .unwrap();
        assert_eq!((beside.write, beside.write_files), (vec![], vec![log]));
        // A working directory that holds the home directory is not read by default.
        let home = [dir.path().join("home")];
        let reader = Policy::for_plugin(
            &info(Kind::Tools, "r", &[CAP_FS_READ]),
            &json!(null),
            dir.path(),
            None,
            &fence(&home),
        )
        .unwrap();
        assert!(reader.read.is_empty(), "{:?}", reader.read);
    }

    #[test]
    fn zu_toml_and_another_plugins_log_are_kept_out_of_a_readable_directory() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path();
        for f in ["zu.toml", "run.db", "run.db-wal", "notes.md", "sub/deep.md"] {
            std::fs::create_dir_all(cwd.join(f).parent().unwrap()).unwrap();
            std::fs::write(cwd.join(f), "x").unwrap();
        }
        let (settings, log) = ([cwd.join("zu.toml")], [cwd.join("run.db")]);
        let fence = Fence {
            protected: &[],
            settings: &settings,
            logs: &log,
        };
        let reader = info(Kind::Tools, "r", &[CAP_FS_READ]);
        let p = Policy::for_plugin(&reader, &json!({"root": "."}), cwd, None, &fence).unwrap();
        let mut read = p.read.clone();
        read.sort();
        assert_eq!(
            read,
            vec![cwd.join("notes.md"), cwd.join("sub")],
            "the log, its companion and zu.toml are out"
        );
        let writer = info(Kind::Tools, "w", SINK);
        let e = Policy::for_plugin(&writer, &json!({"out": cwd.join("new.txt")}), cwd, None, &fence).unwrap_err();
        assert!(e.to_string().contains("another plugin's log"), "{e}");
        let own = Fence {
            protected: &[],
            settings: &settings,
            logs: &[],
        };
        let sink = Policy::for_plugin(&writer, &json!({"path": cwd.join("run.db")}), cwd, None, &own).unwrap();
        assert_eq!(sink.writes_private.as_deref(), Some(settings[0].as_path()));
        assert!(
            sink.missing_here().iter().any(|m| m.contains("zu.toml")),
            "required refuses it"
        );
        // A settings file by any name (--config-file prod.toml) is one.
        let prod = [cwd.join("prod.toml")];
        let other = Fence {
            protected: &[],
            settings: &prod,
            logs: &[],
        };
        let sink = Policy::for_plugin(&writer, &json!({"path": cwd.join("run.db")}), cwd, None, &other).unwrap();
        assert_eq!(sink.writes_private.as_deref(), Some(prod[0].as_path()));
    }

    #[test]
    fn a_sink_writes_its_own_logs_files_never_zu_toml_anothers_log_or_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path().canonicalize().unwrap();
        let cache = cwd.join("cache");
        std::fs::create_dir(&cache).unwrap();
        let (settings, logs) = ([cwd.join("zu.toml")], [cwd.join("theirs.db")]);
        let protected = [cache.clone()];
        let fence = Fence {
            protected: &protected,
            settings: &settings,
            logs: &logs,
        };
        let sink = info(Kind::Sinks, "s", SINK);
        let p = Policy::for_plugin(&sink, &json!({"path": "run.db"}), &cwd, None, &fence).unwrap();
        assert_eq!(p.write_files, vec![cwd.join("run.db")]);
        assert!(p.writes_private.is_none(), "beside zu.toml, it writes its file only");
        assert!(p.missing_here().iter().all(|m| !m.contains("zu.toml")));
        for (path, says) in [
            ("zu.toml", "a file of its own"),
            ("theirs.db", "a file of its own"),
            ("theirs.db-wal", "a file of its own"),
            ("cache/libs/x.so", "inside the verdict cache"),
        ] {
            let e = Policy::for_plugin(&sink, &json!({"path": path}), &cwd, None, &fence).unwrap_err();
            assert!(e.to_string().contains(says), "{path}: {e}");
        }
        // A reader (zu events) writes nothing and reads the log's directory
        // (to follow a log replaced there), zu.toml and others' logs kept out.
        std::fs::write(cwd.join("run.db"), "").unwrap();
        let reader =
            Policy::for_plugin(&sink, &json!({"path": "run.db", "read_only": true}), &cwd, None, &fence).unwrap();
        assert!(!reader.make_files && reader.write.is_empty());
        assert!(reader.read.contains(&cwd.join("run.db")), "{:?}", reader.read);
        assert!(!reader.read.iter().any(|r| r.ends_with("zu.toml") || r == &cwd));
        // A grant inside the cache is refused too, not only one holding it.
        let grant = Grant {
            write: vec![cache.join("libs")],
            ..Grant::default()
        };
        let e = Policy::for_plugin(&sink, &json!({}), &cwd, Some(&grant), &fence).unwrap_err();
        assert!(e.to_string().contains("inside the verdict cache"), "{e}");
    }

    #[test]
    fn a_config_path_that_climbs_out_is_judged_where_it_leads() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let proj = home.join("proj");
        std::fs::create_dir_all(&proj).unwrap();
        let protected = [home.canonicalize().unwrap()];
        // A log in the (real) home directory: that file is written, never
        // the home directory.
        let real_home = real(Path::new(&std::env::var_os("HOME").unwrap()));
        let log = real_home.join(format!("zu-test-{}.db", std::process::id()));
        let p = Policy::for_plugin(
            &info(Kind::Sinks, "s", SINK),
            &json!({ "path": log }),
            &proj,
            None,
            &fence(std::slice::from_ref(&real_home)),
        )
        .unwrap();
        assert_eq!((p.write, p.write_files), (vec![], vec![log]));
        let home = home.canonicalize().unwrap();
        // A tool writing beside a file it names writes that directory: not the home.
        let e = Policy::for_plugin(
            &info(Kind::Tools, "t", SINK),
            &json!({"out": "../notes.txt"}),
            &proj,
            None,
            &fence(&protected),
        )
        .unwrap_err();
        assert!(e.to_string().contains("directory of its own"), "{e}");
        assert_eq!(real(&proj.join("../new.db")), home.join("new.db"));
        // A `..` past what is missing: the part that exists, never above it.
        assert_eq!(real(&proj.join("missing/../../new.db")), proj.canonicalize().unwrap());
    }
}
