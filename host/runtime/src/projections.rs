//! Projections: small views folded from the event stream. `SessionStore`
//! keeps compact per-task facts (event and turn counts, the last event, a
//! recent window), O(active tasks) in memory; the full history stays in the
//! canonical log.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::{Arc, Mutex};

use rustc_hash::FxHasher;
use uuid::Uuid;
use zu_plugin_api::contracts::Event;
use zu_plugin_api::events;

use crate::bus::Subscriber;

/// Compact facts about one task.
#[derive(Debug, Clone, Default)]
pub struct SessionState {
    /// Events seen for the task.
    pub event_count: u64,
    /// `harness.turn.started` events seen.
    pub turn_count: u64,
    /// The latest event.
    pub last: Option<Arc<Event>>,
    /// The latest events, oldest first, at most the store's window.
    pub recent: VecDeque<Arc<Event>>,
}

/// Whether `event` ends its run: task completed, task terminal, or an
/// escalation marked exhausted (a mid-run climb does not end it).
pub fn is_terminal(event: &Event) -> bool {
    match event.event_type() {
        events::TASK_COMPLETED | events::TASK_TERMINAL => true,
        events::TASK_ESCALATED => event.payload().get("exhausted").is_some_and(truthy),
        _ => false,
    }
}

fn truthy(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => false,
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::Number(n) => n.as_f64() != Some(0.0),
        serde_json::Value::String(s) => !s.is_empty(),
        serde_json::Value::Array(a) => !a.is_empty(),
        serde_json::Value::Object(o) => !o.is_empty(),
    }
}

/// The session-store projection.
pub struct SessionStore {
    evict_on_terminal: bool,
    window: usize,
    by_task: Mutex<TaskMap>,
}

type TaskMap = HashMap<Uuid, SessionState, BuildHasherDefault<FxHasher>>;

impl Default for SessionStore {
    fn default() -> Self {
        SessionStore::new(false, 20)
    }
}

impl SessionStore {
    /// A store keeping `window` recent events per task, dropping a task's
    /// state on its terminal event when `evict_on_terminal`.
    pub fn new(evict_on_terminal: bool, window: usize) -> Self {
        SessionStore {
            evict_on_terminal,
            window,
            by_task: Mutex::new(TaskMap::default()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut TaskMap) -> T) -> T {
        f(&mut self.by_task.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Folds one event in.
    pub fn observe(&self, event: &Arc<Event>) {
        self.with(|tasks| {
            let task = event.task_id();
            let state = tasks.entry(task).or_default();
            state.event_count += 1;
            if event.event_type() == events::TURN_STARTED {
                state.turn_count += 1;
            }
            if self.window > 0 {
                // The latest event is the window's back: no second copy is kept.
                if state.recent.len() == self.window {
                    state.recent.pop_front();
                }
                state.recent.push_back(event.clone());
            } else {
                state.last = Some(event.clone());
            }
            if self.evict_on_terminal && is_terminal(event) {
                tasks.remove(&task);
            }
        })
    }

    /// The task's state, if the store holds it.
    pub fn state(&self, task: Uuid) -> Option<SessionState> {
        self.with(|t| {
            t.get(&task).map(|s| SessionState {
                last: s.recent.back().cloned().or_else(|| s.last.clone()),
                ..s.clone()
            })
        })
    }

    /// Events seen for the task (0 if unknown).
    pub fn event_count(&self, task: Uuid) -> u64 {
        self.with(|t| t.get(&task).map_or(0, |s| s.event_count))
    }

    /// Turns seen for the task (0 if unknown).
    pub fn turns(&self, task: Uuid) -> u64 {
        self.with(|t| t.get(&task).map_or(0, |s| s.turn_count))
    }

    /// The task's latest event.
    pub fn last(&self, task: Uuid) -> Option<Arc<Event>> {
        self.with(|t| t.get(&task).and_then(|s| s.recent.back().or(s.last.as_ref()).cloned()))
    }

    /// The task's recent window, oldest first.
    pub fn recent(&self, task: Uuid) -> Vec<Arc<Event>> {
        self.with(|t| {
            t.get(&task)
                .map(|s| s.recent.iter().cloned().collect())
                .unwrap_or_default()
        })
    }

    /// Tasks with state.
    pub fn tasks(&self) -> Vec<Uuid> {
        self.with(|t| t.keys().copied().collect())
    }

    /// Drops a task's state.
    pub fn evict(&self, task: Uuid) {
        self.with(|t| t.remove(&task));
    }
}

impl Subscriber for SessionStore {
    fn name(&self) -> &str {
        "session_store"
    }

    fn on_event(&self, event: &Arc<Event>) -> Result<(), String> {
        self.observe(event);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use zu_plugin_api::contracts::JsonObject;

    fn ev(task: Uuid, ty: &'static str, payload: serde_json::Value) -> Arc<Event> {
        Arc::new(
            Event::new(
                task,
                task,
                None,
                ty,
                "t",
                payload.as_object().cloned().unwrap_or_default(),
            )
            .unwrap(),
        )
    }

    #[test]
    fn keeps_compact_facts_per_task_with_a_bounded_window() {
        let store = SessionStore::new(false, 2);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        for ty in [
            events::TASK_STARTED,
            events::TURN_STARTED,
            events::TOOL_INVOKED,
            events::TURN_STARTED,
        ] {
            store.observe(&ev(a, ty, json!({})));
        }
        store.observe(&ev(b, events::TASK_STARTED, json!({})));
        assert_eq!((store.event_count(a), store.turns(a)), (4, 2));
        assert_eq!(store.recent(a).len(), 2);
        assert_eq!(store.last(a).unwrap().event_type(), events::TURN_STARTED);
        assert_eq!(store.state(a).unwrap().last.unwrap().event_type(), events::TURN_STARTED);
        let no_window = SessionStore::new(false, 0);
        no_window.observe(&ev(a, events::TASK_STARTED, json!({})));
        assert_eq!(no_window.last(a).unwrap().event_type(), events::TASK_STARTED);
        assert!(no_window.recent(a).is_empty());
        assert_eq!(store.event_count(b), 1);
        assert_eq!(store.event_count(Uuid::new_v4()), 0);
        let _ = JsonObject::new();
    }

    #[test]
    fn evicts_on_completion_terminal_and_exhausted_escalation_only() {
        let store = SessionStore::new(true, 20);
        let t = Uuid::new_v4();
        store.observe(&ev(t, events::TASK_ESCALATED, json!({"from_tier": 1, "to_tier": 2})));
        assert_eq!(store.event_count(t), 1, "a climb does not end the run");
        store.observe(&ev(t, events::TASK_ESCALATED, json!({"tier": 2, "exhausted": true})));
        assert!(store.state(t).is_none());
        for ty in [events::TASK_COMPLETED, events::TASK_TERMINAL] {
            store.observe(&ev(t, events::TURN_STARTED, json!({})));
            assert!(store.state(t).is_some());
            store.observe(&ev(t, ty, json!({})));
            assert!(store.state(t).is_none(), "{ty}");
        }
        let keep = SessionStore::new(false, 20);
        keep.observe(&ev(t, events::TASK_COMPLETED, json!({})));
        assert_eq!(keep.event_count(t), 1);
        keep.evict(t);
        assert!(keep.tasks().is_empty());
    }
}
