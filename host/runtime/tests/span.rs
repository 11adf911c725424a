//! Every log line of a run carries its task id, including the lines written
//! on the worker thread that drives it (a global subscriber, so its own
//! test binary).

use std::io::Write;
use std::sync::{Arc, Mutex};

use zu_runtime::api::prelude::*;
use zu_runtime::{run_task, EventBus, PluginObject, Registry, RunOptions};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Failing;
impl Tool for Failing {
    fn call(&self, _: &dyn RunContext, _: JsonObject) -> Result<JsonObject, PluginError> {
        Err(PluginError::failed("the disk is full"))
    }
}

struct CallThenAnswer(Mutex<u32>);
impl ModelProvider for CallThenAnswer {
    fn complete(&self, _: &ModelRequest) -> Result<ModelResponse, PluginError> {
        let mut n = self.0.lock().unwrap();
        *n += 1;
        Ok(if *n == 1 {
            ModelResponse {
                tool_calls: vec![ToolCall {
                    name: "failing".into(),
                    args: JsonObject::new(),
                }],
                finish: Finish::ToolCalls,
                ..Default::default()
            }
        } else {
            ModelResponse {
                text: Some("{}".into()),
                ..Default::default()
            }
        })
    }
}

#[test]
fn a_runs_log_lines_carry_its_task_and_trace_ids_from_the_worker_thread() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .init();
    let mut registry = Registry::new();
    registry
        .register_native("failing", Envelope::NONE, PluginObject::Tool(Arc::new(Failing)))
        .unwrap();
    let spec = TaskSpec::new("q");
    let bus = Arc::new(EventBus::new());
    let provider = Arc::new(CallThenAnswer(Mutex::new(0)));
    let r = run_task(&spec, provider, &registry, &bus, &RunOptions::default()).unwrap();
    assert_eq!(r.status, Status::Success);
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("tool failed"))
        .unwrap_or_else(|| panic!("no tool warning in {text}"));
    assert!(line.contains(&format!("task={}", spec.task_id)), "{line}");
    assert!(line.contains("run{"), "the run span: {line}");
}
