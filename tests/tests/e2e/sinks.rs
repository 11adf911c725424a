//! The sink contract, run against the memory sink and the sqlite and jsonl
//! sink plugins through the real boundary so the three cannot drift; crash
//! durability with a SIGKILLed writer; and `zu events`.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde_json::json;
use uuid::Uuid;
use zu_loader::Loader;
use zu_plugin_api::filter::{EventFilter, FilterError, FilterField};
use zu_plugin_api::prelude::*;
use zu_plugin_api::version::Kind;
use zu_runtime::{EventBus, MemorySink, Registry};
use zu_tests::{artifacts, plugin_dir};

/// A sink plugin loaded from its library with `config`, and the directory holding it.
pub(crate) fn plugin_sink(lib: &str, name: &str, config: serde_json::Value) -> (Arc<dyn EventSink>, tempfile::TempDir) {
    let dir = plugin_dir(&[artifacts().lib(lib)]);
    let mut reg = Registry::new();
    let mut loader = Loader::new();
    loader.set_config(Kind::Sinks, name, config);
    loader.load_dir(&mut reg, dir.path()).unwrap();
    let sink = reg.sink(name).unwrap_or_else(|| panic!("{name}: {:?}", reg.failures()));
    (sink, dir)
}

pub(crate) fn sqlite(path: &std::path::Path) -> (Arc<dyn EventSink>, tempfile::TempDir) {
    plugin_sink("zu_plugin_sqlite", "sqlite", json!({"path": path}))
}

pub(crate) fn jsonl(path: &std::path::Path) -> (Arc<dyn EventSink>, tempfile::TempDir) {
    plugin_sink("zu_plugin_jsonl", "jsonl", json!({"path": path}))
}

const TYPES: [&str; 4] = [
    "harness.turn.started",
    "harness.tool.invoked",
    "harness.tool.returned",
    "harness.turn.completed",
];

/// Twenty events over two traces, cycling four types, every third a root.
pub(crate) fn sample() -> Vec<Event> {
    let (t1, t2) = (Uuid::new_v4(), Uuid::new_v4());
    let parent = Uuid::new_v4();
    (0..20)
        .map(|i| {
            let trace = if i < 12 { t1 } else { t2 };
            let source = if i % 2 == 0 { "loop" } else { "tool" };
            let p = if i % 3 == 0 { None } else { Some(parent) };
            Event::new(
                trace,
                trace,
                p,
                TYPES[i % 4],
                source,
                json!({"i": i}).as_object().cloned().unwrap(),
            )
            .unwrap()
        })
        .collect()
}

pub(crate) fn ids(v: &[StoredEvent]) -> Vec<u64> {
    v.iter().map(|s| s.seq).collect()
}

/// The contract every sink keeps.
pub(crate) fn contract(sink: Arc<dyn EventSink>) {
    let events = sample();
    for e in &events {
        sink.append(e).unwrap();
    }
    sink.append(&events[5]).unwrap(); // idempotent
    let all = sink.query(&EventFilter::all(), None, 0).unwrap();
    assert_eq!(ids(&all), (1..=20).collect::<Vec<_>>());
    assert_eq!(
        all.iter().map(|s| s.event.clone()).collect::<Vec<_>>(),
        events,
        "read back intact, in order"
    );
    assert_eq!(sink.count(&EventFilter::all()).unwrap(), 20);

    let ty = EventFilter::all().with(FilterField::Type, Some(TYPES[1]));
    assert_eq!(ids(&sink.query(&ty, None, 0).unwrap()), [2, 6, 10, 14, 18]);
    assert_eq!(ids(&sink.query(&ty, Some(2), 0).unwrap()), [2, 6]);
    assert_eq!(ids(&sink.query(&ty, Some(2), 6).unwrap()), [10, 14]);
    assert_eq!(ids(&sink.query(&ty, None, 18).unwrap()), Vec::<u64>::new());
    assert_eq!(sink.count(&ty).unwrap(), 5);
    assert!(sink.query(&ty, Some(0), 0).unwrap().is_empty());

    let roots = EventFilter::all().with(FilterField::ParentId, None::<String>);
    assert_eq!(ids(&sink.query(&roots, None, 0).unwrap()), [1, 4, 7, 10, 13, 16, 19]);
    let trace2 = EventFilter::all().with(FilterField::TraceId, Some(events[15].trace_id().to_string()));
    assert_eq!(sink.count(&trace2).unwrap(), 8);
    let both = trace2
        .clone()
        .with(FilterField::Source, Some("tool"))
        .with(FilterField::Type, Some(TYPES[3]));
    assert_eq!(ids(&sink.query(&both, None, 0).unwrap()), [16, 20]);
    assert_eq!(sink.count(&both).unwrap(), 2);
    let one = EventFilter::all().with(FilterField::EventId, Some(events[7].event_id().to_string()));
    assert_eq!(ids(&sink.query(&one, None, 0).unwrap()), [8]);
    let task = EventFilter::all().with(FilterField::TaskId, Some(events[0].task_id().to_string()));
    assert_eq!(sink.count(&task).unwrap(), 12);
    for missing in [
        EventFilter::all().with(FilterField::Type, Some("harness.task.completed")),
        EventFilter::all().with(FilterField::TraceId, Some(Uuid::new_v4().to_string())),
        EventFilter::all().with(
            FilterField::TraceId,
            Some(events[0].trace_id().to_string().to_uppercase()),
        ),
        EventFilter::all().with(FilterField::Type, None::<String>),
    ] {
        assert!(sink.query(&missing, None, 0).unwrap().is_empty(), "{missing:?}");
        assert_eq!(sink.count(&missing).unwrap(), 0, "{missing:?}");
    }

    // Keyset-paged streaming through the bus sees everything once, in order.
    let bus = EventBus::with_sink(sink.clone());
    let streamed: Vec<u64> = bus.stream(&ty, 2).map(|e| e.unwrap().seq).collect();
    assert_eq!(streamed, [2, 6, 10, 14, 18]);
    assert_eq!(bus.stream(&EventFilter::all(), 3).count(), 20);

    // A batch is stored at once, idempotently, after what came before.
    let more: Vec<Event> = sample().into_iter().take(3).chain([events[0].clone()]).collect();
    sink.append_batch(&more).unwrap();
    assert_eq!(sink.count(&EventFilter::all()).unwrap(), 23);
    let tail = sink.query(&EventFilter::all(), None, 20).unwrap();
    assert_eq!(
        tail.iter().map(|s| s.event.clone()).collect::<Vec<_>>(),
        more[..3].to_vec()
    );
}

#[test]
fn memory_sink_keeps_the_contract() {
    contract(Arc::new(MemorySink::new()));
}

#[test]
fn sqlite_sink_keeps_the_contract_across_the_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, _plugins) = sqlite(&dir.path().join("zu.db"));
    contract(sink);
}

#[test]
fn jsonl_sink_keeps_the_contract_across_the_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, _plugins) = jsonl(&dir.path().join("zu.jsonl"));
    contract(sink);
}

#[test]
fn a_filter_on_an_unknown_key_is_a_typed_error_naming_the_allowed_keys() {
    let bad = json!({"type": "harness.a", "payload": "x"})
        .as_object()
        .cloned()
        .unwrap();
    let err = EventFilter::from_json(&bad).unwrap_err();
    assert_eq!(err, FilterError::UnknownKey { key: "payload".into() });
    assert!(err
        .to_string()
        .contains("allowed keys are event_id, trace_id, task_id, parent_id, type, source"));
}

#[test]
fn an_unconfigured_sink_loads_creates_nothing_and_says_so_on_use() {
    let plugins = plugin_dir(&[artifacts().lib("zu_plugin_sqlite"), artifacts().lib("zu_plugin_jsonl")]);
    let reg = crate::load(plugins.path());
    assert!(reg.failures().is_empty(), "{:?}", crate::codes(&reg));
    for name in ["sqlite", "jsonl"] {
        let err = reg.sink(name).unwrap().count(&EventFilter::all()).unwrap_err();
        assert!(err.to_string().contains("is not configured"), "{name}: {err}");
    }
}

#[test]
fn bad_sink_configs_and_a_corrupt_database_are_clear_load_errors() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.db");
    std::fs::write(&corrupt, vec![0x42; 4096]).unwrap();
    let plugins = plugin_dir(&[artifacts().lib("zu_plugin_sqlite"), artifacts().lib("zu_plugin_jsonl")]);
    for (name, config, needle) in [
        ("sqlite", json!({"path": corrupt}), "not a usable Zu event database"),
        ("sqlite", json!({"codec": null}), "has no \"path\""),
        (
            "sqlite",
            json!({"path": "x.db", "codec": {"kind": "rot13"}}),
            "unknown codec kind",
        ),
        ("jsonl", json!({"pth": "x"}), "unknown field `pth`"),
    ] {
        let mut reg = Registry::new();
        let mut loader = Loader::new();
        loader.set_config(Kind::Sinks, name, config);
        loader.load_dir(&mut reg, plugins.path()).unwrap();
        let f = reg
            .failures()
            .iter()
            .find(|f| f.name.as_deref() == Some(name))
            .expect("refused");
        assert_eq!(f.error.code(), "constructor_failed");
        assert!(f.error.to_string().contains(needle), "{}", f.error);
    }
}

/// Runs the writer child until it has reported `at_least` appends, kills it
/// with SIGKILL, and returns what it reported as durable.
pub(crate) fn kill_writer_mid_stream(
    lib: &str,
    name: &str,
    config: serde_json::Value,
    at_least: usize,
) -> Vec<(u64, Uuid)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sink_writer"))
        .arg(artifacts().lib(lib))
        .args([name, &config.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut reported = Vec::new();
    while reported.len() < at_least {
        let line = lines.next().expect("the writer keeps writing").unwrap();
        let (n, id) = line.split_once(' ').unwrap();
        reported.push((n.parse().unwrap(), id.parse().unwrap()));
    }
    child.kill().unwrap(); // SIGKILL: no destructors, no flush
    child.wait().unwrap();
    // Lines already in the pipe were durable too.
    for line in lines.map_while(Result::ok) {
        if let Some((n, id)) = line.split_once(' ') {
            reported.push((n.parse().unwrap(), id.parse().unwrap()));
        }
    }
    reported
}

pub(crate) fn assert_durable(sink: &dyn EventSink, reported: &[(u64, Uuid)]) {
    let stored = sink.query(&EventFilter::all(), None, 0).unwrap();
    let event_ids: Vec<Uuid> = stored.iter().map(|s| s.event.event_id()).collect();
    assert_eq!(
        event_ids.iter().collect::<HashSet<_>>().len(),
        event_ids.len(),
        "no duplicates"
    );
    assert_eq!(ids(&stored), (1..=stored.len() as u64).collect::<Vec<_>>(), "no gaps");
    assert!(stored.len() >= reported.len());
    for (i, (n, id)) in reported.iter().enumerate() {
        let s = &stored[i];
        assert_eq!(s.event.event_id(), *id, "append {n} is present, in order");
        assert_eq!(s.event.payload()["n"], json!(n), "append {n} is intact");
        assert_eq!(s.event.payload()["pad"].as_str().unwrap().len(), 200);
    }
}

#[test]
fn sqlite_appends_that_returned_survive_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zu.db");
    let reported = kill_writer_mid_stream("zu_plugin_sqlite", "sqlite", json!({"path": path}), 150);
    let (sink, _p) = sqlite(&path);
    assert_durable(&*sink, &reported);
}

#[test]
fn jsonl_appends_that_returned_survive_a_sigkill_and_a_torn_final_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zu.jsonl");
    let reported = kill_writer_mid_stream("zu_plugin_jsonl", "jsonl", json!({"path": path}), 150);
    // Whatever the kill left, add a torn final line as a crash mid-write would.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(br#"{"event_id": "9c"#)
        .unwrap();
    let (sink, _p) = jsonl(&path);
    assert_durable(&*sink, &reported);
    // Appending after the crash drops the torn tail and continues cleanly.
    let id = Uuid::new_v4();
    let next = Event::new(id, id, None, "harness.task.completed", "t", JsonObject::new()).unwrap();
    sink.append(&next).unwrap();
    let all = sink.query(&EventFilter::all(), None, 0).unwrap();
    assert_eq!(all.last().unwrap().event, next);
    assert_durable(&*sink, &reported);
}

pub(crate) fn zu_events(args: &[&str]) -> std::process::Output {
    Command::new(&artifacts().zu)
        .arg("events")
        .args(args)
        .env_remove("ZU_PLUGIN_PATH")
        .output()
        .unwrap()
}

#[test]
fn zu_events_reads_a_durable_log_filtered_and_scoped() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("zu.db");
    let (sink, plugins) = sqlite(&db);
    let events = sample();
    for e in &events {
        sink.append(e).unwrap();
    }
    sink.close().unwrap();
    let cfg = json!({"path": db}).to_string();
    let p = plugins.path().to_str().unwrap();
    let out = zu_events(&[
        "--plugins",
        p,
        "--sink",
        "sqlite",
        "--sink-config",
        &cfg,
        "--json",
        "--type",
        TYPES[1],
        "--limit",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect::<Vec<_>>(),
        [2, 6, 10]
    );
    assert_eq!(lines[0]["type"], TYPES[1]);
    assert_eq!(lines[0]["event_id"], events[1].event_id().to_string());
    assert_eq!(lines[0]["payload"]["i"], 1, "scalars render in the scoped view");

    let task = events[15].task_id().to_string();
    let out = zu_events(&[
        "--plugins",
        p,
        "--sink",
        "sqlite",
        "--sink-config",
        &cfg,
        "--json",
        "--task",
        &task,
        "--after-seq",
        "16",
    ]);
    let seqs: Vec<u64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [17, 18, 19, 20]);

    let table = zu_events(&[
        "--plugins",
        p,
        "--sink",
        "sqlite",
        "--sink-config",
        &cfg,
        "--source",
        "tool",
    ]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.starts_with("   SEQ"), "{text}");
    assert_eq!(text.lines().count(), 11, "header + 10 events from 'tool': {text}");
}

#[test]
fn zu_events_scopes_content_unless_full() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("zu.db");
    let (sink, plugins) = sqlite(&db);
    let id = Uuid::new_v4();
    let payload = json!({"tool": "http_fetch", "html": "<p>private page</p>"})
        .as_object()
        .cloned()
        .unwrap();
    sink.append(&Event::new(id, id, None, "data.source.fetched", "loop", payload).unwrap())
        .unwrap();
    sink.close().unwrap();
    let cfg = json!({"path": db}).to_string();
    let base = [
        "--plugins",
        plugins.path().to_str().unwrap(),
        "--sink",
        "sqlite",
        "--sink-config",
        &cfg,
        "--json",
    ];
    let scoped: serde_json::Value = serde_json::from_slice(&zu_events(&base).stdout).unwrap();
    assert_eq!(scoped["payload"]["tool"], "http_fetch");
    assert_eq!(scoped["payload"]["html"]["_type"], "str");
    assert_eq!(scoped["payload"]["html"]["len"], 19);
    let full: serde_json::Value =
        serde_json::from_slice(&zu_events(&[&base[..], &["--full"]].concat()).stdout).unwrap();
    assert_eq!(full["payload"]["html"], "<p>private page</p>");
}

#[test]
fn zu_events_follow_prints_events_as_they_are_appended() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("zu.jsonl");
    let (sink, plugins) = jsonl(&log);
    let cfg = json!({"path": log}).to_string();
    let mut child = Command::new(&artifacts().zu)
        .args([
            "events",
            "--plugins",
            plugins.path().to_str().unwrap(),
            "--sink",
            "jsonl",
            "--sink-config",
            &cfg,
        ])
        .args(["--json", "--follow", "--poll-ms", "20"])
        .env_remove("ZU_PLUGIN_PATH")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let events = sample();
    for e in &events[..3] {
        sink.append(e).unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(lines.next().unwrap().unwrap());
    }
    sink.append(&events[3]).unwrap();
    seen.push(lines.next().unwrap().unwrap());
    child.kill().unwrap();
    child.wait().unwrap();
    let got: Vec<String> = seen
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        got,
        events[..4].iter().map(|e| e.event_id().to_string()).collect::<Vec<_>>()
    );
}

#[test]
fn zu_events_says_clearly_when_the_sink_is_missing_or_misconfigured() {
    let plugins = plugin_dir(&[artifacts().lib("zu_plugin_sqlite")]);
    let p = plugins.path().to_str().unwrap();
    // A named plugin that is not loaded: 1; a malformed invocation: 2.
    let out = zu_events(&["--plugins", p, "--sink", "postgres"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no sink plugin named \"postgres\""));
    let out = zu_events(&["--plugins", p, "--sink", "sqlite", "--sink-config", "{}"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no \\\"path\\\"")
            || String::from_utf8_lossy(&out.stderr).contains("has no \"path\"")
    );
    let out = zu_events(&["--plugins", p, "--sink", "sqlite", "--sink-config", "{nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid --sink-config"));
}
