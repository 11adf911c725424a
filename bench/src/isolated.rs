//! Figures for plugins behind the containment: one tool call to a plugin in
//! its own process (median and p99 of single calls), the loop with provider,
//! tool, detector and validator all isolated, and discovery of 100 libraries
//! with cached verdicts (no probe child) and cold (one probe child).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use zu_loader::{Isolation, Loader, Protection};
use zu_plugin_api::ports::ModelProvider;
use zu_plugin_api::version::Kind;
use zu_runtime::Registry;

use crate::boundary::{idle_view, lib_file};
use crate::harness::{check, BenchError};
use crate::runs::{loop_registry, stats, LoopPlugins};

/// The `zu` binary next to this one, which serves the plugin processes.
pub fn zu_binary(dir: &Path) -> Result<std::path::PathBuf, BenchError> {
    let zu = dir.join(format!("zu{}", std::env::consts::EXE_SUFFIX));
    check(
        zu.exists(),
        format!(
            "{} is missing: build it first: cargo build --release -p zu-cli",
            zu.display()
        ),
    )?;
    Ok(zu)
}

fn protection(zu: &Path, cache: &Path, sandbox: bool) -> Protection {
    let mut p = Protection::new(zu);
    p.isolation = Isolation::Process;
    p.cache_dir = Some(cache.to_owned());
    p.sandbox = sandbox;
    p
}

fn load(
    zu: &Path,
    cache: &Path,
    plugins: &Path,
    configs: &[(Kind, &str, Value)],
    sandbox: bool,
) -> Result<Registry, BenchError> {
    let mut loader = Loader::protected(protection(zu, cache, sandbox));
    for (kind, name, value) in configs {
        loader.set_config(*kind, name, value.clone());
    }
    let mut registry = Registry::new();
    loader
        .load_dir(&mut registry, plugins)
        .map_err(|e| BenchError(e.to_string()))?;
    check(
        registry.failures().is_empty(),
        format!("plugins refused: {:?}", registry.failures()),
    )?;
    Ok(registry)
}

fn noop_dir(libs: &Path) -> Result<tempfile::TempDir, BenchError> {
    let dir = tempfile::tempdir().map_err(|e| BenchError(e.to_string()))?;
    std::fs::copy(
        libs.join(lib_file("zu_plugin_noop")),
        dir.path().join(lib_file("zu_plugin_noop")),
    )
    .map_err(|e| BenchError(e.to_string()))?;
    Ok(dir)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Single calls of the isolated `noop` tool (`{"x": 1}` in, `{"ok": true}`
/// out), each timed: median and p99 in nanoseconds; its process in its
/// sandbox or (to measure the sandbox) not.
pub fn bench_isolated_call(libs: &Path, calls: usize, sandbox: bool) -> Result<Value, BenchError> {
    let zu = zu_binary(libs)?;
    let cache = tempfile::tempdir().map_err(|e| BenchError(e.to_string()))?;
    let plugins = noop_dir(libs)?;
    let reg = load(&zu, cache.path(), plugins.path(), &[], sandbox)?;
    let tool = reg.tool("noop").ok_or_else(|| BenchError("noop did not load".into()))?;
    let ctx = idle_view();
    let args = json!({"x": 1}).as_object().cloned().unwrap();
    let ok = json!({"ok": true}).as_object().cloned();
    for _ in 0..1000 {
        check(tool.call(&ctx, args.clone()).ok() == ok, "noop answered wrongly")?;
    }
    let mut ns: Vec<u64> = (0..calls)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(tool.call(&ctx, args.clone()).expect("noop"));
            t.elapsed().as_nanos() as u64
        })
        .collect();
    ns.sort_unstable();
    let counted = stats(&*reg.tool("noop_stats").expect("noop_stats"));
    check(
        counted.0 >= (calls + 1000) as u64,
        format!("the process saw {} calls", counted.0),
    )?;
    Ok(json!({
        "name": "isolated tool call (noop in its own process, small JSON)",
        "sandboxed": sandbox,
        "calls": calls,
        "median_ns": percentile(&ns, 0.5),
        "p99_ns": percentile(&ns, 0.99),
        "min_ns": ns[0],
    }))
}

/// The loop's provider, tool, detector and validator, each in the noop
/// library's process (one process: they come from one library). Each run
/// gets a provider answering its K turns: `noop_stats {"turns": K}` sets
/// them for the conversation the run starts.
pub fn isolated(libs: &Path, sandbox: bool) -> Result<(LoopPlugins, tempfile::TempDir, tempfile::TempDir), BenchError> {
    let zu = zu_binary(libs)?;
    let cache = tempfile::tempdir().map_err(|e| BenchError(e.to_string()))?;
    let plugins = noop_dir(libs)?;
    let scratch = load(&zu, cache.path(), plugins.path(), &[], sandbox)?;
    let provider = scratch
        .provider("bench_script")
        .ok_or_else(|| BenchError("bench_script did not load".into()))?;
    let registry = loop_registry(&scratch)?;
    let stats_tool = scratch
        .tool("noop_stats")
        .ok_or_else(|| BenchError("noop_stats did not load".into()))?;
    let setter = stats_tool.clone();
    let provider = move |k: usize| -> Arc<dyn ModelProvider> {
        let turns = json!({"turns": k}).as_object().cloned().unwrap_or_default();
        setter.call(&idle_view(), turns).expect("noop_stats sets the turns");
        provider.clone()
    };
    let counters = move || stats(&*stats_tool);
    Ok((
        LoopPlugins {
            registry,
            provider: Box::new(provider),
            counters: Box::new(counters),
        },
        plugins,
        cache,
    ))
}

use std::sync::Arc;

/// Starting the noop library's plugin process and constructing its plugins
/// (verdicts cached: no probe), `reps` times, in its sandbox or not: median
/// and minimum in microseconds.
pub fn bench_process_start(libs: &Path, reps: usize, sandbox: bool) -> Result<Value, BenchError> {
    let zu = zu_binary(libs)?;
    let cache = tempfile::tempdir().map_err(|e| BenchError(e.to_string()))?;
    let plugins = noop_dir(libs)?;
    drop(load(&zu, cache.path(), plugins.path(), &[], sandbox)?); // the verdict cached
    let mut us: Vec<u64> = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let reg = load(&zu, cache.path(), plugins.path(), &[], sandbox)?;
        us.push(t.elapsed().as_micros() as u64);
        check(reg.tool("noop").is_some(), "noop did not load")?;
    }
    us.sort_unstable();
    Ok(json!({
        "name": "start a plugin process and construct the noop library's plugins (cached verdict)",
        "sandboxed": sandbox,
        "reps": reps,
        "median_us": percentile(&us, 0.5),
        "min_us": us[0],
    }))
}

/// Discovery (finding and judging, constructing nothing) of `libs` copies of
/// the noop library: cold (a fresh cache: private copies and one probe
/// child) and warm (every verdict cached: no child).
pub fn bench_discovery(dir: &Path, libs: usize) -> Result<Value, BenchError> {
    let zu = zu_binary(dir)?;
    let work = tempfile::tempdir().map_err(|e| BenchError(e.to_string()))?;
    let plugins = work.path().join("plugins");
    std::fs::create_dir(&plugins).map_err(|e| BenchError(e.to_string()))?;
    for i in 0..libs {
        std::fs::copy(
            dir.join(lib_file("zu_plugin_noop")),
            plugins.join(lib_file(&format!("bench_{i:03}"))),
        )
        .map_err(|e| BenchError(e.to_string()))?;
    }
    let cache = work.path().join("cache");
    let survey = || -> Result<(Duration, usize, usize), BenchError> {
        let before = zu_loader::probe::children_started();
        let t = Instant::now();
        let mut loader = Loader::protected(protection(&zu, &cache, true));
        let verdicts = loader
            .survey(std::slice::from_ref(&plugins))
            .map_err(|e| BenchError(e.to_string()))?;
        let took = t.elapsed();
        let admitted = verdicts
            .iter()
            .filter(|(_, v)| matches!(v, zu_loader::verdict::Verdict::Plugins(_)))
            .count();
        Ok((took, admitted, zu_loader::probe::children_started() - before))
    };
    let (cold, admitted, cold_children) = survey()?;
    check(admitted == libs, format!("cold: {admitted} of {libs} admitted"))?;
    let mut warm = Vec::new();
    for _ in 0..5 {
        let (t, admitted, children) = survey()?;
        check(
            admitted == libs && children == 0,
            format!("warm: {admitted} admitted, {children} probe children"),
        )?;
        warm.push(t.as_secs_f64() * 1e3);
    }
    warm.sort_by(f64::total_cmp);
    Ok(json!({
        "name": format!("discovery of {libs} libraries"),
        "libraries": libs,
        "cold_ms": cold.as_secs_f64() * 1e3,
        "cold_probe_children": cold_children,
        "warm_ms_median": warm[warm.len() / 2],
        "warm_ms_samples": warm,
        "warm_probe_children": 0,
    }))
}
