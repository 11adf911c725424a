//! The log's tables in PostgreSQL, created on first use under an advisory
//! lock (so many hosts may start at once), and the one function that appends:
//! it takes the log's head row lock, numbers the new events after the last
//! sequence number, stores them and moves the head, in one transaction.
//!
//! Why a head row and not a `BIGSERIAL`: with a sequence, concurrent writers
//! draw numbers in one order and commit in another, so seq 11 can become
//! visible before seq 10, and a follower that has read 11 never reads 10.
//! With the head row locked until commit, a writer draws its numbers only
//! after the previous writer committed: numbers become visible in order, and
//! a follower reading `seq > last` misses nothing.

/// The advisory lock key that serializes schema creation.
pub const SCHEMA_LOCK: i64 = 0x5a75_5343;

/// The channel appends notify, with the new last sequence number.
pub const CHANNEL: &str = "zu_events";

pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS zu_events (
    seq        BIGINT PRIMARY KEY,
    event_id   TEXT NOT NULL UNIQUE,
    trace_id   TEXT NOT NULL,
    task_id    TEXT NOT NULL,
    parent_id  TEXT,
    type       TEXT NOT NULL,
    source     TEXT NOT NULL,
    data       BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS zu_events_trace  ON zu_events (trace_id, seq);
CREATE INDEX IF NOT EXISTS zu_events_task   ON zu_events (task_id, seq);
CREATE INDEX IF NOT EXISTS zu_events_parent ON zu_events (parent_id, seq);
CREATE INDEX IF NOT EXISTS zu_events_type   ON zu_events (type, seq);
CREATE INDEX IF NOT EXISTS zu_events_source ON zu_events (source, seq);
CREATE TABLE IF NOT EXISTS zu_log (
    id       INT PRIMARY KEY CHECK (id = 1),
    last_seq BIGINT NOT NULL
);
INSERT INTO zu_log VALUES (1, 0) ON CONFLICT DO NOTHING;
CREATE OR REPLACE FUNCTION zu_append(
    ids text[], traces text[], tasks text[], parents text[], types text[], sources text[], datas bytea[]
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    first bigint;
    last  bigint;
BEGIN
    SELECT last_seq INTO first FROM zu_log WHERE id = 1 FOR UPDATE;
    last := first;
    FOR i IN 1 .. coalesce(array_length(ids, 1), 0) LOOP
        INSERT INTO zu_events (seq, event_id, trace_id, task_id, parent_id, type, source, data)
        VALUES (last + 1, ids[i], traces[i], tasks[i], parents[i], types[i], sources[i], datas[i])
        ON CONFLICT (event_id) DO NOTHING;
        IF FOUND THEN
            last := last + 1;
        END IF;
    END LOOP;
    IF last > first THEN
        UPDATE zu_log SET last_seq = last WHERE id = 1;
        PERFORM pg_notify('zu_events', last::text);
    END IF;
    RETURN last;
END
$$;
"#;
