//! Tidy: the architecture's invariants, read from the repository's own
//! manifests and sources (in the style of rust-analyzer's `tidy.rs`). Each
//! test names the rule, says why, and fails with the file that breaks it.
//! ARCHITECTURE.md lists the same rules.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use zu_tests::workspace_root;

/// Every workspace crate: package name → (directory, its workspace
/// dependencies, all its dependency names).
fn crates() -> BTreeMap<String, (PathBuf, Vec<String>)> {
    let root = workspace_root();
    let manifest: toml::Table = toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
    let members = manifest["workspace"]["members"].as_array().unwrap();
    let mut dirs = Vec::new();
    for m in members {
        let m = m.as_str().unwrap();
        match m.strip_suffix("/*") {
            Some(parent) => {
                for e in std::fs::read_dir(root.join(parent)).unwrap() {
                    let p = e.unwrap().path();
                    if p.join("Cargo.toml").exists() {
                        dirs.push(p);
                    }
                }
            }
            None => dirs.push(root.join(m)),
        }
    }
    dirs.into_iter()
        .map(|dir| {
            let text = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
            let m: toml::Table = toml::from_str(&text).unwrap();
            let name = m["package"]["name"].as_str().unwrap().to_owned();
            let deps: Vec<String> = ["dependencies", "build-dependencies"]
                .iter()
                .filter_map(|k| m.get(*k).and_then(|v| v.as_table()))
                .flat_map(|t| t.keys().cloned())
                .collect();
            (name, (dir, deps))
        })
        .collect()
}

fn deps_of(name: &str) -> Vec<String> {
    crates()[name].1.clone()
}

const HOST: [&str; 3] = ["zu-runtime", "zu-loader", "zu-cli"];

/// Rust sources under `dir`, recursively.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "target") {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(workspace_root()).unwrap_or(p).display().to_string()
}

#[test]
fn plugins_depend_only_on_the_plugin_api_and_its_support_crates() {
    // Why: a plugin is built against zu-plugin-api and loaded by any host that
    // provides its interface; a host crate in its dependencies would tie it
    // to one host build (and drag the loader into every plugin).
    let all = crates();
    let allowed = ["zu-plugin-api", "zu-codec"];
    for (name, (dir, deps)) in &all {
        if !dir.starts_with(workspace_root().join("plugins")) {
            continue;
        }
        for d in deps {
            let internal = all.contains_key(d);
            assert!(
                !internal || allowed.contains(&d.as_str()),
                "{name} ({}) depends on {d}; a plugin may depend on {allowed:?} among this workspace's crates",
                rel(dir)
            );
        }
    }
}

#[test]
fn the_plugin_api_and_its_support_crates_depend_on_no_host_crate() {
    // Why: authors build against zu-plugin-api alone; a host dependency would
    // reach every plugin. Support crates sit under plugin-api/ for that reason.
    for name in ["zu-plugin-api", "zu-plugin-api-macros", "zu-codec"] {
        for d in deps_of(name) {
            assert!(!HOST.contains(&d.as_str()), "{name} depends on host crate {d}");
        }
    }
}

#[test]
fn host_crates_depend_one_way_runtime_then_loader_then_cli() {
    // Why: an embedder links the runtime without library loading; the loader
    // fills the runtime's registry; only the binary sees both.
    let layers = ["zu-runtime", "zu-loader", "zu-cli"];
    for (i, name) in layers.iter().enumerate() {
        let deps = deps_of(name);
        for later in &layers[i..] {
            assert!(
                !deps.iter().any(|d| d == later),
                "{name} depends on {later}: host crates depend only on earlier layers ({layers:?})"
            );
        }
    }
    assert!(deps_of("zu-loader").contains(&"zu-runtime".to_owned()));
}

#[test]
fn only_the_loader_opens_libraries_or_touches_the_ffi_module() {
    // Why: a library mapped into the process runs its code; one place does it,
    // after the checks. The FFI types stay behind zu-plugin-api's hidden
    // module and the loader.
    let all = crates();
    for name in HOST {
        let deps = deps_of(name);
        let may_ffi = name == "zu-loader";
        assert_eq!(
            deps.iter().any(|d| d == "abi_stable" || d == "libloading"),
            may_ffi,
            "{name}: only zu-loader depends on abi_stable"
        );
        for file in sources(&all[name].0.join("src")) {
            let text = std::fs::read_to_string(&file).unwrap();
            // Code only: prose may mention what code must not use.
            let text: String = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let path = rel(&file);
            if !may_ffi {
                assert!(
                    !text.contains("ffi::") && !text.contains("abi_stable"),
                    "{path} touches zu_plugin_api::ffi or abi_stable; only zu-loader may"
                );
            }
            let opens = ["lib_header_from_path", "libloading", "dlopen", "RootModule::load"];
            if let Some(call) = opens.iter().find(|o| text.contains(*o)) {
                assert!(
                    path.ends_with("host/loader/src/library.rs"),
                    "{path} uses {call}; only host/loader/src/library.rs opens libraries"
                );
            }
        }
    }
}

#[test]
fn the_runtime_the_cli_and_every_plugin_forbid_unsafe_code() {
    // Why: unsafe code lives where the boundary needs it (the loader, the
    // plugin-api's FFI glue); everything above it is checked by the compiler.
    let all = crates();
    for (name, (dir, _)) in &all {
        let root = if name == "zu-cli" {
            dir.join("src/main.rs")
        } else {
            dir.join("src/lib.rs")
        };
        let wanted = name == "zu-runtime" || name == "zu-cli" || dir.starts_with(workspace_root().join("plugins"));
        if wanted {
            let text = std::fs::read_to_string(&root).unwrap();
            assert!(
                text.contains("#![forbid(unsafe_code)]"),
                "{} lacks #![forbid(unsafe_code)]",
                rel(&root)
            );
        }
    }
}

/// Lines of a source file before its `#[cfg(test)]` module.
fn code_lines(text: &str) -> usize {
    text.lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]") && !l.starts_with("#[cfg(all(test"))
        .count()
}

/// The size rule. Why 450: the largest single-job file here (the loop's step
/// machine) is about that size; past it a file has been two jobs every time
/// we looked, and the next feature makes it worse. A unit-test module at the
/// end of a file does not count: it is the same job. Integration test files
/// are lists of cases, so they get more room.
const MAX_SOURCE_LINES: usize = 450;
const MAX_TEST_FILE_LINES: usize = 650;

#[test]
fn no_source_file_is_over_the_size_limit() {
    let root = workspace_root();
    let mut over = Vec::new();
    for (_, (dir, _)) in crates() {
        for file in sources(&dir) {
            let text = std::fs::read_to_string(&file).unwrap();
            let is_test_file = file.starts_with(root.join("tests/tests"));
            let (n, max) = if is_test_file {
                (text.lines().count(), MAX_TEST_FILE_LINES)
            } else {
                (code_lines(&text), MAX_SOURCE_LINES)
            };
            if n > max {
                over.push(format!("{} has {n} lines (at most {max})", rel(&file)));
            }
        }
    }
    assert!(over.is_empty(), "split these by job:\n{}", over.join("\n"));
}

#[test]
fn every_module_says_its_job() {
    // Why: a reader starts at the top of a file; two or three lines of `//!`
    // say what the file is for.
    let mut missing = Vec::new();
    for (_, (dir, _)) in crates() {
        for file in sources(&dir.join("src")) {
            let text = std::fs::read_to_string(&file).unwrap();
            if !text.trim_start().starts_with("//!") {
                missing.push(rel(&file));
            }
        }
    }
    assert!(missing.is_empty(), "no //! module doc: {missing:?}");
}
