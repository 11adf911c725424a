//! The on-final validators `schema` (the result must satisfy the task's
//! `output_schema`, as JSON Schema) and `grounding` (every extracted value
//! must appear, as a standalone token, in content the run retrieved), ported
//! from the reference `zu-checks` 0.8.0. Grounding reads the run's
//! `data.source.fetched` events through the host's run context.

#![forbid(unsafe_code)]

use zu_plugin_api::events::CONTENT_KEYS;
use zu_plugin_api::events::SOURCE_FETCHED;
use zu_plugin_api::filter::FilterField;
use zu_plugin_api::prelude::*;

/// Checks the result value against the task's `output_schema`.
pub struct SchemaValidator;

impl Plugin for SchemaValidator {
    const NAME: &'static str = "schema";
    fn new(_config: Value) -> Result<Self, PluginError> {
        Ok(SchemaValidator)
    }
}

impl Validator for SchemaValidator {
    fn check(&self, result: &RunResult, ctx: &dyn RunContext) -> Result<Option<Verdict>, PluginError> {
        let schema = &ctx.spec().output_schema;
        if schema.is_null() || schema.as_object().is_some_and(|o| o.is_empty()) {
            return Ok(None);
        }
        let validator = match jsonschema::validator_for(schema) {
            Ok(v) => v,
            Err(e) => {
                // A broken schema cannot be fixed by retrying.
                return Ok(Some(Verdict::new(
                    Severity::Terminal,
                    Self::NAME,
                    format!("invalid output_schema: {e}"),
                )));
            }
        };
        let instance = result.value.clone().map_or(Value::Null, Value::Object);
        let first_error = validator.iter_errors(&instance).next().map(|e| e.to_string());
        Ok(first_error.map(|detail| Verdict::new(Severity::Retry, Self::NAME, detail)))
    }
}

/// Checks that every extracted value appears in retrieved content.
pub struct GroundingValidator;

impl Plugin for GroundingValidator {
    const NAME: &'static str = "grounding";
    fn new(_config: Value) -> Result<Self, PluginError> {
        Ok(GroundingValidator)
    }
}

/// Collapses whitespace and lowercases, as the reference does.
fn normalize(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// Separators that join a number to more digits: decimal/thousands and the
/// connectors of dates, versions, times, ranges.
fn is_num_separator(c: char) -> bool {
    matches!(c, '.' | ',' | '-' | '/' | ':')
}

/// Are the characters around `corpus[lo..hi]` token boundaries?
fn standalone(corpus: &str, lo: usize, hi: usize) -> bool {
    let mut before_iter = corpus[..lo].chars().rev();
    let before = before_iter.next();
    let before2 = before_iter.next();
    let mut after_iter = corpus[hi..].chars();
    let after = after_iter.next();
    let after2 = after_iter.next();
    if before.is_some_and(char::is_alphanumeric) || after.is_some_and(char::is_alphanumeric) {
        return false;
    }
    if before.is_some_and(is_num_separator) && before2.is_some_and(char::is_numeric) {
        return false;
    }
    if after.is_some_and(is_num_separator) && after2.is_some_and(char::is_numeric) {
        return false;
    }
    true
}

/// Is the normalized value present in the corpus on token boundaries?
fn grounded(leaf: &str, corpus: &str) -> bool {
    if leaf.is_empty() {
        return false;
    }
    let mut start = 0;
    while let Some(i) = corpus[start..].find(leaf).map(|i| i + start) {
        if standalone(corpus, i, i + leaf.len()) {
            return true;
        }
        start = i + corpus[i..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// Every scalar leaf of a value as text; booleans and nulls are not groundable.
fn leaves(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => {
            let t = s.trim();
            if !t.is_empty() {
                out.push(t.to_owned());
            }
        }
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(a) => a.iter().for_each(|v| leaves(v, out)),
        Value::Object(o) => o.values().for_each(|v| leaves(v, out)),
        Value::Bool(_) | Value::Null => {}
    }
}

fn content_of(obj: &JsonObject, chunks: &mut Vec<String>) {
    for k in CONTENT_KEYS {
        if let Some(Value::String(s)) = obj.get(k) {
            chunks.push(s.clone());
        }
    }
}

/// Everything the run fetched (its `data.source.fetched` events), falling back
/// to the current observation only when nothing was fetched.
fn retrieved_corpus(ctx: &dyn RunContext) -> Result<String, PluginError> {
    let mut chunks = Vec::new();
    let fetched = EventFilter::all().with(FilterField::Type, Some(SOURCE_FETCHED));
    for stored in ctx.query(&fetched, None, 0)? {
        content_of(stored.event.payload(), &mut chunks);
    }
    if chunks.is_empty() {
        if let Some(Value::Object(obs)) = ctx.observation() {
            content_of(obs, &mut chunks);
        }
    }
    Ok(chunks.join("\n"))
}

impl Validator for GroundingValidator {
    fn check(&self, result: &RunResult, ctx: &dyn RunContext) -> Result<Option<Verdict>, PluginError> {
        let Some(value) = result.value.as_ref().filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let corpus = normalize(&retrieved_corpus(ctx)?);
        for (field, field_value) in value {
            let mut found = Vec::new();
            leaves(field_value, &mut found);
            if found.iter().any(|leaf| !grounded(&normalize(leaf), &corpus)) {
                let detail = format!("value for '{field}' not found in retrieved content");
                return Ok(Some(Verdict::new(Severity::Retry, Self::NAME, detail)));
            }
        }
        Ok(None)
    }
}

#[cfg(feature = "export")]
zu_plugin_api::export_plugins! { validators: [SchemaValidator, GroundingValidator] }

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;
    use zu_plugin_api::filter::StoredEvent;

    struct Ctx {
        spec: TaskSpec,
        fetched: Vec<&'static str>,
        observation: Option<Value>,
    }

    impl RunContext for Ctx {
        fn spec(&self) -> &TaskSpec {
            &self.spec
        }
        fn observation(&self) -> Option<&Value> {
            self.observation.as_ref()
        }
        fn event_count(&self) -> u64 {
            self.fetched.len() as u64
        }
        fn query(&self, filter: &EventFilter, _: Option<u64>, _: u64) -> Result<Vec<StoredEvent>, PluginError> {
            let id = Uuid::new_v4();
            let mut out = Vec::new();
            for (i, text) in self.fetched.iter().enumerate() {
                let payload = json!({"tool": "t", "text": text}).as_object().cloned().unwrap();
                let event = Event::new(id, id, None, SOURCE_FETCHED, "t", payload).unwrap();
                let decoy = Event::new(
                    id,
                    id,
                    None,
                    "harness.turn.completed",
                    "t",
                    json!({"text": "fabricated 99"}).as_object().cloned().unwrap(),
                )
                .unwrap();
                for (seq, e) in [(2 * i as u64 + 1, decoy), (2 * i as u64 + 2, event)] {
                    if filter.matches(&e) {
                        out.push(StoredEvent { seq, event: e });
                    }
                }
            }
            Ok(out)
        }
    }

    fn result(v: Value) -> RunResult {
        RunResult {
            status: Status::Success,
            value: v.as_object().cloned(),
            reason: None,
        }
    }

    fn ground(fetched: Vec<&'static str>, v: Value) -> Option<Verdict> {
        let ctx = Ctx {
            spec: TaskSpec::new("q"),
            fetched,
            observation: None,
        };
        GroundingValidator.check(&result(v), &ctx).unwrap()
    }

    #[test]
    fn values_must_appear_as_standalone_tokens_in_fetched_content() {
        assert!(ground(vec!["The price is $9.00 today"], json!({"price": "$9.00"})).is_none());
        assert!(ground(vec!["Born in 1985."], json!({"year": 1985})).is_none());
        assert!(ground(vec!["Qty: 5."], json!({"qty": 5})).is_none());
        assert!(ground(vec!["  Hello\n  WORLD "], json!({"greeting": "hello world"})).is_none());
        for (text, value) in [
            ("Born in 1985", json!({"n": "5"})),
            ("pi is 3.14", json!({"n": "14"})),
            ("on 12-2024", json!({"m": "12"})),
            ("at 12:30", json!({"min": 30})),
            ("café", json!({"w": "caf"})),
        ] {
            let v =
                ground(vec![text], value.clone()).unwrap_or_else(|| panic!("{value} in {text:?} should not ground"));
            assert_eq!(v.severity, Severity::Retry);
        }
    }

    #[test]
    fn the_models_own_text_never_grounds_and_nested_values_are_checked() {
        let v = ground(vec!["nothing relevant"], json!({"answer": "fabricated 99"})).unwrap();
        assert_eq!(
            v.detail.as_deref(),
            Some("value for 'answer' not found in retrieved content")
        );
        assert!(ground(vec!["a b c"], json!({"list": ["a", {"x": "c"}], "flag": true})).is_none());
        assert!(ground(vec!["a b c"], json!({"list": ["a", "z"]})).is_some());
        assert!(ground(vec![], json!({})).is_none());
    }

    #[test]
    fn falls_back_to_the_observation_only_when_nothing_was_fetched() {
        let ctx = Ctx {
            spec: TaskSpec::new("q"),
            fetched: vec![],
            observation: Some(json!({"html": "<b>42</b>"})),
        };
        assert!(GroundingValidator
            .check(&result(json!({"a": 42})), &ctx)
            .unwrap()
            .is_none());
    }

    #[test]
    fn schema_retries_on_mismatch_and_ends_on_a_broken_schema() {
        let mut spec = TaskSpec::new("q");
        spec.output_schema =
            json!({"type": "object", "required": ["answer"], "properties": {"answer": {"type": "integer"}}});
        let ctx = Ctx {
            spec,
            fetched: vec![],
            observation: None,
        };
        assert!(SchemaValidator
            .check(&result(json!({"answer": 1})), &ctx)
            .unwrap()
            .is_none());
        let v = SchemaValidator
            .check(&result(json!({"answer": "x"})), &ctx)
            .unwrap()
            .unwrap();
        assert_eq!(v.severity, Severity::Retry);
        assert!(v.detail.unwrap().contains("integer"));
        let mut broken = TaskSpec::new("q");
        broken.output_schema = json!({"type": "no-such-type"});
        let ctx = Ctx {
            spec: broken,
            fetched: vec![],
            observation: None,
        };
        let v = SchemaValidator
            .check(&result(json!({"answer": 1})), &ctx)
            .unwrap()
            .unwrap();
        assert_eq!(v.severity, Severity::Terminal);
        assert!(v.detail.unwrap().starts_with("invalid output_schema"));
        let none = Ctx {
            spec: TaskSpec::new("q"),
            fetched: vec![],
            observation: None,
        };
        assert!(SchemaValidator
            .check(&result(json!({"x": 1})), &none)
            .unwrap()
            .is_none());
    }
}
