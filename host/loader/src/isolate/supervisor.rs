//! One plugin process per library, supervised: started on first need, the
//! library's plugins constructed in it, calls made one at a time under their
//! deadline (a call that overruns kills the process: a real cancellation),
//! and a process that died replaced for the next call, its plugins
//! constructed again with the same configs.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use zu_plugin_api::filter::EventFilter;
use zu_plugin_api::ports::{PluginError, RunContext};
use zu_plugin_api::version::Kind;
use zu_runtime::LoadError;

use super::child::SERVE_COMMAND;
use super::protocol::{encode, Callback, FromChild, Raw, ToChild};
use crate::pipe::{HelperChild, ReadError};
use crate::sandbox::{self, Applied, Policy};

/// The deadline of a call made outside a run (a sink's append, a listing).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

struct State {
    child: Option<HelperChild>,
    /// The plugins constructed so far, with their configs, to construct
    /// again in a fresh process.
    constructed: Vec<(Kind, String, Value)>,
}

/// The process of one library.
pub struct Supervisor {
    exe: PathBuf,
    file: PathBuf,
    display: PathBuf,
    construct_timeout: Duration,
    /// The sandbox its process runs in (`None`: none, for measuring).
    policy: Option<Policy>,
    /// What the process's sandbox enforced, as it last said.
    applied: Mutex<Option<Applied>>,
    /// Its scratch directory (`fs:write`), removed with the supervisor.
    scratch: Option<PathBuf>,
    state: Mutex<State>,
}

/// Why a call to the process produced no answer.
enum Failure {
    Ended(String),
    Overran,
    Protocol(String),
}

impl Supervisor {
    /// A supervisor for the library `file` (its private copy), named
    /// `display` in messages, started with `exe __serve`.
    pub fn new(exe: &Path, file: &Path, display: &Path, construct_timeout: Duration, policy: Option<Policy>) -> Self {
        let mut policy = policy;
        let scratch = policy.as_mut().filter(|p| p.scratch).and_then(|p| {
            let dir = scratch_dir()
                .map_err(|e| tracing::warn!(error = %e, "no scratch directory"))
                .ok()?;
            p.write.push(dir.clone());
            Some(dir)
        });
        Supervisor {
            exe: exe.to_owned(),
            file: file.to_owned(),
            display: display.to_owned(),
            construct_timeout,
            policy,
            applied: Mutex::new(None),
            scratch,
            state: Mutex::new(State {
                child: None,
                constructed: Vec::new(),
            }),
        }
    }

    fn spawn(&self, label: &str) -> std::io::Result<HelperChild> {
        let prefix = format!(
            "[plugin {}] ",
            self.display.file_name().unwrap_or_default().to_string_lossy()
        );
        let file = self.file.to_string_lossy();
        let display = self.display.to_string_lossy();
        let env = self.policy.as_ref().map(|p| {
            let mut env = sandbox::environment(p);
            env.extend(
                self.scratch
                    .iter()
                    .map(|d| ("TMPDIR".to_owned(), d.clone().into_os_string())),
            );
            env
        });
        let gate = self.policy.as_ref().and_then(|p| p.gate(label));
        HelperChild::spawn(
            &self.exe,
            &[SERVE_COMMAND, &file, &display],
            Some(prefix),
            env.as_deref(),
            gate,
        )
    }

    /// The plugins its process holds (`KIND.NAME`, joined by `+`), or the
    /// library's name before any: how the egress gate's notes name it.
    fn label_of(state: &State, display: &Path) -> String {
        if state.constructed.is_empty() {
            return display.file_name().unwrap_or_default().to_string_lossy().into_owned();
        }
        let names: Vec<String> = state.constructed.iter().map(|(k, n, _)| format!("{k}.{n}")).collect();
        names.join("+")
    }

    /// Sends `message` and answers callbacks (through `ctx`) until the
    /// process answers, or ends, or `deadline` passes (then it is killed).
    fn exchange(
        child: &mut HelperChild,
        message: &ToChild,
        ctx: Option<&dyn RunContext>,
        deadline: Instant,
    ) -> Result<FromChild, Failure> {
        if child.send(&encode(message)).is_err() {
            return Err(Failure::Ended(child.end_within(Duration::from_secs(1)).to_string()));
        }
        loop {
            let frame = match child.output.read(Some(deadline)) {
                Ok(f) => f,
                Err(ReadError::Timeout) => {
                    child.kill();
                    return Err(Failure::Overran);
                }
                Err(ReadError::Eof) => {
                    return Err(Failure::Ended(child.end_within(Duration::from_secs(1)).to_string()))
                }
                Err(ReadError::Bad(e)) => {
                    child.kill();
                    return Err(Failure::Protocol(e));
                }
            };
            let answer: FromChild = match serde_json::from_slice(&frame) {
                Ok(a) => a,
                Err(e) => {
                    child.kill();
                    return Err(Failure::Protocol(e.to_string()));
                }
            };
            let FromChild::Callback(question) = answer else {
                return Ok(answer);
            };
            let value = match ctx {
                Some(ctx) => answer_callback(ctx, question),
                None => Err(PluginError::failed("this call has no run context")),
            };
            if child.send(&encode(&ToChild::Answer { value })).is_err() {
                return Err(Failure::Ended(child.end_within(Duration::from_secs(1)).to_string()));
            }
        }
    }

    fn load_error(&self, kind: Kind, name: &str, failure: Failure) -> LoadError {
        let origin = self.display.display().to_string();
        match failure {
            Failure::Ended(what) => LoadError::ConstructorCrashed {
                origin,
                kind,
                name: name.to_owned(),
                what,
            },
            Failure::Overran => LoadError::ConstructorTimeout {
                origin,
                kind,
                name: name.to_owned(),
                millis: self.construct_timeout.as_millis() as u64,
            },
            Failure::Protocol(detail) => LoadError::ConstructorCrashed {
                origin,
                kind,
                name: name.to_owned(),
                what: format!("answered something that is not a frame ({detail})"),
            },
        }
    }

    /// A running process with every constructed plugin in it.
    fn ready<'a>(&self, state: &'a mut State) -> Result<&'a mut HelperChild, PluginError> {
        if state.child.is_none() {
            let mut child = self
                .spawn(&Self::label_of(state, &self.display))
                .map_err(|e| PluginError::failed(format!("cannot start the plugin process: {e}")))?;
            for (kind, name, config) in &state.constructed {
                let message = ToChild::Construct {
                    kind: *kind,
                    name: name.clone(),
                    config: config.clone(),
                };
                let deadline = Instant::now() + self.construct_timeout;
                match Self::exchange(&mut child, &message, None, deadline) {
                    Ok(FromChild::Constructed { error: None, applied }) => self.noted(applied),
                    Ok(FromChild::Constructed { error: Some(e), .. }) => {
                        child.kill();
                        return Err(PluginError::failed(format!(
                            "the restarted plugin process refused it: {e}"
                        )));
                    }
                    Ok(_) | Err(_) => {
                        child.kill();
                        return Err(PluginError::failed(
                            "the restarted plugin process could not construct it",
                        ));
                    }
                }
            }
            state.child = Some(child);
        }
        Ok(state.child.as_mut().expect("started just above"))
    }

    fn noted(&self, applied: Option<Applied>) {
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = applied;
    }

    /// The sandbox its process runs in, and what it enforced (once started).
    pub fn sandbox(&self) -> (Option<Policy>, Option<Applied>) {
        let applied = self.applied.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (self.policy.clone(), applied)
    }

    /// Constructs plugin `kind`/`name` in the library's process, under the
    /// constructor deadline.
    pub fn construct(&self, kind: Kind, name: &str, config: &Value) -> Result<(), LoadError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let child = self.ready(&mut state).map_err(|e| LoadError::ConstructorFailed {
            origin: self.display.display().to_string(),
            kind,
            name: name.to_owned(),
            message: e.to_string(),
        })?;
        let message = ToChild::Construct {
            kind,
            name: name.to_owned(),
            config: config.clone(),
        };
        let deadline = Instant::now() + self.construct_timeout;
        match Self::exchange(child, &message, None, deadline) {
            Ok(FromChild::Constructed { error: None, applied }) => {
                self.noted(applied);
                state.constructed.push((kind, name.to_owned(), config.clone()));
                let label = Self::label_of(&state, &self.display);
                if let Some(gate) = state.child.as_ref().and_then(|c| c.gate.as_ref()) {
                    gate.relabel(&label);
                }
                Ok(())
            }
            Ok(FromChild::Constructed { error: Some(e), .. }) => Err(e),
            Ok(other) => {
                state.child.take().map(|mut c| c.kill());
                Err(self.load_error(kind, name, Failure::Protocol(format!("{other:?}"))))
            }
            Err(f) => {
                state.child = None;
                Err(self.load_error(kind, name, f))
            }
        }
    }

    /// Calls `method` of plugin `kind`/`name` with `args`; the deadline is
    /// the calling plugin call's ([`zu_runtime::deadline::current`]), else
    /// [`DEFAULT_CALL_TIMEOUT`].
    pub fn call(
        &self,
        kind: Kind,
        name: &str,
        method: &str,
        args: Raw,
        ctx: Option<&dyn RunContext>,
    ) -> Result<Raw, PluginError> {
        let deadline = zu_runtime::deadline::current().unwrap_or_else(|| Instant::now() + DEFAULT_CALL_TIMEOUT);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let child = self.ready(&mut state)?;
        let message = ToChild::Call {
            kind,
            name: name.to_owned(),
            method: method.to_owned(),
            args,
        };
        match Self::exchange(child, &message, ctx, deadline) {
            Ok(FromChild::Done { result }) => result,
            Ok(other) => {
                state.child.take().map(|mut c| c.kill());
                Err(PluginError::failed(format!(
                    "the plugin process answered out of turn: {other:?}"
                )))
            }
            Err(failure) => {
                state.child = None;
                Err(match failure {
                    Failure::Ended(what) => PluginError::ProcessEnded(what),
                    Failure::Overran => PluginError::failed("the call overran its deadline; its process was killed"),
                    Failure::Protocol(e) => PluginError::failed(format!("the plugin process broke the protocol: {e}")),
                })
            }
        }
    }

    /// Stops the process (the host is done with the library).
    pub fn shut_down(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut c) = state.child.take() {
            c.finish(Duration::from_millis(200));
        }
    }
}

/// A fresh directory only this user may enter, for one plugin process.
fn scratch_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("zu-scratch-{}-{n}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.shut_down();
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The host's answer to a plugin's run-context question.
fn answer_callback(ctx: &dyn RunContext, question: Callback) -> Result<Value, PluginError> {
    let encode = |v: Result<Value, serde_json::Error>| v.map_err(|e| PluginError::failed(e.to_string()));
    match question {
        Callback::Spec => encode(serde_json::to_value(ctx.spec())),
        Callback::Observation => Ok(ctx.observation().cloned().unwrap_or(Value::Null)),
        Callback::EventCount => Ok(ctx.event_count().into()),
        Callback::Query {
            filter,
            limit,
            after_seq,
        } => {
            let filter = EventFilter::from_json(&filter).map_err(|e| PluginError::invalid(e.to_string()))?;
            encode(serde_json::to_value(ctx.query(&filter, limit, after_seq)?))
        }
    }
}
