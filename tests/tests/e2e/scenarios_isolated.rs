//! The golden scenarios through the real boundary in both isolation modes:
//! the scenario's tools, detectors and validators loaded from a library
//! (`fixtures/scenario`) by a protected loader — in the host, and in a
//! plugin process — with the scripted provider from its library too. The
//! events and the Result must be the reference's, whatever the mode.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use serde_json::{json, Value};
use zu_loader::{Isolation, Loader, Protection};
use zu_plugin_api::prelude::*;
use zu_plugin_api::version::Kind;
use zu_runtime::{run_task, EventBus, Registry, RunOptions};
use zu_tests::{artifacts, plugin_dir};

use crate::scenarios::{assert_matches_golden, event_types, options_for, scenarios, spec_for, ScenarioProvider};

fn names(s: &Value, key: &str) -> Vec<String> {
    s[key]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The scenario's plugins, loaded by a protected loader in `mode`.
fn load(s: &Value, mode: Isolation, cache: &std::path::Path) -> (Registry, tempfile::TempDir) {
    let a = artifacts();
    let dir = plugin_dir(&[a.fixture("scenario"), a.lib("zu_plugin_scripted")]);
    let mut protection = Protection::new(&a.zu);
    protection.isolation = mode;
    protection.cache_dir = Some(cache.to_owned());
    let mut loader = Loader::protected(protection);
    for t in s["tools"].as_array().into_iter().flatten() {
        loader.set_config(Kind::Tools, t["name"].as_str().unwrap(), t["behavior"].clone());
    }
    for d in s["detectors"].as_array().into_iter().flatten() {
        loader.set_config(Kind::Detectors, d["name"].as_str().unwrap(), d.clone());
    }
    for v in s["validators"].as_array().into_iter().flatten() {
        loader.set_config(Kind::Validators, v["name"].as_str().unwrap(), v.clone());
    }
    let scripted = s["responses"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r.get("hang").is_none());
    if scripted {
        loader.set_config(Kind::Providers, "scripted", json!({"responses": s["responses"]}));
    }
    let mut registry = Registry::new();
    loader.load_dir(&mut registry, dir.path()).unwrap();
    assert!(registry.failures().is_empty(), "{:?}", registry.failures());
    (registry, dir)
}

fn check_all(mode: Isolation) {
    let cache = tempfile::tempdir().unwrap();
    for s in scenarios() {
        let name = s["name"].as_str().unwrap();
        let (registry, _dir) = load(&s, mode, cache.path());
        // The scripted provider cannot hang: that scenario's provider stays in-process.
        let provider: Arc<dyn ModelProvider> = match s["responses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.get("hang").is_some())
        {
            true => Arc::new(ScenarioProvider {
                responses: s["responses"].as_array().unwrap().clone(),
                next: AtomicUsize::new(0),
            }),
            false => registry.provider("scripted").unwrap(),
        };
        let options = RunOptions {
            tools: Some(names(&s, "tools")),
            detectors: Some(names(&s, "detectors")),
            validators: Some(names(&s, "validators")),
            ..RunOptions::default()
        };
        let options = options_for(&s, options);
        let bus = Arc::new(EventBus::new());
        let result = run_task(&spec_for(&s), provider, &registry, &bus, &options).unwrap();
        assert_matches_golden(name, &result, &event_types(&bus));
    }
}

#[test]
fn every_golden_scenario_matches_with_its_plugins_in_the_host() {
    check_all(Isolation::InProcess);
}

#[test]
fn every_golden_scenario_matches_with_its_plugins_in_their_own_process() {
    check_all(Isolation::Process);
}
