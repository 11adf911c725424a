//! `zu events`: read the log of a durable sink plugin, filtered, as a table or
//! one JSON event per line, scoped by default; `--follow` keeps printing new
//! events as they are appended. The sink opens the log read-only: reading
//! never creates or changes a log.

use std::time::Duration;

use clap::Args;
use serde_json::Value;
use zu_plugin_api::events;
use zu_plugin_api::filter::{EventFilter, FilterField};
use zu_runtime::{view, EventBus};

use crate::{exit, ids, Failure};
use zu_runtime::display::escape;

#[derive(Args)]
pub struct EventsArgs {
    #[command(flatten)]
    log: crate::log::LogArgs,
    /// Only events of this trace (its UUID, or a unique prefix of 8 or more characters).
    #[arg(long, value_name = "UUID")]
    trace: Option<String>,
    /// Only events of this task (its UUID, or a unique prefix of 8 or more characters).
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
    /// With --follow, how often to look for new events, in milliseconds (a
    /// postgres log wakes the reader as soon as an event is appended).
    #[arg(long, value_name = "MS", default_value_t = 250)]
    poll_ms: u64,
}

pub fn run(args: EventsArgs) -> Result<u8, Failure> {
    // A sink that can wait for news (postgres: LISTEN) waits this long
    // instead of the reader sleeping.
    let wait_ms = args.follow.then_some(args.poll_ms.max(10));
    let log = args.log.open(wait_ms)?;
    if let Some(ty) = &args.ty {
        known_type(&log.bus, ty)?;
    }
    let filter = args.filter(&log.bus)?;
    let code = print_events(&log.bus, &filter, &args);
    log.bus.close();
    code
}

impl EventsArgs {
    fn filter(&self, bus: &EventBus) -> Result<EventFilter, Failure> {
        let mut f = ids::filter(bus, &self.trace, &self.task)?;
        let texts = [(FilterField::Type, &self.ty), (FilterField::Source, &self.source)];
        for (field, value) in texts {
            if let Some(v) = value {
                f = f.with(field, Some(v.clone()));
            }
        }
        Ok(f)
    }
}

/// `ty` is an event type zu records or one on this log (a plugin's own);
/// else an error suggesting the nearest known type.
fn known_type(bus: &EventBus, ty: &str) -> Result<(), Failure> {
    let known = events::HARNESS_TYPES.iter().chain(events::DATA_TYPES.iter());
    if known.clone().any(|k| *k == ty) {
        return Ok(());
    }
    let on_log = EventFilter::all().with(FilterField::Type, Some(ty.to_owned()));
    if bus.count(&on_log).unwrap_or(0) > 0 {
        return Ok(());
    }
    let nearest = known
        .min_by_key(|k| strsim::levenshtein(k, ty))
        .expect("zu knows event types");
    Err(Failure::usage(format!(
        "--type {}: no such event type, and none on this log; did you mean {nearest}? (the event types: docs/logs.md)",
        escape(ty)
    )))
}

/// What the reader skipped: bad rows, each reported once on stderr.
#[derive(Default)]
struct Damage {
    rows: std::collections::BTreeSet<u64>,
}

impl Damage {
    /// A note from the sink in place of an event: reported, and `true` if
    /// it was a note (not an event to print).
    fn note(&mut self, logged: &zu_runtime::LoggedEvent, after: &mut u64) -> bool {
        let e = &logged.event;
        match e.event_type() {
            events::LOG_DAMAGED => {
                if self.rows.insert(logged.seq) {
                    let p = e.payload();
                    let text = |k: &str| escape(p.get(k).and_then(Value::as_str).unwrap_or("")).into_owned();
                    eprintln!("zu: skipped {}: {}", text("where"), text("reason"));
                }
                *after = (*after).max(logged.seq);
                true
            }
            events::LOG_RESTARTED => {
                let what = e.payload().get("what").and_then(Value::as_str).unwrap_or("replaced");
                let what = escape(what);
                eprintln!("zu: the log was {what}; following the new log from its first event");
                *after = 0;
                self.rows.clear();
                true
            }
            _ => false,
        }
    }
}

fn print_events(bus: &EventBus, filter: &EventFilter, args: &EventsArgs) -> Result<u8, Failure> {
    let mut after = args.after_seq;
    let mut damage = Damage::default();
    if !args.json {
        crate::outln!(
            "{:>6}  {:<32}  {:<28}  {:<12}  {:<8}  PAYLOAD",
            "SEQ",
            "TS",
            "TYPE",
            "SOURCE",
            "TASK"
        );
    }
    let poll = Duration::from_millis(args.poll_ms.max(10));
    loop {
        let asked = std::time::Instant::now();
        let page = match bus.query(filter, args.limit, after) {
            Ok(p) => p,
            Err(e) => return Err(Failure::failed(e.to_string())),
        };
        let mut text = String::new();
        let mut printed = 0;
        for logged in &page {
            if damage.note(logged, &mut after) {
                continue;
            }
            after = logged.seq;
            printed += 1;
            let mut view = view::scope_event(&logged.event, args.full);
            let line = if args.json {
                if let Value::Object(o) = &mut view {
                    o.insert("seq".into(), logged.seq.into());
                }
                zu_runtime::display::json(&view.to_string()).into_owned()
            } else {
                table_row(logged.seq, &view, args.full)
            };
            text.push_str(&line);
            text.push('\n');
        }
        if !text.is_empty() && !crate::output::write(&text) {
            return Ok(exit::OK); // stdout closed (e.g. piped into head)
        }
        if !args.follow {
            if page.is_empty() || args.limit.is_some() {
                break;
            }
            continue; // a page of notes only: read on
        }
        if printed == 0 && page.is_empty() {
            // A sink that waits for new events (postgres) has waited already.
            std::thread::sleep(poll.saturating_sub(asked.elapsed()));
        }
    }
    if damage.rows.is_empty() {
        return Ok(exit::OK);
    }
    eprintln!(
        "zu: {} unreadable row(s) skipped; every other event was shown",
        damage.rows.len()
    );
    Ok(exit::DAMAGED)
}

/// One table line, every cell escaped (the log is anyone's data); the
/// payload is cut at 100 characters of its escaped JSON unless `full`.
fn table_row(seq: u64, view: &Value, full: bool) -> String {
    let s = |k: &str| escape(view[k].as_str().unwrap_or("")).into_owned();
    let mut payload = escape(&view["payload"].to_string()).into_owned();
    if !full && payload.chars().count() > 100 {
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
