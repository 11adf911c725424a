//! Logs under many writers and after damage: writer processes started at
//! the same moment on one jsonl or sqlite log (including on a new file),
//! `zu run`s with megabyte events sharing a log, readers that show every good
//! event of a damaged log, followers that survive a deleted, replaced or
//! truncated log, and a foreign SQLite database left byte-for-byte unchanged.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;
use zu_plugin_api::events;
use zu_plugin_api::filter::EventFilter;
use zu_plugin_api::prelude::*;
use zu_tests::{artifacts, plugin_dir};

use crate::sinks::{jsonl, plugin_sink, sample, sqlite, zu_events};

/// What one writer process reported as appended: `(n, event_id)` in order.
pub(crate) type Report = Vec<(u64, Uuid)>;

/// Starts `writers` sink_writer processes, lets them all go at the same
/// moment, and returns what each reported once all have finished.
pub(crate) fn concurrent_writers(lib: &str, name: &str, config: &Value, writers: usize, args: &[&str]) -> Vec<Report> {
    let mut children: Vec<Child> = (0..writers)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_sink_writer"))
                .arg(artifacts().lib(lib))
                .args([name, &config.to_string()])
                .args(args)
                .arg("--wait")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in &mut children {
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    let readers: Vec<_> = children
        .iter_mut()
        .map(|c| {
            let out = c.stdout.take().unwrap();
            std::thread::spawn(move || {
                BufReader::new(out)
                    .lines()
                    .map(|l| {
                        let l = l.unwrap();
                        let (n, id) = l.split_once(' ').unwrap();
                        (n.parse().unwrap(), id.parse().unwrap())
                    })
                    .collect::<Report>()
            })
        })
        .collect();
    let reports: Vec<Report> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    for mut c in children {
        assert!(c.wait().unwrap().success(), "a writer failed (see its stderr above)");
    }
    reports
}

/// Every reported event is in the log once, intact, in its writer's order;
/// sequence numbers run 1..=N without a gap; nothing else is there and no
/// row is damaged. `pad(n)` is the pad length event `n` was written with.
pub(crate) fn assert_each_once(sink: &dyn EventSink, reports: &[Report], pad: impl Fn(u64) -> usize) {
    let stored = sink.query(&EventFilter::all(), None, 0).unwrap();
    let damaged: Vec<_> = stored
        .iter()
        .filter(|s| s.event.event_type() == events::LOG_DAMAGED)
        .map(|s| s.event.payload().clone())
        .collect();
    assert!(damaged.is_empty(), "damaged rows: {damaged:?}");
    let total: usize = reports.iter().map(Vec::len).sum();
    assert_eq!(stored.len(), total, "every append once, nothing more");
    let seqs: Vec<u64> = stored.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>(), "no gaps");
    let at: HashMap<Uuid, &StoredEvent> = stored.iter().map(|s| (s.event.event_id(), s)).collect();
    assert_eq!(at.len(), total, "no duplicates");
    for report in reports {
        let mut last = 0;
        for (n, id) in report {
            let s = at.get(id).unwrap_or_else(|| panic!("event {n} ({id}) is missing"));
            assert!(s.seq > last, "a writer's events keep their order");
            last = s.seq;
            assert_eq!(s.event.payload()["n"], json!(n));
            assert_eq!(
                s.event.payload()["pad"].as_str().unwrap().len(),
                pad(*n),
                "event {n} is whole"
            );
        }
    }
}

const MB: usize = 1_000_000;

fn big_even(n: u64) -> usize {
    if n.is_multiple_of(2) {
        MB
    } else {
        200
    }
}

#[test]
fn twelve_jsonl_writers_with_megabyte_events_lose_and_tear_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.jsonl");
    let config = json!({"path": path});
    let reports = concurrent_writers("zu_plugin_jsonl", "jsonl", &config, 12, &["20", "--big", "1000000"]);
    let (reader, _p) = plugin_sink("zu_plugin_jsonl", "jsonl", json!({"path": path, "read_only": true}));
    assert_each_once(&*reader, &reports, big_even);
    // Batches too: each batch is one write.
    let reports2 = concurrent_writers("zu_plugin_jsonl", "jsonl", &config, 12, &["30", "--batch", "7"]);
    let (reader, _p) = plugin_sink("zu_plugin_jsonl", "jsonl", json!({"path": path, "read_only": true}));
    let all: Vec<Report> = reports.into_iter().chain(reports2).collect();
    let stored = reader.query(&EventFilter::all(), None, 0).unwrap();
    assert_eq!(stored.len(), all.iter().map(Vec::len).sum::<usize>());
}

#[test]
fn twelve_sqlite_writers_on_a_new_file_all_start_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    // All twelve open the new file at the same moment: every first open succeeds.
    let config = json!({"path": path});
    let reports = concurrent_writers("zu_plugin_sqlite", "sqlite", &config, 12, &["20", "--big", "1000000"]);
    let (reader, _p) = plugin_sink("zu_plugin_sqlite", "sqlite", json!({"path": path, "read_only": true}));
    assert_each_once(&*reader, &reports, big_even);
}

/// `zu run`s sharing one log, each with a 1 MB query and a 1 MB answer.
fn concurrent_runs(sink: &str, log: &Path, runs: usize) {
    let plugins = plugin_dir(&[
        artifacts().lib("zu_plugin_scripted"),
        artifacts().lib(&format!("zu_plugin_{sink}")),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let task = dir.path().join("task.json");
    std::fs::write(&task, json!({"query": "q".repeat(MB)}).to_string()).unwrap();
    let script = dir.path().join("script.json");
    let answer = json!("a".repeat(MB)).to_string();
    std::fs::write(&script, json!({"responses": [{"text": answer}]}).to_string()).unwrap();
    let cfg = json!({"path": log}).to_string();
    let children: Vec<Child> = (0..runs)
        .map(|_| {
            Command::new(&artifacts().zu)
                .arg("run")
                .args([
                    "--plugins",
                    plugins.path().to_str().unwrap(),
                    "--task",
                    task.to_str().unwrap(),
                ])
                .args([
                    "--provider",
                    "scripted",
                    "--provider-config",
                    &format!("@{}", script.display()),
                ])
                .args(["--sink", sink, "--sink-config", &cfg, "--tools", ""])
                .env_remove("ZU_PLUGIN_PATH")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut tasks = HashSet::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        // "zu: task ID ended Success; ..."
        let line = stderr.lines().find(|l| l.contains(" ended ")).expect("a summary line");
        tasks.insert(line.split_whitespace().nth(2).unwrap().parse::<Uuid>().unwrap());
    }
    let (reader, _p) = plugin_sink(
        &format!("zu_plugin_{sink}"),
        sink,
        json!({"path": log, "read_only": true}),
    );
    let stored = reader.query(&EventFilter::all(), None, 0).unwrap();
    assert_eq!(
        stored.iter().map(|s| s.seq).collect::<Vec<_>>(),
        (1..=stored.len() as u64).collect::<Vec<_>>()
    );
    let mut runs_seen: HashMap<Uuid, Vec<&str>> = HashMap::new();
    for s in &stored {
        runs_seen
            .entry(s.event.task_id())
            .or_default()
            .push(s.event.event_type());
    }
    assert_eq!(
        runs_seen.keys().copied().collect::<HashSet<_>>(),
        tasks,
        "only these runs' events"
    );
    let first = runs_seen[tasks.iter().next().unwrap()].clone();
    assert_eq!(first.first(), Some(&"harness.task.started"));
    assert_eq!(first.last(), Some(&"harness.task.completed"));
    for types in runs_seen.values() {
        assert_eq!(types, &first, "every run's events, once, in its order");
    }
    let big = stored
        .iter()
        .filter(|s| serde_json::to_string(s.event.payload()).unwrap().len() > MB)
        .count();
    assert!(big >= 2 * runs, "the megabyte events are whole ({big})");
}

#[test]
fn twelve_zu_runs_share_a_jsonl_log() {
    let dir = tempfile::tempdir().unwrap();
    concurrent_runs("jsonl", &dir.path().join("runs.jsonl"), 12);
}

#[test]
fn twelve_zu_runs_share_a_sqlite_log() {
    let dir = tempfile::tempdir().unwrap();
    concurrent_runs("sqlite", &dir.path().join("runs.db"), 12);
}

/// `zu events --json` output: `(seq, event_id)` per line.
fn printed(out: &Output) -> Vec<(u64, String)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["seq"].as_u64().unwrap(), v["event_id"].as_str().unwrap().to_owned())
        })
        .collect()
}

fn expected(events: &[Event], seqs: &[u64]) -> Vec<(u64, String)> {
    seqs.iter()
        .map(|&s| (s, events[s as usize - 1].event_id().to_string()))
        .collect()
}

#[test]
fn a_jsonl_log_with_bad_middle_lines_shows_every_good_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zu.jsonl");
    let (sink, plugins) = jsonl(&path);
    let events = sample();
    sink.append_batch(&events[..10]).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[3] = r#"{"event_id": "not a uuid", "ty"#.to_owned();
    lines[6] = format!("{}{}", "\0".repeat(100_000), lines[6]);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();

    let p = plugins.path().to_str().unwrap();
    let cfg = json!({"path": path}).to_string();
    let base = ["--plugins", p, "--sink", "jsonl", "--sink-config", &cfg, "--json"];
    let out = zu_events(&base);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert_eq!(printed(&out), expected(&events, &[1, 2, 3, 5, 6, 8, 9, 10]));
    assert!(
        stderr.contains("skipped line 4:") && stderr.contains("skipped line 7:"),
        "{stderr}"
    );
    assert!(stderr.contains("2 unreadable row(s) skipped"), "{stderr}");

    let out = zu_events(&[&base[..], &["--after-seq", "5"]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6));
    assert_eq!(printed(&out), expected(&events, &[6, 8, 9, 10]));
    assert!(!stderr.contains("line 4") && stderr.contains("line 7"), "{stderr}");

    // A writer appends after the damage; the events keep their numbers.
    sink.append(&events[10]).unwrap();
    let out = zu_events(&[&base[..], &["--after-seq", "10"]].concat());
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(printed(&out), expected(&events, &[11]));
}

#[test]
fn a_sqlite_log_with_bad_rows_shows_every_good_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zu.db");
    std::env::set_var("ZU_TEST_LOGS_KEY", "a".repeat(64));
    let config = json!({"path": path, "codec": {"kind": "aes-gcm", "key_env": "ZU_TEST_LOGS_KEY"}});
    let (sink, plugins) = plugin_sink("zu_plugin_sqlite", "sqlite", config.clone());
    let events = sample();
    sink.append_batch(&events[..10]).unwrap();
    sink.close().unwrap();
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute("UPDATE events SET data = x'00ff00' WHERE seq = 3", [])
        .unwrap();
    // A row moved to another trace: its ciphertext no longer matches its columns.
    db.execute(
        "UPDATE events SET trace_id = ?1 WHERE seq = 8",
        [Uuid::new_v4().to_string()],
    )
    .unwrap();
    drop(db);

    let p = plugins.path().to_str().unwrap();
    let cfg = config.to_string();
    let out = Command::new(&artifacts().zu)
        .args([
            "events",
            "--plugins",
            p,
            "--sink",
            "sqlite",
            "--sink-config",
            &cfg,
            "--json",
        ])
        .env_remove("ZU_PLUGIN_PATH")
        .env("ZU_TEST_LOGS_KEY", "a".repeat(64))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert_eq!(printed(&out), expected(&events, &[1, 2, 4, 5, 6, 7, 9, 10]));
    assert!(stderr.contains("seq 3") && stderr.contains("seq 8"), "{stderr}");
    assert!(stderr.contains("2 unreadable row(s) skipped"), "{stderr}");
}

/// A running `zu events --follow --json`, its stdout and stderr as lines.
pub(crate) struct Follower {
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
}

impl Follower {
    pub(crate) fn start(plugins: &Path, sink: &str, config: &Value, poll_ms: u64) -> Follower {
        let mut child = Command::new(&artifacts().zu)
            .args(["events", "--plugins", plugins.to_str().unwrap(), "--sink", sink])
            .args(["--sink-config", &config.to_string(), "--json", "--follow"])
            .args(["--poll-ms", &poll_ms.to_string()])
            .env_remove("ZU_PLUGIN_PATH")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = |r: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = channel();
            std::thread::spawn(move || {
                for l in BufReader::new(r).lines().map_while(Result::ok) {
                    let _ = tx.send(l);
                }
            });
            rx
        };
        let out = lines(Box::new(child.stdout.take().unwrap()));
        let err = lines(Box::new(child.stderr.take().unwrap()));
        Follower { child, out, err }
    }

    /// The next `n` events printed, as `(seq, event_id)`.
    pub(crate) fn events(&self, n: usize) -> Vec<(u64, String)> {
        (0..n)
            .map(|i| {
                let l = self.out.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
                    let said: Vec<String> = self.err.try_iter().collect();
                    panic!("event {i} of {n} was not printed; the follower said {said:?}")
                });
                let v: Value = serde_json::from_str(&l).unwrap();
                (v["seq"].as_u64().unwrap(), v["event_id"].as_str().unwrap().to_owned())
            })
            .collect()
    }

    /// Waits for a stderr line containing `needle`.
    pub(crate) fn says(&self, needle: &str) {
        let mut said = Vec::new();
        while let Ok(l) = self.err.recv_timeout(Duration::from_secs(60)) {
            if l.contains(needle) {
                return;
            }
            said.push(l);
        }
        panic!("the follower never said {needle:?}; it said {said:?}");
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn ids_of(events: &[Event], from_seq: u64) -> Vec<(u64, String)> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| (from_seq + i as u64, e.event_id().to_string()))
        .collect()
}

/// Follows a log while it is deleted, replaced (moved over) and truncated;
/// `write(path, events)` makes a new log holding `events`.
fn follow_across_restarts(sink: &str, file: &str, write: impl Fn(&Path, &[Event])) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file);
    let plugins = plugin_dir(&[artifacts().lib(&format!("zu_plugin_{sink}"))]);
    let events = sample();
    write(&path, &events[..3]);
    let f = Follower::start(plugins.path(), sink, &json!({"path": path}), 20);
    assert_eq!(f.events(3), ids_of(&events[..3], 1));

    std::fs::remove_file(&path).unwrap();
    f.says("the log was deleted");
    write(&path, &events[3..5]);
    assert_eq!(
        f.events(2),
        ids_of(&events[3..5], 1),
        "the new log from its first event"
    );

    let other = dir.path().join(format!("other-{file}"));
    write(&other, &events[5..9]);
    std::fs::rename(&other, &path).unwrap();
    f.says("the log was replaced");
    assert_eq!(f.events(4), ids_of(&events[5..9], 1));

    // Emptied in place, then written again (longer than before), maybe
    // before the follower looks.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    write(&path, &events[9..15]);
    f.says("the log was");
    assert_eq!(f.events(6), ids_of(&events[9..15], 1));
}

#[test]
fn a_jsonl_follower_goes_on_across_delete_replace_and_truncate() {
    follow_across_restarts("jsonl", "zu.jsonl", |path, events| {
        let (sink, _p) = jsonl(path);
        sink.append_batch(events).unwrap();
    });
}

#[test]
fn a_sqlite_follower_goes_on_across_delete_replace_and_truncate() {
    follow_across_restarts("sqlite", "zu.db", |path, events| {
        let (sink, _p) = sqlite(path);
        sink.append_batch(events).unwrap();
        sink.close().unwrap();
    });
}

#[test]
fn a_follower_goes_on_past_a_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zu.jsonl");
    let (sink, plugins) = jsonl(&path);
    let events = sample();
    sink.append_batch(&events[..2]).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"garbage\n")
        .unwrap();
    let f = Follower::start(plugins.path(), "jsonl", &json!({"path": path}), 20);
    assert_eq!(f.events(2), ids_of(&events[..2], 1));
    f.says("skipped line 3");
    sink.append_batch(&events[2..4]).unwrap();
    assert_eq!(f.events(2), ids_of(&events[2..4], 4));
}

/// A database another program made, in rollback-journal mode.
fn foreign_database(path: &Path, with_events_table: bool) {
    let db = rusqlite::Connection::open(path).unwrap();
    db.execute_batch(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes (body) VALUES ('mine');",
    )
    .unwrap();
    if with_events_table {
        db.execute_batch("CREATE TABLE events (id INTEGER PRIMARY KEY, what TEXT)")
            .unwrap();
    }
}

#[test]
fn a_foreign_sqlite_database_is_refused_without_a_byte_changed() {
    for with_events_table in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("theirs.db");
        foreign_database(&path, with_events_table);
        let before = std::fs::read(&path).unwrap();
        let plugins = plugin_dir(&[
            artifacts().lib("zu_plugin_sqlite"),
            artifacts().lib("zu_plugin_scripted"),
        ]);
        let cfg = json!({"path": path}).to_string();
        let p = plugins.path().to_str().unwrap();
        let out = zu_events(&["--plugins", p, "--sink", "sqlite", "--sink-config", &cfg]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("not a Zu event log"), "{stderr}");
        let run = Command::new(&artifacts().zu)
            .args(["run", "--plugins", p, "--provider", "scripted", "--query", "q"])
            .args(["--provider-config", r#"{"responses": [{"text": "\"x\""}]}"#])
            .args(["--sink", "sqlite", "--sink-config", &cfg])
            .env_remove("ZU_PLUGIN_PATH")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_ne!(run.status.code(), Some(0), "{stderr}");
        assert!(stderr.contains("not a Zu event log"), "{stderr}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "not a byte changed");
        let files: HashSet<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            files,
            HashSet::from(["theirs.db".to_owned()]),
            "no journal files left behind"
        );
    }
}
