//! A plugin author's path: the README's example, copied into a new crate that
//! depends only on zu-plugin-api and forbids `unsafe`, builds and loads.

use std::process::Command;

use zu_plugin_api::version::Kind;
use zu_tests::{artifacts, lib_file, target_dir, workspace_root};

/// The first ```rust block after the "Write a plugin" heading of README.md.
fn readme_example() -> String {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let section = readme
        .split("## Write a plugin")
        .nth(1)
        .expect("README has a 'Write a plugin' section");
    let code = section.split("```rust").nth(1).expect("with a rust block");
    code.split("```").next().unwrap().to_owned()
}

#[test]
fn the_readme_example_builds_without_unsafe_and_loads() {
    artifacts(); // the shared target dir already holds zu-plugin-api's dependencies
    let dir = tempfile::tempdir().unwrap();
    let api = workspace_root().join("plugin-api");
    std::fs::write(
        dir.path().join("Cargo.toml"),
        format!(
            "[package]\nname = \"my_plugin\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\nzu-plugin-api = {{ path = {:?} }}\n\n[workspace]\n",
            api.to_str().unwrap()
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    let code = format!("#![forbid(unsafe_code)]\n{}", readme_example());
    std::fs::write(dir.path().join("src/lib.rs"), code).unwrap();
    let status = Command::new(env!("CARGO"))
        .args(["build", "--offline", "--target-dir"])
        .arg(target_dir())
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "the README example does not build");
    let built = target_dir().join("debug").join(lib_file("my_plugin"));
    let plugins = zu_tests::plugin_dir(&[built]);
    let reg = crate::load(plugins.path());
    assert!(reg.failures().is_empty(), "{:?}", crate::codes(&reg));
    assert_eq!(reg.names(Kind::Tools), ["echo"]);
}
