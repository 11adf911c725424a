//! The `anthropic` provider: the Messages API. System messages become the
//! `system` field, tool calls `tool_use` blocks and their results
//! `tool_result` blocks in the next user turn (consecutive user content is
//! merged, as the API wants turns to alternate); `stop_reason`, usage and
//! the served model come back.

use serde_json::{json, Value};
use zu_plugin_api::prelude::*;

use crate::http::{usage_of, Common, Parsed, Session};

/// The API version sent as `anthropic-version`.
pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` is required by the API; this when the config names none.
const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The Messages API provider.
pub struct Anthropic(Session);

impl Plugin for Anthropic {
    const NAME: &'static str = "anthropic";
    /// It calls its API over the network (`base_url`; the default host below).
    const ENVELOPE: Envelope = Envelope {
        tier: 1,
        capabilities: &[CAP_NET],
        egress: &["api.anthropic.com"],
    };
    fn new(config: Value) -> Result<Self, PluginError> {
        Session::new("anthropic", config, "https://api.anthropic.com", "ANTHROPIC_API_KEY").map(Anthropic)
    }
}

fn use_id(m: usize, j: usize) -> String {
    format!("toolu_{m}_{j}")
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Zu's messages as (system, Messages API messages).
pub fn messages(zu: &[Value]) -> (String, Vec<Value>) {
    let mut system = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    let mut pending: std::collections::VecDeque<String> = Default::default();
    let push = |role: &str, block: Value, out: &mut Vec<Value>| match out.last_mut() {
        Some(last) if last["role"] == role => last["content"].as_array_mut().expect("blocks").push(block),
        _ => out.push(json!({"role": role, "content": [block]})),
    };
    for (m, msg) in zu.iter().enumerate() {
        let content = msg.get("content").map(text_of).unwrap_or_default();
        match msg["role"].as_str().unwrap_or("user") {
            "system" => system.push(content),
            "assistant" => {
                if !content.is_empty() {
                    push("assistant", json!({"type": "text", "text": content}), &mut out);
                }
                pending.clear();
                for (j, c) in msg["tool_calls"].as_array().into_iter().flatten().enumerate() {
                    let (id, input) = crate::http::id_and_args(c, || use_id(m, j));
                    pending.push_back(id.clone());
                    push(
                        "assistant",
                        json!({"type": "tool_use", "id": id, "name": c["name"], "input": input}),
                        &mut out,
                    );
                }
            }
            "tool" => {
                let id = crate::http::result_id(msg, pending.pop_front(), || use_id(m, 0));
                push(
                    "user",
                    json!({"type": "tool_result", "tool_use_id": id, "content": content}),
                    &mut out,
                );
            }
            _ => push("user", json!({"type": "text", "text": content}), &mut out),
        }
    }
    (system.join("\n\n"), out)
}

/// A Zu tool schema as a Messages API tool.
pub fn tool(schema: &Value) -> Value {
    let f = schema.get("function").unwrap_or(schema);
    let mut t = json!({"name": f["name"], "input_schema": f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"}))});
    if let Some(d) = f.get("description") {
        t["description"] = d.clone();
    }
    t
}

/// The request body for `request`.
pub fn body(common: &Common, request: &ModelRequest) -> Value {
    let (system, msgs) = messages(&request.messages);
    let mut b =
        json!({"model": common.model, "max_tokens": common.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS), "messages": msgs});
    if !system.is_empty() {
        b["system"] = system.into();
    }
    if !request.tools.is_empty() {
        b["tools"] = request.tools.iter().map(tool).collect();
    }
    if let Some(t) = common.temperature {
        b["temperature"] = t.into();
    }
    b
}

/// The answer as a response and the served model, or what is wrong with it.
pub fn response(v: &Value) -> Parsed {
    if v["type"] != "message" {
        return Err(format!("type is {}, not \"message\"", v["type"]));
    }
    let blocks = v["content"].as_array().ok_or("no content blocks")?;
    let mut texts = Vec::new();
    let mut tool_calls = Vec::new();
    for b in blocks {
        match b["type"].as_str() {
            Some("text") => texts.push(b["text"].as_str().unwrap_or_default().to_owned()),
            Some("tool_use") => {
                let name = b["name"].as_str().ok_or("a tool_use block without a name")?;
                let call = match &b["input"] {
                    Value::Object(args) => ToolCall {
                        name: name.to_owned(),
                        args: crate::http::model_args(args.clone()),
                    },
                    other => ToolCall::invalid(name, &other.to_string(), "the input is not a JSON object"),
                };
                // The model's id goes back with the call's result, unchanged.
                tool_calls.push(match b["id"].as_str().filter(|id| !id.is_empty()) {
                    Some(id) => call.with_id(id),
                    None => call,
                });
            }
            _ => {}
        }
    }
    let finish = match v["stop_reason"].as_str() {
        Some("max_tokens") => Finish::Length,
        _ if !tool_calls.is_empty() => Finish::ToolCalls,
        _ => Finish::Stop,
    };
    let usage = usage_of(
        &v["usage"],
        &[("input_tokens", "input_tokens"), ("output_tokens", "output_tokens")],
    )?;
    let text = (!texts.is_empty()).then(|| texts.join("\n"));
    Ok((
        ModelResponse {
            text,
            tool_calls,
            finish,
            usage,
        },
        v["model"].as_str().map(str::to_owned),
    ))
}

impl ModelProvider for Anthropic {
    fn model(&self) -> Option<String> {
        self.0.model()
    }

    fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, PluginError> {
        self.0.turn(
            "/v1/messages",
            |c| {
                let mut h = vec![("anthropic-version", API_VERSION.to_owned())];
                h.extend(c.key.iter().map(|k| ("x-api-key", k.clone())));
                h
            },
            body,
            request,
            response,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_follow_their_calls_in_one_user_turn_and_system_is_lifted() {
        let zu = vec![
            json!({"role": "system", "content": "s"}),
            json!({"role": "user", "content": "q"}),
            json!({"role": "assistant", "tool_calls": [{"name": "a", "args": {"x": 1}}, {"name": "b", "args": {}}]}),
            json!({"role": "tool", "name": "a", "content": "r1"}),
            json!({"role": "tool", "name": "b", "content": "r2"}),
            json!({"role": "user", "content": "escalated"}),
        ];
        let (system, m) = messages(&zu);
        assert_eq!(system, "s");
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!(m[1]["content"][1]["id"], "toolu_2_1");
        assert_eq!(
            m[2]["content"][0],
            json!({"type": "tool_result", "tool_use_id": "toolu_2_0", "content": "r1"})
        );
        assert_eq!(m[2]["content"][2]["text"], "escalated");
    }

    #[test]
    fn tool_use_max_tokens_and_usage_come_back() {
        let v = json!({"type": "message", "model": "claude-x", "stop_reason": "max_tokens",
            "content": [{"type": "text", "text": "t"}, {"type": "tool_use", "id": "i", "name": "a", "input": "oops"}],
            "usage": {"input_tokens": 5, "output_tokens": 6}});
        let (r, served) = response(&v).unwrap();
        assert_eq!(r.finish, Finish::Length);
        assert!(r.tool_calls[0].invalid_arguments().is_some());
        assert_eq!(r.usage["output_tokens"], 6);
        assert_eq!(served.as_deref(), Some("claude-x"));
        assert!(response(&json!({"type": "error"})).is_err());
    }
}
