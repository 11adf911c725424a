//! Calls across the plugin boundary: JSON both ways, the host's run context
//! served by callback, and panics that come back as values.

use serde_json::{json, Value};
use zu_loader::Loader;
use zu_plugin_api::prelude::*;
use zu_plugin_api::testing::TestContext;
use zu_plugin_api::version::Kind;
use zu_runtime::Registry;
use zu_tests::{artifacts, plugin_dir};

use crate::codes;

/// A run context for a call outside a run: the author's `TestContext`.
fn ctx(observation: Option<Value>) -> TestContext {
    let ctx = TestContext::new("what is on the page?");
    match observation {
        Some(o) => ctx.with_observation(o),
        None => ctx,
    }
}

#[test]
fn scripted_provider_answers_across_the_boundary_in_order() {
    let dir = plugin_dir(&[artifacts().lib("zu_plugin_scripted")]);
    let mut reg = Registry::new();
    let mut loader = Loader::new();
    loader.set_config(
        Kind::Providers,
        "scripted",
        json!({"model": "script-1", "responses": [
            {"tool_calls": [{"name": "noop", "args": {"x": 1}}], "usage": {"total_tokens": 7}},
            {"text": "{\"answer\": 1}"}
        ]}),
    );
    loader.load_dir(&mut reg, dir.path()).unwrap();
    let p = reg.provider("scripted").expect("loaded");
    assert_eq!(p.model().as_deref(), Some("script-1"));
    assert_eq!(p.capabilities(), Capabilities::default());
    let req = ModelRequest::new(vec![json!({"role": "user", "content": "hi"})], Vec::new());
    let first = p.complete(&req).unwrap();
    assert_eq!(first.tool_calls[0].args["x"], 1);
    assert_eq!(first.finish, Finish::ToolCalls);
    assert_eq!(first.usage["total_tokens"], 7);
    assert_eq!(p.complete(&req).unwrap().text.as_deref(), Some("{\"answer\": 1}"));
    let err = p.complete(&req).unwrap_err();
    assert!(
        matches!(err, PluginError::Failed(ref m) if m.contains("exhausted")),
        "{err:?}"
    );
}

#[test]
fn detectors_read_the_observation_through_the_host_callback() {
    let a = artifacts();
    let dir = plugin_dir(&[a.lib("zu_plugin_checks"), a.fixture("mixed")]);
    let mut reg = Registry::new();
    Loader::new().load_dir(&mut reg, dir.path()).unwrap();
    let empty = reg.detector("empty").unwrap();
    let error = reg.detector("error").unwrap();
    assert_eq!(empty.scope(), Scope::PerObservation);
    let v = empty.inspect(&ctx(Some(json!({"html": "   "})))).unwrap().unwrap();
    assert_eq!((v.severity, v.detector.as_str()), (Severity::Escalate, "empty"));
    assert!(empty
        .inspect(&ctx(Some(json!({"html": "<p>hi</p>"}))))
        .unwrap()
        .is_none());
    let v = error.inspect(&ctx(Some(json!({"status": 503})))).unwrap().unwrap();
    assert_eq!((v.severity, v.detail.as_deref()), (Severity::Retry, Some("http 503")));
    assert!(error.inspect(&ctx(None)).unwrap().is_none());

    // The mixed fixture's detector asks the host for the event count and the spec.
    let always = reg.detector("always_warns").unwrap();
    assert_eq!(always.scope(), Scope::PerTurn);
    let three = (0..3).fold(ctx(None), |c, _| c.with_event("harness.turn.started", json!({})));
    let v = always.inspect(&three).unwrap().unwrap();
    assert_eq!(v.detail.as_deref(), Some("3 events, query \"what is on the page?\""));
}

#[test]
fn a_panicking_tool_call_and_a_panicking_destructor_come_back_as_values() {
    let a = artifacts();
    let dir = plugin_dir(&[a.fixture("panicky"), a.lib("zu_plugin_scripted")]);
    let mut reg = Registry::new();
    Loader::new().load_dir(&mut reg, dir.path()).unwrap();
    assert!(reg.failures().is_empty(), "{:?}", codes(&reg));
    let tool = reg.tool("panics_on_call").unwrap();
    let ctx = ctx(None);
    let err = tool.call(&ctx, JsonObject::new()).unwrap_err();
    assert_eq!(err, PluginError::Panicked("tool call exploded".into()));
    // The same instance keeps working after its panic.
    let calm = json!({"calm": true}).as_object().cloned().unwrap();
    assert_eq!(tool.call(&ctx, calm.clone()).unwrap(), calm);
    assert_eq!(tool.schema()["name"], "panics_on_call");

    let dropper = reg.tool("panics_on_drop").unwrap();
    let out = dropper.call(&ctx, JsonObject::new()).unwrap();
    assert_eq!(out["query"], "what is on the page?");
    drop(dropper);
    drop(tool);
    drop(reg); // runs the panicking destructor inside the plugin
               // Still alive: the host goes on and can load and call plugins.
    let again = plugin_dir(&[a.lib("zu_plugin_scripted")]);
    let reg = crate::load(again.path());
    assert!(reg.provider("scripted").is_some());
}

#[test]
fn in_process_and_loaded_plugins_share_one_registry() {
    struct Native;
    impl Tool for Native {
        fn call(&self, _: &dyn RunContext, _: JsonObject) -> Result<JsonObject, PluginError> {
            Ok(json!({"native": true}).as_object().cloned().unwrap())
        }
    }
    let a = artifacts();
    let dir = plugin_dir(&[a.fixture("dup_a")]);
    let mut reg = Registry::new();
    reg.register_native(
        "dup",
        Envelope::NONE,
        zu_runtime::PluginObject::Tool(std::sync::Arc::new(Native)),
    )
    .unwrap();
    Loader::new().load_dir(&mut reg, dir.path()).unwrap();
    // The native plugin came first; the library's `dup` is refused, naming it.
    assert_eq!(codes(&reg), ["name_taken"]);
    assert!(reg.failures()[0].error.to_string().contains("in-process"));
    let out = reg.tool("dup").unwrap().call(&ctx(None), JsonObject::new()).unwrap();
    assert_eq!(out["native"], true);
}
