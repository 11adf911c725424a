//! The hot-path workloads for profilers: `perf record target/release/examples/profile_hot`.
//! `publish`: 100k pre-built events onto a fresh bus with a `SessionStore`
//! (`bus_publish_memory`); `build`: the same, building each event
//! (`event_build_publish`); `event`: building only; `scope`: `scope_event` on
//! 100k events with a 2 KB text field; `register`: 100k registry registrations. Each `REPS` times (default 20), best
//! repetition printed; `MODE=NAME` runs one of them.

use std::sync::Arc;

use uuid::Uuid;
use zu_host::{EventBus, MemorySink, PluginInfo, PluginObject, Registry, SessionStore};
use zu_plugin_api::contracts::{Event, JsonObject};
use zu_plugin_api::ports::Plugin;
use zu_plugin_api::version::Kind;
use zu_plugin_noop::Noop;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ID: Uuid = Uuid::from_u128(0x00000000_0000_4000_8000_000000000001);
const PARENT: Uuid = Uuid::from_u128(0x00000000_0000_4000_8000_000000000002);
const N: usize = 100_000;

fn payload(i: usize) -> JsonObject {
    let mut args = JsonObject::new();
    args.insert("i".into(), i.into());
    let mut p = JsonObject::new();
    p.insert("tool".into(), "noop".into());
    p.insert("args".into(), serde_json::Value::Object(args));
    p
}

fn event(i: usize) -> Event {
    Event::new(ID, ID, Some(PARENT), "harness.tool.invoked", "bench", payload(i)).expect("namespaced")
}

fn bus() -> EventBus {
    let mut bus = EventBus::with_memory(Arc::new(MemorySink::new()));
    bus.subscribe(Arc::new(SessionStore::default()));
    bus
}

fn main() {
    let reps: usize = std::env::var("REPS").ok().and_then(|r| r.parse().ok()).unwrap_or(20);
    let mode = std::env::var("MODE").unwrap_or_default();
    let prebuilt: Vec<Arc<Event>> = (0..N).map(|i| Arc::new(event(i))).collect();
    let text: String = "abcdefghijklmnopqrstuvwxyz0123456789".repeat(57)[..2048].to_owned();
    let mut big = JsonObject::new();
    big.insert("step".into(), 1.into());
    big.insert("tool".into(), "noop".into());
    big.insert("text".into(), text.into());
    let scoped: Vec<Event> = (0..N)
        .map(|_| Event::new(ID, ID, Some(PARENT), "harness.tool.returned", "noop", big.clone()).expect("namespaced"))
        .collect();
    let names: Vec<String> = (0..N).map(|i| format!("tool_{i}")).collect();
    let tool = PluginObject::Tool(Arc::new(Noop));
    for (name, run) in [
        ("publish", 0),
        ("build", 1),
        ("event", 2),
        ("scope", 3),
        ("register", 4),
    ] {
        if !mode.is_empty() && mode != name {
            continue;
        }
        let mut best = f64::MAX;
        for _ in 0..reps {
            let bus = bus();
            let start = std::time::Instant::now();
            if run == 0 {
                for e in &prebuilt {
                    bus.publish_shared(e).expect("memory sink");
                }
            } else if run == 1 {
                for i in 0..N {
                    bus.publish(event(i)).expect("memory sink");
                }
            } else if run == 2 {
                for i in 0..N {
                    std::hint::black_box(event(i));
                }
            } else if run == 4 {
                let mut reg = Registry::new();
                for name in &names {
                    reg.register(PluginInfo::native(Kind::Tools, name, Noop::ENVELOPE), tool.clone())
                        .expect("distinct names");
                }
                std::hint::black_box(reg);
            } else {
                for e in &scoped {
                    std::hint::black_box(zu_host::view::scope_event(e, false));
                }
            }
            best = best.min(start.elapsed().as_secs_f64());
            drop(bus);
        }
        eprintln!("{name}: best {:.1} ns/event", best * 1e9 / N as f64);
    }
}
