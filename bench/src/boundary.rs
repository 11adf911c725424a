//! Figures through the real plugin boundary, most with no twin in the
//! reference: the loop with its plugins loaded from `.so` files, one tool call
//! across the boundary, scanning and loading 100 libraries, and a detector
//! checkpoint at 10 and 100,000 logged events.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use zu_loader::Loader;
use zu_plugin_api::contracts::{Event, JsonObject, TaskSpec};
use zu_plugin_api::ports::ModelProvider;
use zu_plugin_api::version::Kind;
use zu_runtime::{EventBus, Registry, RunView};

use crate::harness::{check, measure, measure_repeated, BenchError};
use crate::runs::{loop_registry, stats, LoopPlugins};

/// A view of an idle run, for calling plugins outside the loop.
pub fn idle_view() -> RunView {
    RunView::new(Arc::new(TaskSpec::new("bench")), Arc::new(EventBus::new()), None)
}

/// Where the plugin libraries are: next to this binary (`target/release`).
pub fn library_dir() -> Result<PathBuf, BenchError> {
    let exe = std::env::current_exe().map_err(|e| BenchError(e.to_string()))?;
    let dir = exe
        .parent()
        .ok_or_else(|| BenchError("no directory for the bench binary".into()))?
        .to_owned();
    for lib in [
        "zu_plugin_noop",
        "zu_plugin_sqlite",
        "zu_plugin_jsonl",
        "zu_plugin_postgres",
        "zu_plugin_models",
    ] {
        let path = dir.join(lib_file(lib));
        check(
            path.exists(),
            format!(
                "{} is missing: build the plugins first: cargo build --release -p zu-plugin-noop -p zu-plugin-sqlite -p zu-plugin-jsonl -p zu-plugin-postgres -p zu-plugin-models",
                path.display()
            ),
        )?;
    }
    Ok(dir)
}

pub fn lib_file(name: &str) -> String {
    format!("{}{name}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX)
}

/// A private plugin directory holding copies of `libs` from `dir`.
pub(crate) fn plugin_dir(dir: &Path, libs: &[&str]) -> tempfile::TempDir {
    let out = tempfile::tempdir().expect("a temp dir");
    for lib in libs {
        std::fs::copy(dir.join(lib_file(lib)), out.path().join(lib_file(lib))).expect("copy a plugin library");
    }
    out
}

/// Loads `plugins` with `configs` into a fresh registry (a new Loader, so each
/// call constructs new instances; the libraries themselves open once).
pub(crate) fn load(plugins: &Path, configs: &[(Kind, &str, Value)]) -> Result<Registry, BenchError> {
    let mut registry = Registry::new();
    let mut loader = Loader::new();
    for (kind, name, value) in configs {
        loader.set_config(*kind, name, value.clone());
    }
    loader
        .load_dir(&mut registry, plugins)
        .map_err(|e| BenchError(e.to_string()))?;
    check(
        registry.failures().is_empty(),
        format!("plugins refused: {:?}", registry.failures()),
    )?;
    Ok(registry)
}

/// The loop's provider, tool, detector and validator, loaded from the noop
/// `.so`: the same plugins as the in-process variant.
pub fn loaded(dir: &Path) -> Result<(LoopPlugins, tempfile::TempDir), BenchError> {
    let plugins = plugin_dir(dir, &["zu_plugin_noop"]);
    let scratch = load(plugins.path(), &[])?;
    let registry = loop_registry(&scratch)?;
    let stats_tool = scratch
        .tool("noop_stats")
        .ok_or_else(|| BenchError("noop_stats did not load".into()))?;
    let path = plugins.path().to_owned();
    let provider = move |k: usize| -> Arc<dyn ModelProvider> {
        let reg = load(&path, &[(Kind::Providers, "bench_script", json!({"k": k}))]).expect("noop loads");
        reg.provider("bench_script").expect("bench_script provider")
    };
    let counters = move || stats(&*stats_tool);
    Ok((
        LoopPlugins {
            registry,
            provider: Box::new(provider),
            counters: Box::new(counters),
        },
        plugins,
    ))
}

/// One tool call across the boundary with small JSON each way.
pub fn bench_ffi_call(dir: &Path, calls: usize) -> Result<Value, BenchError> {
    let plugins = plugin_dir(dir, &["zu_plugin_noop"]);
    let reg = load(plugins.path(), &[])?;
    let tool = reg.tool("noop").ok_or_else(|| BenchError("noop did not load".into()))?;
    let ctx = idle_view();
    let args = json!({"x": 1}).as_object().cloned().unwrap();
    check(
        tool.call(&ctx, args.clone()).ok() == json!({"ok": true}).as_object().cloned(),
        "noop answered wrongly",
    )?;
    let mut m = measure_repeated(
        "ffi tool call (noop, small JSON)",
        calls,
        "calls/s",
        json!({"calls": calls}),
        || tool.call(&ctx, args.clone()).expect("noop"),
    );
    m["median_ns_per_call"] = (1e9 / m["median"].as_f64().unwrap_or(f64::INFINITY)).into();
    Ok(m)
}

/// Scanning and loading a directory of 100 plugin libraries. They are copies
/// of one library (stripped, when `strip` is available): the first loads its
/// six plugins; the other 99 are opened and checked root module, versions
/// and layouts, then refused as `name_taken` before construction.
pub fn bench_scan_load(dir: &Path, libs: usize) -> Result<Value, BenchError> {
    let work = tempfile::tempdir().map_err(|e| BenchError(e.to_string()))?;
    let template = work.path().join(lib_file("noop_template"));
    let stripped = std::process::Command::new("strip")
        .arg("-o")
        .arg(&template)
        .arg(dir.join(lib_file("zu_plugin_noop")))
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(dir.join(lib_file("zu_plugin_noop")), &template).map_err(|e| BenchError(e.to_string()))?;
    }
    let mut rep = 0;
    let mut last = None;
    let m = measure(
        &format!("scan + load {libs} libraries"),
        1,
        "scans/s",
        json!({"libraries": libs, "stripped": stripped}),
        || {
            // Fresh files each repetition: a library already open in this process loads for free.
            rep += 1;
            let d = work.path().join(format!("rep{rep}"));
            std::fs::create_dir(&d).expect("a rep dir");
            for i in 0..libs {
                std::fs::copy(&template, d.join(lib_file(&format!("bench_{i:03}")))).expect("copy");
            }
            d
        },
        |d| {
            let mut reg = Registry::new();
            Loader::new().load_dir(&mut reg, d).expect("readable");
            last = Some((reg.entries().count(), reg.failures().len()));
        },
    );
    check(last == Some((6, 6 * (libs - 1))), format!("scan: {last:?}"))?;
    let mut m = m;
    m["median_ms_per_scan"] = (1e3 / m["median"].as_f64().unwrap_or(f64::INFINITY)).into();
    Ok(m)
}

/// A detector checkpoint (a `.so` detector asking the host for the run's
/// event count) with 10 and with 100,000 events of the run on the log.
pub fn bench_checkpoint(dir: &Path, calls: usize) -> Result<Value, BenchError> {
    let plugins = plugin_dir(dir, &["zu_plugin_noop"]);
    let reg = load(plugins.path(), &[])?;
    let detector = reg
        .detector("count_events")
        .ok_or_else(|| BenchError("count_events did not load".into()))?;
    let stats_tool = reg
        .tool("noop_stats")
        .ok_or_else(|| BenchError("noop_stats did not load".into()))?;
    let mut out = serde_json::Map::new();
    for logged in [10usize, 100_000] {
        let spec = Arc::new(TaskSpec::new("bench"));
        let bus = Arc::new(EventBus::new());
        for i in 0..logged {
            let e = Event::new(
                spec.task_id,
                spec.task_id,
                None,
                "harness.tool.invoked",
                "bench",
                JsonObject::new(),
            )
            .expect("namespaced");
            bus.publish(e).map_err(|e| BenchError(e.to_string()))?;
            std::hint::black_box(i);
        }
        let obs = Arc::new(json!({"ok": true}));
        let view = RunView::new(spec, bus, Some(obs));
        detector.inspect(&view).map_err(|e| BenchError(e.to_string()))?;
        let counted = stats_tool
            .call(&idle_view(), JsonObject::new())
            .map_err(|e| BenchError(e.to_string()))?;
        check(
            counted["counted_events"] == json!(logged),
            format!("the detector saw {} events, not {logged}", counted["counted_events"]),
        )?;
        let m = measure_repeated(
            &format!("detector checkpoint, {logged} events logged"),
            calls,
            "checkpoints/s",
            json!({"events_on_log": logged}),
            || detector.inspect(&view).expect("inspect"),
        );
        out.insert(format!("events_{logged}"), m);
    }
    let ratio = out["events_10"]["median"].as_f64().unwrap_or(0.0)
        / out["events_100000"]["median"].as_f64().unwrap_or(f64::INFINITY);
    out.insert("cost_ratio_100000_vs_10".into(), ratio.into());
    Ok(Value::Object(out))
}
