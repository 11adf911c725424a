//! Criterion micro-benchmarks of the hot paths, so a regression shows before
//! it lands: publish, query, count, scope, the JSON boundary, and (when the
//! release plugin libraries are built) one FFI tool call. The `floor:` group
//! times the primitives the README's analysis of the missed targets rests on.

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use serde_json::json;
use zu_bench::workloads::{make_event, scope_events};
use zu_loader::Loader;
use zu_plugin_api::contracts::{JsonObject, TaskSpec};
use zu_plugin_api::filter::{EventFilter, FilterField};
use zu_runtime::{EventBus, MemorySink, Registry, RunView, SessionStore};

/// The allocator the `zu` binary ships with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn publish(c: &mut Criterion) {
    let mut bus = EventBus::new();
    bus.subscribe(Arc::new(SessionStore::default()));
    c.bench_function("bus publish (memory + session store)", |b| {
        // A fresh event each time (built outside the timing) so no append is a duplicate.
        b.iter_batched(
            || Arc::new(make_event(0, "harness.tool.invoked")),
            |e| bus.publish_shared(black_box(&e)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("event build", |b| {
        b.iter(|| black_box(make_event(black_box(7), "harness.tool.invoked")))
    });
}

fn query(c: &mut Criterion) {
    let sink = MemorySink::new();
    let types = [
        "harness.turn.started",
        "harness.tool.invoked",
        "harness.tool.returned",
        "harness.turn.completed",
    ];
    for i in 0..100_000 {
        sink.append_shared(Arc::new(make_event(i, types[i % 4])));
    }
    let hit = EventFilter::all().with(FilterField::Type, Some("harness.tool.invoked"));
    c.bench_function("query hit limit 10 (100k log)", |b| {
        b.iter(|| black_box(sink.query_shared(&hit, Some(10), 0)))
    });
    c.bench_function("count (100k log)", |b| b.iter(|| black_box(sink.count_matching(&hit))));
}

fn scope(c: &mut Criterion) {
    let e = scope_events(1).remove(0);
    c.bench_function("scope_event (2KB field)", |b| {
        b.iter(|| black_box(zu_runtime::view::scope_event(&e, false)))
    });
}

fn json_boundary(c: &mut Criterion) {
    let args: JsonObject = json!({"x": 1}).as_object().cloned().unwrap();
    c.bench_function("JSON boundary: args out, observation in", |b| {
        b.iter(|| {
            let text = serde_json::to_string(black_box(&args)).unwrap();
            let back: JsonObject = serde_json::from_str(&text).unwrap();
            let obs = serde_json::to_string(&json!({"ok": true})).unwrap();
            black_box((back, serde_json::from_str::<JsonObject>(&obs).unwrap()))
        })
    });
}

fn ffi_call(c: &mut Criterion) {
    let exe = std::env::current_exe().unwrap();
    // target/release/deps/hot_paths-HASH -> target/release
    let Some(lib) = exe.parent().and_then(|d| d.parent()).map(|d| {
        d.join(format!(
            "{}zu_plugin_noop{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        ))
    }) else {
        return;
    };
    if !lib.exists() {
        eprintln!(
            "skipping the FFI call benchmark: build {} first (cargo build --release -p zu-plugin-noop)",
            lib.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(lib.file_name().unwrap());
    std::fs::copy(&lib, &copy).unwrap();
    let mut reg = Registry::new();
    Loader::new().load_file(&mut reg, &copy);
    let tool = reg.tool("noop").expect("noop loads");
    let view = RunView::new(Arc::new(TaskSpec::new("bench")), Arc::new(EventBus::new()), None);
    let args: JsonObject = json!({"x": 1}).as_object().cloned().unwrap();
    c.bench_function("FFI tool call (noop .so, small JSON)", |b| {
        b.iter(|| black_box(tool.call(&view, args.clone()).unwrap()))
    });
}

/// What the missed speed targets cannot go below (see README, Performance).
fn floors(c: &mut Criterion) {
    use sha2::{Digest, Sha256};
    let lock = std::sync::Mutex::new(0u64);
    c.bench_function("floor: uncontended Mutex lock + unlock", |b| {
        b.iter(|| *black_box(&lock).lock().unwrap() += 1)
    });
    let shared = Arc::new(0u64);
    c.bench_function("floor: Arc clone + drop", |b| {
        b.iter(|| black_box(Arc::clone(black_box(&shared))))
    });
    let text = "abcdefghijklmnopqrstuvwxyz0123456789".repeat(57)[..2048].to_owned();
    c.bench_function("floor: SHA-256 of 2 KB", |b| {
        b.iter(|| black_box(Sha256::digest(black_box(&text).as_bytes())))
    });
    c.bench_function("floor: the workload's payload maps, built and dropped", |b| {
        b.iter(|| black_box(json!({"tool": "noop", "args": {"i": black_box(7)}})))
    });
    let payload = json!({"tool": "noop", "args": {"i": 7}});
    c.bench_function("floor: payload encoded to JSON text", |b| {
        b.iter(|| black_box(serde_json::value::to_raw_value(black_box(&payload)).unwrap()))
    });
    c.bench_function("floor: wall-clock read", |b| {
        b.iter(|| black_box(std::time::SystemTime::now()))
    });
}

criterion_group!(benches, publish, query, scope, json_boundary, ffi_call, floors);
criterion_main!(benches);
