//! The run as plugins read it: the spec, the observation being inspected, and
//! this run's own events (from its `task.started` on: an earlier run of the
//! same task id is not this run), read from the canonical log on demand, so
//! reading it costs the same with 10 or 100,000 events logged.

use std::sync::{Arc, OnceLock};

use uuid::Uuid;

use serde_json::Value;
use zu_plugin_api::contracts::TaskSpec;
use zu_plugin_api::filter::{EventFilter, FilterField, StoredEvent};
use zu_plugin_api::ports::{PluginError, RunContext};

use crate::bus::EventBus;

/// The run's view for plugins: the spec, the observation being inspected,
/// and the run's own events (its task id's).
#[derive(Clone)]
pub struct RunView {
    run: Arc<ViewOf>,
    observation: Option<Arc<Value>>,
}

/// What every view of one run shares (a view is cloned per plugin call).
struct ViewOf {
    spec: Arc<TaskSpec>,
    bus: Arc<EventBus>,
    /// `task_id = <this task>`: the run's own events.
    scope: EventFilter,
    /// The run's `task.started` event, once emitted.
    root: Arc<OnceLock<Uuid>>,
    /// Its sequence number, once looked up.
    since: OnceLock<u64>,
    /// How many events of the task the log held before this run.
    before: u64,
    /// The run's deadline, if the view belongs to a running run.
    deadline: Option<std::time::Instant>,
}

impl RunView {
    /// A view of `spec`'s run on `bus` (every event of its task), inspecting `observation`.
    pub fn new(spec: Arc<TaskSpec>, bus: Arc<EventBus>, observation: Option<Arc<Value>>) -> Self {
        Self::of_run(spec, bus, Arc::default(), 0, None).inspecting(observation)
    }

    /// A view of the run that starts at event `root` (set once emitted),
    /// after `before` events of the same task on the log.
    pub(crate) fn of_run(
        spec: Arc<TaskSpec>,
        bus: Arc<EventBus>,
        root: Arc<OnceLock<Uuid>>,
        before: u64,
        deadline: Option<std::time::Instant>,
    ) -> Self {
        let scope = EventFilter::all().with(FilterField::TaskId, Some(spec.task_id.to_string()));
        RunView {
            run: Arc::new(ViewOf {
                spec,
                bus,
                scope,
                root,
                since: OnceLock::new(),
                before,
                deadline,
            }),
            observation: None,
        }
    }

    /// The sequence number this run's events start after.
    fn start_after(&self) -> u64 {
        let run = &self.run;
        if let Some(&s) = run.since.get() {
            return s;
        }
        let Some(root) = run.root.get() else { return 0 };
        let filter = EventFilter::all().with(FilterField::EventId, Some(root.to_string()));
        match run
            .bus
            .query(&filter, Some(1), 0)
            .ok()
            .and_then(|v| v.first().map(|e| e.seq))
        {
            Some(seq) => *run.since.get_or_init(|| seq - 1),
            None => 0,
        }
    }

    /// The same run, inspecting another observation.
    pub fn inspecting(&self, observation: Option<Arc<Value>>) -> Self {
        RunView {
            run: self.run.clone(),
            observation,
        }
    }

    fn task(&self) -> &str {
        self.run.scope.get(FilterField::TaskId).flatten().unwrap_or_default()
    }
}

impl RunContext for RunView {
    fn spec(&self) -> &TaskSpec {
        &self.run.spec
    }
    fn observation(&self) -> Option<&Value> {
        self.observation.as_deref()
    }
    fn time_left(&self) -> Option<std::time::Duration> {
        Some(self.run.deadline?.saturating_duration_since(std::time::Instant::now()))
    }
    fn event_count(&self) -> u64 {
        self.run
            .bus
            .count(&self.run.scope)
            .unwrap_or(0)
            .saturating_sub(self.run.before)
    }
    fn query(&self, filter: &EventFilter, limit: Option<u64>, after_seq: u64) -> Result<Vec<StoredEvent>, PluginError> {
        // Only this run's events: a filter naming another task (or asking for
        // a null task id, which no event has) matches nothing.
        match filter.get(FilterField::TaskId) {
            Some(Some(task)) if task == self.task() => {}
            Some(_) => return Ok(Vec::new()),
            None => {}
        }
        let scoped = filter.clone().with(FilterField::TaskId, Some(self.task()));
        self.run
            .bus
            .query(&scoped, limit, after_seq.max(self.start_after()))
            .map(|v| v.into_iter().map(|e| e.into_stored()).collect())
            .map_err(|e| PluginError::failed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zu_plugin_api::contracts::{Event, JsonObject};

    #[test]
    fn a_run_view_reads_only_its_own_task() {
        let bus = Arc::new(EventBus::new());
        let (mine, other) = (Arc::new(TaskSpec::new("a")), TaskSpec::new("b"));
        for spec in [&*mine, &other] {
            let e = Event::new(spec.task_id, spec.task_id, None, "harness.a", "t", JsonObject::new()).unwrap();
            bus.publish(e).unwrap();
        }
        let view = RunView::new(mine.clone(), bus, None);
        assert_eq!(view.event_count(), 1);
        let all = view.query(&EventFilter::all(), None, 0).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].event.task_id(), mine.task_id);
        for f in [
            EventFilter::all().with(FilterField::TaskId, Some(other.task_id.to_string())),
            EventFilter::all().with(FilterField::TaskId, None::<String>),
        ] {
            assert!(view.query(&f, None, 0).unwrap().is_empty(), "{f:?}");
        }
        let own = EventFilter::all().with(FilterField::TaskId, Some(mine.task_id.to_string()));
        assert_eq!(view.query(&own, None, 0).unwrap().len(), 1);
    }
}
