//! `zu serve` through HTTP against logs written by real `zu run`s (sqlite
//! and jsonl): the runs with the right status, an unfinished run killed with
//! SIGKILL among them; a run's events paged by `after_seq`; the stream
//! delivering an event another process appends; and the pages in headless
//! Chromium, logged in with the cookie. Who may ask is `serve_access.rs`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use zu_tests::{artifacts, plugin_dir};

/// A log and the plugins that write and read it.
pub struct Log {
    pub sink: &'static str,
    pub config: String,
    pub plugins: tempfile::TempDir,
    pub dir: tempfile::TempDir,
}

impl Log {
    pub fn new(sink: &'static str) -> Log {
        let a = artifacts();
        let libs: Vec<PathBuf> = ["scripted", "files", "checks", sink]
            .iter()
            .map(|p| a.lib(&format!("zu_plugin_{p}")))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("docs")).unwrap();
        std::fs::write(dir.path().join("docs/notes.md"), "The launch is on 2026-12-01.").unwrap();
        std::fs::write(dir.path().join("docs/empty.md"), "").unwrap();
        let file = dir.path().join(if sink == "sqlite" { "log.db" } else { "log.jsonl" });
        Log {
            sink,
            config: json!({"path": file}).to_string(),
            plugins: plugin_dir(&libs),
            dir,
        }
    }

    /// A `zu run` command writing to the log with `script`.
    pub fn run_cmd(&self, script: Value, query: &str) -> Command {
        let mut cmd = Command::new(&artifacts().zu);
        let root = format!("tools.file_read={}", json!({"root": self.dir.path().join("docs")}));
        cmd.args(["run", "--plugins"])
            .arg(self.plugins.path())
            .args([
                "--provider",
                "scripted",
                "--provider-config",
                &json!({"responses": script}).to_string(),
            ])
            .args(["--query", query, "--sink", self.sink, "--sink-config", &self.config])
            .args(["--config", &root, "--validators", ""])
            .env_remove("ZU_PLUGIN_PATH");
        cmd
    }

    /// Runs `zu run`; its task id.
    pub fn run(&self, script: Value, query: &str) -> String {
        let out = self.run_cmd(script, query).output().unwrap();
        task_of(&String::from_utf8_lossy(&out.stderr))
    }

    /// A success (tool calls), an escalation (a detector's verdict with no
    /// tier left), a terminal run, and a run killed mid-way: their task ids.
    pub fn runs(&self) -> Runs {
        let ok = self.run(
            json!([
                {"text": "reading the notes", "tool_calls": [{"name": "file_read", "args": {"path": "notes.md"}}], "usage": {"input_tokens": 100, "output_tokens": 20}},
                {"tool_calls": [{"name": "file_read", "args": {"path": "notes.md"}}]},
                {"text": "{\"date\": \"2026-12-01\"}"}
            ]),
            "When is the launch?",
        );
        let escalated = self.run(
            json!([{"tool_calls": [{"name": "file_read", "args": {"path": "empty.md"}}]}, {"text": "{}"}]),
            "Read the empty file",
        );
        let cut = self.run(json!([{"text": "{\"da", "finish": "length"}]), "A cut answer");
        let mut child = self
            .run_cmd(json!([{"tool_calls": [{"name": "file_read", "args": {"path": "notes.md"}}]}, {"text": "{}", "delay_ms": 3_600_000}]), "Killed half way")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while err.read_line(&mut line).unwrap() > 0 && !line.contains("taking part") {}
        // Wait until its second turn has begun (the first tool call is on the log).
        std::thread::sleep(Duration::from_millis(1500));
        child.kill().unwrap();
        child.wait().unwrap();
        let killed = self.runs_with_query("Killed half way");
        Runs {
            ok,
            escalated,
            cut,
            killed,
        }
    }

    fn runs_with_query(&self, query: &str) -> String {
        let out = Command::new(&artifacts().zu)
            .args(["events", "--plugins"])
            .arg(self.plugins.path())
            .args([
                "--sink",
                self.sink,
                "--sink-config",
                &self.config,
                "--type",
                "harness.task.started",
                "--json",
                "--full",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|e| e["payload"]["query"] == query)
            .map(|e| e["task_id"].as_str().unwrap().to_owned())
            .unwrap()
    }

    /// `zu serve` on a free loopback port (plus `extra` flags and `env`).
    pub fn serve(&self, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(&artifacts().zu);
        cmd.args(["serve", "--plugins"])
            .arg(self.plugins.path())
            .args(["--sink", self.sink, "--sink-config", &self.config])
            .args(extra)
            .args(if extra.contains(&"--addr") {
                &[][..]
            } else {
                &["--addr", "127.0.0.1:0"][..]
            })
            .env_remove("ZU_PLUGIN_PATH")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let url = loop {
            line.clear();
            assert!(err.read_line(&mut line).unwrap() > 0, "zu serve ended before listening");
            if let Some(at) = line.find("http://") {
                break line[at..]
                    .trim()
                    .trim_end_matches(" (Ctrl-C to stop)")
                    .trim_end_matches('/')
                    .to_owned();
            }
        };
        // Then the one-time login link and how API clients send the token
        // (its value, or the variable named by --token-env).
        let mut next_line = || {
            line.clear();
            assert!(
                err.read_line(&mut line).unwrap() > 0,
                "zu serve ended before printing the token"
            );
            line.trim().to_owned()
        };
        let login = next_line();
        let login = login[login.find("http://").expect("the login link")..].to_owned();
        let api = next_line();
        let said = api
            .split("Bearer ")
            .nth(1)
            .expect("how API clients send the token")
            .trim_end_matches('"')
            .to_owned();
        let token = match said.strip_prefix('$') {
            Some(var) => env.iter().find(|(k, _)| *k == var).map(|(_, v)| v.to_string()).unwrap(),
            None => said,
        };
        std::thread::spawn(move || for _ in err.lines() {});
        let server = Server {
            child,
            url,
            token,
            login,
        };
        let end = Instant::now() + Duration::from_secs(30);
        while server.get("/healthz")["ready"] != true {
            assert!(Instant::now() < end, "the server never read the log");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

/// The task ids of [`Log::runs`].
pub struct Runs {
    pub ok: String,
    pub escalated: String,
    pub cut: String,
    pub killed: String,
}

pub fn task_of(stderr: &str) -> String {
    let at = stderr.find("zu: task ").unwrap_or_else(|| panic!("{stderr}")) + "zu: task ".len();
    stderr[at..at + 36].to_owned()
}

pub struct Server {
    child: Child,
    pub url: String,
    /// The token API clients send.
    pub token: String,
    /// The one-time login link it printed.
    pub login: String,
}

impl Server {
    /// `GET path` with the bearer token, as JSON.
    pub fn get(&self, path: &str) -> Value {
        self.request("GET", path).call().unwrap().into_json().unwrap()
    }

    /// A request to `path` carrying the bearer token.
    pub fn request(&self, method: &str, path: &str) -> ureq::Request {
        ureq::request(method, &format!("{}{path}", self.url)).set("authorization", &format!("Bearer {}", self.token))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first of `events` of type `ty`.
fn first_of<'a>(events: &'a [Value], ty: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["type"] == ty)
        .unwrap_or_else(|| panic!("no {ty} in {events:?}"))
}

fn status_of(runs: &Value, task: &str) -> String {
    runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["task_id"] == task)
        .unwrap_or_else(|| panic!("{task} not in {runs}"))["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn check_api(sink: &'static str) {
    let log = Log::new(sink);
    let Runs {
        ok,
        escalated,
        cut,
        killed,
    } = log.runs();
    let server = log.serve(&["--scoped"], &[]);
    let runs = server.get("/api/runs");
    assert_eq!(runs["total"], 4, "{runs}");
    assert_eq!(status_of(&runs, &ok), "success");
    assert_eq!(status_of(&runs, &escalated), "escalate");
    assert_eq!(status_of(&runs, &cut), "terminal");
    assert_eq!(status_of(&runs, &killed), "unfinished");
    assert_eq!(runs["runs"][0]["task_id"], killed, "newest first");
    let row = server.get(&format!("/api/runs/{ok}"));
    assert_eq!((row["steps"].as_u64(), row["tokens"].as_u64()), (Some(3), Some(120)));
    assert_eq!(server.get("/api/runs?status=terminal")["runs"][0]["task_id"], cut);
    assert_eq!(server.get("/api/runs?q=launch")["total"], 1);
    let page2 = server.get("/api/runs?per_page=1&page=2");
    assert_eq!(
        (page2["runs"].as_array().unwrap().len(), page2["total"].as_u64()),
        (1, Some(4))
    );
    assert_eq!(page2["runs"][0]["task_id"], cut);

    // A run's events, paged by after_seq, scoped with --scoped.
    let all = server.get(&format!("/api/runs/{ok}/events"))["events"]
        .as_array()
        .unwrap()
        .clone();
    assert!(all.len() > 10);
    let first = server.get(&format!("/api/runs/{ok}/events?limit=4"));
    assert_eq!(first["events"].as_array().unwrap().len(), 4);
    assert_eq!(first["more"], true);
    let after = first["next_after_seq"].as_u64().unwrap();
    let rest = server.get(&format!("/api/runs/{ok}/events?after_seq={after}"));
    let seqs: Vec<u64> = first["events"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["events"].as_array().unwrap())
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, all.iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>());
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    let model = first_of(&all, "harness.turn.completed");
    assert_eq!(model["payload"]["text"]["_type"], "str", "scoped: {model}");
    let esc = server.get(&format!("/api/runs/{escalated}/events"))["events"].clone();
    assert_eq!(
        first_of(esc.as_array().unwrap(), "harness.detector.fired")["payload"]["detector"],
        "empty"
    );
    drop(server);
    let full = log.serve(&[], &[]);
    let events = full.get(&format!("/api/runs/{ok}/events"))["events"].clone();
    assert_eq!(
        first_of(events.as_array().unwrap(), "harness.turn.completed")["payload"]["text"],
        "reading the notes"
    );

    // The stream delivers an event another process appends.
    let stream = full.request("GET", "/api/stream").call().unwrap();
    let mut lines = BufReader::new(stream.into_reader()).lines();
    let writer = log
        .run_cmd(json!([{"text": "{\"late\": 1}"}]), "appended while watching")
        .output()
        .unwrap();
    let late = task_of(&String::from_utf8_lossy(&writer.stderr));
    let end = Instant::now() + Duration::from_secs(20);
    let mut seen = false;
    while !seen && Instant::now() < end {
        let line = lines.next().unwrap().unwrap();
        if let Some(data) = line.strip_prefix("data:") {
            let e: Value = serde_json::from_str(data.trim()).unwrap();
            seen = e["task_id"] == late && e["type"] == "harness.task.completed";
        }
    }
    assert!(seen, "the stream delivered the other process's run");
    assert_eq!(status_of(&full.get("/api/runs"), &late), "success");
    assert_eq!(
        full.request("GET", &format!("/api/runs/{}", uuid::Uuid::new_v4()))
            .call()
            .unwrap_err()
            .into_response()
            .unwrap()
            .status(),
        404
    );
}

#[test]
fn the_api_over_a_sqlite_log_written_by_real_runs() {
    check_api("sqlite");
}

#[test]
fn the_api_over_a_jsonl_log_written_by_real_runs() {
    check_api("jsonl");
}

#[test]
fn the_pages_in_a_real_browser_show_the_runs_a_run_live_and_two_runs_compared() {
    let log = Log::new("sqlite");
    let Runs { ok, escalated, cut, .. } = log.runs();
    let server = log.serve(&[], &[]);
    let browser = zu_tests::webdriver::Browser::start();
    let shots = zu_tests::workspace_root().join("target/zu-test-output/serve");

    super::serve_access::log_in(&browser, &server);
    browser.wait(
        20,
        "the runs table",
        "return document.querySelectorAll('#runs tbody tr').length === 4",
    );
    let row = |task: &str| format!("return document.querySelector('tr[data-task=\"{task}\"] .status')?.textContent");
    assert_eq!(browser.eval(&row(&ok)), json!("success"));
    assert_eq!(browser.eval(&row(&cut)), json!("terminal"));
    assert_eq!(browser.eval(&row(&escalated)), json!("escalate"));
    browser.screenshot(&shots.join("runs.png"));

    browser.goto(&format!("{}/runs/{ok}", server.url));
    browser.wait(20, "the timeline", "return !!document.querySelector('.final')");
    assert_eq!(browser.text("#run-status").as_deref(), Some("success"));
    let calls = browser.eval("return [...document.querySelectorAll('.tool-call')].map(e => e.textContent)");
    assert!(
        calls[0].as_str().unwrap().contains("file_read") && calls[0].as_str().unwrap().contains("notes.md"),
        "{calls}"
    );
    assert!(browser.text(".model").unwrap().contains("reading the notes"));
    browser.screenshot(&shots.join("run.png"));
    browser.goto(&format!("{}/runs/{escalated}", server.url));
    browser.wait(20, "the verdict", "return !!document.querySelector('.verdict')");
    let verdict = browser.text(".verdict").unwrap();
    assert!(verdict.contains("empty") && verdict.contains("escalate"), "{verdict}");
    assert_eq!(browser.text("#run-status").as_deref(), Some("escalate"));

    // A run that is still going: its page shows new events as they are appended.
    let mut child = log
        .run_cmd(
            json!([{"tool_calls": [{"name": "file_read", "args": {"path": "notes.md"}}], "delay_ms": 3000}, {"text": "{\"live\": true}", "delay_ms": 1500}]),
            "watched live",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    let live = loop {
        let runs = server.get("/api/runs?q=watched");
        if let Some(t) = runs["runs"][0]["task_id"].as_str() {
            break t.to_owned();
        }
        assert!(Instant::now() < end);
        std::thread::sleep(Duration::from_millis(20));
    };
    browser.goto(&format!("{}/runs/{live}", server.url));
    browser.wait(
        20,
        "the live tool call",
        "return !!document.querySelector('.tool-call.new')",
    );
    browser.wait(
        20,
        "the live end",
        "return document.querySelector('#run-status').textContent === 'success'",
    );
    child.wait().unwrap();
    browser.screenshot(&shots.join("live.png"));

    browser.goto(&format!("{}/compare?a={ok}&b={live}", server.url));
    browser.wait(
        20,
        "the comparison",
        "return !!document.querySelector('#compare-table tr[data-field]')",
    );
    let differing = browser.eval("return document.querySelectorAll('#compare-table tr[data-diff]').length");
    assert!(differing.as_u64().unwrap() >= 1, "differences are marked");
    browser.screenshot(&shots.join("compare.png"));
    assert!(Path::new(&shots.join("run.png")).metadata().unwrap().len() > 1000);
}

#[test]
fn the_pages_come_from_the_binary_and_reach_for_nothing_outside_it() {
    let log = Log::new("jsonl");
    log.run(json!([{"text": "{}"}]), "q");
    let server = log.serve(&[], &[]);
    for path in ["/", "/assets/app.js", "/assets/app.css", "/compare?a=x&b=y"] {
        let body = server.request("GET", path).call().unwrap().into_string().unwrap();
        assert!(body.len() > 100, "{path}");
        for outside in ["http://", "https://", "//cdn", "@import"] {
            assert!(!body.contains(outside), "{path} reaches outside the binary: {outside}");
        }
    }
}
