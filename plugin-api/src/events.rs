//! The event taxonomy: every event type the runtime emits, as constants, so
//! emitters, projections and plugins agree on one spelling. The names are the
//! Python reference's, so a log written by one is read by tools of the other.

/// A run started: `{query, target, max_tier, budget}`.
pub const TASK_STARTED: &str = "harness.task.started";
/// The capability envelope of every active tool: `{tools: {name: {tier, capabilities, egress}}}`.
pub const ENVELOPE_DECLARED: &str = "harness.envelope.declared";
/// The run finished successfully.
pub const TASK_COMPLETED: &str = "harness.task.completed";
/// A tier climb (`{reason, detail, from_tier, to_tier}`) or the run's end at
/// the ceiling (`{reason, tier, exhausted: true}`).
pub const TASK_ESCALATED: &str = "harness.task.escalated";
/// The run ended without success.
pub const TASK_TERMINAL: &str = "harness.task.terminal";
/// A run that had no end on the log was resumed by `zu run --resume`:
/// `{step, tokens, elapsed_ms, resumed_at}`. Beyond the reference.
pub const TASK_RESUMED: &str = "harness.task.resumed";
/// A model turn began.
pub const TURN_STARTED: &str = "harness.turn.started";
/// A model turn ended: `{step, tier, model, usage}`.
pub const TURN_COMPLETED: &str = "harness.turn.completed";
/// A tool was called.
pub const TOOL_INVOKED: &str = "harness.tool.invoked";
/// A tool returned.
pub const TOOL_RETURNED: &str = "harness.tool.returned";
/// The `extract` observation strategy asked the model for what is relevant
/// in one chunk of a too-large observation: `{tool, key, chunk, of, model,
/// usage, error?}`. Beyond the reference, which makes these calls unlogged.
pub const OBSERVATION_EXTRACTED: &str = "harness.observation.extracted";
/// A detector returned a verdict.
pub const DETECTOR_FIRED: &str = "harness.detector.fired";
/// A validator refused the result.
pub const VALIDATION_FAILED: &str = "harness.validation.failed";
/// A detector or validator failed (returned an error or panicked) instead of
/// giving a verdict: `{check, kind: "detector"|"validator", error}`. Beyond
/// the reference, which only logs it.
pub const CHECK_FAILED: &str = "harness.check.failed";
/// A plugin running in a process of its own ended that process during a
/// call (crash, abort, `exit`): `{plugin, kind, what}`. The call failed;
/// the next one gets a fresh process. Beyond the reference.
pub const PLUGIN_CONTAINED: &str = "harness.plugin.contained";
/// A plugin panicked during a call (caught at the boundary: the host goes
/// on): `{plugin, kind, message}`. The call failed with that message.
/// Beyond the reference.
pub const PLUGIN_PANICKED: &str = "harness.plugin.panicked";
/// The sandbox of each tool, detector and validator taking part, recorded
/// at the start of a run when any runs in one: `{plugins: [{kind, name,
/// sandbox: "enforced" | "partial" | "none", missing: [layers]}]}`. Beyond
/// the reference.
pub const SANDBOX_APPLIED: &str = "harness.sandbox.applied";
/// A library or plugin the host refused at load, recorded at the start of
/// a run: `{library, kind, name, code, message}`. Beyond the reference.
pub const PLUGIN_REFUSED: &str = "harness.plugin.refused";
/// A reader's note in place of a row it could not read (a corrupt line, an
/// undecodable row): `{where, reason}`, at that row's sequence number. Only
/// sinks opened read-only write such notes; nothing stores them.
pub const LOG_DAMAGED: &str = "harness.log.damaged";
/// A reader's note that the log it follows was deleted, replaced or
/// truncated (`{what}`): read it again from its first event.
pub const LOG_RESTARTED: &str = "harness.log.restarted";
/// A guard contained an unsafe attempt (SSRF, oversized observation, ...).
pub const DEFENSE_BLOCKED: &str = "harness.defense.blocked";
/// Connections the sandbox's egress gate forwarded for a plugin during the
/// run: `{plugin, host, port, connections}` (out-of-band fact).
pub const EGRESS_OBSERVED: &str = "harness.egress.observed";
/// Reaches the egress gate refused (a name or host:port the plugin was not
/// granted): `{plugin, host, port, attempts}`; `port` is null for a name
/// lookup.
pub const EGRESS_REFUSED: &str = "harness.egress.refused";
/// A filesystem or process effect observed from outside the sandbox.
pub const HOST_EFFECT_OBSERVED: &str = "harness.host_effect.observed";
/// A multi-phase pipeline started.
pub const PIPELINE_STARTED: &str = "harness.pipeline.started";
/// A pipeline phase started.
pub const PIPELINE_PHASE_STARTED: &str = "harness.pipeline.phase.started";
/// A pipeline phase completed.
pub const PIPELINE_PHASE_COMPLETED: &str = "harness.pipeline.phase.completed";
/// A pipeline phase was skipped (already complete on the log).
pub const PIPELINE_PHASE_SKIPPED: &str = "harness.pipeline.phase.skipped";
/// A pipeline completed.
pub const PIPELINE_COMPLETED: &str = "harness.pipeline.completed";
/// A pipeline failed.
pub const PIPELINE_FAILED: &str = "harness.pipeline.failed";
/// Content a tool retrieved, stored once: `{tool, url?, html|text|content}`.
pub const SOURCE_FETCHED: &str = "data.source.fetched";
/// The value extracted from the final answer.
pub const RECORD_EXTRACTED: &str = "data.record.extracted";

/// Observation keys that carry retrieved content: the loop stores such an
/// observation once in `data.source.fetched` and summarises it in
/// `harness.tool.returned`; checks read the content under these keys.
pub const CONTENT_KEYS: [&str; 3] = ["html", "text", "content"];

/// Every `harness.*` type.
pub const HARNESS_TYPES: [&str; 30] = [
    TASK_STARTED,
    TASK_RESUMED,
    OBSERVATION_EXTRACTED,
    ENVELOPE_DECLARED,
    TASK_COMPLETED,
    TASK_ESCALATED,
    TASK_TERMINAL,
    TURN_STARTED,
    TURN_COMPLETED,
    TOOL_INVOKED,
    TOOL_RETURNED,
    DETECTOR_FIRED,
    VALIDATION_FAILED,
    CHECK_FAILED,
    PLUGIN_CONTAINED,
    PLUGIN_PANICKED,
    PLUGIN_REFUSED,
    SANDBOX_APPLIED,
    LOG_DAMAGED,
    LOG_RESTARTED,
    DEFENSE_BLOCKED,
    EGRESS_OBSERVED,
    EGRESS_REFUSED,
    HOST_EFFECT_OBSERVED,
    PIPELINE_STARTED,
    PIPELINE_PHASE_STARTED,
    PIPELINE_PHASE_COMPLETED,
    PIPELINE_PHASE_SKIPPED,
    PIPELINE_COMPLETED,
    PIPELINE_FAILED,
];

/// Every `data.*` type.
pub const DATA_TYPES: [&str; 2] = [SOURCE_FETCHED, RECORD_EXTRACTED];

fn note(seq: u64, ty: &'static str, payload: serde_json::Value) -> crate::filter::StoredEvent {
    let payload = match payload {
        serde_json::Value::Object(o) => o,
        _ => crate::contracts::JsonObject::new(),
    };
    let nil = uuid::Uuid::nil();
    let event = crate::contracts::Event::new(nil, nil, None, ty, "reader", payload).expect("a namespaced type");
    crate::filter::StoredEvent { seq, event }
}

/// The note a read-only sink returns in place of row `seq` it could not read.
pub fn damaged_row(seq: u64, place: &str, reason: &str) -> crate::filter::StoredEvent {
    note(seq, LOG_DAMAGED, serde_json::json!({"where": place, "reason": reason}))
}

/// The note a read-only sink returns when the log it reads was deleted,
/// replaced (`what`) or truncated since its last read.
pub fn log_restarted(what: &str) -> crate::filter::StoredEvent {
    note(0, LOG_RESTARTED, serde_json::json!({"what": what}))
}

/// The `source`s zu writes its own events under (and a few it keeps for the
/// parts to come): no plugin may be named one of them, and a name a plugin
/// supplies (a model id, say) never becomes one, so a reader can trust that
/// an event from `loop` is zu's. Compared without regard to case.
pub const RESERVED_SOURCES: &[&str] = &[
    "loop", "loader", "pipeline", "replay", "harness", "host", "zu", "queue", "approval", "operator", "export",
];

/// Whether `name` is one of [`RESERVED_SOURCES`].
pub fn is_reserved_source(name: &str) -> bool {
    RESERVED_SOURCES.iter().any(|r| r.eq_ignore_ascii_case(name.trim()))
}

/// A source for events about plugin `name`: the name itself, unless it is
/// reserved, then `plugin:NAME`.
pub fn plugin_source(name: &str) -> std::borrow::Cow<'_, str> {
    if is_reserved_source(name) {
        format!("plugin:{name}").into()
    } else {
        name.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_is_namespaced() {
        for t in HARNESS_TYPES {
            assert!(t.starts_with("harness."), "{t}");
        }
        for t in DATA_TYPES {
            assert!(t.starts_with("data."), "{t}");
        }
    }
}
