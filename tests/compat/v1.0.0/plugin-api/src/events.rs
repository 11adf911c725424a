//! The event taxonomy: every event type the runtime emits, as constants, so
//! emitters, projections and plugins agree on one spelling. The names are the
//! Python reference's, so a log written by one is read by tools of the other.

/// A run started: `{query, target, max_tier, budget}`.
pub const TASK_STARTED: &str = "harness.task.started";
/// The capability envelope of every active tool: `{tools: {name: {tier, capabilities, egress}}}`.
pub const ENVELOPE_DECLARED: &str = "harness.envelope.declared";
/// The run finished successfully.
pub const TASK_COMPLETED: &str = "harness.task.completed";
/// A tier climb (`{reason, detail, from_tier, to_tier}`) or the run's end at
/// the ceiling (`{reason, tier, exhausted: true}`).
pub const TASK_ESCALATED: &str = "harness.task.escalated";
/// The run ended without success.
pub const TASK_TERMINAL: &str = "harness.task.terminal";
/// A model turn began.
pub const TURN_STARTED: &str = "harness.turn.started";
/// A model turn ended: `{step, tier, model, usage}`.
pub const TURN_COMPLETED: &str = "harness.turn.completed";
/// A tool was called.
pub const TOOL_INVOKED: &str = "harness.tool.invoked";
/// A tool returned.
pub const TOOL_RETURNED: &str = "harness.tool.returned";
/// A detector returned a verdict.
pub const DETECTOR_FIRED: &str = "harness.detector.fired";
/// A validator refused the result.
pub const VALIDATION_FAILED: &str = "harness.validation.failed";
/// A guard contained an unsafe attempt (SSRF, oversized observation, ...).
pub const DEFENSE_BLOCKED: &str = "harness.defense.blocked";
/// A connection the egress proxy observed (out-of-band fact).
pub const EGRESS_OBSERVED: &str = "harness.egress.observed";
/// A filesystem or process effect observed from outside the sandbox.
pub const HOST_EFFECT_OBSERVED: &str = "harness.host_effect.observed";
/// A multi-phase pipeline started.
pub const PIPELINE_STARTED: &str = "harness.pipeline.started";
/// A pipeline phase started.
pub const PIPELINE_PHASE_STARTED: &str = "harness.pipeline.phase.started";
/// A pipeline phase completed.
pub const PIPELINE_PHASE_COMPLETED: &str = "harness.pipeline.phase.completed";
/// A pipeline phase was skipped (already complete on the log).
pub const PIPELINE_PHASE_SKIPPED: &str = "harness.pipeline.phase.skipped";
/// A pipeline completed.
pub const PIPELINE_COMPLETED: &str = "harness.pipeline.completed";
/// A pipeline failed.
pub const PIPELINE_FAILED: &str = "harness.pipeline.failed";
/// Content a tool retrieved, stored once: `{tool, url?, html|text|content}`.
pub const SOURCE_FETCHED: &str = "data.source.fetched";
/// The value extracted from the final answer.
pub const RECORD_EXTRACTED: &str = "data.record.extracted";

/// Every `harness.*` type.
pub const HARNESS_TYPES: [&str; 20] = [
    TASK_STARTED,
    ENVELOPE_DECLARED,
    TASK_COMPLETED,
    TASK_ESCALATED,
    TASK_TERMINAL,
    TURN_STARTED,
    TURN_COMPLETED,
    TOOL_INVOKED,
    TOOL_RETURNED,
    DETECTOR_FIRED,
    VALIDATION_FAILED,
    DEFENSE_BLOCKED,
    EGRESS_OBSERVED,
    HOST_EFFECT_OBSERVED,
    PIPELINE_STARTED,
    PIPELINE_PHASE_STARTED,
    PIPELINE_PHASE_COMPLETED,
    PIPELINE_PHASE_SKIPPED,
    PIPELINE_COMPLETED,
    PIPELINE_FAILED,
];

/// Every `data.*` type.
pub const DATA_TYPES: [&str; 2] = [SOURCE_FETCHED, RECORD_EXTRACTED];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_is_namespaced() {
        for t in HARNESS_TYPES {
            assert!(t.starts_with("harness."), "{t}");
        }
        for t in DATA_TYPES {
            assert!(t.starts_with("data."), "{t}");
        }
    }
}
