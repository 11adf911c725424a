//! Real providers and tools: the time Zu adds to one `openai` provider turn
//! against a local server that answers at once (the turn through the plugin
//! boundary, minus a bare HTTP POST of the same body to the same server),
//! and one MCP tool call round trip to a local stdio server (the npm
//! reference server `server-everything`'s `echo`), median and p99.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};
use zu_plugin_api::ports::ModelRequest;
use zu_plugin_api::version::Kind;

use crate::boundary::{idle_view, load, plugin_dir};
use crate::harness::{check, BenchError};

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(name: &str, mut ns: Vec<u64>) -> Value {
    ns.sort_unstable();
    let out =
        json!({"name": name, "calls": ns.len(), "median_ns": percentile(&ns, 0.5), "p99_ns": percentile(&ns, 0.99)});
    eprintln!(
        "  {name:<58} median {:>9.1} us  p99 {:>9.1} us",
        out["median_ns"].as_f64().unwrap_or(0.0) / 1e3,
        out["p99_ns"].as_f64().unwrap_or(0.0) / 1e3
    );
    out
}

/// A chat-completions server on a free port that answers every request at
/// once with the same tool call (keep-alive, so the figures are not connects);
/// it keeps the last request body it got.
fn instant_server(last: Arc<Mutex<Vec<u8>>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let url = format!("http://{}", listener.local_addr().expect("bound"));
    let body = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "bench-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "noop", "arguments": "{\"x\": 1}"}}]},
            "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}})
    .to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (body, last) = (body.clone(), last.clone());
            std::thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut out = stream;
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut req = vec![0; len];
                    if reader.read_exact(&mut req).is_err() {
                        return;
                    }
                    *last.lock().unwrap_or_else(|p| p.into_inner()) = req;
                    // One write: a head and a body in two would wait on Nagle and delayed ACKs.
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if out.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// A 12-message conversation with one tool schema, as a mid-run turn sends.
fn request() -> ModelRequest {
    let mut messages = vec![
        json!({"role": "system", "content": "You are Zu, a tool-using agent."}),
        json!({"role": "user", "content": "Find the launch date."}),
    ];
    for i in 0..5 {
        messages.push(json!({"role": "assistant", "tool_calls": [{"name": "noop", "args": {"x": i}}]}));
        messages.push(json!({"role": "tool", "name": "noop", "content": "{\"ok\":true}"}));
    }
    let mut r = ModelRequest::default();
    r.messages = messages;
    r.tools = vec![json!({"name": "noop", "description": "does nothing", "parameters": {"type": "object"}})];
    r
}

/// One `openai` turn through the library boundary against a server that
/// answers at once, a bare POST of the same body to it, and the difference.
pub fn bench_provider_turn(libs: &Path, calls: usize) -> Result<Value, BenchError> {
    let last = Arc::new(Mutex::new(Vec::new()));
    let url = instant_server(last.clone());
    let plugins = plugin_dir(libs, &["zu_plugin_models"]);
    let config = json!({"base_url": format!("{url}/v1"), "model": "bench-model"});
    let registry = load(plugins.path(), &[(Kind::Providers, "openai", config)])?;
    let provider = registry
        .provider("openai")
        .ok_or_else(|| BenchError("openai did not load".into()))?;
    let req = request();
    check(
        provider.complete(&req).map(|r| r.tool_calls.len()).ok() == Some(1),
        "openai answered wrongly",
    )?;
    let time = |f: &dyn Fn()| {
        let t = Instant::now();
        f();
        t.elapsed().as_nanos() as u64
    };
    for _ in 0..200 {
        provider.complete(&req).map_err(|e| BenchError(e.to_string()))?;
    }
    let turns: Vec<u64> = (0..calls).map(|_| time(&|| drop(provider.complete(&req)))).collect();
    // The very body the provider sent.
    let body = String::from_utf8(last.lock().unwrap_or_else(|p| p.into_inner()).clone())
        .map_err(|e| BenchError(e.to_string()))?;
    check(body.contains("\"messages\""), "the provider's request was not seen")?;
    let agent = ureq::AgentBuilder::new().build();
    let post = || {
        let r = agent
            .post(&format!("{url}/v1/chat/completions"))
            .set("content-type", "application/json")
            .send_string(&body);
        drop(r.map(|r| r.into_string()));
    };
    for _ in 0..200 {
        post();
    }
    let bare: Vec<u64> = (0..calls).map(|_| time(&post)).collect();
    let turn = summary(
        "openai turn through the plugin boundary (server answers at once)",
        turns,
    );
    let floor = summary("bare HTTP POST of the same body to the same server", bare);
    let own = |k: &str| turn[k].as_i64().unwrap_or(0) - floor[k].as_i64().unwrap_or(0);
    let out = json!({"turn": turn, "bare_post": floor, "zu_overhead_median_ns": own("median_ns"), "zu_overhead_p99_ns": own("p99_ns")});
    eprintln!(
        "  Zu's own time per turn: median {:.1} us, p99 {:.1} us",
        own("median_ns") as f64 / 1e3,
        own("p99_ns") as f64 / 1e3
    );
    Ok(out)
}

/// One MCP tool call round trip (`everything__echo`) to the reference
/// server over stdio; left out when the server is not installed.
pub fn bench_mcp_call(calls: usize) -> Result<Value, BenchError> {
    let bin = zu_tests::workspace_root().join("target/mcp-servers/node_modules/.bin/mcp-server-everything");
    if !bin.exists() {
        return Ok(
            json!({"left out": format!("{} is not installed (bash scripts/test.sh installs it)", bin.display())}),
        );
    }
    let config: zu_mcp::McpConfig = toml::from_str(&format!(
        "[servers.everything]\ncommand = {:?}\nenv_vars = [\"PATH\"]\ntools = [\"echo\"]\n",
        bin.display().to_string()
    ))
    .map_err(|e| BenchError(e.to_string()))?;
    let mut registry = zu_runtime::Registry::new();
    let _host = zu_mcp::start(&config, Path::new("."), &mut registry, None);
    let tool = registry.tool("everything__echo").ok_or_else(|| {
        BenchError(format!(
            "the MCP server did not start: {:?}",
            registry.failures().first().map(|f| f.error.to_string())
        ))
    })?;
    let ctx = idle_view();
    let args = json!({"message": "bench"}).as_object().cloned().unwrap_or_default();
    for _ in 0..200 {
        let out = tool.call(&ctx, args.clone()).map_err(|e| BenchError(e.to_string()))?;
        check(
            out["content"].as_str().is_some_and(|c| c.contains("bench")),
            "echo answered wrongly",
        )?;
    }
    let ns: Vec<u64> = (0..calls)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(tool.call(&ctx, args.clone()).ok());
            t.elapsed().as_nanos() as u64
        })
        .collect();
    Ok(summary("MCP tool call round trip (stdio, server-everything echo)", ns))
}
