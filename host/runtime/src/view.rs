//! View scoping: the default-deny renderer for any surface that shows events.
//! Allowlisted control-plane keys and scalars render verbatim (strings
//! capped); everything else becomes a content-free summary (type, length,
//! sha256 prefix). `full` renders everything.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use zu_plugin_api::contracts::{Event, JsonObject};

/// Payload keys rendered verbatim: the runtime's own control plane.
pub const RENDER_KEYS: [&str; 17] = [
    "step",
    "tier",
    "from_tier",
    "to_tier",
    "exhausted",
    "reason",
    "detail",
    "tool",
    "detector",
    "severity",
    "kind",
    "status",
    "model",
    "usage",
    "rendered",
    "count",
    "selector",
];

/// An allowlisted string renders verbatim up to this many characters.
pub const RENDER_STR_CAP: usize = 200;

fn is_scalar(v: &Value) -> bool {
    matches!(v, Value::Null | Value::Bool(_) | Value::Number(_))
}

/// Python's `str()` of a JSON value, for the summary digest (a string is borrowed).
fn py_str(v: &Value) -> std::borrow::Cow<'_, str> {
    match v {
        Value::String(s) => s.into(),
        other => other.to_string().into(),
    }
}

/// A content-free descriptor: enough to see that something is there and
/// whether it changed, never what it is.
pub fn summary(v: &Value) -> Value {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            keys.truncate(20);
            json!({"_type": "object", "keys": keys, "fields": o.len()})
        }
        Value::Array(a) => json!({"_type": "array", "count": a.len()}),
        other => {
            let s = py_str(other);
            let digest = hex12(&Sha256::digest(s.as_bytes()));
            json!({"_type": "str", "len": s.chars().count(), "sha256": digest})
        }
    }
}

fn hex12(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(12);
    for b in &bytes[..6] {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
    out
}

fn uuid_text(id: uuid::Uuid) -> Value {
    let mut buf = uuid::Uuid::encode_buffer();
    Value::String(id.hyphenated().encode_lower(&mut buf).to_owned())
}

fn cap(v: &Value) -> Value {
    match v {
        v if is_scalar(v) => v.clone(),
        Value::String(s) => {
            let n = s.chars().count();
            if n <= RENDER_STR_CAP {
                v.clone()
            } else {
                let head: String = s.chars().take(RENDER_STR_CAP).collect();
                Value::String(format!("{head}…[+{}]", n - RENDER_STR_CAP))
            }
        }
        Value::Object(o) if o.len() <= 12 && o.values().all(is_scalar) => v.clone(),
        other => summary(other),
    }
}

/// Allowlist-renders a payload (`full`: unchanged). Tool-call `args` are
/// scoped per argument, so a numeric argument shows while a URL does not.
pub fn scope_payload(payload: &JsonObject, full: bool) -> JsonObject {
    if full {
        return payload.clone();
    }
    payload
        .iter()
        .map(|(k, v)| {
            let rendered = if is_scalar(v) {
                v.clone()
            } else if RENDER_KEYS.contains(&k.as_str()) {
                cap(v)
            } else if let (true, Value::Object(args)) = (k == "args", v) {
                Value::Object(
                    args.iter()
                        .map(|(ak, av)| (ak.clone(), if is_scalar(av) { av.clone() } else { summary(av) }))
                        .collect(),
                )
            } else {
                summary(v)
            };
            (k.clone(), rendered)
        })
        .collect()
}

/// A scoped, JSON-ready view of an event, in the shape of the event's own JSON.
pub fn scope_event(event: &Event, full: bool) -> Value {
    let mut out = Map::new();
    out.insert("event_id".into(), uuid_text(event.event_id()));
    out.insert("trace_id".into(), uuid_text(event.trace_id()));
    out.insert("task_id".into(), uuid_text(event.task_id()));
    out.insert("parent_id".into(), event.parent_id().map_or(Value::Null, uuid_text));
    out.insert("type".into(), event.event_type().into());
    out.insert("source".into(), event.source().into());
    // Python's isoformat() of an aware UTC datetime ends in +00:00, not Z.
    let mut ts = event.ts_text();
    ts.pop();
    ts.push_str("+00:00");
    out.insert("ts".into(), ts.into());
    out.insert("schema_version".into(), event.schema_version().into());
    out.insert("payload".into(), Value::Object(scope_payload(event.payload(), full)));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> JsonObject {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn allowlisted_keys_and_scalars_render_and_content_is_summarised() {
        let p = obj(json!({
            "step": 3, "tool": "http_fetch", "text": "secret page",
            "args": {"url": "https://x", "n": 2}, "usage": {"in": 1, "out": 2},
            "ok": true, "detail": "d".repeat(250),
        }));
        let s = scope_payload(&p, false);
        assert_eq!(s["step"], 3);
        assert_eq!(s["tool"], "http_fetch");
        assert_eq!(s["ok"], true);
        assert_eq!(s["usage"], json!({"in": 1, "out": 2}));
        assert_eq!(s["args"]["n"], 2);
        assert_eq!(s["args"]["url"]["_type"], "str");
        assert_eq!(
            s["text"],
            json!({"_type": "str", "len": 11, "sha256": hex12(&Sha256::digest(b"secret page"))})
        );
        assert!(s["detail"].as_str().unwrap().ends_with("…[+50]"));
        assert_eq!(scope_payload(&p, true), p);
    }

    #[test]
    fn rich_values_under_allowlisted_keys_are_summarised_too() {
        let s = scope_payload(&obj(json!({"usage": {"nested": {"a": 1}}, "reason": [1, 2]})), false);
        assert_eq!(s["usage"], json!({"_type": "object", "keys": ["nested"], "fields": 1}));
        assert_eq!(s["reason"], json!({"_type": "array", "count": 2}));
    }

    #[test]
    fn the_event_view_has_the_reference_shape() {
        let id = uuid::Uuid::from_u128(0x1234);
        let e = Event::new(id, id, None, "harness.tool.returned", "t", obj(json!({"text": "abc"}))).unwrap();
        let v = scope_event(&e, false);
        assert_eq!(v["trace_id"], "00000000-0000-0000-0000-000000001234");
        assert!(v["parent_id"].is_null());
        let ts = v["ts"].as_str().unwrap();
        assert!(
            ts.ends_with("+00:00") && ts.len() == 32 && &ts[19..20] == ".",
            "isoformat with microseconds: {ts}"
        );
        assert_eq!(v["payload"]["text"]["sha256"], "ba7816bf8f01");
    }

    #[test]
    fn summary_digest_matches_python_hashlib() {
        // hashlib.sha256(b"abc").hexdigest()[:12]
        assert_eq!(
            summary(&json!("abc")),
            json!({"_type": "str", "len": 3, "sha256": "ba7816bf8f01"})
        );
        // str(3.5) in Python is "3.5"; a non-ASCII string counts code points.
        assert_eq!(
            summary(&json!("é")),
            json!({"_type": "str", "len": 1, "sha256": hex12(&Sha256::digest("é".as_bytes()))})
        );
    }
}
