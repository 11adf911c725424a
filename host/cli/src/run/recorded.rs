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
use zu_runtime::{Checks, Containment};

use super::plan::Plan;
use crate::config::PluginConfig;
use crate::Failure;

/// What a redacted secret is replaced with on the log.
pub(crate) const REDACTED: &str = "[kept off the log]";

/// Words that make a config key (or a `key=value` inside a string) a
/// secret's, matched on the key lowercased with `-` as `_`.
const SECRET_PARTS: [&str; 10] = [
    "api_key",
    "apikey",
    "token",
    "password",
    "passwd",
    "secret",
    "authorization",
    "credential",
    "cookie",
    "private_key",
];
/// Whole keys that name a secret.
const SECRET_KEYS: [&str; 8] = ["key", "auth", "pass", "pwd", "dsn", "access_key", "bearer", "signature"];

/// Whether a config key names a secret (its value, whatever its type, never
/// reaches the log; a `*_env` key names a variable and is kept).
fn secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('-', "_");
    !k.ends_with("_env") && (SECRET_KEYS.contains(&k.as_str()) || SECRET_PARTS.iter().any(|s| k.contains(s)))
}

/// `config` with secrets replaced (by key, whatever the value; `key=value`
/// pairs and URL credentials inside strings), and each string naming an
/// existing relative path made absolute from `cwd`.
fn for_the_log(config: &Value, cwd: &Path) -> Value {
    match config {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = match secret_key(k) {
                        true => Value::String(REDACTED.into()),
                        false => for_the_log(v, cwd),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| for_the_log(v, cwd)).collect()),
        Value::String(s) => Value::String(without_inline_secrets(&without_url_password(&absolute(s, cwd)))),
        other => other.clone(),
    }
}

/// `s` with the value of each `NAME=value` / `NAME:value` whose name is a
/// secret's (`--token=abc`, `password=x` of a libpq string, `?key=` of a
/// query) replaced.
fn without_inline_secrets(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find(['=', ':']) {
        let (before, after) = rest.split_at(at);
        let name_start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .map_or(0, |i| i + 1);
        let name = &before[name_start..];
        out.push_str(before);
        out.push_str(&after[..1]);
        let value = &after[1..];
        let end = value.find([' ', '&', ';', ',', '"', '\'']).unwrap_or(value.len());
        if !name.is_empty() && secret_key(name) && end > 0 && !value.starts_with("//") {
            out.push_str(REDACTED);
            rest = &value[end..];
        } else {
            rest = value;
        }
    }
    out.push_str(rest);
    out
}

fn absolute(s: &str, cwd: &Path) -> String {
    let p = Path::new(s);
    let plausible = !s.is_empty() && s.len() < 4096 && !s.contains("://") && !s.contains('\n');
    if plausible && p.is_relative() && cwd.join(p).exists() {
        return cwd.join(p).display().to_string();
    }
    s.to_owned()
}

/// A URL's (or a scheme-less DSN's) credentials replaced: the password of
/// `user:password@host`, or a lone user that may be a token
/// (`https://ghp_x@host`). The userinfo ends at the last `@` before the
/// path, so a password holding `/`, `?` or `#` is still found.
fn without_url_password(s: &str) -> String {
    if s.contains(char::is_whitespace) {
        return s.to_owned();
    }
    let (scheme, rest) = match s.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), s),
    };
    let Some(at) = rest.rfind('@') else {
        return s.to_owned();
    };
    let (user_info, host) = (&rest[..at], &rest[at + 1..]);
    // A scheme-less string is a DSN only as user:password@host.
    if scheme.is_empty() && !user_info.contains(':') {
        return s.to_owned();
    }
    let user = match user_info.split_once(':') {
        Some((user, _)) => format!("{user}:{REDACTED}"),
        None => REDACTED.to_owned(),
    };
    format!("{scheme}{user}@{host}")
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
        "checks": match plan.checks {
            Checks::FailOpen => "fail-open",
            Checks::FailClosed => "fail-closed",
        },
        "containment": match plan.containment {
            Containment::Audit => "audit",
            Containment::Required => "required",
        },
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
    pub containment: bool,
    pub checks: bool,
    pub max_usd: bool,
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
            differs.push(format!("the plugin directories of the run's plan: {}", dirs.join(", ")));
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
    // What contained and bounded the run holds for the rest of it too.
    if let Some(c) = text("containment").filter(|_| !given.containment) {
        plan.containment = c
            .parse()
            .map_err(|e: String| Failure::usage(format!("the run's plan: {e}")))?;
        for t in names("trusted").unwrap_or_default() {
            if !plan.trusted.contains(&t) {
                plan.trusted.push(t);
            }
        }
    }
    if let Some(c) = text("checks").filter(|_| !given.checks) {
        plan.checks = c
            .parse()
            .map_err(|e: String| Failure::usage(format!("the run's plan: {e}")))?;
    }
    if !given.max_usd {
        plan.max_usd = recorded.get("max_usd").and_then(Value::as_f64);
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
        let more = json!({
            "headers": {"x-api-key": "k1", "Authorization": ["Bearer k2"]},
            "token": 12345,
            "args": ["--token=k3", "--verbose"],
            "dsn": "host=db password=k4 user=zu",
            "url2": "https://api.example.com/v1?key=k5&model=x",
            "git": "https://ghp_k6@github.com/o/r",
            "odd": "postgresql://zu:p/a?s#s@db.example.com/zu",
            "plain": "zu:k8@db.example.com/zu",
            "conn": "user=zu password=k9",
        });
        let text = for_the_log(&more, dir.path()).to_string();
        for k in ["k1", "k2", "12345", "k3", "k4", "k5", "k6", "p/a", "k8", "k9"] {
            assert!(!text.contains(k), "{k} reached the log: {text}");
        }
        assert!(
            text.contains("--verbose") && text.contains("model=x") && text.contains("github.com/o/r"),
            "{text}"
        );
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
