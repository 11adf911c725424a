//! The flags of `zu run` ([`RunArgs`]) merged with `zu.toml` (flags win)
//! into one [`Plan`]: the task, the plugins and their configs, and how the
//! run is contained, replayed, shaped and priced.

use std::collections::BTreeMap;
use std::path::PathBuf;

use uuid::Uuid;
use zu_loader::discovery::PluginDirs;
use zu_plugin_api::contracts::{Budget, TaskSpec};
use zu_plugin_api::version::Kind;
use zu_runtime::{Checks, Containment, Prices, Shaping, Strategy};

pub use super::args::RunArgs;
use crate::config::{json_flag, parse_config_args, PluginConfig};
use crate::load;
use crate::settings::{to_json, FileRun, Settings};
use crate::Failure;

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
    /// What the user gave (flags, zu.toml): a resumed run's plan fills the rest.
    pub(crate) given: super::recorded::Given,
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
    let chosen = settings.choose(
        &args.provider,
        &args.provider_config,
        "--provider-config",
        file_provider.as_ref(),
        "provider",
    )?;
    let given_provider = chosen.is_some();
    let (provider, provider_config) = match chosen {
        Some(c) => c,
        // A resumed run's provider comes from its plan on the log.
        None if args.resume.is_some() => (String::new(), None),
        None => {
            return Err(Failure::usage(
                "no model provider: give --provider NAME or [provider] name in zu.toml",
            ))
        }
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

    let given_containment = args.containment.is_some() || settings.file.containment.is_some();
    let given_checks = args.checks.is_some() || settings.file.checks.is_some();
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
    let (dirs, table) = settings.plugins(&args.dirs)?;
    let given = super::recorded::Given {
        provider: given_provider,
        dirs: !args.dirs.is_empty()
            || !table.dirs.is_empty()
            || std::env::var_os(zu_loader::discovery::PLUGIN_PATH_ENV).is_some_and(|p| !p.is_empty()),
        tools: args.tools.is_some() || table.tools.is_some(),
        detectors: args.detectors.is_some() || table.detectors.is_some(),
        validators: args.validators.is_some() || table.validators.is_some(),
        containment: given_containment,
        checks: given_checks,
        max_usd: more.max_usd.is_some(),
    };
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
        given,
        mcp: std::mem::take(&mut settings.file.mcp),
        base: settings.base.clone(),
    })
}
