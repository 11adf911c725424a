//! The `sqlite` event sink: the embedded durable store. WAL journal,
//! `synchronous=FULL` (an append is durable when it returns), idempotent on
//! `event_id`, an index per filter field, keyset-paged reads, and payloads
//! through the codec (plaintext or AES-256-GCM bound to the row's columns).
//!
//! Config: `{"path": "zu.db", "codec": null | "plaintext" | {"kind": "aes-gcm",
//! "key_env": "ZU_EVENT_KEY"} | {"kind": "managed-aes-gcm"}, "busy_timeout_ms": 5000,
//! "read_only": false}`. Read-only (what `zu events` asks for) never creates
//! or changes a file, and reads a log on read-only media.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params_from_iter, Connection};
use serde::Deserialize;
use zu_codec::{row_aad, Codecs};
use zu_plugin_api::prelude::*;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT NOT NULL UNIQUE,
    trace_id   TEXT NOT NULL,
    task_id    TEXT NOT NULL,
    parent_id  TEXT,
    type       TEXT NOT NULL,
    source     TEXT NOT NULL,
    data       BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_events_trace  ON events(trace_id, seq);
CREATE INDEX IF NOT EXISTS idx_events_task   ON events(task_id, seq);
CREATE INDEX IF NOT EXISTS idx_events_parent ON events(parent_id, seq);
CREATE INDEX IF NOT EXISTS idx_events_type   ON events(type, seq);
CREATE INDEX IF NOT EXISTS idx_events_source ON events(source, seq);
";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    path: Option<PathBuf>,
    #[serde(default)]
    codec: Option<Value>,
    #[serde(default = "default_busy_timeout")]
    busy_timeout_ms: u64,
    #[serde(default)]
    read_only: bool,
}

fn default_busy_timeout() -> u64 {
    5000
}

struct Open {
    conn: Connection,
    codecs: Codecs,
    path: PathBuf,
}

/// The SQLite sink.
pub struct SqliteSink {
    state: Mutex<Result<Open, String>>,
}

fn fail(path: &Path, what: &str, e: impl std::fmt::Display) -> PluginError {
    PluginError::failed(format!("sqlite sink {}: {what}: {e}", path.display()))
}

impl SqliteSink {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path, codecs: Codecs, busy_timeout_ms: u64) -> Result<Self, PluginError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| fail(path, "cannot create its directory", e))?;
        }
        let conn = Connection::open(path).map_err(|e| fail(path, "cannot open", e))?;
        let setup = || -> rusqlite::Result<()> {
            conn.busy_timeout(std::time::Duration::from_millis(busy_timeout_ms))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.execute_batch(SCHEMA)
        };
        setup().map_err(|e| fail(path, "not a usable Zu event database", e))?;
        Ok(SqliteSink {
            state: Mutex::new(Ok(Open {
                conn,
                codecs,
                path: path.to_owned(),
            })),
        })
    }

    /// Opens the existing log at `path` for reading only: nothing is
    /// created or changed, and a log on read-only media (where SQLite cannot
    /// create its WAL index) is opened as immutable.
    pub fn open_read_only(path: &Path, codecs: Codecs, busy_timeout_ms: u64) -> Result<Self, PluginError> {
        use rusqlite::OpenFlags;
        if !path.is_file() {
            return Err(PluginError::invalid(format!(
                "no event log at {} (a reader never creates one; check the path)",
                path.display()
            )));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let has_events = |conn: &Connection| -> rusqlite::Result<bool> {
            conn.busy_timeout(std::time::Duration::from_millis(busy_timeout_ms))?;
            conn.query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'events'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
        };
        let open_with = |uri: String| -> rusqlite::Result<(Connection, bool)> {
            let conn = Connection::open_with_flags(uri, flags)?;
            let ok = has_events(&conn)?;
            Ok((conn, ok))
        };
        let plain = format!("file:{}", uri_path(path));
        let (conn, is_log) = open_with(plain.clone())
            .or_else(|_| open_with(format!("{plain}?immutable=1")))
            .map_err(|e| fail(path, "cannot open for reading", e))?;
        if !is_log {
            return Err(PluginError::invalid(format!(
                "{} is not a Zu event log (it has no events table)",
                path.display()
            )));
        }
        Ok(SqliteSink {
            state: Mutex::new(Ok(Open {
                conn,
                codecs,
                path: path.to_owned(),
            })),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Open) -> Result<T, PluginError>) -> Result<T, PluginError> {
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match &*guard {
            Ok(open) => f(open),
            Err(why) => Err(PluginError::failed(why.clone())),
        }
    }
}

impl Plugin for SqliteSink {
    const NAME: &'static str = "sqlite";
    const ENVELOPE: Envelope = Envelope {
        tier: 1,
        capabilities: &[CAP_FS_READ, CAP_FS_WRITE],
        egress: &[],
    };

    fn new(config: Value) -> Result<Self, PluginError> {
        if config.is_null() {
            let why = "the sqlite sink is not configured: give it a config with a path, e.g. --sink-config '{\"path\": \"zu.db\"}'";
            return Ok(SqliteSink {
                state: Mutex::new(Err(why.into())),
            });
        }
        let config: Config =
            serde_json::from_value(config).map_err(|e| PluginError::invalid(format!("sqlite sink config: {e}")))?;
        let path = config.path.ok_or_else(|| {
            PluginError::invalid("sqlite sink config has no \"path\" (the database file, e.g. {\"path\": \"zu.db\"})")
        })?;
        let codecs = Codecs::from_config(config.codec.as_ref()).map_err(|e| PluginError::invalid(e.to_string()))?;
        if config.read_only {
            SqliteSink::open_read_only(&path, codecs, config.busy_timeout_ms)
        } else {
            SqliteSink::open(&path, codecs, config.busy_timeout_ms)
        }
    }
}

/// A path as the path part of an SQLite `file:` URI (`?`, `#` and `%`
/// escaped, so a file name is never read as URI parameters).
fn uri_path(path: &Path) -> String {
    let text = path.to_string_lossy();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            '%' => out.push_str("%25"),
            c => out.push(c),
        }
    }
    out
}

fn where_clause(filter: &EventFilter) -> (String, Vec<String>) {
    let mut sql = String::new();
    let mut params = Vec::new();
    for (field, value) in filter.terms() {
        // Column names come from the fixed FilterField set, never from input.
        let col = field.as_str();
        match value {
            None => sql.push_str(&format!(" AND {col} IS NULL")),
            Some(v) => {
                sql.push_str(&format!(" AND {col} = ?"));
                params.push(v.clone());
            }
        }
    }
    (sql, params)
}

fn row_to_event(open: &Open, row: &rusqlite::Row<'_>) -> Result<StoredEvent, PluginError> {
    let get = |i: usize| row.get::<_, String>(i).map_err(|e| fail(&open.path, "bad row", e));
    let seq: i64 = row.get(0).map_err(|e| fail(&open.path, "bad row", e))?;
    let (event_id, trace_id, task_id, ty, source) = (get(1)?, get(2)?, get(3)?, get(4)?, get(5)?);
    let blob: Vec<u8> = row.get(6).map_err(|e| fail(&open.path, "bad row", e))?;
    let aad = row_aad(&event_id, &trace_id, &task_id, &ty, &source);
    let text = open
        .codecs
        .decode(&blob, &aad)
        .map_err(|e| fail(&open.path, &format!("event {event_id} (seq {seq})"), e))?;
    let event: Event = serde_json::from_str(&text).map_err(|e| {
        fail(
            &open.path,
            &format!("event {event_id} (seq {seq}) is not a valid event"),
            e,
        )
    })?;
    Ok(StoredEvent { seq: seq as u64, event })
}

/// Inserts one event (idempotently) on `open`'s connection.
fn insert(open: &Open, event: &Event) -> Result<(), PluginError> {
    let event_id = event.event_id().to_string();
    let (trace, task) = (event.trace_id().to_string(), event.task_id().to_string());
    let aad = row_aad(&event_id, &trace, &task, event.event_type(), event.source());
    let json = serde_json::to_string(event).map_err(|e| PluginError::failed(e.to_string()))?;
    let blob = open
        .codecs
        .encode(&json, &aad)
        .map_err(|e| fail(&open.path, "cannot encode", e))?;
    open.conn
        .prepare_cached(
            "INSERT INTO events (event_id, trace_id, task_id, parent_id, type, source, data) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(event_id) DO NOTHING",
        )
        .and_then(|mut st| {
            st.execute(rusqlite::params![
                event_id,
                trace,
                task,
                event.parent_id().map(|p| p.to_string()),
                event.event_type(),
                event.source(),
                blob
            ])
        })
        .map_err(|e| fail(&open.path, "cannot append", e))?;
    Ok(())
}

impl EventSink for SqliteSink {
    fn append(&self, event: &Event) -> Result<(), PluginError> {
        self.with(|open| insert(open, event))
    }

    fn append_batch(&self, events: &[Event]) -> Result<(), PluginError> {
        self.with(|open| {
            let tx = open
                .conn
                .unchecked_transaction()
                .map_err(|e| fail(&open.path, "cannot begin", e))?;
            for event in events {
                insert(open, event)?;
            }
            tx.commit().map_err(|e| fail(&open.path, "cannot commit", e))
        })
    }

    fn query(&self, filter: &EventFilter, limit: Option<u64>, after_seq: u64) -> Result<Vec<StoredEvent>, PluginError> {
        self.with(|open| {
            let (clause, params) = where_clause(filter);
            let limit = limit.map_or(-1, |l| l.min(i64::MAX as u64) as i64);
            let sql = format!(
                "SELECT seq, event_id, trace_id, task_id, type, source, data FROM events \
                 WHERE seq > {after_seq}{clause} ORDER BY seq LIMIT {limit}"
            );
            let mut st = open
                .conn
                .prepare_cached(&sql)
                .map_err(|e| fail(&open.path, "cannot query", e))?;
            let mut rows = st
                .query(params_from_iter(params.iter()))
                .map_err(|e| fail(&open.path, "cannot query", e))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(|e| fail(&open.path, "cannot read", e))? {
                out.push(row_to_event(open, row)?);
            }
            Ok(out)
        })
    }

    fn count(&self, filter: &EventFilter) -> Result<u64, PluginError> {
        self.with(|open| {
            let (clause, params) = where_clause(filter);
            let sql = format!("SELECT COUNT(*) FROM events WHERE 1=1{clause}");
            let n: i64 = open
                .conn
                .prepare_cached(&sql)
                .and_then(|mut st| st.query_row(params_from_iter(params.iter()), |r| r.get(0)))
                .map_err(|e| fail(&open.path, "cannot count", e))?;
            Ok(n as u64)
        })
    }

    fn close(&self) -> Result<(), PluginError> {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(open) = std::mem::replace(&mut *guard, Err("the sqlite sink is closed".into())) {
            let path = open.path.clone();
            open.conn.close().map_err(|(_, e)| fail(&path, "cannot close", e))?;
        }
        Ok(())
    }
}

#[cfg(feature = "export")]
zu_plugin_api::export_plugins! { sinks: [SqliteSink] }

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use uuid::Uuid;
    use zu_codec::AesGcmCodec;

    fn event(ty: &'static str) -> Event {
        let id = Uuid::new_v4();
        Event::new(
            id,
            id,
            None,
            ty,
            "test",
            json!({"secret": "s3cr3t"}).as_object().cloned().unwrap(),
        )
        .unwrap()
    }

    fn aes(key: u8) -> Codecs {
        Codecs::new(Arc::new(AesGcmCodec::new([key; 32])))
    }

    #[test]
    fn plaintext_and_encrypted_rows_read_back_from_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zu.db");
        let (a, b) = (event("harness.a"), event("harness.b"));
        let plain = SqliteSink::open(&path, Codecs::plaintext(), 1000).unwrap();
        plain.append(&a).unwrap();
        plain.close().unwrap();
        let enc = SqliteSink::open(&path, aes(1), 1000).unwrap();
        enc.append(&b).unwrap();
        let all = enc.query(&EventFilter::all(), None, 0).unwrap();
        assert_eq!(all.iter().map(|s| s.event.clone()).collect::<Vec<_>>(), vec![a, b]);
        enc.close().unwrap();
        let raw = std::fs::read(&path).unwrap();
        assert_eq!(
            raw.windows(6).filter(|w| *w == b"s3cr3t").count(),
            1,
            "only the plaintext row shows the secret"
        );
        // A reader without the key reads the plaintext row and says why it cannot read the other.
        let err = SqliteSink::open(&path, Codecs::plaintext(), 1000)
            .unwrap()
            .query(&EventFilter::all(), None, 0)
            .unwrap_err();
        assert!(
            err.to_string().contains("no codec configured for payload version 1"),
            "{err}"
        );
    }

    #[test]
    fn a_row_moved_to_another_row_or_read_with_the_wrong_key_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zu.db");
        let sink = SqliteSink::open(&path, aes(1), 1000).unwrap();
        sink.append(&event("harness.a")).unwrap();
        sink.append(&event("harness.b")).unwrap();
        assert_eq!(sink.count(&EventFilter::all()).unwrap(), 2);
        sink.close().unwrap();
        let wrong = SqliteSink::open(&path, aes(2), 1000).unwrap();
        let err = wrong.query(&EventFilter::all(), Some(1), 0).unwrap_err();
        assert!(err.to_string().contains("cannot decrypt payload"), "{err}");
        wrong.close().unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE events SET data = (SELECT data FROM events WHERE seq = 1) WHERE seq = 2",
            [],
        )
        .unwrap();
        drop(conn);
        let sink = SqliteSink::open(&path, aes(1), 1000).unwrap();
        assert_eq!(
            sink.query(&EventFilter::all(), Some(1), 0).unwrap().len(),
            1,
            "row 1 is intact"
        );
        let err = sink.query(&EventFilter::all(), None, 1).unwrap_err();
        assert!(
            err.to_string().contains("(seq 2)") && err.to_string().contains("moved"),
            "{err}"
        );
    }

    #[test]
    fn a_corrupt_file_and_a_missing_path_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corrupt.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let err = SqliteSink::new(json!({"path": path})).err().unwrap();
        assert!(err.to_string().contains("not a usable Zu event database"), "{err}");
        assert!(err.to_string().contains("corrupt.db"), "{err}");
        let err = SqliteSink::new(json!({"codec": null})).err().unwrap();
        assert!(
            matches!(err, PluginError::InvalidInput(ref m) if m.contains("no \"path\"")),
            "{err}"
        );
        let unconfigured = SqliteSink::new(Value::Null).unwrap();
        let err = unconfigured.count(&EventFilter::all()).unwrap_err();
        assert!(err.to_string().contains("not configured"), "{err}");
    }

    #[test]
    fn appends_survive_reopening_and_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zu.db");
        let e = event("harness.a");
        let sink = SqliteSink::new(json!({"path": path})).unwrap();
        sink.append(&e).unwrap();
        sink.append(&e).unwrap();
        drop(sink);
        let sink = SqliteSink::new(json!({"path": path})).unwrap();
        sink.append(&e).unwrap();
        let all = sink.query(&EventFilter::all(), None, 0).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].seq, 1);
        assert_eq!(all[0].event, e);
    }
}
