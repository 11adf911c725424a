//! Opening the log of a durable sink for reading, as `zu events`, `zu cost`
//! and `zu serve` do: the sink and where plugins are come from the flags,
//! else zu.toml (as for `zu run`); the sink plugin is loaded with its config
//! marked read-only, so reading never creates or changes a log.

use std::path::PathBuf;

use clap::Args;
use serde_json::Value;
use zu_plugin_api::version::Kind;
use zu_runtime::EventBus;

use crate::config::PluginConfig;
use crate::settings::Settings;
use crate::{load, Failure};

/// The flags that name a log: its sink, the sink's config, where plugins are.
#[derive(Args)]
pub struct LogArgs {
    /// The sink plugin holding the log (e.g. sqlite, jsonl, postgres).
    /// Default: zu.toml's [sink].
    #[arg(long, value_name = "NAME")]
    pub sink: Option<String>,
    /// The sink's config, as JSON or @FILE (e.g. '{"path": "zu.db"}').
    /// Default: zu.toml's [sink] config, when it names the same sink.
    #[arg(long, value_name = "JSON")]
    pub sink_config: Option<String>,
    /// A plugin directory to scan (repeatable). Default: zu.toml's, else
    /// $ZU_PLUGIN_PATH, else $HOME/.local/share/zu/plugins.
    #[arg(long = "plugins", value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Read settings from this file instead of ./zu.toml.
    #[arg(long, value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    #[command(flatten)]
    pub isolation_flags: load::IsolationFlags,
}

/// An open log, read-only, and the name of its sink.
pub struct Log {
    pub bus: EventBus,
    pub sink: String,
}

impl LogArgs {
    /// The settings file: `--config-file`, else ./zu.toml if there is one.
    pub fn settings(&self) -> Result<Settings, Failure> {
        let file = self.config_file.clone().unwrap_or_else(|| PathBuf::from("zu.toml"));
        Settings::read(&file, self.config_file.is_some())
    }

    /// The log, read-only, with zu.toml's settings read here.
    pub fn open(&self, wait_ms: Option<u64>) -> Result<Log, Failure> {
        self.open_with(&mut self.settings()?, wait_ms)
    }

    /// The log, read-only; `settings` gives what the flags do not. With
    /// `wait_ms`, a sink that can wait for news (postgres) waits that long.
    pub fn open_with(&self, settings: &mut Settings, wait_ms: Option<u64>) -> Result<Log, Failure> {
        let file_sink = settings.file.sink.take();
        let (sink, config) = settings
            .choose(
                &self.sink,
                &self.sink_config,
                "--sink-config",
                file_sink.as_ref(),
                "sink",
            )?
            .ok_or_else(|| {
                Failure::usage(format!(
                    "no log named: give --sink NAME --sink-config JSON, or [sink] in {}",
                    settings.path.display()
                ))
            })?;
        if sink == "memory" {
            return Err(Failure::usage(
                "a memory log lives only inside the process that writes it; read a durable sink (sqlite, jsonl, postgres)",
            ));
        }
        let (dirs, _) = settings.plugins(&self.dirs)?;
        let containment = load::FileContainment::take_from(settings);
        let protection = self.isolation_flags.protection(&containment)?;
        open_sink(&sink, config, dirs, protection, wait_ms)
    }
}

/// The log of sink plugin `sink` (with `config` and where it came from),
/// read-only, its plugin found in `dirs`; with `wait_ms`, a sink that can
/// wait for news (postgres) waits that long.
pub fn open_sink(
    sink: &str,
    config: Option<(Value, String)>,
    dirs: zu_loader::discovery::PluginDirs,
    protection: zu_loader::Protection,
    wait_ms: Option<u64>,
) -> Result<Log, Failure> {
    let configs = config
        .map(|(mut value, origin)| {
            if let Value::Object(o) = &mut value {
                o.insert("read_only".into(), true.into());
                if let Some(ms) = wait_ms {
                    o.insert("wait_ms".into(), ms.into());
                }
            }
            PluginConfig {
                kind: Kind::Sinks,
                name: sink.to_owned(),
                value,
                origin,
            }
        })
        .into_iter()
        .collect();
    let loaded = load::load(load::Source::Dirs(dirs), configs, sink_config_flag, protection)?;
    match loaded.registry.sink(sink) {
        Some(s) => Ok(Log {
            bus: EventBus::with_sink(s),
            sink: sink.to_owned(),
        }),
        None => Err(Failure::failed(loaded.missing(Kind::Sinks, sink, ""))),
    }
}

fn sink_config_flag(_: Kind, _: &str) -> String {
    "--sink-config JSON".to_owned()
}
