//! The `jsonl` event sink: one JSON event per line, appended and flushed in a
//! single write. Human-readable and what log shippers tail. Reads treat the
//! 1-based line number as the sequence, tolerate a torn last line left by a
//! crash (skipped, with a line on stderr), and lose nothing before it.
//!
//! Config: `{"path": "zu-trace.jsonl", "read_only": false}`. Payloads are
//! stored as plaintext; use the `sqlite` sink for encryption at rest.
//! Read-only (what `zu events` asks for) never creates a file or directory.

#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Deserialize;
use uuid::Uuid;
use zu_plugin_api::prelude::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    path: Option<PathBuf>,
    #[serde(default)]
    codec: Option<Value>,
    #[serde(default)]
    read_only: bool,
}

struct Writer {
    file: File,
    seen: HashSet<Uuid>,
}

/// The JSONL sink.
pub struct JsonlSink {
    path: Result<PathBuf, String>,
    writer: Mutex<Option<Writer>>,
    read_only: bool,
}

fn fail(path: &Path, what: &str, e: impl std::fmt::Display) -> PluginError {
    PluginError::failed(format!("jsonl sink {}: {what}: {e}", path.display()))
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
                writer: Mutex::new(None),
                read_only: false,
            });
        }
        let config: Config =
            serde_json::from_value(config).map_err(|e| PluginError::invalid(format!("jsonl sink config: {e}")))?;
        match config.codec {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == "plaintext" => {}
            Some(other) => {
                return Err(PluginError::invalid(format!(
                    "the jsonl sink stores plaintext lines and cannot use codec {other}; use the sqlite sink for encryption at rest"
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
        Ok(JsonlSink::at(path))
    }
}

/// One pass over the log: `(seq, event)` for each complete line.
fn scan(path: &Path, mut each: impl FnMut(u64, Event) -> bool) -> Result<(), PluginError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(fail(path, "cannot read", e)),
    };
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut seq = 0u64;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| fail(path, "cannot read", e))?;
        if n == 0 {
            return Ok(());
        }
        let complete = line.last() == Some(&b'\n');
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Event>(text.trim()) {
            Ok(event) => {
                seq += 1;
                if !each(seq, event) {
                    return Ok(());
                }
            }
            Err(_) if !complete => {
                eprintln!(
                    "zu jsonl sink: {}: skipping a torn last line ({} bytes, an append cut short); every line before it is intact",
                    path.display(),
                    line.len()
                );
                return Ok(());
            }
            Err(e) => return Err(fail(path, &format!("line {} is not a valid event", seq + 1), e)),
        }
    }
}

impl JsonlSink {
    /// A sink writing to `path`.
    pub fn at(path: PathBuf) -> Self {
        JsonlSink {
            path: Ok(path),
            writer: Mutex::new(None),
            read_only: false,
        }
    }

    fn path(&self) -> Result<&Path, PluginError> {
        self.path.as_deref().map_err(|why| PluginError::failed(why.clone()))
    }

    /// Opens the file for appending: drops a torn tail (an append that never
    /// returned) so the next line starts clean, and loads the ids already
    /// written so appends stay idempotent.
    fn open_writer(path: &Path) -> Result<Writer, PluginError> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| fail(path, "cannot open", e))?;
        let len = file.metadata().map_err(|e| fail(path, "cannot stat", e))?.len();
        if len > 0 {
            let mut content = Vec::with_capacity(len as usize);
            file.seek(SeekFrom::Start(0))
                .map_err(|e| fail(path, "cannot read", e))?;
            file.read_to_end(&mut content)
                .map_err(|e| fail(path, "cannot read", e))?;
            if content.last() != Some(&b'\n') {
                let keep = content.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                eprintln!(
                    "zu jsonl sink: {}: dropping a torn last line ({} bytes) before appending",
                    path.display(),
                    content.len() - keep
                );
                file.set_len(keep as u64)
                    .map_err(|e| fail(path, "cannot truncate the torn line", e))?;
            }
        }
        let mut seen = HashSet::new();
        scan(path, |_, e| {
            seen.insert(e.event_id());
            true
        })?;
        Ok(Writer { file, seen })
    }
}

impl EventSink for JsonlSink {
    fn append(&self, event: &Event) -> Result<(), PluginError> {
        let path = self.path()?;
        if self.read_only {
            return Err(fail(path, "cannot append", "the sink was opened read-only"));
        }
        let mut guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(JsonlSink::open_writer(path)?);
        }
        let writer = guard.as_mut().expect("opened just above");
        if writer.seen.contains(&event.event_id()) {
            return Ok(());
        }
        let mut line = serde_json::to_vec(event).map_err(|e| PluginError::failed(e.to_string()))?;
        line.push(b'\n');
        writer
            .file
            .write_all(&line)
            .and_then(|_| writer.file.flush())
            .map_err(|e| fail(path, "cannot append", e))?;
        writer.seen.insert(event.event_id());
        Ok(())
    }

    fn query(&self, filter: &EventFilter, limit: Option<u64>, after_seq: u64) -> Result<Vec<StoredEvent>, PluginError> {
        let limit = limit.unwrap_or(u64::MAX);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        scan(self.path()?, |seq, event| {
            if seq > after_seq && filter.matches(&event) {
                out.push(StoredEvent { seq, event });
            }
            (out.len() as u64) < limit
        })?;
        Ok(out)
    }

    fn count(&self, filter: &EventFilter) -> Result<u64, PluginError> {
        let mut n = 0;
        scan(self.path()?, |_, event| {
            n += u64::from(filter.matches(&event));
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
    fn a_corrupt_line_in_the_middle_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let sink = JsonlSink::at(path.clone());
        sink.append(&event("harness.a")).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"not json\n").unwrap();
        sink.close().unwrap();
        let err = JsonlSink::at(path).count(&EventFilter::all()).unwrap_err();
        assert!(err.to_string().contains("line 2 is not a valid event"), "{err}");
    }

    #[test]
    fn config_errors_are_clear() {
        assert!(matches!(JsonlSink::new(json!({})), Err(PluginError::InvalidInput(m)) if m.contains("no \"path\"")));
        let err = JsonlSink::new(json!({"path": "x", "codec": {"kind": "aes-gcm"}}))
            .err()
            .unwrap();
        assert!(err.to_string().contains("use the sqlite sink"), "{err}");
        assert!(JsonlSink::new(Value::Null).unwrap().count(&EventFilter::all()).is_err());
    }
}
