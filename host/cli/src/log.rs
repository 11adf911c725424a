//! Opening the log of a durable sink for reading, as `zu events`, `zu cost`
//! and `zu pipeline` do: the sink plugin is loaded with its config marked
//! read-only, so reading never creates or changes a log.

use std::path::PathBuf;

use clap::Args;
use serde_json::Value;
use zu_loader::discovery;
use zu_plugin_api::version::Kind;
use zu_runtime::EventBus;

use crate::config::{json_flag, PluginConfig};
use crate::{load, Failure};

/// The flags that name a log: its sink, the sink's config, where plugins are.
#[derive(Args)]
pub struct LogArgs {
    /// The sink plugin holding the log (e.g. sqlite, jsonl, postgres).
    #[arg(long, value_name = "NAME")]
    pub sink: String,
    /// The sink's config, as JSON or @FILE (e.g. '{"path": "zu.db"}').
    #[arg(long, value_name = "JSON")]
    pub sink_config: Option<String>,
    /// A plugin directory to scan (repeatable). Default: $ZU_PLUGIN_PATH, else
    /// $HOME/.local/share/zu/plugins.
    #[arg(long = "plugins", value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    #[command(flatten)]
    pub isolation_flags: load::IsolationFlags,
}

impl LogArgs {
    /// The log, read-only (see [`open`]).
    pub fn open(&self, wait_ms: Option<u64>) -> Result<EventBus, Failure> {
        open(
            &self.sink,
            self.sink_config.as_deref(),
            &self.dirs,
            &self.isolation_flags,
            wait_ms,
        )
    }
}

fn sink_config_flag(_: Kind, _: &str) -> String {
    "--sink-config JSON".to_owned()
}

/// The log of sink plugin `sink` (config `raw`, JSON or @FILE), read-only;
/// with `wait_ms`, a sink that can wait for news (postgres) waits that long.
pub fn open(
    sink: &str,
    raw: Option<&str>,
    dirs: &[PathBuf],
    isolation: &load::IsolationFlags,
    wait_ms: Option<u64>,
) -> Result<EventBus, Failure> {
    let mut config = match raw {
        Some(raw) => json_flag("--sink-config", raw)?,
        None => Value::Null,
    };
    if let Value::Object(o) = &mut config {
        o.insert("read_only".into(), true.into());
        if let Some(ms) = wait_ms {
            o.insert("wait_ms".into(), ms.into());
        }
    }
    let configs = if config.is_null() {
        Vec::new()
    } else {
        vec![PluginConfig {
            kind: Kind::Sinks,
            name: sink.to_owned(),
            value: config,
            origin: "--sink-config".into(),
        }]
    };
    let protection = isolation.protection(&Default::default())?;
    let loaded = load::load(
        load::Source::Dirs(discovery::plugin_dirs(dirs)),
        configs,
        sink_config_flag,
        protection,
    )?;
    match loaded.registry.sink(sink) {
        Some(s) => Ok(EventBus::with_sink(s)),
        None => Err(Failure::failed(loaded.missing(Kind::Sinks, sink, ""))),
    }
}
