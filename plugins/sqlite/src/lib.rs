//! The `sqlite` event sink: the embedded durable store. WAL journal, any
//! number of processes appending at once, idempotent on `event_id`, an
//! index per filter field, keyset-paged reads, and payloads through the codec
//! (plaintext or AES-256-GCM bound to the row's columns).
//!
//! Config: `{"path": "zu.db", "codec": null | "plaintext" | {"kind": "aes-gcm",
//! "key_env": "ZU_EVENT_KEY"} | {"kind": "managed-aes-gcm"}, "durability":
//! "power" | "process", "busy_timeout_ms": 5000, "read_only": false}`.
//! `power` (the default) syncs each commit (an append survives a power cut
//! once it returns); `process` does not (it survives a killed process). A
//! database that is not a Zu log is refused unchanged. Read-only (what `zu
//! events` asks for) never creates or changes a file, reads a log on
//! read-only media, returns a `harness.log.damaged` note in place of each row
//! it cannot read, and a `harness.log.restarted` note when the file was
//! deleted, replaced, or truncated or rewritten in place since its last read
//! (see `read`).

#![forbid(unsafe_code)]

mod read;
mod schema;

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params_from_iter, Connection};
use serde::Deserialize;
use zu_codec::{row_aad, Codecs};

use read::where_clause;
use zu_plugin_api::prelude::*;

use schema::fail;

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
    /// Each commit synced: a power cut loses nothing.
    #[default]
    Power,
    /// WAL without a sync per commit: a killed process loses nothing.
    Process,
}

fn default_busy_timeout() -> u64 {
    5000
}

struct Open {
    conn: Connection,
    codecs: Codecs,
    path: PathBuf,
    read_only: bool,
    busy_timeout: Duration,
    /// The file a reader has open (device, inode), to notice a replacement.
    file: Option<(u64, u64)>,
    /// A reader's last row read (seq, event_id), to notice a rewritten file.
    last_read: Option<(u64, String)>,
    /// A reader's connection reads a log (false while the path holds none).
    ready: bool,
    /// Rows already reported on stderr (writers warn once per row).
    warned: HashSet<u64>,
}

/// The SQLite sink.
pub struct SqliteSink {
    state: Mutex<Result<Open, String>>,
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl SqliteSink {
    /// Opens (creating if new) the log at `path`; each commit is synced.
    pub fn open(path: &Path, codecs: Codecs, busy_timeout_ms: u64) -> Result<Self, PluginError> {
        Self::opened(path, codecs, busy_timeout_ms, false, true)
    }

    /// Opens the existing log at `path` for reading only.
    pub fn open_read_only(path: &Path, codecs: Codecs, busy_timeout_ms: u64) -> Result<Self, PluginError> {
        Self::opened(path, codecs, busy_timeout_ms, true, false)
    }

    fn opened(path: &Path, codecs: Codecs, busy_ms: u64, read_only: bool, sync: bool) -> Result<Self, PluginError> {
        let busy_timeout = Duration::from_millis(busy_ms);
        let conn = if read_only {
            schema::open_for_reading(path, busy_timeout)?
        } else {
            schema::open_for_writing(path, busy_timeout, sync)?
        };
        Ok(SqliteSink {
            state: Mutex::new(Ok(Open {
                conn,
                codecs,
                path: path.to_owned(),
                read_only,
                busy_timeout,
                file: identity(path),
                last_read: None,
                ready: true,
                warned: HashSet::new(),
            })),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Open) -> Result<T, PluginError>) -> Result<T, PluginError> {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *guard {
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
        let sync = config.durability == Durability::Power;
        Self::opened(&path, codecs, config.busy_timeout_ms, config.read_only, sync)
    }
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
            // IMMEDIATE: the write lock (waiting busy_timeout for it) before any
            // read, so a concurrent writer's commit cannot make this one stale.
            let tx = rusqlite::Transaction::new_unchecked(&open.conn, rusqlite::TransactionBehavior::Immediate)
                .map_err(|e| fail(&open.path, "cannot begin", e))?;
            for event in events {
                insert(open, event)?;
            }
            tx.commit().map_err(|e| fail(&open.path, "cannot commit", e))
        })
    }

    fn query(&self, filter: &EventFilter, limit: Option<u64>, after_seq: u64) -> Result<Vec<StoredEvent>, PluginError> {
        self.with(|open| open.read(filter, limit, after_seq))
    }

    fn count(&self, filter: &EventFilter) -> Result<u64, PluginError> {
        self.with(|open| {
            let (clause, params) = where_clause(filter);
            let sql = format!("SELECT COUNT(*) FROM events WHERE 1=1{clause}");
            let count = |conn: &Connection| {
                conn.prepare_cached(&sql)
                    .and_then(|mut st| st.query_row(params_from_iter(params.iter()), |r| r.get::<_, i64>(0)))
                    .map(|n| n as u64)
                    .map_err(|e| fail(&open.path, "cannot count", e))
            };
            if !open.read_only {
                return count(&open.conn);
            }
            // A reader counts on a connection of its own (see `read`).
            match schema::open_for_reading(&open.path, open.busy_timeout) {
                Ok(conn) => count(&conn),
                Err(_) if identity(&open.path).is_none() => Ok(0),
                Err(e) => Err(e),
            }
        })
    }

    fn close(&self) -> Result<(), PluginError> {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(open) = std::mem::replace(&mut *guard, Err("the sqlite sink is closed".into())) {
            let path = open.path.clone();
            if !open.read_only {
                schema::checkpoint_and_empty(&open.conn);
            }
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
        assert_eq!(
            all.iter().map(|s| s.event.clone()).collect::<Vec<_>>(),
            vec![a.clone(), b]
        );
        enc.close().unwrap();
        let raw = std::fs::read(&path).unwrap();
        assert_eq!(
            raw.windows(6).filter(|w| *w == b"s3cr3t").count(),
            1,
            "only the plaintext row shows the secret"
        );
        // A reader without the key reads the plaintext row and says why it cannot read the other.
        let reader = SqliteSink::open_read_only(&path, Codecs::plaintext(), 1000).unwrap();
        let seen = reader.query(&EventFilter::all(), None, 0).unwrap();
        assert_eq!(seen[0].event, a);
        assert_eq!(seen[1].event.event_type(), zu_plugin_api::events::LOG_DAMAGED);
        let why = seen[1].event.payload()["reason"].as_str().unwrap().to_owned();
        assert!(why.contains("no codec configured for payload version 1"), "{why}");
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
        let wrong = SqliteSink::open_read_only(&path, aes(2), 1000).unwrap();
        let note = &wrong.query(&EventFilter::all(), Some(1), 0).unwrap()[0];
        assert!(note.event.payload()["reason"]
            .as_str()
            .unwrap()
            .contains("cannot decrypt payload"));
        assert!(wrong
            .query(&EventFilter::all(), None, 0)
            .unwrap()
            .iter()
            .all(|n| n.event.event_type() == zu_plugin_api::events::LOG_DAMAGED));
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
        assert!(
            sink.query(&EventFilter::all(), None, 1).unwrap().is_empty(),
            "the moved row is skipped"
        );
        let reader = SqliteSink::open_read_only(&path, aes(1), 1000).unwrap();
        let why = reader.query(&EventFilter::all(), None, 1).unwrap()[0].event.payload()["reason"].clone();
        assert!(
            why.as_str().unwrap().contains("(seq 2)") && why.as_str().unwrap().contains("moved"),
            "{why}"
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
        assert_eq!(std::fs::read(&path).unwrap(), vec![0x5a; 8192], "left unchanged");
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
    fn another_programs_database_is_refused_unchanged_and_an_empty_one_is_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users VALUES (1, 'ana');",
        )
        .unwrap();
        drop(conn);
        let before = std::fs::read(&path).unwrap();
        let err = SqliteSink::new(json!({"path": path})).err().unwrap();
        assert!(
            err.to_string().contains("not a Zu event log") && err.to_string().contains("users"),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before, "not a byte changed");
        let conn = Connection::open(&path).unwrap();
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "delete", "no journal-mode switch");
        drop(conn);
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        let sink = SqliteSink::new(json!({"path": empty})).unwrap();
        sink.append(&event("harness.a")).unwrap();
        let conn = Connection::open(&empty).unwrap();
        let id: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0)).unwrap();
        assert_eq!(id, schema::APPLICATION_ID);
    }

    #[test]
    fn concurrent_first_opens_of_a_new_file_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        let handles: Vec<_> = (0..12)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let sink = SqliteSink::new(json!({"path": path})).map_err(|e| e.to_string())?;
                    sink.append(&event("harness.a")).map_err(|e| e.to_string())
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
        let sink = SqliteSink::open_read_only(&path, Codecs::plaintext(), 1000).unwrap();
        assert_eq!(sink.count(&EventFilter::all()).unwrap(), 12);
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
