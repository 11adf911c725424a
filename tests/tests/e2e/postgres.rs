//! The postgres sink against a real server (a throwaway one the tests start,
//! or `ZU_TEST_POSTGRES_URL`): the sink contract, twelve writer processes
//! starting on a new database at once, followers that see every event in
//! sequence order while they write (`zu events --follow` woken by NOTIFY),
//! a SIGKILLed writer, damaged rows, and `zu run` into the shared log.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use zu_plugin_api::filter::EventFilter;
use zu_plugin_api::prelude::*;
use zu_tests::postgres::fresh_database;
use zu_tests::{artifacts, plugin_dir};

use crate::logs::{assert_each_once, concurrent_writers, ids_of, Follower};
use crate::sinks::{assert_durable, contract, kill_writer_mid_stream, plugin_sink, sample, zu_events};

const LIB: &str = "zu_plugin_postgres";

fn postgres(config: Value) -> (Arc<dyn EventSink>, tempfile::TempDir) {
    plugin_sink(LIB, "postgres", config)
}

#[test]
fn the_postgres_sink_keeps_the_contract() {
    let (sink, _p) = postgres(json!({"url": fresh_database()}));
    contract(sink);
    let (sink, _p) = postgres(json!({"url": fresh_database(), "durability": "process"}));
    contract(sink);
}

#[test]
fn appends_are_idempotent_across_hosts() {
    let url = fresh_database();
    let (a, _p) = postgres(json!({"url": url}));
    let (b, _q) = postgres(json!({"url": url}));
    let events = sample();
    a.append_batch(&events[..5]).unwrap();
    b.append_batch(&events[3..8]).unwrap();
    b.append(&events[0]).unwrap();
    let stored = a.query(&EventFilter::all(), None, 0).unwrap();
    assert_eq!(
        stored.iter().map(|s| s.event.clone()).collect::<Vec<_>>(),
        events[..8].to_vec()
    );
}

#[test]
fn twelve_writer_processes_start_at_once_and_followers_miss_nothing() {
    let url = fresh_database();
    let config = json!({"url": url});
    // The log exists before the followers open it (a reader never creates one).
    let (_setup, _p) = postgres(config.clone());
    let plugins = plugin_dir(&[artifacts().lib(LIB)]);
    // Only NOTIFY can wake this follower in time: its poll is a minute.
    let cli = Follower::start(plugins.path(), "postgres", &config, 60_000);

    let (reader, _r) = postgres(json!({"url": url, "read_only": true}));
    let done = Arc::new(AtomicBool::new(false));
    let follower = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut after = 0;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let page = reader.query(&EventFilter::all(), Some(50), after).unwrap();
                for s in &page {
                    seen.push(s.seq);
                    after = s.seq;
                }
                if finished && page.is_empty() {
                    return seen;
                }
            }
        })
    };
    let reports = concurrent_writers(LIB, "postgres", &config, 12, &["40", "--batch", "3"]);
    done.store(true, Ordering::SeqCst);
    let seen = follower.join().unwrap();
    let total = reports.iter().map(Vec::len).sum::<usize>() as u64;
    assert_eq!(
        seen,
        (1..=total).collect::<Vec<_>>(),
        "the follower saw every event, in order"
    );
    let printed: Vec<u64> = cli.events(total as usize).iter().map(|(seq, _)| *seq).collect();
    assert_eq!(printed, (1..=total).collect::<Vec<_>>(), "zu events --follow too");

    let (check, _c) = postgres(json!({"url": url, "read_only": true}));
    assert_each_once(&*check, &reports, |_| 200);

    // Twelve processes creating the tables of a new database at the same moment.
    let fresh = json!({"url": fresh_database()});
    let reports = concurrent_writers(LIB, "postgres", &fresh, 12, &["5"]);
    let (check, _c) = postgres(fresh);
    assert_each_once(&*check, &reports, |_| 200);
}

#[test]
fn a_postgres_follower_goes_on_across_a_dropped_and_an_emptied_log() {
    let url = fresh_database();
    let config = json!({"url": url});
    let events = sample();
    let (writer, _p) = postgres(config.clone());
    writer.append_batch(&events[..3]).unwrap();
    let plugins = plugin_dir(&[artifacts().lib(LIB)]);
    let f = Follower::start(plugins.path(), "postgres", &config, 50);
    assert_eq!(f.events(3), ids_of(&events[..3], 1));

    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    db.batch_execute("DROP TABLE zu_events, zu_log").unwrap();
    f.says("the log was deleted");
    let (writer, _q) = postgres(config.clone()); // a new log in its place
    writer.append_batch(&events[3..5]).unwrap();
    assert_eq!(
        f.events(2),
        ids_of(&events[3..5], 1),
        "the new log from its first event"
    );

    // Emptied in place and written again, longer than before, maybe before the follower looks.
    db.batch_execute("BEGIN; TRUNCATE zu_events; UPDATE zu_log SET last_seq = 0; COMMIT")
        .unwrap();
    writer.append_batch(&events[5..10]).unwrap();
    f.says("the log was");
    assert_eq!(f.events(5), ids_of(&events[5..10], 1));
}

#[test]
fn postgres_appends_that_returned_survive_a_sigkill() {
    let url = fresh_database();
    let reported = kill_writer_mid_stream(LIB, "postgres", json!({"url": url}), 150);
    let (sink, _p) = postgres(json!({"url": url}));
    assert_durable(&*sink, &reported);
}

#[test]
fn a_reader_creates_nothing_and_says_what_is_missing() {
    let url = fresh_database();
    let plugins = plugin_dir(&[artifacts().lib(LIB)]);
    let cfg = json!({"url": url}).to_string();
    let out = zu_events(&[
        "--plugins",
        plugins.path().to_str().unwrap(),
        "--sink",
        "postgres",
        "--sink-config",
        &cfg,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no Zu event log"), "{stderr}");
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let tables: i64 = db
        .query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", &[])
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "the reader created nothing");
}

#[test]
fn a_run_logs_to_postgres_and_a_tampered_row_is_reported_not_hidden() {
    let url = fresh_database();
    let key = "b".repeat(64);
    let plugins = plugin_dir(&[artifacts().lib(LIB), artifacts().lib("zu_plugin_scripted")]);
    let p = plugins.path().to_str().unwrap();
    let cfg = json!({"url": url, "codec": {"kind": "aes-gcm", "key_env": "ZU_TEST_PG_KEY"}}).to_string();
    let run = Command::new(&artifacts().zu)
        .args([
            "run",
            "--plugins",
            p,
            "--provider",
            "scripted",
            "--query",
            "q",
            "--tools",
            "",
        ])
        .args(["--provider-config", r#"{"responses": [{"text": "\"x\""}]}"#])
        .args(["--sink", "postgres", "--sink-config", &cfg])
        .env_remove("ZU_PLUGIN_PATH")
        .env("ZU_TEST_PG_KEY", &key)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));

    let events = || {
        Command::new(&artifacts().zu)
            .args([
                "events",
                "--plugins",
                p,
                "--sink",
                "postgres",
                "--sink-config",
                &cfg,
                "--json",
            ])
            .env_remove("ZU_PLUGIN_PATH")
            .env("ZU_TEST_PG_KEY", &key)
            .output()
            .unwrap()
    };
    let out = events();
    assert_eq!(out.status.code(), Some(0));
    let n = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(n >= 4, "the run's events are in the log ({n})");

    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    db.execute("UPDATE zu_events SET type = 'harness.forged' WHERE seq = 2", &[])
        .unwrap();
    let out = events();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("skipped row seq 2"), "{stderr}");
    let seqs: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1].into_iter().chain(3..=n as u64).collect::<Vec<_>>());
}
