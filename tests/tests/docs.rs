//! The docs cannot drift: every Rust example of README.md and docs/ builds
//! (and its tests pass), every shell example runs as printed, the examples
//! that cannot run here say why, and the zu.toml reference, the event
//! reference, the refusal codes and the exit codes match the code.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use zu_tests::{artifacts, plugin_dir, target_dir, workspace_root};

/// One fenced block: its file and line, its info string's words, its text.
struct Block {
    file: String,
    line: usize,
    info: Vec<String>,
    text: String,
}

impl Block {
    fn lang(&self) -> &str {
        self.info.first().map_or("", |s| s.as_str())
    }
    fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// README.md and every chapter of docs/.
fn pages() -> Vec<(String, String)> {
    let root = workspace_root();
    let mut files = vec![root.join("README.md")];
    let mut chapters: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    chapters.sort();
    files.extend(chapters);
    files
        .into_iter()
        .map(|f| {
            let name = f.strip_prefix(&root).unwrap().display().to_string();
            (name, std::fs::read_to_string(&f).unwrap())
        })
        .collect()
}

fn blocks() -> Vec<Block> {
    let mut out = Vec::new();
    for (file, text) in pages() {
        let mut open: Option<Block> = None;
        for (i, line) in text.lines().enumerate() {
            match (&mut open, line.strip_prefix("```")) {
                (None, Some(info)) => {
                    open = Some(Block {
                        file: file.clone(),
                        line: i + 1,
                        info: info
                            .split([',', ' '])
                            .filter(|w| !w.is_empty())
                            .map(String::from)
                            .collect(),
                        text: String::new(),
                    })
                }
                (Some(_), Some("")) => out.push(open.take().unwrap()),
                (Some(b), _) => {
                    b.text.push_str(line);
                    b.text.push('\n');
                }
                (None, None) => {}
            }
        }
        assert!(open.is_none(), "{file}: a code block is never closed");
    }
    out
}

/// What keeps a shell example from running in a test, and what it must
/// mention to deserve the tag.
const TAGS: [(&str, &[&str]); 4] = [
    ("needs-api-key", &["_API_KEY", "openai", "anthropic"]),
    ("needs-network", &["http", "npx", "ollama", "11434"]),
    ("needs-postgres", &["postgres"]),
    ("long-running", &["zu serve", "--follow", "scripts/"]),
];

#[test]
fn every_rust_example_builds_as_printed_and_its_tests_pass() {
    let rust: Vec<Block> = blocks().into_iter().filter(|b| b.lang() == "rust").collect();
    assert!(
        rust.len() >= 5,
        "the tool, detector, validator and testing examples at least"
    );
    for b in &rust {
        assert!(
            b.info.len() == 1,
            "{}: a Rust example is compiled as printed; `{}` is not allowed",
            b.at(),
            b.info.join(",")
        );
    }
    artifacts(); // the shared target directory already holds zu-plugin-api
    let dir = tempfile::tempdir().unwrap();
    let api = workspace_root().join("plugin-api");
    let names: Vec<String> = (0..rust.len()).map(|i| format!("docs_example_{i}")).collect();
    let members: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    std::fs::write(
        dir.path().join("Cargo.toml"),
        format!("[workspace]\nresolver = \"2\"\nmembers = [{}]\n", members.join(", ")),
    )
    .unwrap();
    std::fs::copy(workspace_root().join("Cargo.lock"), dir.path().join("Cargo.lock")).unwrap();
    for (name, b) in names.iter().zip(&rust) {
        let root = dir.path().join(name);
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(
            root.join("Cargo.toml"),
            format!(
                "[package]\nname = {name:?}\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\", \"rlib\"]\n\n\
                 [dependencies]\nzu-plugin-api = {{ path = {:?} }}\n",
                api.to_str().unwrap()
            ),
        )
        .unwrap();
        std::fs::write(root.join("src/lib.rs"), format!("// {}\n{}", b.at(), b.text)).unwrap();
    }
    let out = Command::new(env!("CARGO"))
        .args(["test", "--offline", "--target-dir"])
        .arg(target_dir())
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the docs' Rust examples:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ran = String::from_utf8_lossy(&out.stdout);
    assert!(
        ran.contains("keeps_notes_in_order_up_to_its_limit"),
        "the testing example's tests ran: {ran}"
    );
}

/// A plugin directory with the shipped plugins, as `scripts/demo.sh` makes.
fn shipped_plugins() -> tempfile::TempDir {
    let a = artifacts();
    let libs: Vec<PathBuf> = [
        "scripted",
        "checks",
        "files",
        "http",
        "validators",
        "sqlite",
        "jsonl",
        "postgres",
        "models",
    ]
    .iter()
    .map(|p| a.lib(&format!("zu_plugin_{p}")))
    .collect();
    plugin_dir(&libs)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Runs `script` with bash in a fresh copy of examples/demo, `zu` on PATH
/// and the shipped plugins on ZU_PLUGIN_PATH.
fn run_example(script: &str, plugins: &Path) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("demo");
    copy_dir(&workspace_root().join("examples/demo"), &work);
    let _ = std::fs::remove_file(work.join("zu.db"));
    let zu_dir = artifacts().zu.parent().unwrap().to_owned();
    let path = format!("{}:{}", zu_dir.display(), std::env::var("PATH").unwrap_or_default());
    Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(&work)
        .env("PATH", path)
        .env("ZU_PLUGIN_PATH", plugins)
        .env("ZU_CACHE_DIR", dir.path().join("cache"))
        .env("HOME", dir.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

#[test]
fn every_shell_example_runs_as_printed_or_says_why_it_cannot() {
    let plugins = shipped_plugins();
    let mut ran = 0;
    for b in blocks().into_iter().filter(|b| b.lang() == "sh") {
        let tags = &b.info[1..];
        assert!(tags.len() <= 1, "{}: one tag at most, not {tags:?}", b.at());
        if let Some(tag) = tags.first() {
            let (_, mentions) = TAGS
                .iter()
                .find(|(t, _)| t == tag)
                .unwrap_or_else(|| panic!("{}: unknown tag {tag:?}; the tags: {:?}", b.at(), TAGS.map(|t| t.0)));
            assert!(
                mentions.iter().any(|m| b.text.contains(m)),
                "{}: tagged {tag} but mentions none of {mentions:?}: {}",
                b.at(),
                b.text
            );
            continue;
        }
        for (tag, mentions) in TAGS {
            if let Some(m) = mentions.iter().find(|m| b.text.contains(**m) && tag != "needs-network") {
                panic!("{}: mentions {m:?}: tag it {tag} or make it run here", b.at());
            }
        }
        let out = run_example(&b.text, plugins.path());
        assert!(
            out.status.success(),
            "{}: the example failed ({:?}):\n{}\nstdout:\n{}\nstderr:\n{}",
            b.at(),
            out.status.code(),
            b.text,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ran += 1;
    }
    assert!(ran >= 4, "the guide's runnable examples ran ({ran})");
}

/// The keys serde expects where an unknown one was found (from `zu`'s
/// error for a zu.toml holding `probe` under `table`).
fn keys_of(table: &str, dir: &Path) -> Vec<String> {
    let text = match table {
        "" => "zu_docs_probe = 1\n".to_owned(),
        t => format!("[{t}]\nzu_docs_probe = 1\n"),
    };
    std::fs::write(dir.join("probe.toml"), text).unwrap();
    let out = Command::new(&artifacts().zu)
        .args(["events", "--config-file", "probe.toml"])
        .current_dir(dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let expected = err
        .split("expected one of ")
        .nth(1)
        .or_else(|| err.split("expected ").nth(1))
        .unwrap_or_else(|| panic!("[{table}]: no list of keys in {err}"));
    expected.split('`').skip(1).step_by(2).map(String::from).collect()
}

#[test]
fn the_zu_toml_reference_names_every_key_the_code_reads() {
    let dir = tempfile::tempdir().unwrap();
    let reference = std::fs::read_to_string(workspace_root().join("docs/config.md")).unwrap();
    let tables = [
        "",
        "task",
        "task.budget",
        "run",
        "serve",
        "provider",
        "sink",
        "mcp.servers.x",
        "grants.tools.x",
    ];
    // ([plugins] is a list or a table, an untagged form serde names no keys for.)
    for table in tables {
        let keys = keys_of(table, dir.path());
        assert!(!keys.is_empty(), "[{table}]");
        for key in keys {
            let named = [
                format!("`{key}`"),
                format!("`{key} ="),
                format!("[{key}]"),
                format!("[{key}."),
                format!("[{table}.{key}]"),
                format!("[{table}] {key}"),
            ];
            assert!(
                named.iter().any(|n| reference.contains(n.as_str())),
                "docs/config.md does not name `{key}` of [{table}]"
            );
        }
    }
    // Every zu.toml example in the docs parses as zu reads it.
    // (Not Cargo.toml, a price file or a pipeline file.)
    let other = |t: &str| ["[package]", "[models.", "[[phase]]"].iter().any(|m| t.contains(m));
    for b in blocks().into_iter().filter(|b| b.lang() == "toml" && !other(&b.text)) {
        std::fs::write(dir.path().join("example.toml"), &b.text).unwrap();
        let out = Command::new(&artifacts().zu)
            .args(["events", "--config-file", "example.toml", "--sink", "memory"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("a memory log lives only inside") || err.contains("does not exist"),
            "{}: zu does not read it: {err}",
            b.at()
        );
    }
}

#[test]
fn the_event_reference_lists_every_event_type_and_no_other() {
    use zu_plugin_api::events::{DATA_TYPES, HARNESS_TYPES};
    let logs = std::fs::read_to_string(workspace_root().join("docs/logs.md")).unwrap();
    let known: Vec<&str> = HARNESS_TYPES.iter().chain(DATA_TYPES.iter()).copied().collect();
    for ty in &known {
        assert!(logs.contains(&format!("`{ty}`")), "docs/logs.md does not describe {ty}");
    }
    for (file, text) in pages() {
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_')) {
            let word = word.trim_end_matches('.');
            let named = (word.starts_with("harness.") || word.starts_with("data.")) && word.matches('.').count() >= 2;
            if named && !word.ends_with(".md") && !word.contains("example") {
                assert!(
                    known.contains(&word),
                    "{file} names an event type zu does not record: {word}"
                );
            }
        }
    }
}

#[test]
fn the_refusal_codes_and_exit_codes_in_help_and_docs_come_from_the_code() {
    let help = Command::new(&artifacts().zu).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let plugins_doc = std::fs::read_to_string(workspace_root().join("docs/plugins.md")).unwrap();
    for code in zu_runtime::LoadError::CODES {
        assert!(help.contains(code), "zu --help does not list {code}");
        assert!(
            plugins_doc.contains(&format!("`{code}`")),
            "docs/plugins.md does not explain {code}"
        );
    }
    assert_eq!(help.matches("Exit codes:").count(), 1, "{help}");
    let run_help = Command::new(&artifacts().zu).args(["run", "--help"]).output().unwrap();
    let run_help = String::from_utf8_lossy(&run_help.stdout).into_owned();
    let table = help.split("Exit codes:\n").nth(1).unwrap();
    assert!(
        run_help.contains(table.trim_end()),
        "zu run --help shows the same table"
    );
    let running = std::fs::read_to_string(workspace_root().join("docs/running.md")).unwrap();
    let section = running
        .split("## Exit codes")
        .nth(1)
        .expect("docs/running.md has an Exit codes section");
    for line in table.lines().filter(|l| !l.trim().is_empty()) {
        let code = line.split_whitespace().next().unwrap();
        assert!(
            section.contains(&format!("`{code}`")) || section.contains(&format!("| {code} ")),
            "docs/running.md's exit codes lack {code}"
        );
    }
}

#[test]
fn the_readme_is_a_front_door_and_the_guide_has_every_chapter() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    assert!(
        readme.lines().count() <= 150,
        "README.md is {} lines",
        readme.lines().count()
    );
    for chapter in [
        "running",
        "config",
        "plugins",
        "sandbox",
        "logs",
        "serve",
        "authoring",
        "embedding",
    ] {
        let link = format!("docs/{chapter}.md");
        assert!(readme.contains(&format!("({link})")), "README links {link}");
        assert!(workspace_root().join(&link).is_file(), "{link}");
    }
    assert!(workspace_root().join("bench/RESULTS.md").is_file());
}
