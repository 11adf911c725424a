//! Pipelines: phases run one after another under one trace, each a run of
//! its own with a task id derived from the trace and the phase's name; a
//! phase starts only when the one before succeeded, and a phase already
//! completed on the log is skipped (its value reused), so a re-run resumes.

use std::sync::Arc;

use serde_json::{json, Value};
use uuid::Uuid;
use zu_plugin_api::contracts::{Event, JsonObject, RunResult, Status, TaskSpec};
use zu_plugin_api::events as ev;
use zu_plugin_api::filter::{EventFilter, FilterField};
use zu_plugin_api::ports::ModelProvider;

use crate::bus::EventBus;
use crate::registry::Registry;
use crate::run::{run_task, RunError, RunOptions};

/// Builds a phase's task from the previous phase's result (`None` for the
/// first), or says why it cannot (the phase then fails TERMINAL with that
/// reason, before any of it runs).
pub type BuildPhase = Box<dyn Fn(Option<&RunResult>) -> Result<TaskSpec, String> + Send + Sync>;

/// One phase: a name (stable: it keys resume) and how its task is built.
pub struct PipelinePhase {
    /// The phase's name, unique in the pipeline.
    pub name: String,
    /// Its task, from the previous phase's result.
    pub build: BuildPhase,
}

/// How a pipeline ended.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineResult {
    /// The pipeline's trace id: every phase's events carry it.
    pub id: Uuid,
    /// Success when every phase succeeded, else the failed phase's status.
    pub status: Status,
    /// The last phase's value, on success.
    pub value: Option<JsonObject>,
    /// Each phase that ran or was skipped, in order, with its result.
    pub phases: Vec<(String, RunResult)>,
    /// The phases found completed on the log and skipped.
    pub skipped: Vec<String>,
    /// The phase that did not succeed.
    pub failed_phase: Option<String>,
}

/// The task id of phase `name` of pipeline `id`: the same on every run.
pub fn phase_task_id(id: Uuid, name: &str) -> Uuid {
    Uuid::new_v5(&id, name.as_bytes())
}

fn emit(bus: &EventBus, trace: Uuid, task: Option<Uuid>, ty: &'static str, payload: Value) -> Result<(), RunError> {
    let event = Event::with_payload(trace, task.unwrap_or(trace), None, ty, "pipeline", &payload)
        .expect("a namespaced type and an object payload");
    bus.publish(event)?;
    Ok(())
}

/// The value phase task `task` completed with, if it did.
fn completed_value(bus: &EventBus, trace: Uuid, task: Uuid) -> Result<Option<JsonObject>, RunError> {
    let filter = EventFilter::all()
        .with(FilterField::TraceId, Some(trace.to_string()))
        .with(FilterField::TaskId, Some(task.to_string()))
        .with(FilterField::Type, Some(ev::TASK_COMPLETED));
    Ok(bus.query(&filter, None, 0)?.last().map(|e| {
        e.event
            .payload()
            .get("value")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    }))
}

/// Runs `phases` in order under trace `id` (a fresh one when `None`): each
/// phase already completed on the log under that trace is skipped, the
/// others run with `options` until one does not succeed.
pub fn run_pipeline(
    phases: &[PipelinePhase],
    provider: Arc<dyn ModelProvider>,
    registry: &Registry,
    bus: &Arc<EventBus>,
    options: &RunOptions,
    id: Option<Uuid>,
) -> Result<PipelineResult, RunError> {
    let trace = id.unwrap_or_else(Uuid::new_v4);
    let names: Vec<&str> = phases.iter().map(|p| p.name.as_str()).collect();
    emit(bus, trace, None, ev::PIPELINE_STARTED, json!({"phases": names}))?;
    let mut out = PipelineResult {
        id: trace,
        status: Status::Success,
        value: None,
        phases: Vec::new(),
        skipped: Vec::new(),
        failed_phase: None,
    };
    let mut prev: Option<RunResult> = None;
    for phase in phases {
        let task = phase_task_id(trace, &phase.name);
        if let Some(value) = completed_value(bus, trace, task)? {
            emit(
                bus,
                trace,
                Some(task),
                ev::PIPELINE_PHASE_SKIPPED,
                json!({"phase": phase.name}),
            )?;
            let done = RunResult {
                status: Status::Success,
                value: Some(value),
                reason: None,
            };
            out.skipped.push(phase.name.clone());
            out.phases.push((phase.name.clone(), done.clone()));
            prev = Some(done);
            continue;
        }
        let mut spec = match (phase.build)(prev.as_ref()) {
            Ok(spec) => spec,
            Err(reason) => {
                let failed = RunResult {
                    status: Status::Terminal,
                    value: None,
                    reason: Some(reason),
                };
                return fail(bus, trace, &phase.name, failed, out);
            }
        };
        spec.task_id = task;
        emit(
            bus,
            trace,
            Some(task),
            ev::PIPELINE_PHASE_STARTED,
            json!({"phase": phase.name}),
        )?;
        let options = RunOptions {
            trace_id: Some(trace),
            ..options.clone()
        };
        let result = run_task(&spec, provider.clone(), registry, bus, &options)?;
        let status = serde_json::to_value(result.status).unwrap_or_default();
        emit(
            bus,
            trace,
            Some(task),
            ev::PIPELINE_PHASE_COMPLETED,
            json!({"phase": phase.name, "status": status}),
        )?;
        if result.status != Status::Success {
            return fail(bus, trace, &phase.name, result, out);
        }
        out.phases.push((phase.name.clone(), result.clone()));
        prev = Some(result);
    }
    emit(bus, trace, None, ev::PIPELINE_COMPLETED, json!({}))?;
    bus.flush()?;
    out.value = prev.and_then(|r| r.value);
    Ok(out)
}

/// Ends the pipeline at phase `name`, which did not succeed (`result`).
fn fail(
    bus: &EventBus,
    trace: Uuid,
    name: &str,
    result: RunResult,
    mut out: PipelineResult,
) -> Result<PipelineResult, RunError> {
    emit(
        bus,
        trace,
        None,
        ev::PIPELINE_FAILED,
        json!({"phase": name, "reason": result.reason}),
    )?;
    out.status = result.status;
    out.failed_phase = Some(name.to_owned());
    out.phases.push((name.to_owned(), result));
    bus.flush()?;
    Ok(out)
}
