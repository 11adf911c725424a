//! The run's checkpoints: the tier ladder and the tools it unlocks, the
//! detectors by scope and the validators on the final answer (the worst
//! verdict wins), what happens when a check itself fails, and escalation.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use uuid::Uuid;
use zu_plugin_api::contracts::{RunResult, Status};
use zu_plugin_api::events as ev;
use zu_plugin_api::ports::{Detector, ModelRequest, PluginError, Scope, Severity, Tool, Validator, Verdict};

use super::record::Record;
use super::text::{escalation_notice, severity_name};
use super::Checks;
use crate::bus::BusError;

/// A tool taking part in the run, with what the ladder and the model need.
pub(super) struct ToolEntry {
    pub(super) name: String,
    pub(super) tool: Arc<dyn Tool>,
    pub(super) tier: u32,
    pub(super) capabilities: Vec<String>,
    pub(super) egress: Vec<String>,
    pub(super) schema: Value,
    pub(super) prompt_fragment: String,
}

/// The run's tier ladder.
pub(super) struct Ladder {
    pub(super) current: u32,
    pub(super) ceiling: u32,
}

impl Ladder {
    /// The tools at or below the current tier.
    pub(super) fn active<'a>(&self, tools: &'a [ToolEntry]) -> impl Iterator<Item = &'a ToolEntry> {
        let tier = self.current;
        tools.iter().filter(move |t| t.tier <= tier)
    }
}

/// The detectors and validators taking part in the run, by name, and what a
/// check that fails to give a verdict means.
pub(super) struct CheckSet {
    pub(super) detectors: Vec<(String, Arc<dyn Detector>, Scope)>,
    pub(super) validators: Vec<(String, Arc<dyn Validator>)>,
    pub(super) mode: Checks,
    /// The run's deadline, which each check's call carries.
    pub(super) deadline: Instant,
}

/// The first of the worst verdicts.
pub(super) fn worst(verdicts: Vec<Verdict>) -> Option<Verdict> {
    verdicts.into_iter().fold(None, |best, v| match best {
        Some(b) if b.severity >= v.severity => Some(b),
        _ => Some(v),
    })
}

/// Runs one check under `catch_unwind`. A check that errs or panics is
/// recorded (`harness.check.failed`); fail-open it is skipped, fail-closed it
/// becomes a TERMINAL verdict `check_failed:<name>`.
fn run_check(
    record: &Record,
    checks: &CheckSet,
    kind: &str,
    name: &str,
    parent: Option<Uuid>,
    check: impl FnOnce() -> Result<Option<Verdict>, PluginError>,
) -> Result<Option<Verdict>, BusError> {
    let error = match crate::deadline::within(checks.deadline, name, || catch_unwind(AssertUnwindSafe(check))) {
        Ok(Ok(v)) => return Ok(v),
        Ok(Err(e)) => {
            match &e {
                PluginError::ProcessEnded(what) => record.contained(name, kind, what, parent)?,
                PluginError::Panicked(m) => record.panicked(name, kind, m, parent)?,
                _ => {}
            }
            e.to_string()
        }
        Err(p) => {
            let message = zu_plugin_api::ports::panic_message(&*p);
            record.panicked(name, kind, &message, parent)?;
            format!("panicked: {message}")
        }
    };
    tracing::warn!(check = name, kind, %error, mode = ?checks.mode, "a check failed to give a verdict");
    record.emit_as(
        ev::CHECK_FAILED,
        &json!({"check": name, "kind": kind, "error": error}),
        parent,
        name,
    )?;
    Ok(match checks.mode {
        Checks::FailOpen => None,
        Checks::FailClosed => Some(Verdict::new(Severity::Terminal, format!("check_failed:{name}"), error)),
    })
}

/// Runs the detectors of `scope`, records each verdict, and returns the worst
/// one if it halts the turn (ESCALATE or TERMINAL).
pub(super) fn checkpoint(
    record: &Record,
    turn: Uuid,
    checks: &CheckSet,
    observation: Option<Arc<Value>>,
    scope: Scope,
) -> Result<Option<Verdict>, BusError> {
    let mut verdicts = Vec::new();
    let mut view = None;
    for (name, d, s) in &checks.detectors {
        if *s != scope {
            continue;
        }
        let view = view.get_or_insert_with(|| record.view(observation.clone()));
        let Some(v) = run_check(record, checks, "detector", name, Some(turn), || d.inspect(view))? else {
            continue;
        };
        if !v.detector.starts_with("check_failed:") {
            record.emit_as(
                ev::DETECTOR_FIRED,
                &json!({"detector": v.detector, "severity": severity_name(v.severity), "detail": v.detail}),
                Some(turn),
                &v.detector,
            )?;
        }
        verdicts.push(v);
    }
    Ok(worst(verdicts).filter(|v| v.severity >= Severity::Escalate))
}

/// The ON_FINAL ladder: on-final detectors, then validators; the worst verdict.
pub(super) fn on_final(record: &Record, checks: &CheckSet, candidate: &RunResult) -> Result<Option<Verdict>, BusError> {
    let view = record.view(None);
    let mut verdicts = Vec::new();
    for (name, d, _) in checks.detectors.iter().filter(|(_, _, s)| *s == Scope::OnFinal) {
        verdicts.extend(run_check(record, checks, "detector", name, record.root(), || {
            d.inspect(&view)
        })?);
    }
    for (name, v) in &checks.validators {
        verdicts.extend(run_check(record, checks, "validator", name, record.root(), || {
            v.check(candidate, &view)
        })?);
    }
    Ok(worst(verdicts))
}

/// Climbs a tier on ESCALATE and tells the model what it unlocked; at the
/// ceiling, ends the run with an ESCALATE Result.
pub(super) fn escalate(
    record: &Record,
    ladder: &mut Ladder,
    tools: &[ToolEntry],
    request: &mut ModelRequest,
    verdict: &Verdict,
) -> Result<Option<RunResult>, BusError> {
    if ladder.current >= ladder.ceiling {
        record.emit(
            ev::TASK_ESCALATED,
            &json!({"reason": verdict.detector, "tier": ladder.current, "exhausted": true}),
            record.root(),
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
    record.emit_as(
        ev::TASK_ESCALATED,
        &json!({"reason": verdict.detector, "detail": verdict.detail, "from_tier": from, "to_tier": ladder.current}),
        record.root(),
        &verdict.detector,
    )?;
    let unlocked = ladder
        .active(tools)
        .filter(|t| t.tier == ladder.current)
        .map(|t| t.prompt_fragment.as_str());
    let notice = escalation_notice(verdict, ladder.current, unlocked);
    request.messages.push(json!({"role": "user", "content": notice}));
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

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
