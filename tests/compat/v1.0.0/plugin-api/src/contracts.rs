//! The typed boundaries of a run: `TaskSpec` in, `Result` out, and the frozen
//! `Event` envelope every record on the log travels in. Pure serde types, no I/O;
//! the JSON they produce is the Python reference's, field for field.

use std::borrow::Cow;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use uuid::Uuid;

/// A JSON object: the shape of payloads, tool args and observations.
pub type JsonObject = Map<String, Value>;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The model finalised and every validator passed.
    Success,
    /// A detector asked for a higher tier than the run may reach, or a budget ran out.
    Escalate,
    /// The run cannot succeed (a terminal verdict, a truncated response, ...).
    Terminal,
}

/// The limits of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Budget {
    /// Model turns at most.
    pub max_steps: u32,
    /// Tokens (prompt + completion, as the provider reports them) at most.
    pub max_tokens: u64,
    /// Wall-clock seconds for the whole run.
    pub wall_time_s: u64,
    /// Tool calls in one model response at most (caps a runaway turn).
    pub max_tool_calls: u32,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_steps: 20,
            max_tokens: 200_000,
            wall_time_s: 120,
            max_tool_calls: 32,
        }
    }
}

/// The typed input to a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Identifies the task on the log; a fresh v4 id when not given.
    #[serde(default = "Uuid::new_v4")]
    pub task_id: Uuid,
    /// What the agent is asked to do.
    pub query: String,
    /// What the task is about (a URL, a path), if anything.
    #[serde(default)]
    pub target: Option<String>,
    /// The JSON Schema the result value must satisfy (`{}` for none).
    #[serde(default = "empty_object")]
    pub output_schema: Value,
    /// The run's limits.
    #[serde(default)]
    pub budget: Budget,
    /// The highest tool tier the run may climb to.
    #[serde(default = "default_max_tier")]
    pub max_tier: u32,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

fn default_max_tier() -> u32 {
    2
}

impl TaskSpec {
    /// A task with the given query and every other field at its default.
    pub fn new(query: impl Into<String>) -> Self {
        TaskSpec {
            task_id: Uuid::new_v4(),
            query: query.into(),
            target: None,
            output_schema: empty_object(),
            budget: Budget::default(),
            max_tier: default_max_tier(),
        }
    }
}

/// The typed output of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Result {
    /// How the run ended.
    pub status: Status,
    /// The extracted value, when there is one.
    #[serde(default)]
    pub value: Option<JsonObject>,
    /// Why the run did not succeed (a detector name, a budget), if it did not.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Why an [`Event`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Every event type lives in the `harness.` or the `data.` namespace.
    #[error("event type {0:?} must start with 'harness.' or 'data.'")]
    BadNamespace(String),
    /// A payload is a JSON object; this one is not.
    #[error("event payload must be a JSON object, got {0}")]
    PayloadNotObject(String),
}

/// Checks that an event type is namespaced under `harness.` or `data.`.
pub fn check_event_type(ty: &str) -> std::result::Result<(), EventError> {
    if ty.starts_with("harness.") || ty.starts_with("data.") {
        Ok(())
    } else {
        Err(EventError::BadNamespace(ty.to_owned()))
    }
}

/// An event's payload: kept as its JSON text (compact in memory, written to
/// sinks and across the boundary verbatim) and parsed on first access.
struct Payload {
    text: Box<RawValue>,
    parsed: OnceLock<JsonObject>,
}

impl Payload {
    fn from_text(text: Box<RawValue>) -> std::result::Result<Self, EventError> {
        if !text.get().trim_start().starts_with('{') {
            return Err(EventError::PayloadNotObject(text.get().chars().take(40).collect()));
        }
        Ok(Payload {
            text,
            parsed: OnceLock::new(),
        })
    }

    fn of<P: Serialize + ?Sized>(value: &P) -> std::result::Result<Self, EventError> {
        let text = serde_json::value::to_raw_value(value).map_err(|e| EventError::PayloadNotObject(e.to_string()))?;
        Payload::from_text(text)
    }

    fn get(&self) -> &JsonObject {
        // The text is a JSON object (checked when the payload was made).
        self.parsed
            .get_or_init(|| serde_json::from_str(self.text.get()).unwrap_or_default())
    }
}

impl Clone for Payload {
    fn clone(&self) -> Self {
        Payload {
            text: self.text.clone(),
            parsed: self.parsed.clone(),
        }
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.text.get() == other.text.get() || self.get() == other.get()
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text.get())
    }
}

/// The append-only record envelope.
///
/// Fields are private so that an event with a type outside `harness.`/`data.`
/// cannot exist: [`Event::new`] and deserialization both refuse it. The
/// payload is held as JSON text and parsed on first access.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    event_id: Uuid,
    trace_id: Uuid,
    task_id: Uuid,
    parent_id: Option<Uuid>,
    ty: Cow<'static, str>,
    /// Microseconds since the Unix epoch (the reference's precision): one
    /// clock read, no calendar arithmetic until someone asks for a date.
    ts_us: i64,
    source: Cow<'static, str>,
    payload: Payload,
    schema_version: u32,
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Event", 9)?;
        st.serialize_field("event_id", &self.event_id)?;
        st.serialize_field("trace_id", &self.trace_id)?;
        st.serialize_field("task_id", &self.task_id)?;
        st.serialize_field("parent_id", &self.parent_id)?;
        st.serialize_field("type", &self.ty)?;
        st.serialize_field("ts", &TsText::of(self.ts_us))?;
        st.serialize_field("source", &self.source)?;
        st.serialize_field("payload", &self.payload.text)?;
        st.serialize_field("schema_version", &self.schema_version)?;
        st.end()
    }
}

/// Timestamps travel as RFC 3339 with microseconds and `Z`
/// (`2026-11-25T10:00:00.123456Z`), as the Python reference writes them, so
/// either side reads the other's logs. Formatted by hand into a stack buffer:
/// events are serialized on every durable append and boundary crossing.
struct TsText {
    buf: [u8; 27],
    /// `buf` holds the text; otherwise (a year outside 0..=9999) chrono's.
    fixed: bool,
    ts: DateTime<Utc>,
}

impl TsText {
    fn of(us: i64) -> Self {
        use chrono::{Datelike, Timelike};
        let ts = DateTime::from_timestamp_micros(us).unwrap_or_default();
        let mut buf = *b"0000-00-00T00:00:00.000000Z";
        let fixed = (0..=9999).contains(&ts.year());
        if fixed {
            let mut put = |at: usize, width: usize, mut v: u32| {
                for i in (at..at + width).rev() {
                    buf[i] = b'0' + (v % 10) as u8;
                    v /= 10;
                }
            };
            put(0, 4, ts.year() as u32);
            put(5, 2, ts.month());
            put(8, 2, ts.day());
            put(11, 2, ts.hour());
            put(14, 2, ts.minute());
            put(17, 2, ts.second());
            put(20, 6, ts.timestamp_subsec_micros());
        }
        TsText { buf, fixed, ts }
    }

    fn with<T>(&self, f: impl FnOnce(&str) -> T) -> T {
        if self.fixed {
            f(std::str::from_utf8(&self.buf).expect("ASCII digits"))
        } else {
            f(&self.ts.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        }
    }
}

impl Serialize for TsText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.with(|text| s.serialize_str(text))
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let w = EventWire::deserialize(d)?;
        check_event_type(&w.ty).map_err(serde::de::Error::custom)?;
        let payload = match w.payload {
            Some(text) => Payload::from_text(text).map_err(serde::de::Error::custom)?,
            None => Payload::of(&JsonObject::new()).map_err(serde::de::Error::custom)?,
        };
        Ok(Event {
            event_id: w.event_id,
            trace_id: w.trace_id,
            task_id: w.task_id,
            parent_id: w.parent_id,
            ty: Cow::Owned(w.ty),
            ts_us: w.ts.timestamp_micros(),
            source: Cow::Owned(w.source),
            payload,
            schema_version: w.schema_version,
        })
    }
}

#[derive(Deserialize)]
struct EventWire {
    #[serde(default = "Uuid::new_v4")]
    event_id: Uuid,
    trace_id: Uuid,
    task_id: Uuid,
    #[serde(default)]
    parent_id: Option<Uuid>,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default = "Utc::now")]
    ts: DateTime<Utc>,
    source: String,
    #[serde(default)]
    payload: Option<Box<RawValue>>,
    #[serde(default = "default_schema_version")]
    schema_version: u32,
}

/// The system clock in microseconds since the Unix epoch.
fn now_micros() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(before) => -(before.duration().as_micros() as i64),
    }
}

fn default_schema_version() -> u32 {
    1
}

impl Event {
    /// Builds an event with a fresh `event_id` and the current time. Type and
    /// source may be `&'static str` (no copy) or `String`.
    pub fn new(
        trace_id: Uuid,
        task_id: Uuid,
        parent_id: Option<Uuid>,
        ty: impl Into<Cow<'static, str>>,
        source: impl Into<Cow<'static, str>>,
        payload: JsonObject,
    ) -> std::result::Result<Self, EventError> {
        Event::with_payload(trace_id, task_id, parent_id, ty, source, &payload)
    }

    /// Like [`Event::new`], serializing any value whose JSON is an object
    /// (e.g. a `#[derive(Serialize)]` struct) straight into the payload.
    pub fn with_payload<P: Serialize + ?Sized>(
        trace_id: Uuid,
        task_id: Uuid,
        parent_id: Option<Uuid>,
        ty: impl Into<Cow<'static, str>>,
        source: impl Into<Cow<'static, str>>,
        payload: &P,
    ) -> std::result::Result<Self, EventError> {
        let ty = ty.into();
        check_event_type(&ty)?;
        Ok(Event {
            event_id: Uuid::new_v4(),
            trace_id,
            task_id,
            parent_id,
            ty,
            ts_us: now_micros(),
            source: source.into(),
            payload: Payload::of(payload)?,
            schema_version: 1,
        })
    }

    /// The event's unique id (appends are idempotent on it).
    pub fn event_id(&self) -> Uuid {
        self.event_id
    }
    /// The run this event belongs to.
    pub fn trace_id(&self) -> Uuid {
        self.trace_id
    }
    /// The task this event belongs to.
    pub fn task_id(&self) -> Uuid {
        self.task_id
    }
    /// The event this one answers, if any.
    pub fn parent_id(&self) -> Option<Uuid> {
        self.parent_id
    }
    /// The namespaced type, e.g. `harness.tool.invoked`.
    pub fn event_type(&self) -> &str {
        &self.ty
    }
    /// When the event was built (to the microsecond).
    pub fn ts(&self) -> DateTime<Utc> {
        // Every stored value came from a `DateTime` or the system clock, so it is in range.
        DateTime::from_timestamp_micros(self.ts_us).unwrap_or_default()
    }
    /// [`Event::ts`] as it travels: RFC 3339, microseconds, `Z`.
    pub fn ts_text(&self) -> String {
        TsText::of(self.ts_us).with(str::to_owned)
    }
    /// Who emitted the event.
    pub fn source(&self) -> &str {
        &self.source
    }
    /// The event's data (parsed from its JSON text on first access).
    pub fn payload(&self) -> &JsonObject {
        self.payload.get()
    }
    /// The payload as JSON text, exactly as stored.
    pub fn payload_json(&self) -> &str {
        self.payload.text.get()
    }
    /// The envelope's schema version (1).
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_outside_namespaces_is_refused_at_construction() {
        let id = Uuid::new_v4();
        let err = Event::new(id, id, None, "tool.invoked", "t", JsonObject::new()).unwrap_err();
        assert_eq!(err, EventError::BadNamespace("tool.invoked".into()));
        assert!(Event::new(id, id, None, "data.x", "t", JsonObject::new()).is_ok());
    }

    #[test]
    fn event_type_outside_namespaces_is_refused_at_deserialization() {
        let id = Uuid::new_v4();
        let good = Event::new(id, id, None, "harness.turn.started", "t", JsonObject::new()).unwrap();
        let mut json = serde_json::to_value(&good).unwrap();
        let back: Event = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, good);
        json["type"] = "audit.x".into();
        let err = serde_json::from_value::<Event>(json).unwrap_err();
        assert!(
            err.to_string().contains("must start with 'harness.' or 'data.'"),
            "{err}"
        );
    }

    #[test]
    fn payload_travels_verbatim_and_must_be_an_object() {
        let json = r#"{"event_id": "00000000-0000-4000-8000-000000000003", "trace_id": "00000000-0000-4000-8000-000000000001",
            "task_id": "00000000-0000-4000-8000-000000000001", "type": "harness.a", "source": "py",
            "ts": "2026-11-25T10:00:00.123456Z", "payload": {"b": 1, "a": [true, null]}}"#;
        let e: Event = serde_json::from_str(json).unwrap();
        assert_eq!(e.payload_json(), r#"{"b": 1, "a": [true, null]}"#);
        assert_eq!(e.payload()["a"], serde_json::json!([true, null]));
        let out = serde_json::to_value(&e).unwrap();
        assert_eq!(out["payload"], serde_json::json!({"a": [true, null], "b": 1}));
        assert_eq!(out["ts"], "2026-11-25T10:00:00.123456Z");
        let bad = json.replace(r#"{"b": 1, "a": [true, null]}"#, "[1]");
        assert!(serde_json::from_str::<Event>(&bad)
            .unwrap_err()
            .to_string()
            .contains("must be a JSON object"));
        let id = Uuid::new_v4();
        assert!(matches!(
            Event::with_payload(id, id, None, "data.x", "t", &3),
            Err(EventError::PayloadNotObject(_))
        ));
    }

    #[test]
    fn timestamps_format_like_chrono_at_every_edge() {
        let chrono_text = |us: i64| {
            DateTime::from_timestamp_micros(us)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string()
        };
        let edges = [
            0,                       // the epoch
            -1,                      // one microsecond before it
            1_764_064_800_123_456,   // 2025-11-25T10:00:00.123456Z
            951_782_400_000_001,     // 2000-02-29 (leap day), 1 us
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999Z, the last fixed-width instant
            253_402_300_800_000_000, // year 10000: chrono's own text
            -62_167_219_200_000_000, // 0000-01-01T00:00:00Z
            -62_167_219_200_000_001, // year -1: chrono's own text
        ];
        for us in edges {
            let text = TsText::of(us).with(str::to_owned);
            assert_eq!(text, chrono_text(us), "{us}");
        }
        // And a spread of ordinary instants.
        for k in 0..10_000i64 {
            let us = k * 7_919_000_003_117 % 4_102_444_800_000_000; // 1970..2100
            assert_eq!(TsText::of(us).with(str::to_owned), chrono_text(us), "{us}");
        }
        let id = Uuid::new_v4();
        let e = Event::new(id, id, None, "harness.a", "t", JsonObject::new()).unwrap();
        let wire = serde_json::to_value(&e).unwrap();
        assert_eq!(wire["ts"], e.ts_text());
        let back: Event = serde_json::from_value(wire).unwrap();
        assert_eq!(back.ts(), e.ts(), "a timestamp survives the wire exactly");
    }

    #[test]
    fn task_spec_defaults_match_the_reference() {
        let spec: TaskSpec = serde_json::from_str(r#"{"query": "q"}"#).unwrap();
        assert_eq!(spec.budget, Budget::default());
        assert_eq!(spec.budget.max_steps, 20);
        assert_eq!(spec.max_tier, 2);
        assert_eq!(spec.output_schema, serde_json::json!({}));
        assert!(serde_json::from_str::<TaskSpec>(r#"{"target": "x"}"#).is_err());
    }

    #[test]
    fn result_status_is_snake_case_on_the_wire() {
        let r = Result {
            status: Status::Escalate,
            value: None,
            reason: Some("empty".into()),
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["status"], "escalate");
    }
}
