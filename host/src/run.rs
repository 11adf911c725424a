//! The interpreter loop, a port of the reference `run_task`: ask the provider
//! for an action, dispatch tools at or below the current tier, run detector
//! checkpoints, repeat until the model finalises or a budget is spent; on
//! finalise run the validators; climb the tier ladder on ESCALATE. Provider
//! and tool calls run under the run's remaining wall time (`deadline`).

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use uuid::Uuid;
use zu_plugin_api::contracts::{Event, JsonObject, Result as RunResult, Status, TaskSpec};
use zu_plugin_api::events as ev;
use zu_plugin_api::ffi::panic_message;
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
    spec: Arc<TaskSpec>,
    observation: Option<Arc<Value>>,
    bus: Arc<EventBus>,
    /// `task_id = <this task>`: the run's own events.
    scope: Arc<EventFilter>,
}

impl RunView {
    /// A view of `spec`'s run on `bus`, inspecting `observation`.
    pub fn new(spec: Arc<TaskSpec>, bus: Arc<EventBus>, observation: Option<Arc<Value>>) -> Self {
        let scope = Arc::new(EventFilter::all().with(FilterField::TaskId, Some(spec.task_id.to_string())));
        RunView {
            spec,
            observation,
            bus,
            scope,
        }
    }

    fn task(&self) -> &str {
        self.scope.get(FilterField::TaskId).flatten().unwrap_or_default()
    }
}

impl RunContext for RunView {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }
    fn observation(&self) -> Option<&Value> {
        self.observation.as_deref()
    }
    fn event_count(&self) -> u64 {
        self.bus.count(&self.scope).unwrap_or(0)
    }
    fn query(&self, filter: &EventFilter, limit: Option<u64>, after_seq: u64) -> Result<Vec<StoredEvent>, PluginError> {
        // Only this run's events: a filter naming another task matches nothing.
        let mut scoped = filter.clone();
        if let Some(Some(task)) = filter.get(FilterField::TaskId) {
            if task != self.task() {
                return Ok(Vec::new());
            }
        }
        scoped = scoped.with(FilterField::TaskId, Some(self.task()));
        self.bus
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
}

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
        ty: &str,
        payload: &impl serde::Serialize,
        parent: Option<Uuid>,
        source: &str,
    ) -> Result<Uuid, BusError> {
        let event = Event::with_payload(self.trace_id, self.task_id, parent, ty, source, payload)
            .expect("the loop emits only namespaced event types and object payloads");
        let id = event.event_id();
        self.bus.publish(event)?;
        Ok(id)
    }

    fn terminal(&self, reason: &str) -> Result<RunResult, RunError> {
        self.emit(ev::TASK_TERMINAL, &json!({"reason": reason}), self.root, "loop")?;
        Ok(RunResult {
            status: Status::Terminal,
            value: None,
            reason: Some(reason.to_owned()),
        })
    }

    fn ctx(&self, observation: Option<Arc<Value>>) -> RunView {
        RunView {
            observation,
            ..self.ctx.clone()
        }
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

/// Whether `value` encodes to at most `limit` bytes of JSON, found without
/// building the whole encoding.
pub fn within_size(value: &impl serde::Serialize, limit: usize) -> bool {
    struct Counter(usize, usize);
    impl std::io::Write for Counter {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            if self.0 > self.1 {
                return Err(std::io::Error::other("over the limit"));
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(Counter(0, limit), value).is_ok()
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

/// Runs one task to a Result. `provider` answers every tier without an
/// override in `options`; the registry supplies tools, detectors and
/// validators; every event goes through `bus`.
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

    let spec_arc = Arc::new(spec.clone());
    let mut run = Run {
        bus: bus.clone(),
        trace_id: options.trace_id.unwrap_or(spec.task_id),
        task_id: spec.task_id,
        root: None,
        ctx: RunView::new(spec_arc, bus.clone(), None),
    };
    let top = tools.iter().map(|t| t.tier).max().unwrap_or(1);
    let mut ladder = Ladder {
        current: 1,
        ceiling: spec.max_tier.min(top),
    };

    run.root = Some(run.emit(
        ev::TASK_STARTED,
        &json!({"query": spec.query, "target": spec.target}),
        None,
        "loop",
    )?);
    let envelope: Map<String, Value> = tools
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                json!({"tier": t.tier, "capabilities": t.capabilities, "egress": t.egress}),
            )
        })
        .collect();
    run.emit(ev::ENVELOPE_DECLARED, &json!({"tools": envelope}), run.root, "loop")?;

    let mut request = Arc::new(ModelRequest {
        messages: initial_messages(spec, ladder.active(&tools)),
        ..Default::default()
    });
    let conversation = Uuid::new_v4().as_u64_pair().0;
    let mut unchanged = 0usize;
    let mut runner = DeadlineRunner::new();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(spec.budget.wall_time_s);
    let mut tokens = 0u64;
    let mut tools_tier = 0u32;

    for step in 1..=spec.budget.max_steps {
        if let Some(reason) = budget_reason(start.elapsed(), tokens, spec) {
            return run.terminal(reason);
        }
        if tools_tier != ladder.current {
            tools_tier = ladder.current;
            let schemas: Vec<Value> = ladder
                .active(&tools)
                .filter(|t| !is_empty_schema(&t.schema))
                .map(|t| t.schema.clone())
                .collect();
            Arc::make_mut(&mut request).tools = schemas;
        }
        let turn_provider = options
            .providers_by_tier
            .get(&ladder.current)
            .cloned()
            .unwrap_or_else(|| provider.clone());
        let turn = run.emit(ev::TURN_STARTED, &StepPayload { step }, run.root, "loop")?;
        if Instant::now() >= deadline {
            return run.terminal("budget:wall_time_s");
        }
        let (req, p, seen) = (request.clone(), turn_provider.clone(), unchanged);
        let answer = runner.call(deadline, move || p.complete_continued(&req, conversation, seen));
        unchanged = request.messages.len();
        let resp: ModelResponse = match answer {
            Ok(Ok(r)) => r,
            Err(CallError::TimedOut) => return run.terminal("budget:wall_time_s"),
            Ok(Err(e)) => return run.terminal(&format!("provider error: {e}")),
            Err(CallError::Panicked(m)) => return run.terminal(&format!("provider error: panicked: {m}")),
        };
        tokens += usage_tokens(&resp.usage);
        run.emit(
            ev::TURN_COMPLETED,
            &TurnCompleted {
                step,
                tier: ladder.current,
                model: turn_provider.model(),
                usage: &resp.usage,
                text: &resp.text,
            },
            Some(turn),
            "loop",
        )?;
        if let Some(reason) = budget_reason(start.elapsed(), tokens, spec) {
            return run.terminal(reason);
        }
        if resp.finish == Finish::Length {
            return run.terminal("model truncated (length)");
        }

        if !resp.tool_calls.is_empty() {
            if resp.tool_calls.len() > spec.budget.max_tool_calls as usize {
                return run.terminal("budget:max_tool_calls");
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
            Arc::make_mut(&mut request).messages.push(Value::Object(assistant));
            let mut halting: Option<Verdict> = None;
            let mut dispatched = 0;
            for call in &resp.tool_calls {
                let active = ladder.active(&tools).find(|t| t.name == call.name);
                let obs = invoke(&run, &mut runner, deadline, turn, active, &call.name, &call.args)?;
                let content = serde_json::to_string(&*obs).unwrap_or_default();
                Arc::make_mut(&mut request)
                    .messages
                    .push(json!({"role": "tool", "name": call.name, "content": content}));
                dispatched += 1;
                halting = checkpoint(&run, turn, &detectors, Some(obs), Scope::PerObservation)?;
                if halting.is_some() {
                    break;
                }
            }
            for skipped in &resp.tool_calls[dispatched..] {
                let note = match &halting {
                    Some(h) => json!({"skipped": format!("not run: {} ({})", h.detector, severity_name(h.severity))}),
                    None => json!({"skipped": "not run"}),
                };
                Arc::make_mut(&mut request)
                    .messages
                    .push(json!({"role": "tool", "name": skipped.name, "content": note.to_string()}));
            }
            if halting.is_none() {
                halting = checkpoint(&run, turn, &detectors, None, Scope::PerTurn)?;
            }
            if let Some(h) = halting {
                if h.severity == Severity::Terminal {
                    return run.terminal(&h.detector);
                }
                if let Some(done) = escalate(&run, &mut ladder, &tools, Arc::make_mut(&mut request), &h)? {
                    return Ok(done);
                }
            }
            continue;
        }

        let Some(value) = parse_value(resp.text.as_deref()) else {
            return run.terminal("model finalised with no answer");
        };
        let candidate = RunResult {
            status: Status::Success,
            value: Some(value.clone()),
            reason: None,
        };
        if let Some(v) = finalise_verdict(&run, &detectors, &validators, &candidate) {
            run.emit(
                ev::VALIDATION_FAILED,
                &json!({"detector": v.detector, "severity": severity_name(v.severity), "detail": v.detail}),
                run.root,
                &v.detector,
            )?;
            match v.severity {
                Severity::Terminal => return run.terminal(&v.detector),
                Severity::Escalate => {
                    if let Some(done) = escalate(&run, &mut ladder, &tools, Arc::make_mut(&mut request), &v)? {
                        return Ok(done);
                    }
                    continue;
                }
                Severity::Retry => {
                    let note = format!(
                        "Validation failed ({}): {}. Correct the output and resubmit.",
                        v.detector,
                        v.detail.as_deref().unwrap_or("None")
                    );
                    Arc::make_mut(&mut request)
                        .messages
                        .push(json!({"role": "user", "content": note}));
                    continue;
                }
                Severity::Warn => {}
            }
        }
        run.emit(ev::RECORD_EXTRACTED, &json!({"value": value}), run.root, "loop")?;
        run.emit(ev::TASK_COMPLETED, &json!({"value": value}), run.root, "loop")?;
        return Ok(candidate);
    }
    run.terminal("budget:max_steps")
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

/// Dispatches one tool call to an observation; every failure becomes an
/// error observation, security refusals and timeouts also a defense event.
fn invoke(
    run: &Run,
    runner: &mut DeadlineRunner,
    deadline: Instant,
    turn: Uuid,
    tool: Option<&ToolEntry>,
    name: &str,
    args: &JsonObject,
) -> Result<Arc<Value>, BusError> {
    run.emit(ev::TOOL_INVOKED, &ToolInvoked { tool: name, args }, Some(turn), name)?;
    let block = |kind: &str, extra: Value| -> Result<(), BusError> {
        let mut payload = obj(json!({"kind": kind, "tool": name}));
        if let Value::Object(more) = extra {
            payload.extend(more);
        }
        run.emit(ev::DEFENSE_BLOCKED, &payload, Some(turn), name).map(|_| ())
    };
    let oversized = || {
        obj(
            json!({"error": "tool observation exceeds the size limit and was rejected", "blocked": "oversized_observation"}),
        )
    };
    let obs: JsonObject = match tool {
        None => obj(json!({"error": format!("unknown tool: {name}")})),
        Some(entry) => {
            let (t, a, ctx) = (entry.tool.clone(), args.clone(), run.ctx(None));
            let outcome = runner.call(deadline, move || {
                let out = t.call(&ctx, a)?;
                // Checked on the worker, so an oversized answer is never encoded whole.
                if within_size(&out, MAX_OBSERVATION_BYTES) {
                    Ok(out)
                } else {
                    Err(PluginError::TooLarge {
                        limit: MAX_OBSERVATION_BYTES,
                    })
                }
            });
            match outcome {
                Ok(Ok(o)) => o,
                Err(CallError::TimedOut) => {
                    tracing::warn!(tool = name, "tool call exceeded the run's remaining wall time");
                    block(
                        "tool_timeout",
                        json!({"detail": "tool call exceeded the run's remaining wall-time and was cancelled"}),
                    )?;
                    obj(json!({"error": "tool call timed out", "blocked": "tool_timeout"}))
                }
                Ok(Err(PluginError::SecurityBlock(b))) => {
                    tracing::warn!(tool = name, kind = %b.kind, "tool blocked: {}", b.message);
                    block(&b.kind, json!({"target": b.target, "detail": b.message}))?;
                    obj(json!({"error": format!("SecurityBlock: {}", b.message), "blocked": b.kind}))
                }
                Ok(Err(PluginError::TooLarge { .. })) => {
                    tracing::warn!(tool = name, "tool returned an oversized observation");
                    block(
                        "oversized_observation",
                        json!({"detail": "tool observation exceeds the size limit and was rejected"}),
                    )?;
                    oversized()
                }
                Ok(Err(e)) => {
                    tracing::warn!(tool = name, error = %e, "tool failed");
                    obj(json!({"error": e.to_string()}))
                }
                Err(CallError::Panicked(m)) => obj(json!({"error": format!("plugin panicked: {m}")})),
            }
        }
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
    Ok(Arc::new(Value::Object(obs)))
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
    fn size_is_checked_without_encoding_everything() {
        let big = json!({"blob": "x".repeat(2_000_000)});
        assert!(!within_size(&big, MAX_OBSERVATION_BYTES));
        assert!(within_size(&json!({"ok": true}), MAX_OBSERVATION_BYTES));
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
