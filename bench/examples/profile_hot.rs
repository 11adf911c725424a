//! The hot-path workloads for profilers:
//! `MODE=publish perf record target/release/examples/profile_hot`.
//! `publish`: 100k pre-built events onto a fresh bus with a `SessionStore`
//! (`bus_publish_memory`); `build`: the same, building each event
//! (`event_build_publish`); `event`: building only; `scope`: `scope_event` on
//! 100k events with a 2 KB text field; `register`: 100k registry
//! registrations. Each `REPS` times (default 20), best repetition printed.
//! Only the chosen mode's data is built, so a profile is mostly the timed work.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zu_bench::workloads::{bus_with_store, make_event, scope_events, TOOL_INVOKED};
use zu_plugin_api::contracts::Event;
use zu_plugin_api::ports::Plugin;
use zu_plugin_api::version::Kind;
use zu_plugin_noop::Noop;
use zu_runtime::{PluginInfo, PluginObject, Registry};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const N: usize = 100_000;

/// Times `body` on a fresh `setup()` `reps` times (the state is dropped
/// outside the timing); the best repetition.
fn best<S>(reps: usize, mut setup: impl FnMut() -> S, mut body: impl FnMut(&S)) -> Duration {
    (0..reps)
        .map(|_| {
            let state = setup();
            let start = Instant::now();
            body(&state);
            let took = start.elapsed();
            drop(state);
            took
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let reps: usize = std::env::var("REPS").ok().and_then(|r| r.parse().ok()).unwrap_or(20);
    let mode = std::env::var("MODE").unwrap_or_default();
    let wanted = |name: &str| mode.is_empty() || mode == name;
    let report =
        |name: &str, took: Duration| eprintln!("{name}: best {:.1} ns/op", took.as_secs_f64() * 1e9 / N as f64);
    let bus = || bus_with_store().0;
    if wanted("publish") {
        let prebuilt: Vec<Arc<Event>> = (0..N).map(|i| Arc::new(make_event(i, TOOL_INVOKED))).collect();
        let took = best(reps, bus, |bus| {
            for e in &prebuilt {
                bus.publish_shared(e).expect("memory sink");
            }
        });
        report("publish", took);
    }
    if wanted("build") {
        let took = best(reps, bus, |bus| {
            for i in 0..N {
                bus.publish(make_event(i, TOOL_INVOKED)).expect("memory sink");
            }
        });
        report("build", took);
    }
    if wanted("event") {
        let took = best(
            reps,
            || (),
            |_| {
                for i in 0..N {
                    black_box(make_event(i, TOOL_INVOKED));
                }
            },
        );
        report("event", took);
    }
    if wanted("scope") {
        let events = scope_events(N);
        let took = best(
            reps,
            || (),
            |_| {
                for e in &events {
                    black_box(zu_runtime::view::scope_event(e, false));
                }
            },
        );
        report("scope", took);
    }
    if wanted("register") {
        let names: Vec<String> = (0..N).map(|i| format!("tool_{i}")).collect();
        let tool = PluginObject::Tool(Arc::new(Noop));
        let registry = std::cell::RefCell::new(Registry::new());
        let took = best(
            reps,
            || registry.replace(Registry::new()),
            |_| {
                let mut reg = registry.borrow_mut();
                for name in &names {
                    reg.register(PluginInfo::native(Kind::Tools, name, Noop::ENVELOPE), tool.clone())
                        .expect("distinct names");
                }
            },
        );
        report("register", took);
    }
}
