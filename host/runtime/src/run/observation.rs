//! What the log and the model see of one tool call: the outcome (a value, a
//! refusal, an error, a timeout, a panic, no such tool) becomes the
//! observation; refusals are `defense.blocked` events; retrieved content is
//! stored once in `data.source.fetched` and summarised in `tool.returned`.

use serde_json::{json, Value};
use uuid::Uuid;
use zu_plugin_api::contracts::JsonObject;
use zu_plugin_api::events::{self as ev, CONTENT_KEYS};
use zu_plugin_api::ports::PluginError;

use super::record::Record;
use super::steps::Called;
use super::text::{obj, summarize};
use crate::bus::BusError;
use crate::deadline::CallError;

#[derive(serde::Serialize)]
struct ToolReturned<'a> {
    tool: &'a str,
    observation: &'a JsonObject,
    #[serde(skip_serializing_if = "Option::is_none")]
    call_id: Option<&'a str>,
}

/// Records the outcome of call `name` in turn `turn` (`None`: no such tool
/// at this tier) and returns the observation and its JSON text for the
/// model's history (encoded once: a successful call brings its own text).
pub(super) fn record(
    record: &Record,
    turn: Uuid,
    name: &str,
    call_id: Option<&str>,
    outcome: Option<Called<(JsonObject, String)>>,
) -> Result<(JsonObject, String), BusError> {
    let block = |kind: &str, extra: Value| -> Result<(), BusError> {
        let mut payload = obj(json!({"kind": kind, "tool": name}));
        if let Value::Object(more) = extra {
            payload.extend(more);
        }
        record
            .emit_as(ev::DEFENSE_BLOCKED, &payload, Some(turn), name)
            .map(|_| ())
    };
    let mut encoded = None;
    let obs: JsonObject = match outcome {
        None => obj(json!({"error": format!("unknown tool: {name}")})),
        Some(Ok(Ok((o, text)))) => {
            encoded = Some(text);
            o
        }
        Some(Err(CallError::TimedOut)) => {
            tracing::warn!(tool = name, "tool call exceeded the run's remaining wall time");
            block(
                "tool_timeout",
                json!({"detail": "tool call exceeded the run's remaining wall-time and was cancelled"}),
            )?;
            obj(json!({"error": "tool call timed out", "blocked": "tool_timeout"}))
        }
        Some(Ok(Err(PluginError::SecurityBlock(b)))) => {
            tracing::warn!(tool = name, kind = %b.kind, message = %b.message, "tool blocked");
            block(&b.kind, json!({"target": b.target, "detail": b.message}))?;
            obj(json!({"error": format!("SecurityBlock: {}", b.message), "blocked": b.kind}))
        }
        Some(Ok(Err(PluginError::TooLarge { .. }))) => {
            tracing::warn!(tool = name, "tool returned an oversized observation");
            let detail = "tool observation exceeds the size limit and was rejected";
            block("oversized_observation", json!({"detail": detail}))?;
            obj(json!({"error": detail, "blocked": "oversized_observation"}))
        }
        Some(Ok(Err(PluginError::ProcessEnded(what)))) => {
            record.contained(name, "tool", &what, Some(turn))?;
            obj(json!({"error": format!("the tool's process {what}; the call was lost")}))
        }
        Some(Ok(Err(PluginError::Panicked(m)))) => {
            record.panicked(name, "tool", &m, Some(turn))?;
            obj(json!({"error": format!("plugin panicked: {m}")}))
        }
        Some(Ok(Err(e))) => {
            tracing::warn!(tool = name, error = %e, "tool failed");
            obj(json!({"error": e.to_string()}))
        }
        Some(Err(CallError::Panicked(m))) => {
            record.panicked(name, "tool", &m, Some(turn))?;
            obj(json!({"error": format!("plugin panicked: {m}")}))
        }
        Some(Err(CallError::Cancelled(reason))) => obj(json!({"error": format!("the call was cancelled ({reason})")})),
    };
    let summary;
    let returned = if CONTENT_KEYS.iter().any(|k| obs.contains_key(*k)) {
        record.emit_as(ev::SOURCE_FETCHED, &obs, Some(turn), name)?;
        summary = summarize(&obs);
        &summary
    } else {
        &obs
    };
    record.emit_as(
        ev::TOOL_RETURNED,
        &ToolReturned {
            tool: name,
            observation: returned,
            call_id,
        },
        Some(turn),
        name,
    )?;
    let content = encoded.unwrap_or_else(|| serde_json::to_string(&obs).unwrap_or_default());
    Ok((obs, content))
}
