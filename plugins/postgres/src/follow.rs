//! Reading as a follower: before each read, check that the row last read is
//! still there with the same event (else the log was replaced or truncated:
//! say so once and start over); a dropped log is "deleted" and then simply
//! empty until a writer makes a new one; a read that finds nothing new waits
//! on `LISTEN` until an append notifies or the reader's wait passes.

use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use zu_plugin_api::events::log_restarted;
use zu_plugin_api::filter::{EventFilter, StoredEvent};
use zu_plugin_api::PluginError;

use crate::{fail, schema, Connected};

fn missing_table(e: &postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNDEFINED_TABLE) || e.code() == Some(&SqlState::UNDEFINED_FUNCTION)
}

impl Connected {
    /// A read-only query: a restart note when the log changed under the
    /// reader, else what is after `after_seq` (waiting for it if asked).
    pub(crate) fn follow(
        &mut self,
        filter: &EventFilter,
        limit: Option<u64>,
        after_seq: u64,
    ) -> Result<Vec<StoredEvent>, PluginError> {
        let mut read = self.snapshot(filter, limit, after_seq);
        if matches!(&read, Ok(found) if found.is_empty()) && !self.wait.is_zero() {
            read = self
                .wait_for_more()
                .and_then(|()| self.snapshot(filter, limit, after_seq));
        }
        match read {
            Ok(found) => {
                self.gone = false;
                Ok(found)
            }
            Err(e) if missing_table(&e) => {
                self.last_read = None;
                if !std::mem::replace(&mut self.gone, true) {
                    return Ok(vec![log_restarted("deleted")]);
                }
                if !self.wait.is_zero() {
                    self.wait_for_more().map_err(|e| fail(&self.at, "cannot wait", e))?;
                }
                Ok(Vec::new())
            }
            Err(e) => Err(fail(&self.at, "cannot read", e)),
        }
    }

    /// The check that the log is the one read before, and the read, in one
    /// snapshot: nothing written between them can be mislabelled.
    fn snapshot(
        &mut self,
        filter: &EventFilter,
        limit: Option<u64>,
        after_seq: u64,
    ) -> Result<Vec<StoredEvent>, postgres::Error> {
        self.client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
        let read = self.moved(after_seq).and_then(|note| match note {
            Some(note) => Ok(vec![note]),
            None => self.select(filter, limit, after_seq),
        });
        let end = self
            .client
            .batch_execute(if read.is_ok() { "COMMIT" } else { "ROLLBACK" });
        let found = read?;
        end?;
        Ok(found)
    }

    /// Whether the row read last (when the reader goes on from it) is gone
    /// or holds another event.
    fn moved(&mut self, after_seq: u64) -> Result<Option<StoredEvent>, postgres::Error> {
        let Some((seq, id)) = self.last_read.clone().filter(|(s, _)| *s == after_seq) else {
            return Ok(None);
        };
        let statement = self.prepared("SELECT event_id FROM zu_events WHERE seq = $1".into())?;
        let now: Option<String> = self.client.query_opt(&statement, &[&(seq as i64)])?.map(|r| r.get(0));
        if now.as_deref() == Some(id.as_str()) {
            return Ok(None);
        }
        self.last_read = None;
        Ok(Some(log_restarted(if now.is_some() {
            "replaced"
        } else {
            "truncated"
        })))
    }

    /// Waits until an append notifies or the reader's wait passes.
    fn wait_for_more(&mut self) -> Result<(), postgres::Error> {
        if !self.listening {
            self.client.batch_execute(&format!("LISTEN {}", schema::CHANNEL))?;
            self.listening = true;
        }
        self.client.notifications().timeout_iter(self.wait).next()?;
        Ok(())
    }
}
