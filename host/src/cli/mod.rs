//! The subcommands of `zu`, one module each, and the plugin loading they share.

pub mod events;
pub mod plugins;
pub mod run;

use std::path::PathBuf;

use serde_json::Value;
use zu_host::{HostError, Loader, Registry};
use zu_plugin_api::version::Kind;

/// Loads every library of `dirs` into a fresh registry, with per-plugin configs.
pub fn load_registry(dirs: &[PathBuf], configs: Vec<(Kind, String, Value)>) -> Result<Registry, HostError> {
    let mut loader = Loader::new();
    for (kind, name, value) in configs {
        loader.set_config(kind, &name, value);
    }
    let mut registry = Registry::new();
    loader.load_dirs(&mut registry, dirs)?;
    Ok(registry)
}

pub use zu_host::loader::json_arg as config_value;

/// Parses every `KIND.NAME=JSON` argument.
pub fn parse_configs(args: &[String]) -> Result<Vec<(Kind, String, Value)>, HostError> {
    args.iter().map(|a| zu_host::loader::parse_config_arg(a)).collect()
}
