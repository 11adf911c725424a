//! Task and trace ids as a user types them: a whole UUID, or a unique prefix
//! of at least 8 characters (what the tables show), found on the log among
//! the runs that started there.

use std::collections::BTreeSet;

use uuid::Uuid;
use zu_plugin_api::events::TASK_STARTED;
use zu_plugin_api::filter::{EventFilter, FilterField};
use zu_runtime::EventBus;

use crate::Failure;

/// The shortest prefix accepted.
pub const MIN_PREFIX: usize = 8;

/// Which id a flag names.
#[derive(Clone, Copy)]
pub enum Id {
    Task,
    Trace,
}

/// `given` (for `flag`) as the one id of that kind on the log it begins.
pub fn resolve(bus: &EventBus, given: &str, id: Id, flag: &str) -> Result<Uuid, Failure> {
    let given = given.trim();
    if let Ok(whole) = Uuid::parse_str(given) {
        return Ok(whole);
    }
    let prefix = given.to_ascii_lowercase();
    let hex = |c: char| c.is_ascii_hexdigit() || c == '-';
    if prefix.len() < MIN_PREFIX || !prefix.chars().all(hex) {
        return Err(Failure::usage(format!(
            "{flag} {given:?}: give a UUID or at least its first {MIN_PREFIX} characters (as zu events shows them)"
        )));
    }
    let started = EventFilter::all().with(FilterField::Type, Some(TASK_STARTED.to_owned()));
    let mut found = BTreeSet::new();
    for e in bus.stream(&started, 1000) {
        let e = e.map_err(|e| Failure::failed(format!("cannot read the log: {e}")))?;
        let uuid = match id {
            Id::Task => e.event.task_id(),
            Id::Trace => e.event.trace_id(),
        };
        if uuid.to_string().starts_with(&prefix) {
            found.insert(uuid);
        }
    }
    let what = match id {
        Id::Task => "task",
        Id::Trace => "trace",
    };
    match found.len() {
        1 => Ok(found.into_iter().next().expect("one")),
        0 => Err(Failure::failed(format!(
            "{flag} {given}: no {what} on this log begins with it"
        ))),
        n => Err(Failure::usage(format!(
            "{flag} {given}: {n} {what}s on this log begin with it ({}); give more characters",
            found.iter().map(Uuid::to_string).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// A filter for `--trace` and `--task` as given (each resolved on the log).
pub fn filter(bus: &EventBus, trace: &Option<String>, task: &Option<String>) -> Result<EventFilter, Failure> {
    let mut f = EventFilter::all();
    for (field, given, id, flag) in [
        (FilterField::TraceId, trace, Id::Trace, "--trace"),
        (FilterField::TaskId, task, Id::Task, "--task"),
    ] {
        if let Some(given) = given {
            f = f.with(field, Some(resolve(bus, given, id, flag)?.to_string()));
        }
    }
    Ok(f)
}
