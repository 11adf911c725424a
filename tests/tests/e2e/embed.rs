//! Embedding: a new binary crate links the runtime library and three plugin
//! crates as Rust libraries (their library export turned off, so their
//! symbols do not clash), registers the plugins in-process and runs a task.

use std::process::Command;

use zu_tests::workspace_root;

const MAIN: &str = r#"
use std::sync::Arc;
use zu_runtime::api::prelude::*;
use zu_runtime::{run_task, EventBus, PluginObject, Registry, RunOptions};
use zu_plugin_checks::EmptyDetector;
use zu_plugin_files::FileRead;
use zu_plugin_scripted::Scripted;

fn main() {
    let root = std::env::args().nth(1).expect("a docs root");
    let mut registry = Registry::new();
    let tool = FileRead::new(json!({"root": root})).unwrap();
    registry.register_native(FileRead::NAME, FileRead::ENVELOPE, PluginObject::Tool(Arc::new(tool))).unwrap();
    registry.register_native(EmptyDetector::NAME, Envelope::NONE, PluginObject::Detector(Arc::new(EmptyDetector))).unwrap();
    let provider = Scripted::new(json!({"responses": [
        {"tool_calls": [{"name": "file_read", "args": {"path": "a.txt"}}]},
        {"text": "{\"found\": \"embedded\"}"}
    ]})).unwrap();
    let bus = Arc::new(EventBus::new());
    let result = run_task(&TaskSpec::new("read a.txt"), Arc::new(provider), &registry, &bus, &RunOptions::default()).unwrap();
    let fetched = bus.count(&EventFilter::all().with(zu_runtime::api::filter::FilterField::Type, Some("data.source.fetched"))).unwrap();
    println!("{} {fetched}", serde_json::to_string(&result).unwrap());
}
"#;

#[test]
fn several_plugin_crates_link_into_one_embedding_binary() {
    // Its own target dir: as a dependency, a plugin crate is still built as a
    // cdylib too, and without its export it must not replace the test plugins.
    let target = workspace_root().join("target").join("zu-test-embed");
    let dir = tempfile::tempdir().unwrap();
    let path = |p: &str| workspace_root().join(p).display().to_string();
    let manifest = format!(
        "[package]\nname = \"embedder\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n\
         zu-runtime = {{ path = {:?} }}\n\
         zu-plugin-files = {{ path = {:?}, default-features = false }}\n\
         zu-plugin-checks = {{ path = {:?}, default-features = false }}\n\
         zu-plugin-scripted = {{ path = {:?}, default-features = false }}\n\
         serde_json = \"1\"\n\n[workspace]\n",
        path("host/runtime"),
        path("plugins/files"),
        path("plugins/checks"),
        path("plugins/scripted"),
    );
    std::fs::write(dir.path().join("Cargo.toml"), manifest).unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/main.rs"), MAIN).unwrap();
    // Reuse the workspace's lock file so the same dependency versions are built.
    std::fs::copy(workspace_root().join("Cargo.lock"), dir.path().join("Cargo.lock")).unwrap();
    let status = Command::new(env!("CARGO"))
        .args(["build", "--offline", "--target-dir"])
        .arg(&target)
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "the embedding crate does not build");
    let docs = tempfile::tempdir().unwrap();
    std::fs::write(docs.path().join("a.txt"), "the word is embedded").unwrap();
    let out = Command::new(target.join("debug/embedder"))
        .arg(docs.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8(out.stdout).unwrap();
    let (result, fetched) = line.trim().rsplit_once(' ').unwrap();
    let result: serde_json::Value = serde_json::from_str(result).unwrap();
    assert_eq!(result["status"], "success");
    assert_eq!(result["value"], serde_json::json!({"found": "embedded"}));
    assert_eq!(fetched, "1");
}
