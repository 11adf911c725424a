//! The reference's `run_task` workloads: K=1000/100 steps and K=3 runs with
//! the no-op plugins, in-process or loaded from their libraries, each run
//! checked for the events and plugin calls it must have made.

use std::sync::Arc;

use serde_json::{json, Value};
use zu_plugin_api::contracts::{Budget, Status, TaskSpec};
use zu_plugin_api::filter::EventFilter;
use zu_plugin_api::ports::{Envelope, EventSink, ModelProvider};
use zu_runtime::{run_task, EventBus, PluginObject, Registry, RunOptions};

use crate::harness::{check, measure, BenchError};

/// Where the loop's plugins come from: in-process values, or libraries.
pub struct LoopPlugins {
    /// The registry holding exactly the noop tool, null detector and null validator.
    pub registry: Registry,
    /// Makes a fresh provider for a K-turn run.
    pub provider: Box<dyn Fn(usize) -> Arc<dyn ModelProvider>>,
    /// Reads and resets the plugins' call counters: (tool, detector, validator).
    pub counters: Box<dyn Fn() -> (u64, u64, u64)>,
}

/// The loop's plugins registered in-process.
pub fn in_process() -> LoopPlugins {
    use zu_plugin_api::ports::{Plugin, Tool};
    use zu_plugin_noop::{Noop, NoopStats, NullDetector, NullValidator};
    let mut registry = Registry::new();
    registry
        .register_native(Noop::NAME, Noop::ENVELOPE, PluginObject::Tool(Arc::new(Noop)))
        .unwrap();
    registry
        .register_native(
            NullDetector::NAME,
            Envelope::NONE,
            PluginObject::Detector(Arc::new(NullDetector)),
        )
        .unwrap();
    registry
        .register_native(
            NullValidator::NAME,
            Envelope::NONE,
            PluginObject::Validator(Arc::new(NullValidator)),
        )
        .unwrap();
    LoopPlugins {
        registry,
        provider: Box::new(|k| Arc::new(zu_plugin_noop::BenchScript::with_turns(k)) as Arc<dyn ModelProvider>),
        counters: Box::new(move || stats(&NoopStats as &dyn Tool)),
    }
}

/// A registry of exactly the loop's tool, detector and validator, taken
/// from a registry that loaded the noop library.
pub fn loop_registry(from: &Registry) -> Result<Registry, BenchError> {
    let mut registry = Registry::new();
    for (kind, name) in [
        (zu_plugin_api::version::Kind::Tools, "noop"),
        (zu_plugin_api::version::Kind::Detectors, "null_detector"),
        (zu_plugin_api::version::Kind::Validators, "null_validator"),
    ] {
        let entry = from
            .get(kind, name)
            .ok_or_else(|| BenchError(format!("{name} did not load")))?
            .clone();
        registry
            .register(entry.info, entry.object)
            .map_err(|e| BenchError(e.to_string()))?;
    }
    Ok(registry)
}

/// Reads and resets the noop plugins' counters through the `noop_stats` tool.
pub fn stats(tool: &dyn zu_plugin_api::ports::Tool) -> (u64, u64, u64) {
    let ctx = crate::boundary::idle_view();
    let out = tool
        .call(&ctx, json!({"reset": true}).as_object().cloned().unwrap())
        .expect("noop_stats");
    let get = |k: &str| out[k].as_u64().unwrap_or(u64::MAX);
    (get("tool_calls"), get("detector_calls"), get("validator_calls"))
}

/// One run's spec (K+5 steps, no practical wall time), a fresh provider for K
/// turns and a fresh bus, as the reference builds them outside the timing.
pub fn job(k: usize, plugins: &LoopPlugins) -> (TaskSpec, Arc<dyn ModelProvider>, Arc<EventBus>) {
    job_on(k, plugins, EventBus::new())
}

fn job_on(k: usize, plugins: &LoopPlugins, bus: EventBus) -> (TaskSpec, Arc<dyn ModelProvider>, Arc<EventBus>) {
    let mut spec = TaskSpec::new("bench");
    spec.budget = Budget {
        max_steps: k as u32 + 5,
        wall_time_s: 10_000,
        ..Budget::default()
    };
    (spec, (plugins.provider)(k), Arc::new(bus))
}

/// One K-step run logging into a fresh durable sink from `new_sink` the way
/// `zu run` does (a batched bus: the step's events are stored before each
/// provider and tool call, not one commit per event), in steps/s.
pub fn bench_run_into(
    plugins: &LoopPlugins,
    k: usize,
    label: &str,
    new_sink: &dyn Fn() -> Arc<dyn EventSink>,
) -> Result<Value, BenchError> {
    (plugins.counters)();
    let mut results = Vec::new();
    let m = measure(
        &format!("run_task K={k} into {label}"),
        k as u64,
        "steps/s",
        json!({"k": k, "events_per_run": 4 * k + 2, "log": label}),
        || job_on(k, plugins, EventBus::with_sink_batched(new_sink())),
        |(spec, provider, bus)| {
            let r = run_task(spec, provider.clone(), &plugins.registry, bus, &RunOptions::default());
            results.push((r, bus.clone()));
        },
    );
    for (r, bus) in &results {
        verify_run(k, r.as_ref().map_err(|e| BenchError(e.to_string()))?, bus)?;
    }
    let (tools, _, _) = (plugins.counters)();
    check(
        tools == (k as u64 - 1) * results.len() as u64,
        format!("run_task K={k} into {label}: tool ran {tools}x"),
    )?;
    Ok(m)
}

fn verify_run(k: usize, result: &zu_plugin_api::contracts::RunResult, bus: &EventBus) -> Result<(), BenchError> {
    check(
        result.status == Status::Success,
        format!("run_task K={k}: status {:?} ({:?})", result.status, result.reason),
    )?;
    check(
        result.value == json!({"answer": 1}).as_object().cloned(),
        format!("run_task K={k}: value {:?}", result.value),
    )?;
    let mut events = bus
        .query(&EventFilter::all(), None, 0)
        .map_err(|e| BenchError(e.to_string()))?;
    // Sandboxed plugins add the record of their sandboxes; the run's own events are 4K+2.
    events.retain(|e| e.event.event_type() != zu_plugin_api::events::SANDBOX_APPLIED);
    check(
        events.len() == 4 * k + 2,
        format!("run_task K={k}: {} events, expected {}", events.len(), 4 * k + 2),
    )?;
    let returned: Vec<_> = events
        .iter()
        .filter(|e| e.event.event_type() == "harness.tool.returned")
        .collect();
    check(
        returned.len() == k - 1,
        format!("run_task K={k}: tool not dispatched K-1 times"),
    )?;
    check(
        returned
            .iter()
            .all(|e| e.event.payload()["observation"] == json!({"ok": true})),
        format!("run_task K={k}: tool failed"),
    )?;
    let turns = events
        .iter()
        .filter(|e| e.event.event_type() == "harness.turn.completed")
        .count();
    check(turns == k, format!("run_task K={k}: provider called {turns} times"))?;
    check(
        bus.failures().is_empty(),
        format!("run_task K={k}: subscriber failures"),
    )
}

/// `run_task_steps`: one K-step run (steps/s) for each K in `ks`, and
/// `runs_short` sequential K=`k_short` runs (runs/s).
pub fn bench_run_task(
    plugins: &LoopPlugins,
    ks: &[usize],
    k_short: usize,
    runs_short: usize,
    label: &str,
) -> Result<Value, BenchError> {
    let mut out = serde_json::Map::new();
    (plugins.counters)();
    for &k in ks {
        let mut results = Vec::new();
        let m = measure(
            &format!("{label}run_task K={k} steps"),
            k as u64,
            "steps/s",
            json!({"k": k, "events_per_run": 4 * k + 2}),
            || job(k, plugins),
            |(spec, provider, bus)| {
                let r = run_task(spec, provider.clone(), &plugins.registry, bus, &RunOptions::default());
                results.push((r, bus.clone()));
            },
        );
        for (r, bus) in &results {
            let r = r.as_ref().map_err(|e| BenchError(e.to_string()))?;
            verify_run(k, r, bus)?;
        }
        let reps = results.len() as u64;
        let (tools, detectors, validators) = (plugins.counters)();
        check(
            tools == (k as u64 - 1) * reps,
            format!("run_task K={k}: tool ran {tools}x"),
        )?;
        check(
            detectors == (k as u64 - 1) * reps,
            format!("run_task K={k}: detector ran {detectors}x"),
        )?;
        check(
            validators == reps,
            format!("run_task K={k}: validator ran {validators}x"),
        )?;
        out.insert(format!("k{k}_steps_per_s"), m);
    }
    let mut results = Vec::new();
    let m = measure(
        &format!("{label}run_task K={k_short} whole runs"),
        runs_short as u64,
        "runs/s",
        json!({"k": k_short, "runs_per_rep": runs_short, "events_per_run": 4 * k_short + 2}),
        || (0..runs_short).map(|_| job(k_short, plugins)).collect::<Vec<_>>(),
        |jobs| {
            for (spec, provider, bus) in jobs.iter() {
                let r = run_task(spec, provider.clone(), &plugins.registry, bus, &RunOptions::default());
                results.push((r, bus.clone()));
            }
        },
    );
    for (r, bus) in &results {
        verify_run(k_short, r.as_ref().map_err(|e| BenchError(e.to_string()))?, bus)?;
    }
    let (_, detectors, validators) = (plugins.counters)();
    let runs = results.len() as u64;
    check(
        detectors == (k_short as u64 - 1) * runs && validators == runs,
        "run_task K=3: checks did not run",
    )?;
    out.insert(format!("k{k_short}_runs_per_s"), m);
    Ok(Value::Object(out))
}

/// A K-step track of the noop tool (K-1 calls with the args the model-driven
/// run makes), for the same task as [`job`].
pub fn noop_track(k: usize) -> zu_runtime::Track {
    zu_runtime::Track {
        task: "bench".into(),
        model: None,
        steps: (1..k)
            .map(|i| zu_runtime::TrackStep {
                tool: "noop".into(),
                args: json!({"x": i}).as_object().cloned().unwrap_or_default(),
                wait_ms: 0,
                tier: 1,
            })
            .collect(),
    }
}

/// `run_task_replay`: a K-step run whose K-1 tool calls replay a track (no
/// model call) and whose final answer is the one model turn, in steps/s:
/// beside the model-driven K-step figure.
pub fn bench_replay(plugins: &LoopPlugins, k: usize, label: &str) -> Result<Value, BenchError> {
    let options = RunOptions {
        track: Some(Arc::new(noop_track(k))),
        ..RunOptions::default()
    };
    (plugins.counters)();
    let mut results = Vec::new();
    let m = measure(
        &format!("{label}run_task K={k} replayed"),
        k as u64,
        "steps/s",
        json!({"k": k, "replayed_steps": k - 1, "model_calls": 1}),
        || {
            let (spec, _, bus) = job(k, plugins);
            (spec, (plugins.provider)(1), bus)
        },
        |(spec, provider, bus)| {
            let r = run_task(spec, provider.clone(), &plugins.registry, bus, &options);
            results.push((r, bus.clone()));
        },
    );
    for (r, bus) in &results {
        let r = r.as_ref().map_err(|e| BenchError(e.to_string()))?;
        check(r.status == Status::Success, format!("replay K={k}: {r:?}"))?;
        let all = bus
            .query(&EventFilter::all(), None, 0)
            .map_err(|e| BenchError(e.to_string()))?;
        let replayed = all
            .iter()
            .filter(|e| e.event.event_type() == "harness.turn.started" && e.event.payload().get("replay").is_some())
            .count();
        let turns = all
            .iter()
            .filter(|e| e.event.event_type() == "harness.turn.completed")
            .count();
        check(
            replayed == k - 1 && turns == 1,
            format!("replay K={k}: {replayed} replayed, {turns} model turns"),
        )?;
    }
    let (tools, _, _) = (plugins.counters)();
    check(
        tools == (k as u64 - 1) * results.len() as u64,
        format!("replay K={k}: tool ran {tools}x"),
    )?;
    Ok(m)
}
