//! The plugin's side of the boundary: wraps an author's port implementation in
//! the kind's FFI object. Every method body, the constructor and `Drop` run
//! under `catch_unwind` here, before abi_stable's glue could see a panic.

use std::cell::OnceCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{ROption, RStr, RString},
};
use serde_json::Value;

use super::objects::*;
use super::{from_json, guarded, to_json, to_json_capped, Delta, FfiError, FfiErrorKind, FfiKind, FfiResult};
use crate::contracts::TaskSpec;
use crate::filter::{EventFilter, StoredEvent};
use crate::ports::*;

/// Turns a constructed plugin into the FFI object of one kind.
pub trait Exports<O: FfiKind>: Plugin {
    fn into_object(self) -> O;
}

/// Owns the author's value; a panic in its destructor is caught here.
struct Guard<T>(Option<T>);

impl<T> Guard<T> {
    fn new(value: T) -> Self {
        Guard(Some(value))
    }
    fn get(&self) -> &T {
        self.0.as_ref().expect("a plugin value is present until it is dropped")
    }
}

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        if let Some(value) = self.0.take() {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(value)));
        }
    }
}

/// The host's context as the plugin reads it; spec and observation are
/// fetched once, on first use.
struct PluginContext<'a> {
    host: HostContext<'a>,
    spec: OnceCell<TaskSpec>,
    observation: OnceCell<Option<Value>>,
}

impl<'a> PluginContext<'a> {
    fn new(host: HostContext<'a>) -> Self {
        PluginContext {
            host,
            spec: OnceCell::new(),
            observation: OnceCell::new(),
        }
    }
}

impl RunContext for PluginContext<'_> {
    fn spec(&self) -> &TaskSpec {
        self.spec.get_or_init(|| {
            // The host always sends a valid spec; an empty query is the
            // least surprising stand-in if it ever did not.
            serde_json::from_str(self.host.ffi_spec().as_str()).unwrap_or_else(|_| TaskSpec::new(""))
        })
    }

    fn observation(&self) -> Option<&Value> {
        self.observation
            .get_or_init(|| match self.host.ffi_observation() {
                ROption::RSome(text) => serde_json::from_str(text.as_str()).ok(),
                ROption::RNone => None,
            })
            .as_ref()
    }

    fn event_count(&self) -> u64 {
        self.host.ffi_event_count()
    }

    fn query(&self, filter: &EventFilter, limit: Option<u64>, after_seq: u64) -> Result<Vec<StoredEvent>, PluginError> {
        let filter_json = to_json(&filter.to_json())?;
        let text = self
            .host
            .ffi_query(filter_json.as_str().into(), limit.into(), after_seq)
            .into_result()?;
        from_json(text.as_str(), "event list from the host")
    }
}

fn json_out<T: serde::Serialize>(value: &T) -> RString {
    serde_json::to_string(value)
        .unwrap_or_else(|_| "null".to_owned())
        .into()
}

fn verdict_out(v: Option<Verdict>) -> Result<ROption<RString>, PluginError> {
    Ok(match v {
        Some(v) => ROption::RSome(to_json(&v)?.into()),
        None => ROption::RNone,
    })
}

fn filter_in(filter_json: RStr<'_>) -> Result<EventFilter, PluginError> {
    let obj: crate::contracts::JsonObject = from_json(filter_json.as_str(), "event filter")?;
    EventFilter::from_json(&obj).map_err(|e| PluginError::invalid(e.to_string()))
}

fn text_or_default(f: impl FnOnce() -> String) -> RString {
    super::catch(|| Ok(f())).unwrap_or_default().into()
}

impl<T: Tool> ToolFfi for Guard<T> {
    fn ffi_schema(&self) -> RString {
        text_or_default(|| self.get().schema().to_string())
    }
    fn ffi_prompt_fragment(&self) -> RString {
        text_or_default(|| self.get().prompt_fragment())
    }
    fn ffi_call(&self, ctx: HostContext<'_>, args_json: RStr<'_>) -> FfiResult<RString> {
        guarded(|| {
            let args = from_json(args_json.as_str(), "tool arguments")?;
            let out = self.get().call(&PluginContext::new(ctx), args)?;
            Ok(to_json_capped(&out, MAX_OBSERVATION_BYTES)?.into())
        })
    }
}

/// A provider plus the conversations it was sent, so a continued
/// conversation crosses the boundary as only its new messages.
struct ProviderGuard<T> {
    guard: Guard<T>,
    conversations: super::Conversations<u64, ModelRequest>,
}

impl<T> ProviderGuard<T> {
    fn new(value: T) -> Self {
        ProviderGuard {
            guard: Guard::new(value),
            conversations: Default::default(),
        }
    }
}

impl<T: ModelProvider> ProviderFfi for ProviderGuard<T> {
    fn ffi_capabilities(&self) -> RString {
        json_out(&super::catch(|| Ok(self.guard.get().capabilities())).unwrap_or_default())
    }
    fn ffi_model(&self) -> ROption<RString> {
        super::catch(|| Ok(self.guard.get().model()))
            .ok()
            .flatten()
            .map(RString::from)
            .into()
    }
    fn ffi_complete(&self, request_json: RStr<'_>) -> FfiResult<RString> {
        guarded(|| {
            let request: ModelRequest = from_json(request_json.as_str(), "model request")?;
            Ok(to_json(&self.guard.get().complete(&request)?)?.into())
        })
    }
    fn ffi_complete_delta(&self, delta_json: RStr<'_>) -> FfiResult<RString> {
        let delta: Delta = match from_json(delta_json.as_str(), "conversation delta") {
            Ok(d) => d,
            Err(e) => return FfiResult::RErr(e.into()),
        };
        // Taken out for this turn: other conversations go on meanwhile.
        let held = self.conversations.take(&delta.conversation);
        let mut request = match held {
            _ if delta.base == 0 => ModelRequest::default(),
            Some(r) if r.messages.len() == delta.base => r,
            _ => {
                let message = "the plugin does not hold this conversation; resend it whole".into();
                return FfiResult::RErr(FfiError {
                    kind: FfiErrorKind::Resync,
                    message,
                });
            }
        };
        request.messages.extend(delta.messages);
        if let Some(tools) = delta.tools {
            request.tools = tools;
        }
        request.params = delta.params;
        request.time_left_ms = delta.time_left_ms;
        let out = guarded(|| Ok(to_json(&self.guard.get().complete(&request)?)?.into()));
        if out.is_ok() {
            // (After an error the next turn starts the conversation afresh.)
            self.conversations.keep(delta.conversation, request);
        }
        out
    }
}

impl<T: Detector> DetectorFfi for Guard<T> {
    fn ffi_scope(&self) -> FfiScope {
        match super::catch(|| Ok(self.get().scope())) {
            Ok(Scope::PerTurn) => FfiScope::PerTurn,
            Ok(Scope::OnFinal) => FfiScope::OnFinal,
            _ => FfiScope::PerObservation,
        }
    }
    fn ffi_inspect(&self, ctx: HostContext<'_>) -> FfiResult<ROption<RString>> {
        guarded(|| verdict_out(self.get().inspect(&PluginContext::new(ctx))?))
    }
}

impl<T: Validator> ValidatorFfi for Guard<T> {
    fn ffi_check(&self, result_json: RStr<'_>, ctx: HostContext<'_>) -> FfiResult<ROption<RString>> {
        guarded(|| {
            let result = from_json(result_json.as_str(), "run result")?;
            verdict_out(self.get().check(&result, &PluginContext::new(ctx))?)
        })
    }
}

impl<T: SandboxBackend> BackendFfi for Guard<T> {
    fn ffi_launch(&self, spec_json: RStr<'_>) -> FfiResult<RString> {
        guarded(|| {
            let spec = from_json(spec_json.as_str(), "sandbox spec")?;
            Ok(to_json(&self.get().launch(&spec)?)?.into())
        })
    }
    fn ffi_exec(&self, sandbox_json: RStr<'_>, call_json: RStr<'_>) -> FfiResult<RString> {
        guarded(|| {
            let sandbox: Value = from_json(sandbox_json.as_str(), "sandbox handle")?;
            let call: ToolCall = from_json(call_json.as_str(), "tool call")?;
            Ok(to_json(&self.get().exec(&sandbox, &call)?)?.into())
        })
    }
    fn ffi_destroy(&self, sandbox_json: RStr<'_>) -> FfiResult<()> {
        guarded(|| {
            let sandbox: Value = from_json(sandbox_json.as_str(), "sandbox handle")?;
            self.get().destroy(&sandbox)
        })
    }
}

impl<T: EventSink> SinkFfi for Guard<T> {
    fn ffi_append(&self, event_json: RStr<'_>) -> FfiResult<()> {
        guarded(|| self.get().append(&from_json(event_json.as_str(), "event")?))
    }
    fn ffi_query(&self, filter_json: RStr<'_>, limit: ROption<u64>, after_seq: u64) -> FfiResult<RString> {
        guarded(|| {
            let events = self
                .get()
                .query(&filter_in(filter_json)?, limit.into_option(), after_seq)?;
            Ok(to_json(&events)?.into())
        })
    }
    fn ffi_count(&self, filter_json: RStr<'_>) -> FfiResult<u64> {
        guarded(|| self.get().count(&filter_in(filter_json)?))
    }
    fn ffi_close(&self) -> FfiResult<()> {
        guarded(|| self.get().close())
    }
    fn ffi_append_batch(&self, events_json: RStr<'_>) -> FfiResult<()> {
        guarded(|| {
            let events: Vec<crate::contracts::Event> = from_json(events_json.as_str(), "event batch")?;
            self.get().append_batch(&events)
        })
    }
}

impl<T: Policy> PolicyFfi for Guard<T> {
    fn ffi_capabilities(&self) -> RString {
        json_out(&super::catch(|| Ok(self.get().capabilities())).unwrap_or_default())
    }
    fn ffi_model(&self) -> ROption<RString> {
        super::catch(|| Ok(self.get().model()))
            .ok()
            .flatten()
            .map(RString::from)
            .into()
    }
    fn ffi_act(&self, observation_json: RStr<'_>, tools_json: RStr<'_>) -> FfiResult<RString> {
        guarded(|| {
            let observation = from_json(observation_json.as_str(), "observation")?;
            let tools: Vec<ToolSpec> = from_json(tools_json.as_str(), "tool list")?;
            Ok(to_json(&self.get().act(&observation, &tools)?)?.into())
        })
    }
}

impl<T: Trigger> TriggerFfi for Guard<T> {
    fn ffi_source(&self) -> RString {
        text_or_default(|| self.get().source())
    }
    fn ffi_next_event(&self) -> FfiResult<ROption<RString>> {
        guarded(|| {
            Ok(match self.get().next_event()? {
                Some(e) => ROption::RSome(to_json(&e)?.into()),
                None => ROption::RNone,
            })
        })
    }
}

macro_rules! exports {
    ($($(#[$doc:meta])* $Kind:ident { name: $name:ident, object: $o:ident, getter: $g:ident, version: $v:literal,
        port: $port:ident, ffi: $ffi:ident, export: $export:ident, import: $i:path }),* $(,)?) => {
        $(impl<T: Plugin + $port> Exports<kind::$name::Object> for T {
            fn into_object(self) -> kind::$name::Object {
                $ffi::from_value($export::new(self), TD_Opaque)
            }
        })*
    };
}

crate::__for_each_kind!(exports);
