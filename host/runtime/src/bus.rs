//! The event bus: one canonical sink, written first (a failure there reaches
//! the publisher and no destination sees the event), then a fan-out to
//! subscribers and secondary sinks, each isolated; a failing destination is
//! recorded in a bounded list and logged. Reads go to the canonical sink.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use uuid::Uuid;
use zu_plugin_api::contracts::Event;
use zu_plugin_api::filter::EventFilter;
use zu_plugin_api::ports::{panic_message, EventSink, PluginError};

use crate::memory_sink::{LoggedEvent, MemorySink};

/// A destination that folds events into something: a projection, a shipper.
pub trait Subscriber: Send + Sync {
    /// A name for failure records and logs.
    fn name(&self) -> &str;
    /// Handles one event that is already on the canonical log.
    fn on_event(&self, event: &Arc<Event>) -> Result<(), String>;
}

/// A destination that failed on an event: recorded, not lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberFailure {
    /// The destination's name.
    pub subscriber: String,
    /// The event it failed on.
    pub event_id: Uuid,
    /// That event's type.
    pub event_type: String,
    /// What went wrong.
    pub error: String,
}

/// Why publishing or reading failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The canonical sink refused the event; nothing else saw it.
    #[error("the canonical event sink failed to store {event_type} event {event_id}: {error}")]
    Canonical {
        /// The event.
        event_id: Uuid,
        /// Its type.
        event_type: String,
        /// What the sink said.
        error: PluginError,
    },
    /// A read from the canonical sink failed.
    #[error("reading the event log failed: {0}")]
    Read(PluginError),
    /// The bus was closed.
    #[error("the event bus is closed")]
    Closed,
}

enum Canonical {
    Memory(Arc<MemorySink>),
    Sink(Arc<dyn EventSink>),
    /// A sink written in batches: events wait in `pending` until the next
    /// [`EventBus::flush`] (before each side effect, each read, the close).
    Batched(Arc<dyn EventSink>, Mutex<Vec<Arc<Event>>>),
}

struct Destination {
    name: String,
    sink: Arc<dyn EventSink>,
}

/// The default bound of the failure record.
pub const DEFAULT_MAX_FAILURES: usize = 1000;

/// One canonical sink feeding isolated destinations.
pub struct EventBus {
    canonical: Canonical,
    subscribers: Vec<Arc<dyn Subscriber>>,
    destinations: Vec<Destination>,
    failures: Mutex<VecDeque<SubscriberFailure>>,
    max_failures: usize,
    closed: AtomicBool,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new()
    }
}

impl EventBus {
    /// A bus over a fresh in-memory log.
    pub fn new() -> Self {
        EventBus::over(Canonical::Memory(Arc::new(MemorySink::new())))
    }

    /// A bus over an existing in-memory log.
    pub fn with_memory(sink: Arc<MemorySink>) -> Self {
        EventBus::over(Canonical::Memory(sink))
    }

    /// A bus whose canonical store is `sink` (e.g. a durable sink plugin):
    /// each publish is stored before it returns.
    pub fn with_sink(sink: Arc<dyn EventSink>) -> Self {
        EventBus::over(Canonical::Sink(sink))
    }

    /// A bus over `sink` that stores events in batches: a publish waits in
    /// memory until [`EventBus::flush`], which stores everything waiting as
    /// one `append_batch` (one transaction, one sync) and only then fans it
    /// out. The loop flushes before each provider and tool call (its side
    /// effects) and reads flush first, so the log is durable before the next
    /// side effect without one sync per event: two commits a step.
    pub fn with_sink_batched(sink: Arc<dyn EventSink>) -> Self {
        EventBus::over(Canonical::Batched(sink, Mutex::new(Vec::new())))
    }

    fn over(canonical: Canonical) -> Self {
        EventBus {
            canonical,
            subscribers: Vec::new(),
            destinations: Vec::new(),
            failures: Mutex::new(VecDeque::new()),
            max_failures: DEFAULT_MAX_FAILURES,
            closed: AtomicBool::new(false),
        }
    }

    /// Keeps at most `n` failure records (the oldest are dropped).
    pub fn with_max_failures(mut self, n: usize) -> Self {
        self.max_failures = n;
        self
    }

    /// Adds a subscriber (a projection or any per-event handler).
    pub fn subscribe(&mut self, subscriber: Arc<dyn Subscriber>) {
        self.subscribers.push(subscriber);
    }

    /// Adds a secondary sink: a copy of the stream, isolated like a subscriber.
    pub fn add_destination(&mut self, name: impl Into<String>, sink: Arc<dyn EventSink>) {
        self.destinations.push(Destination {
            name: name.into(),
            sink,
        });
    }

    /// Stores `event` in the canonical sink, then fans it out. Returns the
    /// event as shared with the log.
    pub fn publish(&self, event: Event) -> Result<Arc<Event>, BusError> {
        let event = Arc::new(event);
        self.publish_shared(&event)?;
        Ok(event)
    }

    /// [`EventBus::publish`] for an event that is already shared (the log
    /// keeps a reference to it).
    pub fn publish_shared(&self, event: &Arc<Event>) -> Result<(), BusError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BusError::Closed);
        }
        match &self.canonical {
            Canonical::Memory(m) => {
                m.append_shared(event.clone());
            }
            Canonical::Sink(s) => {
                let stored = catch_unwind(AssertUnwindSafe(|| s.append(event)))
                    .unwrap_or_else(|p| Err(PluginError::Panicked(panic_message(&*p))));
                stored.map_err(|error| BusError::Canonical {
                    event_id: event.event_id(),
                    event_type: event.event_type().to_owned(),
                    error,
                })?;
            }
            Canonical::Batched(_, pending) => {
                pending.lock().unwrap_or_else(|p| p.into_inner()).push(event.clone());
                return Ok(()); // fanned out when it is stored
            }
        }
        self.fan_out(event);
        Ok(())
    }

    /// Stores every event a batched bus holds (one `append_batch`), then
    /// fans them out. A no-op for other buses. On a failure the events stay
    /// waiting and the error reaches the caller, who makes no side effect.
    pub fn flush(&self) -> Result<(), BusError> {
        let Canonical::Batched(sink, pending) = &self.canonical else {
            return Ok(());
        };
        let mut pending = pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.is_empty() {
            return Ok(());
        }
        let events: Vec<Event> = pending.iter().map(|e| Event::clone(e)).collect();
        let stored = catch_unwind(AssertUnwindSafe(|| sink.append_batch(&events)))
            .unwrap_or_else(|p| Err(PluginError::Panicked(panic_message(&*p))));
        stored.map_err(|error| BusError::Canonical {
            event_id: events[0].event_id(),
            event_type: events[0].event_type().to_owned(),
            error,
        })?;
        for event in pending.drain(..) {
            self.fan_out(&event);
        }
        Ok(())
    }

    fn fan_out(&self, event: &Arc<Event>) {
        for s in &self.subscribers {
            let r = catch_unwind(AssertUnwindSafe(|| s.on_event(event))).unwrap_or_else(|p| Err(panic_message(&*p)));
            if let Err(error) = r {
                self.record(s.name(), event, error);
            }
        }
        for d in &self.destinations {
            let r = catch_unwind(AssertUnwindSafe(|| d.sink.append(event)))
                .unwrap_or_else(|p| Err(PluginError::Panicked(panic_message(&*p))));
            if let Err(error) = r {
                self.record(&d.name, event, error.to_string());
            }
        }
    }

    fn record(&self, subscriber: &str, event: &Event, error: String) {
        tracing::warn!(destination = subscriber, event_type = event.event_type(), %error, "event destination failed");
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if self.max_failures == 0 {
            return;
        }
        while failures.len() >= self.max_failures {
            failures.pop_front();
        }
        failures.push_back(SubscriberFailure {
            subscriber: subscriber.to_owned(),
            event_id: event.event_id(),
            event_type: event.event_type().to_owned(),
            error,
        });
    }

    /// The recorded destination failures, oldest first (bounded).
    pub fn failures(&self) -> Vec<SubscriberFailure> {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Events from the canonical log matching `filter` after `after_seq`.
    pub fn query(
        &self,
        filter: &EventFilter,
        limit: Option<u64>,
        after_seq: u64,
    ) -> Result<Vec<LoggedEvent>, BusError> {
        self.flush()?;
        match &self.canonical {
            Canonical::Memory(m) => Ok(m.query_shared(filter, limit, after_seq)),
            Canonical::Sink(s) | Canonical::Batched(s, _) => s
                .query(filter, limit, after_seq)
                .map(|v| {
                    v.into_iter()
                        .map(|e| LoggedEvent {
                            seq: e.seq,
                            event: Arc::new(e.event),
                        })
                        .collect()
                })
                .map_err(BusError::Read),
        }
    }

    /// How many events of the canonical log match `filter`.
    pub fn count(&self, filter: &EventFilter) -> Result<u64, BusError> {
        self.flush()?;
        match &self.canonical {
            Canonical::Memory(m) => Ok(m.count_matching(filter)),
            Canonical::Sink(s) | Canonical::Batched(s, _) => s.count(filter).map_err(BusError::Read),
        }
    }

    /// Every matching event, read in keyset pages of `batch` so a large log is
    /// never held at once.
    pub fn stream<'a>(&'a self, filter: &'a EventFilter, batch: u64) -> Stream<'a> {
        Stream {
            bus: self,
            filter,
            batch: batch.max(1),
            after: 0,
            page: VecDeque::new(),
            done: false,
        }
    }

    /// Releases every sink (canonical first), each isolated; later publishes
    /// fail with [`BusError::Closed`]. Calling it again does nothing.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Err(error) = self.flush() {
            tracing::error!(%error, "events waiting for a batch could not be stored at close");
        }
        let canonical: Option<(&str, &Arc<dyn EventSink>)> = match &self.canonical {
            Canonical::Memory(_) => None,
            Canonical::Sink(s) | Canonical::Batched(s, _) => Some(("canonical", s)),
        };
        for (name, sink) in canonical
            .into_iter()
            .chain(self.destinations.iter().map(|d| (d.name.as_str(), &d.sink)))
        {
            let r = catch_unwind(AssertUnwindSafe(|| sink.close()))
                .unwrap_or_else(|p| Err(PluginError::Panicked(panic_message(&*p))));
            if let Err(error) = r {
                tracing::warn!(sink = name, %error, "event sink failed to close");
            }
        }
    }
}

/// Pages through the canonical log; see [`EventBus::stream`].
pub struct Stream<'a> {
    bus: &'a EventBus,
    filter: &'a EventFilter,
    batch: u64,
    after: u64,
    page: VecDeque<LoggedEvent>,
    done: bool,
}

impl Iterator for Stream<'_> {
    type Item = Result<LoggedEvent, BusError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.page.is_empty() && !self.done {
            match self.bus.query(self.filter, Some(self.batch), self.after) {
                Ok(page) => {
                    self.done = (page.len() as u64) < self.batch;
                    self.page = page.into();
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        let next = self.page.pop_front()?;
        self.after = next.seq;
        Some(Ok(next))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::projections::SessionStore;
    use zu_plugin_api::contracts::JsonObject;
    use zu_plugin_api::filter::StoredEvent;

    fn event(ty: &'static str) -> Event {
        let id = Uuid::new_v4();
        Event::new(id, id, None, ty, "test", JsonObject::new()).unwrap()
    }

    /// A sink that fails appends while `failing` and counts closes.
    #[derive(Default)]
    struct Flaky {
        failing: AtomicBool,
        stored: MemorySink,
        closes: AtomicUsize,
    }
    impl EventSink for Flaky {
        fn append(&self, e: &Event) -> Result<(), PluginError> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(PluginError::failed("disk full"));
            }
            self.stored.append(e)
        }
        fn query(&self, f: &EventFilter, l: Option<u64>, a: u64) -> Result<Vec<StoredEvent>, PluginError> {
            self.stored.query(f, l, a)
        }
        fn count(&self, f: &EventFilter) -> Result<u64, PluginError> {
            self.stored.count(f)
        }
        fn close(&self) -> Result<(), PluginError> {
            self.closes.fetch_add(1, Ordering::SeqCst);
            Err(PluginError::failed("close failed too"))
        }
    }

    struct Failing(&'static str, bool);
    impl Subscriber for Failing {
        fn name(&self) -> &str {
            self.0
        }
        fn on_event(&self, _: &Arc<Event>) -> Result<(), String> {
            if self.1 {
                panic!("subscriber exploded");
            }
            Err("projection broke".into())
        }
    }

    fn flaky(failing: bool) -> Arc<Flaky> {
        let f = Arc::new(Flaky::default());
        f.failing.store(failing, Ordering::SeqCst);
        f
    }

    #[test]
    fn a_batched_bus_stores_on_flush_keeps_what_failed_and_reads_flush_first() {
        let canonical = flaky(false);
        let store = Arc::new(SessionStore::default());
        let mut bus = EventBus::with_sink_batched(canonical.clone());
        bus.subscribe(store.clone());
        let (a, b) = (event("harness.a"), event("harness.b"));
        bus.publish(a.clone()).unwrap();
        assert_eq!(canonical.stored.len(), 0, "waits until a flush");
        assert!(store.tasks().is_empty(), "subscribers see only what is stored");
        canonical.failing.store(true, Ordering::SeqCst);
        assert!(matches!(bus.flush(), Err(BusError::Canonical { .. })));
        assert!(store.tasks().is_empty());
        canonical.failing.store(false, Ordering::SeqCst);
        bus.publish(b.clone()).unwrap();
        let read = bus.query(&EventFilter::all(), None, 0).unwrap();
        assert_eq!(
            read.iter().map(|s| s.event.event_id()).collect::<Vec<_>>(),
            [a.event_id(), b.event_id()],
            "the failed batch was kept, in order"
        );
        assert_eq!(store.tasks().len(), 2, "both fanned out once stored");
    }

    #[test]
    fn a_canonical_failure_reaches_the_publisher_and_no_destination_sees_the_event() {
        let canonical = flaky(true);
        let mut bus = EventBus::with_sink(canonical.clone());
        let store = Arc::new(SessionStore::default());
        let shipped = flaky(false);
        bus.subscribe(store.clone());
        bus.add_destination("shipper", shipped.clone());
        let e = event("harness.a");
        let err = bus.publish(e.clone()).unwrap_err();
        assert!(
            matches!(err, BusError::Canonical { event_id, .. } if event_id == e.event_id()),
            "{err}"
        );
        assert!(err.to_string().contains("disk full"));
        assert_eq!(store.event_count(e.task_id()), 0);
        assert_eq!(shipped.stored.len(), 0);
        assert!(bus.failures().is_empty());
    }

    #[test]
    fn a_failing_destination_does_not_stop_the_others_and_is_recorded() {
        let mut bus = EventBus::new();
        let store = Arc::new(SessionStore::default());
        let (broken, shipped) = (flaky(true), flaky(false));
        bus.subscribe(Arc::new(Failing("broken_projection", false)));
        bus.subscribe(Arc::new(Failing("panicking_projection", true)));
        bus.subscribe(store.clone());
        bus.add_destination("broken_sink", broken.clone());
        bus.add_destination("shipper", shipped.clone());
        let e = event("harness.tool.invoked");
        bus.publish(e.clone()).unwrap();
        assert_eq!(store.event_count(e.task_id()), 1);
        assert_eq!(shipped.stored.len(), 1);
        assert_eq!(bus.count(&EventFilter::all()).unwrap(), 1);
        let names: Vec<String> = bus.failures().into_iter().map(|f| f.subscriber).collect();
        assert_eq!(names, ["broken_projection", "panicking_projection", "broken_sink"]);
        let f = &bus.failures()[1];
        assert_eq!(
            (f.event_id, f.event_type.as_str()),
            (e.event_id(), "harness.tool.invoked")
        );
        assert!(f.error.contains("subscriber exploded"));
    }

    #[test]
    fn the_failure_record_is_bounded_keeping_the_latest() {
        let mut bus = EventBus::new().with_max_failures(3);
        bus.subscribe(Arc::new(Failing("broken", false)));
        let events: Vec<Event> = (0..10).map(|_| event("harness.a")).collect();
        for e in &events {
            bus.publish(e.clone()).unwrap();
        }
        let kept: Vec<Uuid> = bus.failures().into_iter().map(|f| f.event_id).collect();
        assert_eq!(kept, events[7..].iter().map(Event::event_id).collect::<Vec<_>>());
    }

    #[test]
    fn close_is_idempotent_and_releases_a_sink_that_failed_once() {
        let canonical = flaky(false);
        let secondary = flaky(true);
        let mut bus = EventBus::with_sink(canonical.clone());
        bus.add_destination("secondary", secondary.clone());
        bus.publish(event("harness.a")).unwrap();
        assert_eq!(bus.failures().len(), 1, "the secondary failed once");
        bus.close();
        bus.close();
        assert_eq!(canonical.closes.load(Ordering::SeqCst), 1);
        assert_eq!(secondary.closes.load(Ordering::SeqCst), 1);
        assert_eq!(bus.publish(event("harness.b")).unwrap_err(), BusError::Closed);
    }

    #[test]
    fn publishing_from_many_threads_loses_and_duplicates_nothing() {
        let mut bus = EventBus::new();
        let store = Arc::new(SessionStore::default());
        bus.subscribe(store.clone());
        let bus = Arc::new(bus);
        let task = Uuid::new_v4();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let bus = bus.clone();
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        let e = Event::new(task, task, None, "harness.a", "t", JsonObject::new()).unwrap();
                        bus.publish(e.clone()).unwrap();
                        bus.publish(e).unwrap(); // a retried publish is a no-op in the log
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(bus.count(&EventFilter::all()).unwrap(), 4000);
        let seqs: Vec<u64> = bus.stream(&EventFilter::all(), 333).map(|e| e.unwrap().seq).collect();
        assert_eq!(seqs, (1..=4000).collect::<Vec<_>>());
        assert_eq!(store.event_count(task), 8000, "subscribers see every publish call");
    }
}
