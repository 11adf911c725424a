//! A child process for the durability tests: loads one sink plugin library,
//! appends events one at a time, and after each append returns prints
//! `N EVENT_ID` on stdout (flushed), until it has written COUNT or is killed.
//!
//! Usage: sink_writer LIB SINK_NAME CONFIG_JSON [COUNT]

use std::io::Write;

use serde_json::json;
use uuid::Uuid;
use zu_loader::Loader;
use zu_plugin_api::contracts::Event;
use zu_plugin_api::version::Kind;
use zu_runtime::Registry;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, lib, name, config, rest @ ..] = args.as_slice() else {
        eprintln!("usage: sink_writer LIB SINK_NAME CONFIG_JSON [COUNT]");
        std::process::exit(2);
    };
    let count: u64 = rest.first().map_or(u64::MAX, |c| c.parse().expect("COUNT is a number"));
    let mut loader = Loader::new();
    loader.set_config(
        Kind::Sinks,
        name,
        serde_json::from_str(config).expect("CONFIG_JSON is JSON"),
    );
    let mut registry = Registry::new();
    loader.load_file(&mut registry, lib.as_ref());
    let sink = registry
        .sink(name)
        .unwrap_or_else(|| panic!("sink {name} did not load: {:?}", registry.failures()));
    let trace = Uuid::new_v4();
    let mut out = std::io::stdout().lock();
    for n in 0..count {
        let payload = json!({"n": n, "pad": "x".repeat(200)}).as_object().cloned().unwrap();
        let event = Event::new(trace, trace, None, "harness.tool.invoked", "writer", payload).unwrap();
        sink.append(&event).expect("append");
        writeln!(out, "{n} {}", event.event_id()).unwrap();
        out.flush().unwrap();
    }
}
