//! `zu.toml`, the settings file of `zu run`: the same settings as its flags
//! (flags win), parsed strictly (an unknown key is an error naming it).
//! Paths in it are relative to the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use zu_plugin_api::version::Kind;

use zu_loader::discovery::PluginDirs;

use crate::config::{json_file, PluginConfig};
use crate::Failure;

/// The whole file.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// `plugins = ["dir"]`, or a `[plugins]` table.
    #[serde(default)]
    pub plugins: Option<FilePlugins>,
    pub containment: Option<String>,
    /// Plugins (`KIND.NAME`) that `containment = "required"` accepts outside a sandbox.
    pub trusted: Option<Vec<String>>,
    /// `checks = "fail-open" | "fail-closed"`.
    pub checks: Option<String>,
    /// Seconds to open a library in the probe, and for a constructor.
    pub probe_timeout: Option<f64>,
    /// `[isolation]`: `default = "process"`, `"tools.file_read" = "in-process"`.
    #[serde(default)]
    pub isolation: BTreeMap<String, String>,
    pub task: Option<FileTask>,
    pub provider: Option<Named>,
    /// `[tier_providers]`: `"2" = "strong-model"`.
    #[serde(default)]
    pub tier_providers: BTreeMap<String, String>,
    pub sink: Option<Named>,
    /// `[run]`: replay, observation shaping and the dollar budget.
    pub run: Option<FileRun>,
    /// `[mcp.servers.NAME]`: MCP servers whose tools take part.
    #[serde(default)]
    pub mcp: zu_mcp::McpConfig,
    /// `[grants.KIND.NAME]`: what a plugin's sandbox gives it beyond its defaults.
    #[serde(default)]
    pub grants: BTreeMap<String, BTreeMap<String, zu_loader::sandbox::Grant>>,
    /// `[serve]`: the host names and token of `zu serve`.
    pub serve: Option<FileServe>,
    /// `[config.<kind>.<name>]` tables: each plugin's config.
    #[serde(default)]
    pub config: BTreeMap<String, BTreeMap<String, toml::Value>>,
}

/// `plugins = ["dir", ...]` (directories only) or the `[plugins]` table.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum FilePlugins {
    /// Directories to scan.
    Dirs(Vec<PathBuf>),
    /// Directories and the plugins that take part in a run.
    Table(PluginsTable),
}

/// `[plugins]`: where plugins are, and which of them a run uses (a kind
/// that is not listed uses every loaded plugin of that kind).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PluginsTable {
    #[serde(default)]
    pub dirs: Vec<PathBuf>,
    pub tools: Option<Vec<String>>,
    pub detectors: Option<Vec<String>>,
    pub validators: Option<Vec<String>>,
}

impl FilePlugins {
    /// As a table (the list form names directories only).
    pub fn into_table(self) -> PluginsTable {
        match self {
            FilePlugins::Dirs(dirs) => PluginsTable {
                dirs,
                ..PluginsTable::default()
            },
            FilePlugins::Table(t) => t,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileTask {
    pub query: Option<String>,
    pub target: Option<String>,
    pub output_schema: Option<toml::Value>,
    pub max_tier: Option<u32>,
    pub budget: Option<FileBudget>,
}

/// `[serve]`: the same settings as `zu serve`'s flags of those names.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileServe {
    /// More host names the server answers to (`--allow-host`).
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// The variable holding the token (`--token-env`).
    pub token_env: Option<String>,
}

/// `[run]`: the same settings as `zu run`'s flags of those names.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileRun {
    pub track: Option<PathBuf>,
    pub replay_budget_steps: Option<u32>,
    pub finish_provider: Option<String>,
    pub replay_jitter_ms: Option<u64>,
    pub max_observation_chars: Option<usize>,
    pub observation_strategy: Option<String>,
    pub max_context_chars: Option<usize>,
    pub max_usd: Option<f64>,
    pub prices: Option<PathBuf>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct FileBudget {
    pub max_steps: Option<u32>,
    pub max_tokens: Option<u64>,
    pub wall_time_s: Option<u64>,
    pub max_tool_calls: Option<u32>,
}

/// `[provider]` or `[sink]`: a plugin by name, with its config inline or in
/// a JSON file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Named {
    pub name: String,
    pub config: Option<toml::Value>,
    /// A JSON file holding the config, relative to zu.toml.
    pub config_file: Option<PathBuf>,
}

/// A plugin chosen by name, with its config and where the config came from.
pub type Chosen = (String, Option<(Value, String)>);

/// A TOML value as JSON.
pub fn to_json(v: toml::Value) -> Value {
    serde_json::to_value(v).expect("TOML values are JSON values")
}

/// A settings file and the directory its relative paths start from.
pub struct Settings {
    pub file: FileSettings,
    pub path: PathBuf,
    pub base: PathBuf,
}

impl Settings {
    /// Reads `path`; a missing file is empty settings unless `required`.
    pub fn read(path: &Path, required: bool) -> Result<Settings, Failure> {
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let file = match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => FileSettings::default(),
            Err(e) => return Err(Failure::usage(format!("cannot read {}: {e}", path.display()))),
        };
        Ok(Settings {
            file,
            path: path.to_owned(),
            base,
        })
    }

    /// A path the file gives under `key`, from the file's directory; one
    /// that does not exist is an error naming the file and the key.
    pub fn existing(&self, given: &Path, key: &str) -> Result<PathBuf, Failure> {
        let path = self.base.join(given);
        if path.exists() {
            return Ok(path);
        }
        Err(Failure::usage(format!(
            "{}: {key}: {} does not exist (paths in {} are relative to its directory{})",
            self.path.display(),
            given.display(),
            self.path.display(),
            match self.base.as_os_str().is_empty() {
                true => String::new(),
                false => format!(", {}", self.base.display()),
            }
        )))
    }

    /// The file's `[plugins]` table (taken out of it), and where plugins
    /// are: the `--plugins` flags (`given`), else the table's directories
    /// (each must exist, from the file's directory), else `$ZU_PLUGIN_PATH`
    /// or the default directory.
    pub fn plugins(&mut self, given: &[PathBuf]) -> Result<(PluginDirs, PluginsTable), Failure> {
        let table = self.file.plugins.take().map(|p| p.into_table()).unwrap_or_default();
        if !given.is_empty() || table.dirs.is_empty() {
            return Ok((zu_loader::discovery::plugin_dirs(given), table));
        }
        let dirs = table
            .dirs
            .iter()
            .map(|d| self.existing(d, "plugins"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((zu_loader::discovery::plugin_dirs(&dirs), table))
    }

    /// The config of `[provider]`/`[sink]` (`key`), inline or from its file.
    pub fn named_config(&self, named: &Named, key: &str) -> Result<Option<Value>, Failure> {
        let origin = format!("{} [{key}]", self.path.display());
        match (&named.config, &named.config_file) {
            (Some(_), Some(_)) => Err(Failure::usage(format!(
                "{origin} has both config and config_file; give one"
            ))),
            (Some(v), None) => Ok(Some(to_json(v.clone()))),
            (None, Some(f)) => Ok(Some(json_file(&self.base.join(f), &format!("{origin} config_file"))?)),
            (None, None) => Ok(None),
        }
    }

    /// The plugin a flag names (`name_flag`), else the one `[key]` (`named`)
    /// names, with its config: the flag's JSON (`config_flag`, as `flag`)
    /// wins, else the table's config when the table names the same plugin.
    /// The config comes with its origin, for messages.
    pub fn choose(
        &self,
        name_flag: &Option<String>,
        config_flag: &Option<String>,
        flag: &str,
        named: Option<&Named>,
        key: &str,
    ) -> Result<Option<Chosen>, Failure> {
        let Some(name) = name_flag.clone().or_else(|| named.map(|n| n.name.clone())) else {
            return Ok(None);
        };
        let config = match (config_flag, named) {
            (Some(raw), _) => Some((crate::config::json_flag(flag, raw)?, flag.to_owned())),
            (None, Some(n)) if n.name == name => self
                .named_config(n, key)?
                .map(|v| (v, format!("{} [{key}]", self.path.display()))),
            _ => None,
        };
        Ok(Some((name, config)))
    }

    /// Every `[config.<kind>.<name>]` table.
    pub fn plugin_configs(&mut self) -> Result<Vec<PluginConfig>, Failure> {
        let mut out = Vec::new();
        for (kind, plugins) in std::mem::take(&mut self.file.config) {
            let parsed: Kind = kind
                .parse()
                .map_err(|e| Failure::usage(format!("{}: [config.{kind}]: {e}", self.path.display())))?;
            for (name, value) in plugins {
                out.push(PluginConfig {
                    kind: parsed,
                    origin: format!("{} [config.{kind}.{name}]", self.path.display()),
                    name,
                    value: to_json(value),
                });
            }
        }
        Ok(out)
    }
}
