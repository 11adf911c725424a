//! The `zu` binary: `zu plugins` and `zu check`, their output shapes and exit codes.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use zu_tests::{artifacts, lib_file, plugin_dir};

fn zu(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(&artifacts().zu);
    cmd.args(args).env_remove("ZU_PLUGIN_PATH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("zu runs")
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Every fixture at once, plus a garbage file and a stray text file.
fn everything() -> tempfile::TempDir {
    let a = artifacts();
    let mut libs = vec![a.lib("zu_plugin_scripted"), a.lib("zu_plugin_checks"), a.aborting()];
    for f in [
        "bad_decls",
        "constructors",
        "dup_a",
        "dup_b",
        "foreign",
        "mixed",
        "not_zu",
        "panicky",
        "skewed",
    ] {
        libs.push(a.fixture(f));
    }
    let dir = plugin_dir(&libs);
    std::fs::write(dir.path().join(lib_file("garbage")), [0u8; 64]).unwrap();
    std::fs::write(dir.path().join("README.txt"), "not a library").unwrap();
    dir
}

#[test]
fn plugins_json_lists_every_plugin_and_every_failure_and_exits_zero() {
    let dir = everything();
    let out = zu(&["plugins", "--json", "--plugins", dir.path().to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json_of(&out);
    let plugins = report["plugins"].as_array().unwrap();
    let names: Vec<(&str, &str)> = plugins
        .iter()
        .map(|p| (p["kind"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("providers", "scripted"),
            ("tools", "dup"),
            ("tools", "fine"),
            ("tools", "panics_on_call"),
            ("tools", "panics_on_drop"),
            ("tools", "returns_50mb"),
            ("detectors", "always_warns"),
            ("detectors", "empty"),
            ("detectors", "error"),
        ]
    );
    let p = plugins.iter().find(|p| p["name"] == "panics_on_call").unwrap();
    assert_eq!(p["interface_version"], "1.0.0");
    assert_eq!(p["tier"], 1);
    assert_eq!(
        plugins.iter().find(|p| p["name"] == "panics_on_drop").unwrap()["tier"],
        2
    );
    assert_eq!(p["capabilities"], serde_json::json!(["net", "fs:read"]));
    assert_eq!(p["egress"], serde_json::json!(["*"]));
    assert!(p["library"].as_str().unwrap().ends_with(&lib_file("fixture_panicky")));

    let mut got: Vec<&str> = report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["error"]["code"].as_str().unwrap())
        .collect();
    got.sort_unstable();
    let mut want = vec![
        "aborts_on_panic",
        "unknown_kind",
        "invalid_version",
        "constructor_panicked",
        "constructor_failed",
        "name_taken",
        "abi_mismatch",
        "not_a_library",
        "incompatible_interface",
        "not_a_plugin",
        "layout_mismatch",
    ];
    want.sort_unstable();
    assert_eq!(got, want);
    for f in report["failures"].as_array().unwrap() {
        assert!(
            f["error"]["message"]
                .as_str()
                .unwrap()
                .contains(f["library"].as_str().unwrap()),
            "{f}"
        );
        let whole_library = matches!(
            f["error"]["code"].as_str().unwrap(),
            "not_a_library" | "not_a_plugin" | "abi_mismatch" | "aborts_on_panic"
        );
        assert_eq!(f["kind"].is_null(), whole_library, "{f}");
        assert_eq!(f["name"].is_null(), whole_library, "{f}");
    }
}

#[test]
fn strict_makes_any_failure_exit_one_and_the_table_names_the_code() {
    let a = artifacts();
    let dir = plugin_dir(&[a.lib("zu_plugin_checks"), a.fixture("mixed")]);
    let d = dir.path().to_str().unwrap();
    let out = zu(&["plugins", "--plugins", d], &[]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("detectors  empty"), "{text}");
    assert!(text.contains("[incompatible_interface]"), "{text}");
    assert_eq!(zu(&["plugins", "--strict", "--plugins", d], &[]).status.code(), Some(1));
    let clean = plugin_dir(&[a.lib("zu_plugin_checks")]);
    assert_eq!(
        zu(
            &["plugins", "--strict", "--plugins", clean.path().to_str().unwrap()],
            &[]
        )
        .status
        .code(),
        Some(0)
    );
}

#[test]
fn plugins_may_be_repeated_and_zu_plugin_path_is_read_when_none_is_given() {
    let a = artifacts();
    let one = plugin_dir(&[a.lib("zu_plugin_checks")]);
    let two = plugin_dir(&[a.lib("zu_plugin_scripted")]);
    let (p1, p2) = (one.path().to_str().unwrap(), two.path().to_str().unwrap());
    let names = |out: &Output| -> Vec<String> {
        json_of(out)["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let both = zu(&["plugins", "--json", "--plugins", p1, "--plugins", p2], &[]);
    assert_eq!(names(&both), ["scripted", "empty", "error"]);
    let joined = std::env::join_paths([one.path(), two.path()]).unwrap();
    let from_env = zu(&["plugins", "--json"], &[("ZU_PLUGIN_PATH", Path::new(&joined))]);
    assert_eq!(names(&from_env), ["scripted", "empty", "error"]);
    // --plugins wins over the environment.
    let flag_wins = zu(
        &["plugins", "--json", "--plugins", p2],
        &[("ZU_PLUGIN_PATH", one.path())],
    );
    assert_eq!(names(&flag_wins), ["scripted"]);
}

#[test]
fn check_reports_one_library_and_exits_one_if_anything_in_it_fails() {
    let a = artifacts();
    let good = zu(&["check", a.lib("zu_plugin_checks").to_str().unwrap(), "--json"], &[]);
    assert_eq!(good.status.code(), Some(0));
    assert_eq!(json_of(&good)["plugins"].as_array().unwrap().len(), 2);

    let bad = zu(&["check", a.fixture("constructors").to_str().unwrap(), "--json"], &[]);
    assert_eq!(bad.status.code(), Some(1));
    let codes: Vec<Value> = json_of(&bad)["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["error"]["code"].clone())
        .collect();
    assert_eq!(codes, ["constructor_panicked", "constructor_failed"]);

    // Config reaches the constructor; the panicking one still fails.
    let lib = a.fixture("constructors");
    let configured = zu(
        &[
            "check",
            lib.to_str().unwrap(),
            "--json",
            "--config",
            r#"tools.ctor_fails={"ok": true}"#,
        ],
        &[],
    );
    assert_eq!(json_of(&configured)["plugins"][0]["name"], "ctor_fails");
}

#[test]
fn usage_errors_exit_two_with_a_clear_message() {
    let missing = zu(&["plugins", "--plugins", "/nonexistent/zu-plugin-dir"], &[]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot read plugin directory /nonexistent/zu-plugin-dir")
    );
    let bad_config = zu(&["plugins", "--plugins", "/tmp", "--config", "tools.x=not json"], &[]);
    assert_eq!(bad_config.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_config.stderr).contains("invalid plugin config"));
    let no_lib = zu(&["check", "/nonexistent/libx.so"], &[]);
    assert_eq!(no_lib.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_lib.stderr).contains("no plugin library at /nonexistent/libx.so"));
}

#[test]
fn help_explains_the_commands_and_exit_codes() {
    let out = zu(&["--help"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in ["plugins", "check", "ZU_PLUGIN_PATH", "Exit codes", "layout_mismatch"] {
        assert!(text.contains(needle), "--help lacks {needle}: {text}");
    }
}
