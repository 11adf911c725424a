//! The `scripted` model provider: answers from a script given in its config,
//! one response per call, in order. For tests, demos and benchmarks, where a
//! run must be deterministic and need no model.
//!
//! Config: `{"responses": [{"text": "..."}, {"tool_calls": [{"name": "t",
//! "args": {}, "id": "optional"}]}, ...], "model": "optional-id"}`; each response may also carry
//! `"usage"`, `"finish"` (default: `tool_calls` when it has tool calls,
//! else `stop`) and `"delay_ms"` (answer that much later, like a slow
//! model). A call past the end of the script is an error saying so. Its
//! first call in a run resumed from a log answers the response after the
//! model turns the conversation already holds.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Deserialize;
use zu_plugin_api::prelude::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    responses: Vec<ScriptedResponse>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptedResponse {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ScriptedCall>,
    #[serde(default)]
    finish: Option<Finish>,
    #[serde(default)]
    usage: JsonObject,
    #[serde(default)]
    delay_ms: u64,
}

/// A tool call of the script: `name`, `args`, and the `id` a model would
/// give it (optional: without one, the loop gives it one of its own).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptedCall {
    name: String,
    #[serde(default)]
    args: JsonObject,
    #[serde(default)]
    id: Option<String>,
}

/// Replays a fixed list of model responses.
pub struct Scripted {
    responses: Vec<ModelResponse>,
    delays_ms: Vec<u64>,
    next: AtomicUsize,
    model: Option<String>,
}

impl Scripted {
    /// A provider answering with `responses`, in order.
    pub fn from_responses(responses: Vec<ModelResponse>) -> Self {
        Scripted {
            responses,
            delays_ms: Vec::new(),
            next: AtomicUsize::new(0),
            model: None,
        }
    }

    /// How many responses have been served.
    pub fn calls(&self) -> usize {
        self.next.load(Ordering::SeqCst).min(self.responses.len())
    }
}

impl Plugin for Scripted {
    const NAME: &'static str = "scripted";

    fn new(config: Value) -> Result<Self, PluginError> {
        let config = if config.is_null() { json!({}) } else { config };
        let config: Config = serde_json::from_value(config)
            .map_err(|e| PluginError::invalid(format!("scripted provider config: {e}")))?;
        let delays_ms = config.responses.iter().map(|r| r.delay_ms).collect();
        let responses = config
            .responses
            .into_iter()
            .map(|r| {
                let finish = r.finish.unwrap_or(if r.tool_calls.is_empty() {
                    Finish::Stop
                } else {
                    Finish::ToolCalls
                });
                let tool_calls: Vec<ToolCall> = r
                    .tool_calls
                    .into_iter()
                    .map(|c| {
                        let call = ToolCall {
                            name: c.name,
                            args: c.args,
                        };
                        match c.id {
                            Some(id) => call.with_id(id),
                            None => call,
                        }
                    })
                    .collect();
                ModelResponse {
                    text: r.text,
                    tool_calls,
                    finish,
                    usage: r.usage,
                }
            })
            .collect();
        Ok(Scripted {
            model: config.model,
            delays_ms,
            ..Scripted::from_responses(responses)
        })
    }
}

impl ModelProvider for Scripted {
    fn model(&self) -> Option<String> {
        self.model.clone()
    }

    fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, PluginError> {
        // A run resumed from its log (in a new process): the conversation
        // already holds the model turns served before, so the script goes on
        // from the response after them (replayed steps are not model turns).
        let turns = request
            .messages
            .iter()
            .filter(|m| m["role"] == "assistant")
            .filter(|m| !m["content"].as_str().is_some_and(|c| c.starts_with("(replay step ")))
            .count();
        let _ = self.next.compare_exchange(0, turns, Ordering::SeqCst, Ordering::SeqCst);
        let i = self.next.fetch_add(1, Ordering::SeqCst);
        if let Some(&ms) = self.delays_ms.get(i).filter(|&&ms| ms > 0) {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        self.responses.get(i).cloned().ok_or_else(|| {
            PluginError::failed(format!(
                "the scripted provider's script is exhausted: call {} asked for a response but the script has {} (add more entries to \"responses\")",
                i + 1,
                self.responses.len()
            ))
        })
    }
}

#[cfg(feature = "export")]
zu_plugin_api::export_plugins! { providers: [Scripted] }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_in_order_then_says_the_script_is_exhausted() {
        let p = Scripted::new(json!({"responses": [
            {"tool_calls": [{"name": "noop", "args": {"x": 1}}], "usage": {"total_tokens": 5}},
            {"text": "{\"answer\": 1}"}
        ]}))
        .unwrap();
        let req = ModelRequest::default();
        let first = p.complete(&req).unwrap();
        assert_eq!(first.tool_calls[0].name, "noop");
        assert_eq!(first.finish, Finish::ToolCalls);
        assert_eq!(first.usage["total_tokens"], 5);
        let second = p.complete(&req).unwrap();
        assert_eq!(second.text.as_deref(), Some("{\"answer\": 1}"));
        assert_eq!(second.finish, Finish::Stop);
        let err = p.complete(&req).unwrap_err();
        assert!(err.to_string().contains("script is exhausted: call 3"), "{err}");
        assert_eq!(p.calls(), 2);
    }

    #[test]
    fn a_resumed_conversation_goes_on_at_the_response_after_its_model_turns() {
        let p = Scripted::new(json!({"responses": [{"text": "a"}, {"text": "b"}, {"text": "c"}]})).unwrap();
        let turn = json!({"role": "assistant", "content": "x", "tool_calls": []});
        let replayed = json!({"role": "assistant", "content": "(replay step 1)"});
        let req = ModelRequest::new(vec![json!({"role": "user"}), turn, replayed], vec![]);
        assert_eq!(p.complete(&req).unwrap().text.as_deref(), Some("b"));
        // Only the first call looks: later ones go on in order.
        assert_eq!(p.complete(&ModelRequest::default()).unwrap().text.as_deref(), Some("c"));
    }

    #[test]
    fn explicit_finish_wins_and_typos_are_refused() {
        let p = Scripted::new(json!({"responses": [{"text": "cut", "finish": "length"}]})).unwrap();
        assert_eq!(p.complete(&ModelRequest::default()).unwrap().finish, Finish::Length);
        let err = Scripted::new(json!({"respones": []})).err().unwrap();
        assert!(matches!(err, PluginError::InvalidInput(_)));
        assert!(err.to_string().contains("respones"), "{err}");
    }

    #[test]
    fn no_config_or_empty_config_is_an_empty_script() {
        for config in [json!({}), Value::Null] {
            let p = Scripted::new(config).unwrap();
            assert!(p.complete(&ModelRequest::default()).is_err());
        }
    }
}
