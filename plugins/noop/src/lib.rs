//! No-op plugins, the workload of the benchmarks (mirroring the Python
//! reference's bench fakes) and a smoke test for a fresh build: the
//! `bench_script` provider answers K turns (config `{"k": K}`: K-1 calls of
//! `noop {"x": call}`, then `{"answer": 1}`), the `noop` tool returns `{"ok": true}`, the `null_detector` and `null_validator`
//! return nothing, `count_events` reads the event count through the host
//! callback and returns nothing. Each counts its calls; the `noop_stats` tool
//! reports the counts (and resets them with `{"reset": true}`; `{"turns": K}`
//! sets the turns of the next conversation a `bench_script` starts), so a host can
//! check across the library boundary that the work really happened.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use zu_plugin_api::prelude::*;

static TOOL_CALLS: AtomicU64 = AtomicU64::new(0);
static DETECTOR_CALLS: AtomicU64 = AtomicU64::new(0);
static VALIDATOR_CALLS: AtomicU64 = AtomicU64::new(0);
static COUNTED_EVENTS: AtomicU64 = AtomicU64::new(0);
/// Set by `noop_stats {"turns": K}`: the turns of the next conversation a
/// `bench_script` provider starts (0: its configured K).
static NEXT_TURNS: AtomicUsize = AtomicUsize::new(0);

macro_rules! unit_plugin {
    ($ty:ident, $name:literal) => {
        #[doc = concat!("The `", $name, "` plugin.")]
        pub struct $ty;
        impl Plugin for $ty {
            const NAME: &'static str = $name;
            fn new(_config: Value) -> Result<Self, PluginError> {
                Ok($ty)
            }
        }
    };
}

/// The `bench_script` provider: K turns per conversation (its config, or
/// what `noop_stats {"turns": K}` set for the next one). A request holding
/// only the task's first messages starts a conversation.
pub struct BenchScript {
    k: AtomicUsize,
    calls: AtomicUsize,
}

impl BenchScript {
    /// A provider answering `k` turns.
    pub fn with_turns(k: usize) -> Self {
        BenchScript {
            k: AtomicUsize::new(k),
            calls: AtomicUsize::new(0),
        }
    }
}

impl Plugin for BenchScript {
    const NAME: &'static str = "bench_script";
    fn new(config: Value) -> Result<Self, PluginError> {
        let k = config.get("k").and_then(Value::as_u64).unwrap_or(1) as usize;
        Ok(BenchScript::with_turns(k.max(1)))
    }
}

impl ModelProvider for BenchScript {
    fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, PluginError> {
        if request.messages.len() <= 2 {
            self.calls.store(0, Ordering::Relaxed);
            let next = NEXT_TURNS.swap(0, Ordering::Relaxed);
            if next > 0 {
                self.k.store(next, Ordering::Relaxed);
            }
        }
        let call = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if call < self.k.load(Ordering::Relaxed) {
            let mut args = JsonObject::new();
            args.insert("x".into(), call.into());
            return Ok(ModelResponse {
                tool_calls: vec![ToolCall {
                    name: "noop".into(),
                    args,
                }],
                finish: Finish::ToolCalls,
                ..Default::default()
            });
        }
        Ok(ModelResponse {
            text: Some("{\"answer\": 1}".into()),
            ..Default::default()
        })
    }
}

unit_plugin!(Noop, "noop");
unit_plugin!(NullDetector, "null_detector");
unit_plugin!(NullValidator, "null_validator");
unit_plugin!(CountEvents, "count_events");
unit_plugin!(NoopStats, "noop_stats");

impl Tool for Noop {
    fn schema(&self) -> Value {
        json!({"name": "noop", "description": "does nothing",
               "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}})
    }
    fn prompt_fragment(&self) -> String {
        "noop(x): does nothing, returns {ok: true}".into()
    }
    fn call(&self, _ctx: &dyn RunContext, _args: JsonObject) -> Result<JsonObject, PluginError> {
        TOOL_CALLS.fetch_add(1, Ordering::Relaxed);
        let mut out = JsonObject::new();
        out.insert("ok".into(), Value::Bool(true));
        Ok(out)
    }
}

impl Detector for NullDetector {
    fn scope(&self) -> Scope {
        Scope::PerObservation
    }
    fn inspect(&self, _ctx: &dyn RunContext) -> Result<Option<Verdict>, PluginError> {
        DETECTOR_CALLS.fetch_add(1, Ordering::Relaxed);
        Ok(None)
    }
}

impl Detector for CountEvents {
    fn scope(&self) -> Scope {
        Scope::PerTurn
    }
    fn inspect(&self, ctx: &dyn RunContext) -> Result<Option<Verdict>, PluginError> {
        COUNTED_EVENTS.store(ctx.event_count(), Ordering::Relaxed);
        Ok(None)
    }
}

impl Validator for NullValidator {
    fn check(&self, _result: &RunResult, _ctx: &dyn RunContext) -> Result<Option<Verdict>, PluginError> {
        VALIDATOR_CALLS.fetch_add(1, Ordering::Relaxed);
        Ok(None)
    }
}

impl Tool for NoopStats {
    fn call(&self, _ctx: &dyn RunContext, args: JsonObject) -> Result<JsonObject, PluginError> {
        if let Some(k) = args.get("turns").and_then(Value::as_u64) {
            NEXT_TURNS.store(k as usize, Ordering::Relaxed);
        }
        let read = |c: &AtomicU64| {
            if args.get("reset") == Some(&Value::Bool(true)) {
                c.swap(0, Ordering::SeqCst)
            } else {
                c.load(Ordering::SeqCst)
            }
        };
        let out = json!({
            "tool_calls": read(&TOOL_CALLS),
            "detector_calls": read(&DETECTOR_CALLS),
            "validator_calls": read(&VALIDATOR_CALLS),
            "counted_events": read(&COUNTED_EVENTS),
        });
        Ok(out.as_object().cloned().unwrap_or_default())
    }
}

#[cfg(feature = "export")]
zu_plugin_api::export_plugins! {
    providers: [BenchScript],
    tools: [Noop, NoopStats],
    detectors: [NullDetector, CountEvents],
    validators: [NullValidator],
}
