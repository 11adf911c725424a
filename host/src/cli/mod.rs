//! The subcommands of `zu`, one module each, and the plugin loading they share.

pub mod events;
pub mod plugins;
pub mod run;

use std::path::PathBuf;

use serde_json::Value;
use zu_host::{HostError, Loader, Registry};
use zu_plugin_api::version::Kind;

/// A loader that passes each plugin its config.
pub fn configured_loader(configs: Vec<(Kind, String, Value)>) -> Loader {
    let mut loader = Loader::new();
    for (kind, name, value) in configs {
        loader.set_config(kind, &name, value);
    }
    loader
}

/// Loads every library of `dirs` into a fresh registry, with per-plugin configs.
pub fn load_registry(dirs: &[PathBuf], configs: Vec<(Kind, String, Value)>) -> Result<Registry, HostError> {
    let mut registry = Registry::new();
    configured_loader(configs).load_dirs(&mut registry, dirs)?;
    Ok(registry)
}

/// Why the `noun` plugin `name` of `kind` is not in the registry: its load
/// failure if it was refused, else what did load. `context` follows the name.
pub fn missing_plugin(registry: &Registry, kind: Kind, noun: &str, name: &str, context: &str) -> String {
    registry
        .failures()
        .iter()
        .find(|f| f.kind.as_deref() == Some(kind.as_str()) && f.name.as_deref() == Some(name))
        .map_or_else(
            || {
                format!(
                    "no {noun} plugin named {name:?}{context}; loaded {kind}: {:?}",
                    registry.names(kind)
                )
            },
            |f| f.error.to_string(),
        )
}

pub use zu_host::loader::json_arg as config_value;

/// Parses every `KIND.NAME=JSON` argument.
pub fn parse_configs(args: &[String]) -> Result<Vec<(Kind, String, Value)>, HostError> {
    args.iter().map(|a| zu_host::loader::parse_config_arg(a)).collect()
}
