//! The 1.x promise: the `scripted` and `files` plugins as built against
//! zu-plugin-api 1.0.0 (commit 2673a19, frozen in `tests/compat/v1.0.0`)
//! load and run in today's `zu`, in both isolation modes.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};
use zu_tests::{artifacts, compat_v1, lib_file, plugin_dir};

const MODES: [&str; 2] = ["process", "in-process"];

/// What the old `file_read` reads in the run below.
const NOTES: &str = "Old plugins still run: the launch is on 2026-12-01 at noon.";

/// The two libraries of 1.0.0, and `more` of today's, in one directory.
fn old_plugins(more: &[&str]) -> tempfile::TempDir {
    let old = compat_v1();
    let mut libs = vec![
        old.join(lib_file("zu_plugin_scripted")),
        old.join(lib_file("zu_plugin_files")),
    ];
    libs.extend(more.iter().map(|p| artifacts().lib(&format!("zu_plugin_{p}"))));
    plugin_dir(&libs)
}

/// `zu` in `dir`, with a verdict cache of its own (outside `dir`: a sink
/// may not write a directory that holds the cache) and no plugin path.
fn zu(dir: &Path, args: &[&str]) -> Output {
    static CACHE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(|| tempfile::tempdir().unwrap());
    Command::new(&artifacts().zu)
        .args(args)
        .current_dir(dir)
        .env("ZU_CACHE_DIR", cache.path())
        .env_remove("ZU_PLUGIN_PATH")
        .env_remove("ZU_SANDBOXED")
        .env_remove("RUST_LOG")
        .output()
        .expect("zu runs")
}

fn json_of(out: &Output, what: &str) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: stdout is JSON ({e}): {:?}; stderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn plugins_built_against_1_0_0_are_admitted_in_both_isolation_modes() {
    let plugins = old_plugins(&[]);
    let work = tempfile::tempdir().unwrap();
    let dir = plugins.path().to_str().unwrap();
    for mode in MODES {
        let out = zu(
            work.path(),
            &["plugins", "--json", "--strict", "--plugins", dir, "--isolation", mode],
        );
        let report = json_of(&out, mode);
        assert_eq!(report["failures"], json!([]), "{mode}: an old plugin was refused");
        assert_eq!(out.status.code(), Some(0), "{mode}: {report}");
        let rows: Vec<(&str, &str, &str, String)> = report["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let file = Path::new(p["library"].as_str().unwrap()).file_name().unwrap();
                (
                    p["kind"].as_str().unwrap(),
                    p["name"].as_str().unwrap(),
                    p["interface_version"].as_str().unwrap(),
                    file.to_string_lossy().into_owned(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("providers", "scripted", "1.0.0", lib_file("zu_plugin_scripted")),
                ("tools", "file_read", "1.0.0", lib_file("zu_plugin_files")),
            ],
            "{mode}"
        );
        assert_eq!(report["plugins"][1]["capabilities"], json!(["fs:read"]), "{mode}");
    }
}

#[test]
fn an_old_provider_drives_an_old_tool_through_zu_run_in_both_isolation_modes() {
    // Today's jsonl sink keeps the log the assertions read.
    let plugins = old_plugins(&["jsonl"]);
    for mode in MODES {
        let work = tempfile::tempdir().unwrap();
        std::fs::create_dir(work.path().join("docs")).unwrap();
        std::fs::write(work.path().join("docs/notes.md"), NOTES).unwrap();
        // The old scripted provider's config keys: `responses` (`text`, `tool_calls`).
        let script = json!({"responses": [
            {"tool_calls": [{"name": "file_read", "args": {"path": "notes.md"}}]},
            {"text": "{\"date\": \"2026-12-01\"}"}
        ]});
        std::fs::write(work.path().join("script.json"), script.to_string()).unwrap();
        let toml = format!(
            "plugins = [{:?}]\n\n[task]\nquery = \"When is the launch?\"\n\n\
             [provider]\nname = \"scripted\"\nconfig_file = \"script.json\"\n\n\
             [sink]\nname = \"jsonl\"\nconfig = {{ path = \"run.jsonl\" }}\n\n\
             [config.tools.file_read]\nroot = \"docs\"\n",
            plugins.path()
        );
        std::fs::write(work.path().join("zu.toml"), toml).unwrap();

        let out = zu(work.path(), &["run", "--isolation", mode]);
        let result = json_of(&out, mode);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{mode}: {result}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(result["status"], "success", "{mode}: {result}");
        assert_eq!(result["value"], json!({"date": "2026-12-01"}), "{mode}");

        let log = std::fs::read_to_string(work.path().join("run.jsonl")).unwrap();
        let events: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let only = |ty: &str| {
            let found: Vec<&Value> = events.iter().filter(|e| e["type"] == ty).collect();
            assert_eq!(found.len(), 1, "{mode}: one {ty} in {log}");
            &found[0]["payload"]
        };
        // What the old file_read returned: the file's text, stored once.
        let fetched = only("data.source.fetched");
        assert_eq!(fetched["text"], NOTES, "{mode}");
        assert_eq!(fetched["path"], "notes.md", "{mode}");
        assert_eq!(fetched["bytes"], NOTES.len(), "{mode}");
        let returned = only("harness.tool.returned");
        assert_eq!(returned["tool"], "file_read", "{mode}");
        assert_eq!(
            returned["observation"],
            json!({"path": "notes.md", "bytes": NOTES.len(), "text_len": NOTES.chars().count()}),
            "{mode}: the observation is the file, not an error"
        );
        assert_eq!(
            events.iter().filter(|e| e["type"] == "harness.turn.completed").count(),
            2,
            "{mode}: the old provider answered twice"
        );
        assert_eq!(events.last().unwrap()["type"], "harness.task.completed", "{mode}");
    }
}
