//! Replaying a track: each recorded call is made again with no model call,
//! under `turn.started {replay: true}`, climbing the ladder where the path
//! did; the conversation gets the same messages the model's turns would. A
//! challenge (an error, a refusal, an HTTP error) or a run of soft misses
//! hands the run to the model there; a clean end hands it over with a note.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;
use zu_plugin_api::contracts::JsonObject;
use zu_plugin_api::events as ev;

use super::observation;
use super::shaping::truncated;
use super::steps::{Called, Loop, Phase};
use super::RunError;
use crate::track::{Jitter, Track};

/// This many soft misses in a row mean the path has diverged.
const MAX_SOFT_MISSES: u32 = 3;

/// What the model is told after a clean replay: the evidence is in the
/// history, answer from it rather than navigate again.
const REPLAY_DONE_NOTE: &str = "The recorded navigation above is complete: its tool observations already hold \
    what was gathered for this task. Give the final answer now, taken from those observations. Do not open the \
    browser again, search again or repeat any navigation.";

/// A replay in progress.
pub(super) struct Replay {
    pub(super) track: Arc<Track>,
    pub(super) next: usize,
    pub(super) soft_misses: u32,
    pub(super) jitter: Jitter,
}

/// A step the model must take over from: an error, a refusal, a hard
/// action error or an HTTP error status. Different data is not a challenge.
fn is_challenge(obs: &JsonObject) -> bool {
    let truthy = |k: &str| {
        obs.get(k)
            .is_some_and(|v| !matches!(v, Value::Null | Value::Bool(false)) && v != "")
    };
    if truthy("error") || truthy("blocked") {
        return true;
    }
    if truthy("action_error") && obs.get("action_error_kind").and_then(Value::as_str) != Some("soft") {
        return true;
    }
    obs.get("status").and_then(Value::as_i64).is_some_and(|s| s >= 400)
}

fn is_soft_miss(obs: &JsonObject) -> bool {
    obs.get("action_error_kind").and_then(Value::as_str) == Some("soft")
}

impl Loop {
    /// The next replayed step: out of time or out of track hands over;
    /// otherwise climb to the step's tier, `turn.started`, `tool.invoked`.
    pub(super) fn replay_step(&mut self) -> Result<(), RunError> {
        let Some(replay) = self.replay.as_mut() else {
            return self.end_replay(true);
        };
        let Some(step) = replay.track.steps.get(replay.next).cloned() else {
            return self.end_replay(false);
        };
        if std::time::Instant::now() >= self.deadline {
            return self.end_replay(true);
        }
        let wait = Duration::from_millis(replay.jitter.wait_ms(step.wait_ms));
        let i = replay.next;
        let entry = self.tools.iter().find(|t| t.name == step.tool);
        let want = step.tier.max(entry.map_or(1, |t| t.tier)).min(self.ladder.ceiling);
        if want > self.ladder.current {
            let from = self.ladder.current;
            self.ladder.current = want;
            self.record.emit(
                ev::TASK_ESCALATED,
                &json!({"reason": "replay", "from_tier": from, "to_tier": want, "replay": true}),
                self.record.root(),
                "replay",
            )?;
        }
        let turn = self.record.emit(
            ev::TURN_STARTED,
            &json!({"step": i + 1, "replay": true}),
            self.record.root(),
            "loop",
        )?;
        self.record.emit_as(
            ev::TOOL_INVOKED,
            &json!({"tool": step.tool, "args": step.args}),
            Some(turn),
            &step.tool,
        )?;
        // Like the reference, the replay reaches every tool the run has: the
        // climb above already put the ladder where the path had it.
        self.phase = match entry {
            Some(t) => Phase::ReplayCall {
                turn,
                tool: t.tool.clone(),
                wait,
            },
            None => return self.after_replay_tool(turn, None),
        };
        Ok(())
    }

    /// The replayed call's outcome: recorded like any call, added to the
    /// conversation; a challenge or too many soft misses hand over.
    pub(super) fn after_replay_tool(
        &mut self,
        turn: Uuid,
        outcome: Option<Called<(JsonObject, String)>>,
    ) -> Result<(), RunError> {
        let replay = self.replay.as_mut().expect("replaying");
        let i = replay.next;
        let step = replay.track.steps[i].clone();
        replay.next += 1;
        let (obs, content) = observation::record(&self.record, turn, &step.tool, None, outcome)?;
        let content = match truncated(&obs, self.shaping.max_observation_chars) {
            Some(shaped) => serde_json::to_string(&shaped).unwrap_or_default(),
            None => content,
        };
        let call = json!({"name": step.tool, "args": step.args});
        self.push_message(
            json!({"role": "assistant", "content": format!("(replay step {})", i + 1), "tool_calls": [call]}),
        );
        self.push_message(json!({"role": "tool", "name": step.tool, "content": content}));
        if is_challenge(&obs) {
            return self.end_replay(true);
        }
        let replay = self.replay.as_mut().expect("replaying");
        replay.soft_misses = if is_soft_miss(&obs) { replay.soft_misses + 1 } else { 0 };
        if replay.soft_misses >= MAX_SOFT_MISSES {
            return self.end_replay(true);
        }
        self.phase = Phase::Replay;
        Ok(())
    }

    /// The model takes over: after a clean replay with the note (and the
    /// finish provider, if one is set); after a divergence as it was.
    fn end_replay(&mut self, diverged: bool) -> Result<(), RunError> {
        self.replay = None;
        if !diverged {
            self.push_message(json!({"role": "user", "content": REPLAY_DONE_NOTE}));
            self.finishing = self.finish_provider.is_some();
        }
        self.step = 1;
        self.phase = Phase::StepTop;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_errors_refusals_hard_misses_and_http_errors() {
        let o = |v: Value| v.as_object().cloned().unwrap();
        assert!(is_challenge(&o(json!({"error": "boom"}))));
        assert!(is_challenge(&o(json!({"blocked": "ssrf"}))));
        assert!(is_challenge(&o(json!({"status": 404}))));
        assert!(is_challenge(&o(
            json!({"action_error": "gone", "action_error_kind": "hard"})
        )));
        assert!(!is_challenge(&o(
            json!({"action_error": "gone", "action_error_kind": "soft"})
        )));
        assert!(!is_challenge(&o(json!({"status": 200, "html": "other data"}))));
        assert!(!is_challenge(&o(json!({"error": null}))));
        assert!(is_soft_miss(&o(json!({"action_error_kind": "soft"}))));
    }
}
