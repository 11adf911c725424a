//! Every load failure code, produced by a real file and asserted by code, and
//! the per-plugin verdicts around them.

use std::os::unix::fs::PermissionsExt;

use zu_loader::Loader;
use zu_plugin_api::version::Kind;
use zu_runtime::{LoadError, Registry};
use zu_tests::{artifacts, lib_file, plugin_dir};

use crate::{codes, failures_of, load};

#[test]
fn real_plugins_load_with_their_declarations() {
    let a = artifacts();
    let dir = plugin_dir(&[a.lib("zu_plugin_scripted"), a.lib("zu_plugin_checks")]);
    let reg = load(dir.path());
    assert!(reg.failures().is_empty(), "{:?}", codes(&reg));
    assert_eq!(reg.names(Kind::Providers), ["scripted"]);
    assert_eq!(reg.names(Kind::Detectors), ["empty", "error"]);
    let info = &reg.get(Kind::Detectors, "empty").unwrap().info;
    assert_eq!(info.interface_version, "1.0.0");
    assert_eq!(
        info.library.as_deref(),
        Some(dir.path().join(lib_file("zu_plugin_checks")).as_path())
    );
}

#[test]
fn garbage_named_like_a_library_is_not_a_library() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(lib_file("garbage")),
        b"\x7fELF but not really, just bytes",
    )
    .unwrap();
    let reg = load(dir.path());
    let f = failures_of(&reg, &lib_file("garbage"));
    assert_eq!(f.len(), 1);
    assert!(matches!(f[0].error, LoadError::NotALibrary { .. }), "{:?}", f[0].error);
    assert_eq!((f[0].kind.as_deref(), f[0].name.as_deref()), (None, None));
}

#[test]
fn a_shared_library_without_a_root_module_is_not_a_plugin() {
    let dir = plugin_dir(&[artifacts().fixture("not_zu")]);
    assert_eq!(codes(&load(dir.path())), ["not_a_plugin"]);
}

#[test]
fn another_applications_abi_stable_module_is_an_abi_mismatch() {
    let dir = plugin_dir(&[artifacts().fixture("foreign")]);
    let reg = load(dir.path());
    assert_eq!(codes(&reg), ["abi_mismatch"]);
    let msg = reg.failures()[0].error.to_string();
    assert!(msg.contains("expected ZuRootModule, found ForeignMod"), "{msg}");
    assert!(msg.lines().count() <= 2 && msg.len() < 400, "short message: {msg}");
}

#[test]
fn compatible_detector_loads_beside_a_tool_from_a_future_interface() {
    let dir = plugin_dir(&[artifacts().fixture("mixed")]);
    let reg = load(dir.path());
    assert_eq!(reg.names(Kind::Detectors), ["always_warns"]);
    assert!(reg.names(Kind::Tools).is_empty());
    assert_eq!(codes(&reg), ["incompatible_interface"]);
    let f = &reg.failures()[0];
    assert_eq!(
        (f.kind.as_deref(), f.name.as_deref()),
        (Some("tools"), Some("future_tool"))
    );
    match &f.error {
        LoadError::IncompatibleInterface {
            plugin_version,
            host_version,
            ..
        } => {
            assert_eq!((plugin_version.as_str(), host_version.as_str()), ("2.0.0", "1.0.0"));
        }
        other => panic!("{other:?}"),
    }
    let msg = f.error.to_string();
    assert!(
        msg.contains("2.0.0") && msg.contains("1.0.0") && msg.contains("rebuild"),
        "{msg}"
    );
}

#[test]
fn unknown_kind_and_unparsable_version_are_refused_per_plugin() {
    let dir = plugin_dir(&[artifacts().fixture("bad_decls")]);
    let reg = load(dir.path());
    assert_eq!(reg.names(Kind::Tools), ["fine"]);
    assert_eq!(codes(&reg), ["unknown_kind", "invalid_version"]);
    assert_eq!(reg.failures()[0].kind.as_deref(), Some("gadgets"));
    assert_eq!(reg.failures()[1].name.as_deref(), Some("garbled"));
    assert!(reg.failures()[1].error.to_string().contains("\"one.two\""));
}

#[test]
fn a_compatible_version_with_a_different_layout_is_refused_and_never_constructed() {
    let dir = plugin_dir(&[artifacts().fixture("skewed")]);
    let marker = dir.path().join("constructed");
    // The fixture's constructor would create this file; the host must not call it.
    let out = std::process::Command::new(&artifacts().zu)
        .args(["plugins", "--json", "--plugins"])
        .arg(dir.path())
        .env("ZU_FIXTURE_MARKER", &marker)
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["failures"][0]["error"]["code"], "layout_mismatch");
    assert_eq!(report["failures"][0]["name"], "skewed");
    let msg = report["failures"][0]["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("expected") && msg.contains("found") && msg.len() < 400,
        "{msg}"
    );
    assert!(!marker.exists(), "the skewed plugin's constructor was called");
    assert_eq!(report["plugins"].as_array().unwrap().len(), 0);
}

#[test]
fn constructors_that_panic_or_fail_are_recorded_and_config_reaches_them() {
    let dir = plugin_dir(&[artifacts().fixture("constructors")]);
    let reg = load(dir.path());
    assert_eq!(codes(&reg), ["constructor_panicked", "constructor_failed"]);
    assert!(reg.failures()[0].error.to_string().contains("constructor exploded"));
    assert!(reg.names(Kind::Tools).is_empty());

    let mut reg = Registry::new();
    let mut loader = Loader::new();
    loader.set_config(Kind::Tools, "ctor_fails", serde_json::json!({"ok": true}));
    loader.load_dir(&mut reg, dir.path()).unwrap();
    assert_eq!(codes(&reg), ["constructor_panicked"]);
    assert_eq!(reg.names(Kind::Tools), ["ctor_fails"]);
}

#[test]
fn two_libraries_with_the_same_tool_name_keep_the_first_and_refuse_the_second() {
    let a = artifacts();
    let dir = plugin_dir(&[a.fixture("dup_a"), a.fixture("dup_b")]);
    let reg = load(dir.path());
    assert_eq!(codes(&reg), ["name_taken"]);
    let kept = reg.get(Kind::Tools, "dup").unwrap();
    assert!(kept.info.library.as_ref().unwrap().ends_with(lib_file("fixture_dup_a")));
    let f = &reg.failures()[0];
    assert!(f.library.as_ref().unwrap().ends_with(lib_file("fixture_dup_b")));
    assert!(
        f.error.to_string().contains(&lib_file("fixture_dup_a")),
        "names the first: {}",
        f.error
    );
}

#[test]
fn a_world_writable_file_or_directory_is_refused() {
    let dir = plugin_dir(&[artifacts().lib("zu_plugin_checks")]);
    let file = dir.path().join(lib_file("zu_plugin_checks"));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let reg = load(dir.path());
    assert_eq!(codes(&reg), ["insecure_permissions"]);
    assert!(reg.names(Kind::Detectors).is_empty());

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let reg = load(dir.path());
    assert_eq!(codes(&reg), ["insecure_permissions"]);
    assert_eq!(reg.failures()[0].library.as_deref(), Some(dir.path()));
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(load(dir.path()).failures().is_empty());
}

#[test]
fn a_library_built_with_panic_abort_is_refused() {
    let dir = plugin_dir(&[artifacts().aborting()]);
    let reg = load(dir.path());
    assert_eq!(codes(&reg), ["aborts_on_panic"]);
    assert!(reg.failures()[0].error.to_string().contains("panic = \"unwind\""));
}

#[test]
fn the_same_file_through_a_symlink_or_a_second_directory_loads_once() {
    let a = artifacts();
    let first = plugin_dir(&[a.lib("zu_plugin_checks")]);
    let second = tempfile::tempdir().unwrap();
    let real = first.path().join(lib_file("zu_plugin_checks"));
    std::os::unix::fs::symlink(&real, second.path().join(lib_file("again"))).unwrap();
    std::os::unix::fs::symlink(&real, first.path().join(lib_file("zz_alias"))).unwrap();
    let mut reg = Registry::new();
    Loader::new()
        .load_dirs(&mut reg, &[first.path().to_owned(), second.path().to_owned()])
        .unwrap();
    assert!(reg.failures().is_empty(), "{:?}", codes(&reg));
    assert_eq!(reg.names(Kind::Detectors), ["empty", "error"]);
}

#[test]
fn scan_order_is_sorted_so_the_winner_of_a_name_is_deterministic() {
    let a = artifacts();
    let dir = tempfile::tempdir().unwrap();
    // Copy in reverse so creation order differs from name order.
    std::fs::copy(a.fixture("dup_b"), dir.path().join(lib_file("b_dup"))).unwrap();
    std::fs::copy(a.fixture("dup_a"), dir.path().join(lib_file("a_dup"))).unwrap();
    let reg = load(dir.path());
    assert!(reg
        .get(Kind::Tools, "dup")
        .unwrap()
        .info
        .library
        .as_ref()
        .unwrap()
        .ends_with(lib_file("a_dup")));
}
