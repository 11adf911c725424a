//! A child process for the durability and concurrency tests: loads one sink
//! plugin library and appends events, one at a time or in batches. After
//! each append returns it prints `N EVENT_ID` per event on stdout (flushed),
//! until it has written COUNT events or is killed.
//!
//! Usage: sink_writer LIB SINK_NAME CONFIG_JSON [COUNT] [--pad BYTES]
//!        [--big BYTES] [--batch N]
//!
//! Event N carries `{"n": N, "writer": PID, "pad": "x" * BYTES}` (200 bytes
//! by default); with `--big`, every other event (even N) is BYTES long
//! instead. It waits for a line on stdin first when `--wait` is given, so a
//! test can start many writers at the same moment.

use std::io::{BufRead, Write};

use serde_json::json;
use uuid::Uuid;
use zu_loader::Loader;
use zu_plugin_api::contracts::Event;
use zu_plugin_api::version::Kind;
use zu_runtime::Registry;

struct Options {
    count: u64,
    pad: usize,
    big: Option<usize>,
    batch: usize,
    wait: bool,
}

fn options(rest: &[String]) -> Options {
    let mut o = Options {
        count: u64::MAX,
        pad: 200,
        big: None,
        batch: 1,
        wait: false,
    };
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        let mut number = || -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{arg} takes a number"))
        };
        match arg.as_str() {
            "--pad" => o.pad = number(),
            "--big" => o.big = Some(number()),
            "--batch" => o.batch = number().max(1),
            "--wait" => o.wait = true,
            n => o.count = n.parse().expect("COUNT is a number"),
        }
    }
    o
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, lib, name, config, rest @ ..] = args.as_slice() else {
        eprintln!(
            "usage: sink_writer LIB SINK_NAME CONFIG_JSON [COUNT] [--pad BYTES] [--big BYTES] [--batch N] [--wait]"
        );
        std::process::exit(2);
    };
    let o = options(rest);
    let mut loader = Loader::new();
    loader.set_config(
        Kind::Sinks,
        name,
        serde_json::from_str(config).expect("CONFIG_JSON is JSON"),
    );
    let mut registry = Registry::new();
    if o.wait {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).expect("a line on stdin");
    }
    loader.load_file(&mut registry, lib.as_ref());
    let sink = registry
        .sink(name)
        .unwrap_or_else(|| panic!("sink {name} did not load: {:?}", registry.failures()));
    let trace = Uuid::new_v4();
    let writer = std::process::id();
    let mut out = std::io::stdout().lock();
    let mut n = 0;
    while n < o.count {
        let batch: Vec<Event> = (n..o.count.min(n + o.batch as u64))
            .map(|n| {
                let pad = match o.big {
                    Some(big) if n.is_multiple_of(2) => big,
                    _ => o.pad,
                };
                let payload = json!({"n": n, "writer": writer, "pad": "x".repeat(pad)});
                let payload = payload.as_object().cloned().unwrap();
                Event::new(trace, trace, None, "harness.tool.invoked", "writer", payload).unwrap()
            })
            .collect();
        if let [one] = batch.as_slice() {
            sink.append(one).expect("append");
        } else {
            sink.append_batch(&batch).expect("append_batch");
        }
        for e in &batch {
            writeln!(out, "{n} {}", e.event_id()).unwrap();
            n += 1;
        }
        out.flush().unwrap();
    }
}
