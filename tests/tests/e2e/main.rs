//! End-to-end tests: real plugin libraries in temporary directories, loaded by
//! the host library and by the `zu` binary. One test binary, one module per area.

mod author;
mod boundary;
mod cli;
mod compat;
mod containment;
mod embed;
mod front_door;
mod host_runs;
mod hostile_text;
mod loading;
mod logs;
mod mcp;
mod newcomer;
mod postgres;
mod providers;
mod run;
mod runtime_cli;
mod sandbox;
mod sandbox_settings;
mod scenarios;
mod scenarios_isolated;
mod serve;
mod serve_access;
mod shaping;
mod sinks;

use std::path::Path;

use zu_loader::Loader;
use zu_runtime::{LoadFailure, Registry};

/// Loads one directory into a fresh registry.
pub fn load(dir: &Path) -> Registry {
    let mut registry = Registry::new();
    Loader::new()
        .load_dir(&mut registry, dir)
        .expect("the directory is readable");
    registry
}

/// The single failure recorded for a library file name, by code.
pub fn failures_of<'a>(registry: &'a Registry, file: &str) -> Vec<&'a LoadFailure> {
    registry
        .failures()
        .iter()
        .filter(|f| {
            f.library
                .as_ref()
                .and_then(|p| p.file_name())
                .is_some_and(|n| n == file)
        })
        .collect()
}

/// Codes of all failures, in order.
pub fn codes(registry: &Registry) -> Vec<&'static str> {
    registry.failures().iter().map(|f| f.error.code()).collect()
}
