//! `zu run`: one task through the loop, or `--resume` of one that has no
//! end on a durable log. The plugins taking part are printed on stderr, the
//! Result as JSON on stdout, and the exit code says how the run ended; with
//! `--track` a matching track replays first and a successful run records
//! its path. [`Prepared`] (plugins loaded, bus, options) is shared with
//! `zu pipeline`.

mod args;
mod plan;
mod progress;
mod recorded;

use std::collections::BTreeMap;
use std::sync::Arc;

use zu_plugin_api::contracts::{RunResult, Status};
use zu_plugin_api::filter::{EventFilter, FilterField};
use zu_plugin_api::ports::ModelProvider;
use zu_plugin_api::version::Kind;
use zu_runtime::run::{Containment, RunError};
use zu_runtime::{resume_task, run_task, Cancel, EventBus, RunOptions, Track};

pub use plan::RunArgs;
pub(crate) use plan::{plan, Plan, Query};

use crate::interrupt::Interrupts;
use crate::load::{self, Loaded};
use crate::{exit, Failure};
use zu_runtime::display::escape;

/// How `zu run` configures a plugin that got no config.
fn run_config_hint(kind: Kind, name: &str) -> String {
    match kind {
        Kind::Providers => {
            format!("--provider-config JSON (or [provider] config in zu.toml, or --config providers.{name}=JSON)")
        }
        Kind::Sinks => "--sink-config JSON (or [sink] config in zu.toml)".to_owned(),
        _ => format!("--config {kind}.{name}=JSON (or [config.{kind}.{name}] in zu.toml)"),
    }
}

/// The plugins of `kind` that take part: the chosen ones (each must be
/// loaded), or every loaded one.
fn chosen(loaded: &Loaded, kind: Kind, names: &Option<Vec<String>>) -> Result<Vec<String>, Failure> {
    match names {
        None => Ok(loaded.registry.names(kind)),
        Some(names) => {
            for n in names {
                if loaded.registry.get(kind, n).is_none() {
                    return Err(Failure::failed(loaded.missing(kind, n, "")));
                }
            }
            Ok(names.clone())
        }
    }
}

/// A plan made ready: plugins loaded, the provider, the log, the options.
pub(crate) struct Prepared {
    pub(crate) loaded: Loaded,
    pub(crate) provider: Arc<dyn ModelProvider>,
    pub(crate) bus: Arc<EventBus>,
    pub(crate) options: RunOptions,
    pub(crate) interrupts: Interrupts,
    /// The MCP servers, stopped when the run is over.
    pub(crate) _mcp: zu_mcp::McpHost,
}

/// Loads the plan's plugins and builds the bus and the run options.
pub(crate) fn prepare(plan: &Plan, watcher: Option<Arc<dyn zu_runtime::Subscriber>>) -> Result<Prepared, Failure> {
    let mut loaded = load::load(
        load::Source::Dirs(plan.dirs.clone()),
        plan.configs.clone(),
        run_config_hint,
        plan.protection.clone(),
    )?;
    let jailer = load::mcp_jailer(plan.protection.private_paths());
    let mcp = zu_mcp::start(&plan.mcp, &plan.base, &mut loaded.registry, jailer);
    let mut named = vec![(Kind::Providers, plan.provider.as_str())];
    named.extend(plan.sink.as_deref().map(|s| (Kind::Sinks, s)));
    named.extend(plan.tier_providers.values().map(|n| (Kind::Providers, n.as_str())));
    named.extend(plan.finish_provider.as_deref().map(|n| (Kind::Providers, n)));
    for (kind, names) in [
        (Kind::Tools, &plan.tools),
        (Kind::Detectors, &plan.detectors),
        (Kind::Validators, &plan.validators),
    ] {
        named.extend(names.iter().flatten().map(|n| (kind, n.as_str())));
    }
    // Refusals of the plugins the run names are reported once, as its error.
    loaded.warn_refused(&named);
    let registry = &loaded.registry;
    let provider_named = |name: &str, role: &str| {
        registry
            .provider(name)
            .ok_or_else(|| Failure::failed(loaded.missing(Kind::Providers, name, role)))
    };
    let provider = provider_named(&plan.provider, "")?;
    let mut bus = match &plan.sink {
        None => EventBus::new(),
        Some(name) => EventBus::with_sink_batched(
            registry
                .sink(name)
                .ok_or_else(|| Failure::failed(loaded.missing(Kind::Sinks, name, "")))?,
        ),
    };
    // A provider that only takes over later must be usable now: one given
    // no config that names no model would fail only when its turn came.
    let usable = |name: &str, role: &str| -> Result<Arc<dyn ModelProvider>, Failure> {
        let p = provider_named(name, role)?;
        let configured = plan.configs.iter().any(|c| c.kind == Kind::Providers && c.name == name);
        if !configured && p.model().is_none() {
            return Err(Failure::usage(format!(
                "provider {}{role} has no config: give it one with --config providers.{0}=JSON (or [config.providers.{0}] in zu.toml)",
                escape(name)
            )));
        }
        Ok(p)
    };
    let mut providers_by_tier = BTreeMap::new();
    for (tier, name) in &plan.tier_providers {
        providers_by_tier.insert(*tier, usable(name, &format!(" for tier {tier}"))?);
    }
    let finish_provider = match &plan.finish_provider {
        Some(name) => Some(usable(name, " (--finish-provider)")?),
        None => None,
    };
    let track = match &plan.track {
        Some(path) => Track::load(path)
            .map_err(|e| Failure::usage(e.to_string()))?
            .map(Arc::new),
        None => None,
    };
    if let (Some(t), Some(path)) = (&track, &plan.track) {
        if !t.matches(&plan.spec) && plan.resume.is_none() {
            let then = match plan.track_overwrite {
                true => "this run's path replaces it if the run succeeds (--track-overwrite)",
                false => "it is kept: give --track-overwrite to replace it, or --track with a new file",
            };
            eprintln!(
                "zu: track {} was recorded for another task ({}); not replaying it, and {then}",
                escape(&path.display().to_string()),
                escape(&format!("{:?}", t.task))
            );
        }
    }
    let tools = chosen(&loaded, Kind::Tools, &plan.tools)?;
    let detectors = chosen(&loaded, Kind::Detectors, &plan.detectors)?;
    let validators = chosen(&loaded, Kind::Validators, &plan.validators)?;
    // Plugins and MCP servers choose their names: each is shown escaped.
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.iter().map(|n| escape(n)).collect::<Vec<_>>().join(", ")
        }
    };
    eprintln!(
        "zu: taking part: provider {}; tools: {}; detectors: {}; validators: {}",
        escape(&plan.provider),
        list(&tools),
        list(&detectors),
        list(&validators)
    );
    if plan.containment == Containment::Required {
        let mut named: Vec<(Kind, &str)> = vec![(Kind::Providers, plan.provider.as_str())];
        named.extend(plan.tier_providers.values().map(|n| (Kind::Providers, n.as_str())));
        named.extend(plan.finish_provider.as_deref().map(|n| (Kind::Providers, n)));
        named.extend(plan.sink.as_deref().map(|n| (Kind::Sinks, n)));
        let gaps: Vec<String> = named
            .iter()
            .filter_map(|(kind, n)| loaded.registry.get(*kind, n)?.info.containment_gap(&plan.trusted))
            .collect();
        if !gaps.is_empty() {
            return Err(Failure::failed(RunError::ContainmentRequired { gaps }.to_string()));
        }
    }
    if let Some(w) = watcher {
        bus.subscribe(w);
    }
    let cancel = Arc::new(Cancel::new());
    let interrupts =
        Interrupts::watch(cancel.clone()).map_err(|e| Failure::failed(format!("cannot watch for signals: {e}")))?;
    let options = RunOptions {
        providers_by_tier,
        containment: plan.containment,
        checks: plan.checks,
        tools: Some(tools),
        detectors: Some(detectors),
        validators: Some(validators),
        cancel: Some(cancel),
        track,
        replay_budget: plan.replay_budget.clone(),
        finish_provider,
        replay_jitter_ms: plan.replay_jitter_ms,
        shaping: plan.shaping,
        max_usd: plan.max_usd,
        prices: Some(Arc::new(plan.prices.clone())),
        trusted: plan.trusted.clone(),
        plan: Some(recorded::record(plan, &std::env::current_dir().unwrap_or_default())),
        ..RunOptions::default()
    };
    Ok(Prepared {
        loaded,
        provider,
        bus: Arc::new(bus),
        options,
        interrupts,
        _mcp: mcp,
    })
}

/// A resumed run's plan: what flags and zu.toml did not give, from the plan
/// its `task.started` recorded (said on stderr where they differ).
fn resume_plan(plan: &mut Plan, task: uuid::Uuid) -> Result<(), Failure> {
    let sink = plan.sink.clone().expect("checked by the caller");
    let config = plan
        .configs
        .iter()
        .find(|c| c.kind == Kind::Sinks && c.name == sink)
        .map(|c| (c.value.clone(), c.origin.clone()));
    let log = crate::log::open_sink(&sink, config, plan.dirs.clone(), plan.protection.clone(), None)?;
    let recorded = recorded::read(&log.bus, task)?;
    log.bus.close();
    let Some(recorded) = recorded else {
        if plan.provider.is_empty() {
            return Err(Failure::usage(
                "this run's log records no plan (an older zu wrote it): give --provider and the run's plugins again",
            ));
        }
        return Ok(());
    };
    let given = plan.given.clone();
    for d in recorded::apply(plan, &recorded, &given)? {
        eprintln!("zu: resuming with {} ", escape(&d));
    }
    Ok(())
}

/// The exit code of a run that ended with `status`.
pub(crate) fn exit_code(interrupts: &Interrupts, status: Status) -> u8 {
    match (interrupts.code(), status) {
        (Some(signal), Status::Terminal) => signal,
        (_, Status::Success) => exit::OK,
        (_, Status::Escalate) => exit::ESCALATE,
        (_, Status::Terminal) => exit::TERMINAL,
    }
}

pub fn run(args: RunArgs) -> Result<u8, Failure> {
    let mut plan = plan(args, Query::Required)?;
    if plan.resume.is_some() && plan.sink.is_none() {
        return Err(Failure::usage(
            "--resume continues a run from its log: give the --sink (and --sink-config) it was written to",
        ));
    }
    if let Some(task) = plan.resume {
        resume_plan(&mut plan, task)?;
    }
    let (mut progress, watcher) = progress::Progress::new();
    let p = prepare(&plan, watcher)?;
    let registry = &p.loaded.registry;
    let task = plan.resume.unwrap_or(plan.spec.task_id);
    let short = &task.to_string()[..8];
    let how = if plan.resume.is_some() { "resumed" } else { "started" };
    eprintln!("zu: task {task} {how} (--task {short} finds it in zu events and zu cost)");
    progress.draw();
    let (outcome, task) = match plan.resume {
        Some(task) => (
            resume_task(task, p.provider.clone(), registry, &p.bus, &p.options),
            task,
        ),
        None => (
            run_task(&plan.spec, p.provider.clone(), registry, &p.bus, &p.options),
            plan.spec.task_id,
        ),
    };
    progress.finish();
    let code = match outcome {
        Ok(result) => {
            let text = serde_json::to_string_pretty(&result).expect("a Result is plain data");
            crate::outln!("{}", zu_runtime::display::json(&text));
            let of_task = EventFilter::all().with(FilterField::TaskId, Some(task.to_string()));
            let events = p.bus.count(&of_task).unwrap_or(0);
            eprintln!(
                "zu: task {task} ended {:?}; {events} events of it in the {} log",
                result.status,
                escape(plan.sink.as_deref().unwrap_or("in-memory"))
            );
            record_track(&plan, &p, task, &result);
            Ok(exit_code(&p.interrupts, result.status))
        }
        Err(e) => Err(Failure::failed(e.to_string())),
    };
    p.bus.close();
    code
}

/// Records a successful run's path into the `--track` file (from this
/// run's own events, never from others in a shared log).
fn record_track(plan: &Plan, p: &Prepared, task: uuid::Uuid, result: &RunResult) {
    let Some(path) = &plan.track else { return };
    if result.status != Status::Success {
        return;
    }
    let previous = p.options.track.as_deref();
    match Track::record_run(&p.bus, task, p.provider.model()) {
        Ok(mut track) => {
            let other = previous.filter(|old| !old.task.is_empty() && old.task != track.task);
            if let Some(other) = other.filter(|_| !plan.track_overwrite) {
                eprintln!(
                    "zu: not recording into track {}: it holds the track of another task ({}); give --track-overwrite to replace it, or --track with a new file",
                    escape(&path.display().to_string()),
                    escape(&format!("{:?}", other.task))
                );
                return;
            }
            // A path replayed as it was is still the path its model found.
            if let Some(old) = previous.filter(|old| {
                old.steps
                    .iter()
                    .map(|s| (&s.tool, &s.args))
                    .eq(track.steps.iter().map(|s| (&s.tool, &s.args)))
            }) {
                track.model = old.model.clone();
            }
            match track.save(path) {
                Ok(()) => eprintln!(
                    "zu: recorded {} steps into track {}",
                    track.steps.len(),
                    escape(&path.display().to_string())
                ),
                Err(e) => eprintln!("zu: {}", escape(&e.to_string())),
            }
        }
        Err(e) => eprintln!("zu: could not record the track: {}", escape(&e.to_string())),
    }
}
