//! The step state machine: where a run is between plugin calls ([`Phase`])
//! and what each phase does — start, the top of a step (budgets, the turn's
//! provider), the answer, each tool call and its observation, the end of the
//! turn, the final answer. Data that belongs to one turn lives in the phase
//! that carries it; the driver makes the plugin calls in between.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use uuid::Uuid;
use zu_plugin_api::contracts::{Budget, JsonObject, RunResult, Status, TaskSpec};
use zu_plugin_api::events as ev;
use zu_plugin_api::ports::{
    Continuation, Finish, ModelProvider, ModelRequest, ModelResponse, PluginError, Severity, Tool, Verdict, CALL_ID,
};

use super::budget::{budget_reason, check_usage, usage_tokens, Spend};
use super::checkpoints::{escalate, on_final, CheckSet, Ladder, ToolEntry};
use super::record::Record;
use super::replay::Replay;
use super::shaping::{bound_history, ExtractJob, Shaping};
use super::text::{initial_messages, obj, parse_value, severity_name, validation_retry_note};
use super::RunError;
use crate::deadline::CallError;

/// What a plugin call produced: its value, or why there is none.
pub(super) type Called<T> = Result<Result<T, PluginError>, CallError>;

/// A turn in progress: its `turn.started` event and the model's answer.
#[derive(Clone)]
pub(super) struct Turn {
    pub(super) id: Uuid,
    pub(super) response: Arc<ModelResponse>,
}

/// Where a run is between plugin calls.
#[derive(Clone)]
pub(super) enum Phase {
    Start,
    StepTop,
    /// Ask `provider` for the answer of turn `turn`.
    Provider {
        turn: Uuid,
        provider: Arc<dyn ModelProvider>,
    },
    /// Record tool call `i` of the turn (or answer an unknown tool).
    Tool(Turn, usize),
    /// Make tool call `i` (recorded already) to `tool`.
    ToolCall(Turn, usize, Arc<dyn Tool>),
    /// Ask the provider what is relevant in the chunks of tool call `i`'s
    /// oversized observation `obs` (the `extract` strategy).
    Extract {
        turn: Turn,
        i: usize,
        obs: Arc<JsonObject>,
        jobs: Arc<Vec<ExtractJob>>,
    },
    /// Drive the next step of the track being replayed.
    Replay,
    /// Make the replayed call (recorded already) to `tool` after `wait`.
    ReplayCall {
        turn: Uuid,
        tool: Arc<dyn Tool>,
        wait: Duration,
    },
    /// The calls are over: the first `dispatched` ran; `halting` stopped the rest.
    TurnEnd {
        turn: Turn,
        dispatched: usize,
        halting: Option<Verdict>,
    },
}

/// Everything a run holds. One thread at a time drives it, holding its lock;
/// the lock is released only while a provider or tool call runs (see the
/// driver), so a call that overruns the wall time leaves the state free for
/// the caller to finish the run with that call timed out.
pub(super) struct Loop {
    pub(super) record: Record,
    pub(super) spec: Arc<TaskSpec>,
    /// The budget in force: the task's, or the replay budget while a track replays.
    pub(super) budget: Budget,
    /// The track being replayed, until the model takes over.
    pub(super) replay: Option<Replay>,
    /// Drives the frontier after a clean replay, if set.
    pub(super) finish_provider: Option<Arc<dyn ModelProvider>>,
    /// The replay ended cleanly and the finish provider drives.
    pub(super) finishing: bool,
    pub(super) shaping: Shaping,
    /// Dollars spent, against the dollar budget.
    pub(super) spend: Spend,
    /// What the log says of the run being resumed, until it is applied.
    pub(super) resume: Option<super::resume::Resumed>,
    pub(super) tools: Vec<ToolEntry>,
    pub(super) checks: CheckSet,
    /// What the registry refused at load, recorded at the start of the run.
    pub(super) refused: Vec<crate::registry::LoadFailure>,
    /// The run's plan, recorded on `task.started`.
    pub(super) plan: Option<Value>,
    /// The sandbox of each plugin taking part, recorded at the start of the run.
    pub(super) sandboxes: Option<Value>,
    pub(super) provider: Arc<dyn ModelProvider>,
    pub(super) providers_by_tier: BTreeMap<u32, Arc<dyn ModelProvider>>,
    pub(super) ladder: Ladder,
    /// The conversation, shared with the provider call in flight.
    pub(super) request: Arc<ModelRequest>,
    pub(super) conversation: u64,
    /// How many messages the previous provider call was sent: the prefix the
    /// next call continues.
    pub(super) sent: usize,
    pub(super) tokens: u64,
    /// The tier whose tool schemas the request carries.
    pub(super) tools_tier: u32,
    pub(super) start: Instant,
    /// Wall time the run had spent before this process took it up (resume).
    pub(super) spent_before: Duration,
    pub(super) deadline: Instant,
    pub(super) step: u32,
    pub(super) phase: Phase,
    /// The last verdict that sent the run on (a RETRY, a climb), named when
    /// the provider then fails.
    pub(super) last_verdict: Option<Verdict>,
    /// A call is running on a thread that does not hold the lock.
    pub(super) in_call: bool,
    /// The caller took the run over from a thread stuck in a call.
    pub(super) taken_over: bool,
    /// The run was asked to stop (a signal): the reason its end records.
    pub(super) cancelled: Option<String>,
    pub(super) outcome: Option<Result<RunResult, RunError>>,
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
    /// The calls the model asked for (beyond the reference: a resumed run
    /// knows which of them are still to make).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tool_calls: &'a [zu_plugin_api::ports::ToolCall],
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

impl Loop {
    fn finish(&mut self, result: RunResult) -> Result<(), RunError> {
        self.outcome = Some(Ok(result));
        Ok(())
    }

    /// The run's wall time so far, counting what it spent before a resume.
    pub(super) fn elapsed(&self) -> Duration {
        self.spent_before + self.start.elapsed()
    }

    pub(super) fn terminal(&mut self, reason: &str) -> Result<(), RunError> {
        let r = self.record.terminal(reason)?;
        self.finish(r)
    }

    /// What a plugin's sandbox let through or refused during the call just made.
    pub(super) fn egress(&self) -> Result<(), RunError> {
        Ok(self.record.egress()?)
    }

    pub(super) fn next_step(&mut self) -> Result<(), RunError> {
        self.step += 1;
        self.phase = Phase::StepTop;
        Ok(())
    }

    pub(super) fn push_message(&mut self, message: Value) {
        Arc::make_mut(&mut self.request).messages.push(message);
    }

    /// `task.started`, the envelope of every tool, the first messages.
    pub(super) fn start_run(&mut self) -> Result<(), RunError> {
        if let Some(resumed) = self.resume.take() {
            return self.resume_run(resumed);
        }
        let spec = self.spec.clone();
        let mut started = json!({"query": spec.query, "target": spec.target, "max_tier": spec.max_tier, "budget": spec.budget, "output_schema": spec.output_schema});
        if let Some(plan) = &self.plan {
            started["plan"] = plan.clone();
        }
        let root = self.record.emit(ev::TASK_STARTED, &started, None, "loop")?;
        let _ = self.record.stop.root.set(root);
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
        self.record
            .emit(ev::ENVELOPE_DECLARED, &json!({"tools": envelope}), Some(root), "loop")?;
        for f in std::mem::take(&mut self.refused) {
            let payload = json!({
                "library": f.library.map(|l| l.display().to_string()),
                "kind": f.kind,
                "name": f.name,
                "code": f.error.code(),
                "message": f.error.to_string(),
            });
            self.record.emit(ev::PLUGIN_REFUSED, &payload, Some(root), "loader")?;
        }
        if let Some(payload) = self.sandboxes.take() {
            self.record.emit(ev::SANDBOX_APPLIED, &payload, Some(root), "loader")?;
        }
        let fragments = self.ladder.active(&self.tools).map(|t| t.prompt_fragment.as_str());
        Arc::make_mut(&mut self.request).messages = initial_messages(&spec, fragments);
        self.step = 1;
        self.phase = if self.replay.is_some() {
            Phase::Replay
        } else {
            Phase::StepTop
        };
        Ok(())
    }

    /// Budgets, the tools of the current tier, `turn.started`, the turn's provider.
    pub(super) fn step_top(&mut self) -> Result<(), RunError> {
        if self.step > self.budget.max_steps {
            return self.terminal("budget:max_steps");
        }
        if let Some(reason) = budget_reason(self.elapsed(), self.tokens, &self.budget, &self.spend) {
            return self.terminal(&reason);
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
        let provider = match (&self.finish_provider, self.finishing) {
            (Some(finisher), true) => finisher.clone(),
            _ => self
                .providers_by_tier
                .get(&self.ladder.current)
                .unwrap_or(&self.provider)
                .clone(),
        };
        let turn = self.record.emit(
            ev::TURN_STARTED,
            &StepPayload { step: self.step },
            self.record.root(),
            "loop",
        )?;
        if Instant::now() >= self.deadline {
            return self.terminal("budget:wall_time_s");
        }
        let messages = &mut Arc::make_mut(&mut self.request).messages;
        if let Some(first) = bound_history(messages, self.shaping.max_context_chars) {
            // An elided history is a new prefix: the next call sends it from there.
            self.sent = self.sent.min(first);
        }
        self.phase = Phase::Provider { turn, provider };
        Ok(())
    }

    /// The request for the provider call about to be made: the conversation,
    /// marked as continuing what the previous call was sent.
    pub(super) fn request_for_call(&mut self) -> Arc<ModelRequest> {
        let continuation = Continuation {
            conversation: self.conversation,
            unchanged: self.sent,
        };
        let request = Arc::make_mut(&mut self.request);
        request.set_continuation(Some(continuation));
        request.time_left_ms = Some(self.deadline.saturating_duration_since(Instant::now()).as_millis() as u64);
        self.request.clone()
    }

    /// The answer of turn `turn`: budgets, then a final answer or tool calls.
    pub(super) fn after_provider(
        &mut self,
        turn: Uuid,
        provider: &dyn ModelProvider,
        answer: Called<ModelResponse>,
    ) -> Result<(), RunError> {
        self.sent = self.request.messages.len();
        let mut resp = match answer {
            Ok(Ok(r)) => r,
            Err(CallError::TimedOut) => return self.terminal("budget:wall_time_s"),
            Err(CallError::Cancelled(reason)) => return self.terminal(&reason),
            Ok(Err(e)) => {
                let name = || provider.model().unwrap_or_else(|| "provider".to_owned());
                match &e {
                    PluginError::ProcessEnded(what) => self.record.contained(&name(), "provider", what, Some(turn))?,
                    PluginError::Panicked(m) => self.record.panicked(&name(), "provider", m, Some(turn))?,
                    _ => {}
                }
                return self.provider_failed(&e.to_string());
            }
            Err(CallError::Panicked(m)) => {
                let name = provider.model().unwrap_or_else(|| "provider".to_owned());
                self.record.panicked(&name, "provider", &m, Some(turn))?;
                return self.provider_failed(&format!("panicked: {m}"));
            }
        };
        if let Err(why) = check_usage(&resp.usage) {
            return self.provider_failed(&why);
        }
        // Every call has an id: the model's, kept as it is, else the loop's.
        for (j, call) in resp.tool_calls.iter_mut().enumerate() {
            if call.id().is_none() {
                call.args
                    .insert(CALL_ID.into(), Value::String(format!("zu_{}_{j}", self.step)));
            }
        }
        self.tokens += usage_tokens(&resp.usage);
        let model = provider.model();
        self.spend.add(model.as_deref(), &resp.usage);
        self.record.emit(
            ev::TURN_COMPLETED,
            &TurnCompleted {
                step: self.step,
                tier: self.ladder.current,
                model,
                usage: &resp.usage,
                text: &resp.text,
                tool_calls: &resp.tool_calls,
            },
            Some(turn),
            "loop",
        )?;
        if let Some(reason) = budget_reason(self.elapsed(), self.tokens, &self.budget, &self.spend) {
            return self.terminal(&reason);
        }
        if resp.finish == Finish::Length {
            return self.terminal("model truncated (length)");
        }
        if resp.tool_calls.is_empty() {
            return self.finalise(resp.text.as_deref());
        }
        if resp.tool_calls.len() > self.budget.max_tool_calls as usize {
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
        self.push_message(Value::Object(assistant));
        let turn = Turn {
            id: turn,
            response: Arc::new(resp),
        };
        self.phase = Phase::Tool(turn, 0);
        Ok(())
    }

    /// The provider failed: the run ends TERMINAL, naming the last verdict
    /// that sent it on, if any (a scripted provider running out after a
    /// validator's RETRY is about the RETRY).
    fn provider_failed(&mut self, error: &str) -> Result<(), RunError> {
        let mut reason = format!("provider error: {error}");
        if let Some(v) = &self.last_verdict {
            reason.push_str(&format!(
                " (after {} {}: {})",
                v.detector,
                severity_name(v.severity),
                v.detail.as_deref().unwrap_or("no detail")
            ));
        }
        self.terminal(&reason)
    }

    /// Acts on a halting verdict: TERMINAL ends the run; ESCALATE climbs a
    /// tier (or ends the run exhausted) and the run goes on at the next step.
    pub(super) fn halt(&mut self, v: &Verdict) -> Result<(), RunError> {
        if v.severity == Severity::Terminal {
            return self.terminal(&v.detector);
        }
        self.last_verdict = Some(v.clone());
        let request = Arc::make_mut(&mut self.request);
        if let Some(done) = escalate(&self.record, &mut self.ladder, &self.tools, request, v)? {
            return self.finish(done);
        }
        self.next_step()
    }

    /// The model answered without tools: parse, validate, then complete,
    /// retry, escalate or end.
    pub(super) fn finalise(&mut self, text: Option<&str>) -> Result<(), RunError> {
        let Some(value) = parse_value(text) else {
            return self.terminal("model finalised with no answer");
        };
        let candidate = RunResult {
            status: Status::Success,
            value: Some(value.clone()),
            reason: None,
        };
        if let Some(v) = on_final(&self.record, &self.checks, &candidate)? {
            self.record.emit_as(
                ev::VALIDATION_FAILED,
                &json!({"detector": v.detector, "severity": severity_name(v.severity), "detail": v.detail}),
                self.record.root(),
                &v.detector,
            )?;
            match v.severity {
                Severity::Terminal | Severity::Escalate => return self.halt(&v),
                Severity::Retry => {
                    self.push_message(json!({"role": "user", "content": validation_retry_note(&v)}));
                    self.last_verdict = Some(v);
                    return self.next_step();
                }
                Severity::Warn => {}
            }
        }
        let root = self.record.root();
        self.record
            .emit(ev::RECORD_EXTRACTED, &json!({"value": value}), root, "loop")?;
        self.record
            .emit(ev::TASK_COMPLETED, &json!({"value": value}), root, "loop")?;
        self.finish(candidate)
    }
}
