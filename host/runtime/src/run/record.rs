//! The run's record: every event of a run is emitted here, under the run's
//! trace and task, to the bus. Once the caller has abandoned a stuck worker,
//! the record is closed to it, so nothing more reaches the log from there.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use serde_json::{json, Value};
use uuid::Uuid;
use zu_plugin_api::contracts::{Event, RunResult, Status};
use zu_plugin_api::events as ev;

use super::view::RunView;
use crate::bus::{BusError, EventBus};

/// Shared with the caller outside the run's lock: lets it end a run whose
/// worker is stuck while holding the lock (in a detector or validator).
#[derive(Default)]
pub(super) struct Abandon {
    pub(super) abandoned: AtomicBool,
    /// The run's `task.started` event, the parent of its end.
    pub(super) root: Arc<OnceLock<Uuid>>,
}

/// Where a run's events go, and the view plugins read it through.
pub(super) struct Record {
    pub(super) bus: Arc<EventBus>,
    pub(super) trace_id: Uuid,
    pub(super) task_id: Uuid,
    pub(super) view: RunView,
    pub(super) stop: Arc<Abandon>,
}

impl Record {
    /// The run's `task.started` event, once emitted.
    pub(super) fn root(&self) -> Option<Uuid> {
        self.stop.root.get().copied()
    }

    /// Records what the sandboxes' egress gates saw since the last call:
    /// one `egress.observed` per plugin, host and port forwarded to, one
    /// `egress.refused` per reach refused, each with its count.
    pub(super) fn egress(&self) -> Result<(), BusError> {
        for (reach, count) in crate::egress::take() {
            let (ty, counted) = if reach.allowed {
                (ev::EGRESS_OBSERVED, "connections")
            } else {
                (ev::EGRESS_REFUSED, "attempts")
            };
            let payload = json!({"plugin": reach.plugin, "host": reach.host, "port": reach.port, counted: count});
            self.emit(ty, &payload, self.root(), "loader")?;
        }
        Ok(())
    }

    /// Publishes one event of this run under one of zu's own sources.
    pub(super) fn emit(
        &self,
        ty: &'static str,
        payload: &impl serde::Serialize,
        parent: Option<Uuid>,
        source: &'static str,
    ) -> Result<Uuid, BusError> {
        self.publish(ty, payload, parent, Cow::Borrowed(source))
    }

    /// Publishes one event about plugin `name` (a tool, a detector), under
    /// its name — never one of zu's own sources ([`ev::plugin_source`]).
    pub(super) fn emit_as(
        &self,
        ty: &'static str,
        payload: &impl serde::Serialize,
        parent: Option<Uuid>,
        name: &str,
    ) -> Result<Uuid, BusError> {
        self.publish(ty, payload, parent, Cow::Owned(ev::plugin_source(name).into_owned()))
    }

    fn publish(
        &self,
        ty: &'static str,
        payload: &impl serde::Serialize,
        parent: Option<Uuid>,
        source: Cow<'static, str>,
    ) -> Result<Uuid, BusError> {
        if self.stop.abandoned.load(Ordering::Acquire) {
            return Err(BusError::Closed); // the caller ended this run; nothing more goes on its log
        }
        let event = Event::with_payload(self.trace_id, self.task_id, parent, ty, source, payload)
            .expect("the loop emits only namespaced event types and object payloads");
        let id = event.event_id();
        if tracing::enabled!(target: "zu::run", tracing::Level::DEBUG) {
            let p = event.payload();
            tracing::debug!(
                target: "zu::run",
                event = ty,
                source = %event.source(),
                step = ?p.get("step").and_then(serde_json::Value::as_u64),
                tool = ?p.get("tool").and_then(serde_json::Value::as_str),
                "recorded"
            );
        }
        self.bus.publish(event)?;
        Ok(id)
    }

    /// Emits `plugin.panicked`: the `kind` plugin `name` panicked during a
    /// call (caught; the call failed with `message`).
    pub(super) fn panicked(&self, name: &str, kind: &str, message: &str, parent: Option<Uuid>) -> Result<(), BusError> {
        tracing::warn!(plugin = name, kind, message, "a plugin panicked during a call; caught");
        self.emit_as(
            ev::PLUGIN_PANICKED,
            &json!({"plugin": name, "kind": kind, "message": message}),
            parent,
            name,
        )?;
        Ok(())
    }

    /// Emits `plugin.contained`: the `kind` plugin `name`'s process ended
    /// during a call (`what`).
    pub(super) fn contained(&self, name: &str, kind: &str, what: &str, parent: Option<Uuid>) -> Result<(), BusError> {
        tracing::warn!(
            plugin = name,
            kind,
            what,
            "a plugin's process ended during a call; contained"
        );
        self.emit_as(
            ev::PLUGIN_CONTAINED,
            &json!({"plugin": name, "kind": kind, "what": what}),
            parent,
            name,
        )
        .map(|_| ())
    }

    /// Emits `task.terminal` with `reason` and returns the matching Result.
    pub(super) fn terminal(&self, reason: &str) -> Result<RunResult, BusError> {
        self.emit(ev::TASK_TERMINAL, &json!({"reason": reason}), self.root(), "loop")?;
        Ok(terminal_result(reason))
    }

    /// A view of the run inspecting `observation`.
    pub(super) fn view(&self, observation: Option<Arc<Value>>) -> RunView {
        self.view.inspecting(observation)
    }
}

/// A TERMINAL Result with `reason`.
pub(super) fn terminal_result(reason: &str) -> RunResult {
    RunResult {
        status: Status::Terminal,
        value: None,
        reason: Some(reason.to_owned()),
    }
}

/// Writes `task.terminal` for a run whose worker was abandoned (the caller's
/// side; the worker's record is closed by then).
pub(super) fn abandoned_terminal(
    bus: &EventBus,
    trace_id: Uuid,
    task_id: Uuid,
    stop: &Abandon,
    reason: &str,
) -> Result<RunResult, BusError> {
    stop.abandoned.store(true, Ordering::Release);
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
    bus.flush()?;
    Ok(terminal_result(reason))
}
