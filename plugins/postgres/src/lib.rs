//! The `postgres` event sink: one log shared by many hosts. Appends are
//! idempotent on `event_id` and durable when they return; sequence numbers
//! become visible in order, so a follower never skips an event that
//! committed late (see `schema`); `query` and `count` filter in the server,
//! and a reader following the log sleeps on `LISTEN` until an append wakes it.
//!
//! Config: `{"url": "postgresql://user@host:5432/db", "codec": null |
//! "plaintext" | {"kind": "aes-gcm", "key_env": "ZU_EVENT_KEY"} | {"kind":
//! "managed-aes-gcm"}, "durability": "power" | "process", "read_only": false,
//! "wait_ms": 0}`. The codec envelope and its binding to the row's columns are
//! the sqlite sink's. `power` (the default) waits for the server to flush the
//! commit; `process` (`synchronous_commit = off`) survives a killed host, not
//! a server crash. Read-only creates nothing, and answers a
//! `harness.log.restarted` note when the log was dropped, replaced or
//! truncated under it (`follow`); with `wait_ms`, a read that finds nothing
//! new waits that long for a notification before it answers.
//! Connections are plain TCP or a Unix socket (no TLS).

#![forbid(unsafe_code)]

mod follow;
mod schema;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use postgres::types::ToSql;
use postgres::{Client, NoTls, Statement};
use serde::Deserialize;
use zu_codec::{row_aad, Codecs};
use zu_plugin_api::events::damaged_row;
use zu_plugin_api::prelude::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: Option<String>,
    #[serde(default)]
    codec: Option<Value>,
    #[serde(default)]
    durability: Durability,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    wait_ms: u64,
}

/// What an append survives once it returns.
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Durability {
    #[default]
    Power,
    Process,
}

struct Connected {
    client: Client,
    /// `zu_append`, prepared once (one round trip per append, not two).
    append: Option<Statement>,
    /// Read statements by their SQL, prepared once each.
    reads: HashMap<String, Statement>,
    codecs: Codecs,
    /// Where, for messages (the URL without its password).
    at: String,
    read_only: bool,
    wait: Duration,
    listening: bool,
    /// A reader's last row read (seq, event_id), to notice a replaced log.
    last_read: Option<(u64, String)>,
    /// A reader found no log (dropped since it was opened).
    gone: bool,
}

/// How long a connection may take unless the url says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The PostgreSQL sink.
pub struct PostgresSink {
    state: Mutex<Result<Connected, String>>,
}

fn fail(at: &str, what: &str, e: impl std::fmt::Display) -> PluginError {
    PluginError::failed(format!("postgres sink {at}: {what}: {e}"))
}

/// The URL with any password replaced, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl Plugin for PostgresSink {
    const NAME: &'static str = "postgres";
    const ENVELOPE: Envelope = Envelope {
        tier: 1,
        capabilities: &[CAP_NET],
        egress: &[EGRESS_OPEN],
    };

    fn new(config: Value) -> Result<Self, PluginError> {
        if config.is_null() {
            let why = "the postgres sink is not configured: give it a config with a url, e.g. --sink-config '{\"url\": \"postgresql://zu@localhost/zu\"}'";
            return Ok(PostgresSink {
                state: Mutex::new(Err(why.into())),
            });
        }
        let config: Config =
            serde_json::from_value(config).map_err(|e| PluginError::invalid(format!("postgres sink config: {e}")))?;
        let url = config.url.ok_or_else(|| {
            PluginError::invalid(
                "postgres sink config has no \"url\" (e.g. {\"url\": \"postgresql://zu@localhost/zu\"})",
            )
        })?;
        let codecs = Codecs::from_config(config.codec.as_ref()).map_err(|e| PluginError::invalid(e.to_string()))?;
        let at = redact(&url);
        let mut options: postgres::Config = url
            .parse()
            .map_err(|e| PluginError::invalid(format!("postgres sink url {at}: {e}")))?;
        if options.get_connect_timeout().is_none() {
            options.connect_timeout(CONNECT_TIMEOUT);
        }
        let mut client = options.connect(NoTls).map_err(|e| fail(&at, "cannot connect", e))?;
        let mut append = None;
        if config.read_only {
            let found: Option<String> = client
                .query_one("SELECT to_regclass('zu_events')::text", &[])
                .and_then(|r| r.try_get(0))
                .map_err(|e| fail(&at, "cannot read", e))?;
            if found.is_none() {
                return Err(PluginError::invalid(format!(
                    "no Zu event log in the database at {at} (a reader never creates one; check the url)"
                )));
            }
        } else {
            create(&mut client).map_err(|e| fail(&at, "cannot create the log's tables", e))?;
            if config.durability == Durability::Process {
                client
                    .batch_execute("SET synchronous_commit = off")
                    .map_err(|e| fail(&at, "cannot set durability", e))?;
            }
            let sql = "SELECT zu_append($1, $2, $3, $4, $5, $6, $7)";
            append = Some(
                client
                    .prepare(sql)
                    .map_err(|e| fail(&at, "cannot prepare appends", e))?,
            );
        }
        Ok(PostgresSink {
            state: Mutex::new(Ok(Connected {
                client,
                append,
                reads: HashMap::new(),
                codecs,
                at,
                read_only: config.read_only,
                wait: Duration::from_millis(config.wait_ms),
                listening: false,
                last_read: None,
                gone: false,
            })),
        })
    }
}

/// Creates the tables once, whoever else starts at the same moment.
fn create(client: &mut Client) -> Result<(), postgres::Error> {
    client.execute("SELECT pg_advisory_lock($1)", &[&schema::SCHEMA_LOCK])?;
    let made = client.batch_execute(schema::SCHEMA);
    client.execute("SELECT pg_advisory_unlock($1)", &[&schema::SCHEMA_LOCK])?;
    made
}

/// The filter's conditions with placeholders numbered from `$first`.
fn where_clause(filter: &EventFilter, first: usize) -> (String, Vec<String>) {
    filter.sql_conditions(|i| format!("${}", first + i))
}

impl PostgresSink {
    fn with<T>(&self, f: impl FnOnce(&mut Connected) -> Result<T, PluginError>) -> Result<T, PluginError> {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *guard {
            Ok(c) => f(c),
            Err(why) => Err(PluginError::failed(why.clone())),
        }
    }
}

impl Connected {
    fn append(&mut self, events: &[&Event]) -> Result<(), PluginError> {
        let Some(statement) = &self.append else {
            return Err(fail(&self.at, "cannot append", "the sink was opened read-only"));
        };
        let mut cols: [Vec<String>; 5] = Default::default();
        let mut parents: Vec<Option<String>> = Vec::new();
        let mut datas: Vec<Vec<u8>> = Vec::new();
        for e in events {
            let (id, trace, task) = (
                e.event_id().to_string(),
                e.trace_id().to_string(),
                e.task_id().to_string(),
            );
            let aad = row_aad(&id, &trace, &task, e.event_type(), e.source());
            let json = serde_json::to_string(e).map_err(|x| PluginError::failed(x.to_string()))?;
            datas.push(
                self.codecs
                    .encode(&json, &aad)
                    .map_err(|x| fail(&self.at, "cannot encode", x))?,
            );
            parents.push(e.parent_id().map(|p| p.to_string()));
            for (col, v) in cols
                .iter_mut()
                .zip([id, trace, task, e.event_type().to_owned(), e.source().to_owned()])
            {
                col.push(v);
            }
        }
        let [ids, traces, tasks, types, sources] = &cols;
        self.client
            .query_one(statement, &[ids, traces, tasks, &parents, types, sources, &datas])
            .map_err(|e| fail(&self.at, "cannot append", e))?;
        Ok(())
    }

    fn select(
        &mut self,
        filter: &EventFilter,
        limit: Option<u64>,
        after_seq: u64,
    ) -> Result<Vec<StoredEvent>, postgres::Error> {
        // One prepared statement per filter shape; no limit is `LIMIT NULL`.
        let (clause, params) = where_clause(filter, 3);
        let sql = format!(
            "SELECT seq, event_id, trace_id, task_id, type, source, data FROM zu_events \
             WHERE seq > $1{clause} ORDER BY seq LIMIT $2"
        );
        let after = after_seq.min(i64::MAX as u64) as i64;
        let limit = limit.map(|l| l.min(i64::MAX as u64) as i64);
        let mut args: Vec<&(dyn ToSql + Sync)> = vec![&after, &limit];
        args.extend(params.iter().map(|p| p as &(dyn ToSql + Sync)));
        let statement = self.prepared(sql)?;
        let rows = self.client.query(&statement, &args)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let seq = row.get::<_, i64>(0) as u64;
            let text = |i: usize| row.get::<_, String>(i);
            let (id, trace, task, ty, source) = (text(1), text(2), text(3), text(4), text(5));
            self.last_read = Some((seq, id.clone()));
            let data: Vec<u8> = row.get(6);
            let event = self.codecs.decode_event(seq, [&id, &trace, &task, &ty, &source], &data);
            match event {
                Ok(event) => out.push(StoredEvent { seq, event }),
                Err(why) if self.read_only => out.push(damaged_row(seq, &format!("row seq {seq}"), &why)),
                Err(why) => eprintln!("zu postgres sink {}: skipping {why}", self.at),
            }
        }
        Ok(out)
    }

    /// The statement for `sql`, prepared on first use.
    fn prepared(&mut self, sql: String) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.reads.get(&sql) {
            return Ok(s.clone());
        }
        let statement = self.client.prepare(&sql)?;
        self.reads.insert(sql, statement.clone());
        Ok(statement)
    }
}

impl EventSink for PostgresSink {
    fn append(&self, event: &Event) -> Result<(), PluginError> {
        self.with(|c| c.append(&[event]))
    }

    fn append_batch(&self, events: &[Event]) -> Result<(), PluginError> {
        if events.is_empty() {
            return Ok(());
        }
        self.with(|c| c.append(&events.iter().collect::<Vec<_>>()))
    }

    fn query(&self, filter: &EventFilter, limit: Option<u64>, after_seq: u64) -> Result<Vec<StoredEvent>, PluginError> {
        self.with(|c| {
            if c.read_only {
                return c.follow(filter, limit, after_seq);
            }
            c.select(filter, limit, after_seq)
                .map_err(|e| fail(&c.at, "cannot query", e))
        })
    }

    fn count(&self, filter: &EventFilter) -> Result<u64, PluginError> {
        self.with(|c| {
            let (clause, params) = where_clause(filter, 1);
            let sql = format!("SELECT count(*) FROM zu_events WHERE TRUE{clause}");
            let args: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            let statement = c.prepared(sql).map_err(|e| fail(&c.at, "cannot count", e))?;
            let n: i64 = c
                .client
                .query_one(&statement, &args)
                .map_err(|e| fail(&c.at, "cannot count", e))?
                .get(0);
            Ok(n as u64)
        })
    }

    fn close(&self) -> Result<(), PluginError> {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(c) = std::mem::replace(&mut *guard, Err("the postgres sink is closed".into())) {
            let at = c.at.clone();
            c.client.close().map_err(|e| fail(&at, "cannot close", e))?;
        }
        Ok(())
    }
}

#[cfg(feature = "export")]
zu_plugin_api::export_plugins! { sinks: [PostgresSink] }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("postgresql://zu:s3cret@db:5432/zu"),
            "postgresql://zu:***@db:5432/zu"
        );
        assert_eq!(redact("postgresql://zu@db/zu"), "postgresql://zu@db/zu");
        assert_eq!(redact("host=db user=zu"), "host=db user=zu");
    }

    #[test]
    fn filters_become_numbered_parameters() {
        let f = EventFilter::all()
            .with(FilterField::Type, Some("harness.a"))
            .with(FilterField::ParentId, None::<String>)
            .with(FilterField::Source, Some("loop"));
        let (sql, params) = where_clause(&f, 3);
        assert_eq!(sql, " AND type = $3 AND parent_id IS NULL AND source = $4");
        assert_eq!(params, ["harness.a", "loop"]);
    }

    #[test]
    fn an_unreachable_server_or_a_missing_url_is_a_clear_error() {
        let err = PostgresSink::new(json!({"url": "postgresql://zu@127.0.0.1:1/zu"}))
            .err()
            .unwrap();
        assert!(err.to_string().contains("cannot connect"), "{err}");
        let err = PostgresSink::new(json!({"url": "postgresql://zu@db:notaport/zu"}))
            .err()
            .unwrap();
        assert!(err.to_string().contains("postgres sink url"), "{err}");
        let err = PostgresSink::new(json!({})).err().unwrap();
        assert!(err.to_string().contains("no \"url\""), "{err}");
        assert!(PostgresSink::new(Value::Null)
            .unwrap()
            .count(&EventFilter::all())
            .is_err());
    }
}
