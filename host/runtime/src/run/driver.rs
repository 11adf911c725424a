//! The driver: who holds a run and when. A pooled worker thread drives the
//! step state machine under the run's lock, releasing it only while a
//! provider or tool call runs. The caller waits until the wall time; if the
//! worker is then stuck in a call, the caller takes the run over (that call
//! counts as timed out, no further plugin call is made); if the worker holds
//! the lock past a grace period (a detector or validator that does not
//! return), the caller abandons it and ends the run on the log itself.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use zu_plugin_api::contracts::{JsonObject, RunResult};
use zu_plugin_api::ports::{panic_message, to_json_capped, PluginError, Tool, MAX_OBSERVATION_BYTES};

use super::record::abandoned_terminal;
use super::steps::{Called, Loop, Phase};
use super::RunError;
use crate::deadline::{CallError, Cancel, DeadlineRunner};

/// How long past the wall time the caller waits for a worker that holds the
/// run (host code, or a detector or validator) before abandoning it.
const GRACE: Duration = Duration::from_secs(1);

type Shared = Mutex<Loop>;

/// An observation and its JSON text.
type Observed = (JsonObject, String);

fn lock(shared: &Shared) -> MutexGuard<'_, Loop> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `call` without holding the run's lock, unless the deadline passed
/// (then the call is not made) or this thread took the run over from one
/// stuck in the call (then it timed out). Returns `None` when the run was
/// taken over while this thread was in the call: it must stop driving.
fn call_unlocked<'a, T>(
    shared: &'a Shared,
    mut st: MutexGuard<'a, Loop>,
    plugin: &str,
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
    let deadline = st.deadline;
    drop(st);
    let out = crate::deadline::within(deadline, plugin, || catch_unwind(AssertUnwindSafe(call)))
        .map_err(|p| CallError::Panicked(panic_message(&*p)));
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

/// Calls `tool` with `args` after `wait`, under the run's deadline. The
/// observation is encoded once, for the model's history, and refused before
/// an oversized one is encoded whole.
fn call_tool<'a>(
    shared: &'a Shared,
    st: MutexGuard<'a, Loop>,
    name: &str,
    args: JsonObject,
    tool: Arc<dyn Tool>,
    wait: Duration,
) -> Option<(MutexGuard<'a, Loop>, Called<Observed>)> {
    let view = st.record.view(None);
    call_unlocked(shared, st, name, move || {
        std::thread::sleep(wait);
        let out = tool.call(&view, args)?;
        let text = to_json_capped(&out, MAX_OBSERVATION_BYTES)?;
        Ok((out, text))
    })
}

/// Drives the run until it ends or this thread must stop. The worker passes
/// `takeover = false` and stops as soon as it finds the run taken over.
fn drive(shared: &Shared, takeover: bool) {
    let mut st = lock(shared);
    if st.taken_over && !takeover {
        return;
    }
    while st.outcome.is_none() {
        if let Some(reason) = st.cancelled.clone() {
            if let Err(e) = st.terminal(&reason) {
                st.outcome = Some(Err(e));
            }
            break;
        }
        let phase = st.phase.clone();
        if matches!(
            phase,
            Phase::Provider { .. } | Phase::ToolCall(..) | Phase::ReplayCall { .. } | Phase::Extract { .. }
        ) {
            // The log is durable before the next side effect, or there is none.
            if let Err(e) = st.record.bus.flush() {
                st.outcome = Some(Err(e.into()));
                break;
            }
        }
        let step = match phase {
            Phase::Start => st.start_run(),
            Phase::StepTop => st.step_top(),
            Phase::Provider { turn, provider } => {
                let request = st.request_for_call();
                let calling = provider.clone();
                let Some((next, out)) = call_unlocked(shared, st, "the provider", move || calling.complete(&request))
                else {
                    return;
                };
                st = next;
                st.egress().and_then(|()| st.after_provider(turn, &*provider, out))
            }
            Phase::Tool(turn, i) => st.before_tool(turn, i),
            Phase::ToolCall(turn, i, tool) => {
                let call = &turn.response.tool_calls[i];
                let (name, args) = (call.name.clone(), call.arguments());
                let Some((next, out)) = call_tool(shared, st, &name, args, tool, Duration::ZERO) else {
                    return;
                };
                st = next;
                st.egress().and_then(|()| st.after_tool(turn, i, Some(out)))
            }
            Phase::Replay => st.replay_step(),
            Phase::ReplayCall { turn, tool, wait } => {
                let replay = st.replay.as_ref().expect("replaying");
                let step = &replay.track.steps[replay.next];
                let (name, args) = (step.tool.clone(), step.args.clone());
                let Some((next, out)) = call_tool(shared, st, &name, args, tool, wait) else {
                    return;
                };
                st = next;
                st.egress().and_then(|()| st.after_replay_tool(turn, Some(out)))
            }
            Phase::Extract { turn, i, obs, jobs } => {
                let provider = st.provider.clone();
                let model = provider.model();
                let allowance = st.budget.max_tokens.saturating_sub(st.tokens);
                let deadline = st.deadline;
                let calls = jobs.clone();
                let Some((next, out)) = call_unlocked(shared, st, "the provider", move || {
                    Ok(super::shaping::extract(&*provider, &calls, allowance, deadline))
                }) else {
                    return;
                };
                st = next;
                st.egress()
                    .and_then(|()| st.after_extract(turn, i, obs, &jobs, out, model))
            }
            Phase::TurnEnd {
                turn,
                dispatched,
                halting,
            } => st.turn_end(turn, dispatched, halting),
        };
        if let Err(e) = step {
            st.outcome = Some(Err(e));
        }
    }
    // Free the conversation on the thread that built it.
    st.request = Arc::default();
    st.phase = Phase::Start;
}

/// Drives `state` to its Result under its deadline, inside `span`.
pub(super) fn run_to_end(state: Loop, span: tracing::Span, cancel: Option<Arc<Cancel>>) -> Result<RunResult, RunError> {
    let deadline = state.deadline;
    let (bus, trace_id, task_id, stop) = (
        state.record.bus.clone(),
        state.record.trace_id,
        state.record.task_id,
        state.record.stop.clone(),
    );
    let shared = Arc::new(Mutex::new(state));
    let worker = shared.clone();
    let worker_span = span.clone();
    let mut runner = DeadlineRunner::new();
    let _ = runner.call_until(deadline, cancel.as_deref(), move || {
        worker_span.in_scope(|| drive(&worker, false))
    });
    let cancelled = cancel.as_deref().and_then(Cancel::reason).map(str::to_owned);
    let grace_ends = Instant::now() + GRACE;
    let st = loop {
        match shared.try_lock() {
            Ok(st) => break Some(st),
            Err(TryLockError::Poisoned(p)) => break Some(p.into_inner()),
            Err(TryLockError::WouldBlock) if Instant::now() < grace_ends => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(TryLockError::WouldBlock) => break None,
        }
    };
    let _entered = span.enter();
    let Some(mut st) = st else {
        tracing::warn!("a detector or validator held the run past its end; the run ends without it");
        let reason = cancelled.as_deref().unwrap_or("budget:wall_time_s");
        return Ok(abandoned_terminal(&bus, trace_id, task_id, &stop, reason)?);
    };
    if st.outcome.is_none() {
        st.taken_over = true;
        st.cancelled = cancelled;
    } else {
        let outcome = st.outcome.take().expect("checked just above");
        drop(st);
        bus.flush()?;
        return outcome;
    }
    drop(st);
    drive(&shared, true);
    let mut st = lock(&shared);
    let outcome = st.outcome.take().expect("a run taken over is driven to its end");
    bus.flush()?;
    outcome
}
