//! Loading the plugins a subcommand needs: the directories (or where zu
//! looked when there are none), each plugin's config with where it came
//! from, a refusal of configs that name no plugin, and messages about
//! refused or missing plugins that name the flag the user actually used.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use zu_loader::discovery::PluginDirs;
use zu_loader::{Isolation, Loader, Protection};
use zu_plugin_api::version::Kind;
use zu_runtime::{LoadError, LoadFailure, Registry};

use crate::config::{ConfigError, PluginConfig};
use crate::Failure;
use zu_runtime::display::escape;

/// A registry loaded for one command, with the configs it was given.
pub struct Loaded {
    /// What loaded and what was refused.
    pub registry: Registry,
    /// Where the plugins came from.
    pub dirs: PluginDirs,
    configs: Vec<PluginConfig>,
    /// How this command configures an unconfigured plugin of a kind.
    how_to_configure: fn(Kind, &str) -> String,
}

/// How plugins are vetted and where they run: the flags every loading
/// subcommand takes.
#[derive(Args, Default, Clone)]
pub struct IsolationFlags {
    /// Seconds a library may take to open in the probe, and a constructor to
    /// return (default 10).
    #[arg(long, value_name = "S")]
    pub probe_timeout: Option<f64>,
    /// Where plugins run by default: `process` (the default: one process per
    /// library; a crash is an error value) or `in-process` (fastest; a crash
    /// ends zu).
    #[arg(long, value_name = "in-process|process")]
    pub isolation: Option<String>,
    /// Where one plugin runs, as KIND.NAME=MODE (repeatable), e.g. tools.file_read=in-process.
    #[arg(long = "isolate", value_name = "KIND.NAME=MODE")]
    pub isolate: Vec<String>,
}

/// zu.toml's `probe_timeout` and `[isolation]` (`default = "..."`,
/// `"KIND.NAME" = "..."`).
#[derive(Default)]
pub struct FileContainment {
    pub probe_timeout: Option<f64>,
    pub isolation: BTreeMap<String, String>,
    /// `[grants.KIND.NAME]`, its paths already relative to the file's directory.
    pub grants: BTreeMap<String, BTreeMap<String, zu_loader::sandbox::Grant>>,
    pub origin: String,
    /// zu.toml itself (canonical, when it exists): no plugin reads it.
    pub settings_file: Option<std::path::PathBuf>,
}

impl FileContainment {
    /// What zu.toml (`settings`) says of isolation and grants, taken out of it.
    pub fn take_from(settings: &mut crate::settings::Settings) -> Self {
        let mut grants = std::mem::take(&mut settings.file.grants);
        for g in grants.values_mut().flat_map(|m| m.values_mut()) {
            for path in g.read.iter_mut().chain(g.write.iter_mut()) {
                *path = settings.base.join(&*path);
            }
        }
        FileContainment {
            probe_timeout: settings.file.probe_timeout,
            isolation: std::mem::take(&mut settings.file.isolation),
            grants,
            origin: settings.path.display().to_string(),
            settings_file: settings.path.canonicalize().ok(),
        }
    }
}

fn mode(text: &str, origin: &str) -> Result<Isolation, Failure> {
    text.parse()
        .map_err(|e: String| Failure::usage(format!("{origin}: {e}")))
}

fn plugin_key(key: &str, origin: &str) -> Result<(Kind, String), Failure> {
    let (kind, name) = key
        .split_once('.')
        .ok_or_else(|| Failure::usage(format!("{origin}: {key:?} is not KIND.NAME")))?;
    let kind: Kind = kind.parse().map_err(|e| Failure::usage(format!("{origin}: {e}")))?;
    Ok((kind, name.to_owned()))
}

impl IsolationFlags {
    /// The loader's protection: flags first, then zu.toml, then defaults.
    pub fn protection(&self, file: &FileContainment) -> Result<Protection, Failure> {
        let exe = std::env::current_exe().map_err(|e| Failure::failed(format!("cannot find zu's own binary: {e}")))?;
        let mut p = Protection::new(&exe);
        if let Some(s) = self.probe_timeout.or(file.probe_timeout) {
            if !(s.is_finite() && s > 0.0 && s < 1e7) {
                return Err(Failure::usage(format!(
                    "probe timeout {s}: give a positive number of seconds"
                )));
            }
            p.probe_timeout = Duration::from_secs_f64(s);
        }
        for (kind, plugins) in &file.grants {
            for (name, grant) in plugins {
                let key = format!("{kind}.{name}");
                let (kind, name) = plugin_key(&key, &format!("{} [grants]", file.origin))?;
                p.grants.insert((kind, name), grant.clone());
            }
        }
        let table = format!("{} [isolation]", file.origin);
        for (key, value) in &file.isolation {
            match key.as_str() {
                "default" => p.isolation = mode(value, &table)?,
                key => {
                    p.isolate.insert(plugin_key(key, &table)?, mode(value, &table)?);
                }
            }
        }
        if let Some(m) = &self.isolation {
            p.isolation = mode(m, "--isolation")?;
        }
        for arg in &self.isolate {
            let (key, value) = arg
                .split_once('=')
                .ok_or_else(|| Failure::usage(format!("--isolate {arg:?}: expected KIND.NAME=MODE")))?;
            p.isolate
                .insert(plugin_key(key, "--isolate")?, mode(value, "--isolate")?);
        }
        p.private_files
            .extend(file.settings_file.iter().map(|f| (f.clone(), None)));
        Ok(p)
    }
}

/// `--config KIND.NAME=JSON`: how `zu plugins` and `zu check` configure a plugin.
pub fn config_flag(kind: Kind, name: &str) -> String {
    format!("--config {kind}.{name}=JSON")
}

/// What to load: the plugin directories, or one library file (`zu check`).
pub enum Source<'a> {
    /// Every library of these directories.
    Dirs(PluginDirs),
    /// One library.
    File(&'a std::path::Path),
}

/// Loads the plugins of `source`, passing each plugin its config. A config
/// for a plugin that is neither loaded nor refused is a usage error.
pub fn load(
    source: Source<'_>,
    configs: Vec<PluginConfig>,
    how_to_configure: fn(Kind, &str) -> String,
    protection: Protection,
) -> Result<Loaded, Failure> {
    let mut loader = Loader::protected(protection);
    for c in &configs {
        loader.set_config(c.kind, &c.name, c.value.clone());
    }
    let mut registry = Registry::new();
    let dirs = match source {
        Source::Dirs(dirs) => {
            loader
                .load_dirs(&mut registry, &dirs.dirs)
                .map_err(|e| Failure::usage(e.to_string()))?;
            dirs
        }
        Source::File(path) => {
            loader.load_file(&mut registry, path);
            zu_loader::discovery::plugin_dirs(&[path.to_owned()])
        }
    };
    let loaded = Loaded {
        registry,
        dirs,
        configs,
        how_to_configure,
    };
    loaded.check_configs()?;
    Ok(loaded)
}

impl Loaded {
    fn refusal(&self, kind: Kind, name: &str) -> Option<&LoadFailure> {
        self.registry
            .failures()
            .iter()
            .find(|f| f.kind.as_deref() == Some(kind.as_str()) && f.name.as_deref() == Some(name))
    }

    /// A config naming a plugin that did not even try to load is a typo.
    fn check_configs(&self) -> Result<(), Failure> {
        for c in &self.configs {
            if self.registry.get(c.kind, &c.name).is_none() && self.refusal(c.kind, &c.name).is_none() {
                let why = match self.why_none_loaded() {
                    Some(cause) => format!("no plugin could load: {cause}"),
                    None => format!("no {} plugin has that name; {}", c.kind, self.loaded_list(c.kind)),
                };
                return Err(Failure::usage(
                    ConfigError::NoSuchPlugin {
                        origin: c.origin.clone(),
                        kind: c.kind,
                        name: c.name.clone(),
                        why,
                    }
                    .to_string(),
                ));
            }
        }
        Ok(())
    }

    /// A refusal's message, with a hint on the plugin's config where the
    /// constructor refused it.
    pub fn describe(&self, failure: &LoadFailure) -> String {
        let message = failure.error.to_string();
        let LoadError::ConstructorFailed { kind, name, .. } = &failure.error else {
            return message;
        };
        match self.configs.iter().find(|c| c.kind == *kind && &c.name == name) {
            Some(c) => format!("{message}; check its config ({})", c.origin),
            None => format!(
                "{message}; it was given no config: give it one with {}",
                (self.how_to_configure)(*kind, name)
            ),
        }
    }

    /// `loaded KIND: a, b` (or `none`), each name escaped (plugins and MCP
    /// servers choose them; a message must not break on one).
    fn loaded_list(&self, kind: Kind) -> String {
        let names: Vec<String> = self
            .registry
            .names(kind)
            .iter()
            .map(|n| escape(n).into_owned())
            .collect();
        let names = if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        };
        format!("loaded {kind}: {names}")
    }

    /// Why a wanted plugin may be missing other than a typo, the real cause
    /// first: no plugin directory was found, or libraries were refused whole
    /// (before any plugin in them was named).
    fn why_none_loaded(&self) -> Option<String> {
        if let Some(hint) = self.dirs.nowhere_hint() {
            return Some(hint);
        }
        let whole: Vec<String> = self
            .registry
            .failures()
            .iter()
            .filter(|f| f.name.is_none())
            .map(|f| escape(&format!("[{}] {}", f.error.code(), f.error)).into_owned())
            .collect();
        if whole.is_empty() {
            return None;
        }
        let shown = whole.iter().take(3).cloned().collect::<Vec<_>>().join("; ");
        let more = whole.len().saturating_sub(3);
        let more = if more > 0 {
            format!(" (and {more} more)")
        } else {
            String::new()
        };
        Some(format!(
            "{} librar{} refused: {shown}{more}",
            whole.len(),
            if whole.len() == 1 { "y was" } else { "ies were" }
        ))
    }

    /// Why the `kind` plugin `name` is not in the registry, the real cause
    /// first: its refusal if it was refused; no plugin directory, or
    /// libraries refused whole; else what did load. Text from plugins in it
    /// is escaped, each part on one line.
    pub fn missing(&self, kind: Kind, name: &str, context: &str) -> String {
        if let Some(f) = self.refusal(kind, name) {
            return escape(&self.describe(f)).into_owned();
        }
        let noun = kind.noun();
        let missing = format!("no {noun} plugin named {name:?}{context}");
        match self.why_none_loaded() {
            Some(cause) => format!("{cause}; so {missing}; {}", self.loaded_list(kind)),
            None => format!("{missing}; {}", self.loaded_list(kind)),
        }
    }

    /// Prints every refusal once, on stderr, except those of `skip` (which
    /// the caller reports as its error).
    pub fn warn_refused(&self, skip: &[(Kind, &str)]) {
        for f in self.registry.failures() {
            let skipped = skip
                .iter()
                .any(|(k, n)| f.kind.as_deref() == Some(k.as_str()) && f.name.as_deref() == Some(*n));
            if !skipped {
                eprintln!("zu: refused [{}] {}", f.error.code(), escape(&self.describe(f)));
            }
        }
    }
}

/// How `zu` starts stdio MCP servers: inside the sandbox (`zu __jail`), with
/// the policy their config makes, `private` files (zu.toml, the log) kept
/// out of what they read.
pub fn mcp_jailer(private: Vec<std::path::PathBuf>) -> Option<zu_mcp::Jailer> {
    let exe = std::env::current_exe().ok()?;
    Some(std::sync::Arc::new(
        move |name: &str, c: &zu_mcp::ServerConfig, command: &std::path::Path, cwd: &std::path::Path| {
            let mut policy = zu_loader::sandbox::Policy::for_server(
                command,
                &c.args,
                cwd,
                &c.capabilities,
                &c.egress,
                &c.hosts,
                &c.read,
                &c.write,
                &c.exec,
            )
            .map_err(|e| e.to_string())?;
            policy.keep_out_of_reads(&private);
            if let Some(limits) = &c.limits {
                policy.limits = serde_json::from_value(limits.clone()).map_err(|e| format!("limits: {e}"))?;
            }
            let env = zu_loader::sandbox::environment(&zu_loader::sandbox::Policy {
                env: Vec::new(),
                ..policy.clone()
            })
            .into_iter()
            .map(|(k, v)| (k, v.to_string_lossy().into_owned()))
            .collect();
            let gate = policy
                .gate(&format!("mcp.{name}"))
                .map(|(gate, end)| (Box::new(gate) as Box<dyn std::any::Any + Send + Sync>, end));
            Ok(zu_mcp::Jail {
                program: exe.clone(),
                before: vec![zu_loader::sandbox::JAIL_COMMAND.to_owned(), "--".to_owned()],
                env,
                missing: policy.missing_here(),
                gate,
                pass: zu_loader::sandbox::pass_gate,
            })
        },
    ))
}

/// The `--allow-*` flags added to zu.toml's grants (paths as given: relative
/// to the working directory).
pub fn add_flag_grants(
    grants: &mut BTreeMap<String, BTreeMap<String, zu_loader::sandbox::Grant>>,
    flags: [(&str, &Vec<String>); 5],
) -> Result<(), Failure> {
    for (flag, values) in flags {
        for v in values {
            let (key, value) = v
                .split_once('=')
                .filter(|(k, v)| !v.is_empty() && k.contains('.'))
                .ok_or_else(|| Failure::usage(format!("{flag} {v:?}: expected KIND.NAME=VALUE")))?;
            let (kind, name) = key.split_once('.').expect("checked above");
            kind.parse::<Kind>()
                .map_err(|e| Failure::usage(format!("{flag} {v:?}: {e}")))?;
            let g = grants
                .entry(kind.to_owned())
                .or_default()
                .entry(name.to_owned())
                .or_default();
            match flag {
                "--allow-read" => g.read.push(value.into()),
                "--allow-write" => g.write.push(value.into()),
                "--allow-net" => g.hosts.push(value.to_owned()),
                "--allow-env" => g.env.push(value.to_owned()),
                _ => set_limit(g.limits.get_or_insert_with(Default::default), value)
                    .map_err(|e| Failure::usage(format!("{flag} {v:?}: {e}")))?,
            }
        }
    }
    Ok(())
}

/// `FIELD:N` (a field of the sandbox's limits, as zu.toml names it) into `limits`.
fn set_limit(limits: &mut zu_loader::sandbox::Limits, text: &str) -> Result<(), String> {
    let (field, n) = text.split_once(':').ok_or("expected FIELD:N, e.g. memory_mb:4096")?;
    let n: u64 = n.parse().map_err(|_| format!("{n:?} is not a whole number"))?;
    match field {
        "memory_mb" => limits.memory_mb = n,
        "open_files" => limits.open_files = n,
        "file_size_mb" => limits.file_size_mb = n,
        "processes" => limits.processes = n,
        other => {
            return Err(format!(
                "no limit {other:?} (memory_mb, open_files, file_size_mb, processes)"
            ))
        }
    }
    Ok(())
}
