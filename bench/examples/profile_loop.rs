//! A loop-only workload for profilers: `valgrind --tool=callgrind
//! target/release/examples/profile_loop` (or `perf record`). Runs K=1000
//! with the noop plugins in-process, `RUNS` times (default 5); with
//! `ISOLATED=1`, each plugin in the noop library's process instead (needs
//! `target/release/zu` and the noop library).

use zu_bench::isolated::isolated;
use zu_bench::runs::{in_process, job};
use zu_runtime::{run_task, RunOptions};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const K: usize = 1000;

fn main() {
    let runs: usize = std::env::var("RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    let (plugins, _dirs) = if std::env::var_os("ISOLATED").is_some() {
        let exe = std::env::current_exe().expect("this example");
        let release = exe.parent().and_then(|p| p.parent()).expect("target/release");
        let (plugins, dir, cache) = isolated(release, true).expect("the isolated plugins load");
        (plugins, Some((dir, cache)))
    } else {
        (in_process(), None)
    };
    let start = std::time::Instant::now();
    let mut buses = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (spec, provider, bus) = job(K, &plugins);
        let r = run_task(&spec, provider, &plugins.registry, &bus, &RunOptions::default()).expect("the run ends");
        assert!(r.value.is_some(), "the run answered");
        buses.push(bus);
    }
    eprintln!("{:.0} steps/s", (runs * K) as f64 / start.elapsed().as_secs_f64());
    for bus in buses {
        let all = bus.count(&zu_plugin_api::filter::EventFilter::all()).expect("count");
        let sandboxes = bus
            .count(&zu_plugin_api::filter::EventFilter::all().with(
                zu_plugin_api::filter::FilterField::Type,
                Some(zu_plugin_api::events::SANDBOX_APPLIED),
            ))
            .expect("count");
        assert_eq!((all - sandboxes) as usize, 4 * K + 2, "every run took K steps");
    }
}
