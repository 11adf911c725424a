//! The run's plan as `task.started` records it, so the run can be run again
//! from its log alone: the plugin directories, the plugins taking part and
//! their configs (relative paths made absolute, secrets kept off the log),
//! and the options. `zu run --resume` rebuilds what its flags and zu.toml do
//! not give from it, and says where they differ.

use std::path::Path;

use serde_json::{json, Value};
use uuid::Uuid;
use zu_plugin_api::events::TASK_STARTED;
use zu_plugin_api::filter::{EventFilter, FilterField};
use zu_plugin_api::version::Kind;

use super::plan::Plan;
use crate::config::PluginConfig;
use crate::Failure;

/// What a redacted secret is replaced with on the log.
pub(crate) const REDACTED: &str = "[kept off the log]";

/// Whether a config key names a secret (its value never reaches the log; a
/// `*_env` key names a variable and is kept).
fn secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    !k.ends_with("_env")
        && [
            "api_key",
            "apikey",
            "token",
            "password",
            "passwd",
            "secret",
            "authorization",
            "credential",
        ]
        .iter()
        .any(|s| k.contains(s))
}

/// `config` with secrets replaced (by key, and a URL's password), and each
/// string naming an existing relative path made absolute from `cwd`.
fn for_the_log(config: &Value, cwd: &Path) -> Value {
    match config {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(_) if secret_key(k) => Value::String(REDACTED.into()),
                        other => for_the_log(other, cwd),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| for_the_log(v, cwd)).collect()),
        Value::String(s) => Value::String(without_url_password(&absolute(s, cwd))),
        other => other.clone(),
    }
}

fn absolute(s: &str, cwd: &Path) -> String {
    let p = Path::new(s);
    let plausible = !s.is_empty() && s.len() < 4096 && !s.contains("://") && !s.contains('\n');
    if plausible && p.is_relative() && cwd.join(p).exists() {
        return cwd.join(p).display().to_string();
    }
    s.to_owned()
}

/// `scheme://user:password@host/...` with the password replaced.
fn without_url_password(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) if user_info.contains(':') => {
            let user = user_info.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:{REDACTED}@{host}{tail}")
        }
        _ => s.to_owned(),
    }
}

/// The plan `task.started` records for `plan`, run in `cwd`.
pub(crate) fn record(plan: &Plan, cwd: &Path) -> Value {
    let configs: Vec<Value> = plan
        .configs
        .iter()
        .map(|c| json!({"kind": c.kind.as_str(), "name": c.name, "config": for_the_log(&c.value, cwd)}))
        .collect();
    let dirs: Vec<String> = plan
        .dirs
        .dirs
        .iter()
        .map(|d| absolute(&d.display().to_string(), cwd))
        .collect();
    json!({
        "plugin_dirs": dirs,
        "provider": plan.provider,
        "tier_providers": plan.tier_providers,
        "finish_provider": plan.finish_provider,
        "sink": plan.sink,
        "configs": configs,
        "tools": plan.tools,
        "detectors": plan.detectors,
        "validators": plan.validators,
        "checks": format!("{:?}", plan.checks),
        "containment": format!("{:?}", plan.containment),
        "trusted": plan.trusted,
        "max_usd": plan.max_usd,
    })
}

/// The plan recorded with task `task`'s start on the log `bus` holds.
pub(crate) fn read(bus: &zu_runtime::EventBus, task: Uuid) -> Result<Option<Value>, Failure> {
    let started = EventFilter::all()
        .with(FilterField::TaskId, Some(task.to_string()))
        .with(FilterField::Type, Some(TASK_STARTED.to_owned()));
    let found = bus
        .query(&started, Some(1), 0)
        .map_err(|e| Failure::failed(format!("cannot read the log: {e}")))?;
    Ok(found.first().and_then(|e| e.event.payload().get("plan").cloned()))
}

/// What the user gave for a resumed run (flags or zu.toml), so the
/// recorded plan fills only the rest.
#[derive(Default, Clone)]
pub(crate) struct Given {
    pub provider: bool,
    pub dirs: bool,
    pub tools: bool,
    pub detectors: bool,
    pub validators: bool,
}

/// Fills what the user did not give of a resumed run's `plan` from the
/// `recorded` one; answers where the user's differs (said on stderr). A
/// config whose secret was kept off the log must be given again.
pub(crate) fn apply(plan: &mut Plan, recorded: &Value, given: &Given) -> Result<Vec<String>, Failure> {
    let mut differs = Vec::new();
    let text = |k: &str| recorded.get(k).and_then(Value::as_str).map(str::to_owned);
    let names = |k: &str| -> Option<Vec<String>> { serde_json::from_value(recorded.get(k)?.clone()).ok() };
    match text("provider") {
        Some(p) if !given.provider => plan.provider = p,
        Some(p) if p != plan.provider => differs.push(format!("provider {} (the run started with {p})", plan.provider)),
        _ => {}
    }
    if !given.dirs {
        if let Some(dirs) = names("plugin_dirs").filter(|d| !d.is_empty()) {
            let dirs: Vec<std::path::PathBuf> = dirs.into_iter().map(Into::into).collect();
            plan.dirs = zu_loader::discovery::plugin_dirs(&dirs);
        }
    }
    for (key, given, chosen) in [
        ("tools", given.tools, &mut plan.tools),
        ("detectors", given.detectors, &mut plan.detectors),
        ("validators", given.validators, &mut plan.validators),
    ] {
        let was = names(key);
        if !given {
            *chosen = was;
        } else if was.is_some() && *chosen != was {
            differs.push(format!(
                "{key} {:?} (the run started with {:?})",
                chosen,
                was.unwrap_or_default()
            ));
        }
    }
    if plan.finish_provider.is_none() {
        plan.finish_provider = text("finish_provider");
    }
    if plan.tier_providers.is_empty() {
        if let Some(tiers) = recorded.get("tier_providers").cloned() {
            plan.tier_providers = serde_json::from_value(tiers).unwrap_or_default();
        }
    }
    for c in recorded.get("configs").and_then(Value::as_array).into_iter().flatten() {
        let (Some(kind), Some(name), Some(config)) = (
            c.get("kind")
                .and_then(Value::as_str)
                .and_then(|k| k.parse::<Kind>().ok()),
            c.get("name").and_then(Value::as_str),
            c.get("config"),
        ) else {
            continue;
        };
        if plan.configs.iter().any(|p| p.kind == kind && p.name == name) {
            continue; // the user's own config wins
        }
        if holds_redacted(config) {
            return Err(Failure::usage(format!(
                "the run's {kind}.{name} config had a secret, which was kept off the log: give that config again \
                 (--config {kind}.{name}=JSON, or its table in zu.toml), or name the secret's variable (api_key_env)"
            )));
        }
        plan.configs.push(PluginConfig {
            kind,
            name: name.to_owned(),
            value: config.clone(),
            origin: "the run's plan on the log".into(),
        });
    }
    Ok(differs)
}

fn holds_redacted(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains(REDACTED),
        Value::Array(a) => a.iter().any(holds_redacted),
        Value::Object(o) => o.values().any(holds_redacted),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_off_the_log_and_relative_paths_become_absolute() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("docs")).unwrap();
        let config = json!({
            "root": "docs",
            "api_key": "sk-live-123",
            "api_key_env": "OPENAI_API_KEY",
            "url": "postgresql://zu:hunter2@db.example.com:5432/zu",
            "nested": {"bearer_token": "abc", "model": "gpt-4.1"},
        });
        let logged = for_the_log(&config, dir.path()).as_object().cloned().unwrap();
        assert_eq!(logged["root"], dir.path().join("docs").display().to_string());
        assert_eq!(logged["api_key"], REDACTED);
        assert_eq!(
            logged["api_key_env"], "OPENAI_API_KEY",
            "a variable's name is no secret"
        );
        assert_eq!(
            logged["url"],
            format!("postgresql://zu:{REDACTED}@db.example.com:5432/zu")
        );
        assert_eq!(logged["nested"]["bearer_token"], REDACTED);
        assert_eq!(logged["nested"]["model"], "gpt-4.1");
        assert!(!Value::Object(logged.clone()).to_string().contains("hunter2"));
        assert!(holds_redacted(&Value::Object(logged)));
    }
}
