//! Reading the log: rows as events, or (for a reader) damage notes in place
//! of rows that are not events; and for a reader, noticing that the file was
//! deleted, replaced, or truncated or rewritten in place since its last read
//! (the row read last is gone or holds another event). The check and the
//! read share one snapshot, so nothing written between them is mislabelled.

use rusqlite::{params_from_iter, OptionalExtension};
use zu_plugin_api::events::{damaged_row, log_restarted};
use zu_plugin_api::prelude::*;

use crate::schema::{self, fail};
use crate::{identity, Open};

/// The filter's conditions with `?` placeholders.
pub(crate) fn where_clause(filter: &EventFilter) -> (String, Vec<String>) {
    filter.sql_conditions(|_| "?".to_owned())
}

/// A row as an event, or why it is not one.
fn row_to_event(open: &Open, row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<StoredEvent, (u64, String)>> {
    let seq: i64 = row.get(0)?;
    let seq = seq as u64;
    let text = |i: usize| row.get::<_, String>(i);
    let (event_id, trace_id, task_id, ty, source) = (text(1)?, text(2)?, text(3)?, text(4)?, text(5)?);
    let blob: Vec<u8> = row.get(6)?;
    let decoded = open
        .codecs
        .decode_event(seq, [&event_id, &trace_id, &task_id, &ty, &source], &blob);
    Ok(decoded
        .map(|event| StoredEvent { seq, event })
        .map_err(|why| (seq, why)))
}

impl Open {
    /// The events after `after_seq` that `filter` keeps, at most `limit`; a
    /// reader gets a restart note instead when its log changed under it.
    pub(crate) fn read(
        &mut self,
        filter: &EventFilter,
        limit: Option<u64>,
        after_seq: u64,
    ) -> Result<Vec<StoredEvent>, PluginError> {
        if !self.read_only {
            return self.select(filter, limit, after_seq);
        }
        let read = match self.reopened() {
            Some(what) => Ok(vec![log_restarted(what)]),
            None if !self.ready => Ok(Vec::new()), // no log at the path (yet)
            None => self.snapshot(filter, limit, after_seq),
        };
        self.let_go();
        read
    }

    /// A reader opens the log afresh for each read and lets go of it after:
    /// a connection held open keeps the log's WAL alive past its writers'
    /// close, and a database later moved over the path would be read through
    /// that stale WAL. Says when the file was deleted or replaced (another
    /// inode), or truncated (no longer a log after rows were read from it).
    pub(crate) fn reopened(&mut self) -> Option<&'static str> {
        let now = identity(&self.path);
        let moved = match (self.file, now) {
            (Some(_), None) => Some("deleted"),
            (Some(was), Some(is)) if was != is => Some("replaced"),
            _ => None,
        };
        self.file = now;
        self.ready = now.is_some() && self.reopen();
        let what = match (moved, self.ready) {
            (Some(m), _) => Some(m),
            (None, false) if self.last_read.is_some() => Some("truncated"),
            _ => None,
        };
        if what.is_some() {
            self.last_read = None;
        }
        what
    }

    /// Closes a reader's connection (until its next read).
    pub(crate) fn let_go(&mut self) {
        if let Ok(nothing) = rusqlite::Connection::open_in_memory() {
            self.conn = nothing;
            self.ready = false;
        }
    }

    /// The check that the log was not rewritten in place since the last
    /// read, and the read, in one snapshot: nothing written between them is
    /// mislabelled.
    fn snapshot(
        &mut self,
        filter: &EventFilter,
        limit: Option<u64>,
        after_seq: u64,
    ) -> Result<Vec<StoredEvent>, PluginError> {
        self.conn
            .execute_batch("BEGIN")
            .map_err(|e| fail(&self.path, "cannot read", e))?;
        let read = match self.last_row_changed(after_seq) {
            Some(what) => {
                self.last_read = None;
                Ok(vec![log_restarted(what)])
            }
            None => self.select(filter, limit, after_seq),
        };
        let _ = self.conn.execute_batch("COMMIT");
        read
    }

    fn select(
        &mut self,
        filter: &EventFilter,
        limit: Option<u64>,
        after_seq: u64,
    ) -> Result<Vec<StoredEvent>, PluginError> {
        let (clause, params) = where_clause(filter);
        let limit = limit.map_or(-1, |l| l.min(i64::MAX as u64) as i64);
        let sql = format!(
            "SELECT seq, event_id, trace_id, task_id, type, source, data FROM events \
             WHERE seq > {after_seq}{clause} ORDER BY seq LIMIT {limit}"
        );
        let mut out = Vec::new();
        let mut bad = Vec::new();
        let mut last = None;
        {
            let mut st = self
                .conn
                .prepare_cached(&sql)
                .map_err(|e| fail(&self.path, "cannot query", e))?;
            let mut rows = st
                .query(params_from_iter(params.iter()))
                .map_err(|e| fail(&self.path, "cannot query", e))?;
            while let Some(row) = rows.next().map_err(|e| fail(&self.path, "cannot read", e))? {
                if let (Ok(seq), Ok(id)) = (row.get::<_, i64>(0), row.get::<_, String>(1)) {
                    last = Some((seq as u64, id));
                }
                let item = row_to_event(self, row).unwrap_or_else(|e| {
                    let seq = row.get::<_, i64>(0).unwrap_or(0) as u64;
                    Err((seq, format!("an unreadable row (seq {seq}): {e}")))
                });
                match item {
                    Ok(e) => out.push(e),
                    Err((seq, why)) => {
                        if self.read_only {
                            out.push(damaged_row(seq, &format!("row seq {seq}"), &why));
                        }
                        bad.push((seq, why));
                    }
                }
            }
        }
        if last.is_some() {
            self.last_read = last;
        }
        if !self.read_only {
            for (seq, why) in bad {
                if self.warned.insert(seq) {
                    eprintln!("zu sqlite sink: {}: skipping {why}", self.path.display());
                }
            }
        }
        Ok(out)
    }

    fn reopen(&mut self) -> bool {
        match schema::open_for_reading(&self.path, self.busy_timeout) {
            Ok(conn) => {
                self.conn = conn;
                true
            }
            Err(_) => false, // not a log (yet): nothing to read
        }
    }

    fn last_row_changed(&self, after_seq: u64) -> Option<&'static str> {
        let (seq, id) = self.last_read.as_ref().filter(|(s, _)| *s == after_seq)?;
        let now: rusqlite::Result<Option<String>> = self
            .conn
            .prepare_cached("SELECT event_id FROM events WHERE seq = ?1")
            .and_then(|mut st| st.query_row([*seq as i64], |r| r.get(0)).optional());
        match now {
            Ok(Some(now)) if now == *id => None,
            Ok(Some(_)) => Some("replaced"),
            _ => Some("truncated"),
        }
    }
}
