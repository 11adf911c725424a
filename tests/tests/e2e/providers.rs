//! The `openai` and `anthropic` providers through `zu run` against a local
//! server speaking each API's wire format (answers shaped as the providers'
//! documentation shows them): a tool call then a final answer, usage and the
//! served model on the log, a malformed tool-argument string, a length
//! stop, 429 then success, 401, a server that hangs past the deadline, and
//! an answer that is not JSON.

use std::process::Output;
use std::time::Duration;

use serde_json::{json, Value};
use zu_tests::http_stub::{Reply, Stub};
use zu_tests::{artifacts, plugin_dir};

#[derive(Clone, Copy, Debug)]
enum Api {
    OpenAi,
    Anthropic,
}

impl Api {
    fn name(self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::Anthropic => "anthropic",
        }
    }

    fn key_env(self) -> &'static str {
        match self {
            Api::OpenAi => "OPENAI_API_KEY",
            Api::Anthropic => "ANTHROPIC_API_KEY",
        }
    }

    /// The served model id the answers carry.
    fn served(self) -> &'static str {
        match self {
            Api::OpenAi => "gpt-4o-mini-2024-07-18",
            Api::Anthropic => "claude-haiku-4-5-20251001",
        }
    }

    /// An answer calling `file_read` with `arguments` (a JSON string for
    /// openai, the input object for anthropic).
    fn tool_call(self, arguments: Value) -> Value {
        match self {
            Api::OpenAi => json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000, "model": self.served(),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_abc", "type": "function", "function": {"name": "file_read", "arguments": arguments}}]},
                    "logprobs": null, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}}),
            Api::Anthropic => json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": self.served(),
                "content": [{"type": "text", "text": "Reading the notes."},
                            {"type": "tool_use", "id": "toolu_01", "name": "file_read", "input": arguments}],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 120, "output_tokens": 30}}),
        }
    }

    fn read_notes(self) -> Value {
        match self {
            Api::OpenAi => self.tool_call(json!("{\"path\": \"notes.md\"}")),
            Api::Anthropic => self.tool_call(json!({"path": "notes.md"})),
        }
    }

    fn malformed(self) -> Value {
        match self {
            Api::OpenAi => self.tool_call(json!("{\"path\": \"notes.md\"")),
            Api::Anthropic => self.tool_call(json!("notes.md")),
        }
    }

    /// A final answer with `text`, stopped normally or by length.
    fn answer(self, text: &str, cut: bool) -> Value {
        match self {
            Api::OpenAi => json!({
                "id": "chatcmpl-2", "object": "chat.completion", "created": 1_700_000_001, "model": self.served(),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                    "logprobs": null, "finish_reason": if cut { "length" } else { "stop" }}],
                "usage": {"prompt_tokens": 200, "completion_tokens": 10, "total_tokens": 210}}),
            Api::Anthropic => json!({
                "id": "msg_2", "type": "message", "role": "assistant", "model": self.served(),
                "content": [{"type": "text", "text": text}],
                "stop_reason": if cut { "max_tokens" } else { "end_turn" }, "stop_sequence": null,
                "usage": {"input_tokens": 200, "output_tokens": 10}}),
        }
    }

    fn error(self, status: u16, kind: &str, message: &str) -> Reply {
        let body = match self {
            Api::OpenAi => json!({"error": {"message": message, "type": kind, "param": null, "code": kind}}),
            Api::Anthropic => json!({"type": "error", "error": {"type": kind, "message": message}}),
        };
        Reply::json(status, body)
    }

    /// The tool results the server received in request `r`, in order.
    fn tool_results(self, r: &Value) -> Vec<String> {
        let msgs = r["messages"].as_array().unwrap();
        match self {
            Api::OpenAi => msgs
                .iter()
                .filter(|m| m["role"] == "tool")
                .map(|m| m["content"].as_str().unwrap().to_owned())
                .collect(),
            Api::Anthropic => msgs
                .iter()
                .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
                .filter(|b| b["type"] == "tool_result")
                .map(|b| b["content"].as_str().unwrap().to_owned())
                .collect(),
        }
    }
}

struct Run {
    out: Output,
    events: Vec<Value>,
}

impl Run {
    fn result(&self) -> Value {
        serde_json::from_slice(&self.out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.out.stderr)))
    }
    fn of_type(&self, ty: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["type"] == ty).collect()
    }
}

/// `zu run` with `api` pointed at `stub`, reading `notes.md` from a docs root.
fn zu_run(api: Api, stub: &Stub, wall_time_s: u64, extra: Value) -> Run {
    zu_run_with(api, stub, wall_time_s, extra, &[])
}

/// [`zu_run`] with more flags for `zu run`.
fn zu_run_with(api: Api, stub: &Stub, wall_time_s: u64, extra: Value, flags: &[&str]) -> Run {
    let a = artifacts();
    let plugins = plugin_dir(&[
        a.lib("zu_plugin_models"),
        a.lib("zu_plugin_files"),
        a.lib("zu_plugin_sqlite"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("docs")).unwrap();
    std::fs::write(dir.path().join("docs/notes.md"), "The launch is on 2026-12-01.").unwrap();
    let base = match api {
        Api::OpenAi => format!("{}/v1", stub.url),
        Api::Anthropic => stub.url.clone(),
    };
    let mut config = json!({"base_url": base, "model": "test-model", "max_retries": 2, "timeout_s": 30});
    config
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    let db = json!({"path": dir.path().join("log.db")}).to_string();
    let root = format!("tools.file_read={}", json!({"root": dir.path().join("docs")}));
    let task = uuid::Uuid::new_v4().to_string();
    let spec = dir.path().join("task.json");
    std::fs::write(
        &spec,
        json!({"task_id": task, "query": "When is the launch?"}).to_string(),
    )
    .unwrap();
    let wall = wall_time_s.to_string();
    let out = std::process::Command::new(&a.zu)
        .args(["run", "--plugins"])
        .arg(plugins.path())
        .args(["--provider", api.name(), "--provider-config", &config.to_string()])
        .args(["--task", spec.to_str().unwrap(), "--wall-time-s", &wall])
        .args(["--sink", "sqlite", "--sink-config", &db, "--config", &root])
        .args(["--validators", "", "--detectors", ""])
        .args(flags)
        .env(api.key_env(), "sk-test-123")
        .env_remove("ZU_PLUGIN_PATH")
        .output()
        .unwrap();
    let listed = std::process::Command::new(&a.zu)
        .args(["events", "--plugins"])
        .arg(plugins.path())
        .args([
            "--sink",
            "sqlite",
            "--sink-config",
            &db,
            "--task",
            &task,
            "--json",
            "--full",
        ])
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    Run { out, events }
}

const APIS: [Api; 2] = [Api::OpenAi, Api::Anthropic];

#[test]
fn a_tool_call_then_an_answer_with_usage_and_the_served_model_on_the_log() {
    for api in APIS {
        let stub = Stub::start(vec![
            Reply::json(200, api.read_notes()),
            Reply::json(200, api.answer("{\"date\": \"2026-12-01\"}", false)),
        ]);
        let run = zu_run(api, &stub, 60, json!({}));
        assert_eq!(run.result()["value"], json!({"date": "2026-12-01"}), "{api:?}");
        let turns = run.of_type("harness.turn.completed");
        assert_eq!(turns.len(), 2);
        assert_eq!(turns[0]["payload"]["model"], api.served(), "{api:?}");
        assert_eq!(turns[0]["payload"]["usage"]["input_tokens"], 120);
        assert_eq!(turns[1]["payload"]["usage"]["output_tokens"], 10);
        let got = stub.received();
        assert_eq!(got.len(), 2);
        let second = &got[1].body;
        assert!(api.tool_results(second)[0].contains("2026-12-01"), "{api:?}: {second}");
        assert_eq!(second["model"], "test-model");
        match api {
            Api::OpenAi => {
                assert_eq!(got[0].line, "POST /v1/chat/completions HTTP/1.1");
                assert_eq!(got[0].header("authorization"), Some("Bearer sk-test-123"));
                assert_eq!(got[0].body["tools"][0]["type"], "function");
                assert_eq!(got[0].body["tools"][0]["function"]["name"], "file_read");
                let assistant = &second["messages"][2];
                assert_eq!(assistant["tool_calls"][0]["id"], second["messages"][3]["tool_call_id"]);
            }
            Api::Anthropic => {
                assert_eq!(got[0].line, "POST /v1/messages HTTP/1.1");
                assert_eq!(got[0].header("x-api-key"), Some("sk-test-123"));
                assert_eq!(got[0].header("anthropic-version"), Some("2023-06-01"));
                assert!(got[0].body["system"].as_str().unwrap().contains("Zu"));
                assert_eq!(got[0].body["tools"][0]["name"], "file_read");
                assert!(got[0].body["max_tokens"].as_u64().unwrap() > 0);
            }
        }
    }
}

#[test]
fn malformed_tool_arguments_are_told_to_the_model_not_run() {
    for api in APIS {
        let stub = Stub::start(vec![
            Reply::json(200, api.malformed()),
            Reply::json(200, api.answer("{\"gave_up\": true}", false)),
        ]);
        let run = zu_run(api, &stub, 60, json!({}));
        assert_eq!(run.result()["status"], "success", "{api:?}");
        let returned = run.of_type("harness.tool.returned");
        let error = returned[0]["payload"]["observation"]["error"].as_str().unwrap();
        assert!(error.contains("could not be read"), "{api:?}: {error}");
        let told = api.tool_results(&stub.received()[1].body);
        assert!(
            told[0].contains("again with its arguments as one JSON object"),
            "{api:?}: {told:?}"
        );
    }
}

#[test]
fn a_length_stop_ends_the_run_as_truncated() {
    for api in APIS {
        let stub = Stub::start(vec![Reply::json(200, api.answer("{\"date\": \"20", true))]);
        let run = zu_run(api, &stub, 60, json!({}));
        assert_eq!(run.result()["reason"], "model truncated (length)", "{api:?}");
        assert_eq!(run.out.status.code(), Some(4));
    }
}

#[test]
fn rate_limits_and_overload_are_retried_honouring_retry_after() {
    for api in APIS {
        let busy = match api {
            Api::OpenAi => api.error(429, "rate_limit_exceeded", "Rate limit reached"),
            Api::Anthropic => api.error(529, "overloaded_error", "Overloaded"),
        };
        let stub = Stub::start(vec![
            api.error(429, "rate_limit_exceeded", "Rate limit reached")
                .header("retry-after", "1"),
            busy.header("retry-after-ms", "10"),
            Reply::json(200, api.answer("{\"ok\": 1}", false)),
        ]);
        let run = zu_run(api, &stub, 60, json!({}));
        assert_eq!(run.result()["value"], json!({"ok": 1}), "{api:?}");
        assert_eq!(stub.received().len(), 3);
        // Out of retries: the reason says so.
        let stub = Stub::start(vec![
            api.error(429, "rate_limit_exceeded", "slow down")
                .header("retry-after", "0");
            3
        ]);
        let run = zu_run(api, &stub, 60, json!({"max_retries": 1}));
        let reason = run.result()["reason"].as_str().unwrap().to_owned();
        assert!(
            reason.contains("HTTP 429") && reason.contains("gave up after 2 attempt"),
            "{api:?}: {reason}"
        );
    }
}

#[test]
fn a_retry_after_past_the_deadline_is_not_waited_for() {
    let api = Api::OpenAi;
    let stub = Stub::start(vec![api
        .error(503, "unavailable", "down")
        .header("retry-after", "3600")]);
    let run = zu_run(api, &stub, 20, json!({}));
    let reason = run.result()["reason"].as_str().unwrap().to_owned();
    let err = String::from_utf8_lossy(&run.out.stderr);
    assert!(
        reason.contains("HTTP 503") && reason.contains("gave up after 1 attempt"),
        "{reason}: {err}"
    );
}

#[test]
fn a_refused_key_ends_the_run_saying_which_variable_to_fix() {
    for api in APIS {
        let stub = Stub::start(vec![api.error(401, "authentication_error", "invalid x-api-key")]);
        let run = zu_run(api, &stub, 60, json!({}));
        let reason = run.result()["reason"].as_str().unwrap().to_owned();
        assert!(
            reason.contains("HTTP 401") && reason.contains(api.key_env()),
            "{api:?}: {reason}"
        );
        assert_eq!(stub.received().len(), 1, "a 401 is not retried");
        let stub = Stub::start(vec![api.error(404, "not_found_error", "model: nope")]);
        let run = zu_run(api, &stub, 60, json!({"model": "nope"}));
        let reason = run.result()["reason"].as_str().unwrap().to_owned();
        assert!(
            reason.contains("HTTP 404") && reason.contains("check model (\"nope\")"),
            "{api:?}: {reason}"
        );
    }
}

#[test]
fn a_server_that_hangs_past_the_deadline_ends_the_run_on_time() {
    for api in APIS {
        let stub = Stub::start(vec![
            Reply::json(200, api.answer("{}", false)).after(Duration::from_secs(120))
        ]);
        let run = zu_run(api, &stub, 2, json!({}));
        assert_eq!(run.out.status.code(), Some(4), "{api:?}");
        let reason = run.result()["reason"].as_str().unwrap().to_owned();
        assert!(
            reason == "budget:wall_time_s" || reason.contains("did not answer within"),
            "{api:?}: {reason}"
        );
    }
}

#[test]
fn an_answer_that_is_not_json_or_not_the_protocol_is_named() {
    for api in APIS {
        let stub = Stub::start(vec![Reply::text(200, "<html>proxy login</html>")]);
        let run = zu_run(api, &stub, 60, json!({}));
        let reason = run.result()["reason"].as_str().unwrap().to_owned();
        assert!(
            reason.contains("not JSON") && reason.contains("right endpoint"),
            "{api:?}: {reason}"
        );
        let stub = Stub::start(vec![Reply::json(200, json!({"hello": "world"}))]);
        let run = zu_run(api, &stub, 60, json!({}));
        let reason = run.result()["reason"].as_str().unwrap().to_owned();
        assert!(
            reason.contains(&format!("not the {} protocol", api.name())),
            "{api:?}: {reason}"
        );
    }
}

#[test]
fn a_bad_provider_config_is_a_clear_load_error() {
    let a = artifacts();
    let plugins = plugin_dir(&[a.lib("zu_plugin_models")]);
    for (config, says) in [
        (json!({"base_url": "http://x"}), "missing field `model`"),
        (json!({"model": "m", "base_url": "ftp://x"}), "must start with http"),
        (json!({"model": "m", "timeout_s": -1}), "positive number"),
        (json!({"model": "m", "temprature": 1}), "unknown field `temprature`"),
    ] {
        let out = std::process::Command::new(&a.zu)
            .args(["run", "--plugins"])
            .arg(plugins.path())
            .args([
                "--provider",
                "openai",
                "--provider-config",
                &config.to_string(),
                "--query",
                "q",
            ])
            .env_remove("ZU_PLUGIN_PATH")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(says), "{config}: {err}");
    }
    // Both providers share a library: the one without config loads quietly
    // and says what to do only when a run uses it.
    let out = std::process::Command::new(&a.zu)
        .args(["run", "--plugins"])
        .arg(plugins.path())
        .args(["--provider", "anthropic", "--query", "q"])
        .env_remove("ZU_PLUGIN_PATH")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("refused"), "{err}");
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(result["reason"].as_str().unwrap().contains("has no config"), "{result}");
}

/// `api`'s tool-call answer, claiming to have served `model`.
fn served_as(api: Api, model: &str) -> Value {
    let mut v = api.read_notes();
    v["model"] = model.into();
    v
}

#[test]
fn under_a_dollar_budget_a_served_model_with_no_price_ends_the_run_at_once() {
    for api in APIS {
        // The configured model is priced, so the run starts; the server then
        // says it served one the table does not know — seven times, if let.
        let stub = Stub::start(vec![Reply::json(200, served_as(api, "mystery-model-9000")); 7]);
        let config = json!({"model": "gpt-4o-mini"});
        let run = zu_run_with(api, &stub, 60, config, &["--max-usd", "0.01"]);
        let reason = run.result()["reason"].as_str().unwrap_or_default().to_owned();
        assert!(
            reason.starts_with("budget:unpriced_model")
                && reason.contains("mystery-model-9000")
                && reason.contains("--prices"),
            "{api:?}: {reason}"
        );
        assert_eq!(run.out.status.code(), Some(4), "{api:?}");
        assert_eq!(
            stub.received().len(),
            1,
            "{api:?}: no second call after the unpriced one"
        );
        assert!(
            run.of_type("harness.tool.invoked").is_empty(),
            "{api:?}: nothing runs after it"
        );
    }
}

#[test]
fn usage_that_is_not_a_token_count_is_a_provider_error_naming_the_field() {
    for api in APIS {
        for bad in [json!(1e300), json!(-5), json!(2.5), json!("120")] {
            let mut answer = api.read_notes();
            let field = match api {
                Api::OpenAi => "prompt_tokens",
                Api::Anthropic => "input_tokens",
            };
            answer["usage"][field] = bad.clone();
            let stub = Stub::start(vec![Reply::json(200, answer)]);
            let run = zu_run(api, &stub, 60, json!({}));
            let reason = run.result()["reason"].as_str().unwrap_or_default().to_owned();
            assert!(
                reason.starts_with("provider error") && reason.contains(&format!("usage.{field}")),
                "{api:?} {bad}: {reason}"
            );
            assert!(
                run.of_type("harness.turn.completed").is_empty(),
                "{api:?} {bad}: no usage recorded"
            );
        }
    }
}

#[test]
fn a_retry_after_that_is_nan_infinite_or_huge_is_no_panic() {
    let api = Api::OpenAi;
    for (value, answered) in [("NaN", true), ("inf", true), ("-1", true), ("1e300", false)] {
        let stub = Stub::start(vec![
            api.error(429, "rate_limit_exceeded", "slow down")
                .header("retry-after-ms", value),
            Reply::json(200, api.answer("{\"ok\": 1}", false)),
        ]);
        let run = zu_run(api, &stub, 20, json!({}));
        let err = String::from_utf8_lossy(&run.out.stderr).into_owned();
        assert!(!err.contains("panicked"), "{value}: {err}");
        let result = run.result();
        if answered {
            // No usable value: the usual backoff, then the answer.
            assert_eq!(result["value"], json!({"ok": 1}), "{value}: {err}");
        } else {
            // A wait capped at an hour is past the run's 20 s: given up at once.
            let reason = result["reason"].as_str().unwrap_or_default();
            assert!(
                reason.contains("HTTP 429") && reason.contains("gave up after 1 attempt"),
                "{value}: {reason}"
            );
            assert!(!reason.contains("panicked"), "{reason}");
        }
    }
}

#[test]
fn a_tool_calls_id_goes_back_to_the_model_unchanged_and_the_events_pair_by_it() {
    for (api, id) in [(Api::OpenAi, "call_abc"), (Api::Anthropic, "toolu_01")] {
        let stub = Stub::start(vec![
            Reply::json(200, api.read_notes()),
            Reply::json(200, api.answer("{\"date\": \"2026-12-01\"}", false)),
        ]);
        let run = zu_run(api, &stub, 60, json!({}));
        assert_eq!(run.result()["status"], "success", "{api:?}");
        let second = &stub.received()[1].body;
        let msgs = second["messages"].as_array().unwrap();
        let (sent, answered) = match api {
            Api::OpenAi => {
                let call = msgs.iter().find(|m| m["role"] == "assistant").unwrap()["tool_calls"][0].clone();
                assert!(
                    !call["function"]["arguments"].as_str().unwrap().contains("$zu"),
                    "{call}"
                );
                let result = msgs.iter().find(|m| m["role"] == "tool").unwrap();
                (call["id"].clone(), result["tool_call_id"].clone())
            }
            Api::Anthropic => {
                let blocks: Vec<Value> = msgs
                    .iter()
                    .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
                    .collect();
                let call = blocks.iter().find(|b| b["type"] == "tool_use").unwrap();
                assert_eq!(call["input"], json!({"path": "notes.md"}), "{call}");
                let result = blocks.iter().find(|b| b["type"] == "tool_result").unwrap();
                (call["id"].clone(), result["tool_use_id"].clone())
            }
        };
        assert_eq!((sent, answered), (json!(id), json!(id)), "{api:?}: {second}");
        let invoked = &run.of_type("harness.tool.invoked")[0]["payload"];
        let returned = &run.of_type("harness.tool.returned")[0]["payload"];
        assert_eq!(invoked["call_id"], id, "{invoked}");
        assert_eq!(returned["call_id"], id, "{returned}");
        assert_eq!(
            invoked["args"],
            json!({"path": "notes.md"}),
            "the tool never sees the id"
        );
    }
}
