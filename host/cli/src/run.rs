//! `zu run`: one task through the loop. Settings come from flags, then from a
//! `zu.toml` in the working directory (flags win); the plugins taking part
//! are printed on stderr, the Result as JSON on stdout, and the exit code
//! says how the run ended.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use zu_loader::discovery::{self, PluginDirs};
use zu_plugin_api::contracts::{Budget, Status, TaskSpec};
use zu_plugin_api::filter::EventFilter;
use zu_plugin_api::version::Kind;
use zu_runtime::{run_task, Cancel, Checks, Containment, EventBus, RunOptions};

use crate::config::{json_flag, parse_config_args, PluginConfig};
use crate::interrupt::Interrupts;
use crate::load::{self, Loaded};
use crate::settings::{to_json, Settings};
use crate::{exit, Failure};

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
    /// A plugin directory to scan (repeatable). Default: zu.toml's `plugins` (or `[plugins] dirs`),
    /// $ZU_PLUGIN_PATH, else $HOME/.local/share/zu/plugins.
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
    /// The tools that take part, comma-separated (default: every loaded tool; '' for none).
    #[arg(long, value_name = "NAME,...")]
    tools: Option<String>,
    /// The detectors that take part, comma-separated (default: every loaded detector; '' for none).
    #[arg(long, value_name = "NAME,...")]
    detectors: Option<String>,
    /// The validators that take part, comma-separated (default: every loaded validator; '' for none).
    #[arg(long, value_name = "NAME,...")]
    validators: Option<String>,
    /// What a detector or validator that fails (an error, a panic) means: `fail-open` (default)
    /// records it and goes on; `fail-closed` ends the run TERMINAL. Either way it is on the log.
    #[arg(long, value_name = "fail-open|fail-closed")]
    checks: Option<String>,
    /// `audit` (default) runs tools in-process; `required` refuses tools with egress, capabilities or
    /// tier >= 2 unless ZU_SANDBOXED is set.
    #[arg(long, value_name = "audit|required")]
    containment: Option<String>,
    /// Read settings from this file instead of ./zu.toml.
    #[arg(long, value_name = "FILE")]
    config_file: Option<PathBuf>,
    #[command(flatten)]
    isolation_flags: load::IsolationFlags,
}

/// Everything the run needs, merged from flags and the settings file.
struct Plan {
    spec: TaskSpec,
    dirs: PluginDirs,
    provider: String,
    tier_providers: BTreeMap<u32, String>,
    sink: Option<String>,
    configs: Vec<PluginConfig>,
    containment: Containment,
    checks: Checks,
    tools: Option<Vec<String>>,
    detectors: Option<Vec<String>>,
    validators: Option<Vec<String>>,
    protection: zu_loader::Protection,
}

/// A comma-separated list of names; blank entries are dropped, so '' is none.
fn names(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect()
}

fn task_spec(args: &RunArgs, settings: &mut Settings) -> Result<TaskSpec, Failure> {
    let mut spec = match &args.task {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::usage(format!("cannot read --task {}: {e}", path.display())))?;
            serde_json::from_str::<TaskSpec>(&text)
                .map_err(|e| Failure::usage(format!("--task {}: not a TaskSpec: {e}", path.display())))?
        }
        None => TaskSpec::new(""),
    };
    let task = settings.file.task.take().unwrap_or_default();
    let budget = task.budget.unwrap_or_default();
    // A --task file is the whole spec: zu.toml's [task] fills in only without one.
    let from_file = args.task.is_none();
    spec.query = args
        .query
        .clone()
        .or(if from_file { task.query } else { None })
        .unwrap_or(spec.query);
    spec.target = args
        .target
        .clone()
        .or(if from_file { task.target } else { None })
        .or(spec.target);
    if let Some(raw) = &args.output_schema {
        spec.output_schema = json_flag("--output-schema", raw)?;
    } else if let (true, Some(s)) = (from_file, task.output_schema) {
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
        return Err(Failure::usage(
            "no task: give --query, --task FILE, or [task] query in zu.toml",
        ));
    }
    Ok(spec)
}

fn plan(args: RunArgs) -> Result<Plan, Failure> {
    let file = args.config_file.clone().unwrap_or_else(|| PathBuf::from("zu.toml"));
    let mut settings = Settings::read(&file, args.config_file.is_some())?;
    let spec = task_spec(&args, &mut settings)?;
    let mut configs = settings.plugin_configs()?;
    configs.extend(parse_config_args(&args.configs)?);

    let file_provider = settings.file.provider.take();
    let provider = args
        .provider
        .clone()
        .or_else(|| file_provider.as_ref().map(|p| p.name.clone()))
        .ok_or_else(|| Failure::usage("no model provider: give --provider NAME or [provider] name in zu.toml"))?;
    let provider_config = match (&args.provider_config, &file_provider) {
        (Some(raw), _) => Some((json_flag("--provider-config", raw)?, "--provider-config".to_owned())),
        (None, Some(p)) if p.name == provider => settings
            .named_config(p, "provider")?
            .map(|v| (v, format!("{} [provider]", file.display()))),
        _ => None,
    };
    if let Some((value, origin)) = provider_config {
        configs.push(PluginConfig {
            kind: Kind::Providers,
            name: provider.clone(),
            value,
            origin,
        });
    }

    if let Some(bad) = args.tier_providers.iter().find(|a| !a.contains('=')) {
        return Err(Failure::usage(format!(
            "--tier-provider {bad:?}: expected TIER=NAME, e.g. 2=strong-model"
        )));
    }
    let from_file = settings
        .file
        .tier_providers
        .iter()
        .map(|(t, n)| (t.as_str(), n.as_str(), format!("{}: [tier_providers]", file.display())));
    let from_flags = args
        .tier_providers
        .iter()
        .filter_map(|a| a.split_once('='))
        .map(|(t, n)| (t, n, "--tier-provider".to_owned()));
    let mut tier_providers = BTreeMap::new();
    for (tier, name, origin) in from_file.chain(from_flags) {
        let tier: u32 = tier
            .trim()
            .parse()
            .map_err(|_| Failure::usage(format!("{origin}: tier {tier:?} is not a number")))?;
        tier_providers.insert(tier, name.trim().to_owned());
    }

    let file_sink = settings.file.sink.take();
    let sink = args.sink.clone().or_else(|| file_sink.as_ref().map(|s| s.name.clone()));
    if let Some(name) = &sink {
        let sink_config = match (&args.sink_config, &file_sink) {
            (Some(raw), _) => Some((json_flag("--sink-config", raw)?, "--sink-config".to_owned())),
            (None, Some(s)) if &s.name == name => settings
                .named_config(s, "sink")?
                .map(|v| (v, format!("{} [sink]", file.display()))),
            _ => None,
        };
        if let Some((value, origin)) = sink_config {
            configs.push(PluginConfig {
                kind: Kind::Sinks,
                name: name.clone(),
                value,
                origin,
            });
        }
    }

    let containment = match args.containment.or(settings.file.containment.take()) {
        Some(c) => c
            .parse()
            .map_err(|e: String| Failure::usage(format!("containment: {e}")))?,
        None => Containment::Audit,
    };
    let checks = match args.checks.or(settings.file.checks.take()) {
        Some(c) => c.parse().map_err(|e: String| Failure::usage(format!("checks: {e}")))?,
        None => Checks::FailOpen,
    };
    let file_containment = load::FileContainment {
        probe_timeout: settings.file.probe_timeout,
        isolation: std::mem::take(&mut settings.file.isolation),
        origin: file.display().to_string(),
    };
    let protection = args.isolation_flags.protection(&file_containment)?;
    let table = settings.file.plugins.take().map(|p| p.into_table()).unwrap_or_default();
    let dirs = if !args.dirs.is_empty() {
        discovery::plugin_dirs(&args.dirs)
    } else if !table.dirs.is_empty() {
        let dirs: Vec<PathBuf> = table.dirs.iter().map(|p| settings.base.join(p)).collect();
        discovery::plugin_dirs(&dirs)
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
        checks,
        tools: args.tools.as_deref().map(names).or(table.tools),
        detectors: args.detectors.as_deref().map(names).or(table.detectors),
        validators: args.validators.as_deref().map(names).or(table.validators),
        protection,
    })
}

/// How `zu run` configures a plugin that got no config.
fn run_config_hint(kind: Kind, name: &str) -> String {
    match kind {
        Kind::Providers => {
            format!("--provider-config JSON (or [provider] config in zu.toml, or --config providers.{name}=JSON)")
        }
        Kind::Sinks => "--sink-config JSON (or [sink] config in zu.toml)".to_owned(),
        _ => format!("--config {kind}.{name}=JSON (or [config.{kind}.{name}] in zu.toml)"),
    }
}

/// The plugins of `kind` that take part: the chosen ones (each must be
/// loaded), or every loaded one.
fn chosen(loaded: &Loaded, kind: Kind, names: &Option<Vec<String>>) -> Result<Vec<String>, Failure> {
    match names {
        None => Ok(loaded.registry.names(kind)),
        Some(names) => {
            for n in names {
                if loaded.registry.get(kind, n).is_none() {
                    return Err(Failure::failed(loaded.missing(kind, n, "")));
                }
            }
            Ok(names.clone())
        }
    }
}

pub fn run(args: RunArgs) -> Result<u8, Failure> {
    let plan = plan(args)?;
    let loaded = load::load(
        load::Source::Dirs(plan.dirs.clone()),
        plan.configs.clone(),
        run_config_hint,
        plan.protection.clone(),
    )?;
    let registry = &loaded.registry;
    let mut named = vec![(Kind::Providers, plan.provider.as_str())];
    named.extend(plan.sink.as_deref().map(|s| (Kind::Sinks, s)));
    named.extend(plan.tier_providers.values().map(|n| (Kind::Providers, n.as_str())));
    for (kind, names) in [
        (Kind::Tools, &plan.tools),
        (Kind::Detectors, &plan.detectors),
        (Kind::Validators, &plan.validators),
    ] {
        named.extend(names.iter().flatten().map(|n| (kind, n.as_str())));
    }
    // Refusals of the plugins the run names are reported once, as its error.
    loaded.warn_refused(&named);
    let provider = registry
        .provider(&plan.provider)
        .ok_or_else(|| Failure::failed(loaded.missing(Kind::Providers, &plan.provider, "")))?;
    let bus = match &plan.sink {
        None => EventBus::new(),
        Some(name) => EventBus::with_sink_batched(
            registry
                .sink(name)
                .ok_or_else(|| Failure::failed(loaded.missing(Kind::Sinks, name, "")))?,
        ),
    };
    let mut providers_by_tier = BTreeMap::new();
    for (tier, name) in &plan.tier_providers {
        let p = registry
            .provider(name)
            .ok_or_else(|| Failure::failed(loaded.missing(Kind::Providers, name, &format!(" for tier {tier}"))))?;
        providers_by_tier.insert(*tier, p);
    }
    let tools = chosen(&loaded, Kind::Tools, &plan.tools)?;
    let detectors = chosen(&loaded, Kind::Detectors, &plan.detectors)?;
    let validators = chosen(&loaded, Kind::Validators, &plan.validators)?;
    let list = |v: &[String]| if v.is_empty() { "none".to_owned() } else { v.join(", ") };
    eprintln!(
        "zu: taking part: provider {}; tools: {}; detectors: {}; validators: {}",
        plan.provider,
        list(&tools),
        list(&detectors),
        list(&validators)
    );
    let bus = Arc::new(bus);
    let cancel = Arc::new(Cancel::new());
    let interrupts =
        Interrupts::watch(cancel.clone()).map_err(|e| Failure::failed(format!("cannot watch for signals: {e}")))?;
    let options = RunOptions {
        providers_by_tier,
        containment: plan.containment,
        checks: plan.checks,
        tools: Some(tools),
        detectors: Some(detectors),
        validators: Some(validators),
        cancel: Some(cancel),
        ..RunOptions::default()
    };
    let outcome = run_task(&plan.spec, provider, registry, &bus, &options);
    let code = match outcome {
        Ok(result) => {
            crate::outln!(
                "{}",
                serde_json::to_string_pretty(&result).expect("a Result is plain data")
            );
            let events = bus.count(&EventFilter::all()).unwrap_or(0);
            eprintln!(
                "zu: task {} ended {:?}; {events} events in the {} log",
                plan.spec.task_id,
                result.status,
                plan.sink.as_deref().unwrap_or("in-memory")
            );
            Ok(match (interrupts.code(), result.status) {
                (Some(signal), Status::Terminal) => signal,
                (_, Status::Success) => exit::OK,
                (_, Status::Escalate) => exit::ESCALATE,
                (_, Status::Terminal) => exit::TERMINAL,
            })
        }
        Err(e) => Err(Failure::failed(e.to_string())),
    };
    bus.close();
    code
}
