//! The host's side of the boundary: each kind's FFI object implements the
//! author-facing port trait, so the host holds a loaded plugin and a native
//! Rust plugin behind the same `dyn Trait`. Also the context bridge that serves
//! a host `RunContext` to plugins.

use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::{
    sabi_trait::TD_Opaque,
    sabi_types::RRef,
    std_types::{ROption, RStr, RString},
};
use serde_json::Value;

use super::kind;
use super::objects::*;
use super::{from_json, to_json, Delta, FfiErrorKind, FfiResult};
use crate::content::{Action, Observation};
use crate::contracts::{Event, JsonObject, RunResult};
use crate::filter::{EventFilter, StoredEvent};
use crate::ports::*;

/// Serves a host-side [`RunContext`] through the FFI callback trait. Host code
/// runs here, so a panic in it is caught and answered with an error or a
/// neutral value rather than unwinding into the plugin.
pub struct ContextBridge<'a>(pub &'a dyn RunContext);

/// The FFI view of a host context, valid for one plugin call.
pub fn context_bridge<'a>(bridge: &'a ContextBridge<'a>) -> HostContext<'a> {
    HostContextFfi_TO::from_ptr(RRef::new(bridge), TD_Opaque)
}

fn quiet<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

impl HostContextFfi for ContextBridge<'_> {
    fn ffi_spec(&self) -> RString {
        quiet(RString::new(), || {
            serde_json::to_string(self.0.spec()).unwrap_or_default().into()
        })
    }
    fn ffi_observation(&self) -> ROption<RString> {
        quiet(ROption::RNone, || {
            self.0
                .observation()
                .and_then(|o| serde_json::to_string(o).ok())
                .map(RString::from)
                .into()
        })
    }
    fn ffi_event_count(&self) -> u64 {
        quiet(0, || self.0.event_count())
    }
    fn ffi_query(&self, filter_json: RStr<'_>, limit: ROption<u64>, after_seq: u64) -> FfiResult<RString> {
        super::guarded(|| {
            let obj: JsonObject = from_json(filter_json.as_str(), "event filter")?;
            let filter = EventFilter::from_json(&obj).map_err(|e| PluginError::invalid(e.to_string()))?;
            let events = self.0.query(&filter, limit.into_option(), after_seq)?;
            Ok(to_json(&events)?.into())
        })
    }
}

fn reply<T: serde::de::DeserializeOwned>(r: FfiResult<RString>, what: &str) -> Result<T, PluginError> {
    let text = r.into_result()?;
    serde_json::from_str(text.as_str())
        .map_err(|e| PluginError::failed(format!("the plugin returned a malformed {what}: {e}")))
}

fn maybe_verdict(r: FfiResult<ROption<RString>>) -> Result<Option<Verdict>, PluginError> {
    match r.into_result()? {
        ROption::RSome(text) => serde_json::from_str(text.as_str())
            .map(Some)
            .map_err(|e| PluginError::failed(format!("the plugin returned a malformed verdict: {e}"))),
        ROption::RNone => Ok(None),
    }
}

fn with_ctx<T>(ctx: &dyn RunContext, f: impl FnOnce(HostContext<'_>) -> T) -> T {
    let bridge = ContextBridge(ctx);
    f(context_bridge(&bridge))
}

impl Tool for kind::tools::Object {
    fn schema(&self) -> Value {
        serde_json::from_str(self.ffi_schema().as_str()).unwrap_or(Value::Object(JsonObject::new()))
    }
    fn prompt_fragment(&self) -> String {
        self.ffi_prompt_fragment().into_string()
    }
    fn call(&self, ctx: &dyn RunContext, args: JsonObject) -> Result<JsonObject, PluginError> {
        let args = to_json(&args)?;
        reply(
            with_ctx(ctx, |c| self.ffi_call(c, args.as_str().into())),
            "tool observation",
        )
    }
}

/// A provider loaded from a library. Remembers what it last sent of each
/// conversation so a continued one crosses the boundary as its new messages.
pub struct ImportedProvider {
    object: kind::providers::Object,
    sent: super::Conversations<u64, Sent>,
}

struct Sent {
    len: usize,
    tools: Vec<Value>,
}

impl ImportedProvider {
    /// Wraps a checked provider object.
    pub fn new(object: kind::providers::Object) -> Self {
        ImportedProvider {
            object,
            sent: Default::default(),
        }
    }

    fn send_delta(&self, request: &ModelRequest, conversation: u64, base: usize, tools: bool) -> FfiResult<RString> {
        let delta = Delta {
            conversation,
            base,
            messages: request.messages[base..].to_vec(),
            tools: tools.then(|| request.tools.clone()),
            params: request.params.clone(),
            time_left_ms: request.time_left_ms,
        };
        match to_json(&delta) {
            Ok(text) => self.object.ffi_complete_delta(text.as_str().into()),
            Err(e) => FfiResult::RErr(e.into()),
        }
    }
}

impl ModelProvider for ImportedProvider {
    fn capabilities(&self) -> Capabilities {
        serde_json::from_str(self.object.ffi_capabilities().as_str()).unwrap_or_default()
    }
    fn model(&self) -> Option<String> {
        self.object.ffi_model().into_option().map(RString::into_string)
    }
    /// Sends only the new messages of a request marked as continuing the
    /// conversation this provider was last sent; anything else whole.
    fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, PluginError> {
        let Some(Continuation {
            conversation,
            unchanged,
        }) = request.continuation()
        else {
            let request = to_json(request)?;
            return reply(self.object.ffi_complete(request.as_str().into()), "model response");
        };
        // Taken out for this turn (no lock across the call): other
        // conversations go on meanwhile. An old plugin holds one at a time
        // and asks for the rest whole (a resync).
        let (base, tools_changed) = match self.sent.take(&conversation) {
            Some(s) if s.len <= unchanged.min(request.messages.len()) => (s.len, s.tools != request.tools),
            _ => (0, true),
        };
        let mut out = self.send_delta(request, conversation, base, tools_changed);
        if base > 0 && matches!(&out, FfiResult::RErr(e) if e.kind == FfiErrorKind::Resync) {
            out = self.send_delta(request, conversation, 0, true);
        }
        if out.is_ok() {
            let sent = Sent {
                len: request.messages.len(),
                tools: request.tools.clone(),
            };
            self.sent.keep(conversation, sent);
        }
        reply(out, "model response")
    }
}

impl Detector for kind::detectors::Object {
    fn scope(&self) -> Scope {
        match self.ffi_scope() {
            FfiScope::PerObservation => Scope::PerObservation,
            FfiScope::PerTurn => Scope::PerTurn,
            FfiScope::OnFinal => Scope::OnFinal,
        }
    }
    fn inspect(&self, ctx: &dyn RunContext) -> Result<Option<Verdict>, PluginError> {
        maybe_verdict(with_ctx(ctx, |c| self.ffi_inspect(c)))
    }
}

impl Validator for kind::validators::Object {
    fn check(&self, result: &RunResult, ctx: &dyn RunContext) -> Result<Option<Verdict>, PluginError> {
        let result = to_json(result)?;
        maybe_verdict(with_ctx(ctx, |c| self.ffi_check(result.as_str().into(), c)))
    }
}

impl SandboxBackend for kind::backends::Object {
    fn launch(&self, spec: &JsonObject) -> Result<Value, PluginError> {
        reply(self.ffi_launch(to_json(spec)?.as_str().into()), "sandbox handle")
    }
    fn exec(&self, sandbox: &Value, call: &ToolCall) -> Result<JsonObject, PluginError> {
        let (sandbox, call) = (to_json(sandbox)?, to_json(call)?);
        reply(
            self.ffi_exec(sandbox.as_str().into(), call.as_str().into()),
            "sandbox observation",
        )
    }
    fn destroy(&self, sandbox: &Value) -> Result<(), PluginError> {
        Ok(self.ffi_destroy(to_json(sandbox)?.as_str().into()).into_result()?)
    }
}

impl EventSink for kind::sinks::Object {
    fn append(&self, event: &Event) -> Result<(), PluginError> {
        Ok(self.ffi_append(to_json(event)?.as_str().into()).into_result()?)
    }
    fn query(&self, filter: &EventFilter, limit: Option<u64>, after_seq: u64) -> Result<Vec<StoredEvent>, PluginError> {
        let filter = to_json(&filter.to_json())?;
        reply(
            self.ffi_query(filter.as_str().into(), limit.into(), after_seq),
            "event list",
        )
    }
    fn count(&self, filter: &EventFilter) -> Result<u64, PluginError> {
        Ok(self
            .ffi_count(to_json(&filter.to_json())?.as_str().into())
            .into_result()?)
    }
    fn close(&self) -> Result<(), PluginError> {
        Ok(self.ffi_close().into_result()?)
    }
    fn append_batch(&self, events: &[Event]) -> Result<(), PluginError> {
        Ok(self.ffi_append_batch(to_json(events)?.as_str().into()).into_result()?)
    }
}

impl Policy for kind::policies::Object {
    fn capabilities(&self) -> Capabilities {
        serde_json::from_str(self.ffi_capabilities().as_str()).unwrap_or_default()
    }
    fn model(&self) -> Option<String> {
        self.ffi_model().into_option().map(RString::into_string)
    }
    fn act(&self, observation: &Observation, tools: &[ToolSpec]) -> Result<Action, PluginError> {
        let (observation, tools) = (to_json(observation)?, to_json(tools)?);
        reply(
            self.ffi_act(observation.as_str().into(), tools.as_str().into()),
            "action",
        )
    }
}

impl Trigger for kind::triggers::Object {
    fn source(&self) -> String {
        self.ffi_source().into_string()
    }
    fn next_event(&self) -> Result<Option<TriggerEvent>, PluginError> {
        match self.ffi_next_event().into_result()? {
            ROption::RSome(text) => serde_json::from_str(text.as_str())
                .map(Some)
                .map_err(|e| PluginError::failed(format!("the plugin returned a malformed trigger event: {e}"))),
            ROption::RNone => Ok(None),
        }
    }
}
