//! What a new user and a plugin author meet first, through the `zu` binary
//! as they type it: errors that name the real cause first, log readers that
//! read zu.toml, tracks that are not overwritten, runs that are easy to find,
//! pipelines and finish providers that fail early, quiet runs that are not
//! silent, `zu check` for authors, and call ids kept from the model.

use serde_json::json;

use crate::mcp;
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
    let dir = workdir(
        plugins.path(),
        read_then_answer(json!({"date": "2026-12-01"})),
        "plugins = [PLUGINS]",
    );
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
    assert!(
        stderr(&out).contains("replaces it if the run succeeds"),
        "{}",
        stderr(&out)
    );
    let track: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("t.json")).unwrap()).unwrap();
    assert_eq!(track["task"], "Where is the launch?", "replaced when told: {track}");
}

#[test]
fn runs_are_easy_to_find_and_quiet_runs_are_not_silent() {
    let plugins = plugins_with(&[]);
    let dir = workdir(
        plugins.path(),
        read_then_answer(json!({"date": "2026-12-01"})),
        "plugins = [PLUGINS]",
    );
    let first = zu(dir.path(), &["run"]);
    let err = stderr(&first);
    let task = crate::newcomer::log_of(dir.path())[0]["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (started, ended) = (
        err.find(&format!("task {task} started")),
        err.find(&format!("task {task} ended")),
    );
    assert!(started.is_some() && started < ended, "the id comes first: {err}");
    let count = |err: &str| err.split("; ").nth(1).map(|s| s.to_owned());
    let second = zu(dir.path(), &["run"]);
    assert_eq!(
        count(&err),
        count(&stderr(&second)),
        "this run's events, not the file's: {err}"
    );
    assert!(err.contains("events of it in the jsonl log"), "{err}");

    // A prefix of 8 characters finds a task; a shorter one or one on no run says so.
    let by_prefix = zu(dir.path(), &["events", "--json", "--task", &task[..8]]);
    assert_eq!(by_prefix.status.code(), Some(0), "{}", stderr(&by_prefix));
    let lines = String::from_utf8_lossy(&by_prefix.stdout).into_owned();
    assert!(
        lines.lines().count() > 3 && lines.lines().all(|l| l.contains(&task)),
        "{lines}"
    );
    assert_eq!(zu(dir.path(), &["events", "--task", &task[..7]]).status.code(), Some(2));
    let nowhere = zu(dir.path(), &["cost", "--task", "ffffffff"]);
    assert_eq!(nowhere.status.code(), Some(1));
    assert!(
        stderr(&nowhere).contains("no task on this log begins with it"),
        "{}",
        stderr(&nowhere)
    );
    let absent = zu(dir.path(), &["cost", "--task", "00000000-0000-4000-8000-000000000000"]);
    assert_eq!(absent.status.code(), Some(1));
    assert!(stderr(&absent).contains("no such run"), "{}", stderr(&absent));
    let typo = zu(dir.path(), &["events", "--type", "harness.tool.invokd"]);
    assert_eq!(typo.status.code(), Some(2));
    assert!(
        stderr(&typo).contains("did you mean harness.tool.invoked?"),
        "{}",
        stderr(&typo)
    );

    // RUST_LOG=zu=debug logs each event of the run with its fields.
    let debug = crate::newcomer::zu_env(dir.path(), &["run"], &[("RUST_LOG", "zu=debug")]);
    let log = stderr(&debug);
    assert!(
        log.contains("zu::run")
            && log.contains("event=\"harness.tool.invoked\"")
            && log.contains("tool=Some(\"file_read\")"),
        "{log}"
    );
    // On a terminal (a pseudo-terminal, through script(1)), a progress line.
    let slow = json!({"responses": [{"text": "{\"date\": \"2026-12-01\"}", "delay_ms": 700}]});
    std::fs::write(dir.path().join("slow.json"), slow.to_string()).unwrap();
    let zu_bin = zu_tests::artifacts().zu.display().to_string();
    let shown = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("{zu_bin} run --provider-config @slow.json"),
            "/dev/null",
        ])
        .current_dir(dir.path())
        .env_remove("ZU_PLUGIN_PATH")
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(screen.contains("step 1 · waiting for the model ·"), "{screen}");
}

#[test]
fn the_scripted_provider_resumes_at_the_response_the_log_implies() {
    let plugins = plugins_with(&[]);
    let script = json!({"responses": [
        {"tool_calls": [{"name": "file_read", "args": {"path": "notes.md"}}]},
        {"text": "{\"date\": \"2026-12-01\"}", "delay_ms": 20000}
    ]});
    let dir = workdir(plugins.path(), script, "plugins = [PLUGINS]");
    // Killed while the model "thinks" about its second answer.
    crate::host_runs::kill_at_turn(dir.path(), &["run"], 2);
    let task = crate::newcomer::log_of(dir.path())[0]["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let fast = json!({"responses": [
        {"tool_calls": [{"name": "file_read", "args": {"path": "notes.md"}}]},
        {"text": "{\"date\": \"2026-12-01\"}"}
    ]});
    std::fs::write(dir.path().join("script.json"), fast.to_string()).unwrap();
    let out = zu(dir.path(), &["run", "--resume", &task]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let result = crate::newcomer::result_of(&out);
    assert_eq!(result["status"], "success", "{result}");
    assert_eq!(result["value"]["date"], "2026-12-01", "{result}");
    // The resumed run's first model call got the second response: no tool
    // call was asked for (and made) again.
    let invoked = crate::newcomer::log_of(dir.path())
        .iter()
        .filter(|e| e["type"] == "harness.tool.invoked")
        .count();
    assert_eq!(invoked, 1);
}

#[test]
fn pipelines_and_providers_that_take_over_later_fail_early() {
    let plugins = plugins_with(&[]);
    let script = json!({"responses": [{"text": "{\"file\": \"notes.md\"}"}, {"text": "{\"date\": \"2026-12-01\"}"}]});
    let dir = workdir(plugins.path(), script, "plugins = [PLUGINS]");
    let write = |text: &str| std::fs::write(dir.path().join("p.toml"), text).unwrap();
    // Settings without a [task] (the pipeline file gives the tasks).
    let settings = std::fs::read_to_string(dir.path().join("zu.toml")).unwrap();
    let settings = settings.replace("[task]\nquery = \"When is the launch?\"\n", "");
    std::fs::write(dir.path().join("zu.toml"), settings).unwrap();
    // At run time: the key is not in the previous value.
    write("[[phase]]\nname = \"find\"\nquery = \"Which file?\"\n[[phase]]\nname = \"read\"\nquery = \"Read {previous.path}\"\n");
    let out = zu(dir.path(), &["pipeline", "p.toml", "--validators", ""]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["failed_phase"], "read", "{report}");
    let reason = report["phases"][1]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("phase \"read\" uses {previous.path}") && reason.contains("it has: file"),
        "{report}"
    );
    // Before anything runs: the first phase has no previous value, and a key
    // the previous phase's schema does not name.
    write("[[phase]]\nname = \"find\"\nquery = \"Use {previous.x}\"\n");
    let out = zu(dir.path(), &["pipeline", "p.toml", "--validators", ""]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("phase \"find\" is the first"), "{}", stderr(&out));
    write(
        "[[phase]]\nname = \"find\"\nquery = \"Which file?\"\noutput_schema = { type = \"object\", properties = { file = { type = \"string\" } } }\n\
         [[phase]]\nname = \"read\"\nquery = \"Read {previous.path}\"\n",
    );
    let out = zu(dir.path(), &["pipeline", "p.toml", "--validators", ""]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("phase \"read\" uses {previous.path}, but phase \"find\"'s output_schema has no such property (it has: file)"),
        "{}",
        stderr(&out)
    );
    // A finish or tier provider with no config is refused before the run.
    let before = crate::newcomer::log_of(dir.path()).len();
    for flags in [
        &["--finish-provider", "openai"][..],
        &["--tier-provider", "2=anthropic"],
    ] {
        let models = plugins_with(&[zu_tests::artifacts().lib("zu_plugin_models")]);
        let p = models.path().to_str().unwrap();
        let out = zu(
            dir.path(),
            &[&["run", "--plugins", p, "--query", "q"][..], flags].concat(),
        );
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("has no config: give it one with --config providers."),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(crate::newcomer::log_of(dir.path()).len(), before, "nothing ran");
}

#[test]
fn zu_check_speaks_to_a_plugin_author_and_a_panic_is_an_event() {
    let a = zu_tests::artifacts();
    let dir = tempfile::tempdir().unwrap();
    // Only an .rlib (a crate built without crate-type = ["cdylib"]).
    std::fs::write(dir.path().join("libmine.rlib"), b"!<arch>\n").unwrap();
    for given in ["libmine.rlib", &zu_tests::lib_file("mine")] {
        let out = zu(dir.path(), &["check", given]);
        assert_eq!(out.status.code(), Some(1), "{given}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("not a shared library zu can load: build the crate as a cdylib"),
            "{}",
            stderr(&out)
        );
    }
    // What the model will see of each tool, and a warning for one without a description.
    let tool = a.lib("readme_tool");
    let out = zu(dir.path(), &["check", tool.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("word_count: Counts the words of `text`."), "{shown}");
    assert!(shown.contains("parameters: {\"properties\":{\"text\""), "{shown}");
    assert!(!stderr(&out).contains("no description"), "{}", stderr(&out));
    let hostile = a.fixture("hostile");
    let out = zu(dir.path(), &["check", hostile.to_str().unwrap()]);
    assert!(
        stderr(&out).contains("tool attempt has no description"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("/libs/") && !String::from_utf8_lossy(&out.stdout).contains("/libs/"),
        "no cache path"
    );

    // A panic in a tool call is an event of its own.
    let plugins = plugins_with(&[a.fixture("panicky")]);
    let script = json!({"responses": [{"tool_calls": [{"name": "panics_on_call", "args": {}}]}, {"text": "{}"}]});
    let work = workdir(plugins.path(), script, "plugins = [PLUGINS]");
    let out = zu(work.path(), &["run", "--validators", ""]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let panicked: Vec<serde_json::Value> = crate::newcomer::log_of(work.path())
        .into_iter()
        .filter(|e| e["type"] == "harness.plugin.panicked")
        .map(|e| e["payload"].clone())
        .collect();
    assert_eq!(
        panicked,
        vec![json!({"plugin": "panics_on_call", "kind": "tool", "message": "tool call exploded"})]
    );
}

#[test]
fn a_calls_id_from_the_model_is_kept_and_its_invocation_and_result_pair_by_it() {
    let plugins = plugins_with(&[]);
    let script = json!({"responses": [
        {"tool_calls": [
            {"name": "file_read", "args": {"path": "notes.md"}, "id": "aB3dE5gH9"},
            {"name": "file_read", "args": {"path": "notes.md"}}
        ]},
        {"text": "{\"date\": \"2026-12-01\"}"}
    ]});
    let dir = workdir(plugins.path(), script, "plugins = [PLUGINS]");
    let out = zu(dir.path(), &["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let events = crate::newcomer::log_of(dir.path());
    let ids = |ty: &str| -> Vec<serde_json::Value> {
        events
            .iter()
            .filter(|e| e["type"] == ty)
            .map(|e| e["payload"]["call_id"].clone())
            .collect()
    };
    assert_eq!(ids("harness.tool.invoked"), vec![json!("aB3dE5gH9"), json!("zu_1_1")]);
    assert_eq!(ids("harness.tool.returned"), ids("harness.tool.invoked"));
    let args: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["type"] == "harness.tool.invoked")
        .map(|e| &e["payload"]["args"])
        .collect();
    assert!(args.iter().all(|a| **a == json!({"path": "notes.md"})), "{args:?}");
}

#[test]
fn the_guides_filesystem_server_offers_no_tool_that_writes() {
    // The `tools` line of the guide's [mcp.servers.fs], applied to the same
    // server installed here: what takes part reads and never writes.
    let guide = std::fs::read_to_string(zu_tests::workspace_root().join("docs/running.md")).unwrap();
    let example = guide
        .split("[mcp.servers.fs]")
        .nth(1)
        .expect("the guide's filesystem server");
    let line = example
        .lines()
        .find(|l| l.starts_with("tools = ["))
        .expect("it names its tools");
    let s = mcp::setup(&mcp::filesystem(std::path::Path::new("files"), 1).replacen(
        "\ntier = 1\n",
        &format!("\n{line}\ntier = 1\n"),
        1,
    ));
    let out = mcp::zu(&s, &["plugins", "--json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", mcp::err(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "tools")
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(names.contains(&"fs__read_text_file"), "{names:?}");
    for writes in ["write_file", "edit_file", "create_directory", "move_file"] {
        assert!(
            !names.contains(&format!("fs__{writes}").as_str()),
            "{writes} is on: {names:?}"
        );
    }
}
