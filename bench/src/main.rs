//! `zu-bench`: the Python reference's benchmark workloads, one to one, plus
//! figures through the real plugin boundary. Progress goes to stderr; the last
//! stdout line is one JSON object with the reference's keys, also written to
//! `--out` (default `bench/results.json`).
//!
//!     cargo build --release -p zu-cli -p zu-plugin-noop -p zu-plugin-sqlite \
//!         -p zu-plugin-jsonl -p zu-plugin-postgres
//!     cargo run --release -p zu-bench -- [--quick] [--out FILE]

use std::time::Instant;

use serde_json::{json, Value};
use zu_bench::harness::BenchError;
use zu_bench::{boundary, harness, isolated, logs, real, runs, workloads};

/// The allocator the `zu` binary ships with, so the figures are `zu`'s.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    quick: bool,
    /// Only the sandbox's figures (a call, a process start, a K=1000 run,
    /// each with and without it).
    sandbox_only: bool,
    out: std::path::PathBuf,
    rss_child: Option<usize>,
    append_child: Option<Vec<String>>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        quick: false,
        sandbox_only: false,
        out: "bench/results.json".into(),
        rss_child: None,
        append_child: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => args.quick = true,
            "--sandbox" => args.sandbox_only = true,
            "--out" => args.out = it.next().ok_or("--out needs a path")?.into(),
            "--rss-child" => {
                args.rss_child = Some(
                    it.next()
                        .and_then(|n| n.parse().ok())
                        .ok_or("--rss-child needs a number")?,
                )
            }
            "--append-child" => args.append_child = Some(it.by_ref().collect()),
            "-h" | "--help" => {
                println!(
                    "zu-bench: the Python reference's workloads one to one, and figures through the plugin boundary\n\n\
                     Usage: zu-bench [--quick] [--out FILE]\n\n\
                     --quick   N=20k instead of 100k events, fewer queries and runs (K=1000 and K=100 stay)\n\
                     --sandbox only what the sandbox costs: an isolated call, a process start, a K=1000 run\n\
                     --out     where to write the JSON (default bench/results.json)\n\n\
                     The postgres figures use a throwaway server started with the distribution's\n\
                     PostgreSQL binaries (fsync on), or ZU_BENCH_POSTGRES_URL (a user with CREATEDB);\n\
                     without either they are left out.\n\n\
                     Build the binary and the plugin libraries first:\n  \
                     cargo build --release -p zu-cli -p zu-plugin-noop -p zu-plugin-sqlite -p zu-plugin-jsonl -p zu-plugin-postgres"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(args)
}

/// What the sandbox costs: each plugin-process figure with it and without.
fn sandbox_costs(
    libs: &std::path::Path,
    quick: bool,
    machine: serde_json::Map<String, Value>,
) -> Result<Value, BenchError> {
    let calls = if quick { 20_000 } else { 100_000 };
    let starts = if quick { 20 } else { 100 };
    let runs = if quick { 20 } else { 100 };
    let mut out = serde_json::Map::new();
    for sandbox in [true, false] {
        let key = if sandbox { "sandboxed" } else { "unsandboxed" };
        eprintln!("[i1/i4/i2] {key}: a call, a process start, run_task K=1000");
        let call = isolated::bench_isolated_call(libs, calls, sandbox)?;
        let start = isolated::bench_process_start(libs, starts, sandbox)?;
        let (plugins, _dir, _cache) = isolated::isolated(libs, sandbox)?;
        let steps = runs::bench_run_task(&plugins, &[1000], 3, runs, &format!("{key}: "))?;
        out.insert(
            key.into(),
            json!({"tool_call": call, "process_start": start, "run_task_steps": steps}),
        );
    }
    Ok(json!({"machine": machine, "sandbox": out}))
}

fn run(args: &Args) -> Result<Value, BenchError> {
    let t_start = Instant::now();
    let quick = args.quick;
    let n = if quick { 20_000 } else { 100_000 };
    let params = json!({
        "n_events": n,
        "sink_size": n,
        "queries_hit_per_rep": if quick { 200 } else { 1000 },
        "queries_scan_per_rep": if quick { 10 } else { 20 },
        "k_long": 1000,
        "k_short": 3,
        "runs_short_per_rep": if quick { 100 } else { 500 },
        "extra_ks": [100],
        "rss_events": 100_000,
        "reps": harness::REPS,
        "warmup_reps": harness::WARMUP,
    });
    let mode = if quick { "quick" } else { "full" };
    eprintln!("zu-bench, mode={mode}");
    let mut machine = harness::machine_info();
    machine.insert("loadavg_at_start".into(), harness::loadavg());
    machine.insert(
        "calibration_loop_ms_at_start".into(),
        harness::calibration_loop_ms().into(),
    );
    let libs = boundary::library_dir()?;
    if args.sandbox_only {
        return sandbox_costs(&libs, quick, machine);
    }

    eprintln!("[7] peak RSS (fresh child process, run first)");
    let rss = workloads::bench_rss(100_000)?;
    eprintln!("[1/2] bus publish");
    let (publish, build, breakdown) = workloads::bench_bus(n)?;
    eprintln!("[3] sink query/count");
    let sink_query = workloads::bench_sink_query(n, if quick { 200 } else { 1000 }, if quick { 10 } else { 20 })?;
    eprintln!("[4] run_task, plugins in-process");
    let runs_short = if quick { 100 } else { 500 };
    let in_process = runs::bench_run_task(&runs::in_process(), &[1000, 100], 3, runs_short, "")?;
    eprintln!("[4r] run_task K=1000 replaying a track (no model calls)");
    let replay = runs::bench_replay(&runs::in_process(), 1000, "")?;
    eprintln!("[5] scope_event");
    let scope = workloads::bench_scope_event(n)?;
    eprintln!("[6] registry register");
    let registry = workloads::bench_registry(n)?;

    eprintln!("[b1] run_task, plugins loaded from .so libraries");
    let (loaded, _dir) = boundary::loaded(&libs)?;
    let through_so = runs::bench_run_task(&loaded, &[1000, 100], 3, runs_short, "so: ")?;
    eprintln!("[b2] one tool call across the boundary");
    let ffi = boundary::bench_ffi_call(&libs, if quick { 50_000 } else { 200_000 })?;
    eprintln!("[b3] scan and load 100 plugin libraries");
    let scan = boundary::bench_scan_load(&libs, 100)?;
    eprintln!("[b5] detector checkpoint cost vs log length");
    let checkpoint = boundary::bench_checkpoint(&libs, if quick { 20_000 } else { 100_000 })?;
    eprintln!("[i1] one tool call to a plugin in its own process");
    let calls = if quick { 20_000 } else { 100_000 };
    let isolated_call = isolated::bench_isolated_call(&libs, calls, true)?;
    eprintln!("[i1'] the same call, its process without the sandbox (what the sandbox costs)");
    let unsandboxed_call = isolated::bench_isolated_call(&libs, calls, false)?;
    eprintln!("[i4] a plugin process start, with and without the sandbox");
    let starts = if quick { 20 } else { 100 };
    let start_sandboxed = isolated::bench_process_start(&libs, starts, true)?;
    let start_unsandboxed = isolated::bench_process_start(&libs, starts, false)?;
    eprintln!("[i2] run_task, provider, tool, detector and validator each in a plugin process");
    let (isolated_plugins, _isolated_dir, _isolated_cache) = isolated::isolated(&libs, true)?;
    let isolated_runs = runs::bench_run_task(&isolated_plugins, &[1000, 100], 3, runs_short / 5, "isolated: ")?;
    let (bare_plugins, _bare_dir, _bare_cache) = isolated::isolated(&libs, false)?;
    let bare_runs = runs::bench_run_task(&bare_plugins, &[1000], 3, runs_short / 5, "unsandboxed: ")?;
    eprintln!("[i3] discovery of 100 libraries, cold and with cached verdicts");
    let discovery = isolated::bench_discovery(&libs, 100)?;

    eprintln!("[r1] one openai provider turn against a local server, and Zu's own share of it");
    let provider_turn = real::bench_provider_turn(&libs, if quick { 2_000 } else { 10_000 })?;
    eprintln!("[r2] one MCP tool call round trip to a local stdio server");
    let mcp_call = real::bench_mcp_call(if quick { 500 } else { 2_000 })?;

    eprintln!(
        "[s1] zu serve on a sqlite log of {} events",
        if quick { 100_000 } else { 1_000_000 }
    );
    let serve = zu_bench::serve::bench_serve(&libs, &libs.join("zu"), if quick { 100_000 } else { 1_000_000 })?;

    let server = postgres_server();
    let durable = logs::logs(server);
    eprintln!("[l0] floors: fsync, a bare SQLite commit, a PostgreSQL round trip");
    let floors = logs::floors(&libs, if quick { 200 } else { 1000 }, server)?;
    let mut appends = serde_json::Map::new();
    let mut runs_into = serde_json::Map::new();
    for log in &durable {
        eprintln!("[l1] appends to {} from 1 and 8 writer processes", log.label());
        appends.insert(log.label(), logs::bench_appends(&libs, log, quick)?);
        eprintln!("[l2] run_task K=1000 logging into {}", log.label());
        runs_into.insert(log.label(), logs::bench_run(&libs, log, &loaded)?);
    }

    machine.insert("loadavg_at_end".into(), harness::loadavg());
    machine.insert(
        "calibration_loop_ms_at_end".into(),
        harness::calibration_loop_ms().into(),
    );
    Ok(json!({
        "bench": "zu rust",
        "mode": mode,
        "machine": machine,
        "params": params,
        "results": {
            "bus_publish_memory": publish,
            "event_build_publish": build,
            "sink_query": sink_query,
            "run_task_steps": in_process,
            "run_task_replay_k1000": replay,
            "scope_event": scope,
            "registry_register": registry,
            "peak_rss": rss,
        },
        "boundary": {
            "run_task_steps": through_so,
            "ffi_tool_call": ffi,
            "scan_load_100": scan,
            "detector_checkpoint": checkpoint,
        },
        "isolation": {
            "tool_call": isolated_call,
            "run_task_steps": isolated_runs,
            "sandbox": {
                "tool_call_unsandboxed": unsandboxed_call,
                "process_start_sandboxed": start_sandboxed,
                "process_start_unsandboxed": start_unsandboxed,
                "run_task_steps_unsandboxed": bare_runs,
            },
            "discovery_100": discovery,
        },
        "logs": {
            "floors": floors,
            "appends": appends,
            "run_task_k1000_into": runs_into,
            "postgres": if server.is_some() { "measured" } else { "left out: no PostgreSQL server binaries and no ZU_BENCH_POSTGRES_URL" },
        },
        "serve": serve,
        "real": {
            "provider_turn": provider_turn,
            "mcp_tool_call": mcp_call,
        },
        "breakdown": breakdown,
        "total_wall_s": (t_start.elapsed().as_secs_f64() * 100.0).round() / 100.0,
    }))
}

/// The PostgreSQL server the postgres figures use, if there is one.
fn postgres_server() -> Option<&'static str> {
    let named = std::env::var_os("ZU_BENCH_POSTGRES_URL").is_some();
    (named || zu_tests::postgres::server_binaries().is_some()).then(zu_tests::postgres::durable_server_url)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("zu-bench: {e}");
            std::process::exit(2);
        }
    };
    if let Some(child) = &args.append_child {
        if let Err(BenchError(msg)) = logs::append_child(child) {
            eprintln!("zu-bench append child: {msg}");
            std::process::exit(1);
        }
        return;
    }
    if let Some(n) = args.rss_child {
        // Before anything else is allocated: the peak must be this workload's.
        println!("{}", workloads::rss_child(n));
        return;
    }
    match run(&args) {
        Ok(out) => {
            let pretty = serde_json::to_string_pretty(&out).expect("plain data");
            if let Err(e) = std::fs::write(&args.out, pretty + "\n") {
                eprintln!("zu-bench: cannot write {}: {e}", args.out.display());
            } else {
                eprintln!("total {} s; wrote {}", out["total_wall_s"], args.out.display());
            }
            println!("{out}");
        }
        Err(BenchError(msg)) => {
            eprintln!("zu-bench: the work did not happen as the workload says: {msg}");
            std::process::exit(1);
        }
    }
}
