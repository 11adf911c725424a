//! The rest of the runtime through `zu` on a shared sqlite log: `--track`
//! records and replays a path from this run's events only, `zu cost` over
//! two models and replayed steps, `--max-usd`, a run killed with SIGKILL and
//! resumed to success with each tool call on the log once, and `zu
//! pipeline` resuming from the log.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use zu_tests::{artifacts, plugin_dir};

fn plugins() -> tempfile::TempDir {
    let a = artifacts();
    let libs: Vec<_> = ["scripted", "files", "sqlite"]
        .iter()
        .map(|p| a.lib(&format!("zu_plugin_{p}")))
        .collect();
    plugin_dir(&libs)
}

struct Env {
    plugins: tempfile::TempDir,
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("docs")).unwrap();
        for (f, text) in [("a.md", "alpha is 1"), ("b.md", "beta is 2")] {
            std::fs::write(dir.path().join("docs").join(f), text).unwrap();
        }
        Env {
            plugins: plugins(),
            dir,
        }
    }

    fn db(&self) -> String {
        json!({"path": self.dir.path().join("log.db")}).to_string()
    }

    fn command(&self, sub: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(&artifacts().zu);
        cmd.arg(sub)
            .arg("--plugins")
            .arg(self.plugins.path())
            .args(["--sink", "sqlite", "--sink-config", &self.db()])
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("ZU_PLUGIN_PATH");
        cmd
    }

    fn zu(&self, sub: &str, args: &[&str]) -> Output {
        self.command(sub, args).output().unwrap()
    }

    /// `zu run` with the scripted provider answering `script` (model `model`).
    fn run_command(&self, model: &str, script: Value, args: &[&str]) -> Command {
        let config = json!({"model": model, "responses": script}).to_string();
        let root = json!({"root": self.dir.path().join("docs")}).to_string();
        let mut all = vec![
            "--provider",
            "scripted",
            "--provider-config",
            &config,
            "--validators",
            "",
            "--detectors",
            "",
        ];
        let tools_config = format!("tools.file_read={root}");
        all.extend(["--config", &tools_config]);
        all.extend(args);
        self.command("run", &all)
    }

    fn run(&self, model: &str, script: Value, args: &[&str]) -> Output {
        self.run_command(model, script, args).output().unwrap()
    }

    /// Starts the task `spec` with `script` and kills it once `turns` turns
    /// have begun; its task id.
    fn killed_run(&self, spec: Value, script: Value, turns: usize) -> String {
        let task = uuid::Uuid::new_v4().to_string();
        let file = self.dir.path().join("task.json");
        let mut spec = spec;
        spec["task_id"] = task.clone().into();
        std::fs::write(&file, spec.to_string()).unwrap();
        let mut child = self
            .run_command("gpt-4o", script, &["--task", file.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for(self, &task, "harness.turn.started", turns);
        child.kill().unwrap();
        child.wait().unwrap();
        task
    }

    fn events(&self, task: &str) -> Vec<Value> {
        let out = self.zu("events", &["--task", task, "--json", "--full"]);
        assert!(out.status.success(), "{}", err(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn err(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", err(out)))
}

/// The task id `zu run` reports on stderr.
fn task_of(out: &Output) -> String {
    let e = err(out);
    let at = e.find("zu: task ").unwrap_or_else(|| panic!("{e}")) + "zu: task ".len();
    e[at..at + 36].to_owned()
}

fn read(file: &str) -> Value {
    json!({"tool_calls": [{"name": "file_read", "args": {"path": file}}], "usage": {"input_tokens": 1000, "output_tokens": 100}})
}

fn answer(v: Value) -> Value {
    json!({"text": v.to_string(), "usage": {"input_tokens": 2000, "output_tokens": 50}})
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[test]
fn a_track_is_recorded_from_this_run_only_and_replayed_without_the_model() {
    let env = Env::new();
    // Another task writes to the same log first, and again in between.
    let other = env.run(
        "gpt-4o",
        json!([read("b.md"), answer(json!({"b": 2}))]),
        &["--query", "other"],
    );
    assert!(other.status.success(), "{}", err(&other));
    let track = env.dir.path().join("track.json");
    let t = track.to_str().unwrap();
    let first = env.run(
        "gpt-4o",
        json!([read("a.md"), answer(json!({"a": 1}))]),
        &["--query", "alpha?", "--track", t],
    );
    assert!(first.status.success(), "{}", err(&first));
    assert!(err(&first).contains("recorded 1 steps into track"), "{}", err(&first));
    let recorded: Value = serde_json::from_str(&std::fs::read_to_string(&track).unwrap()).unwrap();
    assert_eq!(recorded["task"], "alpha?");
    assert_eq!(recorded["model"], "gpt-4o");
    assert_eq!(
        recorded["steps"].as_array().unwrap().len(),
        1,
        "not the other task's call: {recorded}"
    );
    assert_eq!(recorded["steps"][0]["args"]["path"], "a.md");
    env.run(
        "gpt-4o",
        json!([read("b.md"), answer(json!({"b": 2}))]),
        &["--query", "other"],
    );

    // The replay: only the final answer comes from a model (a cheap finisher).
    let replay = env.run(
        "claude-haiku",
        json!([answer(json!({"a": 1}))]),
        &["--query", "alpha?", "--track", t, "--replay-budget-steps", "1"],
    );
    assert!(replay.status.success(), "{}", err(&replay));
    let events = env.events(&task_of(&replay));
    let turns: Vec<&Value> = events.iter().filter(|e| e["type"] == "harness.turn.started").collect();
    assert_eq!(turns[0]["payload"], json!({"step": 1, "replay": true}));
    assert_eq!(turns.len(), 2);
    assert_eq!(
        events.iter().filter(|e| e["type"] == "harness.turn.completed").count(),
        1
    );
    let kept: Value = serde_json::from_str(&std::fs::read_to_string(&track).unwrap()).unwrap();
    assert_eq!(
        kept["model"], "gpt-4o",
        "a path replayed as it was keeps its pathfinder"
    );

    // zu cost over the whole log: two models, one replayed step.
    let cost = stdout_json(&env.zu("cost", &["--json"]));
    assert_eq!(cost["replay_steps"], 1);
    assert_eq!(cost["by_model"]["gpt-4o"]["calls"], 6);
    assert_eq!(cost["by_model"]["claude-haiku"]["calls"], 1);
    assert_eq!(cost["input_tokens"], 6 * 1500 + 2000);
    let usd = cost["usd"].as_f64().unwrap();
    let want = 3.0 * (0.0025 + 0.001) + 3.0 * (0.005 + 0.0005) + (0.0016 + 0.0002);
    assert!((usd - want).abs() < 1e-9, "{usd} vs {want}");
    let one = stdout_json(&env.zu("cost", &["--json", "--task", &task_of(&replay)]));
    assert_eq!(one["model_calls"], 1);
    assert_eq!(one["model_calls_saved"], 1);
    let table = env.zu("cost", &[]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("claude-haiku") && text.contains("replay drove 1 steps"),
        "{text}"
    );
}

#[test]
fn an_unpriced_model_reports_tokens_and_no_dollars_and_a_price_file_prices_it() {
    let env = Env::new();
    let out = env.run("llama3:8b", json!([answer(json!({"x": 1}))]), &["--query", "q"]);
    assert!(out.status.success(), "{}", err(&out));
    let cost = stdout_json(&env.zu("cost", &["--json"]));
    assert_eq!(cost["usd"], Value::Null);
    assert_eq!(cost["unpriced_calls"], 1);
    assert_eq!(cost["total_tokens"], 2050);
    let prices = env.dir.path().join("prices.toml");
    std::fs::write(&prices, "[models.llama3]\ninput = 1.0\noutput = 2.0\n").unwrap();
    let priced = stdout_json(&env.zu("cost", &["--json", "--prices", prices.to_str().unwrap()]));
    assert!((priced["usd"].as_f64().unwrap() - 0.0021).abs() < 1e-12);
    std::fs::write(&prices, "[models.llama3]\ninput = \"cheap\"\n").unwrap();
    let bad = env.zu("cost", &["--prices", prices.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2), "{}", err(&bad));
    assert!(err(&bad).contains("USD per million tokens"), "{}", err(&bad));
}

#[test]
fn a_dollar_budget_ends_the_run_and_an_unpriced_provider_cannot_start_one() {
    let env = Env::new();
    let script = json!([read("a.md"), read("a.md"), answer(json!({"a": 1}))]);
    let out = env.run("gpt-4o", script.clone(), &["--query", "q", "--max-usd", "0.004"]);
    assert_eq!(out.status.code(), Some(4), "{}", err(&out));
    assert_eq!(stdout_json(&out)["reason"], "budget:max_usd");
    let events = env.events(&task_of(&out));
    assert_eq!(
        events.iter().filter(|e| e["type"] == "harness.turn.completed").count(),
        2,
        "0.0035 then 0.007"
    );
    let unpriced = env.run("llama3", script, &["--query", "q", "--max-usd", "1"]);
    assert_eq!(unpriced.status.code(), Some(1));
    assert!(
        err(&unpriced).contains("model \"llama3\" has none"),
        "{}",
        err(&unpriced)
    );
    let bad = env.run("gpt-4o", json!([]), &["--query", "q", "--max-usd", "-1"]);
    assert_eq!(bad.status.code(), Some(2));
}

fn wait_for(env: &Env, task: &str, ty: &str, n: usize) {
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        let out = env.zu("events", &["--task", task, "--type", ty, "--json"]);
        if String::from_utf8_lossy(&out.stdout).lines().count() >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no {n} {ty} for {task}");
}

#[test]
fn a_run_killed_mid_way_resumes_to_success_and_makes_each_tool_call_once() {
    let env = Env::new();
    // Two tool turns, then a model that takes an hour: killed there.
    let script = json!([read("a.md"), read("b.md"), {"text": "{}", "delay_ms": 3_600_000}]);
    let task = env.killed_run(json!({"query": "alpha and beta?"}), script, 3);

    // The whole script again: it goes on at the response after the two turns on the log.
    let done = json!([read("a.md"), read("b.md"), answer(json!({"a": 1, "b": 2}))]);
    let resumed = env.run("gpt-4o", done.clone(), &["--resume", &task]);
    assert!(resumed.status.success(), "{}", err(&resumed));
    assert_eq!(stdout_json(&resumed)["value"], json!({"a": 1, "b": 2}));
    let events = env.events(&task);
    let t = types(&events);
    assert_eq!(t.iter().filter(|x| **x == "harness.tool.invoked").count(), 2, "{t:?}");
    assert_eq!(t.iter().filter(|x| **x == "harness.task.started").count(), 1);
    let resumed_at = events.iter().find(|e| e["type"] == "harness.task.resumed").unwrap();
    assert_eq!(resumed_at["payload"]["step"], 3);
    assert_eq!(resumed_at["payload"]["tokens"], 2200);
    assert_eq!(*t.last().unwrap(), "harness.task.completed");
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));

    let again = env.run("gpt-4o", done.clone(), &["--resume", &task]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        err(&again).contains("already ended (harness.task.completed)"),
        "{}",
        err(&again)
    );
    let unknown = env.run("gpt-4o", done, &["--resume", &uuid::Uuid::new_v4().to_string()]);
    assert!(
        err(&unknown).contains("the log has no run of task"),
        "{}",
        err(&unknown)
    );
}

#[test]
fn the_resumed_run_counts_what_it_had_spent_against_its_budget() {
    let env = Env::new();
    let script = json!([read("a.md"), {"text": "{}", "delay_ms": 3_600_000}]);
    let task = env.killed_run(json!({"query": "q", "budget": {"max_steps": 2}}), script, 2);
    // Step 2 was under way: the resumed run may take it, and no more.
    let out = env.run("gpt-4o", json!([read("b.md"), read("b.md")]), &["--resume", &task]);
    assert_eq!(stdout_json(&out)["reason"], "budget:max_steps", "{}", err(&out));
}

fn pipeline_file(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("pipeline.toml");
    std::fs::write(
        &file,
        "[[phase]]\nname = \"find\"\nquery = \"which file?\"\n\n[[phase]]\nname = \"read\"\nquery = \"read {previous.file}\"\n",
    )
    .unwrap();
    file
}

#[test]
fn a_pipeline_file_passes_values_on_and_a_second_run_skips_what_finished() {
    let env = Env::new();
    let file = pipeline_file(env.dir.path());
    let f = file.to_str().unwrap();
    let first_script =
        json!({"model": "gpt-4o", "responses": [answer(json!({"file": "a.md"})), {"text": "cut", "finish": "length"}]});
    let first = env.zu(
        "pipeline",
        &[
            f,
            "--provider",
            "scripted",
            "--provider-config",
            &first_script.to_string(),
            "--validators",
            "",
        ],
    );
    assert_eq!(first.status.code(), Some(4), "{}", err(&first));
    let report = stdout_json(&first);
    assert_eq!(report["failed_phase"], "read");
    let second_script = json!({"model": "gpt-4o", "responses": [answer(json!({"alpha": 1}))]});
    let second = env.zu(
        "pipeline",
        &[
            f,
            "--provider",
            "scripted",
            "--provider-config",
            &second_script.to_string(),
            "--validators",
            "",
        ],
    );
    assert!(second.status.success(), "{}", err(&second));
    let report = stdout_json(&second);
    assert_eq!(report["value"], json!({"alpha": 1}));
    assert_eq!(report["phases"][0]["skipped"], true);
    assert_eq!(report["phases"][1]["skipped"], false);
    let id = report["id"].as_str().unwrap();
    let out = env.zu(
        "events",
        &["--trace", id, "--type", "harness.task.started", "--json", "--full"],
    );
    let queries: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["payload"]["query"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        queries,
        ["which file?", "read a.md", "read a.md"],
        "the value carried on"
    );
    let skipped = env.zu(
        "events",
        &["--trace", id, "--type", "harness.pipeline.phase.skipped", "--json"],
    );
    assert_eq!(String::from_utf8_lossy(&skipped.stdout).lines().count(), 1);
    std::fs::write(
        &file,
        "[[phase]]\nname = \"a\"\nquery = \"x\"\n[[phase]]\nname = \"a\"\nquery = \"y\"\n",
    )
    .unwrap();
    let dup = env.zu("pipeline", &[f, "--provider", "scripted"]);
    assert_eq!(dup.status.code(), Some(2));
    assert!(err(&dup).contains("unique"), "{}", err(&dup));
}

#[test]
fn zu_toml_run_settings_work_like_the_flags_with_paths_relative_to_the_file() {
    let env = Env::new();
    let conf = env.dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(
        conf.join("prices.toml"),
        "[models.house-model]\ninput = 1000.0\noutput = 1000.0\n",
    )
    .unwrap();
    std::fs::write(
        conf.join("zu.toml"),
        "[run]\ntrack = \"t.json\"\nmax_usd = 1.5\nprices = \"prices.toml\"\nmax_observation_chars = 5\n",
    )
    .unwrap();
    let cf = conf.join("zu.toml");
    let args = ["--query", "alpha?", "--config-file", cf.to_str().unwrap()];
    // 1000 input tokens at $1000 per million: $1 a call; the second passes $1.5.
    let out = env.run(
        "house-model",
        json!([read("a.md"), read("a.md"), answer(json!({}))]),
        &args,
    );
    assert_eq!(stdout_json(&out)["reason"], "budget:max_usd", "{}", err(&out));
    let ok = env.run(
        "house-model",
        json!([{"tool_calls": [{"name": "file_read", "args": {"path": "a.md"}}]}, {"text": "{\"a\": 1}"}]),
        &args,
    );
    assert!(ok.status.success(), "{}", err(&ok));
    let track: Value = serde_json::from_str(&std::fs::read_to_string(conf.join("t.json")).unwrap()).unwrap();
    assert_eq!(track["model"], "house-model");
    std::fs::write(&cf, "[run]\nobservation_strategy = \"summarise\"\n").unwrap();
    let bad = env.run("house-model", json!([]), &args);
    assert_eq!(bad.status.code(), Some(2));
    assert!(err(&bad).contains("expected truncate or extract"), "{}", err(&bad));
    std::fs::write(&cf, "[run]\ntrak = \"x\"\n").unwrap();
    let typo = env.run("house-model", json!([]), &args);
    assert_eq!(typo.status.code(), Some(2));
    assert!(err(&typo).contains("trak"), "{}", err(&typo));
    std::fs::write(conf.join("t.json"), "not a track").unwrap();
    std::fs::write(&cf, "[run]\ntrack = \"t.json\"\n").unwrap();
    let garbage = env.run("house-model", json!([]), &args);
    assert_eq!(garbage.status.code(), Some(2));
    assert!(err(&garbage).contains("is not a track"), "{}", err(&garbage));
}
