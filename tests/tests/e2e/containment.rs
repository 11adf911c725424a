//! Nothing in the plugin directory, and nothing a plugin does, takes the host
//! down: hostile files become typed refusals (the probe), verdicts are cached
//! and crashers quarantined, a library replaced under a running host does
//! not crash it, isolated plugins crash, exit and hang as recorded errors,
//! zu's stdout and exit codes stay its own, and signals end a run on the record.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use zu_tests::{artifacts, lib_file, plugin_dir};

/// `zu` with its own verdict cache and no plugin path.
fn zu(cache: &Path, args: &[&str]) -> Output {
    zu_cmd(cache, args).output().unwrap()
}

fn zu_cmd(cache: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(&artifacts().zu);
    cmd.args(args)
        .env("ZU_CACHE_DIR", cache)
        .env_remove("ZU_PLUGIN_PATH")
        .env_remove("RUST_LOG");
    cmd
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is JSON ({e}): {:?}; stderr: {}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    })
}

/// `(file name, code)` of every refusal in a `zu plugins --json` report.
fn refusals(report: &Value) -> Vec<(String, String, String)> {
    report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let file = Path::new(f["library"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (
                file,
                f["error"]["code"].as_str().unwrap().to_owned(),
                f["error"]["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A directory holding every hostile C library, a truncated copy of a real
/// plugin, a FIFO, and the real `checks` plugin that must survive them.
fn hostile_dir() -> tempfile::TempDir {
    let a = artifacts();
    let names = [
        "ctor_segv",
        "ctor_abort",
        "ctor_sleep",
        "ctor_exit0",
        "ctor_stdout",
        "magic_garbage",
    ];
    let mut libs: Vec<PathBuf> = names.iter().map(|n| a.c_fixture(n)).collect();
    libs.push(a.lib("zu_plugin_checks"));
    let dir = plugin_dir(&libs);
    let real = std::fs::read(a.lib("zu_plugin_scripted")).unwrap();
    let cut = loaded_extent(&real) / 2;
    std::fs::write(dir.path().join(lib_file("truncated")), &real[..cut]).unwrap();
    let fifo = dir.path().join(lib_file("fifo"));
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    dir
}

/// Where the last loadable segment of a 64-bit ELF file ends: cutting the
/// file before it leaves mapped pages with nothing behind them (an
/// interrupted copy), which faults with SIGBUS when the loader touches them.
fn loaded_extent(elf: &[u8]) -> usize {
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    assert_eq!(&elf[..5], b"\x7fELF\x02", "a 64-bit ELF library");
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum)
        .map(|i| phoff + i * phentsize)
        .filter(|h| u32::from_le_bytes(elf[*h..*h + 4].try_into().unwrap()) == 1) // PT_LOAD
        .map(|h| u64_at(h + 8) + u64_at(h + 32)) // p_offset + p_filesz
        .max()
        .unwrap()
}

fn code_of<'a>(refused: &'a [(String, String, String)], file: &str) -> (&'a str, &'a str) {
    let r = refused
        .iter()
        .find(|(f, _, _)| f == &lib_file(file))
        .unwrap_or_else(|| panic!("no refusal for {file}: {refused:?}"));
    (r.1.as_str(), r.2.as_str())
}

#[test]
fn every_hostile_file_is_a_typed_refusal_and_no_other_plugin_is_lost() {
    let dir = hostile_dir();
    let cache = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let start = Instant::now();
    let out = zu(
        cache.path(),
        &["plugins", "--plugins", d, "--json", "--probe-timeout", "2"],
    );
    assert!(start.elapsed() < Duration::from_secs(20), "took {:?}", start.elapsed());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json_of(&out); // a constructor's stdout did not get into zu's JSON
    let names: Vec<&str> = report["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["empty", "error"], "the good plugin survives its neighbours");
    let refused = refusals(&report);
    assert_eq!(code_of(&refused, "fifo").0, "not_a_regular_file");
    assert!(code_of(&refused, "fifo").1.contains("a FIFO"));
    let (code, message) = code_of(&refused, "ctor_segv");
    assert_eq!(code, "probe_crashed");
    assert!(message.contains("SIGSEGV"), "{message}");
    let (code, message) = code_of(&refused, "ctor_abort");
    assert_eq!(code, "probe_crashed");
    assert!(message.contains("SIGABRT"), "{message}");
    let (code, message) = code_of(&refused, "ctor_sleep");
    assert_eq!(code, "probe_timeout");
    assert!(message.contains("deadline of 2 s"), "{message}");
    let (code, message) = code_of(&refused, "ctor_exit0");
    assert_eq!(code, "probe_exited");
    assert!(message.contains("exit status 0"), "{message}");
    assert_eq!(code_of(&refused, "ctor_stdout").0, "not_a_plugin");
    let (code, message) = code_of(&refused, "magic_garbage");
    assert_eq!(code, "probe_crashed", "{message}");
    let (code, message) = code_of(&refused, "truncated");
    assert_eq!(code, "probe_crashed", "{message}");
    assert!(message.contains("SIGBUS"), "{message}");
    assert_eq!(refused.len(), 8, "{refused:?}");
}

#[test]
fn zu_check_takes_its_verdict_out_of_process_and_its_json_stays_clean() {
    let a = artifacts();
    let cache = tempfile::tempdir().unwrap();
    for (lib, code) in [
        ("ctor_exit0", "probe_exited"),
        ("ctor_segv", "probe_crashed"),
        ("ctor_stdout", "not_a_plugin"),
    ] {
        let path = a.c_fixture(lib);
        let out = zu(cache.path(), &["check", path.to_str().unwrap(), "--json"]);
        assert_eq!(out.status.code(), Some(1), "{lib}: {}", stderr(&out));
        assert_eq!(json_of(&out)["failures"][0]["error"]["code"], code, "{lib}");
    }
}

#[test]
fn verdicts_are_cached_crashers_stay_quarantined_until_their_file_changes() {
    let dir = hostile_dir();
    std::fs::remove_file(dir.path().join(lib_file("ctor_sleep"))).unwrap(); // keep it quick
    let cache = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let probes = |out: &Output| stderr(out).matches("probed").count();
    let args = ["plugins", "--plugins", d, "--json"];
    let cold = zu_cmd(cache.path(), &args)
        .env("RUST_LOG", "zu_loader=debug")
        .output()
        .unwrap();
    assert_eq!(probes(&cold), 7, "{}", stderr(&cold));
    let warm = zu_cmd(cache.path(), &args)
        .env("RUST_LOG", "zu_loader=debug")
        .output()
        .unwrap();
    assert_eq!(probes(&warm), 0, "a warm start probes nothing: {}", stderr(&warm));
    let refused = refusals(&json_of(&warm));
    let (code, message) = code_of(&refused, "ctor_segv");
    assert_eq!(code, "probe_crashed");
    assert!(
        message.contains("cached: quarantined until the file changes"),
        "{message}"
    );
    assert!(
        !code_of(&refused, "ctor_stdout").1.contains("quarantined"),
        "only crashers are quarantined"
    );

    // The crasher is rebuilt (here: replaced by a good library): probed again, and loads.
    let target = dir.path().join(lib_file("ctor_segv"));
    std::fs::remove_file(&target).unwrap();
    std::fs::copy(artifacts().lib("zu_plugin_scripted"), &target).unwrap();
    let rebuilt = zu_cmd(cache.path(), &args)
        .env("RUST_LOG", "zu_loader=debug")
        .output()
        .unwrap();
    assert_eq!(probes(&rebuilt), 1, "{}", stderr(&rebuilt));
    let names: Vec<String> = json_of(&rebuilt)["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"scripted".to_owned()), "{names:?}");

    // --rescan forgets the quarantine and probes everything again.
    let rescan = zu_cmd(cache.path(), &["plugins", "--plugins", d, "--json", "--rescan"])
        .env("RUST_LOG", "zu_loader=debug")
        .output()
        .unwrap();
    assert_eq!(probes(&rescan), 7, "{}", stderr(&rescan));
    assert!(!refusals(&json_of(&rescan)).iter().any(|r| r.2.contains("quarantined")));
}

#[test]
fn eight_zu_processes_share_one_verdict_cache() {
    let a = artifacts();
    let libs: Vec<PathBuf> = ["scripted", "checks", "files", "validators", "jsonl", "sqlite"]
        .iter()
        .map(|p| a.lib(&format!("zu_plugin_{p}")))
        .chain([a.c_fixture("ctor_segv"), a.c_fixture("ctor_exit0")])
        .collect();
    let dir = plugin_dir(&libs);
    let cache = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let children: Vec<_> = (0..8)
        .map(|_| {
            zu_cmd(cache.path(), &["plugins", "--plugins", d, "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    let reports: Vec<Value> = outputs.iter().map(json_of).collect();
    for r in &reports {
        assert_eq!(r["plugins"], reports[0]["plugins"]);
        assert_eq!(r["failures"].as_array().unwrap().len(), 2, "{r}");
    }
    let file: Value = serde_json::from_slice(&std::fs::read(cache.path().join("verdicts.json")).unwrap()).unwrap();
    assert_eq!(
        file["entries"].as_object().unwrap().len(),
        libs.len(),
        "no lost verdict"
    );
    let warm = zu_cmd(cache.path(), &["plugins", "--plugins", d, "--json"])
        .env("RUST_LOG", "zu_loader=debug")
        .output()
        .unwrap();
    assert_eq!(stderr(&warm).matches("probed").count(), 0, "{}", stderr(&warm));
}

/// Every real plugin plus the misbehaving tools.
fn run_dir() -> tempfile::TempDir {
    let a = artifacts();
    plugin_dir(&[
        a.lib("zu_plugin_scripted"),
        a.lib("zu_plugin_jsonl"),
        a.fixture("misbehaving"),
    ])
}

/// `zu run` of a task whose scripted provider makes `calls`, then answers,
/// with the plugins of `plugins` and `extra` flags.
fn zu_run(cache: &Path, plugins: &Path, calls: &[(&str, Value)], extra: &[&str]) -> Command {
    let script = script(calls);
    let mut args = vec!["run", "--plugins", plugins.to_str().unwrap(), "--provider", "scripted"];
    args.extend(["--provider-config", &script, "--query", "q"]);
    args.extend_from_slice(extra);
    zu_cmd(cache, &args)
}

fn script(calls: &[(&str, Value)]) -> String {
    let mut responses: Vec<Value> = calls
        .iter()
        .map(|(name, args)| json!({"tool_calls": [{"name": name, "args": args}]}))
        .collect();
    responses.push(json!({"text": "{\"done\": true}"}));
    json!({ "responses": responses }).to_string()
}

fn log_of(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn an_isolated_tool_that_aborts_segfaults_overflows_exits_or_hangs_is_recorded_and_the_run_finishes() {
    let dir = run_dir();
    let cache = tempfile::tempdir().unwrap();
    // The log beside, not inside, the verdict cache (a sink may not write the cache's directory).
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("log.jsonl");
    let calls = [
        ("aborts", json!({})),
        ("segfaults", json!({})),
        ("overflows", json!({})),
        ("exits", json!({})),
        ("prints", json!({"x": 1})),
        ("slow", json!({"ms": 1})),
        ("hangs", json!({})),
    ];
    let out = zu_run(
        cache.path(),
        dir.path(),
        &calls,
        &[
            "--wall-time-s",
            "3",
            "--sink",
            "jsonl",
            "--sink-config",
            &json!({"path": log}).to_string(),
        ],
    )
    .output()
    .unwrap();
    // The hang spends the wall time: the run ends TERMINAL, on the record.
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(
        json_of(&out)["reason"],
        "budget:wall_time_s",
        "stdout is zu's Result alone"
    );
    let events = log_of(&log);
    let contained: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["type"] == "harness.plugin.contained")
        .map(|e| {
            (
                e["payload"]["plugin"].as_str().unwrap().to_owned(),
                e["payload"]["what"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let names: Vec<&str> = contained.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, ["aborts", "segfaults", "overflows", "exits"], "{contained:?}");
    assert_eq!(contained[0].1, "died of SIGABRT");
    assert_eq!(contained[1].1, "died of SIGSEGV");
    assert!(contained[2].1.starts_with("died of SIG"), "{contained:?}");
    assert_eq!(contained[3].1, "exited with status 3");
    let returned: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "harness.tool.returned")
        .map(|e| &e["payload"]["observation"])
        .collect();
    assert_eq!(returned.len(), 7);
    assert_eq!(
        returned[4],
        &json!({"x": 1}),
        "a fresh process serves the call after a crash"
    );
    assert_eq!(returned[5], &json!({"slept_ms": 1}));
    let blocked: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "harness.defense.blocked")
        .collect();
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0]["payload"]["kind"], "tool_timeout");
    assert_eq!(blocked[0]["payload"]["tool"], "hangs");
    assert_eq!(events.last().unwrap()["type"], "harness.task.terminal");
}

#[test]
fn an_in_process_plugin_that_calls_exit_cannot_speak_for_zu() {
    let dir = run_dir();
    let cache = tempfile::tempdir().unwrap();
    let calls = [("prints", json!({"x": 1})), ("exits", json!({}))];
    let out = zu_run(cache.path(), dir.path(), &calls, &["--isolation", "in-process"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "not 3, the plugin's own code: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("plugin \"exits\" called exit() inside zu"),
        "{}",
        stderr(&out)
    );
    assert!(
        out.stdout.is_empty(),
        "the plugin's print is not on zu's stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr(&out).contains("\"forged\": true"), "it went to stderr");
}

#[test]
fn a_constructor_that_never_returns_is_refused_in_both_modes() {
    let dir = plugin_dir(&[artifacts().fixture("sleepy")]);
    let cache = tempfile::tempdir().unwrap();
    for mode in ["process", "in-process"] {
        let start = Instant::now();
        let out = zu(
            cache.path(),
            &[
                "plugins",
                "--plugins",
                dir.path().to_str().unwrap(),
                "--json",
                "--probe-timeout",
                "1",
                "--isolation",
                mode,
            ],
        );
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{mode}: {:?}",
            start.elapsed()
        );
        let report = json_of(&out);
        assert_eq!(report["plugins"][0]["name"], "awake", "{mode}: {report}");
        let failure = &report["failures"][0];
        assert_eq!(failure["name"], "sleepy");
        assert_eq!(failure["error"]["code"], "constructor_timeout", "{mode}: {failure}");
    }
}

#[test]
fn a_library_replaced_in_place_under_a_running_host_does_not_crash_it() {
    for mode in ["in-process", "process"] {
        let dir = run_dir();
        let cache = tempfile::tempdir().unwrap();
        let calls = [("slow", json!({"ms": 1500})), ("slow", json!({"ms": 5}))];
        let child = zu_run(cache.path(), dir.path(), &calls, &["--isolation", mode])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(700));
        // An ordinary redeploy: `cp` writes new bytes into the same file.
        let status = Command::new("cp")
            .arg(artifacts().lib("zu_plugin_checks"))
            .arg(dir.path().join(lib_file("fixture_misbehaving")))
            .status()
            .unwrap();
        assert!(status.success());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{mode}: {}", stderr(&out));
        assert_eq!(json_of(&out)["value"], json!({"done": true}), "{mode}");
    }
}

fn interrupted(signal: &str, code: i32) {
    let dir = run_dir();
    let cache = tempfile::tempdir().unwrap();
    // The log beside, not inside, the verdict cache (a sink may not write the cache's directory).
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("log.jsonl");
    let calls = [("hangs", json!({}))];
    let child = zu_run(
        cache.path(),
        dir.path(),
        &calls,
        &[
            "--wall-time-s",
            "120",
            "--sink",
            "jsonl",
            "--sink-config",
            &json!({"path": log}).to_string(),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Wait until the tool call is under way.
    let until = Instant::now() + Duration::from_secs(20);
    while !log_of(&log).iter().any(|e| e["type"] == "harness.tool.invoked") {
        assert!(Instant::now() < until, "the run never reached the tool");
        std::thread::sleep(Duration::from_millis(20));
    }
    let start = Instant::now();
    assert!(Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{signal}: {:?}",
        start.elapsed()
    );
    assert_eq!(out.status.code(), Some(code), "{signal}: {}", stderr(&out));
    let reason = format!("interrupted:SIG{signal}");
    assert_eq!(json_of(&out)["reason"], reason.as_str());
    let events = log_of(&log);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "harness.task.terminal");
    assert_eq!(last["payload"]["reason"], reason.as_str());
}

#[test]
fn sigint_ends_a_run_on_the_record_with_130() {
    interrupted("INT", 130);
}

#[test]
fn sigterm_ends_a_run_on_the_record_with_143() {
    interrupted("TERM", 143);
}

#[test]
fn sighup_ends_a_run_on_the_record_with_129() {
    interrupted("HUP", 129);
}

#[test]
fn a_run_beside_hostile_files_neither_hangs_nor_dies_and_logs_what_it_refused() {
    let a = artifacts();
    let dir = plugin_dir(&[
        a.lib("zu_plugin_scripted"),
        a.lib("zu_plugin_jsonl"),
        a.c_fixture("ctor_segv"),
        a.c_fixture("ctor_sleep"),
    ]);
    assert!(Command::new("mkfifo")
        .arg(dir.path().join(lib_file("fifo")))
        .status()
        .unwrap()
        .success());
    let cache = tempfile::tempdir().unwrap();
    // The log beside, not inside, the verdict cache (a sink may not write the cache's directory).
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("log.jsonl");
    let start = Instant::now();
    let out = zu_run(
        cache.path(),
        dir.path(),
        &[],
        &[
            "--probe-timeout",
            "1",
            "--sink",
            "jsonl",
            "--sink-config",
            &json!({"path": log}).to_string(),
        ],
    )
    .output()
    .unwrap();
    assert!(start.elapsed() < Duration::from_secs(15), "{:?}", start.elapsed());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut refused: Vec<(String, String)> = log_of(&log)
        .into_iter()
        .filter(|e| e["type"] == "harness.plugin.refused")
        .map(|e| {
            let p = &e["payload"];
            let file = Path::new(p["library"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (file, p["code"].as_str().unwrap().to_owned())
        })
        .collect();
    refused.sort();
    assert_eq!(
        refused,
        [
            (lib_file("ctor_segv"), "probe_crashed".to_owned()),
            (lib_file("ctor_sleep"), "probe_timeout".to_owned()),
            (lib_file("fifo"), "not_a_regular_file".to_owned()),
        ]
    );
    let segv = log_of(&log)
        .into_iter()
        .find(|e| e["payload"]["code"] == "probe_crashed")
        .unwrap();
    assert!(segv["payload"]["message"].as_str().unwrap().contains("SIGSEGV"));
}
