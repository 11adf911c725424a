//! The host's handles on plugins in their own process: each implements its
//! kind's port trait by asking the library's [`Supervisor`], so the loop
//! cannot tell an isolated plugin from one in the host. A provider sends
//! only the new messages of a continued conversation.

use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use zu_plugin_api::content::{Action, Observation};
use zu_plugin_api::contracts::{Event, JsonObject, RunResult};
use zu_plugin_api::filter::{EventFilter, StoredEvent};
use zu_plugin_api::ports::*;
use zu_plugin_api::version::Kind;
use zu_runtime::PluginObject;

use super::protocol::{raw, Turn, TurnAnswer, RESYNC};
use super::supervisor::Supervisor;

/// One plugin in a library's process.
#[derive(Clone)]
pub struct Remote {
    supervisor: Arc<Supervisor>,
    kind: Kind,
    name: String,
}

impl Remote {
    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        args: &(impl Serialize + ?Sized),
        ctx: Option<&dyn RunContext>,
    ) -> Result<T, PluginError> {
        let answer = self.supervisor.call(self.kind, &self.name, method, raw(args)?, ctx)?;
        serde_json::from_str(answer.get())
            .map_err(|e| PluginError::failed(format!("the plugin process answered a malformed {method}: {e}")))
    }
}

/// The registry object of plugin `kind`/`name` served by `supervisor`.
pub fn object(supervisor: Arc<Supervisor>, kind: Kind, name: &str) -> PluginObject {
    let remote = Remote {
        supervisor,
        kind,
        name: name.to_owned(),
    };
    match kind {
        Kind::Providers => PluginObject::Provider(Arc::new(RemoteProvider {
            remote,
            sent: Default::default(),
            model: Mutex::new(None),
        })),
        Kind::Tools => PluginObject::Tool(Arc::new(remote)),
        Kind::Detectors => PluginObject::Detector(Arc::new(remote)),
        Kind::Validators => PluginObject::Validator(Arc::new(remote)),
        Kind::Backends => PluginObject::Backend(Arc::new(remote)),
        Kind::Sinks => PluginObject::Sink(Arc::new(remote)),
        Kind::Policies => PluginObject::Policy(Arc::new(remote)),
        Kind::Triggers => PluginObject::Trigger(Arc::new(remote)),
    }
}

impl Tool for Remote {
    fn schema(&self) -> Value {
        self.call("schema", &(), None).unwrap_or_else(|_| json!({}))
    }
    fn prompt_fragment(&self) -> String {
        self.call("prompt_fragment", &(), None).unwrap_or_default()
    }
    fn call(&self, ctx: &dyn RunContext, args: JsonObject) -> Result<JsonObject, PluginError> {
        let out: JsonObject = Remote::call(self, "call", &args, Some(ctx))?;
        // The same limit as across the library boundary.
        if to_json_capped(&out, MAX_OBSERVATION_BYTES).is_err() {
            return Err(PluginError::TooLarge {
                limit: MAX_OBSERVATION_BYTES,
            });
        }
        Ok(out)
    }
}

/// A provider in a library's process: what it was last sent of the
/// conversation, and the model id it last reported.
struct RemoteProvider {
    remote: Remote,
    sent: zu_plugin_api::ffi::Conversations<u64, (usize, Vec<Value>)>,
    model: Mutex<Option<Option<String>>>,
}

type Answer = TurnAnswer<ModelResponse>;

impl RemoteProvider {
    fn turn(&self, request: &ModelRequest, conversation: u64, base: usize, tools: bool) -> Result<Answer, PluginError> {
        let turn = Turn {
            conversation,
            base,
            messages: request.messages[base..].to_vec(),
            tools: tools.then(|| request.tools.clone()),
            params: request.params.clone(),
            time_left_ms: request.time_left_ms,
        };
        self.remote.call("complete", &turn, None)
    }
}

impl ModelProvider for RemoteProvider {
    fn capabilities(&self) -> Capabilities {
        self.remote.call("capabilities", &(), None).unwrap_or_default()
    }
    fn model(&self) -> Option<String> {
        let mut cached = self.model.lock().unwrap_or_else(|p| p.into_inner());
        cached
            .get_or_insert_with(|| self.remote.call("model", &(), None).unwrap_or(None))
            .clone()
    }
    fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, PluginError> {
        let (conversation, unchanged) = match request.continuation() {
            Some(c) => (c.conversation, c.unchanged),
            None => (0, 0),
        };
        // Taken out for this turn (no lock across the call).
        let (base, tools_changed) = match self.sent.take(&conversation) {
            Some((len, tools)) if len <= unchanged.min(request.messages.len()) => (len, tools != request.tools),
            _ => (0, true),
        };
        let mut answer = self.turn(request, conversation, base, tools_changed);
        if base > 0 && matches!(&answer, Err(PluginError::Failed(m)) if m == RESYNC) {
            answer = self.turn(request, conversation, 0, true);
        }
        if answer.is_ok() && request.continuation().is_some() {
            self.sent
                .keep(conversation, (request.messages.len(), request.tools.clone()));
        }
        let answer = answer?;
        *self.model.lock().unwrap_or_else(|p| p.into_inner()) = Some(answer.model);
        Ok(answer.response)
    }
}

impl Detector for Remote {
    fn scope(&self) -> Scope {
        self.call("scope", &(), None).unwrap_or(Scope::PerObservation)
    }
    fn inspect(&self, ctx: &dyn RunContext) -> Result<Option<Verdict>, PluginError> {
        self.call("inspect", &(), Some(ctx))
    }
}

impl Validator for Remote {
    fn check(&self, result: &RunResult, ctx: &dyn RunContext) -> Result<Option<Verdict>, PluginError> {
        self.call("check", result, Some(ctx))
    }
}

impl EventSink for Remote {
    fn append(&self, event: &Event) -> Result<(), PluginError> {
        self.call("append", event, None)
    }
    fn append_batch(&self, events: &[Event]) -> Result<(), PluginError> {
        self.call("append_batch", events, None)
    }
    fn query(&self, filter: &EventFilter, limit: Option<u64>, after_seq: u64) -> Result<Vec<StoredEvent>, PluginError> {
        self.call("query", &(filter.to_json(), limit, after_seq), None)
    }
    fn count(&self, filter: &EventFilter) -> Result<u64, PluginError> {
        self.call("count", &filter.to_json(), None)
    }
    fn close(&self) -> Result<(), PluginError> {
        self.call("close", &(), None)
    }
}

impl SandboxBackend for Remote {
    fn launch(&self, spec: &JsonObject) -> Result<Value, PluginError> {
        self.call("launch", spec, None)
    }
    fn exec(&self, sandbox: &Value, call: &ToolCall) -> Result<JsonObject, PluginError> {
        self.call("exec", &(sandbox, call), None)
    }
    fn destroy(&self, sandbox: &Value) -> Result<(), PluginError> {
        self.call("destroy", sandbox, None)
    }
}

impl Policy for Remote {
    fn capabilities(&self) -> Capabilities {
        self.call("capabilities", &(), None).unwrap_or_default()
    }
    fn model(&self) -> Option<String> {
        self.call("model", &(), None).unwrap_or(None)
    }
    fn act(&self, observation: &Observation, tools: &[ToolSpec]) -> Result<Action, PluginError> {
        self.call("act", &(observation, tools), None)
    }
}

impl Trigger for Remote {
    fn source(&self) -> String {
        self.call("source", &(), None).unwrap_or_default()
    }
    fn next_event(&self) -> Result<Option<TriggerEvent>, PluginError> {
        self.call("next_event", &(), None)
    }
}
