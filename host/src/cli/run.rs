//! `zu run`: one task through the loop. Settings come from flags, then from a
//! `zu.toml` in the working directory (flags win); the Result is printed as
//! JSON and the exit code says how the run ended.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use serde::Deserialize;
use serde_json::Value;
use zu_host::{discovery, run_task, Containment, EventBus, RunOptions};
use zu_plugin_api::contracts::{Budget, Status, TaskSpec};
use zu_plugin_api::version::Kind;

use super::{config_value, load_registry, missing_plugin, parse_configs};

/// Exit code: the run ended in ESCALATE.
pub const EXIT_ESCALATE: u8 = 3;
/// Exit code: the run ended in TERMINAL.
pub const EXIT_TERMINAL: u8 = 4;
/// Exit code: an error before or outside the run (bad config, no such plugin).
pub const EXIT_ERROR: u8 = 1;

#[derive(Args, Default)]
pub struct RunArgs {
    /// What the agent is asked to do.
    #[arg(long)]
    query: Option<String>,
    /// What the task is about (a URL, a path).
    #[arg(long)]
    target: Option<String>,
    /// The JSON Schema the result must satisfy, as JSON or @FILE.
    #[arg(long, value_name = "JSON")]
    output_schema: Option<String>,
    /// A whole TaskSpec as a JSON file (flags override its fields).
    #[arg(long, value_name = "FILE")]
    task: Option<PathBuf>,
    /// Model turns at most (default 20).
    #[arg(long)]
    max_steps: Option<u32>,
    /// Tokens at most (default 200000).
    #[arg(long)]
    max_tokens: Option<u64>,
    /// Wall-clock seconds for the run (default 120); also the deadline of every provider and tool call.
    #[arg(long)]
    wall_time_s: Option<u64>,
    /// Tool calls in one model response at most (default 32).
    #[arg(long)]
    max_tool_calls: Option<u32>,
    /// The highest tool tier the run may climb to (default 2).
    #[arg(long)]
    max_tier: Option<u32>,
    /// A plugin directory to scan (repeatable). Default: zu.toml's `plugins`, $ZU_PLUGIN_PATH, else
    /// $HOME/.local/share/zu/plugins.
    #[arg(long = "plugins", value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// The model provider plugin to use (e.g. scripted).
    #[arg(long, value_name = "NAME")]
    provider: Option<String>,
    /// The provider's config, as JSON or @FILE.
    #[arg(long, value_name = "JSON")]
    provider_config: Option<String>,
    /// Another provider plugin that takes over when the run climbs to a tier, as TIER=NAME
    /// (repeatable), e.g. 2=strong-model; configure it with --config providers.NAME=JSON.
    #[arg(long = "tier-provider", value_name = "TIER=NAME")]
    tier_providers: Vec<String>,
    /// A durable sink plugin for the event log (default: in memory).
    #[arg(long, value_name = "NAME")]
    sink: Option<String>,
    /// The sink's config, as JSON or @FILE (e.g. '{"path": "zu.db"}').
    #[arg(long, value_name = "JSON")]
    sink_config: Option<String>,
    /// Config for any other plugin, as KIND.NAME=JSON or KIND.NAME=@FILE (repeatable).
    #[arg(long = "config", value_name = "KIND.NAME=JSON")]
    configs: Vec<String>,
    /// `audit` (default) runs tools in-process; `required` refuses tools with egress, capabilities or
    /// tier >= 2 unless ZU_SANDBOXED is set.
    #[arg(long, value_name = "audit|required")]
    containment: Option<String>,
    /// Read settings from this file instead of ./zu.toml.
    #[arg(long, value_name = "FILE")]
    config_file: Option<PathBuf>,
}

/// `zu.toml`: the same settings as the flags.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    #[serde(default)]
    plugins: Vec<PathBuf>,
    containment: Option<String>,
    task: Option<FileTask>,
    provider: Option<Named>,
    /// `[tier_providers]`: `"2" = "strong-model"`.
    #[serde(default)]
    tier_providers: BTreeMap<String, String>,
    sink: Option<Named>,
    /// `[config.<kind>.<name>]` tables: each plugin's config.
    #[serde(default)]
    config: BTreeMap<String, BTreeMap<String, toml::Value>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileTask {
    query: Option<String>,
    target: Option<String>,
    output_schema: Option<toml::Value>,
    max_tier: Option<u32>,
    budget: Option<FileBudget>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileBudget {
    max_steps: Option<u32>,
    max_tokens: Option<u64>,
    wall_time_s: Option<u64>,
    max_tool_calls: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Named {
    name: String,
    config: Option<toml::Value>,
    /// A JSON file holding the config, relative to zu.toml.
    config_file: Option<PathBuf>,
}

fn fail(msg: impl std::fmt::Display) -> u8 {
    eprintln!("zu: {msg}");
    EXIT_ERROR
}

fn to_json(v: toml::Value) -> Value {
    serde_json::to_value(v).expect("TOML values are JSON values")
}

fn read_settings(path: &Path, required: bool) -> Result<(FileSettings, PathBuf), String> {
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text)
            .map(|s| (s, base))
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok((FileSettings::default(), base)),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn named_config(named: &Named, base: &Path, file: &Path, key: &str) -> Result<Option<Value>, String> {
    match (&named.config, &named.config_file) {
        (Some(_), Some(_)) => Err(format!(
            "{}: [{key}] has both config and config_file; give one",
            file.display()
        )),
        (Some(v), None) => Ok(Some(to_json(v.clone()))),
        (None, Some(f)) => {
            let path = base.join(f);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("{}: [{key}] config_file {}: {e}", file.display(), path.display()))?;
            serde_json::from_str(&text).map(Some).map_err(|e| {
                format!(
                    "{}: [{key}] config_file {} is not valid JSON: {e}",
                    file.display(),
                    path.display()
                )
            })
        }
        (None, None) => Ok(None),
    }
}

/// Everything the run needs, merged from flags and the settings file.
struct Plan {
    spec: TaskSpec,
    dirs: Vec<PathBuf>,
    provider: String,
    tier_providers: BTreeMap<u32, String>,
    sink: Option<String>,
    configs: Vec<(Kind, String, Value)>,
    containment: Containment,
}

fn plan(args: RunArgs) -> Result<Plan, String> {
    let file = args.config_file.clone().unwrap_or_else(|| PathBuf::from("zu.toml"));
    let (settings, base) = read_settings(&file, args.config_file.is_some())?;

    let mut spec = match &args.task {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("cannot read --task {}: {e}", path.display()))?;
            serde_json::from_str::<TaskSpec>(&text)
                .map_err(|e| format!("--task {}: not a TaskSpec: {e}", path.display()))?
        }
        None => TaskSpec::new(""),
    };
    let task = settings.task.unwrap_or_default();
    let budget = task.budget.unwrap_or_default();
    let from_task_file = args.task.is_some();
    // A --task file is the whole spec: zu.toml's [task] fills in only without one.
    spec.query = args
        .query
        .or(if from_task_file { None } else { task.query })
        .unwrap_or(spec.query);
    spec.target = args
        .target
        .or(if from_task_file { None } else { task.target })
        .or(spec.target);
    if let Some(raw) = &args.output_schema {
        spec.output_schema = config_value(raw).map_err(|e| format!("--output-schema: {e}"))?;
    } else if let (false, Some(s)) = (from_task_file, task.output_schema) {
        spec.output_schema = to_json(s);
    }
    let Budget {
        max_steps,
        max_tokens,
        wall_time_s,
        max_tool_calls,
    } = spec.budget.clone();
    spec.budget = Budget {
        max_steps: args.max_steps.or(budget.max_steps).unwrap_or(max_steps),
        max_tokens: args.max_tokens.or(budget.max_tokens).unwrap_or(max_tokens),
        wall_time_s: args.wall_time_s.or(budget.wall_time_s).unwrap_or(wall_time_s),
        max_tool_calls: args.max_tool_calls.or(budget.max_tool_calls).unwrap_or(max_tool_calls),
    };
    spec.max_tier = args.max_tier.or(task.max_tier).unwrap_or(spec.max_tier);
    if spec.query.trim().is_empty() {
        return Err("no task: give --query, --task FILE, or [task] query in zu.toml".into());
    }

    let mut configs = Vec::new();
    for (kind, plugins) in settings.config {
        let kind: Kind = kind
            .parse()
            .map_err(|e| format!("{}: [config.{kind}]: {e}", file.display()))?;
        for (name, value) in plugins {
            configs.push((kind, name, to_json(value)));
        }
    }
    configs.extend(parse_configs(&args.configs).map_err(|e| e.to_string())?);

    let file_provider = settings.provider;
    let provider = args
        .provider
        .clone()
        .or_else(|| file_provider.as_ref().map(|p| p.name.clone()))
        .ok_or("no model provider: give --provider NAME or [provider] name in zu.toml")?;
    let provider_config = match (&args.provider_config, &file_provider) {
        (Some(raw), _) => Some(config_value(raw).map_err(|e| format!("--provider-config: {e}"))?),
        (None, Some(p)) if p.name == provider => named_config(p, &base, &file, "provider")?,
        _ => None,
    };
    if let Some(c) = provider_config {
        configs.push((Kind::Providers, provider.clone(), c));
    }

    let mut tier_providers = BTreeMap::new();
    let from_file = settings
        .tier_providers
        .iter()
        .map(|(t, n)| (t.as_str(), n.as_str(), format!("{}: [tier_providers]", file.display())));
    let from_flags = args
        .tier_providers
        .iter()
        .filter_map(|a| a.split_once('='))
        .map(|(t, n)| (t, n, "--tier-provider".to_owned()));
    if let Some(bad) = args.tier_providers.iter().find(|a| !a.contains('=')) {
        return Err(format!(
            "--tier-provider {bad:?}: expected TIER=NAME, e.g. 2=strong-model"
        ));
    }
    for (tier, name, origin) in from_file.chain(from_flags) {
        let tier: u32 = tier
            .trim()
            .parse()
            .map_err(|_| format!("{origin}: tier {tier:?} is not a number"))?;
        tier_providers.insert(tier, name.trim().to_owned());
    }

    let file_sink = settings.sink;
    let sink = args.sink.clone().or_else(|| file_sink.as_ref().map(|s| s.name.clone()));
    if let Some(name) = &sink {
        let sink_config = match (&args.sink_config, &file_sink) {
            (Some(raw), _) => Some(config_value(raw).map_err(|e| format!("--sink-config: {e}"))?),
            (None, Some(s)) if &s.name == name => named_config(s, &base, &file, "sink")?,
            _ => None,
        };
        if let Some(c) = sink_config {
            configs.push((Kind::Sinks, name.clone(), c));
        }
    }

    let containment = match args.containment.or(settings.containment) {
        Some(c) => c.parse().map_err(|e: String| format!("containment: {e}"))?,
        None => Containment::Audit,
    };
    let dirs = if !args.dirs.is_empty() {
        args.dirs
    } else if !settings.plugins.is_empty() {
        settings.plugins.iter().map(|p| base.join(p)).collect()
    } else {
        discovery::plugin_dirs(&[])
    };
    Ok(Plan {
        spec,
        dirs,
        provider,
        tier_providers,
        sink,
        configs,
        containment,
    })
}

pub fn run(args: RunArgs) -> u8 {
    let plan = match plan(args) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let registry = match load_registry(&plan.dirs, plan.configs) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    for f in registry.failures() {
        tracing::warn!(code = f.error.code(), "{}", f.error);
    }
    let Some(provider) = registry.provider(&plan.provider) else {
        return fail(missing_plugin(
            &registry,
            Kind::Providers,
            "provider",
            &plan.provider,
            "",
        ));
    };
    let bus = match &plan.sink {
        None => EventBus::new(),
        Some(name) => match registry.sink(name) {
            Some(sink) => EventBus::with_sink(sink),
            None => return fail(missing_plugin(&registry, Kind::Sinks, "sink", name, "")),
        },
    };
    let mut providers_by_tier = BTreeMap::new();
    for (tier, name) in &plan.tier_providers {
        let Some(p) = registry.provider(name) else {
            return fail(missing_plugin(
                &registry,
                Kind::Providers,
                "provider",
                name,
                &format!(" for tier {tier}"),
            ));
        };
        providers_by_tier.insert(*tier, p);
    }
    let bus = Arc::new(bus);
    let options = RunOptions {
        providers_by_tier,
        containment: plan.containment,
        ..RunOptions::default()
    };
    let outcome = run_task(&plan.spec, provider, &registry, &bus, &options);
    let code = match outcome {
        Ok(result) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&result).expect("a Result is plain data")
            );
            let events = bus.count(&zu_plugin_api::filter::EventFilter::all()).unwrap_or(0);
            eprintln!(
                "zu: task {} ended {:?}; {events} events in the {} log",
                plan.spec.task_id,
                result.status,
                plan.sink.as_deref().unwrap_or("in-memory")
            );
            match result.status {
                Status::Success => crate::EXIT_OK,
                Status::Escalate => EXIT_ESCALATE,
                Status::Terminal => EXIT_TERMINAL,
            }
        }
        Err(e) => fail(e),
    };
    bus.close();
    code
}
