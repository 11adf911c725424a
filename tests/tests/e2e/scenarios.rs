//! The loop against the Python reference: every scenario of
//! tests/golden/scenarios.json runs through `run_task` with in-process
//! plugins built from its description, and must produce the Result and the
//! exact event type sequence zu-core 0.2.0 produced (tests/golden/<name>.json).
//! Some also run with the scripted provider loaded from its `.so`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use zu_loader::Loader;
use zu_plugin_api::filter::EventFilter;
use zu_plugin_api::prelude::*;
use zu_plugin_api::version::Kind;
use zu_runtime::{run_task, EventBus, PluginObject, Registry, RunOptions, Shaping, Strategy, Track};
use zu_tests::{artifacts, plugin_dir, workspace_root};

fn golden_dir() -> std::path::PathBuf {
    workspace_root().join("tests/golden")
}

pub(crate) fn scenarios() -> Vec<Value> {
    let text = std::fs::read_to_string(golden_dir().join("scenarios.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["scenarios"]
        .as_array()
        .unwrap()
        .clone()
}

fn scenario(name: &str) -> Value {
    scenarios()
        .into_iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no scenario {name}"))
}

/// A provider answering from the scenario's script; `{"hang": true}` never answers.
pub(crate) struct ScenarioProvider {
    pub(crate) responses: Vec<Value>,
    pub(crate) next: AtomicUsize,
}

impl ModelProvider for ScenarioProvider {
    fn complete(&self, _: &ModelRequest) -> Result<ModelResponse, PluginError> {
        let r = &self.responses[self.next.fetch_add(1, Ordering::SeqCst)];
        if r["hang"] == true {
            std::thread::sleep(Duration::from_secs(3600));
        }
        let tool_calls: Vec<ToolCall> =
            serde_json::from_value(r.get("tool_calls").cloned().unwrap_or(json!([]))).unwrap();
        let finish = match r["finish"].as_str() {
            Some(f) => serde_json::from_value(json!(f)).unwrap(),
            None if tool_calls.is_empty() => Finish::Stop,
            None => Finish::ToolCalls,
        };
        Ok(ModelResponse {
            text: r["text"].as_str().map(String::from),
            tool_calls,
            finish,
            usage: r.get("usage").and_then(Value::as_object).cloned().unwrap_or_default(),
        })
    }
}

struct ScenarioTool {
    name: String,
    behavior: Value,
}

impl Tool for ScenarioTool {
    fn schema(&self) -> Value {
        json!({"name": self.name, "parameters": {"type": "object"}})
    }
    fn prompt_fragment(&self) -> String {
        format!("{}: a scenario tool", self.name)
    }
    fn call(&self, _: &dyn RunContext, _: JsonObject) -> Result<JsonObject, PluginError> {
        let b = &self.behavior;
        if let Some(r) = b.get("return") {
            let mut out = r.as_object().cloned().unwrap();
            for (k, n) in b["repeat"].as_object().into_iter().flatten() {
                let text = out[k].as_str().unwrap().repeat(n.as_u64().unwrap() as usize);
                out.insert(k.clone(), text.into());
            }
            return Ok(out);
        }
        if b.get("hang").is_some() {
            std::thread::sleep(Duration::from_secs(3600));
        }
        if let Some(m) = b["panic"].as_str() {
            panic!("{m}");
        }
        if let Some(n) = b["huge"].as_u64() {
            return Ok(json!({"blob": "x".repeat(n as usize)}).as_object().cloned().unwrap());
        }
        let block = &b["block"];
        Err(PluginError::security_block(
            block["kind"].as_str().unwrap(),
            block["target"].as_str().map(String::from),
            block["message"].as_str().unwrap(),
        ))
    }
}

struct ScenarioDetector(Value);

impl Detector for ScenarioDetector {
    fn scope(&self) -> Scope {
        serde_json::from_value(self.0["scope"].clone()).unwrap()
    }
    fn inspect(&self, ctx: &dyn RunContext) -> Result<Option<Verdict>, PluginError> {
        if let Some(when) = self.0.get("when") {
            let key = when["key"].as_str().unwrap();
            if ctx.observation().and_then(|o| o.get(key)) != Some(&when["equals"]) {
                return Ok(None);
            }
        }
        let severity = serde_json::from_value(self.0["severity"].clone()).unwrap();
        Ok(Some(Verdict::new(
            severity,
            self.0["name"].as_str().unwrap(),
            self.0["detail"].as_str().unwrap(),
        )))
    }
}

struct ScenarioValidator(Value, AtomicUsize);

impl Validator for ScenarioValidator {
    fn check(&self, _: &RunResult, _: &dyn RunContext) -> Result<Option<Verdict>, PluginError> {
        if self.1.fetch_add(1, Ordering::SeqCst) < self.0["fail_times"].as_u64().unwrap() as usize {
            let severity = serde_json::from_value(self.0["severity"].clone()).unwrap();
            return Ok(Some(Verdict::new(
                severity,
                self.0["name"].as_str().unwrap(),
                self.0["detail"].as_str().unwrap(),
            )));
        }
        Ok(None)
    }
}

fn leak_strs(v: &Value) -> &'static [&'static str] {
    let items: Vec<&'static str> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| &*Box::leak(s.as_str().unwrap().to_owned().into_boxed_str()))
                .collect()
        })
        .unwrap_or_default();
    Box::leak(items.into_boxed_slice())
}

/// The scenario's registry, built from in-process plugins.
fn registry_for(s: &Value) -> Registry {
    let mut reg = Registry::new();
    for t in s["tools"].as_array().into_iter().flatten() {
        let name = t["name"].as_str().unwrap();
        let envelope = Envelope {
            tier: t["tier"].as_u64().unwrap_or(1) as u32,
            capabilities: leak_strs(&t["capabilities"]),
            egress: leak_strs(&t["egress"]),
        };
        let tool = ScenarioTool {
            name: name.into(),
            behavior: t["behavior"].clone(),
        };
        reg.register_native(name, envelope, PluginObject::Tool(Arc::new(tool)))
            .unwrap();
    }
    for d in s["detectors"].as_array().into_iter().flatten() {
        let det = PluginObject::Detector(Arc::new(ScenarioDetector(d.clone())));
        reg.register_native(d["name"].as_str().unwrap(), Envelope::NONE, det)
            .unwrap();
    }
    for v in s["validators"].as_array().into_iter().flatten() {
        let val = PluginObject::Validator(Arc::new(ScenarioValidator(v.clone(), AtomicUsize::new(0))));
        reg.register_native(v["name"].as_str().unwrap(), Envelope::NONE, val)
            .unwrap();
    }
    reg
}

pub(crate) fn spec_for(s: &Value) -> TaskSpec {
    serde_json::from_value(s["task"].clone()).unwrap()
}

/// Runs a scenario and returns (result, event types).
/// The types of every event on the bus's log, in order.
pub(crate) fn event_types(bus: &EventBus) -> Vec<String> {
    bus.query(&EventFilter::all(), None, 0)
        .unwrap()
        .iter()
        .map(|e| e.event.event_type().to_owned())
        .collect()
}

/// The scenario's run options on top of `base`: its track, replay budget,
/// finish provider (scripted in-process) and observation shaping.
pub(crate) fn options_for(s: &Value, base: RunOptions) -> RunOptions {
    let o = &s["options"];
    let track = s
        .get("track")
        .map(|t| Arc::new(serde_json::from_value::<Track>(t.clone()).unwrap()));
    let replay_budget = o
        .get("replay_budget")
        .map(|b| serde_json::from_value(b.clone()).unwrap());
    let finish_provider = o.get("finish_responses").map(|r| {
        Arc::new(ScenarioProvider {
            responses: r.as_array().unwrap().clone(),
            next: AtomicUsize::new(0),
        }) as Arc<dyn ModelProvider>
    });
    let shaping = Shaping {
        max_observation_chars: o["max_observation_chars"].as_u64().map(|n| n as usize),
        strategy: o["observation_strategy"]
            .as_str()
            .map_or(Strategy::Truncate, |s| s.parse().unwrap()),
        max_context_chars: o["max_context_chars"].as_u64().map(|n| n as usize),
    };
    RunOptions {
        track,
        replay_budget,
        finish_provider,
        shaping,
        ..base
    }
}

fn run(s: &Value, provider: Arc<dyn ModelProvider>, reg: &Registry) -> (RunResult, Vec<String>) {
    let bus = Arc::new(EventBus::new());
    let result = run_task(
        &spec_for(s),
        provider,
        reg,
        &bus,
        &options_for(s, RunOptions::default()),
    )
    .unwrap();
    (result, event_types(&bus))
}

pub(crate) fn assert_matches_golden(name: &str, result: &RunResult, types: &[String]) {
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(golden_dir().join(format!("{name}.json"))).unwrap()).unwrap();
    let want: Vec<String> = serde_json::from_value(golden["event_types"].clone()).unwrap();
    // Events Zu adds where the reference does something questionable
    // (README: where Zu differs) are compared without.
    let mut adds: Vec<String> = serde_json::from_value(scenario(name)["zu_adds"].clone()).unwrap_or_default();
    // The record of the plugins' sandboxes is about the host, not the run's logic.
    adds.push(zu_plugin_api::events::SANDBOX_APPLIED.to_owned());
    let types: Vec<String> = types.iter().filter(|t| !adds.contains(t)).cloned().collect();
    assert_eq!(types, want, "{name}: event types differ from zu-core 0.2.0");
    assert_eq!(
        serde_json::to_value(result).unwrap(),
        golden["result"],
        "{name}: result differs from zu-core 0.2.0"
    );
}

fn check(name: &str) {
    let s = scenario(name);
    let provider = Arc::new(ScenarioProvider {
        responses: s["responses"].as_array().unwrap().clone(),
        next: AtomicUsize::new(0),
    });
    let (result, types) = run(&s, provider, &registry_for(&s));
    assert_matches_golden(name, &result, &types);
}

macro_rules! golden_tests {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { check(stringify!($name)); })*

        #[test]
        fn every_scenario_has_a_test_and_a_golden_file() {
            let tested = [$(stringify!($name)),*];
            for s in scenarios() {
                let name = s["name"].as_str().unwrap();
                assert!(tested.contains(&name), "scenario {name} has no test");
                assert!(golden_dir().join(format!("{name}.json")).exists(), "scenario {name} has no golden file");
            }
        }
    };
}

golden_tests!(
    success_one_step,
    tool_then_final,
    escalate_climbs_a_tier,
    escalate_exhausted,
    terminal_detector,
    retry_then_success,
    validation_retry_then_success,
    validation_terminal,
    budget_max_steps,
    budget_max_tokens,
    budget_wall_time_hanging_provider,
    budget_wall_time_hanging_tool,
    budget_max_tool_calls,
    truncated_response,
    unknown_tool,
    tool_above_current_tier,
    tool_panics,
    tool_returns_50mb,
    ssrf_attempt,
    path_escape,
    final_text_not_json,
    replay_clean,
    replay_diverges_on_challenge,
    replay_diverges_on_soft_misses,
    replay_soft_miss_then_on_track,
    replay_climbs_the_ladder,
    replay_finish_provider_and_budget,
    replay_track_for_another_task_is_ignored,
    observation_truncate,
    observation_extract,
    bounded_history,
);

/// The scripted provider loaded from its library, configured with the scenario's script.
fn scripted_so(s: &Value) -> (Arc<dyn ModelProvider>, tempfile::TempDir) {
    let dir = plugin_dir(&[artifacts().lib("zu_plugin_scripted")]);
    let mut reg = Registry::new();
    let mut loader = Loader::new();
    loader.set_config(Kind::Providers, "scripted", json!({"responses": s["responses"]}));
    loader.load_dir(&mut reg, dir.path()).unwrap();
    (reg.provider("scripted").unwrap(), dir)
}

#[test]
fn scenarios_match_the_reference_with_the_provider_across_the_boundary() {
    for name in [
        "tool_then_final",
        "escalate_climbs_a_tier",
        "retry_then_success",
        "budget_max_steps",
        "truncated_response",
    ] {
        let s = scenario(name);
        let (provider, _dir) = scripted_so(&s);
        let (result, types) = run(&s, provider, &registry_for(&s));
        assert_matches_golden(name, &result, &types);
    }
}

#[test]
fn the_same_scripted_run_twice_gives_the_same_result_and_events() {
    for name in [
        "escalate_climbs_a_tier",
        "validation_retry_then_success",
        "ssrf_attempt",
    ] {
        let s = scenario(name);
        let once = || {
            let provider = Arc::new(ScenarioProvider {
                responses: s["responses"].as_array().unwrap().clone(),
                next: AtomicUsize::new(0),
            });
            run(&s, provider, &registry_for(&s))
        };
        assert_eq!(once(), once(), "{name}");
    }
}

#[test]
fn payloads_carry_the_reference_keys() {
    let s = scenario("ssrf_attempt");
    let provider = Arc::new(ScenarioProvider {
        responses: s["responses"].as_array().unwrap().clone(),
        next: AtomicUsize::new(0),
    });
    let bus = Arc::new(EventBus::new());
    let reg = registry_for(&s);
    run_task(&spec_for(&s), provider, &reg, &bus, &RunOptions::default()).unwrap();
    let events = bus.query(&EventFilter::all(), None, 0).unwrap();
    let by_type = |t: &str| events.iter().find(|e| e.event.event_type() == t).unwrap().event.clone();
    let blocked = by_type("harness.defense.blocked");
    assert_eq!(blocked.payload()["kind"], "ssrf");
    assert_eq!(blocked.payload()["tool"], "http_fetch");
    assert_eq!(blocked.payload()["target"], "169.254.169.254");
    assert_eq!(blocked.source(), "http_fetch");
    let returned = by_type("harness.tool.returned");
    assert_eq!(returned.payload()["observation"]["blocked"], "ssrf");
    let envelope = by_type("harness.envelope.declared");
    assert_eq!(
        envelope.payload()["tools"]["http_fetch"],
        json!({"tier": 1, "capabilities": ["net"], "egress": ["*"]})
    );
    let turn = by_type("harness.turn.completed");
    assert_eq!(turn.payload()["step"], 1);
    assert_eq!(turn.payload()["tier"], 1);
    assert!(turn.payload()["model"].is_null());
    let started = by_type("harness.task.started");
    assert_eq!(started.payload()["query"], "metadata");
    assert_eq!(blocked.parent_id(), Some(by_type("harness.turn.started").event_id()));
}

/// A provider that names itself and answers from a script.
fn named(model: &str, responses: Value) -> Arc<dyn ModelProvider> {
    struct Named(String, ScenarioProvider);
    impl ModelProvider for Named {
        fn model(&self) -> Option<String> {
            Some(self.0.clone())
        }
        fn complete(&self, r: &ModelRequest) -> Result<ModelResponse, PluginError> {
            self.1.complete(r)
        }
    }
    let script = ScenarioProvider {
        responses: responses.as_array().unwrap().clone(),
        next: AtomicUsize::new(0),
    };
    Arc::new(Named(model.into(), script))
}

#[test]
fn a_per_tier_provider_takes_over_when_the_ladder_climbs() {
    let s = scenario("escalate_climbs_a_tier");
    let responses = s["responses"].as_array().unwrap();
    let cheap = named("cheap-model", json!([responses[0]]));
    let strong = named("strong-model", json!([responses[1], responses[2]]));
    let options = RunOptions {
        providers_by_tier: [(2, strong)].into_iter().collect(),
        ..RunOptions::default()
    };
    let bus = Arc::new(EventBus::new());
    let result = run_task(&spec_for(&s), cheap, &registry_for(&s), &bus, &options).unwrap();
    assert_eq!(result.status, Status::Success);
    let turns: Vec<(Value, Value)> = bus
        .query(
            &EventFilter::all().with(zu_plugin_api::filter::FilterField::Type, Some("harness.turn.completed")),
            None,
            0,
        )
        .unwrap()
        .iter()
        .map(|e| (e.event.payload()["model"].clone(), e.event.payload()["tier"].clone()))
        .collect();
    assert_eq!(
        turns,
        [
            (json!("cheap-model"), json!(1)),
            (json!("strong-model"), json!(2)),
            (json!("strong-model"), json!(2))
        ]
    );
}

#[test]
fn a_call_that_returns_after_the_run_was_taken_over_adds_nothing() {
    // The tool sleeps past the 1 s wall time, then returns: the caller has
    // already finished the run; the late thread must not touch the log.
    struct Late;
    impl Tool for Late {
        fn call(&self, _: &dyn RunContext, _: JsonObject) -> Result<JsonObject, PluginError> {
            std::thread::sleep(Duration::from_millis(3000));
            Ok(json!({"html": "late page"}).as_object().cloned().unwrap())
        }
    }
    let s = scenario("budget_wall_time_hanging_tool");
    let mut reg = Registry::new();
    reg.register_native("stuck", Envelope::NONE, PluginObject::Tool(Arc::new(Late)))
        .unwrap();
    let provider = Arc::new(ScenarioProvider {
        responses: s["responses"].as_array().unwrap().clone(),
        next: AtomicUsize::new(0),
    });
    let bus = Arc::new(EventBus::new());
    let started = std::time::Instant::now();
    let result = run_task(&spec_for(&s), provider, &reg, &bus, &RunOptions::default()).unwrap();
    // The deadline is 1 s, the tool returns at 3 s: generous for a loaded machine.
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "run_task returned at the deadline, not when the tool did"
    );
    let at_return = event_types(&bus);
    assert_matches_golden("budget_wall_time_hanging_tool", &result, &at_return);
    std::thread::sleep(Duration::from_millis(3000)); // the tool has returned by now
    assert_eq!(event_types(&bus), at_return, "the late thread appended to the log");
}

#[test]
fn concurrent_runs_on_one_bus_keep_their_events_apart() {
    let s = scenario("escalate_climbs_a_tier");
    let reg = Arc::new(registry_for(&s));
    let bus = Arc::new(EventBus::new());
    let runs: Vec<_> = (0..8)
        .map(|_| {
            let (s, reg, bus) = (s.clone(), reg.clone(), bus.clone());
            std::thread::spawn(move || {
                let provider = Arc::new(ScenarioProvider {
                    responses: s["responses"].as_array().unwrap().clone(),
                    next: AtomicUsize::new(0),
                });
                let spec = spec_for(&s);
                let result = run_task(&spec, provider, &reg, &bus, &RunOptions::default()).unwrap();
                (spec.task_id, result)
            })
        })
        .collect();
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(golden_dir().join("escalate_climbs_a_tier.json")).unwrap())
            .unwrap();
    let want: Vec<String> = serde_json::from_value(golden["event_types"].clone()).unwrap();
    for handle in runs {
        let (task, result) = handle.join().unwrap();
        assert_eq!(result.status, Status::Success);
        let filter = EventFilter::all().with(zu_plugin_api::filter::FilterField::TaskId, Some(task.to_string()));
        let types: Vec<String> = bus
            .query(&filter, None, 0)
            .unwrap()
            .iter()
            .map(|e| e.event.event_type().to_owned())
            .collect();
        assert_eq!(types, want, "task {task}");
    }
    assert_eq!(bus.count(&EventFilter::all()).unwrap(), 8 * want.len() as u64);
}

#[test]
fn a_detector_that_does_not_return_cannot_hold_the_run_past_its_wall_time() {
    struct Stuck;
    impl Detector for Stuck {
        fn scope(&self) -> Scope {
            Scope::PerObservation
        }
        fn inspect(&self, _: &dyn RunContext) -> Result<Option<Verdict>, PluginError> {
            std::thread::sleep(Duration::from_millis(5000));
            Ok(Some(Verdict::new(Severity::Warn, "stuck", "woke up late")))
        }
    }
    let s = scenario("tool_then_final");
    let mut reg = registry_for(&s);
    reg.register_native("stuck", Envelope::NONE, PluginObject::Detector(Arc::new(Stuck)))
        .unwrap();
    let provider = Arc::new(ScenarioProvider {
        responses: s["responses"].as_array().unwrap().clone(),
        next: AtomicUsize::new(0),
    });
    let mut spec = spec_for(&s);
    spec.budget.wall_time_s = 1;
    let bus = Arc::new(EventBus::new());
    let started = std::time::Instant::now();
    let result = run_task(&spec, provider, &reg, &bus, &RunOptions::default()).unwrap();
    // 1 s of wall time plus 1 s of grace, well before the detector's 5 s.
    assert!(
        started.elapsed() < Duration::from_millis(4000),
        "returned after {:?}",
        started.elapsed()
    );
    assert_eq!(
        (result.status, result.reason.as_deref()),
        (Status::Terminal, Some("budget:wall_time_s"))
    );
    let at_return = event_types(&bus);
    assert_eq!(at_return.last().map(String::as_str), Some("harness.task.terminal"));
    assert_eq!(at_return.iter().filter(|t| *t == "harness.tool.returned").count(), 1);
    std::thread::sleep(Duration::from_millis(4500)); // the detector has returned by now
    assert_eq!(event_types(&bus), at_return, "the abandoned worker appended to the log");
}
