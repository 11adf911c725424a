//! The flags of `zu run` (and of `zu pipeline`, which shares them) merged
//! with `zu.toml` (flags win) into one [`Plan`]: the task, the plugins and
//! their configs, and how the run is contained, replayed, shaped and priced.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use uuid::Uuid;
use zu_loader::discovery::PluginDirs;
use zu_plugin_api::contracts::{Budget, TaskSpec};
use zu_plugin_api::version::Kind;
use zu_runtime::{Checks, Containment, Prices, Shaping, Strategy};

use crate::config::{json_flag, parse_config_args, PluginConfig};
use crate::load;
use crate::settings::{to_json, FileRun, Settings};
use crate::Failure;

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
    /// `audit` (default) runs every plugin process in the sandbox this kernel offers and goes on
    /// where a layer is missing; `required` refuses to start when a plugin taking part would run
    /// without every layer (in zu's process, or a layer this kernel lacks), naming both.
    #[arg(long, value_name = "audit|required")]
    containment: Option<String>,
    /// A plugin (KIND.NAME) `required` accepts outside a sandbox (repeatable; also zu.toml
    /// trusted = [...]).
    #[arg(long = "trust", value_name = "KIND.NAME")]
    trusted: Vec<String>,
    /// Grant plugin KIND.NAME reading PATH in its sandbox (repeatable; it must declare fs:read;
    /// zu.toml [grants.KIND.NAME] read = [...]).
    #[arg(long = "allow-read", value_name = "KIND.NAME=PATH")]
    allow_read: Vec<String>,
    /// Grant plugin KIND.NAME writing PATH (repeatable; it must declare fs:write).
    #[arg(long = "allow-write", value_name = "KIND.NAME=PATH")]
    allow_write: Vec<String>,
    /// Grant plugin KIND.NAME reaching HOST[:PORT] in place of the hosts it declares, `*` for the
    /// open network where it declares that (repeatable; it must declare net).
    #[arg(long = "allow-net", value_name = "KIND.NAME=HOST[:PORT]")]
    allow_net: Vec<String>,
    /// Give plugin KIND.NAME the variable VAR of zu's environment (repeatable).
    #[arg(long = "allow-env", value_name = "KIND.NAME=VAR")]
    allow_env: Vec<String>,
    /// Set a limit of plugin KIND.NAME's sandbox: memory_mb, open_files, file_size_mb or
    /// processes (repeatable; zu.toml [grants.KIND.NAME] limits = {...}).
    #[arg(long = "limit", value_name = "KIND.NAME=FIELD:N")]
    limit: Vec<String>,
    /// Read settings from this file instead of ./zu.toml.
    #[arg(long, value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// A track file: replayed first (no model calls) when it exists and was recorded for this
    /// query; this run's tool path is recorded into it when the run succeeds.
    #[arg(long, value_name = "FILE")]
    track: Option<PathBuf>,
    /// Let this run's path replace a track recorded for another query in the
    /// --track file (without it, that track is kept and nothing is recorded).
    #[arg(long)]
    track_overwrite: bool,
    /// Model turns at most when the track replays (instead of --max-steps): a broken track fails
    /// fast and cheap.
    #[arg(long, value_name = "N")]
    replay_budget_steps: Option<u32>,
    /// A provider plugin that drives the rest of the run after a replay that did not diverge
    /// (a cheap model for the final extraction).
    #[arg(long, value_name = "NAME")]
    finish_provider: Option<String>,
    /// The median extra pause of each replayed step, in ms (log-normal, seeded by the trace);
    /// 0 (default) replays at once with recorded gaps capped at 3 s.
    #[arg(long, value_name = "MS")]
    replay_jitter_ms: Option<u64>,
    /// Content fields of an observation longer than this many characters are shaped before the
    /// model reads them (the log keeps them whole).
    #[arg(long, value_name = "N")]
    max_observation_chars: Option<usize>,
    /// How: `truncate` (default: a pointer to the log) or `extract` (the provider pulls what is
    /// relevant out of each chunk; those calls are logged and budgeted).
    #[arg(long, value_name = "truncate|extract")]
    observation_strategy: Option<String>,
    /// Keep the conversation under this many characters by eliding old observations.
    #[arg(long, value_name = "N")]
    max_context_chars: Option<usize>,
    /// Dollars the run may spend; it ends TERMINAL `budget:max_usd` once past them. Refused
    /// when a provider's model has no price.
    #[arg(long, value_name = "USD")]
    max_usd: Option<f64>,
    /// A TOML price file (`[models."id"] input = .., output = ..`, USD per million tokens)
    /// added to the built-in table.
    #[arg(long, value_name = "FILE")]
    prices: Option<PathBuf>,
    /// Continue this task's run, which has no end on the --sink log (killed, crashed): its
    /// task and budget come from the log, its tool calls that returned are not made again.
    #[arg(long, value_name = "TASK_ID")]
    resume: Option<Uuid>,
    #[command(flatten)]
    isolation_flags: load::IsolationFlags,
}

/// Everything the run needs, merged from flags and the settings file.
pub(crate) struct Plan {
    pub(crate) spec: TaskSpec,
    pub(crate) dirs: PluginDirs,
    pub(crate) provider: String,
    pub(crate) tier_providers: BTreeMap<u32, String>,
    pub(crate) sink: Option<String>,
    pub(crate) configs: Vec<PluginConfig>,
    pub(crate) containment: Containment,
    pub(crate) trusted: Vec<String>,
    pub(crate) checks: Checks,
    pub(crate) tools: Option<Vec<String>>,
    pub(crate) detectors: Option<Vec<String>>,
    pub(crate) validators: Option<Vec<String>>,
    pub(crate) protection: zu_loader::Protection,
    pub(crate) track: Option<PathBuf>,
    pub(crate) track_overwrite: bool,
    pub(crate) replay_budget: Option<Budget>,
    pub(crate) finish_provider: Option<String>,
    pub(crate) replay_jitter_ms: u64,
    pub(crate) shaping: Shaping,
    pub(crate) max_usd: Option<f64>,
    pub(crate) prices: Prices,
    pub(crate) resume: Option<Uuid>,
    /// MCP servers whose tools take part, and the directory their paths start from.
    pub(crate) mcp: zu_mcp::McpConfig,
    pub(crate) base: PathBuf,
}

/// What the query may be: a run needs one, a resumed run or a pipeline not.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Query {
    Required,
    Optional,
}

/// A comma-separated list of names; blank entries are dropped, so '' is none.
fn names(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect()
}

fn task_spec(args: &RunArgs, settings: &mut Settings, query: Query) -> Result<TaskSpec, Failure> {
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
    if spec.query.trim().is_empty() && query == Query::Required {
        return Err(Failure::usage(
            "no task: give --query, --task FILE, or [task] query in zu.toml",
        ));
    }
    Ok(spec)
}

/// The replay, shaping and pricing settings: flags, else zu.toml's `[run]`
/// (its paths relative to the file).
fn run_settings(args: &RunArgs, file: FileRun, settings: &Settings, spec: &TaskSpec) -> Result<RunSettings, Failure> {
    let origin = |key: &str| format!("{} [run] {key}", settings.path.display());
    let strategy = match args.observation_strategy.clone().or(file.observation_strategy) {
        Some(s) => s
            .parse()
            .map_err(|e: String| Failure::usage(format!("observation strategy: {e}")))?,
        None => Strategy::Truncate,
    };
    let max_usd = args.max_usd.or(file.max_usd);
    if let Some(x) = max_usd.filter(|x| !x.is_finite() || *x < 0.0) {
        return Err(Failure::usage(format!(
            "--max-usd {x}: expected a non-negative number of dollars"
        )));
    }
    let file_prices = file.prices.map(|p| settings.existing(&p, "[run] prices")).transpose()?;
    let prices = match args.prices.clone().or(file_prices) {
        Some(p) => Prices::with_file(&p).map_err(|e| Failure::usage(e.to_string()))?,
        None => Prices::default(),
    };
    if file.replay_budget_steps == Some(0) || args.replay_budget_steps == Some(0) {
        return Err(Failure::usage(format!(
            "{}: must be at least 1",
            origin("replay_budget_steps")
        )));
    }
    let replay_budget = args.replay_budget_steps.or(file.replay_budget_steps).map(|n| Budget {
        max_steps: n,
        ..spec.budget.clone()
    });
    Ok(RunSettings {
        track: args.track.clone().or(file.track.map(|t| settings.base.join(t))),
        replay_budget,
        finish_provider: args.finish_provider.clone().or(file.finish_provider),
        replay_jitter_ms: args.replay_jitter_ms.or(file.replay_jitter_ms).unwrap_or(0),
        shaping: Shaping {
            max_observation_chars: args.max_observation_chars.or(file.max_observation_chars),
            strategy,
            max_context_chars: args.max_context_chars.or(file.max_context_chars),
        },
        max_usd,
        prices,
    })
}

struct RunSettings {
    track: Option<PathBuf>,
    replay_budget: Option<Budget>,
    finish_provider: Option<String>,
    replay_jitter_ms: u64,
    shaping: Shaping,
    max_usd: Option<f64>,
    prices: Prices,
}

/// Merges `args` with the settings file into a plan.
pub(crate) fn plan(args: RunArgs, query: Query) -> Result<Plan, Failure> {
    let file = args.config_file.clone().unwrap_or_else(|| PathBuf::from("zu.toml"));
    let mut settings = Settings::read(&file, args.config_file.is_some())?;
    let query = if args.resume.is_some() { Query::Optional } else { query };
    let spec = task_spec(&args, &mut settings, query)?;
    let file_run = settings.file.run.take().unwrap_or_default();
    let more = run_settings(&args, file_run, &settings, &spec)?;
    let mut configs = settings.plugin_configs()?;
    configs.extend(parse_config_args(&args.configs)?);

    let file_provider = settings.file.provider.take();
    let (provider, provider_config) = settings
        .choose(
            &args.provider,
            &args.provider_config,
            "--provider-config",
            file_provider.as_ref(),
            "provider",
        )?
        .ok_or_else(|| Failure::usage("no model provider: give --provider NAME or [provider] name in zu.toml"))?;
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
    let chosen_sink = settings.choose(
        &args.sink,
        &args.sink_config,
        "--sink-config",
        file_sink.as_ref(),
        "sink",
    )?;
    let sink = chosen_sink.as_ref().map(|(name, _)| name.clone());
    if let Some((name, Some((value, origin)))) = chosen_sink {
        configs.push(PluginConfig {
            kind: Kind::Sinks,
            name,
            value,
            origin,
        });
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
    let mut file_containment = load::FileContainment::take_from(&mut settings);
    load::add_flag_grants(
        &mut file_containment.grants,
        [
            ("--allow-read", &args.allow_read),
            ("--allow-write", &args.allow_write),
            ("--allow-net", &args.allow_net),
            ("--allow-env", &args.allow_env),
            ("--limit", &args.limit),
        ],
    )?;
    let mut protection = args.isolation_flags.protection(&file_containment)?;
    // The run's log is its sink's alone.
    let log = sink.as_ref().and_then(|name| {
        let c = configs.iter().find(|c| c.kind == Kind::Sinks && c.name == *name)?;
        let path = zu_loader::sandbox::real(&std::path::absolute(c.value.get("path")?.as_str()?).ok()?);
        Some((path, Some((Kind::Sinks, name.clone()))))
    });
    protection.private_files.extend(log);
    let table = settings.file.plugins.take().map(|p| p.into_table()).unwrap_or_default();
    let dirs = settings.plugin_dirs(&args.dirs, &table.dirs)?;
    Ok(Plan {
        spec,
        dirs,
        provider,
        tier_providers,
        sink,
        configs,
        containment,
        trusted: {
            let mut t = args.trusted.clone();
            t.extend(settings.file.trusted.take().unwrap_or_default());
            t
        },
        checks,
        tools: args.tools.as_deref().map(names).or(table.tools),
        detectors: args.detectors.as_deref().map(names).or(table.detectors),
        validators: args.validators.as_deref().map(names).or(table.validators),
        protection,
        track: more.track,
        track_overwrite: args.track_overwrite,
        replay_budget: more.replay_budget,
        finish_provider: more.finish_provider,
        replay_jitter_ms: more.replay_jitter_ms,
        shaping: more.shaping,
        max_usd: more.max_usd,
        prices: more.prices,
        resume: args.resume,
        mcp: std::mem::take(&mut settings.file.mcp),
        base: settings.base.clone(),
    })
}
