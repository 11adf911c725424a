//! `zu run` and the real tool plugins end to end: the binary on a zu.toml,
//! exit codes per status, bad settings, containment, http_fetch against a
//! local server, file_read escapes, and misbehaving tools across the boundary.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use serde_json::{json, Value};
use zu_loader::Loader;
use zu_plugin_api::filter::{EventFilter, FilterField};
use zu_plugin_api::prelude::*;
use zu_plugin_api::version::Kind;
use zu_runtime::{run_task, EventBus, Registry, RunOptions};
use zu_tests::{artifacts, plugin_dir};

/// Every real plugin, in one directory.
fn real_plugins() -> tempfile::TempDir {
    let a = artifacts();
    let libs: Vec<_> = ["scripted", "checks", "files", "http", "validators", "sqlite", "jsonl"]
        .iter()
        .map(|p| a.lib(&format!("zu_plugin_{p}")))
        .collect();
    plugin_dir(&libs)
}

fn zu_run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(&artifacts().zu);
    cmd.arg("run")
        .args(args)
        .current_dir(dir)
        .env_remove("ZU_PLUGIN_PATH")
        .env_remove("ZU_SANDBOXED");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn result_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("stdout is a Result ({e}); stderr: {}", stderr(out)))
}

/// A working directory with a zu.toml, a docs root and a script.
fn workdir(plugins: &Path, script: Value, extra_toml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("docs")).unwrap();
    std::fs::write(dir.path().join("docs/notes.md"), "The launch is on 2026-12-01 at noon.").unwrap();
    std::fs::write(dir.path().join("docs/empty.md"), "").unwrap();
    std::fs::write(dir.path().join("script.json"), script.to_string()).unwrap();
    let toml = format!(
        "plugins = [{plugins:?}]\n\n[task]\nquery = \"When is the launch?\"\n\n[provider]\nname = \"scripted\"\nconfig_file = \"script.json\"\n\n[config.tools.file_read]\nroot = \"docs\"\n{extra_toml}"
    );
    std::fs::write(dir.path().join("zu.toml"), toml).unwrap();
    dir
}

fn read_then_answer(path: &str, answer: Value) -> Value {
    json!({"responses": [
        {"tool_calls": [{"name": "file_read", "args": {"path": path}}]},
        {"text": answer.to_string()}
    ]})
}

#[test]
fn a_task_runs_end_to_end_from_zu_toml_into_a_sqlite_log() {
    let plugins = real_plugins();
    let dir = workdir(
        plugins.path(),
        read_then_answer("notes.md", json!({"date": "2026-12-01"})),
        "\n[sink]\nname = \"sqlite\"\nconfig = { path = \"run.db\" }\n",
    );
    let out = zu_run(
        dir.path(),
        &["--output-schema", r#"{"type": "object", "required": ["date"]}"#],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let result = result_of(&out);
    assert_eq!(result["status"], "success");
    assert_eq!(result["value"], json!({"date": "2026-12-01"}));

    let events = Command::new(&artifacts().zu)
        .args([
            "events",
            "--plugins",
            plugins.path().to_str().unwrap(),
            "--sink",
            "sqlite",
            "--json",
            "--full",
        ])
        .args(["--sink-config", &json!({"path": dir.path().join("run.db")}).to_string()])
        .output()
        .unwrap();
    let types: Vec<String> = String::from_utf8(events.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        types,
        [
            "harness.task.started",
            "harness.envelope.declared",
            "harness.sandbox.applied",
            "harness.turn.started",
            "harness.turn.completed",
            "harness.tool.invoked",
            "data.source.fetched",
            "harness.tool.returned",
            "harness.turn.started",
            "harness.turn.completed",
            "data.record.extracted",
            "harness.task.completed",
        ]
    );
}

#[test]
fn flags_win_over_zu_toml_and_exit_codes_follow_the_status() {
    let plugins = real_plugins();
    // An ungrounded answer is retried until the step budget ends the run: terminal, exit 4.
    let dir = workdir(
        plugins.path(),
        read_then_answer("notes.md", json!({"date": "1999-01-01"})),
        "",
    );
    let out = zu_run(dir.path(), &["--max-steps", "2"], &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(result_of(&out)["reason"], "budget:max_steps");

    // An empty page escalates, and with no higher tier the run ends escalated: exit 3.
    let dir = workdir(plugins.path(), read_then_answer("empty.md", json!({})), "");
    let out = zu_run(dir.path(), &[], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(result_of(&out)["reason"], "empty");

    // --query overrides the file's query; the scripted provider answers without tools.
    let dir = workdir(plugins.path(), json!({"responses": [{"text": "{\"ok\": 1}"}]}), "");
    let out = zu_run(
        dir.path(),
        &["--query", "anything", "--config", "validators.grounding={}"],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "grounding refuses an answer nothing retrieved: {}",
        stderr(&out)
    );
}

#[test]
fn a_task_file_and_provider_flags_work_without_zu_toml() {
    let plugins = real_plugins();
    let dir = tempfile::tempdir().unwrap();
    let task = json!({"query": "say hi", "budget": {"max_steps": 3}});
    std::fs::write(dir.path().join("task.json"), task.to_string()).unwrap();
    let only_provider = plugin_dir(&[artifacts().lib("zu_plugin_scripted")]);
    let out = zu_run(
        dir.path(),
        &[
            "--task",
            "task.json",
            "--plugins",
            only_provider.path().to_str().unwrap(),
            "--provider",
            "scripted",
            "--provider-config",
            r#"{"responses": [{"text": "hi"}]}"#,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(result_of(&out)["value"], json!({"text": "hi"}));
    drop(plugins);
}

#[test]
fn bad_settings_are_errors_naming_what_is_wrong() {
    let plugins = real_plugins();
    let script = json!({"responses": [{"text": "{}"}]});
    // (zu.toml extra, flags, expected exit code, expected message)
    let cases: Vec<(&str, Vec<&str>, i32, &str)> = vec![
        (
            "",
            vec!["--provider", "gpt-nine"],
            1,
            "no provider plugin named \"gpt-nine\"",
        ),
        (
            "\n[sink]\nname = \"postgres\"\n",
            vec![],
            1,
            "no sink plugin named \"postgres\"",
        ),
        (
            "\n[task.budget]\nmax_stepz = 3\n",
            vec![],
            2,
            "unknown field `max_stepz`",
        ),
        (
            "",
            vec!["--config", "tools.file_read=not json"],
            2,
            "invalid plugin config",
        ),
        ("", vec!["--containment", "maybe"], 2, "unknown containment \"maybe\""),
        // A table given twice: zu.toml does not parse.
        ("\n[config.tools.file_read]\nroot = 7\n", vec![], 2, "zu.toml"),
        (
            "",
            vec!["--sink", "sqlite", "--sink-config", "{}"],
            1,
            "has no \"path\"",
        ),
    ];
    for (toml, args, code, needle) in cases {
        let dir = workdir(plugins.path(), script.clone(), toml);
        let out = zu_run(dir.path(), &args, &[]);
        assert_eq!(out.status.code(), Some(code), "{args:?} {toml}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(needle),
            "{args:?} {toml}: expected {needle:?} in {}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn required_containment_refuses_tools_it_cannot_contain_before_anything_runs() {
    let plugins = real_plugins();
    let dir = workdir(
        plugins.path(),
        read_then_answer("notes.md", json!({"date": "2026-12-01"})),
        "\n[sink]\nname = \"sqlite\"\nconfig = { path = \"run.db\" }\n",
    );
    // http_fetch declares net, which cannot be scoped to its hosts where no
    // namespace can be made (the `without` wrapper fails unshare with EPERM).
    let trusting = [
        "--trust",
        "providers.scripted",
        "--trust",
        "sinks.sqlite",
        "--trust",
        "tools.file_read",
    ];
    let without_namespaces = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_without"));
        cmd.args(["namespaces", "--"])
            .arg(&artifacts().zu)
            .args([
                "run",
                "--containment",
                "required",
                "--detectors",
                "",
                "--validators",
                "",
            ])
            .args(trusting)
            .current_dir(dir.path())
            .env_remove("ZU_PLUGIN_PATH");
        cmd.envs(env.iter().copied());
        cmd.output().unwrap()
    };
    let out = without_namespaces(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("tools.http_fetch") && err.contains("network scoped") && !err.contains("tools.file_read"),
        "{err}"
    );
    let sink = plugin_dir(&[artifacts().lib("zu_plugin_sqlite")]);
    let mut reg = Registry::new();
    let mut loader = Loader::new();
    loader.set_config(Kind::Sinks, "sqlite", json!({"path": dir.path().join("run.db")}));
    loader.load_dir(&mut reg, sink.path()).unwrap();
    assert_eq!(
        reg.sink("sqlite").unwrap().count(&EventFilter::all()).unwrap(),
        0,
        "nothing ran"
    );
    // ZU_SANDBOXED no longer stands in for the sandbox.
    let claimed = without_namespaces(&[("ZU_SANDBOXED", "1")]);
    assert_eq!(claimed.status.code(), Some(1), "{}", stderr(&claimed));
    // A log beside zu.toml: its sink writes the log's files, not their
    // directory, so `required` runs it.
    let settings = std::fs::read(dir.path().join("zu.toml")).unwrap();
    let beside = zu_run(dir.path(), &["--containment", "required", "--tools", "file_read"], &[]);
    assert_eq!(beside.status.code(), Some(0), "{}", stderr(&beside));
    assert_eq!(std::fs::read(dir.path().join("zu.toml")).unwrap(), settings);
}

/// A one-thread HTTP server on 127.0.0.1: `/page` serves HTML, `/redirect`
/// sends the client to the cloud metadata address.
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                    break;
                }
            }
            let mut stream = stream;
            let response = if request_line.contains("/redirect") {
                "HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
            } else if request_line.contains("/missing") {
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 7\r\nConnection: close\r\n\r\nmissing".to_owned()
            } else {
                let body = "<html><body><p>Tickets cost $25 each.</p></body></html>";
                format!("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
            };
            let _ = stream.write_all(response.as_bytes());
        }
    });
    format!("http://{addr}")
}

#[test]
fn http_fetch_in_its_sandbox_reaches_only_a_granted_host_and_says_what_to_grant() {
    let base = serve();
    let hostport = base.trim_start_matches("http://").to_owned();
    let plugins = real_plugins();
    let script = json!({"responses": [
        {"tool_calls": [{"name": "http_fetch", "args": {"url": format!("{base}/page")}}]},
        {"text": "{\"price\": 25}"}
    ]});
    let dir = workdir(
        plugins.path(),
        script,
        "\n[config.tools.http_fetch]\nallow_hosts = [\"127.0.0.1\"]\ntimeout_s = 5\n\n[sink]\nname = \"jsonl\"\nconfig = { path = \"logs/run.jsonl\" }\n",
    );
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let observation = |grant: &[&str]| {
        let _ = std::fs::remove_file(dir.path().join("logs/run.jsonl"));
        let args = [
            &["--tools", "http_fetch", "--detectors", "", "--validators", ""][..],
            grant,
        ]
        .concat();
        let out = zu_run(dir.path(), &args, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let log = std::fs::read_to_string(dir.path().join("logs/run.jsonl")).unwrap();
        log.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|e| e["type"] == "harness.tool.returned")
            .map(|e| e["payload"]["observation"].clone())
            .unwrap()
    };
    // http_fetch declares the open network: nothing is granted until the user grants it.
    let refused = observation(&[]);
    let said = refused.to_string();
    assert!(said.contains(&format!("requires net access to {hostport}")), "{said}");
    assert!(said.contains("--allow-net"), "says how to grant it: {said}");
    let grant = format!("tools.http_fetch={hostport}");
    let fetched = observation(&["--allow-net", &grant]);
    assert_eq!(fetched["status"], 200, "through the gate once granted: {fetched}");
}

fn http_run(base: &str, path: &str, allow: bool, answer: Value) -> (RunResult, Vec<Arc<Event>>) {
    let allow_hosts = if allow { json!(["127.0.0.1"]) } else { json!([]) };
    http_run_with(base, path, json!({"allow_hosts": allow_hosts, "timeout_s": 5}), answer)
}

fn http_run_with(base: &str, path: &str, http_config: Value, answer: Value) -> (RunResult, Vec<Arc<Event>>) {
    let plugins = real_plugins();
    let mut reg = Registry::new();
    let mut loader = Loader::new();
    loader.set_config(Kind::Tools, "http_fetch", http_config);
    loader.set_config(
        Kind::Providers,
        "scripted",
        json!({"responses": [
            {"tool_calls": [{"name": "http_fetch", "args": {"url": format!("{base}{path}")}}]},
            {"text": answer.to_string()}
        ]}),
    );
    loader.load_dir(&mut reg, plugins.path()).unwrap();
    let bus = Arc::new(EventBus::new());
    let result = run_task(
        &TaskSpec::new("ticket price?"),
        reg.provider("scripted").unwrap(),
        &reg,
        &bus,
        &RunOptions::default(),
    )
    .unwrap();
    let events = bus
        .query(&EventFilter::all(), None, 0)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    (result, events)
}

fn payload_of<'a>(events: &'a [Arc<Event>], ty: &str) -> &'a JsonObject {
    events
        .iter()
        .find(|e| e.event_type() == ty)
        .unwrap_or_else(|| panic!("no {ty}"))
        .payload()
}

#[test]
fn http_fetch_reads_an_allowlisted_local_server_and_the_answer_is_grounded() {
    let base = serve();
    let (result, events) = http_run(&base, "/page", true, json!({"price": "$25"}));
    assert_eq!(result.status, Status::Success, "{events:#?}");
    let fetched = payload_of(&events, "data.source.fetched");
    assert_eq!(fetched["status"], 200);
    assert_eq!(fetched["content_type"], "text/html");
    assert!(fetched["text"].as_str().unwrap().contains("Tickets cost $25"));
    assert_eq!(fetched["url"], format!("{base}/page"));
    let text_len = fetched["text"].as_str().unwrap().chars().count();
    assert_eq!(
        payload_of(&events, "harness.tool.returned")["observation"]["text_len"],
        text_len
    );
    assert!(
        payload_of(&events, "harness.tool.returned")["observation"]
            .get("text")
            .is_none(),
        "stored once"
    );
}

#[test]
fn http_fetch_refuses_the_local_server_unless_allowlisted_and_any_redirect_to_metadata() {
    let base = serve();
    for (path, allow, target) in [("/page", false, "127.0.0.1"), ("/redirect", true, "169.254.169.254")] {
        let (result, events) = http_run(&base, path, allow, json!({"x": 1}));
        let blocked = payload_of(&events, "harness.defense.blocked");
        assert_eq!(blocked["kind"], "ssrf", "{path}");
        assert_eq!(blocked["target"], target, "{path}");
        assert_eq!(
            payload_of(&events, "harness.tool.returned")["observation"]["blocked"],
            "ssrf"
        );
        assert!(
            events.iter().all(|e| e.event_type() != "data.source.fetched"),
            "nothing was fetched"
        );
        // Grounding then refuses an answer nothing retrieved, until the budget ends the run.
        assert_eq!(result.status, Status::Terminal);
    }
}

#[test]
fn http_fetch_refuses_a_body_over_its_cap() {
    let base = serve();
    let config = json!({"allow_hosts": ["127.0.0.1"], "max_bytes": 10});
    let (_, events) = http_run_with(&base, "/page", config, json!({"x": 1}));
    let blocked = payload_of(&events, "harness.defense.blocked");
    assert_eq!(blocked["kind"], "fetch_blocked");
    assert!(
        blocked["detail"].as_str().unwrap().contains("exceeds max_bytes (10)"),
        "{blocked:?}"
    );
}

#[test]
fn an_http_error_status_is_a_retry_not_the_end() {
    let base = serve();
    let (result, events) = http_run(&base, "/missing", true, json!({"status": "missing"}));
    let fired = payload_of(&events, "harness.detector.fired");
    assert_eq!(
        (fired["detector"].as_str(), fired["severity"].as_str()),
        (Some("error"), Some("retry"))
    );
    assert_eq!(result.status, Status::Success);
}

fn tool_run(libs: &[std::path::PathBuf], tool: &str, args: Value) -> Vec<Arc<Event>> {
    let dir = plugin_dir(libs);
    let mut reg = Registry::new();
    let mut loader = Loader::new();
    loader.set_config(
        Kind::Providers,
        "scripted",
        json!({"responses": [{"tool_calls": [{"name": tool, "args": args}]}, {"text": "{\"done\": true}"}]}),
    );
    loader.load_dir(&mut reg, dir.path()).unwrap();
    let bus = Arc::new(EventBus::new());
    let result = run_task(
        &TaskSpec::new("q"),
        reg.provider("scripted").unwrap(),
        &reg,
        &bus,
        &RunOptions::default(),
    )
    .unwrap();
    assert_eq!(
        result.status,
        Status::Success,
        "the run goes on after the tool misbehaves"
    );
    bus.query(&EventFilter::all(), None, 0)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect()
}

#[test]
fn misbehaving_tools_across_the_boundary_become_error_observations() {
    let a = artifacts();
    let libs = [a.lib("zu_plugin_scripted"), a.fixture("panicky")];
    let events = tool_run(&libs, "panics_on_call", json!({}));
    let obs = &payload_of(&events, "harness.tool.returned")["observation"];
    assert_eq!(obs["error"], "plugin panicked: tool call exploded");

    let events = tool_run(&libs, "returns_50mb", json!({}));
    assert_eq!(
        payload_of(&events, "harness.defense.blocked")["kind"],
        "oversized_observation"
    );
    assert_eq!(
        payload_of(&events, "harness.tool.returned")["observation"]["blocked"],
        "oversized_observation"
    );
}

#[test]
fn file_read_escapes_are_recorded_as_defense_events() {
    let a = artifacts();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("inside.txt"), "fine").unwrap();
    let plugins = plugin_dir(&[a.lib("zu_plugin_scripted"), a.lib("zu_plugin_files")]);
    let mut reg = Registry::new();
    let mut loader = Loader::new();
    loader.set_config(Kind::Tools, "file_read", json!({"root": dir.path()}));
    loader.set_config(
        Kind::Providers,
        "scripted",
        json!({"responses": [{"tool_calls": [{"name": "file_read", "args": {"path": "../../etc/passwd"}}]}, {"text": "{}"}]}),
    );
    loader.load_dir(&mut reg, plugins.path()).unwrap();
    let bus = Arc::new(EventBus::new());
    run_task(
        &TaskSpec::new("q"),
        reg.provider("scripted").unwrap(),
        &reg,
        &bus,
        &RunOptions::default(),
    )
    .unwrap();
    let blocked = bus
        .query(
            &EventFilter::all().with(FilterField::Type, Some("harness.defense.blocked")),
            None,
            0,
        )
        .unwrap();
    assert_eq!(blocked.len(), 1);
    let p = blocked[0].event.payload();
    assert_eq!(
        (p["kind"].as_str(), p["target"].as_str(), p["tool"].as_str()),
        (Some("path_escape"), Some("../../etc/passwd"), Some("file_read"))
    );
}

#[test]
fn plugins_read_the_run_through_the_host_callback() {
    // The mixed fixture's per-turn detector reports the event count and the
    // query it reads back from the host during the run.
    let a = artifacts();
    let libs = [
        a.lib("zu_plugin_scripted"),
        a.lib("zu_plugin_files"),
        a.fixture("mixed"),
    ];
    let events = tool_run(&libs, "file_read", json!({"path": "Cargo.toml"}));
    let fired: Vec<&Arc<Event>> = events
        .iter()
        .filter(|e| e.event_type() == "harness.detector.fired")
        .collect();
    assert_eq!(fired.len(), 1);
    // task.started, envelope, plugin.refused (the fixture's future-interface
    // tool), turn.started, turn.completed, tool.invoked, source.fetched, tool.returned.
    assert_eq!(fired[0].payload()["detail"], "8 events, query \"q\"");
}

#[test]
fn a_tier_provider_takes_over_when_the_run_climbs() {
    let a = artifacts();
    let plugins = plugin_dir(&[
        a.lib("zu_plugin_scripted"),
        a.lib("zu_plugin_checks"),
        a.lib("zu_plugin_files"),
        a.lib("zu_plugin_noop"),
        a.fixture("panicky"), // a tier-2 tool, so there is a tier to climb to
    ]);
    // The scripted provider reads an empty page; `empty` escalates to tier 2,
    // where bench_script answers. Without the override, the script runs out.
    let script = json!({"responses": [{"tool_calls": [{"name": "file_read", "args": {"path": "empty.md"}}]}]});
    let dir = workdir(plugins.path(), script, "\n[config.providers.bench_script]\nk = 1\n");
    let out = zu_run(dir.path(), &["--tier-provider", "2=bench_script"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(result_of(&out)["value"], json!({"answer": 1}));
    let without = zu_run(dir.path(), &[], &[]);
    assert_eq!(without.status.code(), Some(4), "{}", stderr(&without));
    assert!(result_of(&without)["reason"]
        .as_str()
        .unwrap()
        .contains("script is exhausted"));
    let bad = zu_run(dir.path(), &["--tier-provider", "2=gpt-nine"], &[]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("no provider plugin named \"gpt-nine\" for tier 2"),
        "{}",
        stderr(&bad)
    );
}
