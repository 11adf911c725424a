//! `zu serve` on a big log: a sqlite log of N events (1,000,000 at full
//! size) holding runs of ~10,000 events; the time to first byte and to a
//! complete page (the shell, its script and the JSON it draws from) for the
//! runs page and for one 10,000-event run, and how long the stream takes to
//! deliver an event another writer appends.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;
use zu_plugin_api::contracts::Event;
use zu_plugin_api::events as ev;
use zu_plugin_api::version::Kind;

use crate::boundary::{load, plugin_dir};
use crate::harness::{check, BenchError};

const RUN_EVENTS: usize = 10_000;

fn err(e: impl std::fmt::Display) -> BenchError {
    BenchError(e.to_string())
}

/// The events of one run of `n` events: started, turns of a tool call each, completed.
fn run_events(n: usize) -> (Uuid, Vec<Event>) {
    let task = Uuid::new_v4();
    let mk = |ty: &'static str, p: Value| Event::with_payload(task, task, None, ty, "loop", &p).expect("an event");
    let mut out = vec![mk(ev::TASK_STARTED, json!({"query": "bench run", "target": null}))];
    let mut step = 1;
    while out.len() + 5 <= n {
        out.push(mk(ev::TURN_STARTED, json!({"step": step})));
        out.push(mk(ev::TURN_COMPLETED, json!({"step": step, "tier": 1, "model": "gpt-4o-mini", "usage": {"input_tokens": 900, "output_tokens": 40}, "text": "next"})));
        out.push(mk(
            ev::TOOL_INVOKED,
            json!({"tool": "file_read", "args": {"path": format!("doc{step}.md")}}),
        ));
        out.push(mk(
            ev::TOOL_RETURNED,
            json!({"tool": "file_read", "observation": {"bytes": 1200, "text_len": 1200}}),
        ));
        step += 1;
    }
    while out.len() + 1 < n {
        out.push(mk(
            ev::DETECTOR_FIRED,
            json!({"detector": "empty", "severity": "warn", "detail": "x"}),
        ));
    }
    out.push(mk(ev::TASK_COMPLETED, json!({"value": {"answer": 1}})));
    (task, out)
}

/// The token the measured `zu serve` is started with (`--token-env`).
const TOKEN: &str = "zu-bench-serve-token-0123456789";

/// A GET with the bearer token.
fn authed(url: &str) -> ureq::Request {
    ureq::get(url).set("authorization", &format!("Bearer {TOKEN}"))
}

fn get(url: &str) -> Result<(Duration, Duration, usize), BenchError> {
    let t = Instant::now();
    let resp = authed(url).call().map_err(err)?;
    let first = t.elapsed();
    let mut body = Vec::new();
    resp.into_reader().read_to_end(&mut body).map_err(err)?;
    Ok((first, t.elapsed(), body.len()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn p99(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * 0.99).round() as usize]
}

/// Builds the log, serves it with `zu`, and times the pages and the stream.
pub fn bench_serve(libs: &Path, zu: &Path, total: usize) -> Result<Value, BenchError> {
    let dir = tempfile::tempdir().map_err(err)?;
    let db = dir.path().join("big.db");
    let plugins = plugin_dir(libs, &["zu_plugin_sqlite"]);
    let config = json!({"path": db, "durability": "process"});
    let registry = load(plugins.path(), &[(Kind::Sinks, "sqlite", config.clone())])?;
    let sink = registry
        .sink("sqlite")
        .ok_or_else(|| BenchError("sqlite did not load".into()))?;
    let t = Instant::now();
    let mut written = 0;
    let mut big = None;
    while written < total {
        let (task, events) = run_events(RUN_EVENTS.min(total - written));
        for chunk in events.chunks(5000) {
            sink.append_batch(chunk).map_err(err)?;
        }
        written += events.len();
        big = Some(task);
    }
    let big = big.ok_or_else(|| BenchError("no run".into()))?;
    let build_s = t.elapsed().as_secs_f64();
    eprintln!(
        "  wrote {written} events ({} runs) in {build_s:.1} s",
        written.div_ceil(RUN_EVENTS)
    );

    let mut child = Command::new(zu)
        .args(["serve", "--plugins"])
        .arg(plugins.path())
        .args([
            "--sink",
            "sqlite",
            "--sink-config",
            &config.to_string(),
            "--addr",
            "127.0.0.1:0",
            "--token-env",
            "ZU_BENCH_SERVE_TOKEN",
        ])
        .env("ZU_BENCH_SERVE_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(err)?;
    let mut lines = BufReader::new(child.stderr.take().ok_or_else(|| BenchError("no stderr".into()))?).lines();
    let url = loop {
        let line = lines
            .next()
            .ok_or_else(|| BenchError("zu serve ended".into()))?
            .map_err(err)?;
        if let Some(at) = line.find("http://") {
            break line[at..]
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let started = Instant::now();
    loop {
        let health: Value = authed(&format!("{url}/healthz"))
            .call()
            .map_err(err)?
            .into_json()
            .map_err(err)?;
        if health["ready"] == true {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let index_s = started.elapsed().as_secs_f64();
    eprintln!("  zu serve read the log in {index_s:.1} s");

    let page = |paths: &[String]| -> Result<(f64, f64), BenchError> {
        let (first, _, _) = get(&format!("{url}{}", paths[0]))?;
        let t = Instant::now();
        for p in paths {
            get(&format!("{url}{p}"))?;
        }
        Ok((first.as_secs_f64() * 1e3, t.elapsed().as_secs_f64() * 1e3))
    };
    let runs_page = [
        String::from("/"),
        "/assets/app.js".into(),
        "/api/runs?page=1&per_page=50".into(),
    ];
    let run_page = [
        format!("/runs/{big}"),
        "/assets/app.js".into(),
        format!("/api/runs/{big}"),
        format!("/api/runs/{big}/events?after_seq=0&limit=10000"),
    ];
    let (_, _, n) = get(&format!("{url}{}", run_page[3]))?;
    check(n > 1_000_000, format!("the run's events came back short ({n} bytes)"))?;
    let mut out = serde_json::Map::new();
    for (name, paths) in [("runs_page", &runs_page[..]), ("run_page_10k_events", &run_page[..])] {
        let mut first = Vec::new();
        let mut whole = Vec::new();
        for _ in 0..15 {
            let (f, w) = page(paths)?;
            first.push(f);
            whole.push(w);
        }
        eprintln!(
            "  {name:<22} first byte median {:.2} ms, complete median {:.1} ms",
            median(first.clone()),
            median(whole.clone())
        );
        out.insert(
            name.into(),
            json!({"first_byte_ms": median(first), "complete_ms": median(whole), "unit": "ms (median of 15)"}),
        );
    }

    // Stream latency: append one event through another sink instance, time its arrival.
    let writer_reg = load(plugins.path(), &[(Kind::Sinks, "sqlite", config)])?;
    let writer = writer_reg
        .sink("sqlite")
        .ok_or_else(|| BenchError("sqlite did not load".into()))?;
    let task = Uuid::new_v4();
    let stream = authed(&format!("{url}/api/stream?task={task}")).call().map_err(err)?;
    let mut reader = BufReader::new(stream.into_reader());
    let mut lat = Vec::new();
    for i in 0..30 {
        std::thread::sleep(Duration::from_millis(30));
        let e = Event::with_payload(
            task,
            task,
            None,
            ev::TOOL_INVOKED,
            "bench",
            &json!({"tool": "x", "args": {"i": i}}),
        )
        .map_err(err)?;
        let t = Instant::now();
        writer.append(&e).map_err(err)?;
        let mut line = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line).map_err(err)?;
            if line.starts_with("data:") && line.contains(&e.event_id().to_string()) {
                break;
            }
        }
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    eprintln!(
        "  stream delivery after an append: median {:.1} ms, p99 {:.1} ms",
        median(lat.clone()),
        p99(lat.clone())
    );
    out.insert(
        "stream_delivery".into(),
        json!({"median_ms": median(lat.clone()), "p99_ms": p99(lat), "poll_ms": 25}),
    );
    out.insert(
        "log".into(),
        json!({"events": written, "runs": written.div_ceil(RUN_EVENTS), "write_s": build_s, "serve_read_s": index_s}),
    );
    let _ = child.kill();
    let _ = child.wait();
    Ok(Value::Object(out))
}
