//! The `jsonl` event sink: one JSON event per line. Human-readable and what
//! log shippers tail. Any number of processes may append to one file at
//! once: each append is one write under a lock every writer takes. Reads
//! number every non-blank line (the 1-based sequence), skip lines that are
//! not events, and never read a line still being written.
//!
//! Config: `{"path": "zu-trace.jsonl", "durability": "process" | "power",
//! "read_only": false}`. `process` (the default) survives a killed process;
//! `power` also syncs each append to disk before it returns. Payloads are
//! plaintext; use `sqlite` or `postgres` for encryption at rest. Read-only
//! (what `zu events` asks for) never creates a file or directory, returns a
//! `harness.log.damaged` note in place of each line it cannot read, and a
//! `harness.log.restarted` note when the file was deleted, replaced or
//! truncated since its last read.

#![forbid(unsafe_code)]

mod file;

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Deserialize;
use uuid::Uuid;
use zu_plugin_api::events::{damaged_row, log_restarted};
use zu_plugin_api::prelude::*;

use file::{fail, Line, Marks, Seen};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    path: Option<PathBuf>,
    #[serde(default)]
    codec: Option<Value>,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    durability: Durability,
    /// How long a follower's read may wait for news; this sink answers at
    /// once and lets the reader poll.
    #[serde(default, rename = "wait_ms")]
    _wait_ms: u64,
}

/// What an append survives once it returns.
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Durability {
    /// The write is in the OS: a killed process loses nothing.
    #[default]
    Process,
    /// Synced to disk: a power cut loses nothing.
    Power,
}

struct Writer {
    file: File,
    /// Ids this sink has seen in the file or written, for idempotent appends.
    seen: HashSet<Uuid>,
}

/// What a sink knows about the file between reads.
#[derive(Default)]
struct Reading {
    seen: Option<Seen>,
    marks: Marks,
    /// Bad lines already reported on stderr (writers warn once per line).
    warned: HashSet<u64>,
}

/// The JSONL sink.
pub struct JsonlSink {
    path: Result<PathBuf, String>,
    read_only: bool,
    durability: Durability,
    writer: Mutex<Option<Writer>>,
    reading: Mutex<Reading>,
}

impl Plugin for JsonlSink {
    const NAME: &'static str = "jsonl";
    const ENVELOPE: Envelope = Envelope {
        tier: 1,
        capabilities: &[CAP_FS_READ, CAP_FS_WRITE],
        egress: &[],
    };

    fn new(config: Value) -> Result<Self, PluginError> {
        if config.is_null() {
            let why = "the jsonl sink is not configured: give it a config with a path, e.g. --sink-config '{\"path\": \"zu.jsonl\"}'";
            return Ok(JsonlSink {
                path: Err(why.into()),
                ..JsonlSink::at(PathBuf::new())
            });
        }
        let config: Config =
            serde_json::from_value(config).map_err(|e| PluginError::invalid(format!("jsonl sink config: {e}")))?;
        match config.codec {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == "plaintext" => {}
            Some(other) => {
                return Err(PluginError::invalid(format!(
                    "the jsonl sink stores plaintext lines and cannot use codec {other}; use the sqlite or postgres sink for encryption at rest"
                )))
            }
        }
        let path = config.path.ok_or_else(|| {
            PluginError::invalid("jsonl sink config has no \"path\" (the log file, e.g. {\"path\": \"zu.jsonl\"})")
        })?;
        if config.read_only {
            if !path.is_file() {
                return Err(PluginError::invalid(format!(
                    "no event log at {} (a reader never creates one; check the path)",
                    path.display()
                )));
            }
            return Ok(JsonlSink {
                read_only: true,
                ..JsonlSink::at(path)
            });
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| fail(&path, "cannot create its directory", e))?;
        }
        Ok(JsonlSink {
            durability: config.durability,
            ..JsonlSink::at(path)
        })
    }
}

impl JsonlSink {
    /// A sink writing to `path` (durable against a killed process).
    pub fn at(path: PathBuf) -> Self {
        JsonlSink {
            path: Ok(path),
            read_only: false,
            durability: Durability::Process,
            writer: Mutex::new(None),
            reading: Mutex::new(Reading::default()),
        }
    }

    fn path(&self) -> Result<&Path, PluginError> {
        self.path.as_deref().map_err(|why| PluginError::failed(why.clone()))
    }

    /// Appends the events not yet in the log, as one write.
    fn append_all(&self, events: &[&Event]) -> Result<(), PluginError> {
        let path = self.path()?;
        if self.read_only {
            return Err(fail(path, "cannot append", "the sink was opened read-only"));
        }
        let mut guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let file = file::open_for_append(path)?;
            let mut seen = HashSet::new();
            self.read(0, |_, line| {
                if let Line::Event(e) = line {
                    seen.insert(e.event_id());
                }
                true
            })?;
            *guard = Some(Writer { file, seen });
        }
        let writer = guard.as_mut().expect("opened just above");
        let mut lines = Vec::new();
        let mut fresh: Vec<Uuid> = Vec::new();
        for event in events {
            if writer.seen.contains(&event.event_id()) || fresh.contains(&event.event_id()) {
                continue;
            }
            serde_json::to_writer(&mut lines, event).map_err(|e| PluginError::failed(e.to_string()))?;
            lines.push(b'\n');
            fresh.push(event.event_id());
        }
        if lines.is_empty() {
            return Ok(());
        }
        file::append(&mut writer.file, path, &lines, self.durability == Durability::Power)?;
        writer.seen.extend(fresh);
        Ok(())
    }

    /// Reads the log after `after_seq`. A reader that finds the file gone,
    /// replaced, shorter or with other first bytes than at its last read (or
    /// at the end of this one) answers a restart note instead, once;
    /// otherwise `each` sees every complete line.
    fn read(
        &self,
        after_seq: u64,
        mut each: impl FnMut(u64, Line) -> bool,
    ) -> Result<Option<StoredEvent>, PluginError> {
        let path = self.path()?;
        let mut reading = self.reading.lock().unwrap_or_else(|p| p.into_inner());
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let was = reading.seen.take();
                reading.marks = Marks::default();
                return Ok((self.read_only && was.is_some()).then(|| log_restarted("deleted")));
            }
            Err(e) => return Err(fail(path, "cannot read", e)),
        };
        let now = Seen::of(&file, path)?;
        let restart = reading.seen.as_ref().and_then(|was| was.change(&now));
        reading.seen = Some(now.clone());
        if let Some(what) = restart {
            reading.marks = Marks::default();
            if self.read_only {
                return Ok(Some(log_restarted(what)));
            }
        }
        file::scan(&file, path, &mut reading.marks, after_seq, &mut each)?;
        // Emptied and rewritten while it was read: what was read is not one log.
        let after = Seen::of(&file, path)?;
        let during = now.change(&after);
        reading.seen = Some(after);
        match during {
            Some(what) => {
                reading.marks = Marks::default();
                Ok(self.read_only.then(|| log_restarted(what)))
            }
            None => Ok(None),
        }
    }

    /// The events (and, read-only, the notes about bad lines) after
    /// `after_seq` that `keep` accepts, at most `limit`.
    fn collect(
        &self,
        after_seq: u64,
        limit: u64,
        keep: impl Fn(&Event) -> bool,
    ) -> Result<Vec<StoredEvent>, PluginError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let mut bad = Vec::new();
        let restarted = self.read(after_seq, |seq, line| {
            match line {
                Line::Event(event) if keep(&event) => out.push(StoredEvent { seq, event }),
                Line::Event(_) => {}
                Line::Bad(reason) => {
                    if self.read_only {
                        out.push(damaged_row(seq, &format!("line {seq}"), &reason));
                    }
                    bad.push((seq, reason));
                }
            }
            (out.len() as u64) < limit
        })?;
        if let Some(note) = restarted {
            return Ok(vec![note]);
        }
        if !self.read_only && !bad.is_empty() {
            let path = self.path()?.display().to_string();
            let mut reading = self.reading.lock().unwrap_or_else(|p| p.into_inner());
            for (seq, reason) in bad {
                if reading.warned.insert(seq) {
                    eprintln!("zu jsonl sink: {path}: skipping {reason}");
                }
            }
        }
        Ok(out)
    }
}

impl EventSink for JsonlSink {
    fn append(&self, event: &Event) -> Result<(), PluginError> {
        self.append_all(&[event])
    }

    fn append_batch(&self, events: &[Event]) -> Result<(), PluginError> {
        self.append_all(&events.iter().collect::<Vec<_>>())
    }

    fn query(&self, filter: &EventFilter, limit: Option<u64>, after_seq: u64) -> Result<Vec<StoredEvent>, PluginError> {
        self.collect(after_seq, limit.unwrap_or(u64::MAX), |e| filter.matches(e))
    }

    fn count(&self, filter: &EventFilter) -> Result<u64, PluginError> {
        let mut n = 0;
        self.read(0, |_, line| {
            n += u64::from(matches!(line, Line::Event(e) if filter.matches(&e)));
            true
        })?;
        Ok(n)
    }

    fn close(&self) -> Result<(), PluginError> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        Ok(())
    }
}

#[cfg(feature = "export")]
zu_plugin_api::export_plugins! { sinks: [JsonlSink] }

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;

    fn event(ty: &'static str) -> Event {
        let id = Uuid::new_v4();
        Event::new(id, id, None, ty, "test", JsonObject::new()).unwrap()
    }

    #[test]
    fn a_torn_last_line_is_skipped_on_read_and_dropped_before_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let sink = JsonlSink::at(path.clone());
        let (a, b) = (event("harness.a"), event("harness.b"));
        sink.append(&a).unwrap();
        sink.close().unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"event_id": "0000"#).unwrap();
        let reader = JsonlSink::at(path.clone());
        assert_eq!(reader.query(&EventFilter::all(), None, 0).unwrap().len(), 1);
        reader.append(&b).unwrap();
        let all: Vec<Event> = reader
            .query(&EventFilter::all(), None, 0)
            .unwrap()
            .into_iter()
            .map(|s| s.event)
            .collect();
        assert_eq!(all, vec![a, b]);
    }

    #[test]
    fn a_corrupt_middle_line_is_skipped_and_a_reader_is_told_where() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let sink = JsonlSink::at(path.clone());
        let (a, b) = (event("harness.a"), event("harness.b"));
        sink.append(&a).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"not json\n").unwrap();
        sink.append(&b).unwrap();
        sink.close().unwrap();
        let writer_view = JsonlSink::at(path.clone()).query(&EventFilter::all(), None, 0).unwrap();
        let seqs: Vec<(u64, Uuid)> = writer_view.iter().map(|s| (s.seq, s.event.event_id())).collect();
        assert_eq!(
            seqs,
            [(1, a.event_id()), (3, b.event_id())],
            "the bad line keeps its number"
        );
        let reader = JsonlSink::new(json!({"path": path, "read_only": true})).unwrap();
        let all = reader.query(&EventFilter::all(), None, 0).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[1].seq, 2);
        assert_eq!(all[1].event.event_type(), zu_plugin_api::events::LOG_DAMAGED);
        assert!(all[1].event.payload()["reason"]
            .as_str()
            .unwrap()
            .contains("line 2 is not a valid event"));
        assert_eq!(
            reader.query(&EventFilter::all(), None, 2).unwrap()[0].event,
            b,
            "after_seq skips past it"
        );
        assert_eq!(reader.count(&EventFilter::all()).unwrap(), 2);
    }

    #[test]
    fn a_reader_notices_a_replaced_or_truncated_log_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let writer = JsonlSink::at(path.clone());
        for _ in 0..3 {
            writer.append(&event("harness.a")).unwrap();
        }
        let reader = JsonlSink::new(json!({"path": path, "read_only": true})).unwrap();
        assert_eq!(reader.query(&EventFilter::all(), None, 0).unwrap().len(), 3);
        std::fs::remove_file(&path).unwrap();
        let note = reader.query(&EventFilter::all(), None, 3).unwrap();
        assert_eq!(note[0].event.payload()["what"], "deleted");
        let fresh = JsonlSink::at(path.clone());
        let first = event("harness.b");
        fresh.append(&first).unwrap();
        let again = reader.query(&EventFilter::all(), None, 0).unwrap();
        assert_eq!(again[0].event, first, "the new file from its first event");
        std::fs::write(&path, b"").unwrap();
        let note = reader.query(&EventFilter::all(), None, 1).unwrap();
        assert_eq!(note[0].event.payload()["what"], "truncated");
        let other = dir.path().join("other.jsonl");
        JsonlSink::at(other.clone()).append(&event("harness.c")).unwrap();
        std::fs::rename(&other, &path).unwrap();
        let note = reader.query(&EventFilter::all(), None, 0).unwrap();
        assert_eq!(note[0].event.payload()["what"], "replaced");
        assert_eq!(
            reader.query(&EventFilter::all(), None, 0).unwrap()[0]
                .event
                .event_type(),
            "harness.c"
        );
    }

    #[test]
    fn config_errors_are_clear() {
        assert!(matches!(JsonlSink::new(json!({})), Err(PluginError::InvalidInput(m)) if m.contains("no \"path\"")));
        let err = JsonlSink::new(json!({"path": "x", "codec": {"kind": "aes-gcm"}}))
            .err()
            .unwrap();
        assert!(err.to_string().contains("use the sqlite or postgres sink"), "{err}");
        assert!(JsonlSink::new(Value::Null).unwrap().count(&EventFilter::all()).is_err());
    }
}
