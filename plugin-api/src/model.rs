//! The model's side of a turn: the request a provider gets (the
//! conversation, the tool schemas, the time left), the response it gives
//! (text, tool calls, why it stopped, usage) and what it can do. Re-exported
//! by [`ports`](crate::ports).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::contracts::JsonObject;

/// Why a model stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// A final answer.
    #[default]
    Stop,
    /// The response asks for tool calls.
    ToolCalls,
    /// The response was cut off by the model's length limit.
    Length,
}

/// One tool call requested by the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The tool's registry name.
    pub name: String,
    /// Its arguments.
    #[serde(default)]
    pub args: JsonObject,
}

/// The key under which [`ToolCall::invalid`] keeps arguments that were not
/// a JSON object; the loop answers such a call itself.
pub const INVALID_ARGUMENTS: &str = "$zu_invalid_arguments";

impl ToolCall {
    /// A call whose arguments the model sent malformed (`raw`, and why they
    /// could not be read): the loop does not make it, it tells the model to
    /// send the arguments again as a JSON object.
    pub fn invalid(name: impl Into<String>, raw: &str, error: &str) -> Self {
        let mut args = JsonObject::new();
        args.insert(
            INVALID_ARGUMENTS.into(),
            serde_json::json!({"raw": raw, "error": error}),
        );
        ToolCall {
            name: name.into(),
            args,
        }
    }

    /// Why the arguments are unusable, when the call came from [`ToolCall::invalid`].
    pub fn invalid_arguments(&self) -> Option<&Value> {
        self.args.get(INVALID_ARGUMENTS)
    }

    /// This call with the id the model gave it, which goes back with its
    /// result unchanged (kept under [`CALL_ID`] in `args`, so a `ToolCall`
    /// built by struct literal, as 1.0 plugins do, still works: it has none).
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.args.insert(CALL_ID.into(), Value::String(id.into()));
        self
    }

    /// The call's id: the model's, or the one the loop gave a call that had none.
    pub fn id(&self) -> Option<&str> {
        self.args
            .get(CALL_ID)
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
    }

    /// Its arguments as the tool receives them: without the call's id.
    pub fn arguments(&self) -> JsonObject {
        let mut args = self.args.clone();
        args.remove(CALL_ID);
        args
    }
}

/// The key under which [`ToolCall::with_id`] keeps the call's id in `args`
/// (never passed to the tool).
pub const CALL_ID: &str = "$zu_call_id";

/// What a model provider can do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    /// The model takes tool schemas natively.
    pub native_tools: bool,
    /// The model accepts images.
    pub vision: bool,
    /// Its context window, in tokens.
    pub max_context: u64,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            native_tools: true,
            vision: false,
            max_context: 128_000,
        }
    }
}

/// One request to a model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelRequest {
    /// The conversation so far (`{"role", "content", ...}` objects).
    pub messages: Vec<Value>,
    /// The tool schemas offered this turn.
    #[serde(default)]
    pub tools: Vec<Value>,
    /// Provider parameters.
    #[serde(default)]
    pub params: JsonObject,
    /// How long the run has left when the host sends the request, in ms: a
    /// provider's timeouts and retries stay within it (the host abandons a
    /// call that overruns it anyway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_left_ms: Option<u64>,
    /// Set by the host's loop; read by the transports that carry a request
    /// to a provider in another library or process (see [`Continuation`]).
    #[serde(skip)]
    continuation: Option<Continuation>,
}

impl ModelRequest {
    /// A request with `messages` and `tools` and no parameters.
    pub fn new(messages: Vec<Value>, tools: Vec<Value>) -> Self {
        ModelRequest {
            messages,
            tools,
            ..ModelRequest::default()
        }
    }

    /// Marks the request as the next turn of a conversation (host side).
    #[doc(hidden)]
    pub fn set_continuation(&mut self, continuation: Option<Continuation>) {
        self.continuation = continuation;
    }

    /// The mark set by [`ModelRequest::set_continuation`], if any.
    #[doc(hidden)]
    pub fn continuation(&self) -> Option<Continuation> {
        self.continuation
    }
}

/// The host's promise about a request: its first `unchanged` messages are
/// those of its previous request with the same `conversation` id. A
/// transport uses it to send only what is new, so a turn costs the same at
/// step 1000 as at step 1. Providers never see it.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Continuation {
    /// The conversation's id, unique per run.
    pub conversation: u64,
    /// How many leading messages are unchanged since the previous request.
    pub unchanged: usize,
}

/// One answer from a model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelResponse {
    /// Final or interim text.
    #[serde(default)]
    pub text: Option<String>,
    /// Tool calls requested this turn.
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    /// Why the model stopped.
    #[serde(default)]
    pub finish: Finish,
    /// Token usage as the provider reports it.
    #[serde(default)]
    pub usage: JsonObject,
}
