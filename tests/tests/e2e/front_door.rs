//! What a new user and a plugin author meet first, through the `zu` binary
//! as they type it: errors that name the real cause first, log readers that
//! read zu.toml, tracks that are not overwritten, runs that are easy to find,
//! pipelines and finish providers that fail early, quiet runs that are not
//! silent, `zu check` for authors, and call ids kept from the model.

use serde_json::json;

use crate::newcomer::{plugins_with, read_then_answer, stderr, workdir, zu};

#[test]
fn errors_name_the_real_cause_first_and_every_log_reader_reads_zu_toml() {
    // No plugin directory: that is the cause, before any plugin name.
    let empty = tempfile::tempdir().unwrap();
    let config = ["--sink", "sqlite", "--sink-config", r#"{"path": "x.db"}"#];
    let out = zu(empty.path(), &[&["events"][..], &config].concat());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(
            "zu: --sink-config configures sinks plugin \"sqlite\", but no plugin could load: no plugin directory"
        ),
        "{}",
        stderr(&out)
    );
    let out = zu(empty.path(), &["run", "--provider", "scripted", "--query", "q"]);
    let err = stderr(&out);
    let (cause, effect) = (err.find("no plugin directory"), err.find("no provider plugin named"));
    assert!(cause.is_some() && cause < effect, "{err}");
    // The library is refused whole: its refusal is the cause, naming the file
    // the user put there (never the verdict cache's copy).
    let junk = tempfile::tempdir().unwrap();
    std::fs::write(junk.path().join(zu_tests::lib_file("zu_plugin_sqlite")), "junk").unwrap();
    let p = junk.path().to_str().unwrap();
    let out = zu(empty.path(), &[&["events", "--plugins", p][..], &config].concat());
    let err = stderr(&out);
    assert!(
        err.contains("no plugin could load: 1 library was refused: [not_a_library]"),
        "{err}"
    );
    assert!(err.contains(p) && !err.contains("/libs/"), "{err}");

    // zu events and zu cost read zu.toml as zu run does: no --sink needed.
    let plugins = plugins_with(&[]);
    let dir = workdir(
        plugins.path(),
        read_then_answer(json!({"date": "2026-12-01"})),
        "plugins = [PLUGINS]",
    );
    assert_eq!(zu(dir.path(), &["run"]).status.code(), Some(0));
    let events = zu(dir.path(), &["events", "--json"]);
    assert_eq!(events.status.code(), Some(0), "{}", stderr(&events));
    assert!(String::from_utf8_lossy(&events.stdout).contains("harness.task.completed"));
    let cost = zu(dir.path(), &["cost", "--json"]);
    assert_eq!(cost.status.code(), Some(0), "{}", stderr(&cost));
    let summary: serde_json::Value = serde_json::from_slice(&cost.stdout).unwrap();
    assert_eq!(summary["model_calls"], 2, "{summary}");
    let none = zu(empty.path(), &["events"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(
        stderr(&none).contains("give --sink NAME --sink-config JSON, or [sink] in zu.toml"),
        "{}",
        stderr(&none)
    );

    // A relative path in zu.toml that does not exist names zu.toml.
    std::fs::write(
        dir.path().join("zu.toml"),
        "plugins = [\"plugins-not-here\"]\n[sink]\nname = \"jsonl\"\n",
    )
    .unwrap();
    for cmd in [
        &["events"][..],
        &["cost"],
        &["run", "--provider", "scripted", "--query", "q"],
        &["plugins"],
    ] {
        let out = zu(dir.path(), cmd);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("zu.toml: plugins: plugins-not-here does not exist"),
            "{cmd:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn a_track_recorded_for_another_query_is_kept_unless_the_user_says_to_replace_it() {
    let plugins = plugins_with(&[]);
    let dir = workdir(plugins.path(), read_then_answer(json!({"date": "2026-12-01"})), "plugins = [PLUGINS]");
    let out = zu(dir.path(), &["run", "--track", "t.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let recorded = std::fs::read(dir.path().join("t.json")).unwrap();
    let other = ["run", "--track", "t.json", "--query", "Where is the launch?"];
    let out = zu(dir.path(), &other);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for says in [
        "was recorded for another task (\"When is the launch?\"); not replaying it, and it is kept",
        "not recording into track t.json: it holds the track of another task",
        "--track-overwrite",
    ] {
        assert!(stderr(&out).contains(says), "{says:?} in {}", stderr(&out));
    }
    assert_eq!(std::fs::read(dir.path().join("t.json")).unwrap(), recorded, "kept");
    let out = zu(dir.path(), &[&other[..], &["--track-overwrite"]].concat());
    assert!(stderr(&out).contains("replaces it if the run succeeds"), "{}", stderr(&out));
    let track: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("t.json")).unwrap()).unwrap();
    assert_eq!(track["task"], "Where is the launch?", "replaced when told: {track}");
}
