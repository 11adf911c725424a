//! What `zu serve` knows of the log: one row per run (task id) folded from
//! its events — query, status, steps, tokens, dollars, when — kept current
//! by a follower thread that reads the log after the last sequence number
//! and hands each new event to the live streams.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;
use zu_plugin_api::events as ev;
use zu_plugin_api::filter::EventFilter;
use zu_runtime::projections::is_terminal;
use zu_runtime::{CostSummary, EventBus, LoggedEvent, Prices};

/// One run as the runs page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub task_id: Uuid,
    pub trace_id: Uuid,
    /// The task's query, capped.
    pub query: String,
    /// `success`, `escalate`, `terminal`, or `unfinished` (no end on the log yet).
    pub status: &'static str,
    pub reason: Option<String>,
    /// Model turns, and steps replayed from a track.
    pub steps: u64,
    pub replayed: u64,
    pub tokens: u64,
    /// Dollars of its priced model calls; `None` when none was priced.
    pub usd: Option<f64>,
    pub started: DateTime<Utc>,
    pub last: DateTime<Utc>,
    pub duration_ms: i64,
    pub events: u64,
    /// The sequence number of its `task.started`.
    pub seq: u64,
    /// What it spent, as `zu cost` counts it (`tokens`, `usd`, `replayed` show it).
    #[serde(skip)]
    cost: CostSummary,
}

/// Every run, and how far the log has been read.
#[derive(Default)]
pub struct Index {
    pub runs: HashMap<Uuid, RunRow>,
    pub read_to: u64,
    /// The first full read of the log is done.
    pub ready: bool,
}

const QUERY_CAP: usize = 200;

impl Index {
    fn fold(&mut self, e: &LoggedEvent, prices: &Prices) {
        self.read_to = self.read_to.max(e.seq);
        let event = &e.event;
        let p = event.payload();
        let ty = event.event_type();
        if ty == ev::TASK_STARTED {
            let query: String = p
                .get("query")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .chars()
                .take(QUERY_CAP)
                .collect();
            let ts = event.ts();
            self.runs.insert(
                event.task_id(),
                RunRow {
                    task_id: event.task_id(),
                    trace_id: event.trace_id(),
                    query,
                    status: "unfinished",
                    reason: None,
                    steps: 0,
                    replayed: 0,
                    tokens: 0,
                    usd: None,
                    started: ts,
                    last: ts,
                    duration_ms: 0,
                    events: 0,
                    seq: e.seq,
                    cost: CostSummary::default(),
                },
            );
        }
        let Some(row) = self.runs.get_mut(&event.task_id()) else {
            return;
        };
        row.events += 1;
        row.last = event.ts();
        row.duration_ms = (row.last - row.started).num_milliseconds().max(0);
        if ty == ev::TURN_STARTED && p.get("replay") != Some(&Value::Bool(true)) {
            row.steps += 1;
        }
        row.cost.fold(event, prices);
        (row.tokens, row.usd, row.replayed) = (row.cost.total_tokens, row.cost.usd, row.cost.replay_steps);
        if is_terminal(event) {
            row.status = match ty {
                ev::TASK_COMPLETED => "success",
                ev::TASK_TERMINAL => "terminal",
                _ => "escalate",
            };
            row.reason = p.get("reason").and_then(Value::as_str).map(String::from);
        } else if ty == ev::TASK_RESUMED {
            row.status = "unfinished";
        }
    }
}

/// The index and the live channel, shared by the server's handlers.
pub struct Shared {
    pub index: Mutex<Index>,
    pub live: tokio::sync::broadcast::Sender<Arc<LoggedEvent>>,
}

/// Reads the whole log into `shared`, then follows it every `poll` (a sink
/// that can wait for news waits instead), sending each new event live.
pub fn follow(bus: Arc<EventBus>, shared: Arc<Shared>, prices: Prices, poll: Duration) {
    let all = EventFilter::all();
    // Only this thread moves `read_to`: it keeps its own copy.
    let mut after = 0;
    loop {
        let page = match bus.query(&all, Some(5000), after) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the log; trying again");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let full = page.len() == 5000;
        let ready = {
            let mut index = shared.index.lock().unwrap_or_else(|p| p.into_inner());
            for e in &page {
                match e.event.event_type() {
                    // The log was replaced: read the new one from its start.
                    ev::LOG_RESTARTED => {
                        *index = Index {
                            ready: index.ready,
                            ..Index::default()
                        }
                    }
                    ev::LOG_DAMAGED => index.read_to = index.read_to.max(e.seq),
                    _ => index.fold(e, &prices),
                }
            }
            if !full {
                index.ready = true;
            }
            after = index.read_to;
            index.ready
        };
        if ready {
            for e in page {
                if e.event.event_type() != ev::LOG_DAMAGED {
                    let _ = shared.live.send(Arc::new(e));
                }
            }
        }
        if !full {
            std::thread::sleep(poll);
        }
    }
}
