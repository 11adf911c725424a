//! The sandbox of plugin processes, tried as an attacker would: a tool that
//! declares nothing tries to read secrets, write files, connect out, run a
//! shell, read zu's variables and environment, kill zu, overwrite the
//! verdict cache, fork and hold 3 GiB — each denied, the run finishing; the
//! same tool declaring a capability gets just that; a load-time constructor
//! is stopped in the probe; and `required` refuses what runs unsandboxed.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};
use zu_tests::{artifacts, plugin_dir};

pub(crate) struct Run {
    pub(crate) out: Output,
    pub(crate) observations: Vec<Value>,
    pub(crate) log: String,
}

/// A verdict cache of its own, outside the run's directory (a sink may not
/// write a directory that holds it).
pub(crate) fn cache_dir() -> &'static Path {
    static CACHE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// `zu run` in `dir` with the hostile fixture and the scripted provider
/// making `calls` (one turn), into a jsonl log; `flags` added.
pub(crate) fn run(dir: &Path, calls: Value, flags: &[&str], env: &[(&str, &str)]) -> Run {
    let a = artifacts();
    let plugins = plugin_dir(&[
        a.fixture("hostile"),
        a.lib("zu_plugin_scripted"),
        a.lib("zu_plugin_jsonl"),
    ]);
    // Readable by another user too (a test may run zu as one).
    std::fs::set_permissions(plugins.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script = json!({"responses": [{"tool_calls": calls}, {"text": "{\"done\": true}"}]});
    let log = dir.join("log.jsonl");
    let without = env.iter().find(|(k, _)| *k == "ZU_TEST_WITHOUT").map(|(_, v)| *v);
    let mut cmd = match env.iter().find(|(k, _)| *k == "ZU_TEST_AS_NOBODY") {
        // Linux exempts a real uid of 0 from RLIMIT_NPROC: as root, run zu as nobody.
        Some(_) if running_as_root() => {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(&a.zu);
            c
        }
        _ => zu_without(without),
    };
    cmd.args(["run", "--plugins", plugins.path().to_str().unwrap(), "--query", "q"])
        .args(["--provider", "scripted", "--provider-config", &script.to_string()])
        .args(["--sink", "jsonl", "--sink-config", &json!({"path": log}).to_string()])
        .args(["--max-tool-calls", "32", "--detectors", "", "--validators", ""])
        .args(flags)
        .current_dir(dir)
        .env_remove("ZU_PLUGIN_PATH")
        .env("ZU_CACHE_DIR", cache_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let observations = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "harness.tool.returned")
        .map(|e| e["payload"]["observation"].clone())
        .collect();
    Run {
        out,
        observations,
        log: text,
    }
}

/// `zu`, run on a kernel that seems to lack `layer` (see `src/bin/without.rs`).
pub(crate) fn zu_without(layer: Option<&str>) -> Command {
    match layer {
        Some(layer) => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_without"));
            c.args([layer, "--"]).arg(&artifacts().zu);
            c
        }
        None => Command::new(&artifacts().zu),
    }
}

/// Whether the tests run as root (CI does).
pub(crate) fn running_as_root() -> bool {
    // SAFETY: geteuid takes nothing and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub(crate) fn attempt(tool: &str, args: Value) -> Value {
    let mut args = args;
    json!({"name": tool, "args": args.take()})
}

pub(crate) fn denied(v: &Value) -> bool {
    v.get("denied").is_some() && v.get("ok").is_none()
}

#[test]
fn a_plugin_that_declares_nothing_is_denied_every_reach_and_the_run_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let home_dir = tempfile::tempdir().unwrap();
    let home = home_dir.path().to_owned();
    std::fs::write(home.join(".secret"), "the-user's-secret-7731").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let log = dir.path().join("log.jsonl");
    let cache_file = cache_dir().join("planted");
    // A local service's socket file (a session bus, docker.sock).
    let socket_path = home.join("service.sock");
    let unix = std::os::unix::net::UnixListener::bind(&socket_path).unwrap();
    unix.set_nonblocking(true).unwrap();
    let calls = json!([
        attempt("attempt", json!({"try": "read", "path": home.join(".secret")})),
        attempt("attempt", json!({"try": "read", "path": "/etc/shadow"})),
        attempt("attempt", json!({"try": "write", "path": home.join("planted")})),
        attempt("attempt", json!({"try": "write", "path": log})),
        attempt("attempt", json!({"try": "write", "path": cache_file})),
        attempt("attempt", json!({"try": "connect", "addr": addr})),
        attempt("attempt", json!({"try": "exec"})),
        attempt("attempt", json!({"try": "env", "name": "ZU_TEST_API_KEY"})),
        attempt("attempt", json!({"try": "parent_environ"})),
        attempt("attempt", json!({"try": "kill_parent"})),
        attempt("attempt", json!({"try": "fork"})),
        attempt("attempt", json!({"try": "alloc", "mb": 3072})),
        attempt("attempt", json!({"try": "unix_connect", "path": socket_path})),
        attempt("attempt", json!({"try": "limit_parent"})),
        attempt("attempt", json!({"try": "x32"})),
        attempt("attempt", json!({"try": "report_read", "path": home.join(".secret")})),
    ]);
    let r = run(
        dir.path(),
        calls,
        &[],
        &[
            ("ZU_TEST_API_KEY", "sk-must-not-leak"),
            ("HOME", home.to_str().unwrap()),
        ],
    );
    let err = String::from_utf8_lossy(&r.out.stderr).into_owned();
    assert_eq!(r.out.status.code(), Some(0), "zu lives and the run finishes: {err}");
    assert_eq!(r.observations.len(), 16, "{:?}", r.observations);
    for (i, o) in r.observations[..15].iter().enumerate() {
        assert!(denied(o), "attempt {i} was not denied: {o}");
    }
    assert_eq!(
        r.observations[14]["errno"],
        libc::EPERM,
        "an x32 call is refused by the filter"
    );
    // Reported through the API's helper, a denial names the capability, and is on the log.
    let reported = r.observations[15]["error"].as_str().unwrap_or_default();
    assert!(
        reported.contains("requires fs:read access to") && reported.contains(".secret"),
        "{reported}"
    );
    let blocked: Vec<Value> = r
        .log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "harness.defense.blocked")
        .collect();
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert_eq!(blocked[0]["payload"]["kind"], "sandbox");
    assert!(!r.log.contains("the-user's-secret-7731") && !r.log.contains("sk-must-not-leak"));
    assert!(!home.join("planted").exists() && !cache_file.exists());
    assert!(listener.accept().is_err(), "nothing connected to the listener");
    assert!(unix.accept().is_err(), "nothing connected to the socket file");
}

#[test]
fn a_declared_capability_allows_that_and_no_more() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("here.txt"), "in the working directory").unwrap();
    std::fs::write(dir.path().join("zu.toml"), "# zu's own settings\n").unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("beside.txt"), "beside it").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let port = listener.local_addr().unwrap().port();
    let by_address = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = by_address.local_addr().unwrap().to_string();
    let beside = TcpListener::bind("127.0.0.1:0").unwrap();
    beside.set_nonblocking(true).unwrap();
    let beside_addr = beside.local_addr().unwrap().to_string();
    let calls = json!([
        attempt(
            "granted_read",
            json!({"try": "read", "path": dir.path().join("here.txt")})
        ),
        attempt(
            "granted_read",
            json!({"try": "read", "path": outside.path().join("beside.txt")})
        ),
        attempt(
            "granted_read",
            json!({"try": "write", "path": dir.path().join("new.txt")})
        ),
        attempt("granted_read", json!({"try": "connect", "addr": addr})),
        attempt(
            "granted_net",
            json!({"try": "connect", "addr": format!("localhost:{port}")})
        ),
        attempt(
            "granted_net",
            json!({"try": "read", "path": dir.path().join("here.txt")})
        ),
        attempt("granted_exec", json!({"try": "exec"})),
        attempt("granted_exec", json!({"try": "connect", "addr": addr})),
        attempt("granted_net", json!({"try": "connect", "addr": beside_addr})),
        attempt(
            "granted_net",
            json!({"try": "resolve", "host": "exfiltrate.example.org"})
        ),
        attempt("granted_net", json!({"try": "connect", "addr": addr})),
        attempt("granted_net", json!({"try": "connect", "addr": address})),
        attempt("granted_exec", json!({"try": "clone_newuser"})),
        // An IPv6 literal granted: its forwarder holds that address.
        attempt("granted_net", json!({"try": "connect_only", "addr": "[fd00::7a75]:9"})),
        // In the working directory it reads, zu.toml and the run's log are not its.
        attempt(
            "granted_read",
            json!({"try": "read", "path": dir.path().join("zu.toml")})
        ),
        attempt(
            "granted_read",
            json!({"try": "read", "path": dir.path().join("log.jsonl")})
        ),
    ]);
    // Granted: zu's localhost on one port (by name), 127.0.0.1 on another (by address).
    let by_name = format!("tools.granted_net=localhost:{port}");
    let by_addr = format!("tools.granted_net={address}");
    let r = run(
        dir.path(),
        calls,
        &[
            "--allow-net",
            &by_name,
            "--allow-net",
            &by_addr,
            "--allow-net",
            "tools.granted_net=[fd00::7a75]:9",
        ],
        &[],
    );
    assert_eq!(
        r.out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.out.stderr)
    );
    let o = &r.observations;
    assert_eq!(o.len(), 16, "{o:?}");
    assert_eq!(
        o[0]["ok"], "in the working directory",
        "fs:read reads the working directory"
    );
    assert!(denied(&o[1]) && denied(&o[2]) && denied(&o[3]), "{o:?}");
    let err = String::from_utf8_lossy(&r.out.stderr);
    assert_eq!(
        o[4]["ok"], "sent",
        "net connects to the granted host and port: {} {err}",
        o[4]
    );
    let mut got = String::new();
    listener.accept().unwrap().0.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hello from a plugin");
    assert!(denied(&o[5]), "net does not read files: {}", o[5]);
    assert!(
        o[6]["ok"].as_str().unwrap_or_default().contains("uid="),
        "subprocess runs a shell: {}",
        o[6]
    );
    assert!(denied(&o[7]), "subprocess does not connect: {}", o[7]);
    assert!(denied(&o[8]), "net does not reach another port: {}", o[8]);
    assert!(beside.accept().is_err(), "nothing reached the other port");
    assert!(denied(&o[9]), "an ungranted name does not resolve: {}", o[9]);
    assert!(
        denied(&o[10]),
        "the port granted by name is not granted by address: {}",
        o[10]
    );
    assert_eq!(o[11]["ok"], "sent", "the address granted: {}", o[11]);
    let mut got = String::new();
    by_address.accept().unwrap().0.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hello from a plugin");
    assert_eq!(o[12]["errno"], libc::EPERM, "subprocess makes no namespaces: {}", o[12]);
    assert_eq!(o[13]["ok"], "connected", "an IPv6 literal's forwarder: {}", o[13]);
    assert!(
        denied(&o[14]) && denied(&o[15]),
        "zu.toml and the log: {} {}",
        o[14],
        o[15]
    );
    // The run's log says which sandbox each tool ran in.
    let applied: Value = r
        .log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["type"] == "harness.sandbox.applied")
        .expect("a harness.sandbox.applied event");
    let of = |name: &str| {
        applied["payload"]["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(of("granted_read")["sandbox"], "enforced", "{applied}");
    assert_eq!(of("granted_net")["sandbox"], "enforced", "{applied}");
    // What the egress gate saw is on the log: the connection it forwarded, the name it refused.
    let events: Vec<Value> = r
        .log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect();
    let of_type = |t: &str| {
        events
            .iter()
            .filter(|e| e["type"] == t)
            .map(|e| e["payload"].clone())
            .collect::<Vec<_>>()
    };
    let mut observed = of_type("harness.egress.observed");
    observed.sort_by_key(|p| p["host"].as_str().unwrap().to_owned());
    let by_address_port = by_address.local_addr().unwrap().port();
    assert_eq!(
        observed,
        vec![
            json!({"plugin": "tools.granted_net", "host": "127.0.0.1", "port": by_address_port, "connections": 1}),
            json!({"plugin": "tools.granted_net", "host": "fd00::7a75", "port": 9, "connections": 1}),
            json!({"plugin": "tools.granted_net", "host": "localhost", "port": port, "connections": 1}),
        ]
    );
    let refused = of_type("harness.egress.refused");
    assert!(
        refused.iter().any(|p| p["host"] == "exfiltrate.example.org"
            && p["plugin"] == "tools.granted_net"
            && p["port"].is_null()),
        "{refused:?}"
    );
}

#[test]
fn a_load_time_constructor_runs_in_the_probes_deny_all_sandbox() {
    let planted = Path::new("/tmp/zu-probe-planted-by-constructor");
    let _ = std::fs::remove_file(planted);
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(&[artifacts().c_fixture("ctor_hostile")]);
    let out = Command::new(&artifacts().zu)
        .args(["plugins", "--json", "--plugins", plugins.path().to_str().unwrap()])
        .env("ZU_CACHE_DIR", dir.path())
        .env_remove("ZU_PLUGIN_PATH")
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["failures"][0]["error"]["code"], "not_a_plugin", "{listed}");
    assert!(!planted.exists(), "the constructor planted a file from the probe");
}

#[test]
fn a_library_cannot_answer_the_probe_for_the_next_library() {
    // The forger writes a verdict frame to every descriptor from its
    // constructor; in a probe child of its own that answers only for itself.
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(&[artifacts().c_fixture("ctor_forge"), artifacts().lib("zu_plugin_files")]);
    let out = Command::new(&artifacts().zu)
        .args(["plugins", "--json", "--plugins", plugins.path().to_str().unwrap()])
        .env("ZU_CACHE_DIR", dir.path())
        .env_remove("ZU_PLUGIN_PATH")
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        names.contains(&"file_read"),
        "the library after the forger loads: {listed}"
    );
}

#[test]
fn what_a_subprocess_plugin_starts_ends_with_it_and_with_zu() {
    let dir = tempfile::tempdir().unwrap();
    let calls = json!([attempt("granted_exec", json!({"try": "spawn_sleeper"}))]);
    let r = run(dir.path(), calls, &["--tools", "granted_exec"], &[]);
    assert_eq!(
        r.out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.out.stderr)
    );
    let pids: Vec<i32> = r.observations[0]["ok"]
        .as_str()
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "{:?}", r.observations);
    let alive = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        !pids.iter().any(|p| alive(*p)),
        "a child of the plugin outlived zu: {pids:?}"
    );
}

#[test]
fn a_private_copy_changed_after_its_verdict_is_not_run_but_copied_and_probed_afresh() {
    use std::os::unix::fs::PermissionsExt;
    let a = artifacts();
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.md"), "the launch is on friday").unwrap();
    let plugins = plugin_dir(&[
        a.lib("zu_plugin_files"),
        a.lib("zu_plugin_scripted"),
        a.lib("zu_plugin_jsonl"),
    ]);
    let script =
        json!({"responses": [{"tool_calls": [{"name": "file_read", "args": {"path": "notes.md"}}]}, {"text": "{}"}]});
    let run_once = || {
        let log = dir.path().join("log.jsonl");
        let _ = std::fs::remove_file(&log);
        let out = Command::new(&a.zu)
            .args(["run", "--plugins", plugins.path().to_str().unwrap(), "--query", "q"])
            .args(["--provider", "scripted", "--provider-config", &script.to_string()])
            .args(["--sink", "jsonl", "--sink-config", &json!({"path": log}).to_string()])
            .args(["--config", &format!("tools.file_read={}", json!({"root": dir.path()}))])
            .current_dir(dir.path())
            .env("ZU_CACHE_DIR", cache.path())
            .env_remove("ZU_PLUGIN_PATH")
            .output()
            .unwrap();
        (out, std::fs::read_to_string(&log).unwrap_or_default())
    };
    let (out, log) = run_once();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(log.contains("the launch is on friday"));
    // Someone (not a sandboxed plugin: none can write there) puts bytes of the
    // same size in place of the copy of files' library.
    let original = std::fs::read(a.lib("zu_plugin_files")).unwrap();
    let copy = std::fs::read_dir(cache.path().join("libs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read(p).is_ok_and(|b| b == original))
        .expect("the private copy of zu_plugin_files");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut trojan = original.clone();
    let mid = trojan.len() / 2;
    trojan[mid..mid + 64].fill(0xcc);
    std::fs::write(&copy, &trojan).unwrap();
    let (out, log) = run_once();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(log.contains("the launch is on friday"), "a fresh copy ran: {err}");
    assert!(
        std::fs::read(&copy).map_or(true, |b| b != trojan),
        "the changed copy is gone"
    );
}
