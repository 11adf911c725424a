//! Testing a plugin the way the host will call it, from the plugin's own
//! `cargo test`: a run context you fill ([`TestContext`]), and one function per
//! kind ([`tool`], [`detector`], [`validator`], [`provider`], ...) that takes
//! your plugin through the real export and import path in-process — the
//! declaration, the constructor with its JSON config, the FFI object, every
//! value as JSON across the boundary, panics caught — and hands back the
//! port trait the host's loop holds.
//!
//! ```
//! use zu_plugin_api::prelude::*;
//! use zu_plugin_api::testing::{self, TestContext};
//!
//! /// Flags an empty observation.
//! pub struct Empty;
//! impl Plugin for Empty {
//!     const NAME: &'static str = "empty";
//!     fn new(_: Value) -> Result<Self, PluginError> { Ok(Empty) }
//! }
//! impl Detector for Empty {
//!     fn scope(&self) -> Scope { Scope::PerObservation }
//!     fn inspect(&self, ctx: &dyn RunContext) -> Result<Option<Verdict>, PluginError> {
//!         let empty = ctx.observation().and_then(Value::as_object).is_some_and(|o| o.is_empty());
//!         Ok(empty.then(|| Verdict::new(Severity::Retry, "empty", "the tool returned nothing")))
//!     }
//! }
//!
//! let detector = testing::detector::<Empty>(Value::Null).unwrap();
//! let ctx = TestContext::new("q").with_observation(json!({}));
//! assert_eq!(detector.inspect(&ctx).unwrap().unwrap().severity, Severity::Retry);
//! ```

use std::sync::Arc;

use serde_json::Value;

use crate::contracts::{Event, JsonObject, TaskSpec};
use crate::filter::{EventFilter, StoredEvent};
use crate::ports::{Plugin, PluginError, RunContext};

/// A run context for tests: a task spec, an observation, and a log of events
/// you choose. `query` filters and pages them exactly as the host does.
#[derive(Debug, Clone)]
pub struct TestContext {
    spec: TaskSpec,
    observation: Option<Value>,
    events: Vec<Event>,
}

impl TestContext {
    /// A context for a task asking `query`, with no observation and no events.
    pub fn new(query: impl Into<String>) -> Self {
        TestContext::with_spec(TaskSpec::new(query))
    }

    /// A context for `spec`.
    pub fn with_spec(spec: TaskSpec) -> Self {
        TestContext {
            spec,
            observation: None,
            events: Vec::new(),
        }
    }

    /// Sets the observation being inspected.
    pub fn with_observation(mut self, observation: Value) -> Self {
        self.observation = Some(observation);
        self
    }

    /// Appends an event of this run (its trace and task are the spec's).
    ///
    /// # Panics
    /// If `ty` is not namespaced (`harness.` or `data.`).
    pub fn with_event(mut self, ty: &str, payload: Value) -> Self {
        let payload = match payload {
            Value::Object(o) => o,
            Value::Null => JsonObject::new(),
            other => JsonObject::from_iter([("value".to_owned(), other)]),
        };
        let id = self.spec.task_id;
        let event = Event::new(id, id, None, ty.to_owned(), "test", payload)
            .unwrap_or_else(|e| panic!("TestContext::with_event({ty:?}): {e}"));
        self.events.push(event);
        self
    }

    /// Appends events as they are.
    pub fn with_events(mut self, events: impl IntoIterator<Item = Event>) -> Self {
        self.events.extend(events);
        self
    }
}

impl RunContext for TestContext {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }
    fn observation(&self) -> Option<&Value> {
        self.observation.as_ref()
    }
    fn event_count(&self) -> u64 {
        self.events.len() as u64
    }
    fn query(&self, filter: &EventFilter, limit: Option<u64>, after_seq: u64) -> Result<Vec<StoredEvent>, PluginError> {
        Ok(self
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| (i as u64 + 1, e))
            .filter(|(seq, e)| *seq > after_seq && filter.matches(e))
            .take(limit.map_or(usize::MAX, |l| l as usize))
            .map(|(seq, e)| StoredEvent { seq, event: e.clone() })
            .collect())
    }
}

macro_rules! round_trips {
    ($($(#[$doc:meta])* $Kind:ident { name: $name:ident, object: $o:ident, getter: $getter:ident, version: $v:literal,
        port: $port:ident, $($rest:tt)* }),* $(,)?) => {
        $(
            #[doc = concat!(
                "Builds plugin `T` from `config` and returns it as the host holds a ",
                stringify!($name), " plugin loaded from a library: declared by the export macro, ",
                "constructed through its FFI constructor, every call crossing the boundary as JSON."
            )]
            pub fn $getter<T: Plugin + crate::ports::$port>(config: Value) -> Result<Arc<dyn crate::ports::$port>, PluginError> {
                use crate::ffi::{kind, FfiKind};
                let declaration = kind::$name::declare::<T>();
                assert_eq!(declaration.kind(), stringify!($name));
                // SAFETY: the declaration was built in this process from the
                // same `Object` type, so kind and layout match by construction.
                let object = unsafe { declaration.construct::<kind::$name::Object>(&config.to_string()) }?;
                Ok(object.import())
            }
        )*
    };
}

crate::__for_each_kind!(round_trips);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::FilterField;
    use crate::prelude::*;

    struct Upper;
    impl Plugin for Upper {
        const NAME: &'static str = "upper";
        fn new(config: Value) -> Result<Self, PluginError> {
            match config {
                Value::Null => Ok(Upper),
                _ => Err(PluginError::invalid("upper takes no config")),
            }
        }
    }
    impl Tool for Upper {
        fn call(&self, ctx: &dyn RunContext, args: JsonObject) -> Result<JsonObject, PluginError> {
            if args.contains_key("boom") {
                panic!("asked to explode");
            }
            let text = args.get("text").and_then(Value::as_str).unwrap_or_default();
            let seen = ctx.event_count();
            Ok(json!({"text": text.to_uppercase(), "events": seen})
                .as_object()
                .cloned()
                .unwrap())
        }
    }

    #[test]
    fn a_tool_round_trips_through_the_boundary_with_its_context() {
        let tool = super::tool::<Upper>(Value::Null).unwrap();
        let ctx = TestContext::new("q")
            .with_event("harness.a", json!({}))
            .with_event("harness.b", json!({}));
        let out = tool
            .call(&ctx, json!({"text": "hi"}).as_object().cloned().unwrap())
            .unwrap();
        assert_eq!(Value::Object(out), json!({"text": "HI", "events": 2}));
        let err = tool
            .call(&ctx, json!({"boom": 1}).as_object().cloned().unwrap())
            .unwrap_err();
        assert_eq!(err, PluginError::Panicked("asked to explode".into()));
    }

    #[test]
    fn a_constructor_error_comes_back_as_the_host_would_see_it() {
        let err = super::tool::<Upper>(json!({"x": 1})).err().unwrap();
        assert_eq!(err, PluginError::InvalidInput("upper takes no config".into()));
    }

    #[test]
    fn the_test_context_filters_and_pages_like_the_host() {
        let ctx = TestContext::new("q")
            .with_event("harness.a", json!({}))
            .with_event("harness.b", json!({}))
            .with_event("harness.a", json!({"n": 3}));
        let a = EventFilter::all().with(FilterField::Type, Some("harness.a"));
        let seqs: Vec<u64> = ctx.query(&a, None, 0).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 3]);
        assert_eq!(ctx.query(&a, Some(1), 1).unwrap()[0].seq, 3);
        assert!(ctx.query(&a, None, 3).unwrap().is_empty());
    }
}
