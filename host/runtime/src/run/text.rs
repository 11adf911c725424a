//! The reference-compatible text of a run: the initial messages, the notes
//! the loop adds to the conversation (validation retries, escalations,
//! skipped calls), observation summaries, and the parsing of the model's
//! final text into a JSON object. Wording matches zu-core 0.2.0.

use std::sync::OnceLock;

use serde_json::{json, Value};
use zu_plugin_api::contracts::{JsonObject, TaskSpec};
use zu_plugin_api::events::CONTENT_KEYS;
use zu_plugin_api::ports::{Severity, Verdict};

/// A JSON object literal as a map.
pub(super) fn obj(v: Value) -> JsonObject {
    match v {
        Value::Object(o) => o,
        _ => unreachable!("called with object literals"),
    }
}

/// The reference's name of a severity.
pub(super) fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Warn => "warn",
        Severity::Retry => "retry",
        Severity::Escalate => "escalate",
        Severity::Terminal => "terminal",
    }
}

/// The system prompt (with the prompt fragments of the active tools) and the
/// task as the user's message.
pub(super) fn initial_messages<'a>(spec: &TaskSpec, fragments: impl Iterator<Item = &'a str>) -> Vec<Value> {
    let fragments: Vec<String> = fragments.filter(|f| !f.is_empty()).map(|f| format!("- {f}")).collect();
    let system = if fragments.is_empty() {
        "You are Zu, a tool-using agent. Return the final answer as a single JSON object.".to_owned()
    } else {
        format!(
            "You are Zu, a tool-using agent. Use the available tools to answer the task, then return the final answer as a single JSON object.\nAvailable tools:\n{}",
            fragments.join("\n")
        )
    };
    let user = match &spec.target {
        Some(t) if !t.is_empty() => format!("{}\nTarget: {t}", spec.query),
        _ => spec.query.clone(),
    };
    vec![
        json!({"role": "system", "content": system}),
        json!({"role": "user", "content": user}),
    ]
}

/// What the model is told when a validator asks it to try again.
pub(super) fn validation_retry_note(v: &Verdict) -> String {
    format!(
        "Validation failed ({}): {}. Correct the output and resubmit.",
        v.detector,
        v.detail.as_deref().unwrap_or("None")
    )
}

/// What the model is told after a climb to `tier`, with the tools it unlocked.
pub(super) fn escalation_notice<'a>(v: &Verdict, tier: u32, unlocked: impl Iterator<Item = &'a str>) -> String {
    let unlocked: Vec<String> = unlocked.filter(|f| !f.is_empty()).map(|f| format!("- {f}")).collect();
    format!(
        "The previous attempt was insufficient ({}: {}). Escalated to tier {tier}. Newly available tools:\n{}\nRetry the task using them.",
        v.detector,
        v.detail.as_deref().unwrap_or("None"),
        unlocked.join("\n")
    )
}

/// The tool message for a call that a halting verdict left unmade.
pub(super) fn skipped_note(halting: Option<&Verdict>) -> String {
    match halting {
        Some(h) => json!({"skipped": format!("not run: {} ({})", h.detector, severity_name(h.severity))}),
        None => json!({"skipped": "not run"}),
    }
    .to_string()
}

/// An observation without its retrieved content: the content keys become
/// `<key>_len` (characters), everything else is kept.
pub(super) fn summarize(obs: &JsonObject) -> JsonObject {
    let mut out: JsonObject = obs
        .iter()
        .filter(|(k, _)| !CONTENT_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for k in CONTENT_KEYS {
        if let Some(Value::String(s)) = obs.get(k) {
            out.insert(format!("{k}_len"), s.chars().count().into());
        }
    }
    out
}

/// The first balanced `{...}` of `text`, string- and escape-aware.
fn balanced_object(text: &str) -> Option<&str> {
    let start = text.find('{')?;
    let (mut depth, mut in_str, mut esc) = (0i32, false, false);
    for (i, c) in text[start..].char_indices() {
        if in_str {
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
        } else if c == '{' {
            depth += 1;
        } else if c == '}' {
            depth -= 1;
            if depth == 0 {
                return Some(&text[start..start + i + 1]);
            }
        }
    }
    None
}

/// Turns the model's final text into a JSON object: the whole text, one
/// enclosing fence, a fenced block anywhere, the first balanced object in
/// prose, else `{"text": ...}`. A non-object JSON value becomes `{"value": v}`.
pub fn parse_value(text: Option<&str>) -> Option<JsonObject> {
    static FENCE: OnceLock<regex::Regex> = OnceLock::new();
    static FENCE_ANY: OnceLock<regex::Regex> = OnceLock::new();
    let text = text.filter(|t| !t.is_empty())?;
    let fence = FENCE.get_or_init(|| regex::Regex::new(r"(?s)\A```[a-zA-Z0-9]*\s*\n?(.*?)\n?```\z").expect("valid"));
    let fence_any =
        FENCE_ANY.get_or_init(|| regex::Regex::new(r"(?s)```[a-zA-Z0-9]*[ \t]*\n?(.*?)```").expect("valid"));
    let stripped = text.trim();
    let mut candidates = vec![stripped.to_owned()];
    if let Some(c) = fence.captures(stripped) {
        candidates.push(c[1].trim().to_owned());
    }
    if let Some(c) = fence_any.captures(text) {
        candidates.push(c[1].trim().to_owned());
    }
    if let Some(b) = balanced_object(text) {
        candidates.push(b.to_owned());
    }
    for c in candidates {
        if let Ok(v) = serde_json::from_str::<Value>(&c) {
            return Some(match v {
                Value::Object(o) => o,
                other => obj(json!({"value": other})),
            });
        }
    }
    Some(obj(json!({"text": text})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_text_parses_like_the_reference() {
        let p = |t: &str| Value::Object(parse_value(Some(t)).unwrap());
        assert_eq!(p(r#"{"a": 1}"#), json!({"a": 1}));
        assert_eq!(p("```json\n{\"a\": 2}\n```"), json!({"a": 2}));
        assert_eq!(p("Here you go: ```json\n{\"a\": 3}\n``` done"), json!({"a": 3}));
        assert_eq!(p(r#"The answer is {"a": {"b": "}"}} ok"#), json!({"a": {"b": "}"}}));
        assert_eq!(p("[1, 2]"), json!({"value": [1, 2]}));
        assert_eq!(p("no json here"), json!({"text": "no json here"}));
        assert_eq!(parse_value(Some("")), None);
        assert_eq!(parse_value(None), None);
    }

    #[test]
    fn summaries_keep_lengths_not_content() {
        let s = summarize(&obj(json!({"status": 200, "html": "<p>é</p>", "url": "u"})));
        assert_eq!(Value::Object(s), json!({"status": 200, "url": "u", "html_len": 8}));
    }
}
