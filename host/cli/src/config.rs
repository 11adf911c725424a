//! Plugin configs from the command line and zu.toml: `KIND.NAME=JSON` and
//! `@FILE` values, each remembered with where it came from, so a message
//! about a config names the flag or file the user actually wrote.

use std::path::Path;

use serde_json::Value;
use zu_plugin_api::version::Kind;

/// A config value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A `--config` argument that is not `KIND.NAME=JSON`.
    #[error("invalid plugin config {given:?}: {reason} (expected KIND.NAME=JSON, e.g. 'tools.file_read={{\"root\": \"docs\"}}')")]
    BadArg {
        /// What was given.
        given: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A JSON value (inline or `@FILE`) that cannot be read or parsed.
    #[error("invalid {origin}: {reason}")]
    BadJson {
        /// The flag or file it came from.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A config for a plugin that is neither loaded nor refused: no plugin
    /// directory, libraries refused whole, or a typo — `why` says which.
    #[error("{origin} configures {kind} plugin {name:?}, but {why}")]
    NoSuchPlugin {
        /// The flag or file it came from.
        origin: String,
        /// The kind given.
        kind: Kind,
        /// The name given.
        name: String,
        /// The real cause, first.
        why: String,
    },
}

/// One plugin's config and where it came from (`--config tools.x`,
/// `--sink-config`, `zu.toml [config.tools.x]`).
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// The plugin's kind.
    pub kind: Kind,
    /// The plugin's name.
    pub name: String,
    /// The value its constructor gets.
    pub value: Value,
    /// Where the user wrote it, for messages.
    pub origin: String,
}

/// A JSON value given inline or as `@FILE`.
pub fn json_arg(raw: &str) -> Result<Value, String> {
    let text = match raw.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?,
        None => raw.to_owned(),
    };
    serde_json::from_str(&text).map_err(|e| format!("not valid JSON: {e}"))
}

/// A JSON value of flag `flag`, inline or `@FILE`.
pub fn json_flag(flag: &str, raw: &str) -> Result<Value, ConfigError> {
    json_arg(raw).map_err(|reason| ConfigError::BadJson {
        origin: flag.to_owned(),
        reason,
    })
}

/// Parses `KIND.NAME=JSON`, where JSON may be `@FILE`.
pub fn parse_config_arg(arg: &str) -> Result<PluginConfig, ConfigError> {
    let bad = |reason: String| ConfigError::BadArg {
        given: arg.to_owned(),
        reason,
    };
    let (key, json) = arg.split_once('=').ok_or_else(|| bad("missing '='".into()))?;
    let (kind, name) = key
        .split_once('.')
        .ok_or_else(|| bad(format!("{key:?} is not KIND.NAME")))?;
    let kind: Kind = kind
        .parse()
        .map_err(|e: zu_plugin_api::version::UnknownKind| bad(e.to_string()))?;
    if name.is_empty() {
        return Err(bad("the plugin name is empty".into()));
    }
    Ok(PluginConfig {
        kind,
        name: name.to_owned(),
        value: json_arg(json).map_err(bad)?,
        origin: format!("--config {kind}.{name}"),
    })
}

/// Parses every `--config KIND.NAME=JSON` argument.
pub fn parse_config_args(args: &[String]) -> Result<Vec<PluginConfig>, ConfigError> {
    args.iter().map(|a| parse_config_arg(a)).collect()
}

/// Reads a JSON config file named in zu.toml (relative to it).
pub fn json_file(path: &Path, origin: &str) -> Result<Value, ConfigError> {
    let bad = |reason: String| ConfigError::BadJson {
        origin: origin.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| bad(format!("{} is not valid JSON: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_args_parse_and_refuse_clearly() {
        let c = parse_config_arg(r#"tools.file_read={"root": "docs"}"#).unwrap();
        assert_eq!(
            (c.kind, c.name.as_str(), c.value["root"].as_str(), c.origin.as_str()),
            (Kind::Tools, "file_read", Some("docs"), "--config tools.file_read")
        );
        for bad in ["tools.x", "toolsx={}", "gadgets.x={}", "tools.={}", "tools.x={nope"] {
            let err = parse_config_arg(bad).unwrap_err();
            assert!(matches!(err, ConfigError::BadArg { .. }), "{bad}");
        }
    }
}
