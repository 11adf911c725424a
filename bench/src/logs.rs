//! Durable logs: appends per second to each durable sink at each durability
//! it offers, one event per append and in batches of 100, from 1 and from 8
//! writer processes at once; a K=1000 run logging into each (beside the
//! in-memory run); and the floors under them (a sync, a bare SQLite commit,
//! a PostgreSQL round trip).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use zu_plugin_api::filter::EventFilter;
use zu_plugin_api::ports::EventSink;
use zu_plugin_api::version::Kind;

use crate::boundary::{load, plugin_dir};
use crate::harness::{check, measure, BenchError};
use crate::runs::{bench_run_into, LoopPlugins};
use crate::workloads::make_event;

/// One durable log: a sink at one durability.
#[derive(Clone)]
pub struct Log {
    pub sink: &'static str,
    pub durability: &'static str,
    /// What an append has survived once it returns.
    pub survives: &'static str,
    /// The PostgreSQL server (administrative URL) for `postgres`.
    pub server: Option<String>,
}

impl Log {
    pub fn label(&self) -> String {
        format!("{}/{}", self.sink, self.durability)
    }

    fn lib(&self) -> String {
        format!("zu_plugin_{}", self.sink)
    }

    /// The config of a new, empty log under `dir`.
    fn fresh(&self, dir: &Path, tag: &str) -> Value {
        match &self.server {
            Some(admin) => json!({"url": zu_tests::postgres::new_database(admin), "durability": self.durability}),
            None => {
                let ext = if self.sink == "jsonl" { "jsonl" } else { "db" };
                let path = dir.join(format!("{}-{}-{tag}.{ext}", self.sink, self.durability));
                json!({"path": path, "durability": self.durability})
            }
        }
    }
}

/// The logs measured: sqlite and jsonl always, postgres when `server` is given.
pub fn logs(server: Option<&str>) -> Vec<Log> {
    let mut out = vec![
        Log {
            sink: "sqlite",
            durability: "power",
            survives: "a power cut: each commit is synced (synchronous=FULL)",
            server: None,
        },
        Log {
            sink: "sqlite",
            durability: "process",
            survives: "a killed process: WAL commits without a sync (synchronous=NORMAL)",
            server: None,
        },
        Log {
            sink: "jsonl",
            durability: "power",
            survives: "a power cut: each write is followed by fdatasync",
            server: None,
        },
        Log {
            sink: "jsonl",
            durability: "process",
            survives: "a killed process: each append is one write(2) under flock",
            server: None,
        },
    ];
    if let Some(admin) = server {
        out.push(Log {
            sink: "postgres",
            durability: "power",
            survives: "a power cut of the server: the commit is flushed (synchronous_commit=on)",
            server: Some(admin.to_owned()),
        });
        out.push(Log {
            sink: "postgres",
            durability: "process",
            survives: "a killed host: the server has the commit, flushed within 3 x wal_writer_delay (synchronous_commit=off)",
            server: Some(admin.to_owned()),
        });
    }
    out
}

/// `zu-bench --append-child LIB SINK CONFIG COUNT BATCH`: loads the sink,
/// prints `ready`, waits for a line on stdin, appends COUNT events in
/// batches of BATCH, prints `done`.
pub fn append_child(args: &[String]) -> Result<(), BenchError> {
    let [lib, sink, config, count, batch] = args else {
        return Err(BenchError("--append-child LIB SINK CONFIG COUNT BATCH".into()));
    };
    let number = |s: &str| s.parse::<usize>().map_err(|e| BenchError(format!("{s}: {e}")));
    let (count, batch) = (number(count)?, number(batch)?.max(1));
    let config: Value = serde_json::from_str(config).map_err(|e| BenchError(e.to_string()))?;
    let lib = PathBuf::from(lib);
    let dir = lib.parent().ok_or_else(|| BenchError("LIB has no directory".into()))?;
    let file = lib.file_name().and_then(|f| f.to_str()).unwrap_or_default();
    let crate_name = file
        .trim_start_matches(std::env::consts::DLL_PREFIX)
        .trim_end_matches(std::env::consts::DLL_SUFFIX);
    let plugins = plugin_dir(dir, &[crate_name]);
    let registry = load(plugins.path(), &[(Kind::Sinks, sink, config)])?;
    let log = registry
        .sink(sink)
        .ok_or_else(|| BenchError(format!("{sink} did not load")))?;
    let events: Vec<_> = (0..count).map(|i| make_event(i, "harness.tool.invoked")).collect();
    let mut line = String::new();
    println!("ready");
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| BenchError(e.to_string()))?;
    for chunk in events.chunks(batch) {
        match chunk {
            [one] => log.append(one),
            many => log.append_batch(many),
        }
        .map_err(|e| BenchError(e.to_string()))?;
    }
    println!("done");
    Ok(())
}

/// Writer processes, loaded and waiting for the word.
struct Writers(Vec<(Child, BufReader<ChildStdout>)>);

impl Writers {
    fn spawn(libs: &Path, log: &Log, config: &Value, writers: usize, count: usize, batch: usize) -> Writers {
        let exe = std::env::current_exe().expect("the bench binary");
        let lib = libs.join(crate::boundary::lib_file(&log.lib()));
        let mut all = Vec::new();
        for _ in 0..writers {
            let mut child = Command::new(&exe)
                .arg("--append-child")
                .arg(&lib)
                .args([log.sink, &config.to_string(), &count.to_string(), &batch.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("a writer process");
            let mut out = BufReader::new(child.stdout.take().expect("piped"));
            let mut line = String::new();
            out.read_line(&mut line).expect("the writer starts");
            assert_eq!(line.trim(), "ready", "the writer could not open {}", log.label());
            all.push((child, out));
        }
        Writers(all)
    }

    /// Lets them all go and waits until each has appended everything.
    fn go(&mut self) {
        for (child, _) in &mut self.0 {
            child.stdin.as_mut().expect("piped").write_all(b"go\n").expect("go");
        }
        for (child, out) in &mut self.0 {
            let mut line = String::new();
            out.read_line(&mut line).expect("the writer answers");
            assert_eq!(line.trim(), "done", "a writer failed");
            assert!(child.wait().expect("the writer ends").success());
        }
    }
}

/// Appends per second to `log` for each of 1 and 8 writers and batches of 1
/// and 100; after each repetition the log is opened again and counted.
pub fn bench_appends(libs: &Path, log: &Log, quick: bool) -> Result<Value, BenchError> {
    let work = tempfile::tempdir().map_err(|e| BenchError(e.to_string()))?;
    let reader = plugin_dir(libs, &[&log.lib()]);
    let mut out = serde_json::Map::new();
    out.insert("survives".into(), log.survives.into());
    let scale = if quick { 1 } else { 3 };
    for writers in [1usize, 8] {
        for batch in [1usize, 100] {
            // Enough work per repetition to dwarf a process's start-up.
            let per_writer = (if batch == 1 { 100 * scale } else { 2000 * scale }) / writers.min(4);
            let mut configs = Vec::new();
            let m = measure(
                &format!("{} appends, {writers} writer(s), batches of {batch}", log.label()),
                (writers * per_writer) as u64,
                "events/s",
                json!({"writers": writers, "batch": batch, "events_per_writer": per_writer}),
                || {
                    let config = log.fresh(work.path(), &format!("w{writers}-b{batch}-{}", configs.len()));
                    configs.push(config.clone());
                    Writers::spawn(libs, log, &config, writers, per_writer, batch)
                },
                Writers::go,
            );
            for config in configs {
                let counted = load(reader.path(), &[(Kind::Sinks, log.sink, config)])?
                    .sink(log.sink)
                    .ok_or_else(|| BenchError(format!("{} did not reopen", log.label())))?
                    .count(&EventFilter::all())
                    .map_err(|e| BenchError(e.to_string()))?;
                check(
                    counted == (writers * per_writer) as u64,
                    format!("{}: {counted} events stored of {}", log.label(), writers * per_writer),
                )?;
            }
            out.insert(format!("w{writers}_b{batch}"), m);
        }
    }
    Ok(Value::Object(out))
}

/// A K=1000 run into a fresh `log` each repetition.
pub fn bench_run(libs: &Path, log: &Log, plugins: &LoopPlugins) -> Result<Value, BenchError> {
    let work = tempfile::tempdir().map_err(|e| BenchError(e.to_string()))?;
    let dir = plugin_dir(libs, &[&log.lib()]);
    let made = std::cell::Cell::new(0);
    let new_sink = || -> Arc<dyn EventSink> {
        let config = log.fresh(work.path(), &format!("run-{}", made.replace(made.get() + 1)));
        load(dir.path(), &[(Kind::Sinks, log.sink, config)])
            .expect("the sink loads")
            .sink(log.sink)
            .expect("the sink")
    };
    bench_run_into(plugins, 1000, &log.label(), &new_sink)
}

fn percentiles(mut micros: Vec<f64>, what: &str) -> Value {
    micros.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| micros[((micros.len() - 1) as f64 * p).round() as usize];
    json!({"what": what, "times": micros.len(), "unit": "us", "median": at(0.5), "p99": at(0.99)})
}

fn timed(times: usize, mut op: impl FnMut() -> Result<(), String>) -> Result<Vec<f64>, BenchError> {
    let mut micros = Vec::with_capacity(times);
    for _ in 0..times {
        let t = Instant::now();
        op().map_err(BenchError)?;
        micros.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(micros)
}

/// What the design cannot go below, each timed `times` times on this
/// machine: an 8 kB write and `fdatasync` (the floor under `power`), a bare
/// SQLite commit of what a step stores (two rows) on the sink's tables with
/// each `synchronous` setting (no FFI, no codec, no JSON), and a round trip
/// to the PostgreSQL server (`SELECT 1`).
pub fn floors(libs: &Path, times: usize, server: Option<&str>) -> Result<Value, BenchError> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let dir = tempfile::tempdir().map_err(|x| BenchError(x.to_string()))?;
    let mut file = std::fs::File::create(dir.path().join("floor")).map_err(|x| BenchError(x.to_string()))?;
    let block = vec![7u8; 8192];
    let fsync = timed(times, || {
        file.write_all(&block).map_err(|x| e(&x))?;
        file.sync_data().map_err(|x| e(&x))
    })?;
    let mut out = serde_json::Map::new();
    out.insert("fsync_8k".into(), percentiles(fsync, "write 8 kB + fdatasync"));
    let sink = plugin_dir(libs, &["zu_plugin_sqlite"]);
    for (durability, sync) in [("power", "FULL"), ("process", "NORMAL")] {
        // The sink makes the log (its tables, WAL); the commits bypass it.
        let path = dir.path().join(format!("{durability}.db"));
        load(sink.path(), &[(Kind::Sinks, "sqlite", json!({"path": path}))])?;
        let mut db = rusqlite::Connection::open(&path).map_err(|x| BenchError(e(&x)))?;
        db.execute_batch(&format!("PRAGMA synchronous = {sync}"))
            .map_err(|x| BenchError(e(&x)))?;
        // What one step stores: two events (~500 bytes each, random ids).
        let insert = |tx: &rusqlite::Transaction| {
            tx.execute(
                "INSERT INTO events (event_id, trace_id, task_id, parent_id, type, source, data) \
                 VALUES (?1, 't', 't', 'p', 'harness.tool.invoked', 'bench', zeroblob(500))",
                [uuid::Uuid::new_v4().to_string()],
            )
        };
        let commits = timed(times, || {
            let tx = db.transaction().map_err(|x| e(&x))?;
            insert(&tx).and_then(|_| insert(&tx)).map_err(|x| e(&x))?;
            tx.commit().map_err(|x| e(&x))
        })?;
        let what = format!("one SQLite commit of two 500-byte rows on the sink's tables, synchronous={sync}");
        out.insert(format!("sqlite_commit_{durability}"), percentiles(commits, &what));
    }
    if let Some(url) = server {
        let mut client = postgres::Client::connect(url, postgres::NoTls).map_err(|x| BenchError(e(&x)))?;
        let trips = timed(times, || client.simple_query("SELECT 1").map(|_| ()).map_err(|x| e(&x)))?;
        out.insert(
            "postgres_round_trip".into(),
            percentiles(trips, "SELECT 1 on the server"),
        );
    }
    Ok(Value::Object(out))
}
