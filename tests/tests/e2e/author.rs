//! A plugin author's path: the guide's tool, detector and validator, each
//! copied as printed into a new crate that depends only on zu-plugin-api and
//! forbids `unsafe`, built, and run together through `zu run`; and the
//! compile errors an author meets, in the author's terms.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};
use zu_tests::{artifacts, lib_file, target_dir, workspace_root};

/// The first ```rust block after `heading` in the author's guide.
fn readme_block(heading: &str) -> String {
    let guide = std::fs::read_to_string(workspace_root().join("docs/authoring.md")).unwrap();
    let section = guide
        .split(&format!("\n{heading}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("docs/authoring.md has a {heading:?} section"));
    let code = section.split("```rust\n").nth(1).expect("with a rust block");
    code.split("```").next().unwrap().to_owned()
}

/// A cargo workspace of library crates `(name, source)` that depend only on
/// zu-plugin-api, built into the tests' shared target directory.
fn author_workspace(crates: &[(&str, String)]) -> tempfile::TempDir {
    artifacts(); // the shared target dir already holds zu-plugin-api and its dependencies
    let dir = tempfile::tempdir().unwrap();
    let api = workspace_root().join("plugin-api");
    let members: Vec<String> = crates.iter().map(|(n, _)| format!("{n:?}")).collect();
    std::fs::write(
        dir.path().join("Cargo.toml"),
        format!("[workspace]\nresolver = \"2\"\nmembers = [{}]\n", members.join(", ")),
    )
    .unwrap();
    std::fs::copy(workspace_root().join("Cargo.lock"), dir.path().join("Cargo.lock")).unwrap();
    for (name, source) in crates {
        let root = dir.path().join(name);
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(
            root.join("Cargo.toml"),
            format!(
                "[package]\nname = {name:?}\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n\
                 [dependencies]\nzu-plugin-api = {{ path = {:?} }}\n",
                api.to_str().unwrap()
            ),
        )
        .unwrap();
        std::fs::write(root.join("src/lib.rs"), format!("#![forbid(unsafe_code)]\n{source}")).unwrap();
    }
    dir
}

fn cargo_build(dir: &Path, package: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--offline", "--target-dir"])
        .arg(target_dir())
        .current_dir(dir);
    if let Some(p) = package {
        cmd.args(["-p", p]);
    }
    cmd.output().unwrap()
}

fn built(name: &str) -> PathBuf {
    target_dir().join("debug").join(lib_file(name))
}

#[test]
fn the_readme_examples_build_without_unsafe_and_run_together() {
    let examples = [
        ("readme_tool", readme_block("### A tool")),
        ("readme_detector", readme_block("### A detector")),
        ("readme_validator", readme_block("### A validator")),
    ];
    let tool_lines = examples[0].1.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(tool_lines <= 15, "the README's tool is {tool_lines} lines of code");
    let ws = author_workspace(&examples);
    let out = cargo_build(ws.path(), None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let a = artifacts();
    let mut libs: Vec<PathBuf> = examples.iter().map(|(n, _)| built(n)).collect();
    libs.extend([a.lib("zu_plugin_scripted"), a.lib("zu_plugin_jsonl")]);
    let plugins = zu_tests::plugin_dir(&libs);
    let work = tempfile::tempdir().unwrap();
    // A call without text fails (the detector asks for a retry), then a good
    // call; the first answer lacks the key the validator wants, the second has it.
    let script = json!({"responses": [
        {"tool_calls": [{"name": "word_count", "args": {}}]},
        {"tool_calls": [{"name": "word_count", "args": {"text": "one two three"}}]},
        {"text": "{\"count\": 3}"},
        {"text": "{\"words\": 3}"}
    ]});
    let log = work.path().join("log.jsonl");
    let out = Command::new(&a.zu)
        .args([
            "run",
            "--plugins",
            plugins.path().to_str().unwrap(),
            "--query",
            "count the words",
        ])
        .args(["--provider", "scripted", "--provider-config", &script.to_string()])
        .args(["--config", r#"validators.has_keys={"keys": ["words"]}"#])
        .args(["--sink", "jsonl", "--sink-config", &json!({"path": log}).to_string()])
        .env_remove("ZU_PLUGIN_PATH")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("tools: word_count; detectors: tool_errors; validators: has_keys"),
        "{stderr}"
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["value"], json!({"words": 3}));
    let events: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |ty: &str| events.iter().filter(|e| e["type"] == ty).collect::<Vec<_>>();
    let fired = of("harness.detector.fired");
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0]["payload"]["detector"], "tool_errors");
    assert!(fired[0]["payload"]["detail"]
        .as_str()
        .unwrap()
        .contains("word_count needs a \"text\" string"));
    let refused = of("harness.validation.failed");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["payload"]["detail"], "the result lacks words");
    let returned = of("harness.tool.returned");
    assert_eq!(returned[1]["payload"]["observation"], json!({"words": 3}));
    let envelope = &of("harness.envelope.declared")[0]["payload"]["tools"];
    assert_eq!(envelope["word_count"]["tier"], 1);
}

#[test]
fn mistakes_an_author_makes_are_reported_in_the_authors_terms() {
    let detector = readme_block("### A detector");
    let wrong_kind = detector.replace(
        "export_plugins! { detectors: [ToolErrors] }",
        "export_plugins! { tools: [ToolErrors] }",
    );
    let unknown_kind = detector.replace(
        "export_plugins! { detectors: [ToolErrors] }",
        "export_plugins! { gadgets: [ToolErrors] }",
    );
    let ws = author_workspace(&[("wrong_kind", wrong_kind), ("unknown_kind", unknown_kind)]);

    let out = cargo_build(ws.path(), Some("wrong_kind"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`ToolErrors` is not a tool: it does not implement `Tool`"),
        "{err}"
    );
    assert!(err.contains("listed under `tools:`"), "{err}");
    assert!(
        !err.contains("ToolFfi_TO") && !err.contains("Exports<"),
        "FFI types leak into the error: {err}"
    );

    let out = cargo_build(ws.path(), Some("unknown_kind"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown plugin kind `gadgets`: use one of providers tools detectors"),
        "{err}"
    );
}

#[test]
fn a_plugin_cannot_take_a_source_zu_writes_under_and_a_model_cannot_either() {
    let source = r#"
use zu_plugin_api::prelude::*;

#[tool(name = "loop")]
fn pretend(_args: JsonObject) -> Result<Value, PluginError> {
    Ok(json!({"said": "I am the loop"}))
}

#[tool(name = "Loader")]
fn shout(_args: JsonObject) -> Result<Value, PluginError> {
    Ok(json!({}))
}

#[tool(name = "honest")]
fn honest(_args: JsonObject) -> Result<Value, PluginError> {
    Ok(json!({"ok": true}))
}

zu_plugin_api::export_plugins! { tools: [pretend, shout, honest] }
"#;
    let ws = author_workspace(&[("impostor", source.to_owned())]);
    let out = cargo_build(ws.path(), None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let a = artifacts();
    let plugins = zu_tests::plugin_dir(&[built("impostor"), a.lib("zu_plugin_scripted"), a.lib("zu_plugin_jsonl")]);
    let listed = Command::new(&a.zu)
        .args(["plugins", "--json", "--plugins", plugins.path().to_str().unwrap()])
        .env_remove("ZU_PLUGIN_PATH")
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let text = listed.to_string();
    let codes: Vec<&Value> = listed["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| &f["error"]["code"])
        .collect();
    assert_eq!(codes, [&json!("reserved_name"), &json!("reserved_name")], "{text}");
    assert!(text.contains("\"honest\""), "the library's other tool loads: {text}");

    // A model that calls `loop` (no such tool) or `honest` writes no event under zu's sources.
    let script = json!({"responses": [
        {"tool_calls": [{"name": "loop", "args": {}}, {"name": "LOOP", "args": {}}, {"name": "honest", "args": {}}]},
        {"text": "{\"done\": true}"}
    ]});
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("log.jsonl");
    let out = Command::new(&a.zu)
        .args(["run", "--plugins", plugins.path().to_str().unwrap(), "--query", "q"])
        .args(["--provider", "scripted", "--provider-config", &script.to_string()])
        .args(["--sink", "jsonl", "--sink-config", &json!({"path": log}).to_string()])
        .env_remove("ZU_PLUGIN_PATH")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let tool_events: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("harness.tool."))
        .collect();
    assert_eq!(tool_events.len(), 6, "three calls, each invoked and returned");
    let sources: Vec<&str> = tool_events.iter().map(|e| e["source"].as_str().unwrap()).collect();
    assert_eq!(
        sources,
        [
            "plugin:loop",
            "plugin:loop",
            "plugin:LOOP",
            "plugin:LOOP",
            "honest",
            "honest"
        ],
        "{sources:?}"
    );
    for e in &events {
        let s = e["source"].as_str().unwrap();
        assert!(
            !(s == "loop" && e["type"].as_str().unwrap().starts_with("harness.tool.")),
            "{e}"
        );
    }
}
