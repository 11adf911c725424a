//! The `openai` provider: the chat-completions API that OpenAI, OpenRouter,
//! Ollama, llama.cpp's server and vLLM speak. Zu's messages become the API's
//! (tool calls get ids, tool results point back at them), the answer becomes
//! a `ModelResponse`: text, tool calls (arguments arrive as a JSON string),
//! `finish_reason`, usage, and the model id the server says it served.

use serde_json::{json, Map, Value};
use zu_plugin_api::prelude::*;

use crate::http::{usage_of, Common, Parsed, Session};

/// The chat-completions provider.
pub struct OpenAi(Session);

impl Plugin for OpenAi {
    const NAME: &'static str = "openai";
    /// It calls its API over the network (`base_url`; the default host below).
    const ENVELOPE: Envelope = Envelope {
        tier: 1,
        capabilities: &[CAP_NET],
        egress: &["api.openai.com"],
    };
    fn new(config: Value) -> Result<Self, PluginError> {
        Session::new("openai", config, "https://api.openai.com/v1", "OPENAI_API_KEY").map(OpenAi)
    }
}

/// The id of call `j` of the assistant message at `m`: the same on every
/// request, so a tool result always points at its call.
fn call_id(m: usize, j: usize) -> String {
    format!("call_{m}_{j}")
}

/// Zu's messages as chat-completions messages.
pub fn messages(zu: &[Value]) -> Vec<Value> {
    let mut out = Vec::with_capacity(zu.len());
    let mut pending: std::collections::VecDeque<String> = Default::default();
    for (m, msg) in zu.iter().enumerate() {
        let content = msg.get("content").cloned().unwrap_or(Value::Null);
        match msg["role"].as_str().unwrap_or("user") {
            "assistant" => {
                pending.clear();
                let calls: Vec<Value> = msg["tool_calls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .map(|(j, c)| {
                        let (id, args) = crate::http::id_and_args(c, || call_id(m, j));
                        pending.push_back(id.clone());
                        json!({"id": id, "type": "function",
                               "function": {"name": c["name"], "arguments": args.to_string()}})
                    })
                    .collect();
                let mut a = json!({"role": "assistant", "content": content});
                if !calls.is_empty() {
                    a["tool_calls"] = Value::Array(calls);
                }
                out.push(a);
            }
            "tool" => {
                let id = crate::http::result_id(msg, pending.pop_front(), || call_id(m, 0));
                out.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
            }
            role => out.push(json!({"role": role, "content": content})),
        }
    }
    out
}

/// A Zu tool schema as a chat-completions tool.
pub fn tool(schema: &Value) -> Value {
    if schema.get("type") == Some(&json!("function")) {
        return schema.clone();
    }
    let mut f = Map::new();
    f.insert("name".into(), schema["name"].clone());
    if let Some(d) = schema.get("description") {
        f.insert("description".into(), d.clone());
    }
    f.insert(
        "parameters".into(),
        schema
            .get("parameters")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object"})),
    );
    json!({"type": "function", "function": f})
}

/// The request body for `request`.
pub fn body(common: &Common, request: &ModelRequest) -> Value {
    let mut b = json!({"model": common.model, "messages": messages(&request.messages)});
    if !request.tools.is_empty() {
        b["tools"] = request.tools.iter().map(tool).collect();
    }
    if let Some(n) = common.max_tokens {
        b["max_tokens"] = n.into();
    }
    if let Some(t) = common.temperature {
        b["temperature"] = t.into();
    }
    b
}

/// The answer as a response and the model the server served, or what is
/// wrong with it.
pub fn response(v: &Value) -> Parsed {
    let choice = v["choices"].get(0).ok_or("no choices[0]")?;
    let message = choice
        .get("message")
        .filter(|m| m.is_object())
        .ok_or("choices[0] has no message")?;
    let text = message["content"].as_str().map(str::to_owned);
    let mut tool_calls = Vec::new();
    for c in message["tool_calls"].as_array().into_iter().flatten() {
        let f = &c["function"];
        let name = f["name"].as_str().ok_or("a tool call without function.name")?;
        let raw = match &f["arguments"] {
            Value::String(s) => s.clone(),
            Value::Object(o) => Value::Object(o.clone()).to_string(),
            Value::Null => "{}".to_owned(),
            other => other.to_string(),
        };
        let raw_trimmed = if raw.trim().is_empty() { "{}" } else { raw.as_str() };
        let call = match serde_json::from_str::<Value>(raw_trimmed) {
            Ok(Value::Object(args)) => ToolCall {
                name: name.to_owned(),
                args: crate::http::model_args(args),
            },
            Ok(_) => ToolCall::invalid(name, &raw, "the arguments are JSON but not an object"),
            Err(e) => ToolCall::invalid(name, &raw, &format!("not valid JSON: {e}")),
        };
        // The model's id goes back with the call's result, unchanged.
        tool_calls.push(match c["id"].as_str().filter(|id| !id.is_empty()) {
            Some(id) => call.with_id(id),
            None => call,
        });
    }
    let finish = match choice["finish_reason"].as_str() {
        Some("length") => Finish::Length,
        _ if !tool_calls.is_empty() => Finish::ToolCalls,
        Some("tool_calls") => Finish::ToolCalls,
        _ => Finish::Stop,
    };
    let usage = usage_of(
        &v["usage"],
        &[
            ("prompt_tokens", "input_tokens"),
            ("completion_tokens", "output_tokens"),
            ("total_tokens", "total_tokens"),
        ],
    )?;
    let served = v["model"].as_str().map(str::to_owned);
    Ok((
        ModelResponse {
            text,
            tool_calls,
            finish,
            usage,
        },
        served,
    ))
}

impl ModelProvider for OpenAi {
    fn model(&self) -> Option<String> {
        self.0.model()
    }

    fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, PluginError> {
        self.0.turn(
            "/chat/completions",
            |c| c.key.iter().map(|k| ("authorization", format!("Bearer {k}"))).collect(),
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
    fn tool_results_point_at_their_calls_and_schemas_become_functions() {
        let zu = vec![
            json!({"role": "system", "content": "s"}),
            json!({"role": "user", "content": "q"}),
            json!({"role": "assistant", "content": "plan", "tool_calls": [{"name": "a", "args": {"x": 1}}, {"name": "b", "args": {}}]}),
            json!({"role": "tool", "name": "a", "content": "{\"ok\":1}"}),
            json!({"role": "tool", "name": "b", "content": "{}"}),
        ];
        let m = messages(&zu);
        assert_eq!(m[2]["tool_calls"][0]["id"], "call_2_0");
        assert_eq!(m[2]["tool_calls"][0]["function"]["arguments"], "{\"x\":1}");
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "call_2_0", "content": "{\"ok\":1}"})
        );
        assert_eq!(m[4]["tool_call_id"], "call_2_1");
        let t = tool(&json!({"name": "a", "parameters": {"type": "object"}}));
        assert_eq!(t["function"]["name"], "a");
    }

    #[test]
    fn malformed_arguments_become_an_invalid_call_and_length_is_truncation() {
        let v = json!({"model": "m-1", "choices": [{"message": {"content": null, "tool_calls": [
            {"id": "x", "type": "function", "function": {"name": "a", "arguments": "{\"x\": 1"}}]},
            "finish_reason": "length"}], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}});
        let (r, served) = response(&v).unwrap();
        assert_eq!(r.finish, Finish::Length);
        assert!(r.tool_calls[0].invalid_arguments().is_some());
        assert_eq!(r.usage["input_tokens"], 3);
        assert_eq!(served.as_deref(), Some("m-1"));
        assert!(response(&json!({"error": "x"})).is_err());
    }
}
