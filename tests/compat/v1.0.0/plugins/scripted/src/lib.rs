//! The `scripted` model provider: answers from a script given in its config,
//! one response per call, in order. For tests, demos and benchmarks, where a
//! run must be deterministic and need no model.
//!
//! Config: `{"responses": [{"text": "..."}, {"tool_calls": [{"name": "t",
//! "args": {}}]}, ...], "model": "optional-id"}`; each response may also carry
//! `"usage"` and `"finish"` (default: `tool_calls` when it has tool calls,
//! else `stop`). A call past the end of the script is an error saying so.

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
    tool_calls: Vec<ToolCall>,
    #[serde(default)]
    finish: Option<Finish>,
    #[serde(default)]
    usage: JsonObject,
}

/// Replays a fixed list of model responses.
pub struct Scripted {
    responses: Vec<ModelResponse>,
    next: AtomicUsize,
    model: Option<String>,
}

impl Scripted {
    /// A provider answering with `responses`, in order.
    pub fn from_responses(responses: Vec<ModelResponse>) -> Self {
        Scripted {
            responses,
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
        let responses = config
            .responses
            .into_iter()
            .map(|r| {
                let finish = r.finish.unwrap_or(if r.tool_calls.is_empty() {
                    Finish::Stop
                } else {
                    Finish::ToolCalls
                });
                ModelResponse {
                    text: r.text,
                    tool_calls: r.tool_calls,
                    finish,
                    usage: r.usage,
                }
            })
            .collect();
        Ok(Scripted {
            model: config.model,
            ..Scripted::from_responses(responses)
        })
    }
}

impl ModelProvider for Scripted {
    fn model(&self) -> Option<String> {
        self.model.clone()
    }

    fn complete(&self, _request: &ModelRequest) -> Result<ModelResponse, PluginError> {
        let i = self.next.fetch_add(1, Ordering::SeqCst);
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
