//! Resuming a run that has no end on the log (killed, crashed, machine
//! lost): its spec comes from `task.started`, its conversation, step, tier,
//! tokens, dollars and wall time from its events, and it goes on where it
//! stopped — a tool call that returned is never made again.

use std::sync::Arc;

use serde_json::{json, Value};
use uuid::Uuid;
use zu_plugin_api::contracts::{JsonObject, TaskSpec};
use zu_plugin_api::events as ev;
use zu_plugin_api::filter::StoredEvent;
use zu_plugin_api::ports::{ModelResponse, Severity, ToolCall, Verdict};

use super::budget::usage_tokens;
use super::shaping::truncated;
use super::steps::{Loop, Phase, Turn};
use super::text::{escalation_notice, initial_messages, validation_retry_note};
use super::RunError;
use crate::bus::EventBus;
use crate::projections::is_terminal;

/// A run found on the log, ready to go on.
pub(super) struct Resumed {
    pub(super) events: Vec<StoredEvent>,
}

/// Why a run cannot be resumed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeError {
    /// The log has no `task.started` for the task.
    #[error("the log has no run of task {task}: check --task and that --sink points at the log the run wrote")]
    NotFound {
        /// The task id asked for.
        task: Uuid,
    },
    /// The run has an end already.
    #[error("task {task}'s run already ended ({how}); nothing to resume — start a new run instead")]
    Ended {
        /// The task id.
        task: Uuid,
        /// The event that ended it.
        how: String,
    },
    /// The log could not be read.
    #[error(transparent)]
    Log(#[from] crate::bus::BusError),
}

/// The spec and trace of task `task`'s latest run, if it can be resumed.
pub(super) fn find(bus: &EventBus, task: Uuid) -> Result<(TaskSpec, Uuid, Resumed), ResumeError> {
    let events = crate::track::run_events(bus, task)?;
    let Some(first) = events.first() else {
        return Err(ResumeError::NotFound { task });
    };
    if let Some(end) = events.iter().find(|e| is_terminal(&e.event)) {
        let p = end.event.payload();
        let why = p.get("reason").and_then(Value::as_str).unwrap_or_default();
        return Err(ResumeError::Ended {
            task,
            how: format!("{} {why}", end.event.event_type()).trim_end().to_owned(),
        });
    }
    let p = first.event.payload();
    let mut spec = TaskSpec::new(p.get("query").and_then(Value::as_str).unwrap_or_default());
    spec.task_id = task;
    spec.target = p.get("target").and_then(Value::as_str).map(String::from);
    if let Some(b) = p.get("budget").and_then(|b| serde_json::from_value(b.clone()).ok()) {
        spec.budget = b;
    }
    if let Some(t) = p.get("max_tier").and_then(Value::as_u64) {
        spec.max_tier = t as u32;
    }
    if let Some(s) = p.get("output_schema") {
        spec.output_schema = s.clone();
    }
    Ok((spec, first.event.trace_id(), Resumed { events }))
}

fn text(p: &JsonObject, key: &str) -> Option<String> {
    p.get(key).and_then(Value::as_str).map(String::from)
}

/// Where the resumed run goes on.
enum At {
    /// The next model turn, numbered `step`.
    Step(u32),
    /// Tool call `next` of a turn whose earlier calls returned.
    Tools(Turn, usize),
    /// The final answer of step `step`, not yet validated.
    Final(u32, Option<String>),
}

impl Loop {
    /// Rebuilds the run from its events and goes on where it stopped.
    pub(super) fn resume_run(&mut self, r: Resumed) -> Result<(), RunError> {
        let root = r.events[0].event.event_id();
        let _ = self.record.stop.root.set(root);
        let fragments = self.ladder.active(&self.tools).map(|t| t.prompt_fragment.as_str());
        Arc::make_mut(&mut self.request).messages = initial_messages(&self.spec, fragments);
        let (mut at, mut replaying, mut fetched) = (At::Step(1), false, None::<JsonObject>);
        let mut open_turn: Option<(Uuid, u32)> = None;
        let mut replayed = 0;
        for e in &r.events {
            let p = e.event.payload();
            match e.event.event_type() {
                ev::TURN_STARTED => {
                    replaying = p.get("replay") == Some(&Value::Bool(true));
                    let step = p.get("step").and_then(Value::as_u64).unwrap_or(1) as u32;
                    if !replaying {
                        open_turn = Some((e.event.event_id(), step));
                        at = At::Step(step);
                    }
                }
                ev::TURN_COMPLETED => {
                    let usage = p.get("usage").and_then(Value::as_object).cloned().unwrap_or_default();
                    self.tokens += usage_tokens(&usage);
                    self.spend.add(p.get("model").and_then(Value::as_str), &usage);
                    let calls: Vec<ToolCall> =
                        serde_json::from_value(p.get("tool_calls").cloned().unwrap_or(json!([]))).unwrap_or_default();
                    let Some((id, step)) = open_turn.take() else { continue };
                    if calls.is_empty() {
                        at = At::Final(step, text(p, "text"));
                        continue;
                    }
                    let mut assistant = json!({"role": "assistant", "tool_calls": calls});
                    if let Some(t) = text(p, "text").filter(|t| !t.is_empty()) {
                        assistant["content"] = t.into();
                    }
                    self.push_message(assistant);
                    let response = ModelResponse {
                        text: text(p, "text"),
                        tool_calls: calls,
                        ..ModelResponse::default()
                    };
                    at = At::Tools(
                        Turn {
                            id,
                            response: Arc::new(response),
                        },
                        0,
                    );
                    self.step = step;
                }
                ev::OBSERVATION_EXTRACTED => {
                    let usage = p.get("usage").and_then(Value::as_object).cloned().unwrap_or_default();
                    self.tokens += usage_tokens(&usage);
                    self.spend.add(p.get("model").and_then(Value::as_str), &usage);
                }
                ev::TOOL_INVOKED if replaying => {
                    replayed += 1;
                    let call = json!({"name": p.get("tool"), "args": p.get("args")});
                    let content = format!("(replay step {replayed})");
                    self.push_message(json!({"role": "assistant", "content": content, "tool_calls": [call]}));
                }
                ev::SOURCE_FETCHED => fetched = Some(p.clone()),
                ev::TOOL_RETURNED => {
                    let obs = fetched.take().unwrap_or_else(|| {
                        p.get("observation")
                            .and_then(Value::as_object)
                            .cloned()
                            .unwrap_or_default()
                    });
                    let shaped = truncated(&obs, self.shaping.max_observation_chars).unwrap_or(obs);
                    let name = p.get("tool").cloned().unwrap_or_default();
                    let content = serde_json::to_string(&shaped).unwrap_or_default();
                    self.push_message(json!({"role": "tool", "name": name, "content": content}));
                    if let At::Tools(_, next) = &mut at {
                        *next += 1;
                    }
                }
                ev::TASK_ESCALATED => {
                    let to = p.get("to_tier").and_then(Value::as_u64).unwrap_or(1) as u32;
                    self.ladder.current = to.max(self.ladder.current);
                    if p.get("replay") != Some(&Value::Bool(true)) {
                        let v = Verdict {
                            severity: Severity::Escalate,
                            detector: text(p, "reason").unwrap_or_default(),
                            detail: text(p, "detail"),
                        };
                        let unlocked = self.ladder.active(&self.tools).filter(|t| t.tier == to);
                        let note = escalation_notice(&v, to, unlocked.map(|t| t.prompt_fragment.as_str()));
                        self.push_message(json!({"role": "user", "content": note}));
                        at = At::Step(self.step + 1);
                    }
                }
                ev::VALIDATION_FAILED if p.get("severity").and_then(Value::as_str) == Some("retry") => {
                    let v = Verdict {
                        severity: Severity::Retry,
                        detector: text(p, "detector").unwrap_or_default(),
                        detail: text(p, "detail"),
                    };
                    self.push_message(json!({"role": "user", "content": validation_retry_note(&v)}));
                    if let At::Final(step, _) = at {
                        at = At::Step(step + 1);
                    }
                }
                _ => {}
            }
        }
        let last = r.events.last().expect("a run has its task.started");
        let spent = self.spent_before.as_millis() as u64;
        // Every message rebuilt here is new to the provider.
        self.sent = 0;
        let step = match &at {
            At::Step(s) | At::Final(s, _) => *s,
            At::Tools(..) => self.step,
        };
        self.record.emit(
            ev::TASK_RESUMED,
            &json!({"step": step, "tokens": self.tokens, "usd": self.spend.usd, "elapsed_ms": spent, "after_seq": last.seq}),
            Some(root),
            "loop",
        )?;
        self.step = step;
        match at {
            At::Step(_) => self.phase = Phase::StepTop,
            At::Tools(turn, next) if next < turn.response.tool_calls.len() => self.phase = Phase::Tool(turn, next),
            At::Tools(turn, next) => {
                self.phase = Phase::TurnEnd {
                    turn,
                    dispatched: next,
                    halting: None,
                }
            }
            At::Final(_, text) => return self.finalise(text.as_deref()),
        }
        Ok(())
    }
}
