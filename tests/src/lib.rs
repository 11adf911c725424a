//! Test support: builds the `zu` binary, the real plugins and the fixture
//! libraries of `fixtures/` with their own cargo invocations (so a skewed or
//! `panic = "abort"` fixture never leaks its settings into the main build),
//! once per test process, and lays them out in temporary plugin directories.

pub mod http_stub;
pub mod mcp;
pub mod postgres;
pub mod webdriver;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root.
/// The Python interpreter itself (not a shim such as pyenv's, which runs
/// helper programs a sandboxed MCP server may not execute).
pub fn python3() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 is installed");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// Where every library the tests load is built.
pub fn target_dir() -> PathBuf {
    workspace_root().join("target").join("zu-test-plugins")
}

/// The built artifacts.
pub struct Artifacts {
    /// The `zu` binary.
    pub zu: PathBuf,
    debug: PathBuf,
    abort: PathBuf,
    c: PathBuf,
}

impl Artifacts {
    /// The shared library of a crate (by crate name with `_`) in the dev profile.
    pub fn lib(&self, crate_name: &str) -> PathBuf {
        self.debug.join(lib_file(crate_name))
    }

    /// The `aborting` fixture, built with `panic = "abort"`.
    pub fn aborting(&self) -> PathBuf {
        self.abort.join(lib_file("fixture_aborting"))
    }

    /// The fixture library `fixture_<name>`.
    pub fn fixture(&self, name: &str) -> PathBuf {
        self.lib(&format!("fixture_{name}"))
    }

    /// The C fixture built from `fixtures/c/<name>.c`.
    pub fn c_fixture(&self, name: &str) -> PathBuf {
        self.c.join(lib_file(name))
    }
}

/// `lib<name>.so` / `lib<name>.dylib` / `<name>.dll`.
pub fn lib_file(crate_name: &str) -> String {
    format!(
        "{}{crate_name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

fn cargo(args: &[&str]) {
    cargo_into(args, &target_dir());
}

fn cargo_into(args: &[&str], target: &Path) {
    let status = Command::new(env!("CARGO"))
        .args(args)
        .arg("--target-dir")
        .arg(target)
        .current_dir(workspace_root())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo {} failed", args.join(" "));
}

/// Builds each `fixtures/c/*.c` into a shared library with `gcc`.
fn build_c_fixtures() -> PathBuf {
    let out = target_dir().join("c");
    std::fs::create_dir_all(&out).expect("a directory for the C fixtures");
    let sources = workspace_root().join("tests/fixtures/c");
    for entry in std::fs::read_dir(&sources).expect("tests/fixtures/c") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_none_or(|e| e != "c") {
            continue;
        }
        let name = path.file_stem().expect("a file name").to_string_lossy().into_owned();
        let status = Command::new("gcc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(out.join(lib_file(&name)))
            .arg(&path)
            .status()
            .expect("gcc runs (the C fixtures need a C compiler)");
        assert!(status.success(), "gcc failed on {}", path.display());
    }
    out
}

/// Builds everything once per process and returns where it is.
pub fn artifacts() -> &'static Artifacts {
    static BUILT: OnceLock<Artifacts> = OnceLock::new();
    BUILT.get_or_init(|| {
        eprintln!(
            "zu-tests: building the host, the plugins and the fixture libraries into {}",
            target_dir().display()
        );
        cargo(&[
            "build",
            "-p",
            "zu-cli",
            "-p",
            "zu-plugin-scripted",
            "-p",
            "zu-plugin-checks",
            "-p",
            "zu-plugin-sqlite",
            "-p",
            "zu-plugin-jsonl",
            "-p",
            "zu-plugin-files",
            "-p",
            "zu-plugin-http",
            "-p",
            "zu-plugin-validators",
            "-p",
            "zu-plugin-noop",
            "-p",
            "zu-plugin-postgres",
            "-p",
            "zu-plugin-models",
        ]);
        let fixtures = workspace_root().join("tests/fixtures/Cargo.toml");
        let fixtures = fixtures.to_str().expect("a UTF-8 path");
        // Three invocations: the skewed fixture enables a feature of
        // zu-plugin-api that must not unify into the others, and the aborting
        // one needs its own profile.
        cargo(&[
            "build",
            "--manifest-path",
            fixtures,
            "--workspace",
            "--exclude",
            "fixture-skewed",
            "--exclude",
            "fixture-aborting",
        ]);
        cargo(&["build", "--manifest-path", fixtures, "-p", "fixture-skewed"]);
        cargo(&[
            "build",
            "--manifest-path",
            fixtures,
            "-p",
            "fixture-aborting",
            "--profile",
            "abort",
        ]);
        let c = build_c_fixtures();
        let debug = target_dir().join("debug");
        Artifacts {
            zu: debug.join(format!("zu{}", std::env::consts::EXE_SUFFIX)),
            abort: target_dir().join("abort"),
            debug,
            c,
        }
    })
}

/// The plugins of zu-plugin-api 1.0.0 (`compat/v1.0.0`: the API and the
/// `scripted` and `files` plugins frozen at commit 2673a19), built once per
/// process with that commit's lock file into `target/compat`; returns where
/// the libraries are (`lib_file("zu_plugin_scripted")`, ...).
pub fn compat_v1() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target = workspace_root().join("target").join("compat");
        eprintln!(
            "zu-tests: building the plugins of zu-plugin-api 1.0.0 into {}",
            target.display()
        );
        let manifest = workspace_root().join("tests/compat/v1.0.0/Cargo.toml");
        let manifest = manifest.to_str().expect("a UTF-8 path");
        // --locked: the versions are those of the commit; a lock file cargo
        // would have to change is an error, not a silent update.
        cargo_into(
            &["build", "--locked", "--manifest-path", manifest, "--workspace"],
            &target,
        );
        target.join("debug")
    })
}

/// A fresh plugin directory holding copies of `libs` (under their own names).
pub fn plugin_dir(libs: &[PathBuf]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temp dir");
    for lib in libs {
        let name = lib.file_name().expect("a file name");
        std::fs::copy(lib, dir.path().join(name)).unwrap_or_else(|e| panic!("copy {}: {e}", lib.display()));
    }
    dir
}
