//! The sandbox as the user sets it: grants in zu.toml and on the command
//! line, the process limit, `required` where a layer is missing (a seccomp
//! wrapper makes one unavailable), and what `zu sandbox` says.

use serde_json::{json, Value};
use zu_tests::{artifacts, plugin_dir};

use crate::sandbox::{attempt, denied, run, running_as_root, zu_without};

#[test]
fn a_sandbox_counts_and_limits_its_own_processes() {
    use std::os::unix::fs::PermissionsExt;
    // Run as a user (Linux does not limit the processes of a real uid 0):
    // a working directory and a verdict cache that user may write.
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    for d in [dir.path(), cache.path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    if running_as_root() {
        std::os::unix::fs::chown(cache.path(), Some(65534), Some(65534)).unwrap();
    }
    let cache = cache.path().to_str().unwrap();
    let env = [("ZU_TEST_AS_NOBODY", "1"), ("ZU_CACHE_DIR", cache)];
    let many = json!([attempt("granted_exec", json!({"try": "spawn_many", "n": 50}))]);
    // The default (256) is counted in the sandbox's own user namespace: the
    // rest of the user's processes do not count against it.
    let r = run(dir.path(), many.clone(), &["--tools", "granted_exec"], &env);
    let err = String::from_utf8_lossy(&r.out.stderr).into_owned();
    assert_eq!(r.observations[0]["ok"], "started 50", "{:?} {err}", r.observations);
    std::fs::write(
        dir.path().join("zu.toml"),
        "[grants.tools.granted_exec]\nlimits = { processes = 16 }\n",
    )
    .unwrap();
    let r = run(dir.path(), many, &["--tools", "granted_exec"], &env);
    let err = String::from_utf8_lossy(&r.out.stderr).into_owned();
    assert_eq!(r.out.status.code(), Some(0), "zu lives: {err}");
    let o = r.observations.last().unwrap(); // the log holds both runs
    assert!(
        denied(o) && o["errno"] == libc::EAGAIN,
        "the 17th process is refused: {o} {err}"
    );
    // The same from the command line (over zu.toml's), and a limit that is not one.
    std::fs::remove_file(dir.path().join("zu.toml")).unwrap();
    let flag = ["--tools", "granted_exec", "--limit", "tools.granted_exec=processes:8"];
    let twelve = json!([attempt("granted_exec", json!({"try": "spawn_many", "n": 12}))]);
    let r = run(dir.path(), twelve, &flag, &env);
    let o = r.observations.last().unwrap();
    assert!(denied(o) && o["errno"] == libc::EAGAIN, "{o}");
    let bad = ["--tools", "granted_exec", "--limit", "tools.granted_exec=cpu_s:1"];
    let r = run(dir.path(), json!([]), &bad, &env);
    let err = String::from_utf8_lossy(&r.out.stderr).into_owned();
    assert_eq!(r.out.status.code(), Some(2), "{err}");
    assert!(err.contains("no limit \"cpu_s\""), "{err}");
}

#[test]
fn required_containment_refuses_a_plugin_outside_a_sandbox_or_with_a_layer_missing() {
    let dir = tempfile::tempdir().unwrap();
    let read = json!([attempt("granted_read", json!({"try": "read", "path": "x"}))]);
    let sandboxed = run(
        dir.path(),
        read.clone(),
        &["--containment", "required", "--tools", "granted_read"],
        &[],
    );
    assert_eq!(
        sandboxed.out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&sandboxed.out.stderr)
    );
    // In zu's process there is no sandbox at all.
    let before = sandboxed.log.len();
    let here = run(
        dir.path(),
        read.clone(),
        &[
            "--containment",
            "required",
            "--tools",
            "granted_read",
            "--isolation",
            "in-process",
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&here.out.stderr).into_owned();
    assert_eq!(here.out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("runs in no sandbox") && err.contains("providers.scripted"),
        "{err}"
    );
    assert_eq!(here.log.len(), before, "nothing ran");
    // ... unless trusted by name.
    let trusted: Vec<&str> = ["providers.scripted", "sinks.jsonl", "tools.granted_read"]
        .iter()
        .flat_map(|t| ["--trust", *t])
        .collect();
    let mut flags = vec![
        "--containment",
        "required",
        "--tools",
        "granted_read",
        "--isolation",
        "in-process",
    ];
    flags.extend(trusted);
    let ok = run(dir.path(), read, &flags, &[]);
    assert_eq!(
        ok.out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.out.stderr)
    );
    // `net` scoped to its hosts meets `required` here ...
    let net = json!([attempt("granted_net", json!({"try": "env", "name": "X"}))]);
    let flags = ["--containment", "required", "--tools", "granted_net"];
    let scoped = run(dir.path(), net.clone(), &flags, &[]);
    let err = String::from_utf8_lossy(&scoped.out.stderr).into_owned();
    assert_eq!(scoped.out.status.code(), Some(0), "{err}");
    // ... and where no namespace can be made (the `without` wrapper's seccomp
    // filter fails unshare with EPERM), that layer is missing and named.
    let before = scoped.log.len();
    let trusting = [&flags[..], &["--trust", "providers.scripted", "--trust", "sinks.jsonl"]].concat();
    let open = run(dir.path(), net, &trusting, &[("ZU_TEST_WITHOUT", "namespaces")]);
    let err = String::from_utf8_lossy(&open.out.stderr).into_owned();
    assert_eq!(open.out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("tools.granted_net") && err.contains("network scoped") && err.contains("user namespace"),
        "{err}"
    );
    assert_eq!(open.log.len(), before, "nothing ran");
}

#[test]
fn a_grant_in_zu_toml_places_a_declared_capability_and_may_not_widen_one() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("granted.txt"), "granted by name").unwrap();
    std::fs::write(
        dir.path().join("zu.toml"),
        format!(
            "[grants.tools.granted_read]\nread = [{:?}]\nenv = [\"ZU_GRANTED_VAR\"]\n\n[grants.tools.attempt]\nwrite = [\"/tmp\"]\n",
            outside.path()
        ),
    )
    .unwrap();
    let calls = json!([
        attempt(
            "granted_read",
            json!({"try": "read", "path": outside.path().join("granted.txt")})
        ),
        attempt("granted_read", json!({"try": "env", "name": "ZU_GRANTED_VAR"})),
        attempt("granted_read", json!({"try": "env", "name": "ZU_OTHER_VAR"})),
    ]);
    let env = [("ZU_GRANTED_VAR", "yes"), ("ZU_OTHER_VAR", "no")];
    let r = run(dir.path(), calls, &["--tools", "granted_read"], &env);
    let err = String::from_utf8_lossy(&r.out.stderr).into_owned();
    assert_eq!(r.out.status.code(), Some(0), "{err}");
    assert_eq!(r.observations[0]["ok"], "granted by name", "{:?} {err}", r.observations);
    assert_eq!(r.observations[1]["ok"], "yes");
    assert!(denied(&r.observations[2]));
    // `attempt` declares nothing: a write grant is wider, and it is refused.
    assert!(
        err.contains("grant_too_wide") && err.contains("attempt") && err.contains("does not declare fs:write"),
        "{err}"
    );
}

#[test]
fn zu_sandbox_says_what_the_kernel_enforces_and_each_plugins_sandbox() {
    let a = artifacts();
    let dir = tempfile::tempdir().unwrap();
    let sandbox = |libs: &[std::path::PathBuf], extra: &[&str]| {
        let plugins = plugin_dir(libs);
        let out = zu_without(extra.first().and_then(|f| f.strip_prefix("without:")))
            .args(["sandbox", "--json", "--plugins", plugins.path().to_str().unwrap()])
            .args(extra.iter().filter(|f| !f.starts_with("without:")))
            .env("ZU_CACHE_DIR", dir.path())
            .env_remove("ZU_PLUGIN_PATH")
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), v)
    };
    let (code, v) = sandbox(&[a.fixture("hostile")], &[]);
    assert!(
        v["kernel"]["landlock_abi"].as_i64().unwrap() >= 6,
        "this test machine has Landlock ABI 6+: {v}"
    );
    assert_eq!(v["kernel"]["seccomp"], true);
    let state = |name: &str| {
        v["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["sandbox"]
            .clone()
    };
    assert_eq!(state("attempt"), "enforced");
    assert_eq!(state("granted_net"), "enforced", "net is scoped to its hosts here");
    assert_eq!(code, Some(0), "{v}");
    // zu.toml's grants are read: one wider than the declaration is refused.
    let toml = dir.path().join("zu.toml");
    std::fs::write(&toml, "[grants.tools.granted_net]\nhosts = [\"evil.example.org\"]\n").unwrap();
    let (_, v) = sandbox(&[a.fixture("hostile")], &["--config-file", toml.to_str().unwrap()]);
    let failures = v["failures"].to_string();
    assert!(
        failures.contains("grant_too_wide") && failures.contains("evil.example.org"),
        "{v}"
    );
    // Where a process may make no namespaces (as under Docker's default
    // profile): processes are not counted per sandbox and net is not scoped.
    let (code, v) = sandbox(&[a.fixture("hostile")], &["without:namespaces"]);
    assert_eq!(v["kernel"]["user_namespaces"], false, "{v}");
    let missing = |name: &str| {
        v["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["missing"]
            .to_string()
    };
    assert!(missing("granted_net").contains("network scoped"), "{v}");
    assert!(
        missing("attempt").contains("user namespace") && !missing("attempt").contains("network"),
        "{v}"
    );
    assert_eq!(code, Some(1), "required could not be met");
    let (code, v) = sandbox(&[a.lib("zu_plugin_scripted"), a.lib("zu_plugin_files")], &[]);
    assert_eq!(code, Some(0), "{v}");
    let (code, v) = sandbox(&[a.lib("zu_plugin_files")], &["--isolation", "in-process"]);
    assert_eq!(code, Some(1));
    assert_eq!(v["plugins"][0]["sandbox"], "none");
    // A kernel without Landlock (containers, WSL): said plainly, no panic.
    let plugins = plugin_dir(&[a.lib("zu_plugin_files")]);
    let out = zu_without(Some("landlock"))
        .args(["sandbox", "--plugins", plugins.path().to_str().unwrap()])
        .env("ZU_CACHE_DIR", dir.path())
        .env_remove("ZU_PLUGIN_PATH")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("no Landlock") && text.contains("file_read"), "{text}");
    assert!(
        text.contains("files (Landlock"),
        "the plugin's missing layer is named: {text}"
    );
}

#[test]
fn fs_write_without_a_grant_writes_a_scratch_directory_of_its_own_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let calls = json!([
        attempt("granted_write", json!({"try": "write_scratch"})),
        attempt(
            "granted_write",
            json!({"try": "write", "path": dir.path().join("here.txt")})
        ),
        attempt("granted_read", json!({"try": "write_scratch"})),
    ]);
    let r = run(dir.path(), calls, &["--tools", "granted_write,granted_read"], &[]);
    let err = String::from_utf8_lossy(&r.out.stderr).into_owned();
    assert_eq!(r.out.status.code(), Some(0), "{err}");
    let o = &r.observations;
    let scratch = o[0]["ok"].as_str().unwrap_or_else(|| panic!("{o:?}"));
    assert!(scratch.contains("zu-scratch-"), "{scratch}");
    assert!(!std::path::Path::new(scratch).exists(), "removed when zu is done");
    assert!(denied(&o[1]), "not the working directory: {}", o[1]);
    assert!(denied(&o[2]), "without fs:write, no scratch: {}", o[2]);
}

#[test]
fn a_sinks_process_writes_its_own_logs_files_and_nothing_beside_them() {
    let a = artifacts();
    let plugins = plugin_dir(&[
        a.fixture("hostile"),
        a.lib("zu_plugin_scripted"),
        a.lib("zu_plugin_sqlite"),
    ]);
    // zu runs elsewhere (`fs:read` reads the working directory by default).
    let (dir, cwd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (secret, log) = (dir.path().join("secret.txt"), dir.path().join("run.log"));
    std::fs::write(&secret, "kept").unwrap();
    // zu.toml beside the log, as users keep it: no longer a reason to refuse.
    std::fs::write(dir.path().join("zu.toml"), "").unwrap();
    let script = json!({"responses": [{"text": "{\"done\": true}"}]}).to_string();
    let zu = |sink: &str, config: Value| {
        std::process::Command::new(&a.zu)
            .args(["run", "--plugins", plugins.path().to_str().unwrap(), "--query", "q"])
            .args(["--provider", "scripted", "--provider-config", &script])
            .args(["--sink", sink, "--sink-config", &config.to_string()])
            .args(["--tools", "", "--detectors", "", "--validators", ""])
            .args(["--containment", "required"])
            .current_dir(cwd.path())
            .env_remove("ZU_PLUGIN_PATH")
            .env("ZU_CACHE_DIR", crate::sandbox::cache_dir())
            .output()
            .unwrap()
    };
    let out = zu("hostile_log", json!({ "path": log }));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["type"], "hostile.tried", "{text}");
    for (what, o) in lines[0]["tries"].as_object().unwrap() {
        assert!(denied(o), "{what} beside its log: {o}");
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "kept");
    assert!(!dir.path().join("secret.txt.planted").exists());
    assert!(lines.len() > 3, "its own log holds the run: {text}");
    // The SQLite sink makes a new log (and its directory) in its sandbox, and
    // the log reads back.
    let db = dir.path().join("new/run.db");
    let out = zu("sqlite", json!({ "path": db }));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let events = std::process::Command::new(&a.zu)
        .args([
            "events",
            "--plugins",
            plugins.path().to_str().unwrap(),
            "--sink",
            "sqlite",
        ])
        .args(["--sink-config", &json!({ "path": db }).to_string(), "--json"])
        .current_dir(dir.path())
        .env("ZU_CACHE_DIR", crate::sandbox::cache_dir())
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&events.stdout);
    assert!(events.status.success(), "{}", String::from_utf8_lossy(&events.stderr));
    assert!(listed.contains("harness.task.started"), "{listed}");
}
