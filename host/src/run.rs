//! The interpreter loop, a port of the reference `run_task`: ask the provider
//! for an action, dispatch tools at or below the current tier, run detector
//! checkpoints, repeat until the model finalises or a budget is spent; on
//! finalise run the validators; climb the tier ladder on ESCALATE. Provider
//! and tool calls run under the run's remaining wall time (`deadline`).

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use uuid::Uuid;
use zu_plugin_api::contracts::{Event, JsonObject, Result as RunResult, Status, TaskSpec};
use zu_plugin_api::events as ev;
use zu_plugin_api::ffi::{panic_message, to_json_capped};
use zu_plugin_api::filter::{EventFilter, FilterField, StoredEvent};
use zu_plugin_api::ports::{
    Detector, Finish, ModelProvider, ModelRequest, ModelResponse, PluginError, RunContext, Scope, Severity, Tool,
    Validator, Verdict, MAX_OBSERVATION_BYTES,
};
use zu_plugin_api::version::Kind;

use crate::bus::{BusError, EventBus};
use crate::deadline::{CallError, DeadlineRunner};
use crate::registry::Registry;

/// The environment variable the sandboxed launcher sets inside the sandbox.
pub const SANDBOX_ENV: &str = "ZU_SANDBOXED";

/// Observation keys that carry retrieved content: stored once in
/// `data.source.fetched`, summarised in `harness.tool.returned`.
pub const CONTENT_KEYS: [&str; 3] = ["html", "text", "content"];

/// How strictly tools with off-box reach are contained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Containment {
    /// Run in-process; envelopes are recorded (the default).
    #[default]
    Audit,
    /// Refuse, before anything runs, any tool with egress, capabilities or
    /// tier >= 2 unless the run is inside the sandbox (`ZU_SANDBOXED`).
    Required,
}

impl std::str::FromStr for Containment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "audit" => Ok(Containment::Audit),
            "required" => Ok(Containment::Required),
            other => Err(format!("unknown containment {other:?}: expected audit or required")),
        }
    }
}

/// Per-run settings beyond the task spec.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Providers that take over when the ladder reaches a tier.
    pub providers_by_tier: BTreeMap<u32, Arc<dyn ModelProvider>>,
    /// The containment floor.
    pub containment: Containment,
    /// A trace id shared with other runs (default: the task id).
    pub trace_id: Option<Uuid>,
}

/// Why a run could not produce a Result at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// `containment = required` outside the sandbox with tools that need it.
    #[error("containment is required but this run is not inside the Zu sandbox (${SANDBOX_ENV} unset), so these tools with off-box reach would run unguarded: {}; run inside the sandbox or use --containment audit", tools.join(", "))]
    ContainmentRequired {
        /// The tools that need containment, sorted.
        tools: Vec<String>,
    },
    /// The canonical event log refused an event.
    #[error(transparent)]
    Bus(#[from] BusError),
}

struct ToolEntry {
    name: String,
    tool: Arc<dyn Tool>,
    tier: u32,
    capabilities: Vec<String>,
    egress: Vec<String>,
    schema: Value,
    prompt_fragment: String,
}

/// The run's view for plugins: the spec, the observation being inspected,
/// and the run's own events (its task id's), read from the canonical log on
/// demand, so reading it costs the same with 10 or 100,000 events logged.
#[derive(Clone)]
pub struct RunView {
    run: Arc<ViewOf>,
    observation: Option<Arc<Value>>,
}

/// What every view of one run shares (a view is cloned per plugin call).
struct ViewOf {
    spec: Arc<TaskSpec>,
    bus: Arc<EventBus>,
    /// `task_id = <this task>`: the run's own events.
    scope: EventFilter,
}

impl RunView {
    /// A view of `spec`'s run on `bus`, inspecting `observation`.
    pub fn new(spec: Arc<TaskSpec>, bus: Arc<EventBus>, observation: Option<Arc<Value>>) -> Self {
        let scope = EventFilter::all().with(FilterField::TaskId, Some(spec.task_id.to_string()));
        RunView {
            run: Arc::new(ViewOf { spec, bus, scope }),
            observation,
        }
    }

    fn task(&self) -> &str {
        self.run.scope.get(FilterField::TaskId).flatten().unwrap_or_default()
    }
}

impl RunContext for RunView {
    fn spec(&self) -> &TaskSpec {
        &self.run.spec
    }
    fn observation(&self) -> Option<&Value> {
        self.observation.as_deref()
    }
    fn event_count(&self) -> u64 {
        self.run.bus.count(&self.run.scope).unwrap_or(0)
    }
    fn query(&self, filter: &EventFilter, limit: Option<u64>, after_seq: u64) -> Result<Vec<StoredEvent>, PluginError> {
        // Only this run's events: a filter naming another task (or asking for
        // a null task id, which no event has) matches nothing.
        match filter.get(FilterField::TaskId) {
            Some(Some(task)) if task == self.task() => {}
            Some(_) => return Ok(Vec::new()),
            None => {}
        }
        let scoped = filter.clone().with(FilterField::TaskId, Some(self.task()));
        self.run
            .bus
            .query(&scoped, limit, after_seq)
            .map(|v| v.into_iter().map(|e| e.into_stored()).collect())
            .map_err(|e| PluginError::failed(e.to_string()))
    }
}

struct Run {
    bus: Arc<EventBus>,
    trace_id: Uuid,
    task_id: Uuid,
    root: Option<Uuid>,
    ctx: RunView,
    stop: Arc<Abandon>,
}

/// Shared with the caller outside the run's lock: lets it end a run whose
/// worker is stuck while holding the lock (in a detector or validator).
#[derive(Default)]
struct Abandon {
    abandoned: AtomicBool,
    root: OnceLock<Uuid>,
}

/// How long past the wall time the caller waits for a worker that holds the
/// run (host code, or a detector or validator) before abandoning it.
const GRACE: Duration = Duration::from_secs(1);

/// Payloads of the per-step events, serialized straight to their JSON text.
#[derive(serde::Serialize)]
struct StepPayload {
    step: u32,
}

#[derive(serde::Serialize)]
struct TurnCompleted<'a> {
    step: u32,
    tier: u32,
    model: Option<String>,
    usage: &'a JsonObject,
    text: &'a Option<String>,
}

#[derive(serde::Serialize)]
struct ToolInvoked<'a> {
    tool: &'a str,
    args: &'a JsonObject,
}

#[derive(serde::Serialize)]
struct ToolReturned<'a> {
    tool: &'a str,
    observation: &'a JsonObject,
}

impl Run {
    fn emit(
        &self,
        ty: &'static str,
        payload: &impl serde::Serialize,
        parent: Option<Uuid>,
        source: &str,
    ) -> Result<Uuid, BusError> {
        if self.stop.abandoned.load(Ordering::Acquire) {
            return Err(BusError::Closed); // the caller ended this run; nothing more goes on its log
        }
        let source: std::borrow::Cow<'static, str> = if source == "loop" {
            "loop".into()
        } else {
            source.to_owned().into()
        };
        let event = Event::with_payload(self.trace_id, self.task_id, parent, ty, source, payload)
            .expect("the loop emits only namespaced event types and object payloads");
        let id = event.event_id();
        self.bus.publish(event)?;
        Ok(id)
    }

    fn terminal(&self, reason: &str) -> Result<RunResult, RunError> {
        self.emit(ev::TASK_TERMINAL, &json!({"reason": reason}), self.root, "loop")?;
        Ok(terminal_result(reason))
    }

    fn ctx(&self, observation: Option<Arc<Value>>) -> RunView {
        RunView {
            observation,
            run: self.ctx.run.clone(),
        }
    }
}

fn terminal_result(reason: &str) -> RunResult {
    RunResult {
        status: Status::Terminal,
        value: None,
        reason: Some(reason.to_owned()),
    }
}

fn obj(v: Value) -> JsonObject {
    match v {
        Value::Object(o) => o,
        _ => unreachable!("called with object literals"),
    }
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Warn => "warn",
        Severity::Retry => "retry",
        Severity::Escalate => "escalate",
        Severity::Terminal => "terminal",
    }
}

/// The first of the worst verdicts.
fn worst(verdicts: Vec<Verdict>) -> Option<Verdict> {
    verdicts.into_iter().fold(None, |best, v| match best {
        Some(b) if b.severity >= v.severity => Some(b),
        _ => Some(v),
    })
}

fn as_int(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().map(|f| f.max(0.0) as u64))
            .unwrap_or(0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        Some(Value::Bool(b)) => u64::from(*b),
        _ => 0,
    }
}

fn usage_tokens(usage: &JsonObject) -> u64 {
    if usage.contains_key("total_tokens") {
        return as_int(usage.get("total_tokens"));
    }
    as_int(usage.get("input_tokens")) + as_int(usage.get("output_tokens"))
}

fn budget_reason(elapsed: Duration, tokens: u64, spec: &TaskSpec) -> Option<&'static str> {
    if elapsed.as_secs_f64() > spec.budget.wall_time_s as f64 {
        Some("budget:wall_time_s")
    } else if tokens >= spec.budget.max_tokens {
        Some("budget:max_tokens")
    } else {
        None
    }
}

/// The run's tier ladder.
struct Ladder {
    current: u32,
    ceiling: u32,
}

impl Ladder {
    fn active<'a>(&self, tools: &'a [ToolEntry]) -> impl Iterator<Item = &'a ToolEntry> {
        let tier = self.current;
        tools.iter().filter(move |t| t.tier <= tier)
    }
}

/// Where a run is between plugin calls.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    StepTop,
    Provider,
    /// Record tool call `i` (or handle an unknown tool).
    Tool(usize),
    /// Make tool call `i`, recorded already.
    ToolCall(usize),
    TurnEnd,
}

/// Everything a run holds. One thread at a time drives it, holding its lock;
/// the lock is released only while a provider or tool call runs, so a call
/// that overruns the wall time leaves the state free for the caller to finish
/// the run (with that call timed out) while the stuck thread is abandoned.
struct Loop {
    run: Run,
    spec: Arc<TaskSpec>,
    tools: Vec<ToolEntry>,
    detectors: Vec<(Arc<dyn Detector>, Scope)>,
    validators: Vec<Arc<dyn Validator>>,
    provider: Arc<dyn ModelProvider>,
    providers_by_tier: BTreeMap<u32, Arc<dyn ModelProvider>>,
    ladder: Ladder,
    request: Arc<ModelRequest>,
    conversation: u64,
    unchanged: usize,
    tokens: u64,
    tools_tier: u32,
    start: Instant,
    deadline: Instant,
    step: u32,
    phase: Phase,
    turn: Uuid,
    turn_provider: Arc<dyn ModelProvider>,
    response: Arc<ModelResponse>,
    dispatched: usize,
    halting: Option<Verdict>,
    /// A call is running on a thread that does not hold the lock.
    in_call: bool,
    /// The caller took the run over from a thread stuck in a call.
    taken_over: bool,
    outcome: Option<Result<RunResult, RunError>>,
}

type Shared = Mutex<Loop>;

fn lock(shared: &Shared) -> MutexGuard<'_, Loop> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a plugin call produced: its value, or why there is none.
type Called<T> = Result<Result<T, PluginError>, CallError>;

/// Runs `call` without holding the run's lock, unless the deadline passed
/// (then the call is not made) or this thread took the run over from one
/// stuck in the call (then it timed out). Returns `None` when the run was
/// taken over while this thread was in the call: it must stop driving.
fn call_unlocked<'a, T>(
    shared: &'a Shared,
    mut st: MutexGuard<'a, Loop>,
    call: impl FnOnce() -> Result<T, PluginError>,
) -> Option<(MutexGuard<'a, Loop>, Called<T>)> {
    if st.in_call {
        st.in_call = false;
        return Some((st, Err(CallError::TimedOut)));
    }
    if Instant::now() >= st.deadline {
        return Some((st, Err(CallError::TimedOut)));
    }
    st.in_call = true;
    drop(st);
    let out = catch_unwind(AssertUnwindSafe(call)).map_err(|p| CallError::Panicked(panic_message(&*p)));
    let mut st = lock(shared);
    if st.taken_over {
        return None;
    }
    st.in_call = false;
    if Instant::now() > st.deadline {
        return Some((st, Err(CallError::TimedOut)));
    }
    Some((st, out))
}

/// Drives the run until it ends or this thread must stop. The worker passes
/// `takeover = false` and stops as soon as it finds the run taken over.
fn drive(shared: &Shared, takeover: bool) {
    let mut st = lock(shared);
    if st.taken_over && !takeover {
        return;
    }
    while st.outcome.is_none() {
        let step = match st.phase {
            Phase::Start => st.start_run(),
            Phase::StepTop => st.step_top(),
            Phase::Provider => {
                let (req, provider, conversation, seen) = (
                    st.request.clone(),
                    st.turn_provider.clone(),
                    st.conversation,
                    st.unchanged,
                );
                let Some((next, out)) = call_unlocked(shared, st, move || {
                    provider.complete_continued(&req, conversation, seen)
                }) else {
                    return;
                };
                st = next;
                st.after_provider(out)
            }
            Phase::Tool(i) => st.before_tool(i),
            Phase::ToolCall(i) => {
                let (tool, args) = st.pending_tool(i);
                let ctx = st.run.ctx(None);
                let Some((next, out)) = call_unlocked(shared, st, move || {
                    let out = tool.call(&ctx, args)?;
                    // Encoded once, for the model's history, and refused
                    // before an oversized observation is encoded whole.
                    let text = to_json_capped(&out, MAX_OBSERVATION_BYTES)?;
                    Ok((out, text))
                }) else {
                    return;
                };
                st = next;
                st.after_tool(i, Some(out))
            }
            Phase::TurnEnd => st.turn_end(),
        };
        if let Err(e) = step {
            st.outcome = Some(Err(e));
        }
    }
    // Free the conversation on the thread that built it.
    st.request = Arc::default();
    st.response = Arc::default();
}

/// Runs one task to a Result. `provider` answers every tier without an
/// override in `options`; the registry supplies tools, detectors and
/// validators; every event goes through `bus`. Provider and tool calls run
/// under the run's remaining wall time: a call that overruns is abandoned
/// and counts as timed out.
pub fn run_task(
    spec: &TaskSpec,
    provider: Arc<dyn ModelProvider>,
    registry: &Registry,
    bus: &Arc<EventBus>,
    options: &RunOptions,
) -> Result<RunResult, RunError> {
    let tools: Vec<ToolEntry> = registry
        .entries_of(Kind::Tools)
        .filter_map(|e| {
            let tool = registry.tool(&e.info.name)?;
            let mut capabilities = e.info.capabilities.clone();
            let mut egress = e.info.egress.clone();
            capabilities.sort();
            egress.sort();
            Some(ToolEntry {
                name: e.info.name.clone(),
                schema: tool.schema(),
                prompt_fragment: tool.prompt_fragment(),
                tool,
                tier: e.info.tier,
                capabilities,
                egress,
            })
        })
        .collect();
    let detectors: Vec<(Arc<dyn Detector>, Scope)> = registry
        .names(Kind::Detectors)
        .iter()
        .filter_map(|n| registry.detector(n))
        .map(|d| {
            let scope = d.scope();
            (d, scope)
        })
        .collect();
    let validators: Vec<Arc<dyn Validator>> = registry
        .names(Kind::Validators)
        .iter()
        .filter_map(|n| registry.validator(n))
        .collect();

    if options.containment == Containment::Required && std::env::var_os(SANDBOX_ENV).is_none() {
        let offenders: Vec<String> = tools
            .iter()
            .filter(|t| !t.capabilities.is_empty() || !t.egress.is_empty() || t.tier >= 2)
            .map(|t| t.name.clone())
            .collect();
        if !offenders.is_empty() {
            return Err(RunError::ContainmentRequired { tools: offenders });
        }
    }

    let spec = Arc::new(spec.clone());
    let top = tools.iter().map(|t| t.tier).max().unwrap_or(1);
    let start = Instant::now();
    // A wall time too large for the clock means "no deadline" in practice.
    let deadline = start
        .checked_add(Duration::from_secs(spec.budget.wall_time_s))
        .unwrap_or_else(|| start + Duration::from_secs(60 * 60 * 24 * 365));
    let stop = Arc::new(Abandon::default());
    let (trace_id, task_id) = (options.trace_id.unwrap_or(spec.task_id), spec.task_id);
    let state = Loop {
        run: Run {
            bus: bus.clone(),
            trace_id,
            task_id,
            root: None,
            ctx: RunView::new(spec.clone(), bus.clone(), None),
            stop: stop.clone(),
        },
        ladder: Ladder {
            current: 1,
            ceiling: spec.max_tier.min(top),
        },
        spec,
        tools,
        detectors,
        validators,
        turn_provider: provider.clone(),
        provider,
        providers_by_tier: options.providers_by_tier.clone(),
        request: Arc::new(ModelRequest::default()),
        conversation: Uuid::new_v4().as_u64_pair().0,
        unchanged: 0,
        tokens: 0,
        tools_tier: 0,
        start,
        deadline,
        step: 0,
        phase: Phase::Start,
        turn: Uuid::nil(),
        response: Arc::new(ModelResponse::default()),
        dispatched: 0,
        halting: None,
        in_call: false,
        taken_over: false,
        outcome: None,
    };
    let shared = Arc::new(Mutex::new(state));
    let worker = shared.clone();
    // The run is driven on a pooled worker thread; this thread waits until the
    // deadline and, if the worker is stuck in a call by then, finishes the run.
    let mut runner = DeadlineRunner::new();
    let _ = runner.call(deadline, move || drive(&worker, false));
    let grace_ends = Instant::now() + GRACE;
    let st = loop {
        match shared.try_lock() {
            Ok(st) => break Some(st),
            Err(std::sync::TryLockError::Poisoned(p)) => break Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) if Instant::now() < grace_ends => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(std::sync::TryLockError::WouldBlock) => break None,
        }
    };
    let Some(mut st) = st else {
        // The worker holds the run past the wall time (a detector or validator
        // that does not return): end the run here, and keep the worker off the log.
        stop.abandoned.store(true, Ordering::Release);
        tracing::warn!(task = %task_id, "a detector or validator held the run past its wall time; the run ends without it");
        let reason = "budget:wall_time_s";
        let event = Event::with_payload(
            trace_id,
            task_id,
            stop.root.get().copied(),
            ev::TASK_TERMINAL,
            "loop",
            &json!({"reason": reason}),
        )
        .expect("a namespaced type and an object payload");
        bus.publish(event)?;
        return Ok(terminal_result(reason));
    };
    if st.outcome.is_none() {
        st.taken_over = true;
    }
    drop(st);
    drive(&shared, true);
    let mut st = lock(&shared);
    st.outcome.take().expect("a run taken over is driven to its end")
}

impl Loop {
    fn finish(&mut self, result: Result<RunResult, RunError>) -> Result<(), RunError> {
        self.outcome = Some(result);
        Ok(())
    }

    fn terminal(&mut self, reason: &str) -> Result<(), RunError> {
        let r = self.run.terminal(reason);
        self.finish(r)
    }

    fn start_run(&mut self) -> Result<(), RunError> {
        let spec = self.spec.clone();
        let root = self.run.emit(
            ev::TASK_STARTED,
            &json!({"query": spec.query, "target": spec.target}),
            None,
            "loop",
        )?;
        self.run.root = Some(root);
        let _ = self.run.stop.root.set(root);
        let envelope: Map<String, Value> = self
            .tools
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    json!({"tier": t.tier, "capabilities": t.capabilities, "egress": t.egress}),
                )
            })
            .collect();
        self.run.emit(
            ev::ENVELOPE_DECLARED,
            &json!({"tools": envelope}),
            self.run.root,
            "loop",
        )?;
        Arc::make_mut(&mut self.request).messages = initial_messages(&spec, self.ladder.active(&self.tools));
        self.step = 1;
        self.phase = Phase::StepTop;
        Ok(())
    }

    fn step_top(&mut self) -> Result<(), RunError> {
        if self.step > self.spec.budget.max_steps {
            return self.terminal("budget:max_steps");
        }
        if let Some(reason) = budget_reason(self.start.elapsed(), self.tokens, &self.spec) {
            return self.terminal(reason);
        }
        if self.tools_tier != self.ladder.current {
            self.tools_tier = self.ladder.current;
            let schemas: Vec<Value> = self
                .ladder
                .active(&self.tools)
                .filter(|t| !is_empty_schema(&t.schema))
                .map(|t| t.schema.clone())
                .collect();
            Arc::make_mut(&mut self.request).tools = schemas;
        }
        self.turn_provider = self
            .providers_by_tier
            .get(&self.ladder.current)
            .cloned()
            .unwrap_or_else(|| self.provider.clone());
        self.turn = self.run.emit(
            ev::TURN_STARTED,
            &StepPayload { step: self.step },
            self.run.root,
            "loop",
        )?;
        if Instant::now() >= self.deadline {
            return self.terminal("budget:wall_time_s");
        }
        self.phase = Phase::Provider;
        Ok(())
    }

    fn after_provider(&mut self, answer: Called<ModelResponse>) -> Result<(), RunError> {
        self.unchanged = self.request.messages.len();
        let resp = match answer {
            Ok(Ok(r)) => r,
            Err(CallError::TimedOut) => return self.terminal("budget:wall_time_s"),
            Ok(Err(e)) => return self.terminal(&format!("provider error: {e}")),
            Err(CallError::Panicked(m)) => return self.terminal(&format!("provider error: panicked: {m}")),
        };
        self.tokens += usage_tokens(&resp.usage);
        self.run.emit(
            ev::TURN_COMPLETED,
            &TurnCompleted {
                step: self.step,
                tier: self.ladder.current,
                model: self.turn_provider.model(),
                usage: &resp.usage,
                text: &resp.text,
            },
            Some(self.turn),
            "loop",
        )?;
        if let Some(reason) = budget_reason(self.start.elapsed(), self.tokens, &self.spec) {
            return self.terminal(reason);
        }
        if resp.finish == Finish::Length {
            return self.terminal("model truncated (length)");
        }
        if resp.tool_calls.is_empty() {
            return self.finalise(resp.text.as_deref());
        }
        if resp.tool_calls.len() > self.spec.budget.max_tool_calls as usize {
            return self.terminal("budget:max_tool_calls");
        }
        let calls: Vec<Value> = resp
            .tool_calls
            .iter()
            .map(|c| json!({"name": c.name, "args": c.args}))
            .collect();
        let mut assistant = obj(json!({"role": "assistant", "tool_calls": calls}));
        if let Some(text) = resp.text.as_ref().filter(|t| !t.is_empty()) {
            assistant.insert("content".into(), text.clone().into());
        }
        Arc::make_mut(&mut self.request).messages.push(Value::Object(assistant));
        self.response = Arc::new(resp);
        self.dispatched = 0;
        self.halting = None;
        self.phase = Phase::Tool(0);
        Ok(())
    }

    /// Records tool call `i`; an unknown tool (or one above the current tier)
    /// is answered here, a known one is called next.
    fn before_tool(&mut self, i: usize) -> Result<(), RunError> {
        let response = self.response.clone();
        let Some(call) = response.tool_calls.get(i) else {
            self.phase = Phase::TurnEnd;
            return Ok(());
        };
        self.run.emit(
            ev::TOOL_INVOKED,
            &ToolInvoked {
                tool: &call.name,
                args: &call.args,
            },
            Some(self.turn),
            &call.name,
        )?;
        if self.ladder.active(&self.tools).any(|t| t.name == call.name) {
            self.phase = Phase::ToolCall(i);
            Ok(())
        } else {
            self.after_tool(i, None)
        }
    }

    /// The tool and arguments of recorded call `i`.
    fn pending_tool(&self, i: usize) -> (Arc<dyn Tool>, JsonObject) {
        let call = &self.response.tool_calls[i];
        let entry = self
            .ladder
            .active(&self.tools)
            .find(|t| t.name == call.name)
            .expect("checked in before_tool");
        (entry.tool.clone(), call.args.clone())
    }

    /// Turns tool `i`'s outcome (`None`: no such tool at this tier) into the
    /// observation, records it, and runs the per-observation detectors.
    fn after_tool(&mut self, i: usize, outcome: Option<Called<(JsonObject, String)>>) -> Result<(), RunError> {
        let response = self.response.clone();
        let name = response.tool_calls[i].name.as_str();
        let (run, turn) = (&self.run, self.turn);
        let block = |kind: &str, extra: Value| -> Result<(), BusError> {
            let mut payload = obj(json!({"kind": kind, "tool": name}));
            if let Value::Object(more) = extra {
                payload.extend(more);
            }
            run.emit(ev::DEFENSE_BLOCKED, &payload, Some(turn), name).map(|_| ())
        };
        let mut encoded = None;
        let obs: JsonObject = match outcome {
            None => obj(json!({"error": format!("unknown tool: {name}")})),
            Some(Ok(Ok((o, text)))) => {
                encoded = Some(text);
                o
            }
            Some(Err(CallError::TimedOut)) => {
                tracing::warn!(tool = name, "tool call exceeded the run's remaining wall time");
                block(
                    "tool_timeout",
                    json!({"detail": "tool call exceeded the run's remaining wall-time and was cancelled"}),
                )?;
                obj(json!({"error": "tool call timed out", "blocked": "tool_timeout"}))
            }
            Some(Ok(Err(PluginError::SecurityBlock(b)))) => {
                tracing::warn!(tool = name, kind = %b.kind, "tool blocked: {}", b.message);
                block(&b.kind, json!({"target": b.target, "detail": b.message}))?;
                obj(json!({"error": format!("SecurityBlock: {}", b.message), "blocked": b.kind}))
            }
            Some(Ok(Err(PluginError::TooLarge { .. }))) => {
                tracing::warn!(tool = name, "tool returned an oversized observation");
                block(
                    "oversized_observation",
                    json!({"detail": "tool observation exceeds the size limit and was rejected"}),
                )?;
                obj(
                    json!({"error": "tool observation exceeds the size limit and was rejected", "blocked": "oversized_observation"}),
                )
            }
            Some(Ok(Err(e))) => {
                tracing::warn!(tool = name, error = %e, "tool failed");
                obj(json!({"error": e.to_string()}))
            }
            Some(Err(CallError::Panicked(m))) => obj(json!({"error": format!("plugin panicked: {m}")})),
        };
        let summary;
        let returned = if CONTENT_KEYS.iter().any(|k| obs.contains_key(*k)) {
            run.emit(ev::SOURCE_FETCHED, &obs, Some(turn), name)?;
            summary = summarize(&obs);
            &summary
        } else {
            &obs
        };
        run.emit(
            ev::TOOL_RETURNED,
            &ToolReturned {
                tool: name,
                observation: returned,
            },
            Some(turn),
            name,
        )?;
        let content = encoded.unwrap_or_else(|| serde_json::to_string(&obs).unwrap_or_default());
        Arc::make_mut(&mut self.request)
            .messages
            .push(json!({"role": "tool", "name": name, "content": content}));
        self.dispatched = i + 1;
        let obs = Arc::new(Value::Object(obs));
        self.halting = checkpoint(&self.run, self.turn, &self.detectors, Some(obs), Scope::PerObservation)?;
        self.phase = if self.halting.is_some() {
            Phase::TurnEnd
        } else {
            Phase::Tool(i + 1)
        };
        Ok(())
    }

    fn turn_end(&mut self) -> Result<(), RunError> {
        let response = self.response.clone();
        for skipped in &response.tool_calls[self.dispatched..] {
            let note = match &self.halting {
                Some(h) => json!({"skipped": format!("not run: {} ({})", h.detector, severity_name(h.severity))}),
                None => json!({"skipped": "not run"}),
            };
            Arc::make_mut(&mut self.request)
                .messages
                .push(json!({"role": "tool", "name": skipped.name, "content": note.to_string()}));
        }
        if self.halting.is_none() {
            self.halting = checkpoint(&self.run, self.turn, &self.detectors, None, Scope::PerTurn)?;
        }
        if let Some(h) = self.halting.take() {
            return self.halt(&h);
        }
        self.next_step()
    }

    /// Acts on a halting verdict: TERMINAL ends the run; ESCALATE climbs a
    /// tier (or ends the run exhausted) and the run goes on at the next step.
    fn halt(&mut self, v: &Verdict) -> Result<(), RunError> {
        if v.severity == Severity::Terminal {
            return self.terminal(&v.detector);
        }
        if let Some(done) = escalate(
            &self.run,
            &mut self.ladder,
            &self.tools,
            Arc::make_mut(&mut self.request),
            v,
        )? {
            return self.finish(Ok(done));
        }
        self.next_step()
    }

    fn next_step(&mut self) -> Result<(), RunError> {
        self.step += 1;
        self.phase = Phase::StepTop;
        Ok(())
    }

    /// The model answered without tools: parse, validate, then complete,
    /// retry, escalate or end.
    fn finalise(&mut self, text: Option<&str>) -> Result<(), RunError> {
        let Some(value) = parse_value(text) else {
            return self.terminal("model finalised with no answer");
        };
        let candidate = RunResult {
            status: Status::Success,
            value: Some(value.clone()),
            reason: None,
        };
        if let Some(v) = finalise_verdict(&self.run, &self.detectors, &self.validators, &candidate) {
            self.run.emit(
                ev::VALIDATION_FAILED,
                &json!({"detector": v.detector, "severity": severity_name(v.severity), "detail": v.detail}),
                self.run.root,
                &v.detector,
            )?;
            match v.severity {
                Severity::Terminal | Severity::Escalate => return self.halt(&v),
                Severity::Retry => {
                    let note = format!(
                        "Validation failed ({}): {}. Correct the output and resubmit.",
                        v.detector,
                        v.detail.as_deref().unwrap_or("None")
                    );
                    Arc::make_mut(&mut self.request)
                        .messages
                        .push(json!({"role": "user", "content": note}));
                    return self.next_step();
                }
                Severity::Warn => {}
            }
        }
        self.run
            .emit(ev::RECORD_EXTRACTED, &json!({"value": value}), self.run.root, "loop")?;
        self.run
            .emit(ev::TASK_COMPLETED, &json!({"value": value}), self.run.root, "loop")?;
        self.finish(Ok(candidate))
    }
}

fn is_empty_schema(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn initial_messages<'a>(spec: &TaskSpec, active: impl Iterator<Item = &'a ToolEntry>) -> Vec<Value> {
    let fragments: Vec<String> = active
        .filter(|t| !t.prompt_fragment.is_empty())
        .map(|t| format!("- {}", t.prompt_fragment))
        .collect();
    let system = if fragments.is_empty() {
        "You are Zu, a tool-using agent. Return the final answer as a single JSON object.".to_owned()
    } else {
        format!(
            "You are Zu, a tool-using agent. Use the available tools to answer the task, then return the final answer as a single JSON object.\nAvailable tools:\n{}",
            fragments.join("\n")
        )
    };
    let user = match &spec.target {
        Some(t) if !t.is_empty() => format!("{}\nTarget: {t}", spec.query),
        _ => spec.query.clone(),
    };
    vec![
        json!({"role": "system", "content": system}),
        json!({"role": "user", "content": user}),
    ]
}

fn summarize(obs: &JsonObject) -> JsonObject {
    let mut out: JsonObject = obs
        .iter()
        .filter(|(k, _)| !CONTENT_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for k in CONTENT_KEYS {
        if let Some(Value::String(s)) = obs.get(k) {
            out.insert(format!("{k}_len"), s.chars().count().into());
        }
    }
    out
}

fn inspect(d: &dyn Detector, ctx: &RunView) -> Option<Verdict> {
    match catch_unwind(AssertUnwindSafe(|| d.inspect(ctx))) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "detector failed; skipping it");
            None
        }
        Err(p) => {
            tracing::warn!(panic = %panic_message(&*p), "detector panicked; skipping it");
            None
        }
    }
}

/// Runs the detectors of `scope`, records each verdict, and returns the worst
/// one if it halts (ESCALATE or TERMINAL).
fn checkpoint(
    run: &Run,
    turn: Uuid,
    detectors: &[(Arc<dyn Detector>, Scope)],
    observation: Option<Arc<Value>>,
    scope: Scope,
) -> Result<Option<Verdict>, BusError> {
    let mut verdicts = Vec::new();
    let mut ctx = None;
    for (d, s) in detectors {
        if *s != scope {
            continue;
        }
        let ctx = ctx.get_or_insert_with(|| run.ctx(observation.clone()));
        if let Some(v) = inspect(&**d, ctx) {
            run.emit(
                ev::DETECTOR_FIRED,
                &json!({"detector": v.detector, "severity": severity_name(v.severity), "detail": v.detail}),
                Some(turn),
                &v.detector,
            )?;
            verdicts.push(v);
        }
    }
    Ok(worst(verdicts).filter(|v| v.severity >= Severity::Escalate))
}

/// Climbs a tier on ESCALATE and tells the model what it unlocked; at the
/// ceiling, ends the run with an ESCALATE Result.
fn escalate(
    run: &Run,
    ladder: &mut Ladder,
    tools: &[ToolEntry],
    request: &mut ModelRequest,
    verdict: &Verdict,
) -> Result<Option<RunResult>, BusError> {
    if ladder.current >= ladder.ceiling {
        run.emit(
            ev::TASK_ESCALATED,
            &json!({"reason": verdict.detector, "tier": ladder.current, "exhausted": true}),
            run.root,
            "loop",
        )?;
        return Ok(Some(RunResult {
            status: Status::Escalate,
            value: None,
            reason: Some(verdict.detector.clone()),
        }));
    }
    let from = ladder.current;
    ladder.current += 1;
    run.emit(
        ev::TASK_ESCALATED,
        &json!({"reason": verdict.detector, "detail": verdict.detail, "from_tier": from, "to_tier": ladder.current}),
        run.root,
        &verdict.detector,
    )?;
    let unlocked: Vec<String> = ladder
        .active(tools)
        .filter(|t| t.tier == ladder.current && !t.prompt_fragment.is_empty())
        .map(|t| format!("- {}", t.prompt_fragment))
        .collect();
    let notice = format!(
        "The previous attempt was insufficient ({}: {}). Escalated to tier {}. Newly available tools:\n{}\nRetry the task using them.",
        verdict.detector,
        verdict.detail.as_deref().unwrap_or("None"),
        ladder.current,
        unlocked.join("\n")
    );
    request.messages.push(json!({"role": "user", "content": notice}));
    Ok(None)
}

/// The ON_FINAL ladder: on-final detectors, then validators; the worst verdict.
fn finalise_verdict(
    run: &Run,
    detectors: &[(Arc<dyn Detector>, Scope)],
    validators: &[Arc<dyn Validator>],
    candidate: &RunResult,
) -> Option<Verdict> {
    let ctx = run.ctx(None);
    let mut verdicts: Vec<Verdict> = detectors
        .iter()
        .filter(|(_, s)| *s == Scope::OnFinal)
        .filter_map(|(d, _)| inspect(&**d, &ctx))
        .collect();
    for v in validators {
        match catch_unwind(AssertUnwindSafe(|| v.check(candidate, &ctx))) {
            Ok(Ok(Some(verdict))) => verdicts.push(verdict),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "validator failed; skipping it"),
            Err(p) => tracing::warn!(panic = %panic_message(&*p), "validator panicked; skipping it"),
        }
    }
    worst(verdicts)
}

/// The first balanced `{...}` of `text`, string- and escape-aware.
fn balanced_object(text: &str) -> Option<&str> {
    let start = text.find('{')?;
    let (mut depth, mut in_str, mut esc) = (0i32, false, false);
    for (i, c) in text[start..].char_indices() {
        if in_str {
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
        } else if c == '{' {
            depth += 1;
        } else if c == '}' {
            depth -= 1;
            if depth == 0 {
                return Some(&text[start..start + i + 1]);
            }
        }
    }
    None
}

/// Turns the model's final text into a JSON object: the whole text, one
/// enclosing fence, a fenced block anywhere, the first balanced object in
/// prose, else `{"text": ...}`. A non-object JSON value becomes `{"value": v}`.
pub fn parse_value(text: Option<&str>) -> Option<JsonObject> {
    use std::sync::OnceLock;
    static FENCE: OnceLock<regex::Regex> = OnceLock::new();
    static FENCE_ANY: OnceLock<regex::Regex> = OnceLock::new();
    let text = text.filter(|t| !t.is_empty())?;
    let fence = FENCE.get_or_init(|| regex::Regex::new(r"(?s)\A```[a-zA-Z0-9]*\s*\n?(.*?)\n?```\z").expect("valid"));
    let fence_any =
        FENCE_ANY.get_or_init(|| regex::Regex::new(r"(?s)```[a-zA-Z0-9]*[ \t]*\n?(.*?)```").expect("valid"));
    let stripped = text.trim();
    let mut candidates = vec![stripped.to_owned()];
    if let Some(c) = fence.captures(stripped) {
        candidates.push(c[1].trim().to_owned());
    }
    if let Some(c) = fence_any.captures(text) {
        candidates.push(c[1].trim().to_owned());
    }
    if let Some(b) = balanced_object(text) {
        candidates.push(b.to_owned());
    }
    for c in candidates {
        if let Ok(v) = serde_json::from_str::<Value>(&c) {
            return Some(match v {
                Value::Object(o) => o,
                other => obj(json!({"value": other})),
            });
        }
    }
    Some(obj(json!({"text": text})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_enormous_wall_time_is_no_deadline_rather_than_a_crash() {
        struct Answer;
        impl ModelProvider for Answer {
            fn complete(&self, _: &ModelRequest) -> Result<ModelResponse, PluginError> {
                Ok(ModelResponse {
                    text: Some("{\"ok\": 1}".into()),
                    ..Default::default()
                })
            }
        }
        let mut spec = TaskSpec::new("q");
        spec.budget.wall_time_s = u64::MAX;
        let bus = Arc::new(EventBus::new());
        let r = run_task(&spec, Arc::new(Answer), &Registry::new(), &bus, &RunOptions::default()).unwrap();
        assert_eq!(r.status, Status::Success);
    }

    #[test]
    fn a_run_view_reads_only_its_own_task() {
        let bus = Arc::new(EventBus::new());
        let (mine, other) = (Arc::new(TaskSpec::new("a")), TaskSpec::new("b"));
        for spec in [&*mine, &other] {
            let e = Event::new(spec.task_id, spec.task_id, None, "harness.a", "t", JsonObject::new()).unwrap();
            bus.publish(e).unwrap();
        }
        let view = RunView::new(mine.clone(), bus, None);
        assert_eq!(view.event_count(), 1);
        let all = view.query(&EventFilter::all(), None, 0).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].event.task_id(), mine.task_id);
        for f in [
            EventFilter::all().with(FilterField::TaskId, Some(other.task_id.to_string())),
            EventFilter::all().with(FilterField::TaskId, None::<String>),
        ] {
            assert!(view.query(&f, None, 0).unwrap().is_empty(), "{f:?}");
        }
        let own = EventFilter::all().with(FilterField::TaskId, Some(mine.task_id.to_string()));
        assert_eq!(view.query(&own, None, 0).unwrap().len(), 1);
    }

    #[test]
    fn final_text_parses_like_the_reference() {
        let p = |t: &str| Value::Object(parse_value(Some(t)).unwrap());
        assert_eq!(p(r#"{"a": 1}"#), json!({"a": 1}));
        assert_eq!(p("```json\n{\"a\": 2}\n```"), json!({"a": 2}));
        assert_eq!(p("Here you go: ```json\n{\"a\": 3}\n``` done"), json!({"a": 3}));
        assert_eq!(p(r#"The answer is {"a": {"b": "}"}} ok"#), json!({"a": {"b": "}"}}));
        assert_eq!(p("[1, 2]"), json!({"value": [1, 2]}));
        assert_eq!(p("no json here"), json!({"text": "no json here"}));
        assert_eq!(parse_value(Some("")), None);
        assert_eq!(parse_value(None), None);
    }

    #[test]
    fn usage_tokens_prefer_total_and_tolerate_garbage() {
        assert_eq!(usage_tokens(&obj(json!({"total_tokens": 9, "input_tokens": 100}))), 9);
        assert_eq!(usage_tokens(&obj(json!({"input_tokens": 3, "output_tokens": "4"}))), 7);
        assert_eq!(
            usage_tokens(&obj(json!({"input_tokens": null, "output_tokens": [1]}))),
            0
        );
    }

    #[test]
    fn the_first_worst_verdict_wins() {
        let v = |s, d: &str| Verdict {
            severity: s,
            detector: d.into(),
            detail: None,
        };
        let w = worst(vec![
            v(Severity::Retry, "a"),
            v(Severity::Terminal, "b"),
            v(Severity::Terminal, "c"),
        ])
        .unwrap();
        assert_eq!(w.detector, "b");
        assert!(worst(vec![]).is_none());
    }
}
