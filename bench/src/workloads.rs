//! The reference's workloads, one to one (see
//! `shared/bench/python-anchor/README.md`): bus publish, event build +
//! publish, sink query/count, run_task at K=1000/100/3, scope_event, registry
//! registration, and the peak RSS of 100k published events. Each checks that
//! the work really happened, as the reference does.

use std::cell::RefCell;
use std::sync::Arc;

use serde_json::{json, Value};
use uuid::Uuid;
use zu_plugin_api::contracts::{Event, JsonObject};
use zu_plugin_api::filter::{EventFilter, FilterField};
use zu_plugin_api::version::Kind;
use zu_runtime::{EventBus, MemorySink, PluginInfo, PluginObject, Registry, SessionStore};

use crate::harness::{check, measure, measure_repeated, BenchError};

pub const TRACE_ID: Uuid = Uuid::from_u128(0x00000000_0000_4000_8000_000000000001);
pub const TASK_ID: Uuid = TRACE_ID;
pub const PARENT_ID: Uuid = Uuid::from_u128(0x00000000_0000_4000_8000_000000000002);
pub const TOOL_INVOKED: &str = "harness.tool.invoked";
const SINK_TYPE_CYCLE: [&str; 4] = [
    "harness.turn.started",
    "harness.tool.invoked",
    "harness.tool.returned",
    "harness.turn.completed",
];
const QUERY_HIT_TYPE: &str = "harness.tool.invoked";
const QUERY_MISS_TYPE: &str = "harness.task.completed";

/// `{"tool": "noop", "args": {"i": i}}`: what the loop puts on a tool.invoked event.
pub fn small_payload(i: usize) -> JsonObject {
    let mut args = JsonObject::new();
    args.insert("i".into(), i.into());
    let mut p = JsonObject::new();
    p.insert("tool".into(), "noop".into());
    p.insert("args".into(), Value::Object(args));
    p
}

pub fn make_event(i: usize, ty: &'static str) -> Event {
    Event::new(TRACE_ID, TASK_ID, Some(PARENT_ID), ty, "bench", small_payload(i)).expect("namespaced")
}

/// The workloads' bus: an in-memory log with one `SessionStore` subscribed.
pub fn bus_with_store() -> (EventBus, Arc<SessionStore>, Arc<MemorySink>) {
    let sink = Arc::new(MemorySink::new());
    let store = Arc::new(SessionStore::default());
    let mut bus = EventBus::with_memory(sink.clone());
    bus.subscribe(store.clone());
    (bus, store, sink)
}

/// `bus_publish_memory`, `event_build_publish`, and the breakdown figures.
pub fn bench_bus(n: usize) -> Result<(Value, Value, Value), BenchError> {
    let prebuilt: Vec<Arc<Event>> = (0..n).map(|i| Arc::new(make_event(i, TOOL_INVOKED))).collect();
    // The last repetition's state is kept so it can be checked after timing.
    type Kept = (Arc<EventBus>, Arc<SessionStore>, Arc<MemorySink>);
    let last: RefCell<Option<Kept>> = RefCell::new(None);
    let setup = || {
        let (bus, store, sink) = bus_with_store();
        let bus = Arc::new(bus);
        *last.borrow_mut() = Some((bus.clone(), store, sink));
        bus
    };
    let verify = || -> Result<(), BenchError> {
        let (bus, store, sink) = last.borrow_mut().take().expect("a repetition ran");
        check(sink.len() == n, "sink lost events")?;
        check(store.event_count(TASK_ID) == n as u64, "SessionStore missed events")?;
        check(bus.failures().is_empty(), "subscriber failed")
    };
    let publish = measure(
        "bus_publish_memory",
        n as u64,
        "events/s",
        json!({"n": n}),
        setup,
        |bus| {
            for e in &prebuilt {
                bus.publish_shared(e).expect("memory sink");
            }
        },
    );
    verify()?;
    let build = measure(
        "event_build_publish",
        n as u64,
        "events/s",
        json!({"n": n}),
        setup,
        |bus| {
            for i in 0..n {
                bus.publish(make_event(i, TOOL_INVOKED)).expect("memory sink");
            }
        },
    );
    verify()?;

    let build_only = measure(
        "  breakdown: Event build only",
        n as u64,
        "events/s",
        json!({"n": n}),
        || (),
        |_| {
            for i in 0..n {
                std::hint::black_box(make_event(i, TOOL_INVOKED));
            }
        },
    );
    let append_only = measure(
        "  breakdown: MemorySink append",
        n as u64,
        "events/s",
        json!({"n": n}),
        MemorySink::new,
        |sink| {
            for e in &prebuilt {
                sink.append_shared(e.clone());
            }
        },
    );
    let no_sub = measure(
        "  breakdown: publish, 0 subscribers",
        n as u64,
        "events/s",
        json!({"n": n}),
        EventBus::new,
        |bus| {
            for e in &prebuilt {
                bus.publish_shared(e).expect("memory sink");
            }
        },
    );
    let breakdown = json!({
        "event_build_only": build_only,
        "sink_append_only": append_only,
        "bus_publish_no_subscriber": no_sub,
    });
    Ok((publish, build, breakdown))
}

/// `sink_query`: hit and miss queries with limit 10, and count, on an
/// in-memory sink of `n` events cycling four types.
pub fn bench_sink_query(n: usize, q_hit: usize, q_scan: usize) -> Result<Value, BenchError> {
    let sink = MemorySink::new();
    for i in 0..n {
        sink.append_shared(Arc::new(make_event(i, SINK_TYPE_CYCLE[i % 4])));
    }
    check(sink.len() == n, "sink size mismatch")?;
    let hit_expected = (0..n).filter(|i| SINK_TYPE_CYCLE[i % 4] == QUERY_HIT_TYPE).count() as u64;
    let hit = EventFilter::all().with(FilterField::Type, Some(QUERY_HIT_TYPE));
    let miss = EventFilter::all().with(FilterField::Type, Some(QUERY_MISS_TYPE));
    let got = sink.query_shared(&hit, Some(10), 0);
    check(
        got.len() == 10 && got.iter().all(|e| e.event.event_type() == QUERY_HIT_TYPE),
        "query(hit) wrong result",
    )?;
    check(got[0].seq == 2, "query(hit): first match is not at seq 2")?;
    check(
        sink.query_shared(&miss, Some(10), 0).is_empty(),
        "query(miss) wrong result",
    )?;
    check(sink.count_matching(&hit) == hit_expected, "count wrong result")?;

    let qh = measure_repeated(
        "sink_query hit limit=10",
        q_hit,
        "queries/s",
        json!({"type": QUERY_HIT_TYPE, "matches_in_sink": hit_expected}),
        || sink.query_shared(&hit, Some(10), 0),
    );
    let qm = measure_repeated(
        "sink_query miss limit=10",
        q_scan,
        "queries/s",
        json!({"type": QUERY_MISS_TYPE, "matches_in_sink": 0}),
        || sink.query_shared(&miss, Some(10), 0),
    );
    let c = measure_repeated(
        "sink count",
        q_scan,
        "queries/s",
        json!({"type": QUERY_HIT_TYPE, "result": hit_expected}),
        || sink.count_matching(&hit),
    );
    Ok(json!({"sink_size": n, "query_hit_limit10": qh, "query_miss_limit10": qm, "count": c}))
}

/// `n` events as the `scope_event` workload has them: `harness.tool.returned`
/// with `{"step": 1, "tool": "noop", "text": <2048 ASCII characters>}`.
pub fn scope_events(n: usize) -> Vec<Event> {
    let text = "abcdefghijklmnopqrstuvwxyz0123456789".repeat(57)[..2048].to_owned();
    let payload = json!({"step": 1, "tool": "noop", "text": text})
        .as_object()
        .cloned()
        .unwrap();
    (0..n)
        .map(|_| {
            Event::new(
                TRACE_ID,
                TASK_ID,
                Some(PARENT_ID),
                "harness.tool.returned",
                "noop",
                payload.clone(),
            )
            .unwrap()
        })
        .collect()
}

/// `scope_event`: the scoped view of events with a 2 KB string field.
pub fn bench_scope_event(n: usize) -> Result<Value, BenchError> {
    let events = scope_events(n);
    let v = zu_runtime::view::scope_event(&events[0], false);
    check(
        v["payload"]["text"]["_type"] == "str" && v["payload"]["text"]["len"] == 2048,
        "scope_event did not summarize",
    )?;
    check(
        v["payload"]["tool"] == "noop" && v["payload"]["step"] == 1,
        "scope_event allowlist wrong",
    )?;
    Ok(measure(
        "scope_event (2KB str field)",
        n as u64,
        "events/s",
        json!({"n": n, "payload_str_bytes": 2048}),
        || (),
        |_| {
            for e in &events {
                std::hint::black_box(zu_runtime::view::scope_event(e, false));
            }
        },
    ))
}

/// `registry_register`: N distinct names, the same object each time.
pub fn bench_registry(n: usize) -> Result<Value, BenchError> {
    use zu_plugin_api::ports::Plugin;
    let names: Vec<String> = (0..n).map(|i| format!("tool_{i}")).collect();
    let object = PluginObject::Tool(Arc::new(zu_plugin_noop::Noop));
    // The last repetition's registry is kept so it can be checked after timing.
    let last: RefCell<Option<Registry>> = RefCell::new(None);
    let m = measure(
        "registry_register",
        n as u64,
        "registrations/s",
        json!({"n": n}),
        || {
            last.borrow_mut().take();
            Registry::new()
        },
        |reg| {
            for name in &names {
                reg.register(
                    PluginInfo::native(Kind::Tools, name, zu_plugin_noop::Noop::ENVELOPE),
                    object.clone(),
                )
                .expect("distinct names");
            }
            *last.borrow_mut() = Some(std::mem::take(reg)); // O(1): moves the root
        },
    );
    let reg = last.borrow_mut().take().expect("a repetition ran");
    check(reg.names(Kind::Tools).len() == n, "registry lost registrations")?;
    Ok(m)
}

/// The child side of `peak_rss`: publish `n` events through a bus with a
/// session store and report the resident set before and after.
pub fn rss_child(n: usize) -> Value {
    use crate::harness::{maxrss_kib, proc_status_kib};
    let base = maxrss_kib();
    let base_rss = proc_status_kib("VmRSS");
    let store = Arc::new(SessionStore::default());
    let sink = Arc::new(MemorySink::new());
    let mut bus = EventBus::with_memory(sink.clone());
    bus.subscribe(store);
    for i in 0..n {
        bus.publish(make_event(i, TOOL_INVOKED)).expect("memory sink");
    }
    assert_eq!(sink.len(), n, "rss child: sink size mismatch");
    json!({
        "events": n,
        "maxrss_after_import_kib": base,
        "maxrss_after_load_kib": maxrss_kib(),
        "proc_vmrss_after_import_kib": base_rss,
        "proc_vmhwm_after_load_kib": proc_status_kib("VmHWM"),
    })
}

/// `peak_rss`, measured in a fresh child process (this binary, `--rss-child N`).
pub fn bench_rss(n: usize) -> Result<Value, BenchError> {
    let exe = std::env::current_exe().map_err(|e| BenchError(e.to_string()))?;
    let out = std::process::Command::new(exe)
        .args(["--rss-child", &n.to_string()])
        .output()
        .map_err(|e| BenchError(e.to_string()))?;
    check(
        out.status.success(),
        format!("rss child failed: {}", String::from_utf8_lossy(&out.stderr)),
    )?;
    let mut d: Value = serde_json::from_slice(&out.stdout).map_err(|e| BenchError(e.to_string()))?;
    let after = d["maxrss_after_load_kib"].as_f64().unwrap_or(0.0);
    let before = d["maxrss_after_import_kib"].as_f64().unwrap_or(0.0);
    d["peak_rss_mib"] = (after / 1024.0).into();
    d["delta_mib"] = ((after - before) / 1024.0).into();
    d["bytes_per_event"] = ((after - before) * 1024.0 / n as f64).into();
    eprintln!(
        "  {:<40} {:.1} MiB (+{:.1} MiB over start, {:.0} B/event)",
        format!("peak_rss ({n} events)"),
        after / 1024.0,
        (after - before) / 1024.0,
        (after - before) * 1024.0 / n as f64
    );
    Ok(d)
}
