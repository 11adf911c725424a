//! A loop-only workload for profilers: `valgrind --tool=callgrind
//! target/release/examples/profile_loop` (or `perf record`). Runs K=1000
//! with the noop plugins in-process, `RUNS` times (default 5).

use std::sync::Arc;

use zu_host::{run_task, EventBus, PluginObject, Registry, RunOptions};
use zu_plugin_api::contracts::{Budget, TaskSpec};
use zu_plugin_api::ports::{Envelope, Plugin};
use zu_plugin_noop::{BenchScript, Noop, NullDetector, NullValidator};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let runs: usize = std::env::var("RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    let mut registry = Registry::new();
    registry
        .register_native(Noop::NAME, Noop::ENVELOPE, PluginObject::Tool(Arc::new(Noop)))
        .unwrap();
    registry
        .register_native(
            NullDetector::NAME,
            Envelope::NONE,
            PluginObject::Detector(Arc::new(NullDetector)),
        )
        .unwrap();
    registry
        .register_native(
            NullValidator::NAME,
            Envelope::NONE,
            PluginObject::Validator(Arc::new(NullValidator)),
        )
        .unwrap();
    let start = std::time::Instant::now();
    for _ in 0..runs {
        let mut spec = TaskSpec::new("bench");
        spec.budget = Budget {
            max_steps: 1005,
            wall_time_s: 10_000,
            ..Budget::default()
        };
        let bus = Arc::new(EventBus::new());
        let r = run_task(
            &spec,
            Arc::new(BenchScript::with_turns(1000)),
            &registry,
            &bus,
            &RunOptions::default(),
        )
        .unwrap();
        assert!(r.value.is_some());
    }
    eprintln!("{:.0} steps/s", (runs * 1000) as f64 / start.elapsed().as_secs_f64());
}
