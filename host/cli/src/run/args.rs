//! The flags of `zu run`, which `zu pipeline` and `zu batch` share.

use std::path::PathBuf;

use clap::Args;
use uuid::Uuid;

use crate::load;

#[derive(Args, Default)]
pub struct RunArgs {
    /// What the agent is asked to do.
    #[arg(long)]
    pub(crate) query: Option<String>,
    /// What the task is about (a URL, a path).
    #[arg(long)]
    pub(crate) target: Option<String>,
    /// The JSON Schema the result must satisfy, as JSON or @FILE.
    #[arg(long, value_name = "JSON")]
    pub(crate) output_schema: Option<String>,
    /// A whole TaskSpec as a JSON file (flags override its fields).
    #[arg(long, value_name = "FILE")]
    pub(crate) task: Option<PathBuf>,
    /// Model turns at most (default 20).
    #[arg(long)]
    pub(crate) max_steps: Option<u32>,
    /// Tokens at most (default 200000).
    #[arg(long)]
    pub(crate) max_tokens: Option<u64>,
    /// Wall-clock seconds for the run (default 120); also the deadline of every provider and tool call.
    #[arg(long)]
    pub(crate) wall_time_s: Option<u64>,
    /// Tool calls in one model response at most (default 32).
    #[arg(long)]
    pub(crate) max_tool_calls: Option<u32>,
    /// The highest tool tier the run may climb to (default 2).
    #[arg(long)]
    pub(crate) max_tier: Option<u32>,
    /// A plugin directory to scan (repeatable). Default: zu.toml's `plugins` (or `[plugins] dirs`),
    /// $ZU_PLUGIN_PATH, else $HOME/.local/share/zu/plugins.
    #[arg(long = "plugins", value_name = "DIR")]
    pub(crate) dirs: Vec<PathBuf>,
    /// The model provider plugin to use (e.g. scripted).
    #[arg(long, value_name = "NAME")]
    pub(crate) provider: Option<String>,
    /// The provider's config, as JSON or @FILE.
    #[arg(long, value_name = "JSON")]
    pub(crate) provider_config: Option<String>,
    /// Another provider plugin that takes over when the run climbs to a tier, as TIER=NAME
    /// (repeatable), e.g. 2=strong-model; configure it with --config providers.NAME=JSON.
    #[arg(long = "tier-provider", value_name = "TIER=NAME")]
    pub(crate) tier_providers: Vec<String>,
    /// A durable sink plugin for the event log (default: in memory).
    #[arg(long, value_name = "NAME")]
    pub(crate) sink: Option<String>,
    /// The sink's config, as JSON or @FILE (e.g. '{"path": "zu.db"}').
    #[arg(long, value_name = "JSON")]
    pub(crate) sink_config: Option<String>,
    /// Config for any other plugin, as KIND.NAME=JSON or KIND.NAME=@FILE (repeatable).
    #[arg(long = "config", value_name = "KIND.NAME=JSON")]
    pub(crate) configs: Vec<String>,
    /// The tools that take part, comma-separated (default: every loaded tool; '' for none).
    #[arg(long, value_name = "NAME,...")]
    pub(crate) tools: Option<String>,
    /// The detectors that take part, comma-separated (default: every loaded detector; '' for none).
    #[arg(long, value_name = "NAME,...")]
    pub(crate) detectors: Option<String>,
    /// The validators that take part, comma-separated (default: every loaded validator; '' for none).
    #[arg(long, value_name = "NAME,...")]
    pub(crate) validators: Option<String>,
    /// What a detector or validator that fails (an error, a panic) means: `fail-open` (default)
    /// records it and goes on; `fail-closed` ends the run TERMINAL. Either way it is on the log.
    #[arg(long, value_name = "fail-open|fail-closed")]
    pub(crate) checks: Option<String>,
    /// `audit` (default) runs every plugin process in the sandbox this kernel offers and goes on
    /// where a layer is missing; `required` refuses to start when a plugin taking part would run
    /// without every layer (in zu's process, or a layer this kernel lacks), naming both.
    #[arg(long, value_name = "audit|required")]
    pub(crate) containment: Option<String>,
    /// A plugin (KIND.NAME) `required` accepts outside a sandbox (repeatable; also zu.toml
    /// trusted = [...]).
    #[arg(long = "trust", value_name = "KIND.NAME")]
    pub(crate) trusted: Vec<String>,
    /// Grant plugin KIND.NAME reading PATH in its sandbox (repeatable; it must declare fs:read;
    /// zu.toml [grants.KIND.NAME] read = [...]).
    #[arg(long = "allow-read", value_name = "KIND.NAME=PATH")]
    pub(crate) allow_read: Vec<String>,
    /// Grant plugin KIND.NAME writing PATH (repeatable; it must declare fs:write).
    #[arg(long = "allow-write", value_name = "KIND.NAME=PATH")]
    pub(crate) allow_write: Vec<String>,
    /// Grant plugin KIND.NAME reaching HOST[:PORT] in place of the hosts it declares, `*` for the
    /// open network where it declares that (repeatable; it must declare net).
    #[arg(long = "allow-net", value_name = "KIND.NAME=HOST[:PORT]")]
    pub(crate) allow_net: Vec<String>,
    /// Give plugin KIND.NAME the variable VAR of zu's environment (repeatable).
    #[arg(long = "allow-env", value_name = "KIND.NAME=VAR")]
    pub(crate) allow_env: Vec<String>,
    /// Set a limit of plugin KIND.NAME's sandbox: memory_mb, open_files, file_size_mb or
    /// processes (repeatable; zu.toml [grants.KIND.NAME] limits = {...}).
    #[arg(long = "limit", value_name = "KIND.NAME=FIELD:N")]
    pub(crate) limit: Vec<String>,
    /// Read settings from this file instead of ./zu.toml.
    #[arg(long, value_name = "FILE")]
    pub(crate) config_file: Option<PathBuf>,
    /// A track file: replayed first (no model calls) when it exists and was recorded for this
    /// query; this run's tool path is recorded into it when the run succeeds.
    #[arg(long, value_name = "FILE")]
    pub(crate) track: Option<PathBuf>,
    /// Let this run's path replace a track recorded for another query in the
    /// --track file (without it, that track is kept and nothing is recorded).
    #[arg(long)]
    pub(crate) track_overwrite: bool,
    /// Model turns at most when the track replays (instead of --max-steps): a broken track fails
    /// fast and cheap.
    #[arg(long, value_name = "N")]
    pub(crate) replay_budget_steps: Option<u32>,
    /// A provider plugin that drives the rest of the run after a replay that did not diverge
    /// (a cheap model for the final extraction).
    #[arg(long, value_name = "NAME")]
    pub(crate) finish_provider: Option<String>,
    /// The median extra pause of each replayed step, in ms (log-normal, seeded by the trace);
    /// 0 (default) replays at once with recorded gaps capped at 3 s.
    #[arg(long, value_name = "MS")]
    pub(crate) replay_jitter_ms: Option<u64>,
    /// Content fields of an observation longer than this many characters are shaped before the
    /// model reads them (the log keeps them whole).
    #[arg(long, value_name = "N")]
    pub(crate) max_observation_chars: Option<usize>,
    /// How: `truncate` (default: a pointer to the log) or `extract` (the provider pulls what is
    /// relevant out of each chunk; those calls are logged and budgeted).
    #[arg(long, value_name = "truncate|extract")]
    pub(crate) observation_strategy: Option<String>,
    /// Keep the conversation under this many characters by eliding old observations.
    #[arg(long, value_name = "N")]
    pub(crate) max_context_chars: Option<usize>,
    /// Dollars the run may spend; it ends TERMINAL `budget:max_usd` once past them. Refused
    /// when a provider's model has no price.
    #[arg(long, value_name = "USD")]
    pub(crate) max_usd: Option<f64>,
    /// A TOML price file (`[models."id"] input = .., output = ..`, USD per million tokens)
    /// added to the built-in table.
    #[arg(long, value_name = "FILE")]
    pub(crate) prices: Option<PathBuf>,
    /// Continue this task's run, which has no end on the --sink log (killed, crashed): its
    /// task and budget come from the log, its tool calls that returned are not made again.
    #[arg(long, value_name = "TASK_ID")]
    pub(crate) resume: Option<Uuid>,
    #[command(flatten)]
    pub(crate) isolation_flags: load::IsolationFlags,
}
