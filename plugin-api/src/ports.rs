//! The port traits a plugin implements, one per kind, and the value types they
//! speak. Every trait is plain safe Rust; the export macro and the hidden `ffi`
//! module carry them across the library boundary. Errors live in [`crate::error`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::content::{Action, Observation};
use crate::contracts::{Event, JsonObject, RunResult, TaskSpec};
use crate::filter::{EventFilter, StoredEvent};

pub use crate::error::{panic_message, to_json_capped, PluginError, SecurityBlock};

/// Capability token: opens outbound network connections.
pub const CAP_NET: &str = "net";
/// Capability token: provisions or runs a sandbox.
pub const CAP_SANDBOX: &str = "sandbox";
/// Capability token: reads the host filesystem.
pub const CAP_FS_READ: &str = "fs:read";
/// Capability token: writes the host filesystem.
pub const CAP_FS_WRITE: &str = "fs:write";
/// Capability token: spawns a subprocess.
pub const CAP_SUBPROCESS: &str = "subprocess";
/// The egress entry for a plugin that needs the open internet; a high-trust
/// request, never a default.
pub const EGRESS_OPEN: &str = "*";

/// The largest tool observation, in bytes of JSON, the host accepts; a
/// larger one is refused (`oversized_observation`) without being built whole.
pub const MAX_OBSERVATION_BYTES: usize = 1_000_000;

/// The capability envelope a plugin declares: its tool tier, the capability
/// tokens it needs, and the hosts it reaches (`EGRESS_OPEN` for any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    /// Tool tier (1 = cheapest); meaningful for tools, 1 elsewhere.
    pub tier: u32,
    /// Capability tokens (`CAP_*`).
    pub capabilities: &'static [&'static str],
    /// Egress hosts; empty means none, `["*"]` means open.
    pub egress: &'static [&'static str],
}

impl Envelope {
    /// Least privilege: tier 1, no capabilities, no egress.
    pub const NONE: Envelope = Envelope {
        tier: 1,
        capabilities: &[],
        egress: &[],
    };
}

/// A plugin's registry name, envelope, and constructor. Implement it next to
/// the port trait of the plugin's kind, then list the type in
/// [`export_plugins!`](crate::export_plugins).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Zu plugin: it does not implement `Plugin`",
    label = "every listed plugin needs `impl Plugin` (its NAME and constructor), or `#[tool]` on a function"
)]
pub trait Plugin: Sized + Send + Sync + 'static {
    /// The registry name (`http_fetch`, `sqlite`, ...).
    const NAME: &'static str;
    /// The capability envelope; least privilege unless overridden.
    const ENVELOPE: Envelope = Envelope::NONE;
    /// Builds an instance from its JSON config. The config is `null` when the
    /// host was given none for this plugin (e.g. `zu plugins` listing it), so a
    /// plugin that needs config should accept `null` as "not configured yet"
    /// and fail on first use, and refuse a config object that lacks a field.
    fn new(config: Value) -> Result<Self, PluginError>;
}

pub use crate::model::{
    Capabilities, Continuation, Finish, ModelRequest, ModelResponse, ToolCall, CALL_ID, INVALID_ARGUMENTS,
};

/// A tool as a policy sees it: name, description, JSON schema.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The tool's registry name.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// Its argument schema.
    #[serde(default)]
    pub json_schema: Value,
}

/// When a detector runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// After every tool observation.
    PerObservation,
    /// After every model turn.
    PerTurn,
    /// Once, on the final answer.
    OnFinal,
}

/// How bad a verdict is; ordered from mild to fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Recorded only.
    Warn,
    /// Fed back to the model, which tries again.
    Retry,
    /// Climb a tier (or end the run exhausted at the ceiling).
    Escalate,
    /// End the run.
    Terminal,
}

/// A detector's or validator's finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// How bad it is.
    pub severity: Severity,
    /// Who found it.
    pub detector: String,
    /// What was found.
    #[serde(default)]
    pub detail: Option<String>,
}

impl Verdict {
    /// A verdict with a detail message.
    pub fn new(severity: Severity, detector: impl Into<String>, detail: impl Into<String>) -> Self {
        Verdict {
            severity,
            detector: detector.into(),
            detail: Some(detail.into()),
        }
    }
}

/// What woke the agent. The payload is untrusted external input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerEvent {
    /// `email`, `webhook`, `queue`, `schedule`, ...
    pub source: String,
    /// What the external party sent.
    #[serde(default)]
    pub payload: JsonObject,
}

/// A read-only view of the running task, served by the host. Reading it costs
/// the same with 10 or 100,000 events on the log: nothing is copied up front.
pub trait RunContext {
    /// The task being run.
    fn spec(&self) -> &TaskSpec;
    /// The observation being inspected, if any.
    fn observation(&self) -> Option<&Value>;
    /// How many events the run's log holds.
    fn event_count(&self) -> u64;
    /// Events of the log matching `filter`, after sequence number `after_seq`
    /// (1-based; 0 = from the start), at most `limit`.
    fn query(&self, filter: &EventFilter, limit: Option<u64>, after_seq: u64) -> Result<Vec<StoredEvent>, PluginError>;
    /// How long the run has left, when the host knows (a plugin in another
    /// library or process is not told; the host abandons a call that
    /// overruns anyway). A tool that waits on something else bounds the
    /// wait by it.
    fn time_left(&self) -> Option<std::time::Duration> {
        None
    }
}

/// A tool the model may call.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a tool: it does not implement `Tool`",
    label = "listed under `tools:`, so it must implement `Tool`",
    note = "list each plugin under the kind whose trait it implements: providers: ModelProvider, tools: Tool (or #[tool] on a function), detectors: Detector, validators: Validator, backends: SandboxBackend, sinks: EventSink, policies: Policy, triggers: Trigger"
)]
pub trait Tool: Send + Sync {
    /// The schema offered to the model (a function-calling tool object).
    fn schema(&self) -> Value {
        Value::Object(JsonObject::new())
    }
    /// A line for the system prompt describing when to use the tool.
    fn prompt_fragment(&self) -> String {
        String::new()
    }
    /// Runs the tool. The result is the observation the model sees.
    fn call(&self, ctx: &dyn RunContext, args: JsonObject) -> Result<JsonObject, PluginError>;
}

/// What a `#[tool]` function may return: an object, or any JSON value (a
/// value that is not an object becomes `{"value": ...}`).
#[doc(hidden)]
pub trait IntoObservation {
    /// The observation the model sees.
    fn into_observation(self) -> Result<JsonObject, PluginError>;
}

impl IntoObservation for Result<JsonObject, PluginError> {
    fn into_observation(self) -> Result<JsonObject, PluginError> {
        self
    }
}

impl IntoObservation for Result<Value, PluginError> {
    fn into_observation(self) -> Result<JsonObject, PluginError> {
        Ok(match self? {
            Value::Object(o) => o,
            other => JsonObject::from_iter([("value".to_owned(), other)]),
        })
    }
}

/// A model: messages in, text and tool calls out.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a model provider: it does not implement `ModelProvider`",
    label = "listed under `providers:`, so it must implement `ModelProvider`",
    note = "list each plugin under the kind whose trait it implements: providers: ModelProvider, tools: Tool (or #[tool] on a function), detectors: Detector, validators: Validator, backends: SandboxBackend, sinks: EventSink, policies: Policy, triggers: Trigger"
)]
pub trait ModelProvider: Send + Sync {
    /// What the model can do.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    /// The model id, recorded per turn so cost is attributable.
    fn model(&self) -> Option<String> {
        None
    }
    /// Answers one request.
    fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, PluginError>;
}

/// An observation-time check whose verdict drives the loop.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a detector: it does not implement `Detector`",
    label = "listed under `detectors:`, so it must implement `Detector`",
    note = "list each plugin under the kind whose trait it implements: providers: ModelProvider, tools: Tool (or #[tool] on a function), detectors: Detector, validators: Validator, backends: SandboxBackend, sinks: EventSink, policies: Policy, triggers: Trigger"
)]
pub trait Detector: Send + Sync {
    /// When the detector runs.
    fn scope(&self) -> Scope;
    /// Looks at the run; `None` when there is nothing to report.
    fn inspect(&self, ctx: &dyn RunContext) -> Result<Option<Verdict>, PluginError>;
}

/// An on-final check of the result.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a validator: it does not implement `Validator`",
    label = "listed under `validators:`, so it must implement `Validator`",
    note = "list each plugin under the kind whose trait it implements: providers: ModelProvider, tools: Tool (or #[tool] on a function), detectors: Detector, validators: Validator, backends: SandboxBackend, sinks: EventSink, policies: Policy, triggers: Trigger"
)]
pub trait Validator: Send + Sync {
    /// Checks the result; `None` when it passes.
    fn check(&self, result: &RunResult, ctx: &dyn RunContext) -> Result<Option<Verdict>, PluginError>;
}

/// Provisions and runs commands inside an isolated environment.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a sandbox backend: it does not implement `SandboxBackend`",
    label = "listed under `backends:`, so it must implement `SandboxBackend`",
    note = "list each plugin under the kind whose trait it implements: providers: ModelProvider, tools: Tool (or #[tool] on a function), detectors: Detector, validators: Validator, backends: SandboxBackend, sinks: EventSink, policies: Policy, triggers: Trigger"
)]
pub trait SandboxBackend: Send + Sync {
    /// Starts a sandbox from a free-form spec; returns its handle.
    fn launch(&self, spec: &JsonObject) -> Result<Value, PluginError>;
    /// Runs a tool call inside a sandbox.
    fn exec(&self, sandbox: &Value, call: &ToolCall) -> Result<JsonObject, PluginError>;
    /// Tears a sandbox down.
    fn destroy(&self, sandbox: &Value) -> Result<(), PluginError>;
}

/// An event store. `append` is idempotent on `event_id`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event sink: it does not implement `EventSink`",
    label = "listed under `sinks:`, so it must implement `EventSink`",
    note = "list each plugin under the kind whose trait it implements: providers: ModelProvider, tools: Tool (or #[tool] on a function), detectors: Detector, validators: Validator, backends: SandboxBackend, sinks: EventSink, policies: Policy, triggers: Trigger"
)]
pub trait EventSink: Send + Sync {
    /// Stores one event; appending the same `event_id` again is a no-op.
    fn append(&self, event: &Event) -> Result<(), PluginError>;
    /// Stores several events at once (one transaction where the sink has
    /// them); durable when it returns. The default appends one by one.
    fn append_batch(&self, events: &[Event]) -> Result<(), PluginError> {
        events.iter().try_for_each(|e| self.append(e))
    }
    /// Events matching `filter` after `after_seq`, at most `limit`.
    fn query(&self, filter: &EventFilter, limit: Option<u64>, after_seq: u64) -> Result<Vec<StoredEvent>, PluginError>;
    /// How many events match `filter`.
    fn count(&self, filter: &EventFilter) -> Result<u64, PluginError>;
    /// Releases the sink's resources; later calls may fail.
    fn close(&self) -> Result<(), PluginError> {
        Ok(())
    }
}

/// The generalised decision-maker: observation in, action out.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a policy: it does not implement `Policy`",
    label = "listed under `policies:`, so it must implement `Policy`",
    note = "list each plugin under the kind whose trait it implements: providers: ModelProvider, tools: Tool (or #[tool] on a function), detectors: Detector, validators: Validator, backends: SandboxBackend, sinks: EventSink, policies: Policy, triggers: Trigger"
)]
pub trait Policy: Send + Sync {
    /// What the policy can do.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    /// The model id, if any.
    fn model(&self) -> Option<String> {
        None
    }
    /// Chooses the next action.
    fn act(&self, observation: &Observation, tools: &[ToolSpec]) -> Result<Action, PluginError>;
}

/// An inbound source of runs (email, webhook, queue, schedule, ...).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a trigger: it does not implement `Trigger`",
    label = "listed under `triggers:`, so it must implement `Trigger`",
    note = "list each plugin under the kind whose trait it implements: providers: ModelProvider, tools: Tool (or #[tool] on a function), detectors: Detector, validators: Validator, backends: SandboxBackend, sinks: EventSink, policies: Policy, triggers: Trigger"
)]
pub trait Trigger: Send + Sync {
    /// The source label stamped on every event it yields.
    fn source(&self) -> String;
    /// Blocks until the next event; `None` when the source is exhausted.
    fn next_event(&self) -> Result<Option<TriggerEvent>, PluginError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_order_from_mild_to_fatal() {
        assert!(Severity::Warn < Severity::Retry);
        assert!(Severity::Retry < Severity::Escalate);
        assert!(Severity::Escalate < Severity::Terminal);
    }

    #[test]
    fn model_response_defaults_like_the_reference() {
        let r: ModelResponse = serde_json::from_str(r#"{"text": "hi"}"#).unwrap();
        assert_eq!(r.finish, Finish::Stop);
        assert!(r.tool_calls.is_empty());
        let r: ModelResponse =
            serde_json::from_str(r#"{"tool_calls": [{"name": "t"}], "finish": "tool_calls"}"#).unwrap();
        assert_eq!(r.tool_calls[0].name, "t");
        assert_eq!(r.finish, Finish::ToolCalls);
    }
}
