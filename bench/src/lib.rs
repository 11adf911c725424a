//! The benchmark's workloads as a library: the `zu-bench` binary runs them
//! all and prints JSON; the profiling examples (`examples/profile_*.rs`) run
//! one at a time under `perf` or callgrind.

pub mod boundary;
pub mod harness;
pub mod isolated;
pub mod logs;
pub mod real;
pub mod runs;
pub mod serve;
pub mod workloads;
