//! `zu plugins` and `zu check`: load libraries into a fresh registry and
//! report what loaded and what was refused, as a table or as one JSON object.
//! Both read the zu.toml `zu run` reads (plugin directories, `[config]`
//! tables); `zu plugins` also starts its MCP servers and lists their tools.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use crate::config::parse_config_args;
use crate::load::{self, config_flag, Loaded};
use crate::settings::Settings;
use crate::{exit, Failure};
use zu_runtime::display::escape;

#[derive(Args)]
pub struct PluginsArgs {
    /// A plugin directory to scan (repeatable). Default: zu.toml's, else $ZU_PLUGIN_PATH, else
    /// $HOME/.local/share/zu/plugins.
    #[arg(long = "plugins", value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// Config for one plugin's constructor, as KIND.NAME=JSON or KIND.NAME=@FILE (repeatable).
    #[arg(long = "config", value_name = "KIND.NAME=JSON")]
    configs: Vec<String>,
    /// Print one JSON object: {"plugins": [...], "failures": [...]}.
    #[arg(long)]
    json: bool,
    /// Exit 1 if any plugin or library was refused.
    #[arg(long)]
    strict: bool,
    /// Forget the cached verdicts (and quarantines) and probe every library again.
    #[arg(long)]
    rescan: bool,
    /// Read settings from this file instead of ./zu.toml.
    #[arg(long, value_name = "FILE")]
    config_file: Option<PathBuf>,
    #[command(flatten)]
    isolation_flags: load::IsolationFlags,
}

/// The settings file: `--config-file`, else ./zu.toml if there is one.
pub(crate) fn settings(flag: &Option<PathBuf>) -> Result<Settings, Failure> {
    let file = flag.clone().unwrap_or_else(|| PathBuf::from("zu.toml"));
    Settings::read(&file, flag.is_some())
}

pub fn run_plugins(args: PluginsArgs) -> Result<u8, Failure> {
    let (loaded, _mcp) = load_listed(
        &args.dirs,
        &args.configs,
        &args.config_file,
        &args.isolation_flags,
        args.rescan,
    )?;
    Ok(finish(&loaded, args.json, args.strict))
}

/// Loads what `zu plugins` lists: the plugin directories (flags, else
/// zu.toml, else the default), their configs, and zu.toml's MCP servers
/// (running while the handle lives).
pub(crate) fn load_listed(
    flag_dirs: &[PathBuf],
    flag_configs: &[String],
    config_file: &Option<PathBuf>,
    isolation: &load::IsolationFlags,
    rescan: bool,
) -> Result<(Loaded, zu_mcp::McpHost), Failure> {
    let mut settings = settings(config_file)?;
    let (dirs, _) = settings.plugins(flag_dirs)?;
    if let Some(hint) = dirs.nowhere_hint() {
        eprintln!("zu: {}", escape(&hint));
    }
    let mut configs = settings.plugin_configs()?;
    configs.extend(parse_config_args(flag_configs)?);
    let mut protection = isolation.protection(&load::FileContainment::take_from(&mut settings))?;
    protection.rescan = rescan;
    let private = protection.private_paths();
    let mut loaded = load::load(load::Source::Dirs(dirs), configs, config_flag, protection)?;
    let mcp = zu_mcp::start(
        &settings.file.mcp,
        &settings.base,
        &mut loaded.registry,
        load::mcp_jailer(private),
    );
    Ok((loaded, mcp))
}

pub(crate) fn finish(loaded: &Loaded, json: bool, strict: bool) -> u8 {
    let report = Report::of(loaded);
    if json {
        let text = serde_json::to_string_pretty(&report).expect("a report is plain data");
        crate::outln!("{}", zu_runtime::display::json(&text));
    } else {
        crate::output::write(&report.table());
    }
    if strict && !report.failures.is_empty() {
        exit::FAILED
    } else {
        exit::OK
    }
}

#[derive(Serialize)]
struct Report {
    plugins: Vec<PluginRow>,
    failures: Vec<FailureRow>,
}

#[derive(Serialize)]
struct PluginRow {
    kind: String,
    name: String,
    library: Option<String>,
    interface_version: String,
    tier: u32,
    capabilities: Vec<String>,
    egress: Vec<String>,
}

#[derive(Serialize)]
struct FailureRow {
    library: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    error: ErrorRow,
}

#[derive(Serialize)]
struct ErrorRow {
    code: &'static str,
    message: String,
}

impl Report {
    fn of(loaded: &Loaded) -> Self {
        let registry = &loaded.registry;
        let plugins = registry
            .entries()
            .map(|e| PluginRow {
                kind: e.info.kind.to_string(),
                name: e.info.name.clone(),
                library: e.info.library.as_ref().map(|p| p.display().to_string()),
                interface_version: e.info.interface_version.clone(),
                tier: e.info.tier,
                capabilities: e.info.capabilities.clone(),
                egress: e.info.egress.clone(),
            })
            .collect();
        let failures = registry
            .failures()
            .iter()
            .map(|f| FailureRow {
                library: f.library.as_ref().map(|p| p.display().to_string()),
                kind: f.kind.clone(),
                name: f.name.clone(),
                error: ErrorRow {
                    code: f.error.code(),
                    message: loaded.describe(f),
                },
            })
            .collect();
        Report { plugins, failures }
    }

    /// The table: every cell and message escaped (plugins and MCP servers
    /// choose their names, versions, envelopes and error messages), columns
    /// as wide as their widest escaped cell.
    fn table(&self) -> String {
        let mut out = String::new();
        let list = |v: &[String]| if v.is_empty() { "-".to_owned() } else { v.join(",") };
        let rows: Vec<[String; 7]> = self
            .plugins
            .iter()
            .map(|p| {
                [
                    p.kind.clone(),
                    p.name.clone(),
                    p.interface_version.clone(),
                    p.tier.to_string(),
                    list(&p.capabilities),
                    list(&p.egress),
                    p.library.clone().unwrap_or_else(|| "in-process".into()),
                ]
                .map(|c| escape(&c).into_owned())
            })
            .collect();
        out.push_str(&format!("{} plugin(s) loaded\n", rows.len()));
        if !rows.is_empty() {
            let header = ["KIND", "NAME", "INTERFACE", "TIER", "CAPABILITIES", "EGRESS", "LIBRARY"].map(String::from);
            let mut widths = header.clone().map(|h| h.len());
            for r in &rows {
                for (w, c) in widths.iter_mut().zip(r) {
                    *w = (*w).max(c.chars().count());
                }
            }
            for r in std::iter::once(&header).chain(&rows) {
                let cells: Vec<String> = r.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
                out.push_str(&format!("  {}\n", cells.join("  ").trim_end()));
            }
        }
        if !self.failures.is_empty() {
            out.push_str(&format!("{} refused\n", self.failures.len()));
            for f in &self.failures {
                out.push_str(&format!("  [{}] {}\n", f.error.code, escape(&f.error.message)));
            }
        }
        out
    }
}
