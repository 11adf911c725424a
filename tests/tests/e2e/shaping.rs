//! Beyond the event types the goldens compare: what the model is sent when
//! observations are shaped and the history bounded (through a provider
//! across the real boundary, which rebuilds the conversation from deltas),
//! what the replay and extraction events carry, the pipeline golden, and a
//! run's view that excludes an earlier run of the same task id.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use serde_json::{json, Value};
use zu_loader::{Isolation, Loader, Protection};
use zu_plugin_api::filter::{EventFilter, FilterField};
use zu_plugin_api::prelude::*;
use zu_plugin_api::version::Kind;
use zu_runtime::pipeline::phase_task_id;
use zu_runtime::{
    run_pipeline, run_task, EventBus, PipelinePhase, PluginObject, Registry, RunOptions, Shaping, Strategy,
};
use zu_tests::{artifacts, plugin_dir, workspace_root};

use crate::scenarios::{event_types, ScenarioProvider};

fn of_type(bus: &EventBus, ty: &str) -> Vec<Value> {
    let f = EventFilter::all().with(FilterField::Type, Some(ty));
    bus.query(&f, None, 0)
        .unwrap()
        .iter()
        .map(|e| Value::Object(e.event.payload().clone()))
        .collect()
}

/// The scenario fixture's `witness` provider and `fetch` tool, loaded in `mode`.
fn witness(mode: Isolation, calls: u64, page_chars: usize) -> (Registry, tempfile::TempDir) {
    let a = artifacts();
    let dir = plugin_dir(&[a.fixture("scenario")]);
    let mut protection = Protection::new(&a.zu);
    protection.isolation = mode;
    let mut loader = Loader::protected(protection);
    loader.set_config(Kind::Providers, "witness", json!({"calls": calls}));
    let page = json!({"return": {"text": "y".repeat(page_chars), "status": 200}});
    loader.set_config(Kind::Tools, "fetch", page);
    let mut registry = Registry::new();
    loader.load_dir(&mut registry, dir.path()).unwrap();
    (registry, dir)
}

#[test]
fn a_bounded_history_reaches_a_provider_across_the_boundary_as_a_new_prefix() {
    for mode in [Isolation::InProcess, Isolation::Process] {
        let (registry, _dir) = witness(mode, 6, 300);
        let options = RunOptions {
            tools: Some(vec!["fetch".into()]),
            shaping: Shaping {
                max_context_chars: Some(1000),
                ..Shaping::default()
            },
            ..RunOptions::default()
        };
        let bus = Arc::new(EventBus::new());
        let provider = registry.provider("witness").unwrap();
        let r = run_task(&TaskSpec::new("many pages"), provider, &registry, &bus, &options).unwrap();
        assert_eq!(r.status, Status::Success, "{r:?}");
        let seen: Vec<String> = serde_json::from_value(r.value.unwrap()["seen"].clone()).unwrap();
        assert_eq!(seen.len(), 6, "{mode:?}");
        let elided = seen.iter().take_while(|c| c.starts_with("[elided ")).count();
        assert!(elided >= 1, "{mode:?}: old results elided: {seen:?}");
        assert!(
            seen[elided..].iter().all(|c| c.contains(&"y".repeat(300))),
            "{mode:?}: the rest whole, as the host holds them: {seen:?}"
        );
        assert!(
            seen[seen.len() - 3..].iter().all(|c| !c.starts_with("[elided")),
            "the latest three stay"
        );
    }
}

/// A provider that remembers every request and answers from a script.
struct Recorder(ScenarioProvider, std::sync::Mutex<Vec<Vec<Value>>>);

impl ModelProvider for Recorder {
    fn model(&self) -> Option<String> {
        Some("gpt-4o-mini".into())
    }
    fn complete(&self, r: &ModelRequest) -> Result<ModelResponse, PluginError> {
        self.1.lock().unwrap().push(r.messages.clone());
        self.0.complete(r)
    }
}

fn recorder(responses: Value) -> Arc<Recorder> {
    let script = ScenarioProvider {
        responses: responses.as_array().unwrap().clone(),
        next: AtomicUsize::new(0),
    };
    Arc::new(Recorder(script, Default::default()))
}

fn page_tool(text: &str) -> Registry {
    struct Page(String);
    impl Tool for Page {
        fn call(&self, _: &dyn RunContext, _: JsonObject) -> Result<JsonObject, PluginError> {
            Ok(json!({"text": self.0, "status": 200}).as_object().cloned().unwrap())
        }
    }
    let mut reg = Registry::new();
    let tool = PluginObject::Tool(Arc::new(Page(text.into())));
    reg.register_native("fetch", Envelope::NONE, tool).unwrap();
    reg
}

/// Run options that extract from content fields over `max` characters.
fn extract_over(max: usize) -> RunOptions {
    RunOptions {
        shaping: Shaping {
            max_observation_chars: Some(max),
            strategy: Strategy::Extract,
            max_context_chars: None,
        },
        ..RunOptions::default()
    }
}

#[test]
fn extraction_calls_are_logged_counted_and_their_answers_replace_the_field() {
    let page = format!("{}price: 3 EUR{}", "a".repeat(120), "b".repeat(120));
    let provider = recorder(json!([
        {"tool_calls": [{"name": "fetch", "args": {}}]},
        {"text": "NOTHING", "usage": {"input_tokens": 10, "output_tokens": 1}},
        {"text": "price: 3 EUR", "usage": {"input_tokens": 10, "output_tokens": 4}},
        {"text": "NOTHING", "usage": {"input_tokens": 10, "output_tokens": 1}},
        {"text": "{\"price\": 3}"}
    ]));
    let options = extract_over(100);
    let bus = Arc::new(EventBus::new());
    let r = run_task(
        &TaskSpec::new("the price"),
        provider.clone(),
        &page_tool(&page),
        &bus,
        &options,
    )
    .unwrap();
    assert_eq!(r.status, Status::Success);
    let calls = provider.1.lock().unwrap();
    assert!(calls[1][0]["content"].as_str().unwrap().contains("part 1 of 3"));
    let last = calls.last().unwrap();
    let tool_msg = last.iter().find(|m| m["role"] == "tool").unwrap()["content"]
        .as_str()
        .unwrap();
    let obs: Value = serde_json::from_str(tool_msg).unwrap();
    assert_eq!(obs["text"], "price: 3 EUR", "the model reads the extract, not the page");
    let extracted = of_type(&bus, "harness.observation.extracted");
    assert_eq!(extracted.len(), 3);
    assert_eq!(extracted[1]["chunk"], 2);
    assert_eq!(extracted[1]["of"], 3);
    assert_eq!(extracted[1]["model"], "gpt-4o-mini");
    assert_eq!(extracted[1]["usage"]["output_tokens"], 4);
    let fetched = of_type(&bus, "data.source.fetched");
    assert_eq!(fetched[0]["text"], page, "the log keeps the whole page");
    let all: Vec<Event> = bus
        .query(&EventFilter::all(), None, 0)
        .unwrap()
        .iter()
        .map(|e| (*e.event).clone())
        .collect();
    let cost = zu_runtime::CostSummary::of(&all, &zu_runtime::Prices::default());
    assert_eq!(cost.model_calls, 5, "extraction calls are model calls too");
    assert_eq!(cost.input_tokens, 30);
}

#[test]
fn extraction_stops_at_the_token_budget() {
    let page = "z".repeat(1000);
    let mut script = vec![json!({"tool_calls": [{"name": "fetch", "args": {}}]})];
    script.extend((0..10).map(|_| json!({"text": "z", "usage": {"input_tokens": 40, "output_tokens": 10}})));
    let provider = recorder(Value::Array(script));
    let mut spec = TaskSpec::new("q");
    spec.budget.max_tokens = 120;
    let options = extract_over(100);
    let bus = Arc::new(EventBus::new());
    let r = run_task(&spec, provider.clone(), &page_tool(&page), &bus, &options).unwrap();
    assert_eq!(r.reason.as_deref(), Some("budget:max_tokens"));
    assert_eq!(
        of_type(&bus, "harness.observation.extracted").len(),
        3,
        "120 tokens buy three 50-token calls"
    );
}

#[test]
fn replayed_steps_say_so_and_the_model_is_told_the_navigation_is_done() {
    let provider = recorder(json!([{"text": "{\"ok\": 1}"}]));
    let track: zu_runtime::Track = serde_json::from_value(json!({
        "task": "q", "steps": [{"tool": "fetch", "args": {"url": "u"}, "wait_ms": 50}]
    }))
    .unwrap();
    let options = RunOptions {
        track: Some(Arc::new(track)),
        ..RunOptions::default()
    };
    let bus = Arc::new(EventBus::new());
    let spec = TaskSpec::new("q");
    run_task(&spec, provider.clone(), &page_tool("p"), &bus, &options).unwrap();
    let started = of_type(&bus, "harness.turn.started");
    assert_eq!(started[0], json!({"step": 1, "replay": true}));
    assert_eq!(started[1], json!({"step": 1}));
    let sent = &provider.1.lock().unwrap()[0];
    assert_eq!(sent[2]["content"], "(replay step 1)");
    assert_eq!(sent[2]["tool_calls"][0]["args"]["url"], "u");
    assert!(sent[4]["content"]
        .as_str()
        .unwrap()
        .contains("navigation above is complete"));
}

#[test]
fn a_rerun_of_a_task_id_does_not_see_the_previous_runs_events() {
    // The first run fetched a page; the second only answers. A validator
    // that needs a fetched page must not find the first run's.
    struct NeedsPage;
    impl Validator for NeedsPage {
        fn check(&self, _: &RunResult, ctx: &dyn RunContext) -> Result<Option<Verdict>, PluginError> {
            let f = EventFilter::all().with(FilterField::Type, Some("data.source.fetched"));
            let pages = ctx.query(&f, None, 0)?;
            let own = ctx.event_count();
            Ok(pages
                .is_empty()
                .then(|| Verdict::new(Severity::Terminal, "needs_page", format!("no page among {own} events"))))
        }
    }
    let mut reg = page_tool("p");
    reg.register_native(
        "needs_page",
        Envelope::NONE,
        PluginObject::Validator(Arc::new(NeedsPage)),
    )
    .unwrap();
    let bus = Arc::new(EventBus::new());
    let spec = TaskSpec::new("q");
    let first = recorder(json!([{"tool_calls": [{"name": "fetch", "args": {}}]}, {"text": "{\"a\": 1}"}]));
    assert_eq!(
        run_task(&spec, first, &reg, &bus, &RunOptions::default())
            .unwrap()
            .status,
        Status::Success
    );
    let second = recorder(json!([{"text": "{\"a\": 1}"}]));
    let r = run_task(&spec, second, &reg, &bus, &RunOptions::default()).unwrap();
    assert_eq!(r.reason.as_deref(), Some("needs_page"), "{r:?}");
    let v = of_type(&bus, "harness.validation.failed");
    assert_eq!(v[0]["detail"], "no page among 4 events", "the count is this run's too");
}

#[test]
fn a_pipeline_run_twice_matches_the_reference_and_skips_what_it_finished() {
    let text = std::fs::read_to_string(workspace_root().join("tests/golden/scenarios.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let p = &doc["pipelines"][0];
    let name = p["name"].as_str().unwrap();
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join(format!("tests/golden/{name}.json"))).unwrap(),
    )
    .unwrap();
    let id: uuid::Uuid = p["id"].as_str().unwrap().parse().unwrap();
    let phases: Vec<PipelinePhase> = p["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ph| {
            let task = ph["task"].clone();
            PipelinePhase {
                name: ph["name"].as_str().unwrap().into(),
                build: Box::new(move |_| Ok(serde_json::from_value(task.clone()).unwrap())),
            }
        })
        .collect();
    let bus = Arc::new(EventBus::new());
    let mut results = Vec::new();
    for run in p["runs"].as_array().unwrap() {
        let provider = Arc::new(ScenarioProvider {
            responses: run["responses"].as_array().unwrap().clone(),
            next: AtomicUsize::new(0),
        });
        let out = run_pipeline(
            &phases,
            provider,
            &Registry::new(),
            &bus,
            &RunOptions::default(),
            Some(id),
        )
        .unwrap();
        results.push(json!({"status": out.status, "value": out.value, "failed_phase": out.failed_phase}));
    }
    assert_eq!(Value::Array(results), golden["results"]);
    let want: Vec<String> = serde_json::from_value(golden["event_types"].clone()).unwrap();
    assert_eq!(event_types(&bus), want);
    let mut tasks: Vec<String> = bus
        .query(&EventFilter::all(), None, 0)
        .unwrap()
        .iter()
        .map(|e| e.event.task_id().to_string())
        .collect();
    tasks.sort();
    tasks.dedup();
    assert_eq!(
        Value::from(tasks),
        golden["task_ids"],
        "phase task ids are the reference's uuid5"
    );
    assert!(golden["task_ids"]
        .as_array()
        .unwrap()
        .contains(&json!(phase_task_id(id, "find").to_string())));
}

#[test]
fn a_run_cut_off_after_a_replay_resumes_with_the_replayed_history_and_its_spend() {
    // A run that replayed a step, then had the model call a tool; its log is
    // cut after that call returned, as if the process had died there.
    let track: zu_runtime::Track = serde_json::from_value(json!({
        "task": "q", "steps": [{"tool": "fetch", "args": {"url": "replayed"}}]
    }))
    .unwrap();
    let spec = TaskSpec::new("q");
    let first = recorder(json!([
        {"tool_calls": [{"name": "fetch", "args": {"url": "by-model"}}], "usage": {"input_tokens": 7, "output_tokens": 3}},
        {"text": "{\"never\": 1}"}
    ]));
    let options = RunOptions {
        track: Some(Arc::new(track)),
        ..RunOptions::default()
    };
    let whole = Arc::new(EventBus::new());
    run_task(&spec, first, &page_tool("p"), &whole, &options).unwrap();
    let events = whole.query(&EventFilter::all(), None, 0).unwrap();
    let cut = events
        .iter()
        .rposition(|e| e.event.event_type() == "harness.tool.returned")
        .unwrap();
    let log = Arc::new(EventBus::new());
    for e in &events[..=cut] {
        log.publish((*e.event).clone()).unwrap();
    }

    let next = recorder(json!([{"text": "{\"resumed\": true}"}]));
    let r = zu_runtime::resume_task(
        spec.task_id,
        next.clone(),
        &page_tool("p"),
        &log,
        &RunOptions::default(),
    )
    .unwrap();
    assert_eq!(r.value.unwrap()["resumed"], true);
    let sent = &next.1.lock().unwrap()[0];
    let contents: Vec<String> = sent
        .iter()
        .map(|m| m["content"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(sent[2]["content"], "(replay step 1)", "{contents:?}");
    assert_eq!(sent[2]["tool_calls"][0]["args"]["url"], "replayed");
    let model_call = sent
        .iter()
        .find(|m| m["role"] == "assistant" && m["tool_calls"][0]["args"]["url"] == "by-model");
    assert!(model_call.is_some(), "{sent:?}");
    assert_eq!(sent.iter().filter(|m| m["role"] == "tool").count(), 2);
    let resumed = of_type(&log, "harness.task.resumed");
    assert_eq!(
        resumed[0]["step"], 1,
        "it goes on at the end of step 1, whose call returned"
    );
    assert_eq!(resumed[0]["tokens"], 10);
    let turns = of_type(&log, "harness.turn.started");
    assert_eq!(turns.last().unwrap()["step"], 2, "the model's next turn is step 2");
    let invoked = of_type(&log, "harness.tool.invoked");
    assert_eq!(invoked.len(), 2, "no call made again");
    let refused = zu_runtime::resume_task(
        spec.task_id,
        recorder(json!([])),
        &page_tool("p"),
        &log,
        &RunOptions::default(),
    );
    assert!(
        matches!(refused, Err(zu_runtime::RunError::Resume(_))),
        "an ended run is not resumed"
    );
}
