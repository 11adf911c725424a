//! The CLI a newcomer meets, through the `zu` binary: failing checks on the
//! log (fail-open and fail-closed), a run naming its plugins, configs for
//! plugins that do not exist, no plugin directory, read-only readers, hints
//! that name the flag used, each failure printed once and uncoloured, UUID
//! filters, group-writable plugins under umask 002, and a Result that names
//! the verdict behind a provider's failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};
use zu_tests::{artifacts, lib_file, plugin_dir};

/// `zu` with a clean environment: no plugin path, a HOME with nothing in it.
pub(crate) fn zu(dir: &Path, args: &[&str]) -> Output {
    zu_env(dir, args, &[])
}

/// The home directory these tests give zu: empty, outside every work
/// directory (a sink may not write a directory that holds the home).
fn home() -> &'static Path {
    static HOME: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    HOME.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// `zu` in `dir` with [`home`] as its home.
pub(crate) fn zu_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let home = home();
    let mut cmd = Command::new(&artifacts().zu);
    cmd.args(args)
        .current_dir(dir)
        .env_remove("ZU_PLUGIN_PATH")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .env("HOME", home);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub(crate) fn result_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("stdout is a Result ({e}); stderr: {}", stderr(out)))
}

/// The real plugins plus the failing-checks fixture, in one directory.
pub(crate) fn plugins_with(extra: &[PathBuf]) -> tempfile::TempDir {
    let a = artifacts();
    let mut libs: Vec<PathBuf> = ["scripted", "checks", "files", "validators", "jsonl", "sqlite"]
        .iter()
        .map(|p| a.lib(&format!("zu_plugin_{p}")))
        .collect();
    libs.extend_from_slice(extra);
    plugin_dir(&libs)
}

/// A work directory: docs/notes.md, the script, and a zu.toml whose extra
/// lines are `toml`. The log goes to `log.jsonl`.
pub(crate) fn workdir(plugins: &Path, script: Value, toml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("docs")).unwrap();
    std::fs::write(dir.path().join("docs/notes.md"), "The launch is on 2026-12-01 at noon.").unwrap();
    std::fs::write(dir.path().join("script.json"), script.to_string()).unwrap();
    let text = format!(
        "{toml}\n[task]\nquery = \"When is the launch?\"\n\n[provider]\nname = \"scripted\"\nconfig_file = \"script.json\"\n\n\
         [sink]\nname = \"jsonl\"\nconfig = {{ path = \"log.jsonl\" }}\n\n[config.tools.file_read]\nroot = \"docs\"\n"
    );
    let text = text.replace("PLUGINS", &format!("{:?}", plugins.display().to_string()));
    std::fs::write(dir.path().join("zu.toml"), text).unwrap();
    dir
}

pub(crate) fn log_of(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub(crate) fn read_then_answer(answer: Value) -> Value {
    json!({"responses": [
        {"tool_calls": [{"name": "file_read", "args": {"path": "notes.md"}}]},
        {"text": answer.to_string()}
    ]})
}

#[test]
fn a_check_that_fails_is_on_the_log_and_fail_closed_ends_the_run() {
    let plugins = plugins_with(&[artifacts().fixture("failing_checks")]);
    let toml = "plugins = [PLUGINS]";
    let dir = workdir(plugins.path(), read_then_answer(json!({"date": "2026-12-01"})), toml);
    // Fail-open (the reference's default): the run succeeds, the log says what did not run.
    let out = zu(dir.path(), &["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let failed: Vec<(String, String)> = log_of(dir.path())
        .iter()
        .filter(|e| e["type"] == "harness.check.failed")
        .map(|e| {
            (
                e["payload"]["check"].as_str().unwrap().to_owned(),
                e["payload"]["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        failed,
        [
            ("flaky".to_owned(), "detector".to_owned()),
            ("broken".to_owned(), "validator".to_owned())
        ]
    );
    let broken = log_of(dir.path())
        .into_iter()
        .find(|e| e["payload"]["check"] == "broken")
        .unwrap();
    assert!(
        broken["payload"]["error"].as_str().unwrap().contains("validator bug"),
        "{broken}"
    );

    // Fail-closed, from the flag or zu.toml: the first failed check ends the run.
    for (extra, args) in [
        ("", vec!["run", "--checks", "fail-closed"]),
        ("checks = \"fail-closed\"", vec!["run"]),
    ] {
        let toml = format!("plugins = [PLUGINS]\n{extra}");
        let dir = workdir(plugins.path(), read_then_answer(json!({"date": "2026-12-01"})), &toml);
        let out = zu(dir.path(), &args);
        assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
        assert_eq!(result_of(&out)["reason"], "check_failed:flaky");
        let types: Vec<String> = log_of(dir.path())
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            &types[types.len() - 2..],
            ["harness.check.failed", "harness.task.terminal"]
        );
    }
    let bad = zu(dir.path(), &["run", "--checks", "sometimes"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("expected fail-open or fail-closed"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn a_run_names_its_plugins_from_flags_or_zu_toml() {
    let plugins = plugins_with(&[]);
    // Answered from nothing retrieved: grounding refuses it, so leaving grounding out is the only way to pass.
    let script = json!({"responses": [{"text": "{\"date\": \"soon\"}"}, {"text": "{\"date\": \"soon\"}"}]});
    let dir = workdir(plugins.path(), script.clone(), "plugins = [PLUGINS]");
    let all = zu(dir.path(), &["run", "--max-steps", "2"]);
    assert_eq!(all.status.code(), Some(4), "{}", stderr(&all));
    assert!(
        stderr(&all).contains("validators: grounding, schema"),
        "{}",
        stderr(&all)
    );

    let out = zu(dir.path(), &["run", "--validators", "schema", "--detectors", ""]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("taking part: provider scripted; tools: file_read; detectors: none; validators: schema"),
        "{}",
        stderr(&out)
    );

    let toml = "[plugins]\ndirs = [PLUGINS]\nvalidators = [\"schema\"]\ntools = []";
    let dir = workdir(plugins.path(), script.clone(), toml);
    let out = zu(dir.path(), &["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("tools: none;"), "{}", stderr(&out));
    let envelope = log_of(dir.path())
        .into_iter()
        .find(|e| e["type"] == "harness.envelope.declared")
        .unwrap();
    assert_eq!(envelope["payload"]["tools"], json!({}), "no tool took part");

    // A named plugin that is not loaded: exit 1, naming what is.
    let out = zu(dir.path(), &["run", "--tools", "file_read,web_search"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no tool plugin named \"web_search\"; loaded tools: file_read"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
    // A named plugin that failed to load: exit 1 with its refusal.
    let broken = plugins_with(&[artifacts().fixture("constructors")]);
    let dir = workdir(broken.path(), script, "plugins = [PLUGINS]");
    let out = zu(dir.path(), &["run", "--tools", "ctor_fails"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("[constructor_failed]") || stderr(&out).contains("failed to start"));
    assert!(stderr(&out).contains("ctor_fails"), "{}", stderr(&out));
}

#[test]
fn a_config_for_a_plugin_that_does_not_exist_is_an_error_naming_the_loaded_ones() {
    let plugins = plugins_with(&[]);
    let dir = workdir(plugins.path(), read_then_answer(json!({})), "plugins = [PLUGINS]");
    let p = plugins.path().to_str().unwrap();
    let out = zu(dir.path(), &["run", "--config", r#"tools.file_red={"root": "docs"}"#]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "--config tools.file_red configures tools plugin \"file_red\", but no tools plugin has that name; loaded tools: file_read"
        ),
        "{}",
        stderr(&out)
    );
    let out = zu(
        dir.path(),
        &["plugins", "--plugins", p, "--config", "detectors.emtpy={}"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("loaded detectors: empty, error"),
        "{}",
        stderr(&out)
    );
    let typo_in_toml = workdir(
        plugins.path(),
        read_then_answer(json!({})),
        "plugins = [PLUGINS]\n[config.validators.grounded]\nstrict = true\n",
    );
    let out = zu(typo_in_toml.path(), &["run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("zu.toml [config.validators.grounded] configures"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn with_no_plugin_directory_zu_says_where_it_looked_and_how_to_point_it() {
    let home = tempfile::tempdir().unwrap();
    let out = zu(home.path(), &["run", "--provider", "scripted", "--query", "q"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let default = self::home().join(".local/share/zu/plugins");
    for needle in [
        "no provider plugin named \"scripted\"",
        "ZU_PLUGIN_PATH is unset",
        &format!("the default directory {} does not exist", default.display()),
        "--plugins DIR",
    ] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    let listed = zu(home.path(), &["plugins"]);
    assert_eq!(listed.status.code(), Some(0));
    assert!(stderr(&listed).contains("--plugins DIR"), "{}", stderr(&listed));
}

#[test]
fn readers_never_create_a_log_and_read_one_on_read_only_media() {
    let plugins = plugins_with(&[]);
    let p = plugins.path().to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (sink, file) in [("sqlite", "missing.db"), ("jsonl", "missing/log.jsonl")] {
        let path = dir.path().join(file);
        let config = json!({"path": path}).to_string();
        let out = zu(
            dir.path(),
            &["events", "--plugins", p, "--sink", sink, "--sink-config", &config],
        );
        assert_eq!(out.status.code(), Some(1), "{sink}: {}", stderr(&out));
        assert!(stderr(&out).contains("no event log at"), "{sink}: {}", stderr(&out));
        assert!(
            !path.exists() && !dir.path().join("missing").exists(),
            "{sink} created a file"
        );
    }

    // A real log, then its directory made read-only (for root, read through an unprivileged user).
    let work = workdir(
        plugins.path(),
        read_then_answer(json!({"date": "2026-12-01"})),
        "plugins = [PLUGINS]",
    );
    let out = zu(
        work.path(),
        &["run", "--sink", "sqlite", "--sink-config", r#"{"path": "ro/run.db"}"#],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ro = work.path().join("ro");
    let mut before: Vec<String> = std::fs::read_dir(&ro)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    before.sort();
    // The WAL files are kept for the next sandboxed writer; the WAL emptied.
    assert_eq!(before, ["run.db", "run.db-shm", "run.db-wal"]);
    assert_eq!(
        std::fs::metadata(ro.join("run.db-wal")).unwrap().len(),
        0,
        "a clean close empties the WAL"
    );
    let bytes = std::fs::read(ro.join("run.db")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for d in [work.path(), plugins.path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(ro.join("run.db"), std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let config = json!({"path": ro.join("run.db")}).to_string();
    let args = [
        "events",
        "--plugins",
        p,
        "--sink",
        "sqlite",
        "--sink-config",
        &config,
        "--json",
    ];
    let out = if running_as_root() {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&artifacts().zu)
            .args(args)
            .env_remove("ZU_PLUGIN_PATH")
            .output()
            .unwrap()
    } else {
        zu(work.path(), &args)
    };
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 12);
    assert_eq!(std::fs::read(ro.join("run.db")).unwrap(), bytes, "the log is unchanged");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Whether the tests run as root (CI does).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

#[test]
fn hints_name_the_flag_the_user_used() {
    let plugins = plugins_with(&[]);
    let p = plugins.path().to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = zu(
        dir.path(),
        &["events", "--plugins", p, "--sink", "sqlite", "--sink-config", "{}"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("check its config (--sink-config)"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("--config sinks"), "{}", stderr(&out));
    let out = zu(dir.path(), &["events", "--plugins", p, "--sink", "sqlite"]);
    assert!(
        stderr(&out).contains("sqlite sink is not configured") && stderr(&out).contains("--sink-config"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("--config sinks"), "{}", stderr(&out));
    let out = zu(
        dir.path(),
        &[
            "run",
            "--plugins",
            p,
            "--provider",
            "scripted",
            "--query",
            "q",
            "--sink",
            "jsonl",
            "--sink-config",
            r#"{"pth": "x"}"#,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("check its config (--sink-config)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn each_failure_is_printed_once_without_colour_unless_on_a_terminal() {
    let plugins = plugins_with(&[artifacts().fixture("constructors")]);
    let p = plugins.path().to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "run",
        "--plugins",
        p,
        "--provider",
        "scripted",
        "--provider-config",
        r#"{"responses": [{"text": "{}"}]}"#,
        "--query",
        "q",
        "--validators",
        "",
        "--tools",
        "ctor_fails",
    ];
    let out = zu_env(dir.path(), &args, &[("RUST_LOG", "info")]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.matches("ctor_fails\" failed to start").count(), 1, "{err}");
    assert_eq!(
        err.matches("[constructor_panicked]").count(),
        1,
        "the other refusal, once: {err}"
    );
    assert_eq!(err.matches("ctor_panics\" panicked while starting").count(), 1, "{err}");
    assert!(!err.contains('\u{1b}'), "no colour codes in a file: {err:?}");

    // On a terminal (`script` gives zu a pty) logs are coloured, unless NO_COLOR is set.
    let line = format!(
        "{} run --plugins {p} --provider scripted --provider-config '{{\"responses\": [{{\"text\": \"{{}}\"}}]}}' --query q --validators ''",
        artifacts().zu.display()
    );
    let on_tty = |no_color: bool| {
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"])
            .env("RUST_LOG", "zu_runtime=debug")
            .env_remove("ZU_PLUGIN_PATH");
        if no_color {
            cmd.env("NO_COLOR", "1");
        } else {
            cmd.env_remove("NO_COLOR");
        }
        String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned()
    };
    assert!(on_tty(false).contains('\u{1b}'), "{}", on_tty(false));
    let plain = on_tty(true);
    assert!(plain.contains("DEBUG") && !plain.contains('\u{1b}'), "{plain}");
}

#[test]
fn task_and_trace_filters_must_be_uuids_and_full_tables_are_not_cut() {
    let plugins = plugins_with(&[]);
    let p = plugins.path().to_str().unwrap();
    let long = "x".repeat(300);
    // Many keys, so that even the scoped payload (a list of keys) is long.
    let mut answer = serde_json::Map::new();
    answer.insert("note".into(), json!(long));
    for i in 0..12 {
        answer.insert(format!("field_number_{i:02}"), json!(i));
    }
    let script = json!({"responses": [{"text": Value::Object(answer).to_string()}]});
    let dir = workdir(plugins.path(), script, "plugins = [PLUGINS]");
    let out = zu(dir.path(), &["run", "--validators", ""]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let config = json!({"path": dir.path().join("log.jsonl")}).to_string();
    let events = |extra: &[&str]| {
        let mut args = vec!["events", "--plugins", p, "--sink", "jsonl", "--sink-config", &config];
        args.extend_from_slice(extra);
        zu(dir.path(), &args)
    };
    for flag in ["--task", "--trace"] {
        let out = events(&[flag, "not-a-uuid"]);
        assert_eq!(out.status.code(), Some(2), "{flag}");
        assert!(stderr(&out).contains("not-a-uuid"), "{}", stderr(&out));
        assert!(out.stdout.is_empty());
    }
    let task = log_of(dir.path())[0]["task_id"].as_str().unwrap().to_owned();
    let by_task = events(&["--task", &task, "--type", "harness.task.completed"]);
    assert_eq!(by_task.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&by_task.stdout).lines().count(),
        2,
        "header and one row"
    );
    let full = String::from_utf8_lossy(&events(&["--full", "--type", "harness.task.completed"]).stdout).into_owned();
    assert!(full.contains(&long), "{full}");
    let cut = String::from_utf8_lossy(&events(&["--type", "harness.task.completed"]).stdout).into_owned();
    assert!(!cut.contains(&long) && cut.contains('…'), "{cut}");
}

/// `/etc/group` and `/etc/passwd`: whether `gid` is `user`'s private group.
fn is_private_group(user: &str, gid: u32) -> bool {
    let group = std::fs::read_to_string("/etc/group").unwrap();
    let line = group.lines().find(|l| l.split(':').nth(2) == Some(&gid.to_string()));
    let Some(fields) = line.map(|l| l.split(':').collect::<Vec<_>>()) else {
        return false;
    };
    let members_ok = fields
        .get(3)
        .is_none_or(|m| m.split(',').all(|m| m.is_empty() || m == user));
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let others = passwd
        .lines()
        .filter(|l| l.split(':').nth(3) == Some(&gid.to_string()))
        .any(|l| l.split(':').next() != Some(user));
    fields[0] == user && members_ok && !others
}

#[test]
fn group_write_is_accepted_only_for_the_owners_private_group() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let plugins = plugin_dir(&[artifacts().lib("zu_plugin_checks")]);
    let lib = plugins.path().join(lib_file("zu_plugin_checks"));
    // What a fresh build looks like under umask 002.
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o664)).unwrap();
    std::fs::set_permissions(plugins.path(), std::fs::Permissions::from_mode(0o775)).unwrap();
    let meta = std::fs::metadata(&lib).unwrap();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let user = passwd
        .lines()
        .find(|l| l.split(':').nth(2) == Some(&meta.uid().to_string()))
        .map(|l| l.split(':').next().unwrap().to_owned())
        .unwrap();
    let p = plugins.path().to_str().unwrap();
    let out = zu(plugins.path(), &["plugins", "--plugins", p, "--json", "--strict"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    if is_private_group(&user, meta.gid()) {
        assert_eq!(out.status.code(), Some(0), "{report}");
        assert_eq!(report["plugins"].as_array().unwrap().len(), 2);
    } else {
        assert_eq!(report["failures"][0]["error"]["code"], "insecure_permissions");
    }
    // Another group (one that is nobody's private group): refused, saying which rule.
    if running_as_root() {
        let status = Command::new("chown")
            .args([":daemon", lib.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = zu(plugins.path(), &["plugins", "--plugins", p, "--json"]);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let failure = &report["failures"][0]["error"];
        assert_eq!(failure["code"], "insecure_permissions");
        assert!(
            failure["message"]
                .as_str()
                .unwrap()
                .contains("mode 664: writable by group \"daemon\", which is not the owner's private group"),
            "{failure}"
        );
    }
    // Writable by everyone: refused whatever the group.
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = zu(plugins.path(), &["plugins", "--plugins", p, "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["failures"][0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("writable by everyone"));
}

#[test]
fn a_provider_failure_after_a_retry_names_the_verdict_that_led_there() {
    let plugins = plugins_with(&[]);
    // The answer misses a required field; the schema validator asks for a retry; the script has no more.
    let script = json!({"responses": [{"text": "{\"day\": \"Tuesday\"}"}]});
    let dir = workdir(plugins.path(), script, "plugins = [PLUGINS]");
    let schema = r#"{"type": "object", "required": ["date"]}"#;
    let out = zu(
        dir.path(),
        &["run", "--validators", "schema", "--output-schema", schema],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let reason = result_of(&out)["reason"].as_str().unwrap().to_owned();
    assert!(reason.starts_with("provider error: "), "{reason}");
    assert!(
        reason.contains("(after schema retry: \"date\" is a required property)"),
        "{reason}"
    );
}
