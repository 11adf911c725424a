//! MCP servers nobody in this project wrote (the reference servers from the
//! npm registry), started the way users start them and called through
//! `zu run` with the scripted provider: tool listing, calls, a tool error,
//! the environment a server gets, a server killed mid-run and one that
//! hangs (each an error observation and an event, then restarted), and
//! servers that never answer `initialize` or cannot start.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use zu_tests::{artifacts, mcp, plugin_dir};

pub(crate) struct Setup {
    dir: tempfile::TempDir,
    _plugins: tempfile::TempDir,
}

/// A working directory with a zu.toml naming the plugins and `servers`.
pub(crate) fn setup(servers: &str) -> Setup {
    let a = artifacts();
    let plugins = plugin_dir(&[a.lib("zu_plugin_scripted"), a.lib("zu_plugin_jsonl")]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("files")).unwrap();
    std::fs::write(dir.path().join("files/notes.txt"), "launch: 2026-12-01").unwrap();
    let toml = format!("plugins = [{:?}]\n\n{servers}", plugins.path());
    std::fs::write(dir.path().join("zu.toml"), toml).unwrap();
    Setup { dir, _plugins: plugins }
}

fn everything(extra: &str) -> String {
    let bin = mcp::bin_dir().join("mcp-server-everything");
    format!("[mcp.servers.everything]\ncommand = {bin:?}\nenv_vars = [\"PATH\"]\n{extra}\n")
}

pub(crate) fn filesystem(root: &Path, tier: u32) -> String {
    let bin = mcp::bin_dir().join("mcp-server-filesystem");
    format!("[mcp.servers.fs]\ncommand = {bin:?}\nargs = [{root:?}]\nenv_vars = [\"PATH\"]\ntier = {tier}\ncapabilities = [\"fs:read\"]\n")
}

pub(crate) fn zu(s: &Setup, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(&artifacts().zu);
    cmd.args(args).current_dir(s.dir.path()).env_remove("ZU_PLUGIN_PATH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

pub(crate) fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `zu run` with a script, into a jsonl log; the Result and the events.
fn run(s: &Setup, script: Value, extra: &[&str]) -> (Value, Vec<Value>, Output) {
    run_with(s, script, extra, &[])
}

/// `run` with more variables in zu's environment.
fn run_with(s: &Setup, script: Value, extra: &[&str], env: &[(&str, &str)]) -> (Value, Vec<Value>, Output) {
    let log = s.dir.path().join("log.jsonl");
    let _ = std::fs::remove_file(&log);
    let config = json!({"responses": script}).to_string();
    let sink = json!({"path": log}).to_string();
    let mut args = vec![
        "run",
        "--provider",
        "scripted",
        "--provider-config",
        &config,
        "--query",
        "q",
    ];
    args.extend(["--sink", "jsonl", "--sink-config", &sink, "--max-tier", "2"]);
    args.extend(extra);
    let mut vars = vec![("ZU_TEST_SECRET", "must-not-leak")];
    vars.extend(env);
    let out = zu(s, &args, &vars);
    let result = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", err(&out)));
    let events = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (result, events, out)
}

fn call(tool: &str, args: Value) -> Value {
    json!({"tool_calls": [{"name": tool, "args": args}]})
}

fn observations(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["type"] == "harness.tool.returned")
        .map(|e| &e["payload"]["observation"])
        .collect()
}

/// The full observations (retrieved content is on `data.source.fetched`).
fn fetched(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["type"] == "data.source.fetched")
        .map(|e| &e["payload"])
        .collect()
}

#[test]
fn zu_plugins_lists_each_servers_tools_under_it_with_the_envelope_from_zu_toml() {
    let s = setup(&(everything("tools = [\"echo\", \"get-sum\"]") + &filesystem(Path::new("/tmp"), 2)));
    let out = zu(&s, &["plugins", "--json"], &[]);
    assert!(out.status.success(), "{}", err(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tools: Vec<&Value> = report["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "tools")
        .collect();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"everything__echo") && names.contains(&"everything__get-sum"),
        "{names:?}"
    );
    assert!(
        !names.contains(&"everything__get-env"),
        "the tools filter applies: {names:?}"
    );
    let read = tools.iter().find(|t| t["name"] == "fs__read_text_file").unwrap();
    assert_eq!(read["library"], "mcp:fs");
    assert_eq!(read["tier"], 2);
    assert_eq!(read["capabilities"], json!(["fs:read"]));
    let table = zu(&s, &["plugins"], &[]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("everything__echo") && l.trim_end().ends_with("mcp:everything")),
        "{text}"
    );
}

#[test]
fn tools_are_called_through_zu_run_and_tool_errors_become_observations() {
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("notes.txt"), "launch: 2026-12-01").unwrap();
    let s = setup(&(everything("exclude_tools = [\"get-tiny-image\"]") + &filesystem(files.path(), 1)));
    let notes = files.path().join("notes.txt");
    let script = json!([
        call("everything__echo", json!({"message": "hello mcp"})),
        call("everything__get-sum", json!({"a": 2, "b": 40})),
        call("fs__read_text_file", json!({"path": notes})),
        call("fs__read_text_file", json!({"path": "/etc/passwd"})),
        {"text": "{\"date\": \"2026-12-01\"}"}
    ]);
    let (result, events, out) = run(&s, script, &[]);
    assert_eq!(result["status"], "success", "{}", err(&out));
    let full = fetched(&events);
    assert!(full[0]["content"].as_str().unwrap().contains("hello mcp"), "{full:?}");
    assert!(full[1]["content"].as_str().unwrap().contains("42"), "{full:?}");
    assert!(full[2]["content"].as_str().unwrap().contains("launch: 2026-12-01"));
    let denied = &full[3];
    assert!(
        denied["error"].as_str().unwrap().contains("denied") || denied["error"].as_str().unwrap().contains("outside"),
        "{denied}"
    );
    let invoked: Vec<&Value> = events.iter().filter(|e| e["type"] == "harness.tool.invoked").collect();
    assert_eq!(invoked.len(), 4);
    let envelope = events
        .iter()
        .find(|e| e["type"] == "harness.envelope.declared")
        .unwrap();
    assert_eq!(
        envelope["payload"]["tools"]["fs__read_text_file"]["capabilities"],
        json!(["fs:read"])
    );
}

#[test]
fn a_server_gets_only_the_variables_its_config_names() {
    let s = setup(&everything("env = { ZU_GIVEN = \"yes\" }"));
    let (result, events, out) = run(&s, json!([call("everything__get-env", json!({})), {"text": "{}"}]), &[]);
    assert_eq!(result["status"], "success", "{}", err(&out));
    let env = fetched(&events)[0]["content"].as_str().unwrap().to_owned();
    assert!(env.contains("ZU_GIVEN") && env.contains("PATH"), "{env}");
    assert!(
        !env.contains("ZU_TEST_SECRET") && !env.contains("must-not-leak"),
        "zu's environment leaked: {env}"
    );
}

/// The pids of processes whose environment holds `marker`.
fn pids_with(marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|b| String::from_utf8_lossy(&b).contains(marker))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn a_server_killed_mid_run_is_an_event_and_an_error_observation_and_comes_back() {
    let marker = format!("zu-mcp-{}", uuid::Uuid::new_v4());
    let s = setup(&everything(&format!("env = {{ ZU_MARK = {marker:?} }}")));
    let log = s.dir.path().join("log.jsonl");
    let killer = std::thread::spawn({
        let marker = marker.clone();
        move || {
            // Once the first call has returned (it is on the log before the
            // provider's second, 4 s answer is asked for), kill the server.
            let end = Instant::now() + Duration::from_secs(60);
            while Instant::now() < end {
                let returned = std::fs::read_to_string(&log).is_ok_and(|t| t.contains("harness.tool.returned"));
                if returned {
                    std::thread::sleep(Duration::from_millis(300));
                    let pids = pids_with(&marker);
                    for pid in &pids {
                        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                    }
                    return !pids.is_empty();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        }
    });
    let script = json!([
        call("everything__echo", json!({"message": "one"})),
        {"tool_calls": [{"name": "everything__echo", "args": {"message": "two"}}], "delay_ms": 4000},
        call("everything__echo", json!({"message": "three"})),
        {"text": "{\"ok\": true}"}
    ]);
    let (result, events, out) = run(&s, script, &["--wall-time-s", "60"]);
    assert!(killer.join().unwrap(), "the server never started");
    assert_eq!(result["status"], "success", "{}", err(&out));
    let obs = observations(&events);
    assert!(
        obs[1]["error"].as_str().unwrap().contains("MCP server \"everything\""),
        "{obs:?}"
    );
    let contained: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "harness.plugin.contained")
        .collect();
    assert_eq!(contained.len(), 1, "{events:?}");
    assert_eq!(contained[0]["payload"]["plugin"], "everything__echo");
    assert!(
        fetched(&events).last().unwrap()["content"]
            .as_str()
            .unwrap()
            .contains("three"),
        "restarted for the next call"
    );
    assert!(pids_with(&marker).is_empty(), "the server is stopped when zu ends");
}

#[test]
fn a_call_that_hangs_past_tool_timeout_stops_the_server_and_the_next_call_starts_it_again() {
    let s = setup(&everything("tool_timeout_s = 1.5"));
    let script = json!([
        call("everything__trigger-long-running-operation", json!({"duration": 30, "steps": 3})),
        call("everything__echo", json!({"message": "after"})),
        {"text": "{}"}
    ]);
    let (result, events, out) = run(&s, script, &["--wall-time-s", "60"]);
    assert_eq!(result["status"], "success", "{}", err(&out));
    let obs = observations(&events);
    assert!(
        obs[0]["error"]
            .as_str()
            .unwrap()
            .contains("did not answer within 1.5 s"),
        "{obs:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "harness.plugin.contained")
            .count(),
        1
    );
    assert!(fetched(&events)[0]["content"].as_str().unwrap().contains("after"));
}

#[test]
fn a_server_that_never_answers_initialize_or_cannot_start_is_a_load_failure() {
    let servers = "[mcp.servers.silent]\ncommand = \"sleep\"\nargs = [\"3600\"]\nenv_vars = [\"PATH\"]\nstartup_timeout_s = 2\n\n\
                   [mcp.servers.missing]\ncommand = \"no-such-mcp-server-zu\"\n\n\
                   [mcp.servers.both]\ncommand = \"x\"\nurl = \"http://127.0.0.1:1/mcp\"\n";
    let s = setup(&(everything("tools = [\"echo\"]") + servers));
    let out = zu(&s, &["plugins", "--json"], &[]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let failures = report["failures"].as_array().unwrap();
    let by = |name: &str| {
        failures
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{name}: {failures:?}"))
    };
    for name in ["silent", "missing", "both"] {
        assert_eq!(by(name)["error"]["code"], "mcp_server_failed");
    }
    assert!(by("silent")["error"]["message"]
        .as_str()
        .unwrap()
        .contains("within 2 s (startup_timeout_s)"));
    assert!(by("missing")["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not on PATH"));
    assert!(by("both")["error"]["message"].as_str().unwrap().contains("not both"));
    // The run goes on with the servers that did start, and says which did not.
    let (result, _, out) = run(
        &s,
        json!([call("everything__echo", json!({"message": "x"})), {"text": "{}"}]),
        &[],
    );
    assert_eq!(result["status"], "success");
    assert!(
        err(&out).contains("refused [mcp_server_failed] MCP server \"silent\""),
        "{}",
        err(&out)
    );
    assert!(pids_with("no-such").is_empty());
}

#[test]
fn a_streamable_http_server_is_reached_by_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(mcp::bin_dir().join("mcp-server-everything"))
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = setup(&format!(
        "[mcp.servers.remote]\nurl = \"http://127.0.0.1:{port}/mcp\"\ntools = [\"echo\"]\nbearer_token_env = \"ZU_TEST_TOKEN\"\n"
    ));
    let script = json!([call("remote__echo", json!({"message": "over http"})), {"text": "{}"}]);
    let (result, events, out) = run_with(&s, script, &[], &[("ZU_TEST_TOKEN", "t0ken")]);
    let _ = server.kill();
    let _ = server.wait();
    assert!(out.status.success(), "{}", err(&out));
    assert_eq!(result["status"], "success");
    assert!(fetched(&events)[0]["content"].as_str().unwrap().contains("over http"));
    let missing = zu(&s, &["plugins", "--json"], &[]);
    let report: Value = serde_json::from_slice(&missing.stdout).unwrap();
    assert!(
        report["failures"][0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("$ZU_TEST_TOKEN"),
        "{report}"
    );
}

/// `zu run` with `script` into `log`, under a parent that reports the
/// largest resident size (KiB) of what it waited for: zu and its children.
fn zu_measured(s: &Setup, script: &Value, log: &Path) -> (Output, u64) {
    let measure = "import resource, subprocess, sys\n\
                   r = subprocess.run(sys.argv[1:])\n\
                   print('maxrss_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n\
                   sys.exit(r.returncode)";
    let out = Command::new("python3")
        .args(["-c", measure])
        .arg(&artifacts().zu)
        .args([
            "run",
            "--provider",
            "scripted",
            "--provider-config",
            &script.to_string(),
            "--query",
            "q",
        ])
        .args(["--sink", "jsonl", "--sink-config", &json!({"path": log}).to_string()])
        .current_dir(s.dir.path())
        .env_remove("ZU_PLUGIN_PATH")
        .output()
        .unwrap();
    let kib = err(&out)
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kib ").map(|k| k.trim().parse().unwrap()))
        .unwrap();
    (out, kib)
}

#[test]
fn a_500_mb_result_is_cut_while_it_is_read_and_the_server_goes_on() {
    let server = zu_tests::workspace_root().join("tests/fixtures/mcp/flood.py");
    let s = setup(&format!(
        "[mcp.servers.flood]\ncommand = {:?}\nargs = [{server:?}]\nenv_vars = [\"PATH\"]\ntool_timeout_s = 120\n",
        zu_tests::python3()
    ));
    let log = s.dir.path().join("log.jsonl");
    let script = json!({"responses": [
        call("flood__pid", json!({})),
        call("flood__flood", json!({})),
        call("flood__pid", json!({})),
        {"text": "{\"done\": true}"}
    ]});
    let (out, kib) = zu_measured(&s, &script, &log);
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    assert!(kib < 300 * 1024, "zu held {} MiB for a 500 MB result", kib / 1024);
    let events: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let obs = observations(&events);
    assert_eq!(obs.len(), 3, "{obs:?}");
    assert_eq!(obs[1]["blocked"], "oversized_observation", "{}", obs[1]);
    let pids: Vec<String> = fetched(&events)
        .iter()
        .map(|p| p["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(pids.len(), 2);
    assert_eq!(
        pids[0], pids[1],
        "the same server answered after the cut: it was not restarted"
    );
    assert!(
        !events.iter().any(|e| e["type"] == "harness.plugin.contained"),
        "a cut answer is no crash"
    );
}

#[test]
fn a_stdio_server_that_declares_nothing_runs_in_the_sandbox() {
    let server = zu_tests::workspace_root().join("tests/fixtures/mcp/hostile.py");
    let s = setup(&format!(
        "[mcp.servers.hostile]\ncommand = {:?}\nargs = [{server:?}]\nenv_vars = [\"PATH\", \"HOME\"]\n",
        zu_tests::python3()
    ));
    // A home outside the working directory (which the server may read).
    let home_dir = tempfile::tempdir().unwrap();
    let home = home_dir.path().to_owned();
    std::fs::write(home.join(".secret"), "the-user's-secret-4410").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let attempt = |args: Value| call("hostile__attempt", args);
    let script = json!([
        attempt(json!({"what": "read", "path": home.join(".secret")})),
        attempt(json!({"what": "write", "path": home.join("planted")})),
        attempt(json!({"what": "connect", "addr": addr})),
        attempt(json!({"what": "environ"})),
        attempt(json!({"what": "kill_parent"})),
        // A program of the system paths its sandbox does not list.
        attempt(json!({"what": "exec", "program": "/usr/bin/id"})),
        // zu.toml, in the working directory the server reads.
        attempt(json!({"what": "read", "path": s.dir.path().join("zu.toml")})),
        {"text": "{\"ok\": true}"}
    ]);
    let (result, events, out) = run_with(&s, script, &[], &[("HOME", home.to_str().unwrap())]);
    assert_eq!(result["status"], "success", "zu lives: {}", err(&out));
    let said: Vec<String> = fetched(&events)
        .iter()
        .map(|p| p["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(said.len(), 7, "{said:?}");
    for (i, text) in said.iter().enumerate() {
        assert!(text.starts_with("denied:"), "attempt {i}: {text}");
    }
    assert!(!home.join("planted").exists());
    assert!(listener.accept().is_err(), "nothing connected");
    let log = std::fs::read_to_string(s.dir.path().join("log.jsonl")).unwrap();
    assert!(!log.contains("the-user's-secret-4410") && !log.contains("must-not-leak"));
}

#[test]
fn a_stdio_server_gets_exactly_its_grants_hosts_programs_and_limits() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let beside = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    beside.set_nonblocking(true).unwrap();
    let server = zu_tests::workspace_root().join("tests/fixtures/mcp/hostile.py");
    let s = setup(&format!(
        "[mcp.servers.hostile]\ncommand = {:?}\nargs = [{server:?}]\nenv_vars = [\"PATH\"]\ncapabilities = [\"net\"]\negress = [\"localhost\"]\nhosts = [\"localhost:{port}\"]\nexec = [\"/usr/bin/id\"]\nlimits = {{ memory_mb = 256 }}\n",
        zu_tests::python3()
    ));
    let attempt = |args: Value| call("hostile__attempt", args);
    let script = json!([
        attempt(json!({"what": "connect", "addr": format!("localhost:{port}")})),
        attempt(json!({"what": "connect", "addr": beside.local_addr().unwrap().to_string()})),
        attempt(json!({"what": "connect", "addr": "exfiltrate.example.org:443"})),
        attempt(json!({"what": "exec", "program": "/usr/bin/id"})),
        attempt(json!({"what": "exec", "program": "/usr/bin/whoami"})),
        attempt(json!({"what": "alloc", "mb": 512})),
        attempt(json!({"what": "alloc", "mb": 64})),
        {"text": "{\"ok\": true}"}
    ]);
    let (result, events, out) = run_with(&s, script, &[], &[]);
    assert_eq!(result["status"], "success", "{}", err(&out));
    let said: Vec<String> = fetched(&events)
        .iter()
        .map(|p| p["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(said[0], "ok: sent", "the granted host: {said:?} {}", err(&out));
    let mut got = String::new();
    std::io::Read::read_to_string(&mut listener.accept().unwrap().0, &mut got).unwrap();
    assert_eq!(got, "hello from an MCP server");
    assert!(
        said[1].starts_with("denied:") && said[2].starts_with("denied:"),
        "{said:?}"
    );
    assert!(said[3].contains("uid="), "the program its grant names runs: {said:?}");
    assert!(said[4].starts_with("denied:"), "no other: {said:?}");
    assert_eq!(said[5], "denied: out of memory", "over its memory limit: {said:?}");
    assert_eq!(said[6], "ok: held 64 MiB", "within it: {said:?}");
    assert!(beside.accept().is_err(), "nothing reached another port");
    let of_type = |t: &str| {
        events
            .iter()
            .filter(|e| e["type"] == t)
            .map(|e| e["payload"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of_type("harness.egress.observed"),
        vec![json!({"plugin": "mcp.hostile", "host": "localhost", "port": port, "connections": 1})]
    );
    let refused = of_type("harness.egress.refused");
    assert!(
        refused
            .iter()
            .any(|p| p["plugin"] == "mcp.hostile" && p["host"] == "exfiltrate.example.org"),
        "{refused:?}"
    );
}

#[test]
fn an_npx_server_fetched_through_the_egress_gate_starts_with_the_grants_the_readme_shows() {
    // As README.md's example: npx -y fetches the server from the npm registry
    // (reached only through zu's gate), into its cache, and runs it from there.
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path();
    let s = setup(&format!(
        "[mcp.servers.fs]\ncommand = \"npx\"\nargs = [\"-y\", \"@modelcontextprotocol/server-filesystem@2026.8.31\", \"files\"]\n\
         env_vars = [\"PATH\"]\nenv = {{ npm_config_cache = {c:?}, npm_config_update_notifier = \"false\" }}\n\
         startup_timeout_s = 180\ncapabilities = [\"fs:read\", \"net\", \"fs:write\"]\negress = [\"registry.npmjs.org\"]\n\
         write = [{c:?}]\nexec = [\"/bin/sh\", {c:?}]\n"
    ));
    let notes = s.dir.path().join("files/notes.txt");
    let script = json!([call("fs__read_text_file", json!({"path": notes})), {"text": "{\"ok\": true}"}]);
    let (result, events, out) = run_with(&s, script, &[], &[]);
    assert_eq!(result["status"], "success", "{}", err(&out));
    let said = fetched(&events);
    assert!(
        said[0]["content"]
            .as_str()
            .unwrap_or_default()
            .contains("launch: 2026-12-01"),
        "{said:?} {}",
        err(&out)
    );
    // The fetch went through the gate, and the run's log says so.
    let reached: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "harness.egress.observed")
        .map(|e| &e["payload"])
        .collect();
    assert!(
        reached
            .iter()
            .any(|p| p["plugin"] == "mcp.fs" && p["host"] == "registry.npmjs.org" && p["port"] == 443),
        "{reached:?}"
    );
}

#[test]
fn a_500_mb_json_answer_over_http_is_cut_while_it_is_read() {
    let mut server = Command::new("python3")
        .arg(zu_tests::workspace_root().join("tests/fixtures/mcp/flood_http.py"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().unwrap()), &mut port).unwrap();
    let s = setup(&format!(
        "[mcp.servers.flood]\nurl = \"http://127.0.0.1:{}/mcp\"\n",
        port.trim()
    ));
    let log = s.dir.path().join("log.jsonl");
    let script = json!({"responses": [
        call("flood__flood", json!({})),
        call("flood__echo", json!({})),
        {"text": "{\"done\": true}"}
    ]});
    let (out, kib) = zu_measured(&s, &script, &log);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    assert!(kib < 300 * 1024, "zu held {} MiB for a 500 MB answer", kib / 1024);
    let events: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let obs = observations(&events);
    assert_eq!(obs[0]["blocked"], "oversized_observation", "{}", obs[0]);
    assert_eq!(
        fetched(&events).last().unwrap()["content"],
        "echoed",
        "the next call went through"
    );
}
