//! The frames between the host and a plugin's process: construct a plugin,
//! call one of its methods (with the run-context callbacks the plugin makes
//! meanwhile), and the answers. JSON, one frame each way per step.

use crate::sandbox::Applied;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use zu_plugin_api::contracts::JsonObject;
use zu_plugin_api::ports::PluginError;
use zu_plugin_api::version::Kind;
use zu_runtime::LoadError;

/// JSON carried through a frame as it is (no value tree built and torn down
/// on the way).
pub type Raw = Box<RawValue>;

/// `value` as raw JSON.
pub fn raw<T: Serialize + ?Sized>(value: &T) -> Result<Raw, PluginError> {
    serde_json::value::to_raw_value(value).map_err(|e| PluginError::failed(format!("cannot encode: {e}")))
}

/// Raw JSON read as a `T`.
pub fn read<T: serde::de::DeserializeOwned>(raw: &RawValue, what: &str) -> Result<T, PluginError> {
    serde_json::from_str(raw.get()).map_err(|e| PluginError::invalid(format!("malformed {what}: {e}")))
}

/// What the host sends. (Externally tagged: raw JSON cannot pass through
/// serde's buffering of internally tagged enums.)
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToChild {
    /// Construct plugin `kind`/`name` of the library with `config`.
    Construct { kind: Kind, name: String, config: Value },
    /// Call `method` of plugin `kind`/`name` with `args`.
    Call {
        kind: Kind,
        name: String,
        method: String,
        args: Raw,
    },
    /// The answer to the child's last callback.
    Answer { value: Result<Value, PluginError> },
}

/// What the child sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromChild {
    /// The plugin was constructed, or why not; and what the process's sandbox enforced.
    Constructed {
        error: Option<LoadError>,
        #[serde(default)]
        applied: Option<Applied>,
    },
    /// The call's result.
    Done { result: Result<Raw, PluginError> },
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
    /// The request's `time_left_ms`.
    #[serde(default)]
    pub time_left_ms: Option<u64>,
}

/// A provider turn's answer: the response and the model id the provider
/// reports after it.
#[derive(Debug, Serialize, Deserialize)]
pub struct TurnAnswer<R> {
    pub response: R,
    pub model: Option<String>,
}

/// The message of the error a child answers when it does not hold the
/// conversation a turn continues: the host resends it whole.
pub const RESYNC: &str = "resync: the plugin process does not hold this conversation";

/// Encodes a frame.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("frames are plain data")
}
