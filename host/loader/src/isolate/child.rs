//! The plugin process (`zu __serve FILE DISPLAY`): loads one library,
//! constructs the plugins the host asks for, and serves their calls, one at
//! a time, asking the host about the run when a plugin does. Whatever the
//! library prints goes to stderr; the frames use private descriptors.

use std::cell::{OnceCell, RefCell};
use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::Value;
use zu_plugin_api::contracts::{Event, JsonObject, RunResult, TaskSpec};
use zu_plugin_api::ffi::Declaration;
use zu_plugin_api::filter::{EventFilter, StoredEvent};
use zu_plugin_api::ports::{panic_message, Continuation, ModelRequest, PluginError, RunContext};
use zu_plugin_api::version::Kind;
use zu_runtime::{LoadError, Registry};

use super::protocol::{encode, raw, read, Callback, FromChild, Raw, ToChild, Turn, TurnAnswer, RESYNC};
use crate::checks::LayoutCache;
use crate::pipe::{self, FrameReader};
use crate::verdict::{self, Verdict};

/// The hidden subcommand that runs [`child_main`].
pub const SERVE_COMMAND: &str = "__serve";

struct Channel {
    input: RefCell<FrameReader>,
    output: RefCell<File>,
}

impl Channel {
    fn send(&self, message: &FromChild) -> bool {
        pipe::write_frame(&mut *self.output.borrow_mut(), &encode(message)).is_ok()
    }

    fn receive(&self) -> Option<ToChild> {
        let frame = self.input.borrow_mut().read(None).ok()?;
        match serde_json::from_slice(&frame) {
            Ok(message) => Some(message),
            Err(e) => {
                eprintln!("zu plugin process: a frame from the host is not a message ({e}); stopping");
                None
            }
        }
    }
}

/// The run as the plugin reads it: each question goes to the host.
struct RemoteContext<'a> {
    channel: &'a Channel,
    spec: OnceCell<TaskSpec>,
    observation: OnceCell<Option<Value>>,
}

impl RemoteContext<'_> {
    fn ask(&self, question: Callback) -> Result<Value, PluginError> {
        if !self.channel.send(&FromChild::Callback(question)) {
            return Err(PluginError::failed("the host went away"));
        }
        match self.channel.receive() {
            Some(ToChild::Answer { value }) => value,
            _ => Err(PluginError::failed(
                "the host answered a run-context question out of turn",
            )),
        }
    }
}

impl RunContext for RemoteContext<'_> {
    fn spec(&self) -> &TaskSpec {
        self.spec.get_or_init(|| {
            self.ask(Callback::Spec)
                .ok()
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_else(|| TaskSpec::new(""))
        })
    }
    fn observation(&self) -> Option<&Value> {
        self.observation
            .get_or_init(|| self.ask(Callback::Observation).ok().filter(|v| !v.is_null()))
            .as_ref()
    }
    fn event_count(&self) -> u64 {
        self.ask(Callback::EventCount)
            .ok()
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
    }
    fn query(&self, filter: &EventFilter, limit: Option<u64>, after_seq: u64) -> Result<Vec<StoredEvent>, PluginError> {
        let v = self.ask(Callback::Query {
            filter: filter.to_json(),
            limit,
            after_seq,
        })?;
        serde_json::from_value(v).map_err(|e| PluginError::failed(format!("malformed events from the host: {e}")))
    }
}

fn arg<T: DeserializeOwned>(args: &RawValue, what: &str) -> Result<T, PluginError> {
    read(args, what)
}

fn out<T: serde::Serialize>(value: T) -> Result<Raw, PluginError> {
    raw(&value)
}

/// The library, its plugins, and the conversations its providers hold.
struct Served<'a> {
    display: &'a Path,
    verdict: Verdict,
    declarations: Vec<Declaration>,
    registry: Registry,
    conversations: zu_plugin_api::ffi::Conversations<(String, u64), ModelRequest>,
}

impl Served<'_> {
    fn construct(&mut self, kind: Kind, name: &str, config: Value) -> Option<LoadError> {
        let refused = match &self.verdict {
            Verdict::Refused(e) => Some(e.clone()),
            Verdict::Plugins(plugins) => match plugins.iter().find(|p| p.kind == kind.as_str() && p.name == name) {
                Some(p) => p.outcome.clone().err(),
                None => Some(LoadError::ConstructorFailed {
                    origin: self.display.display().to_string(),
                    kind,
                    name: name.to_owned(),
                    message: "the library declares no such plugin".into(),
                }),
            },
        };
        if refused.is_some() {
            return refused;
        }
        let decl = self
            .declarations
            .iter()
            .find(|d| d.kind() == kind.as_str() && d.name() == name)?;
        let info = match crate::verdict::verify(&mut LayoutCache::default(), self.display, decl) {
            Ok(info) => info,
            Err(e) => return Some(e),
        };
        match crate::construct(kind, decl, &config) {
            Ok(object) => self.registry.register(info, object).err(),
            Err(e) => Some(crate::constructor_error(&info, e)),
        }
    }

    fn turn(&mut self, name: &str, turn: Turn) -> Result<Raw, PluginError> {
        let provider = self
            .registry
            .provider(name)
            .ok_or_else(|| PluginError::failed("no such provider"))?;
        let key = (name.to_owned(), turn.conversation);
        let held = self.conversations.take(&key);
        let mut request = match held {
            _ if turn.base == 0 => ModelRequest::default(),
            Some(r) if r.messages.len() == turn.base => r,
            _ => return Err(PluginError::failed(RESYNC)),
        };
        request.messages.extend(turn.messages);
        if let Some(tools) = turn.tools {
            request.tools = tools;
        }
        request.params = turn.params;
        request.time_left_ms = turn.time_left_ms;
        request.set_continuation(Some(Continuation {
            conversation: turn.conversation,
            unchanged: turn.base,
        }));
        let response = provider.complete(&request)?;
        self.conversations.keep(key, request);
        raw(&TurnAnswer {
            response: &response,
            model: provider.model(),
        })
    }

    fn call(
        &mut self,
        channel: &Channel,
        kind: Kind,
        name: &str,
        method: &str,
        args: &RawValue,
    ) -> Result<Raw, PluginError> {
        let ctx = RemoteContext {
            channel,
            spec: OnceCell::new(),
            observation: OnceCell::new(),
        };
        let r = &self.registry;
        let missing = || PluginError::failed(format!("the plugin process holds no {kind} plugin {name:?}"));
        match (kind, method) {
            (Kind::Tools, _) => {
                let tool = r.tool(name).ok_or_else(missing)?;
                match method {
                    "schema" => out(tool.schema()),
                    "prompt_fragment" => out(tool.prompt_fragment()),
                    "call" => out(tool.call(&ctx, arg::<JsonObject>(args, "tool arguments")?)?),
                    _ => Err(unknown(kind, method)),
                }
            }
            (Kind::Providers, "complete") => self.turn(name, arg(args, "provider turn")?),
            (Kind::Providers, _) => {
                let p = r.provider(name).ok_or_else(missing)?;
                match method {
                    "capabilities" => out(p.capabilities()),
                    "model" => out(p.model()),
                    _ => Err(unknown(kind, method)),
                }
            }
            (Kind::Detectors, _) => {
                let d = r.detector(name).ok_or_else(missing)?;
                match method {
                    "scope" => out(d.scope()),
                    "inspect" => out(d.inspect(&ctx)?),
                    _ => Err(unknown(kind, method)),
                }
            }
            (Kind::Validators, _) => {
                let v = r.validator(name).ok_or_else(missing)?;
                match method {
                    "check" => out(v.check(&arg::<RunResult>(args, "run result")?, &ctx)?),
                    _ => Err(unknown(kind, method)),
                }
            }
            (Kind::Sinks, _) => {
                let s = r.sink(name).ok_or_else(missing)?;
                match method {
                    "append" => out(s.append(&arg::<Event>(args, "event")?)?),
                    "append_batch" => out(s.append_batch(&arg::<Vec<Event>>(args, "event batch")?)?),
                    "query" => {
                        let (filter, limit, after): (JsonObject, Option<u64>, u64) = arg(args, "query")?;
                        let filter =
                            EventFilter::from_json(&filter).map_err(|e| PluginError::invalid(e.to_string()))?;
                        out(s.query(&filter, limit, after)?)
                    }
                    "count" => {
                        let filter: JsonObject = arg(args, "filter")?;
                        let filter =
                            EventFilter::from_json(&filter).map_err(|e| PluginError::invalid(e.to_string()))?;
                        out(s.count(&filter)?)
                    }
                    "close" => out(s.close()?),
                    _ => Err(unknown(kind, method)),
                }
            }
            (Kind::Backends, _) => {
                let b = r.backend(name).ok_or_else(missing)?;
                match method {
                    "launch" => out(b.launch(&arg::<JsonObject>(args, "sandbox spec")?)?),
                    "exec" => {
                        let (sandbox, call): (Value, zu_plugin_api::ports::ToolCall) = arg(args, "exec")?;
                        out(b.exec(&sandbox, &call)?)
                    }
                    "destroy" => out(b.destroy(&arg::<Value>(args, "sandbox handle")?)?),
                    _ => Err(unknown(kind, method)),
                }
            }
            (Kind::Policies, _) => {
                let p = r.policy(name).ok_or_else(missing)?;
                match method {
                    "capabilities" => out(p.capabilities()),
                    "model" => out(p.model()),
                    "act" => {
                        let (observation, tools): (
                            zu_plugin_api::content::Observation,
                            Vec<zu_plugin_api::ports::ToolSpec>,
                        ) = arg(args, "act")?;
                        out(p.act(&observation, &tools)?)
                    }
                    _ => Err(unknown(kind, method)),
                }
            }
            (Kind::Triggers, _) => {
                let t = r.trigger(name).ok_or_else(missing)?;
                match method {
                    "source" => out(t.source()),
                    "next_event" => out(t.next_event()?),
                    _ => Err(unknown(kind, method)),
                }
            } // No arm for "any other kind": a new kind fails to compile here.
        }
    }
}

fn unknown(kind: Kind, method: &str) -> PluginError {
    PluginError::invalid(format!("{kind} plugins have no method {method:?}"))
}

/// The body of `zu __serve FILE DISPLAY`.
pub fn child_main(file: &Path, display: &Path) -> i32 {
    // The sandbox first: the library is opened (and its constructors run) inside it.
    // (Its directory, read-only: Landlock rules hold inodes, and another zu may
    // put a fresh copy in place, by a rename, before this process opens it.)
    let applied = crate::sandbox::enter(&[file.parent().unwrap_or(file).to_owned()]);
    let (input, output) = pipe::claim_stdio();
    let channel = Channel {
        input: RefCell::new(input),
        output: RefCell::new(output),
    };
    let (verdict, declarations) = verdict::examine(&mut LayoutCache::default(), file, display);
    let mut served = Served {
        display,
        verdict,
        declarations,
        registry: Registry::new(),
        conversations: Default::default(),
    };
    while let Some(message) = channel.receive() {
        let answer = match message {
            ToChild::Construct { kind, name, config } => {
                let error = catch_unwind(AssertUnwindSafe(|| served.construct(kind, &name, config)))
                    .unwrap_or_else(|p| Some(crate::panicked_while_constructing(display, kind, &name, &*p)));
                FromChild::Constructed {
                    error,
                    applied: applied.clone(),
                }
            }
            ToChild::Call {
                kind,
                name,
                method,
                args,
            } => {
                let result = catch_unwind(AssertUnwindSafe(|| served.call(&channel, kind, &name, &method, &args)))
                    .unwrap_or_else(|p| Err(PluginError::Panicked(panic_message(&*p))));
                FromChild::Done { result }
            }
            ToChild::Answer { .. } => continue, // an answer nobody asked for
        };
        if !channel.send(&answer) {
            break;
        }
    }
    // The host is gone or done: what the plugins started goes with this process.
    // SAFETY: kill takes two integers; the group is this process's own.
    unsafe { libc::kill(0, libc::SIGKILL) };
    0
}
