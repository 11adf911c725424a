//! The event filter contract shared by every sink: equality on six indexed
//! fields, where a null value means "is null", and nothing else.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::contracts::{Event, JsonObject};

/// The fields an event filter may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FilterField {
    /// `event_id`
    EventId,
    /// `trace_id`
    TraceId,
    /// `task_id`
    TaskId,
    /// `parent_id`
    ParentId,
    /// `type`
    Type,
    /// `source`
    Source,
}

/// The keys a filter may use, in the order error messages list them.
pub const ALLOWED_EVENT_FILTERS: [&str; 6] = ["event_id", "trace_id", "task_id", "parent_id", "type", "source"];

impl FilterField {
    /// The field's key in a JSON filter and its column name.
    pub const fn as_str(self) -> &'static str {
        match self {
            FilterField::EventId => "event_id",
            FilterField::TraceId => "trace_id",
            FilterField::TaskId => "task_id",
            FilterField::ParentId => "parent_id",
            FilterField::Type => "type",
            FilterField::Source => "source",
        }
    }

    fn parse(key: &str) -> Option<Self> {
        Some(match key {
            "event_id" => FilterField::EventId,
            "trace_id" => FilterField::TraceId,
            "task_id" => FilterField::TaskId,
            "parent_id" => FilterField::ParentId,
            "type" => FilterField::Type,
            "source" => FilterField::Source,
            _ => return None,
        })
    }

    /// The field's value on an event, as text (`None` for a null parent).
    pub fn value_of(self, event: &Event) -> Option<String> {
        match self {
            FilterField::EventId => Some(event.event_id().to_string()),
            FilterField::TraceId => Some(event.trace_id().to_string()),
            FilterField::TaskId => Some(event.task_id().to_string()),
            FilterField::ParentId => event.parent_id().map(|p| p.to_string()),
            FilterField::Type => Some(event.event_type().to_owned()),
            FilterField::Source => Some(event.source().to_owned()),
        }
    }
}

/// A filter that names something other than the six fields, or a value that is
/// neither a string nor null.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A key outside the allowed six.
    #[error("cannot filter events on {key:?}: allowed keys are event_id, trace_id, task_id, parent_id, type, source")]
    UnknownKey {
        /// The offending key.
        key: String,
    },
    /// A value that is not a string or null.
    #[error("filter value for {key:?} must be a string or null, got {found}")]
    BadValue {
        /// The key whose value is wrong.
        key: String,
        /// The JSON that was given.
        found: String,
    },
}

/// An equality filter over events; the empty filter matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    terms: Vec<(FilterField, Option<String>)>,
}

impl EventFilter {
    /// Matches every event.
    pub fn all() -> Self {
        EventFilter::default()
    }

    /// Adds `field == value` (`None`: the field is null).
    pub fn with(mut self, field: FilterField, value: Option<impl Into<String>>) -> Self {
        self.terms.retain(|(f, _)| *f != field);
        self.terms.push((field, value.map(Into::into)));
        self
    }

    /// Parses a JSON object filter, refusing unknown keys.
    pub fn from_json(obj: &JsonObject) -> Result<Self, FilterError> {
        let mut filter = EventFilter::default();
        for (key, value) in obj {
            let field = FilterField::parse(key).ok_or_else(|| FilterError::UnknownKey { key: key.clone() })?;
            let value = match value {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                other => {
                    return Err(FilterError::BadValue {
                        key: key.clone(),
                        found: other.to_string(),
                    })
                }
            };
            filter = filter.with(field, value);
        }
        Ok(filter)
    }

    /// The filter as a JSON object.
    pub fn to_json(&self) -> JsonObject {
        self.terms
            .iter()
            .map(|(f, v)| (f.as_str().to_owned(), v.clone().map_or(Value::Null, Value::String)))
            .collect()
    }

    /// The terms, in the order they were added.
    pub fn terms(&self) -> &[(FilterField, Option<String>)] {
        &self.terms
    }

    /// The value the filter requires of `field`: `None` if unconstrained,
    /// `Some(None)` if it must be null.
    pub fn get(&self, field: FilterField) -> Option<Option<&str>> {
        self.terms.iter().find(|(f, _)| *f == field).map(|(_, v)| v.as_deref())
    }

    /// Whether `event` satisfies every term.
    pub fn matches(&self, event: &Event) -> bool {
        self.terms.iter().all(|(field, want)| match field {
            FilterField::Type => want.as_deref() == Some(event.event_type()),
            FilterField::Source => want.as_deref() == Some(event.source()),
            _ => field.value_of(event).as_deref() == want.as_deref(),
        })
    }
}

/// An event as a sink holds it: with its 1-based insertion sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Position in the log, from 1.
    pub seq: u64,
    /// The event.
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn unknown_key_is_refused_with_the_allowed_keys() {
        let obj: JsonObject = serde_json::from_str(r#"{"kind": "x"}"#).unwrap();
        let err = EventFilter::from_json(&obj).unwrap_err();
        assert_eq!(err, FilterError::UnknownKey { key: "kind".into() });
        assert!(err
            .to_string()
            .contains("event_id, trace_id, task_id, parent_id, type, source"));
    }

    #[test]
    fn null_means_is_null() {
        let id = Uuid::new_v4();
        let root = Event::new(id, id, None, "harness.a", "s", JsonObject::new()).unwrap();
        let child = Event::new(id, id, Some(id), "harness.a", "s", JsonObject::new()).unwrap();
        let obj: JsonObject = serde_json::from_str(r#"{"parent_id": null, "type": "harness.a"}"#).unwrap();
        let f = EventFilter::from_json(&obj).unwrap();
        assert!(f.matches(&root));
        assert!(!f.matches(&child));
        assert_eq!(EventFilter::from_json(&f.to_json()).unwrap(), f);
    }

    #[test]
    fn non_string_value_is_refused() {
        let obj: JsonObject = serde_json::from_str(r#"{"type": 3}"#).unwrap();
        assert!(matches!(
            EventFilter::from_json(&obj),
            Err(FilterError::BadValue { .. })
        ));
    }
}
