//! Opening a database as a Zu log without touching anyone else's: a file
//! that is not new, empty or already a Zu log is refused before anything is
//! written to it (no journal-mode switch, no tables); a new or empty one is
//! made a log under a write lock, so any number of processes may open the
//! same new file at once. Readers open read-only, and fall back to
//! `immutable=1` on read-only media.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use zu_plugin_api::PluginError;

/// Marks a database as a Zu event log (`PRAGMA application_id`, "Zu" + 1).
pub const APPLICATION_ID: i32 = 0x5a75_0001;

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

/// The columns of Zu's events table, in order.
const COLUMNS: [&str; 8] = [
    "seq",
    "event_id",
    "trace_id",
    "task_id",
    "parent_id",
    "type",
    "source",
    "data",
];

/// `sqlite sink PATH: WHAT: ERROR`.
pub fn fail(path: &Path, what: &str, e: impl std::fmt::Display) -> PluginError {
    PluginError::failed(format!("sqlite sink {}: {what}: {e}", path.display()))
}

fn busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Runs `f`, trying again while another connection holds the lock it needs
/// (a journal-mode switch does not wait on the busy handler), up to `wait`.
fn retrying<T>(wait: Duration, mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let until = Instant::now() + wait;
    let mut pause = Duration::from_millis(1);
    loop {
        match f() {
            Err(e) if busy(&e) && Instant::now() < until => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// What is in a database, read without writing.
enum Contents {
    /// No tables at all: a new or empty database.
    Empty,
    /// A Zu event log.
    Log,
    /// Something else: the tables it has.
    Foreign(Vec<String>),
}

fn contents(conn: &Connection) -> rusqlite::Result<Contents> {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if tables.is_empty() {
        return Ok(Contents::Empty);
    }
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('events') ORDER BY cid")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(if columns == COLUMNS {
        Contents::Log
    } else {
        Contents::Foreign(tables)
    })
}

fn refuse(path: &Path, tables: &[String]) -> PluginError {
    PluginError::invalid(format!(
        "{} is not a Zu event log (it is another program's database, with tables {}); it was left unchanged: point the sink at a new file",
        path.display(),
        tables.join(", ")
    ))
}

/// How writes are made durable: `synchronous=FULL` (each commit synced:
/// survives a power cut) or `NORMAL` (WAL without a sync per commit:
/// survives a killed process, not a power cut).
pub fn open_for_writing(
    path: &Path,
    busy_timeout: Duration,
    sync_each_commit: bool,
) -> Result<Connection, PluginError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| fail(path, "cannot create its directory", e))?;
    }
    let conn = Connection::open(path).map_err(|e| fail(path, "cannot open", e))?;
    let unusable = |e: rusqlite::Error| fail(path, "not a usable Zu event database", e);
    conn.busy_timeout(busy_timeout).map_err(unusable)?;
    // Look before anything is written.
    if let Contents::Foreign(tables) = retrying(busy_timeout, || contents(&conn)).map_err(unusable)? {
        return Err(refuse(path, &tables));
    }
    let mode: String =
        retrying(busy_timeout, || conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))).map_err(unusable)?;
    if !mode.eq_ignore_ascii_case("wal") {
        // By way of a journal in memory: the switch then makes no
        // `-journal` file (a sandboxed sink writes its log's files only).
        for mode in ["MEMORY", "WAL"] {
            retrying(busy_timeout, || {
                conn.query_row(&format!("PRAGMA journal_mode = {mode}"), [], |r| r.get::<_, String>(0))
            })
            .map_err(unusable)?;
        }
    }
    // The `-wal` and `-shm` files stay when the last connection closes: a
    // sandboxed sink may write them but not make them again, so another
    // writer's close must not take them away. The sink empties the WAL when
    // it closes instead (`checkpoint_and_empty`).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(unusable)?;
    let sync = if sync_each_commit { "FULL" } else { "NORMAL" };
    conn.pragma_update(None, "synchronous", sync).map_err(unusable)?;
    // Make it a log under the write lock, looking again: another process may
    // have made it one (or something else) since.
    retrying(busy_timeout, || {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let made = (|| -> rusqlite::Result<Result<(), Vec<String>>> {
            match contents(&conn)? {
                Contents::Foreign(tables) => return Ok(Err(tables)),
                Contents::Empty => {
                    conn.execute_batch(SCHEMA)?;
                    conn.pragma_update(None, "application_id", APPLICATION_ID)?;
                }
                Contents::Log => {}
            }
            Ok(Ok(()))
        })();
        match made {
            Ok(Ok(())) => conn.execute_batch("COMMIT").map(|()| Ok(())),
            Ok(Err(tables)) => conn.execute_batch("ROLLBACK").map(|()| Err(tables)),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    })
    .map_err(unusable)?
    .map_err(|tables| refuse(path, &tables))?;
    Ok(conn)
}

/// Before a writer closes: moves the WAL's pages into the log and empties
/// the WAL (when no reader holds it), so no frames outlive the writers — a
/// WAL with frames would be read into a database later moved over the path.
pub fn checkpoint_and_empty(conn: &Connection) {
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
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

/// Opens the existing log at `path` for reading only: nothing is created or
/// changed, and a log on read-only media (where SQLite cannot create its WAL
/// index) is opened as immutable.
pub fn open_for_reading(path: &Path, busy_timeout: Duration) -> Result<Connection, PluginError> {
    if !path.is_file() {
        return Err(PluginError::invalid(format!(
            "no event log at {} (a reader never creates one; check the path)",
            path.display()
        )));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let open_with = |uri: String| -> rusqlite::Result<(Connection, Contents)> {
        let conn = Connection::open_with_flags(uri, flags)?;
        conn.busy_timeout(busy_timeout)?;
        let found = contents(&conn)?;
        Ok((conn, found))
    };
    let plain = format!("file:{}", uri_path(path));
    let (conn, found) = open_with(plain.clone())
        .or_else(|_| open_with(format!("{plain}?immutable=1")))
        .map_err(|e| fail(path, "cannot open for reading", e))?;
    match found {
        Contents::Log => Ok(conn),
        Contents::Empty => Err(PluginError::invalid(format!(
            "{} is an empty database, not a Zu event log",
            path.display()
        ))),
        Contents::Foreign(tables) => Err(refuse(path, &tables)),
    }
}
