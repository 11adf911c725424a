//! The in-memory event sink, the default canonical store: the log as a vector
//! of shared events, idempotent by `event_id`, with per-field posting lists so
//! a filtered query or count does not scan the log. The lists are brought up
//! to date lazily by the first read after appends, keeping `append` minimal.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Arc, RwLock};

use rustc_hash::FxHasher;
use uuid::Uuid;
use zu_plugin_api::contracts::Event;
use zu_plugin_api::filter::{EventFilter, FilterField, StoredEvent};
use zu_plugin_api::ports::{EventSink, PluginError};

/// An event as read from the log, with its 1-based sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    /// Position in the canonical log.
    pub seq: u64,
    /// The event, shared with the log.
    pub event: Arc<Event>,
}

impl LoggedEvent {
    /// The owned form plugins exchange.
    pub fn into_stored(self) -> StoredEvent {
        StoredEvent {
            seq: self.seq,
            event: Arc::unwrap_or_clone(self.event),
        }
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Sequence numbers (1-based) of the events with one field value, ascending.
type Postings = Vec<u32>;

#[derive(Default)]
struct Index {
    upto: usize,
    trace: FxMap<Uuid, Postings>,
    task: FxMap<Uuid, Postings>,
    parent: FxMap<Option<Uuid>, Postings>,
    ty: FxMap<Box<str>, Postings>,
    source: FxMap<Box<str>, Postings>,
}

impl Index {
    fn catch_up(&mut self, events: &[Arc<Event>]) {
        for (i, e) in events.iter().enumerate().skip(self.upto) {
            let seq = i as u32 + 1;
            self.trace.entry(e.trace_id()).or_default().push(seq);
            self.task.entry(e.task_id()).or_default().push(seq);
            self.parent.entry(e.parent_id()).or_default().push(seq);
            push_str(&mut self.ty, e.event_type(), seq);
            push_str(&mut self.source, e.source(), seq);
        }
        self.upto = events.len();
    }
}

fn push_str(map: &mut FxMap<Box<str>, Postings>, key: &str, seq: u32) {
    match map.get_mut(key) {
        Some(p) => p.push(seq),
        None => {
            map.insert(key.into(), vec![seq]);
        }
    }
}

#[derive(Default)]
struct Inner {
    events: Vec<Arc<Event>>,
    ids: FxMap<Uuid, u32>,
    index: Index,
}

/// A filter value on a UUID field matches only the canonical text of a UUID,
/// exactly as the SQLite sink's text columns compare.
fn uuid_key(value: &str) -> Option<Uuid> {
    Uuid::parse_str(value).ok().filter(|u| u.to_string() == value)
}

enum Candidates<'a> {
    All,
    Some(&'a [u32]),
    None,
}

impl Inner {
    fn postings(&self, field: FilterField, value: Option<&str>) -> Candidates<'_> {
        let ix = &self.index;
        let found = match (field, value) {
            (FilterField::EventId, Some(v)) => {
                return match uuid_key(v).and_then(|u| self.ids.get(&u)) {
                    Some(seq) => Candidates::Some(std::slice::from_ref(seq)),
                    None => Candidates::None,
                }
            }
            (FilterField::TraceId, Some(v)) => uuid_key(v).and_then(|u| ix.trace.get(&u)),
            (FilterField::TaskId, Some(v)) => uuid_key(v).and_then(|u| ix.task.get(&u)),
            (FilterField::ParentId, v) => match v {
                None => ix.parent.get(&None),
                Some(v) => uuid_key(v).and_then(|u| ix.parent.get(&Some(u))),
            },
            (FilterField::Type, Some(v)) => ix.ty.get(v),
            (FilterField::Source, Some(v)) => ix.source.get(v),
            // event_id, trace_id, task_id, type and source are never null.
            (_, None) => None,
        };
        found.map_or(Candidates::None, |p| Candidates::Some(p))
    }

    /// The smallest candidate list for `filter` (every term is still checked).
    fn candidates(&self, filter: &EventFilter) -> Candidates<'_> {
        let mut best = Candidates::All;
        for (field, value) in filter.terms() {
            match self.postings(*field, value.as_deref()) {
                Candidates::None => return Candidates::None,
                Candidates::Some(p) => match best {
                    Candidates::Some(b) if b.len() <= p.len() => {}
                    _ => best = Candidates::Some(p),
                },
                Candidates::All => {}
            }
        }
        best
    }

    fn select(&self, filter: &EventFilter, limit: Option<u64>, after_seq: u64) -> Vec<LoggedEvent> {
        let limit = limit.map_or(usize::MAX, |l| l.min(usize::MAX as u64) as usize);
        if limit == 0 {
            return Vec::new();
        }
        // With at most one term, the posting list is exactly the matches.
        let exact = filter.terms().len() <= 1;
        let collect = |seqs: &mut dyn Iterator<Item = u64>, room: usize| {
            let mut out = Vec::with_capacity(limit.min(room));
            for seq in seqs {
                let event = &self.events[seq as usize - 1];
                if exact || filter.matches(event) {
                    out.push(LoggedEvent {
                        seq,
                        event: event.clone(),
                    });
                    if out.len() == limit {
                        break;
                    }
                }
            }
            out
        };
        match self.candidates(filter) {
            Candidates::None => Vec::new(),
            Candidates::All => {
                let end = self.events.len() as u64;
                collect(&mut (after_seq + 1..=end), end.saturating_sub(after_seq) as usize)
            }
            Candidates::Some(p) => {
                let rest = &p[p.partition_point(|s| u64::from(*s) <= after_seq)..];
                collect(&mut rest.iter().map(|s| u64::from(*s)), rest.len())
            }
        }
    }

    fn count(&self, filter: &EventFilter) -> u64 {
        match (self.candidates(filter), filter.terms().len()) {
            (Candidates::None, _) => 0,
            (Candidates::All, _) => self.events.len() as u64,
            (Candidates::Some(p), 1) => p.len() as u64,
            (Candidates::Some(p), _) => p
                .iter()
                .filter(|s| filter.matches(&self.events[**s as usize - 1]))
                .count() as u64,
        }
    }
}

/// The in-memory sink.
#[derive(Default)]
pub struct MemorySink {
    inner: RwLock<Inner>,
}

impl MemorySink {
    /// An empty log.
    pub fn new() -> Self {
        MemorySink::default()
    }

    /// Appends a shared event; `false` if its `event_id` was already stored.
    pub fn append_shared(&self, event: Arc<Event>) -> bool {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let seq = inner.events.len() as u32 + 1;
        match inner.ids.entry(event.event_id()) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(seq);
                inner.events.push(event);
                true
            }
        }
    }

    /// Runs `f` on a read view whose indexes cover every stored event.
    fn read<T>(&self, f: impl FnOnce(&Inner) -> T) -> T {
        {
            let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
            if inner.index.upto == inner.events.len() {
                return f(&inner);
            }
        }
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let Inner { events, index, .. } = &mut *inner;
        index.catch_up(events);
        f(&inner)
    }

    /// Events matching `filter` after `after_seq`, at most `limit`, shared.
    pub fn query_shared(&self, filter: &EventFilter, limit: Option<u64>, after_seq: u64) -> Vec<LoggedEvent> {
        self.read(|inner| inner.select(filter, limit, after_seq))
    }

    /// How many events match `filter`.
    pub fn count_matching(&self, filter: &EventFilter) -> u64 {
        self.read(|inner| inner.count(filter))
    }

    /// Events stored.
    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).events.len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl EventSink for MemorySink {
    fn append(&self, event: &Event) -> Result<(), PluginError> {
        self.append_shared(Arc::new(event.clone()));
        Ok(())
    }

    fn query(&self, filter: &EventFilter, limit: Option<u64>, after_seq: u64) -> Result<Vec<StoredEvent>, PluginError> {
        Ok(self
            .query_shared(filter, limit, after_seq)
            .into_iter()
            .map(LoggedEvent::into_stored)
            .collect())
    }

    fn count(&self, filter: &EventFilter) -> Result<u64, PluginError> {
        Ok(self.count_matching(filter))
    }
}
