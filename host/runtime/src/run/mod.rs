//! The interpreter loop, a port of the reference `run_task`: ask the provider
//! for an action, dispatch tools at or below the current tier, run detector
//! checkpoints, repeat until the model finalises or a budget is spent; on
//! finalise run the validators; climb the tier ladder on ESCALATE; replay a
//! recorded track first; shape what the model reads; resume a crashed run.
//! This file is the public face: [`run_task`], [`resume_task`], their
//! options and errors.

mod budget;
mod checkpoints;
mod driver;
mod observation;
mod record;
mod replay;
mod resume;
mod shaping;
mod steps;
mod text;
mod tools;
mod view;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;
use zu_plugin_api::contracts::{Budget, RunResult, TaskSpec};
use zu_plugin_api::filter::{EventFilter, FilterField};
use zu_plugin_api::ports::{ModelProvider, ModelRequest};
use zu_plugin_api::version::Kind;

use budget::Spend;
use checkpoints::{CheckSet, Ladder, ToolEntry};
use record::{Abandon, Record};
pub use resume::ResumeError;
pub use shaping::{Shaping, Strategy};
use steps::{Loop, Phase};
pub use text::parse_value;
pub use view::RunView;

use crate::bus::{BusError, EventBus};
use crate::cost::Prices;
pub use crate::deadline::Cancel;
use crate::registry::Registry;
use crate::track::{Jitter, Track};

/// How strictly tools with off-box reach are contained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Containment {
    /// Run in-process; envelopes are recorded (the default).
    #[default]
    Audit,
    /// Refuse, before anything runs, when a plugin taking part runs without
    /// every layer of the sandbox (see `PluginInfo::sandbox`) and is not in
    /// `RunOptions::trusted`.
    Required,
}

impl std::str::FromStr for Containment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "audit" => Ok(Containment::Audit),
            "required" => Ok(Containment::Required),
            other => Err(format!("unknown containment {other:?}: expected audit or required")),
        }
    }
}

/// What a detector or validator that fails to give a verdict (an error, a
/// panic) means for the run. Either way the failure is on the log as
/// `harness.check.failed`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Checks {
    /// Skip the failed check and go on, as the reference does (the default).
    #[default]
    FailOpen,
    /// End the run TERMINAL with reason `check_failed:<name>`.
    FailClosed,
}

impl std::str::FromStr for Checks {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fail-open" => Ok(Checks::FailOpen),
            "fail-closed" => Ok(Checks::FailClosed),
            other => Err(format!(
                "unknown checks mode {other:?}: expected fail-open or fail-closed"
            )),
        }
    }
}

/// Per-run settings beyond the task spec.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Providers that take over when the ladder reaches a tier.
    pub providers_by_tier: BTreeMap<u32, Arc<dyn ModelProvider>>,
    /// The containment floor.
    pub containment: Containment,
    /// What a failing detector or validator means.
    pub checks: Checks,
    /// A trace id shared with other runs (default: the task id).
    pub trace_id: Option<Uuid>,
    /// The tools that take part, by name (`None`: every registered tool).
    pub tools: Option<Vec<String>>,
    /// The detectors that take part (`None`: every registered detector).
    pub detectors: Option<Vec<String>>,
    /// The validators that take part (`None`: every registered validator).
    pub validators: Option<Vec<String>>,
    /// Asked from another thread (a signal handler), it stops the run: no
    /// further plugin call, `task.terminal` with the cancel's reason.
    pub cancel: Option<Arc<Cancel>>,
    /// A recorded path, replayed first (no model calls) when it matches the task.
    pub track: Option<Arc<Track>>,
    /// The budget in force instead of the task's when the track replays.
    pub replay_budget: Option<Budget>,
    /// Drives the frontier after a replay that did not diverge (a cheap model).
    pub finish_provider: Option<Arc<dyn ModelProvider>>,
    /// The median extra pause of a replayed step, in ms (0: none, and the
    /// recorded gaps are capped at 3 s).
    pub replay_jitter_ms: u64,
    /// What the model reads of large observations and of a long history.
    pub shaping: Shaping,
    /// Dollars the run may spend; it ends `budget:max_usd` once past them.
    /// Every provider of the run must have a price.
    pub max_usd: Option<f64>,
    /// The price table (default: the built-in one).
    pub prices: Option<Arc<Prices>>,
    /// Plugins (`KIND.NAME`) that `required` containment accepts outside a
    /// sandbox (in zu's process, an MCP server over HTTP).
    pub trusted: Vec<String>,
    /// What the run needs to be run again from its log (the plugins, their
    /// configs with secrets kept off, the options), recorded on `task.started`.
    pub plan: Option<serde_json::Value>,
}

/// Why a run could not produce a Result at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// `containment = required` with plugins that do not run with every
    /// layer of the sandbox enforced.
    #[error("containment is required, and these plugins would run without every layer of the sandbox: {}; run them in plugin processes on a kernel with Landlock, seccomp and user namespaces, mark them trusted, or use --containment audit (`zu sandbox` shows what this kernel enforces)", gaps.join("; "))]
    ContainmentRequired {
        /// Each plugin and what it lacks.
        gaps: Vec<String>,
    },
    /// The options name a plugin the registry does not hold.
    #[error("the run names {kind} plugin {name:?}, which is not loaded; loaded {kind}: {}", if loaded.is_empty() { "none".to_owned() } else { loaded.join(", ") })]
    UnknownPlugin {
        /// Its kind.
        kind: Kind,
        /// The name given.
        name: String,
        /// What the registry holds of that kind, sorted.
        loaded: Vec<String>,
    },
    /// A dollar budget with a provider whose model the price table does not price.
    #[error("--max-usd needs a price for every model the run may call, and {what} has none; add it to a price file (--prices FILE) or run without a dollar budget")]
    Unpriced {
        /// The provider's model, or that it names none.
        what: String,
    },
    /// The run to resume is not on the log or has ended.
    #[error(transparent)]
    Resume(#[from] ResumeError),
    /// The canonical event log refused an event.
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// The names of `kind` that take part: `chosen` (each one checked), or all.
fn participants(registry: &Registry, kind: Kind, chosen: Option<&[String]>) -> Result<Vec<String>, RunError> {
    let loaded = registry.names(kind);
    let Some(chosen) = chosen else {
        return Ok(loaded);
    };
    for name in chosen {
        if !loaded.contains(name) {
            return Err(RunError::UnknownPlugin {
                kind,
                name: name.clone(),
                loaded,
            });
        }
    }
    Ok(chosen.to_vec())
}

/// The `sandbox.applied` payload: the sandbox of each tool, detector and
/// validator taking part; `None` when none of them runs in one (a run all
/// in zu's process, as an embedder's).
fn sandboxes(registry: &Registry, tools: &[String], checks: &CheckSet) -> Option<serde_json::Value> {
    let detectors = checks.detectors.iter().map(|d| (Kind::Detectors, &d.0));
    let validators = checks.validators.iter().map(|v| (Kind::Validators, &v.0));
    let infos: Vec<&crate::registry::PluginInfo> = tools
        .iter()
        .map(|t| (Kind::Tools, t))
        .chain(detectors)
        .chain(validators)
        .filter_map(|(kind, name)| Some(&registry.get(kind, name)?.info))
        .collect();
    if infos.iter().all(|i| i.sandbox.is_none()) {
        return None;
    }
    let plugins: Vec<serde_json::Value> = infos
        .iter()
        .map(|info| {
            let (state, missing) = match &info.sandbox {
                None => ("none", Vec::new()),
                Some(m) if m.is_empty() => ("enforced", Vec::new()),
                Some(m) => ("partial", m.clone()),
            };
            serde_json::json!({"kind": info.kind, "name": info.name, "sandbox": state, "missing": missing})
        })
        .collect();
    Some(serde_json::json!({ "plugins": plugins }))
}

fn tool_entries(registry: &Registry, names: &[String]) -> Vec<ToolEntry> {
    names
        .iter()
        .filter_map(|name| {
            let entry = registry.get(Kind::Tools, name)?;
            let tool = registry.tool(name)?;
            let mut capabilities = entry.info.capabilities.clone();
            let mut egress = entry.info.egress.clone();
            capabilities.sort();
            egress.sort();
            Some(ToolEntry {
                name: name.clone(),
                schema: tool.schema(),
                prompt_fragment: tool.prompt_fragment(),
                tool,
                tier: entry.info.tier,
                capabilities,
                egress,
            })
        })
        .collect()
}

/// Runs one task to a Result. `provider` answers every tier without an
/// override in `options`; the registry supplies tools, detectors and
/// validators (all of them, or those `options` names); every event goes
/// through `bus`. Provider and tool calls run under the run's remaining wall
/// time: a call that overruns is abandoned and counts as timed out. Every
/// log line of the run carries its task and trace ids (a `run` span).
pub fn run_task(
    spec: &TaskSpec,
    provider: Arc<dyn ModelProvider>,
    registry: &Registry,
    bus: &Arc<EventBus>,
    options: &RunOptions,
) -> Result<RunResult, RunError> {
    let before = bus.count(&EventFilter::all().with(FilterField::TaskId, Some(spec.task_id.to_string())))?;
    run(spec, provider, registry, bus, options, None, before)
}

/// Continues task `task`'s run, which has no end on `bus`'s log (it was
/// killed or crashed): the spec and trace come from its `task.started`, the
/// conversation and what it spent from its events; it appends to the same
/// task and never makes again a tool call that returned. A run that ended
/// is refused ([`ResumeError::Ended`]).
pub fn resume_task(
    task: Uuid,
    provider: Arc<dyn ModelProvider>,
    registry: &Registry,
    bus: &Arc<EventBus>,
    options: &RunOptions,
) -> Result<RunResult, RunError> {
    let (spec, trace, resumed) = resume::find(bus, task)?;
    let of_task = EventFilter::all().with(FilterField::TaskId, Some(task.to_string()));
    let before = bus.count(&of_task)?.saturating_sub(resumed.events.len() as u64);
    let options = RunOptions {
        trace_id: Some(trace),
        track: None,
        ..options.clone()
    };
    run(&spec, provider, registry, bus, &options, Some(resumed), before)
}

/// The model of every provider a run may call, when it has a dollar budget.
fn check_prices(options: &RunOptions, prices: &Prices, main: &Arc<dyn ModelProvider>) -> Result<(), RunError> {
    if options.max_usd.is_none() {
        return Ok(());
    }
    let all = std::iter::once(main)
        .chain(options.providers_by_tier.values())
        .chain(options.finish_provider.iter());
    for p in all {
        match p.model() {
            Some(m) if prices.price(&m).is_some() => {}
            Some(m) => {
                return Err(RunError::Unpriced {
                    what: format!("model {m:?}"),
                })
            }
            None => {
                return Err(RunError::Unpriced {
                    what: "a provider that names no model".into(),
                })
            }
        }
    }
    Ok(())
}

fn run(
    spec: &TaskSpec,
    provider: Arc<dyn ModelProvider>,
    registry: &Registry,
    bus: &Arc<EventBus>,
    options: &RunOptions,
    resume: Option<resume::Resumed>,
    before: u64,
) -> Result<RunResult, RunError> {
    let prices = options.prices.clone().unwrap_or_default();
    check_prices(options, &prices, &provider)?;
    let mut tool_names = participants(registry, Kind::Tools, options.tools.as_deref())?;
    tool_names.sort();
    tool_names.dedup();
    let tools = tool_entries(registry, &tool_names);
    let checks = CheckSet {
        detectors: participants(registry, Kind::Detectors, options.detectors.as_deref())?
            .into_iter()
            .filter_map(|n| {
                let d = registry.detector(&n)?;
                let scope = d.scope();
                Some((n, d, scope))
            })
            .collect(),
        validators: participants(registry, Kind::Validators, options.validators.as_deref())?
            .into_iter()
            .filter_map(|n| Some((n.clone(), registry.validator(&n)?)))
            .collect(),
        mode: options.checks,
        deadline: Instant::now(), // set with the run's deadline below
    };

    if options.containment == Containment::Required {
        let taking_part = [
            (Kind::Tools, tool_names.clone()),
            (Kind::Detectors, checks.detectors.iter().map(|d| d.0.clone()).collect()),
            (
                Kind::Validators,
                checks.validators.iter().map(|v| v.0.clone()).collect(),
            ),
        ];
        let gaps: Vec<String> = taking_part
            .iter()
            .flat_map(|(kind, names)| names.iter().map(move |n| (*kind, n)))
            .filter_map(|(kind, n)| registry.get(kind, n)?.info.containment_gap(&options.trusted))
            .collect();
        if !gaps.is_empty() {
            return Err(RunError::ContainmentRequired { gaps });
        }
    }

    let spec = Arc::new(spec.clone());
    let top = tools.iter().map(|t| t.tier).max().unwrap_or(1);
    let track = options.track.clone().filter(|t| t.matches(&spec) && resume.is_none());
    let budget = match (&track, &options.replay_budget) {
        (Some(_), Some(b)) => b.clone(),
        _ => spec.budget.clone(),
    };
    let spent_before = resume.as_ref().map_or(Duration::ZERO, |r| {
        let (first, last) = (&r.events[0].event, &r.events[r.events.len() - 1].event);
        Duration::from_millis((last.ts() - first.ts()).num_milliseconds().max(0) as u64)
    });
    let start = Instant::now();
    // A wall time too large for the clock means "no deadline" in practice.
    let deadline = start
        .checked_add(Duration::from_secs(budget.wall_time_s).saturating_sub(spent_before))
        .unwrap_or_else(|| start + Duration::from_secs(60 * 60 * 24 * 365));
    let mut checks = checks;
    let sandboxes = sandboxes(registry, &tool_names, &checks);
    checks.deadline = deadline;
    let (trace_id, task_id) = (options.trace_id.unwrap_or(spec.task_id), spec.task_id);
    // At ERROR level so the span is enabled whenever any line is logged (a
    // span below the filter's level would not be, and lines would lose the ids).
    let span = tracing::error_span!("run", task = %task_id, trace = %trace_id);
    let stop = Arc::new(Abandon::default());
    let state = Loop {
        record: Record {
            bus: bus.clone(),
            trace_id,
            task_id,
            view: RunView::of_run(spec.clone(), bus.clone(), stop.root.clone(), before, Some(deadline)),
            stop,
        },
        ladder: Ladder {
            current: 1,
            ceiling: spec.max_tier.min(top),
        },
        replay: track.map(|track| replay::Replay {
            track,
            next: 0,
            soft_misses: 0,
            jitter: Jitter::new(trace_id, options.replay_jitter_ms),
        }),
        spec,
        budget,
        finish_provider: options.finish_provider.clone(),
        finishing: false,
        shaping: options.shaping,
        spend: Spend {
            usd: 0.0,
            max_usd: options.max_usd,
            prices,
            unpriced: None,
        },
        resume,
        spent_before,
        tools,
        checks,
        refused: registry.failures().to_vec(),
        plan: options.plan.clone(),
        sandboxes,
        provider,
        providers_by_tier: options.providers_by_tier.clone(),
        request: Arc::new(ModelRequest::default()),
        conversation: Uuid::new_v4().as_u64_pair().0,
        sent: 0,
        tokens: 0,
        tools_tier: 0,
        start,
        deadline,
        step: 0,
        phase: Phase::Start,
        last_verdict: None,
        in_call: false,
        taken_over: false,
        cancelled: None,
        outcome: None,
    };
    driver::run_to_end(state, span, options.cancel.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zu_plugin_api::contracts::Status;
    use zu_plugin_api::ports::{ModelResponse, PluginError};

    struct Answer;
    impl ModelProvider for Answer {
        fn complete(&self, _: &ModelRequest) -> Result<ModelResponse, PluginError> {
            Ok(ModelResponse {
                text: Some("{\"ok\": 1}".into()),
                ..Default::default()
            })
        }
    }

    /// A log that remembers each batch it stored, by event type.
    #[derive(Default)]
    struct Batches {
        stored: crate::MemorySink,
        batches: std::sync::Mutex<Vec<Vec<String>>>,
    }
    impl zu_plugin_api::ports::EventSink for Batches {
        fn append(&self, e: &zu_plugin_api::contracts::Event) -> Result<(), PluginError> {
            self.append_batch(std::slice::from_ref(e))
        }
        fn append_batch(&self, events: &[zu_plugin_api::contracts::Event]) -> Result<(), PluginError> {
            let types = events.iter().map(|e| e.event_type().to_owned()).collect();
            self.batches.lock().unwrap().push(types);
            events.iter().try_for_each(|e| self.stored.append(e))
        }
        fn query(
            &self,
            f: &zu_plugin_api::filter::EventFilter,
            l: Option<u64>,
            a: u64,
        ) -> Result<Vec<zu_plugin_api::filter::StoredEvent>, PluginError> {
            self.stored.query(f, l, a)
        }
        fn count(&self, f: &zu_plugin_api::filter::EventFilter) -> Result<u64, PluginError> {
            self.stored.count(f)
        }
    }

    /// The last event type the log had stored when each side effect began.
    #[derive(Default)]
    struct Witness {
        log: Arc<Batches>,
        seen: std::sync::Mutex<Vec<String>>,
    }
    impl Witness {
        fn look(&self, who: &str) {
            let all = zu_plugin_api::ports::EventSink::query(&*self.log, &Default::default(), None, 0).unwrap();
            let last = all.last().map_or("nothing", |s| s.event.event_type());
            self.seen.lock().unwrap().push(format!("{who} after {last}"));
        }
    }
    impl ModelProvider for Witness {
        fn complete(&self, r: &ModelRequest) -> Result<ModelResponse, PluginError> {
            self.look("provider");
            let asked = r.messages.iter().any(|m| m["role"] == "tool");
            Ok(ModelResponse {
                text: asked.then(|| "{\"ok\": 1}".into()),
                tool_calls: (!asked)
                    .then(|| zu_plugin_api::ports::ToolCall {
                        name: "probe".into(),
                        args: Default::default(),
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            })
        }
    }
    impl zu_plugin_api::ports::Tool for Witness {
        fn call(
            &self,
            _: &dyn zu_plugin_api::ports::RunContext,
            _: zu_plugin_api::contracts::JsonObject,
        ) -> Result<zu_plugin_api::contracts::JsonObject, PluginError> {
            self.look("tool");
            Ok(Default::default())
        }
    }

    #[test]
    fn a_batched_log_is_stored_before_each_side_effect_in_one_batch_each() {
        let log = Arc::new(Batches::default());
        let witness = Arc::new(Witness {
            log: log.clone(),
            ..Default::default()
        });
        let mut registry = Registry::new();
        let tool = crate::PluginObject::Tool(witness.clone());
        registry
            .register_native("probe", zu_plugin_api::ports::Envelope::NONE, tool)
            .unwrap();
        let bus = Arc::new(EventBus::with_sink_batched(log.clone()));
        let r = run_task(
            &TaskSpec::new("q"),
            witness.clone(),
            &registry,
            &bus,
            &RunOptions::default(),
        )
        .unwrap();
        assert_eq!(r.status, Status::Success);
        assert_eq!(
            *witness.seen.lock().unwrap(),
            [
                "provider after harness.turn.started",
                "tool after harness.tool.invoked",
                "provider after harness.turn.started",
            ],
            "everything before a side effect is stored when it begins"
        );
        let batches = log.batches.lock().unwrap();
        assert_eq!(
            batches.len(),
            4,
            "one batch per side effect and one at the end: {batches:?}"
        );
        assert_eq!(batches.last().unwrap().last().unwrap(), "harness.task.completed");
        let stored = zu_plugin_api::ports::EventSink::count(&*log, &Default::default()).unwrap() as usize;
        assert_eq!(
            batches.iter().map(Vec::len).sum::<usize>(),
            stored,
            "each event stored once"
        );
    }

    #[test]
    fn an_enormous_wall_time_is_no_deadline_rather_than_a_crash() {
        let mut spec = TaskSpec::new("q");
        spec.budget.wall_time_s = u64::MAX;
        let bus = Arc::new(EventBus::new());
        let r = run_task(&spec, Arc::new(Answer), &Registry::new(), &bus, &RunOptions::default()).unwrap();
        assert_eq!(r.status, Status::Success);
    }

    #[test]
    fn a_run_naming_a_plugin_that_is_not_loaded_is_refused_before_it_starts() {
        let bus = Arc::new(EventBus::new());
        let options = RunOptions {
            validators: Some(vec!["grounding".into()]),
            ..RunOptions::default()
        };
        let err = run_task(&TaskSpec::new("q"), Arc::new(Answer), &Registry::new(), &bus, &options).unwrap_err();
        assert!(matches!(&err, RunError::UnknownPlugin { kind: Kind::Validators, name, .. } if name == "grounding"));
        assert!(err.to_string().contains("loaded validators: none"), "{err}");
        assert_eq!(bus.count(&zu_plugin_api::filter::EventFilter::all()).unwrap(), 0);
    }
}
