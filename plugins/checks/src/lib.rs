//! The built-in observation detectors `empty` and `error`, ported from the
//! reference `zu-checks` 0.8.0. Both run per observation and read only the
//! observation the host hands them.

#![forbid(unsafe_code)]

use zu_plugin_api::events::CONTENT_KEYS;
use zu_plugin_api::prelude::*;

/// Python truthiness of `str(value or "")`: is the value blank?
fn is_blank(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::Bool(true) => false,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Escalates when a fetched page carried no usable content: some content key
/// is present and every present one is blank. Observations without a content
/// key (an extraction result, an error) are not its concern.
pub struct EmptyDetector;

impl Plugin for EmptyDetector {
    const NAME: &'static str = "empty";
    fn new(_config: Value) -> Result<Self, PluginError> {
        Ok(EmptyDetector)
    }
}

impl Detector for EmptyDetector {
    fn scope(&self) -> Scope {
        Scope::PerObservation
    }

    fn inspect(&self, ctx: &dyn RunContext) -> Result<Option<Verdict>, PluginError> {
        let Some(Value::Object(obs)) = ctx.observation() else {
            return Ok(None);
        };
        let present: Vec<&Value> = CONTENT_KEYS.iter().filter_map(|k| obs.get(*k)).collect();
        if !present.is_empty() && present.into_iter().all(is_blank) {
            return Ok(Some(Verdict::new(Severity::Escalate, Self::NAME, "empty observation")));
        }
        Ok(None)
    }
}

/// Asks for a retry when the observation carries an HTTP error status
/// (integer `status` >= 400): one bad URL says nothing about the whole run.
pub struct ErrorDetector;

impl Plugin for ErrorDetector {
    const NAME: &'static str = "error";
    fn new(_config: Value) -> Result<Self, PluginError> {
        Ok(ErrorDetector)
    }
}

impl Detector for ErrorDetector {
    fn scope(&self) -> Scope {
        Scope::PerObservation
    }

    fn inspect(&self, ctx: &dyn RunContext) -> Result<Option<Verdict>, PluginError> {
        let status = match ctx.observation() {
            Some(Value::Object(obs)) => obs
                .get("status")
                .and_then(|s| s.as_i64().or_else(|| s.as_u64().map(|u| u as i64))),
            _ => None,
        };
        Ok(status
            .filter(|s| *s >= 400)
            .map(|s| Verdict::new(Severity::Retry, Self::NAME, format!("http {s}"))))
    }
}

#[cfg(feature = "export")]
zu_plugin_api::export_plugins! { detectors: [EmptyDetector, ErrorDetector] }

#[cfg(test)]
mod tests {
    use super::*;
    use zu_plugin_api::filter::StoredEvent;

    struct Ctx(TaskSpec, Option<Value>);
    impl RunContext for Ctx {
        fn spec(&self) -> &TaskSpec {
            &self.0
        }
        fn observation(&self) -> Option<&Value> {
            self.1.as_ref()
        }
        fn event_count(&self) -> u64 {
            0
        }
        fn query(&self, _: &EventFilter, _: Option<u64>, _: u64) -> Result<Vec<StoredEvent>, PluginError> {
            Ok(vec![])
        }
    }

    fn on(obs: Value) -> Ctx {
        Ctx(TaskSpec::new("q"), Some(obs))
    }

    #[test]
    fn empty_fires_only_when_every_present_content_key_is_blank() {
        let d = EmptyDetector;
        let fired = |obs| d.inspect(&on(obs)).unwrap().map(|v| v.severity);
        assert_eq!(fired(json!({"html": "  "})), Some(Severity::Escalate));
        assert_eq!(fired(json!({"text": "", "content": null})), Some(Severity::Escalate));
        assert_eq!(fired(json!({"html": "", "text": "hello"})), None);
        assert_eq!(fired(json!({"matches": []})), None, "not a page fetch");
        assert_eq!(
            fired(json!({"content": 0})),
            Some(Severity::Escalate),
            "str(0 or '') is blank"
        );
        assert_eq!(fired(json!({"content": 5})), None);
        assert_eq!(fired(json!("just a string")), None);
        assert!(d.inspect(&Ctx(TaskSpec::new("q"), None)).unwrap().is_none());
        let v = d.inspect(&on(json!({"html": ""}))).unwrap().unwrap();
        assert_eq!(
            (v.detector.as_str(), v.detail.as_deref()),
            ("empty", Some("empty observation"))
        );
    }

    #[test]
    fn error_asks_for_retry_on_http_error_status() {
        let d = ErrorDetector;
        let v = d.inspect(&on(json!({"status": 404}))).unwrap().unwrap();
        assert_eq!((v.severity, v.detail.as_deref()), (Severity::Retry, Some("http 404")));
        assert!(d.inspect(&on(json!({"status": 200}))).unwrap().is_none());
        assert!(
            d.inspect(&on(json!({"status": "500"}))).unwrap().is_none(),
            "only integers"
        );
        assert!(
            d.inspect(&on(json!({"status": 404.0}))).unwrap().is_none(),
            "only integers"
        );
        assert!(d.inspect(&on(json!({"ok": true}))).unwrap().is_none());
    }
}
