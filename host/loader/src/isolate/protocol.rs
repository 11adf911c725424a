//! The frames between the host and a plugin's process: construct a plugin,
//! call one of its methods (with the run-context callbacks the plugin makes
//! meanwhile), and the answers. JSON, one frame each way per step.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use zu_plugin_api::contracts::JsonObject;
use zu_plugin_api::ports::PluginError;
use zu_plugin_api::version::Kind;
use zu_runtime::LoadError;

/// What the host sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ToChild {
    /// Construct plugin `kind`/`name` of the library with `config`.
    Construct { kind: Kind, name: String, config: Value },
    /// Call `method` of plugin `kind`/`name` with `args`.
    Call {
        kind: Kind,
        name: String,
        method: String,
        args: Value,
    },
    /// The answer to the child's last callback.
    Answer { value: Result<Value, PluginError> },
}

/// What the child sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FromChild {
    /// The plugin was constructed, or why not.
    Constructed { error: Option<LoadError> },
    /// The call's result.
    Done { result: Result<Value, PluginError> },
    /// The plugin asks the host about the run, in the middle of a call.
    Callback(Callback),
}

/// A run-context question from a plugin.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum Callback {
    /// The task spec.
    Spec,
    /// The observation being inspected.
    Observation,
    /// How many events the run's log holds.
    EventCount,
    /// Events matching a filter.
    Query {
        filter: JsonObject,
        limit: Option<u64>,
        after_seq: u64,
    },
}

/// A provider turn across the pipe: only what is new since the turn this
/// process already holds (`base` messages of `conversation`), so a turn
/// costs the same at step 1000 as at step 1.
#[derive(Debug, Serialize, Deserialize)]
pub struct Turn {
    pub conversation: u64,
    pub base: usize,
    pub messages: Vec<Value>,
    /// The tool schemas, when they changed since the previous turn.
    pub tools: Option<Vec<Value>>,
    pub params: JsonObject,
}

/// The message of the error a child answers when it does not hold the
/// conversation a turn continues: the host resends it whole.
pub const RESYNC: &str = "resync: the plugin process does not hold this conversation";

/// Encodes a frame.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("frames are plain data")
}
