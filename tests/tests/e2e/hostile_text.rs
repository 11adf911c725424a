//! Text from others reaches the terminal escaped, as an attacker would try
//! it: ESC, BEL, CSI (7-bit and the one-character C1 U+009B), CR, LF and
//! bidi overrides in the names, sources, types, payloads and model names of
//! a hand-written log (`zu events`, `zu cost`), in a tool name and an error
//! message of an MCP server (`zu plugins`, `zu run`), and in a model's
//! answer (`zu run`'s Result). None of it is printed raw: tables and lines
//! show it escaped (`\x1b`, `\u{9b}`, `\n`); JSON output stays JSON, with
//! the text exactly as it was once parsed.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};
use uuid::Uuid;
use zu_tests::{artifacts, plugin_dir};

/// Retitles the terminal, clears it, turns on red with a C1 CSI, reverses
/// and isolates text, returns the cursor and breaks the line.
const HOSTILE: &str = "\x1b]0;pwned\x07\x1b[2J\u{9b}31m\u{202e}\u{2066}x\r\n";
/// `HOSTILE` as zu shows it.
const SHOWN: &str = r"\x1b]0;pwned\x07\x1b[2J\u{9b}31m\u{202e}\u{2066}x\r\n";

/// Nothing in `bytes` can drive a terminal: no C0 control but newline, no
/// DEL, no C1 control, no bidi override or isolate.
fn inert(what: &str, bytes: &[u8]) {
    let text = std::str::from_utf8(bytes).unwrap_or_else(|e| panic!("{what} is not UTF-8 ({e})"));
    let raw: Vec<char> = text
        .chars()
        .filter(|&c| {
            (c < ' ' && c != '\n')
                || c == '\x7f'
                || ('\u{80}'..='\u{9f}').contains(&c)
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c)
        })
        .collect();
    assert!(raw.is_empty(), "{what} prints {raw:?} raw:\n{text}");
    assert!(!bytes.windows(2).any(|w| w == [0xc2, 0x9b]), "{what}: a raw C1 CSI");
    assert!(
        !bytes.contains(&0x1b) && !bytes.contains(&0x07),
        "{what}: a raw ESC or BEL"
    );
}

fn both_inert(what: &str, out: &Output) {
    inert(&format!("{what} (stdout)"), &out.stdout);
    inert(&format!("{what} (stderr)"), &out.stderr);
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn zu(dir: &Path, args: &[&str]) -> Output {
    Command::new(&artifacts().zu)
        .args(args)
        .current_dir(dir)
        .env_remove("ZU_PLUGIN_PATH")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// One jsonl log line as a writer with hostile data would append it.
fn line(ty: &str, source: &str, payload: Value) -> String {
    let id = Uuid::new_v4();
    json!({
        "event_id": Uuid::new_v4(), "trace_id": id, "task_id": id, "parent_id": null,
        "type": ty, "ts": "2026-11-25T10:00:00.000000Z", "source": source,
        "payload": payload, "schema_version": 1,
    })
    .to_string()
}

/// A row that does not parse: its event id is hostile text, not a UUID.
fn damaged() -> String {
    let mut row: Value = serde_json::from_str(&line("harness.turn.started", "loop", json!({}))).unwrap();
    row["event_id"] = json!(HOSTILE);
    row.to_string()
}

#[test]
fn a_hostile_log_is_shown_escaped_by_zu_events_and_zu_cost() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(&[artifacts().lib("zu_plugin_jsonl")]);
    let log = dir.path().join("zu.jsonl");
    let usage = json!({"input_tokens": 5, "output_tokens": 7});
    let lines = [
        line(
            "harness.turn.completed",
            HOSTILE,
            json!({"model": HOSTILE, "usage": usage, "step": 1}),
        ),
        line(
            &format!("harness.tool.invoked{HOSTILE}"),
            "loop",
            json!({"tool": HOSTILE, "step": 2, "text": HOSTILE}),
        ),
        damaged(),
    ];
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let p = plugins.path().to_str().unwrap();
    let cfg = json!({"path": log}).to_string();
    let base = ["--plugins", p, "--sink", "jsonl", "--sink-config", &cfg];

    for extra in [&[][..], &["--full"]] {
        let out = zu(dir.path(), &[&["events"][..], &base, extra].concat());
        both_inert("zu events", &out);
        let shown = text(&out.stdout);
        assert!(shown.contains(&format!("harness.tool.invoked{SHOWN}")), "{shown}");
        assert!(
            shown.lines().any(|l| l.contains(&format!("  {SHOWN}  "))),
            "the source: {shown}"
        );
        // The payload is JSON: its controls in JSON's escapes, the rest in zu's.
        assert!(
            shown.contains(r#"{"model":"\u001b]0;pwned\u0007\u001b[2J\u{9b}31m\u{202e}\u{2066}x\r\n""#),
            "{shown}"
        );
        assert_eq!(shown.lines().count(), 3, "a header and two rows: {shown}");
        assert!(
            text(&out.stderr).contains("zu: skipped line 3: "),
            "{}",
            text(&out.stderr)
        );
    }

    let out = zu(dir.path(), &[&["events"][..], &base, &["--json"]].concat());
    both_inert("zu events --json", &out);
    let events: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["source"], HOSTILE);
    assert_eq!(events[1]["type"], format!("harness.tool.invoked{HOSTILE}"));

    let out = zu(dir.path(), &[&["cost"][..], &base].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    both_inert("zu cost", &out);
    let table = text(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(SHOWN) && l.contains(" 5 ") && l.contains(" 7 ")),
        "{table}"
    );

    let out = zu(dir.path(), &[&["cost"][..], &base, &["--json"]].concat());
    both_inert("zu cost --json", &out);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["by_model"][HOSTILE]["calls"], 1, "{summary}");
}

/// A stdio MCP server in sh: answers `initialize` with `DIR/initialize` and
/// `tools/list` with `DIR/list` (each the rest of a JSON-RPC answer after
/// its id), whatever tools or error that is.
const SERVER: &str = r#"while IFS= read -r line; do
  rest=${line#*\"id\":}
  id=${rest%%[!0-9]*}
  case "$line" in
    *'"method":"initialize"'*) printf '{"jsonrpc":"2.0","id":%s,' "$id"; cat "$1/initialize" ;;
    *'"method":"tools/list"'*) printf '{"jsonrpc":"2.0","id":%s,' "$id"; cat "$1/list" ;;
  esac
done
"#;

fn server(dir: &Path, name: &str, list: Value) -> String {
    let d = dir.join(name);
    std::fs::create_dir(&d).unwrap();
    let init = json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                      "serverInfo": {"name": HOSTILE, "version": "1"}});
    std::fs::write(
        d.join("initialize"),
        format!("{}\n", json!({"result": init}).to_string().trim_start_matches('{')),
    )
    .unwrap();
    std::fs::write(
        d.join("list"),
        format!("{}\n", list.to_string().trim_start_matches('{')),
    )
    .unwrap();
    let script = dir.join("server.sh");
    format!(
        "[mcp.servers.{name}]\ncommand = \"sh\"\nargs = [{script:?}, {d:?}]\nenv_vars = [\"PATH\"]\nstartup_timeout_s = 10\n\n"
    )
}

#[test]
fn hostile_mcp_tool_names_and_errors_are_shown_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let a = artifacts();
    let plugins = plugin_dir(&[a.lib("zu_plugin_scripted")]);
    std::fs::write(dir.path().join("server.sh"), SERVER).unwrap();
    let tool = json!({"name": HOSTILE, "description": HOSTILE, "inputSchema": {"type": "object"}});
    let mut toml = format!("plugins = [{:?}]\n\n", plugins.path());
    toml += &server(dir.path(), "evil", json!({"result": {"tools": [tool]}}));
    toml += &server(
        dir.path(),
        "broken",
        json!({"error": {"code": -32000, "message": HOSTILE}}),
    );
    std::fs::write(dir.path().join("zu.toml"), toml).unwrap();

    let out = zu(dir.path(), &["plugins", "--json"]);
    both_inert("zu plugins --json", &out);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
    let names: Vec<&Value> = report["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["name"])
        .collect();
    assert!(names.contains(&&json!(format!("evil__{HOSTILE}"))), "{report}");
    let failure = &report["failures"].as_array().unwrap()[0];
    assert_eq!(failure["name"], "broken", "{report}");
    assert!(
        failure["error"]["message"].as_str().unwrap().contains(HOSTILE),
        "{report}"
    );

    let out = zu(dir.path(), &["plugins"]);
    both_inert("zu plugins", &out);
    let table = text(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.contains("evil__"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains(&format!("evil__{SHOWN}")) && row.contains("mcp:evil"),
        "{table}"
    );
    let refused = table.lines().find(|l| l.contains("[mcp_server_failed]")).unwrap();
    assert!(refused.contains(SHOWN), "{table}");
    // The columns still line up: the header's LIBRARY starts where the row's library does.
    let header = table.lines().find(|l| l.contains("LIBRARY")).unwrap();
    assert_eq!(header.find("LIBRARY"), row.find("mcp:evil"), "{table}");

    // zu run: the taking-part line, the refusal warning, and an error naming the loaded tools.
    // The model's answer, too, is someone else's text.
    let answer = json!({"answer": HOSTILE}).to_string();
    let responses = json!({"responses": [{"text": answer}]}).to_string();
    let run = [
        "run",
        "--provider",
        "scripted",
        "--provider-config",
        &responses,
        "--query",
        "q",
    ];
    let out = zu(dir.path(), &run);
    assert!(out.status.success(), "{}", text(&out.stderr));
    both_inert("zu run", &out);
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["value"]["answer"], HOSTILE, "{result}");
    let said = text(&out.stderr);
    assert!(said.contains(&format!("tools: evil__{SHOWN};")), "{said}");
    assert!(
        said.lines()
            .any(|l| l.starts_with("zu: refused [mcp_server_failed]") && l.contains(SHOWN)),
        "{said}"
    );

    let out = zu(dir.path(), &[&run[..], &["--tools", "nope"]].concat());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    both_inert("zu run --tools nope", &out);
    let said = text(&out.stderr);
    assert!(said.contains(&format!("loaded tools: evil__{SHOWN}")), "{said}");
}
