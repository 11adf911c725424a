//! `zu events`: read the log of a durable sink plugin, filtered, as a table or
//! one JSON event per line, scoped by default; `--follow` keeps printing new
//! events as they are appended.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::Value;
use zu_host::{discovery, view, EventBus};
use zu_plugin_api::filter::{EventFilter, FilterField};
use zu_plugin_api::version::Kind;

use super::{config_value, load_registry, missing_plugin};
use crate::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};

#[derive(Args)]
pub struct EventsArgs {
    /// The sink plugin holding the log (e.g. sqlite, jsonl).
    #[arg(long, value_name = "NAME")]
    sink: String,
    /// The sink's config, as JSON or @FILE (e.g. '{"path": "zu.db"}').
    #[arg(long, value_name = "JSON")]
    sink_config: Option<String>,
    /// A plugin directory to scan (repeatable). Default: $ZU_PLUGIN_PATH, else
    /// $HOME/.local/share/zu/plugins.
    #[arg(long = "plugins", value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// Only events of this trace.
    #[arg(long, value_name = "UUID")]
    trace: Option<String>,
    /// Only events of this task.
    #[arg(long, value_name = "UUID")]
    task: Option<String>,
    /// Only events of this type (e.g. harness.tool.invoked).
    #[arg(long = "type", value_name = "TYPE")]
    ty: Option<String>,
    /// Only events from this source.
    #[arg(long, value_name = "SOURCE")]
    source: Option<String>,
    /// Only events after this sequence number.
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    after_seq: u64,
    /// At most this many events (with --follow: per poll).
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Show payloads in full instead of the scoped view (content summarised).
    #[arg(long)]
    full: bool,
    /// Print one JSON event per line (the scoped or full view, plus "seq").
    #[arg(long)]
    json: bool,
    /// Keep running and print new events as they are appended.
    #[arg(long)]
    follow: bool,
    /// With --follow, how often to poll the sink, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 250)]
    poll_ms: u64,
}

pub fn run(args: EventsArgs) -> u8 {
    let mut configs = Vec::new();
    if let Some(raw) = &args.sink_config {
        match config_value(raw) {
            Ok(v) => configs.push((Kind::Sinks, args.sink.clone(), v)),
            Err(e) => {
                eprintln!("zu: invalid --sink-config: {e}");
                return EXIT_USAGE;
            }
        }
    }
    let registry = match load_registry(&discovery::plugin_dirs(&args.dirs), configs) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("zu: {e}");
            return EXIT_USAGE;
        }
    };
    let Some(sink) = registry.sink(&args.sink) else {
        let why = missing_plugin(&registry, Kind::Sinks, "sink", &args.sink, "");
        eprintln!("zu: {why}");
        return EXIT_USAGE;
    };
    let bus = EventBus::with_sink(sink);
    let filter = args.filter();
    let code = print_events(&bus, &filter, &args);
    bus.close();
    code
}

impl EventsArgs {
    fn filter(&self) -> EventFilter {
        let mut f = EventFilter::all();
        for (field, value) in [
            (FilterField::TraceId, &self.trace),
            (FilterField::TaskId, &self.task),
            (FilterField::Type, &self.ty),
            (FilterField::Source, &self.source),
        ] {
            if let Some(v) = value {
                f = f.with(field, Some(v.clone()));
            }
        }
        f
    }
}

fn print_events(bus: &EventBus, filter: &EventFilter, args: &EventsArgs) -> u8 {
    let mut after = args.after_seq;
    let mut out = std::io::stdout().lock();
    if !args.json {
        let _ = writeln!(
            out,
            "{:>6}  {:<32}  {:<28}  {:<12}  {:<8}  PAYLOAD",
            "SEQ", "TS", "TYPE", "SOURCE", "TASK"
        );
    }
    loop {
        let page = match bus.query(filter, args.limit, after) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("zu: {e}");
                return EXIT_FAILED;
            }
        };
        for logged in &page {
            after = logged.seq;
            let mut view = view::scope_event(&logged.event, args.full);
            let line = if args.json {
                if let Value::Object(o) = &mut view {
                    o.insert("seq".into(), logged.seq.into());
                }
                view.to_string()
            } else {
                table_row(logged.seq, &view)
            };
            if writeln!(out, "{line}").is_err() {
                return EXIT_OK; // stdout closed (e.g. piped into head)
            }
        }
        let _ = out.flush();
        if !args.follow {
            return EXIT_OK;
        }
        if page.is_empty() {
            std::thread::sleep(Duration::from_millis(args.poll_ms.max(10)));
        }
    }
}

fn table_row(seq: u64, view: &Value) -> String {
    let s = |k: &str| view[k].as_str().unwrap_or("").to_owned();
    let mut payload = view["payload"].to_string();
    if payload.chars().count() > 100 {
        payload = payload.chars().take(99).collect::<String>() + "…";
    }
    let task: String = s("task_id").chars().take(8).collect();
    format!(
        "{seq:>6}  {:<32}  {:<28}  {:<12}  {task:<8}  {payload}",
        s("ts"),
        s("type"),
        s("source")
    )
}
