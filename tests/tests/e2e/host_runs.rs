//! One host, many runs (in progress): a run's plan on its log, so a run can
//! be resumed from the log alone.

use serde_json::json;

use crate::newcomer::{log_of, plugins_with, result_of, stderr, workdir, zu_env};

#[test]
fn a_killed_run_resumes_from_its_log_alone_with_its_plugins_and_configs() {
    let plugins = plugins_with(&[]);
    let script = json!({"responses": [
        {"tool_calls": [{"name": "file_read", "args": {"path": "notes.md"}}]},
        {"tool_calls": [{"name": "file_read", "args": {"path": "notes.md"}}]},
        {"text": "{\"date\": \"2026-12-01\"}", "delay_ms": 30000}
    ]});
    let dir = workdir(plugins.path(), script, "plugins = [PLUGINS]");
    // Killed while the model "thinks" about its third answer.
    kill_at_turn(dir.path(), &["run", "--validators", ""], 3);
    let log = dir.path().join("log.jsonl");
    let events = log_of(dir.path());
    let task = events[0]["task_id"].as_str().unwrap().to_owned();
    let plan = &events[0]["payload"]["plan"];
    assert_eq!(plan["provider"], "scripted", "{plan}");
    let file_read = plan["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "file_read")
        .unwrap();
    let root = dir.path().join("docs").display().to_string();
    assert_eq!(
        file_read["config"]["root"], root,
        "a relative path made absolute: {plan}"
    );
    // The script on the log answers at once this time: the resumed run uses
    // the plan's script, so make its third answer quick there.
    let quick = std::fs::read_to_string(&log)
        .unwrap()
        .replace("\"delay_ms\":30000", "\"delay_ms\":0");
    std::fs::write(&log, quick).unwrap();
    // Elsewhere, with no zu.toml: only the sink, found where ZU_PLUGIN_PATH
    // says; the plan on the log gives the provider, its script and
    // file_read's root.
    let elsewhere = tempfile::tempdir().unwrap();
    let sink = json!({"path": log}).to_string();
    let path = plugins.path().to_str().unwrap();
    let out = zu_env(
        elsewhere.path(),
        &["run", "--resume", &task, "--sink", "jsonl", "--sink-config", &sink],
        &[("ZU_PLUGIN_PATH", path)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(result_of(&out)["value"]["date"], "2026-12-01");
    let invoked = log_of(dir.path())
        .iter()
        .filter(|e| e["type"] == "harness.tool.invoked")
        .count();
    assert_eq!(invoked, 2, "no returned tool call made again");
}

/// Runs `zu ARGS` in `dir` (its log `log.jsonl`) and kills it once its
/// model turn `step` has started: a run with no end on its log.
pub(crate) fn kill_at_turn(dir: &std::path::Path, args: &[&str], step: u64) {
    let mut child = std::process::Command::new(&zu_tests::artifacts().zu)
        .args(args)
        .current_dir(dir)
        .env_remove("ZU_PLUGIN_PATH")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let log = dir.join("log.jsonl");
    let started = || {
        std::fs::read_to_string(&log).unwrap_or_default().lines().any(|l| {
            let e: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
            e["type"] == "harness.turn.started" && e["payload"]["step"] == step
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !started() {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never reached turn {step}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_secret_in_a_config_never_reaches_the_log() {
    let plugins = plugins_with(&[zu_tests::artifacts().lib("zu_plugin_models")]);
    let script = json!({"responses": [{"text": "{\"date\": \"2026-12-01\"}"}]});
    let dir = workdir(plugins.path(), script, "plugins = [PLUGINS]");
    // A tier-2 provider the run never climbs to, configured with a key in a header.
    let secret = "sk-live-0123456789abcdef";
    let config = json!({"model": "m", "base_url": "http://127.0.0.1:9/v1", "headers": {"x-api-key": secret}});
    let out = zu_env(
        dir.path(),
        &[
            "run",
            "--validators",
            "",
            "--tier-provider",
            "2=openai",
            "--config",
            &format!("providers.openai={config}"),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
    assert!(text.contains("\"tier_providers\""), "the plan is on the log");
    assert!(!text.contains(secret), "the key reached the log");
    assert!(text.contains("[kept off the log]"));
}
