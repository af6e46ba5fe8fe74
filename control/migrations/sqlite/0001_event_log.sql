-- Event log (SQLite). See control/src/store/mod.rs for the design notes.
-- Times are unix milliseconds; payloads are JSON text.

CREATE TABLE IF NOT EXISTS events (
    event_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    occurred_at    INTEGER NOT NULL,
    aggregate_type TEXT    NOT NULL,
    aggregate_id   TEXT    NOT NULL,
    aggregate_seq  INTEGER NOT NULL CHECK (aggregate_seq >= 1),
    event_type     TEXT    NOT NULL,
    actor_id       TEXT    NOT NULL,
    payload        TEXT    NOT NULL CHECK (json_valid(payload)),
    UNIQUE (aggregate_type, aggregate_id, aggregate_seq)
);

-- Latest version per aggregate.
CREATE INDEX IF NOT EXISTS events_aggregate_latest
    ON events (aggregate_type, aggregate_id, aggregate_seq DESC);

-- Readers filtering by type while following the global order.
CREATE INDEX IF NOT EXISTS events_type_id
    ON events (event_type, event_id);

-- Append-only, enforced by the database itself.
CREATE TRIGGER IF NOT EXISTS events_no_update
BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

CREATE TRIGGER IF NOT EXISTS events_no_delete
BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

-- `INSERT OR REPLACE` deletes the conflicting row without firing DELETE triggers
-- (unless recursive_triggers is on), so refuse any insert that would collide with
-- an existing row. Normal appends never collide: they hold the write lock while
-- they read the version, and AUTOINCREMENT never reuses an id.
CREATE TRIGGER IF NOT EXISTS events_no_replace
BEFORE INSERT ON events
WHEN EXISTS (
    SELECT 1 FROM events
    WHERE event_id = NEW.event_id
       OR (aggregate_type = NEW.aggregate_type
           AND aggregate_id = NEW.aggregate_id
           AND aggregate_seq = NEW.aggregate_seq)
)
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name                  TEXT    PRIMARY KEY NOT NULL,
    last_applied_event_id INTEGER NOT NULL
);
