//! Tracks: a run's tool path projected from its own events (tool, args, the
//! gap before the call, the tier it ran at, the model that found it), saved
//! as JSON, and replayed by a later run of the same task with no model calls
//! (the replay itself is a phase of the loop). Also the seeded pacing jitter.

use std::path::Path;

use rand::SeedableRng;
use rand_distr::{Distribution, LogNormal};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zu_plugin_api::contracts::{JsonObject, TaskSpec};
use zu_plugin_api::events as ev;
use zu_plugin_api::filter::{EventFilter, FilterField, StoredEvent};

use crate::bus::{BusError, EventBus};

/// A recorded gap is capped to this on replay unless jitter is on: the gap
/// was the model thinking, not the tool needing time.
pub const MAX_REPLAY_WAIT_MS: u64 = 3000;
/// The spread of the jitter's log-normal (log space).
pub const REPLAY_JITTER_SIGMA: f64 = 0.9;
/// The most jitter one step can add.
pub const REPLAY_JITTER_MAX_MS: u64 = 8000;

/// One tool call on the path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackStep {
    /// The tool's name.
    pub tool: String,
    /// The exact arguments.
    #[serde(default)]
    pub args: JsonObject,
    /// Milliseconds since the previous call was issued.
    #[serde(default)]
    pub wait_ms: u64,
    /// The ladder tier the call ran at.
    #[serde(default = "one")]
    pub tier: u32,
}

fn one() -> u32 {
    1
}

/// A replayable path for one task (its query).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Track {
    /// The query the path was recorded for; a track replays only for it.
    pub task: String,
    /// The model that found the path, if the provider named one.
    #[serde(default)]
    pub model: Option<String>,
    /// The tool calls in order.
    #[serde(default)]
    pub steps: Vec<TrackStep>,
}

/// Why a track file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    /// The file could not be read or written.
    #[error("track file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file is not a track.
    #[error("track file {path} is not a track ({source}); delete it or point --track elsewhere")]
    Invalid {
        /// The file.
        path: String,
        /// What the parser said.
        source: serde_json::Error,
    },
    /// The log could not be read.
    #[error(transparent)]
    Log(#[from] BusError),
}

impl Track {
    /// Whether this track replays for `spec`: same query, and a path to drive.
    pub fn matches(&self, spec: &TaskSpec) -> bool {
        !self.task.is_empty() && self.task == spec.query && !self.steps.is_empty()
    }

    /// Reads a track file; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<Track>, TrackError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(TrackError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| TrackError::Invalid {
                path: path.display().to_string(),
                source,
            })
    }

    /// Writes the track to `path` whole (a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> Result<(), TrackError> {
        let io = |source| TrackError::Io {
            path: path.display().to_string(),
            source,
        };
        let text = serde_json::to_string_pretty(self).expect("a track is plain data");
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Projects a run's events (oldest first) into its path: every
    /// `tool.invoked` with the gap since the previous one and the tier the
    /// escalations had reached.
    pub fn record<'a>(events: impl IntoIterator<Item = &'a StoredEvent>, task: &str, model: Option<String>) -> Track {
        let mut steps = Vec::new();
        let mut tier = 1;
        let mut prev = None;
        for e in events {
            let (ty, p) = (e.event.event_type(), e.event.payload());
            if ty == ev::TASK_ESCALATED {
                if let Some(t) = p.get("to_tier").and_then(|t| t.as_u64()) {
                    tier = t as u32;
                }
                continue;
            }
            let Some(tool) = p
                .get("tool")
                .and_then(|t| t.as_str())
                .filter(|_| ty == ev::TOOL_INVOKED)
            else {
                continue;
            };
            let ts = e.event.ts();
            let wait_ms = prev.map_or(0, |p: chrono::DateTime<chrono::Utc>| {
                (ts - p).num_milliseconds().max(0) as u64
            });
            prev = Some(ts);
            steps.push(TrackStep {
                tool: tool.to_owned(),
                args: p.get("args").and_then(|a| a.as_object()).cloned().unwrap_or_default(),
                wait_ms,
                tier,
            });
        }
        Track {
            task: task.to_owned(),
            model,
            steps,
        }
    }

    /// The path of task `task`'s latest run on `bus`: its events from its
    /// last `task.started` on, never another run's (a shared log holds many).
    pub fn record_run(bus: &EventBus, task: Uuid, model: Option<String>) -> Result<Track, TrackError> {
        let events = run_events(bus, task)?;
        let query = events
            .first()
            .and_then(|e| e.event.payload().get("query"))
            .and_then(|q| q.as_str())
            .unwrap_or_default()
            .to_owned();
        Ok(Track::record(&events, &query, model))
    }
}

/// The events of task `task`'s latest run, oldest first, from its last
/// `task.started` on (empty when it never started).
pub fn run_events(bus: &EventBus, task: Uuid) -> Result<Vec<StoredEvent>, BusError> {
    let of_task = EventFilter::all().with(FilterField::TaskId, Some(task.to_string()));
    let starts = bus.query(
        &of_task.clone().with(FilterField::Type, Some(ev::TASK_STARTED)),
        None,
        0,
    )?;
    let Some(start) = starts.last() else {
        return Ok(Vec::new());
    };
    let from = start.seq.saturating_sub(1);
    Ok(bus
        .query(&of_task, None, from)?
        .into_iter()
        .map(|e| e.into_stored())
        .collect())
}

/// The seeded pacing of one replay: each step waits its recorded gap plus a
/// stationary log-normal extra with median `median_ms` (capped), so a driven
/// path has no machine cadence; the same trace paces the same.
pub struct Jitter {
    rng: rand::rngs::StdRng,
    dist: Option<LogNormal<f64>>,
}

impl Jitter {
    /// The pacing of a run with trace `trace`; `median_ms = 0` is no jitter.
    pub fn new(trace: Uuid, median_ms: u64) -> Self {
        let (a, b) = trace.as_u64_pair();
        let dist = (median_ms > 0).then(|| {
            LogNormal::new((median_ms as f64).ln(), REPLAY_JITTER_SIGMA).expect("a finite mean and a positive sigma")
        });
        Jitter {
            rng: rand::rngs::StdRng::seed_from_u64(a ^ b.rotate_left(32)),
            dist,
        }
    }

    /// How long to wait before a step recorded `wait_ms` after the last:
    /// with jitter, the whole gap plus the extra; without, the gap capped.
    pub fn wait_ms(&mut self, recorded: u64) -> u64 {
        match &self.dist {
            Some(d) => recorded + (d.sample(&mut self.rng) as u64).min(REPLAY_JITTER_MAX_MS),
            None => recorded.min(MAX_REPLAY_WAIT_MS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_seeded_by_the_trace_stationary_and_capped() {
        let trace = Uuid::new_v4();
        let draw = |n| {
            let mut j = Jitter::new(trace, 400);
            (0..n).map(|_| j.wait_ms(100) - 100).collect::<Vec<_>>()
        };
        let a = draw(4000);
        assert_eq!(a, draw(4000), "the same trace paces the same");
        assert!(a.iter().all(|&x| x <= REPLAY_JITTER_MAX_MS));
        let median = |s: &[u64]| {
            let mut s = s.to_vec();
            s.sort();
            s[s.len() / 2]
        };
        // Stationary: the first and the last thousand steps have about the same median.
        let (early, late) = (median(&a[..1000]), median(&a[3000..]));
        assert!(
            (300..=530).contains(&early) && (300..=530).contains(&late),
            "{early} {late}"
        );
        let mut off = Jitter::new(trace, 0);
        assert_eq!(off.wait_ms(10_000), MAX_REPLAY_WAIT_MS, "no jitter caps the gap");
        assert_eq!(off.wait_ms(20), 20);
    }

    #[test]
    fn a_track_file_round_trips_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        assert!(Track::load(&path).unwrap().is_none());
        let t = Track {
            task: "q".into(),
            model: Some("m".into()),
            steps: vec![TrackStep {
                tool: "fetch".into(),
                args: serde_json::json!({"url": "u"}).as_object().cloned().unwrap(),
                wait_ms: 5,
                tier: 2,
            }],
        };
        t.save(&path).unwrap();
        assert_eq!(Track::load(&path).unwrap(), Some(t));
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(Track::load(&path), Err(TrackError::Invalid { .. })));
    }
}
