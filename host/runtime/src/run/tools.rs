//! One turn's tool calls: each is recorded, made (by the driver) or
//! answered as unknown, its observation shaped for the model and checked by
//! the per-observation detectors; at the end of the turn the calls a
//! halting verdict skipped are answered and the per-turn detectors run.

use std::sync::Arc;

use serde_json::{json, Value};
use zu_plugin_api::contracts::JsonObject;
use zu_plugin_api::events as ev;
use zu_plugin_api::ports::{PluginError, Scope, Verdict};

use super::checkpoints::checkpoint;
use super::observation;
use super::shaping::{extract_jobs, truncated, Strategy};
use super::steps::{Called, Loop, Phase, Turn};
use super::text::skipped_note;
use super::RunError;

#[derive(serde::Serialize)]
struct ToolInvoked<'a> {
    tool: &'a str,
    args: &'a JsonObject,
    /// The call's id (the model's, else the loop's): its `tool.returned` has it too.
    #[serde(skip_serializing_if = "Option::is_none")]
    call_id: Option<&'a str>,
}

impl Loop {
    /// Records tool call `i`; an unknown tool (or one above the current tier)
    /// is answered here, a known one is called next.
    pub(super) fn before_tool(&mut self, turn: Turn, i: usize) -> Result<(), RunError> {
        let Some(call) = turn.response.tool_calls.get(i) else {
            let dispatched = turn.response.tool_calls.len();
            self.phase = Phase::TurnEnd {
                turn,
                dispatched,
                halting: None,
            };
            return Ok(());
        };
        self.record.emit_as(
            ev::TOOL_INVOKED,
            &ToolInvoked {
                tool: &call.name,
                args: &call.arguments(),
                call_id: call.id(),
            },
            Some(turn.id),
            &call.name,
        )?;
        if let Some(bad) = call.invalid_arguments() {
            // The model sent arguments that are not a JSON object: it is told, the tool is not called.
            let why = bad.get("error").and_then(Value::as_str).unwrap_or("not a JSON object");
            let told = PluginError::InvalidInput(format!(
                "the arguments of this call could not be read ({why}); call {} again with its arguments as one JSON object",
                call.name
            ));
            return self.after_tool(turn, i, Some(Ok(Err(told))));
        }
        let tool = self
            .ladder
            .active(&self.tools)
            .find(|t| t.name == call.name)
            .map(|t| t.tool.clone());
        match tool {
            Some(tool) => {
                self.phase = Phase::ToolCall(turn, i, tool);
                Ok(())
            }
            None => self.after_tool(turn, i, None),
        }
    }

    /// Turns tool `i`'s outcome (`None`: no such tool at this tier) into the
    /// observation, records it, and runs the per-observation detectors.
    pub(super) fn after_tool(
        &mut self,
        turn: Turn,
        i: usize,
        outcome: Option<Called<(JsonObject, String)>>,
    ) -> Result<(), RunError> {
        let call = &turn.response.tool_calls[i];
        let (obs, content) = observation::record(&self.record, turn.id, &call.name, call.id(), outcome)?;
        let max = self.shaping.max_observation_chars;
        if let (Strategy::Extract, Some(max)) = (self.shaping.strategy, max) {
            let jobs = extract_jobs(&obs, max, &self.spec.query);
            if !jobs.is_empty() {
                let (obs, jobs) = (Arc::new(obs), Arc::new(jobs));
                self.phase = Phase::Extract { turn, i, obs, jobs };
                return Ok(());
            }
        }
        let content = match truncated(&obs, max) {
            Some(shaped) => serde_json::to_string(&shaped).unwrap_or_default(),
            None => content,
        };
        self.observed(turn, i, obs, content)
    }

    /// Tool call `i`'s observation reaches the model as `content` and the
    /// per-observation detectors as it is.
    pub(super) fn observed(&mut self, turn: Turn, i: usize, obs: JsonObject, content: String) -> Result<(), RunError> {
        let call = &turn.response.tool_calls[i];
        let message = json!({"role": "tool", "name": call.name, "call_id": call.id(), "content": content});
        self.push_message(message);
        let obs = Arc::new(Value::Object(obs));
        let halting = checkpoint(&self.record, turn.id, &self.checks, Some(obs), Scope::PerObservation)?;
        self.phase = match halting {
            Some(v) => Phase::TurnEnd {
                turn,
                dispatched: i + 1,
                halting: Some(v),
            },
            None => Phase::Tool(turn, i + 1),
        };
        Ok(())
    }

    /// Tells the model which calls a halting verdict skipped, runs the
    /// per-turn detectors, and acts on a halting verdict or goes on.
    pub(super) fn turn_end(&mut self, turn: Turn, dispatched: usize, halting: Option<Verdict>) -> Result<(), RunError> {
        for skipped in &turn.response.tool_calls[dispatched..] {
            let content = skipped_note(halting.as_ref());
            self.push_message(
                json!({"role": "tool", "name": skipped.name, "call_id": skipped.id(), "content": content}),
            );
        }
        let halting = match halting {
            Some(h) => Some(h),
            None => checkpoint(&self.record, turn.id, &self.checks, None, Scope::PerTurn)?,
        };
        match halting {
            Some(h) => self.halt(&h),
            None => self.next_step(),
        }
    }
}
