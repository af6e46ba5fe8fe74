-- Event log (PostgreSQL). See control/src/store/mod.rs for the design notes.
-- Times are unix milliseconds; payloads are jsonb.

CREATE TABLE IF NOT EXISTS events (
    event_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at    bigint NOT NULL,
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    aggregate_seq  bigint NOT NULL CHECK (aggregate_seq >= 1),
    event_type     text   NOT NULL,
    actor_id       text   NOT NULL,
    payload        jsonb  NOT NULL,
    CONSTRAINT events_aggregate_seq_unique UNIQUE (aggregate_type, aggregate_id, aggregate_seq)
);

-- Latest version per aggregate.
CREATE INDEX IF NOT EXISTS events_aggregate_latest
    ON events (aggregate_type, aggregate_id, aggregate_seq DESC);

-- Readers filtering by type while following the global order.
CREATE INDEX IF NOT EXISTS events_type_id
    ON events (event_type, event_id);

-- Append-only, enforced by the database itself.
CREATE OR REPLACE FUNCTION events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only (% refused)', TG_OP;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS events_no_update_delete ON events;
CREATE TRIGGER events_no_update_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();

DROP TRIGGER IF EXISTS events_no_truncate ON events;
CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();

CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name                  text   PRIMARY KEY,
    last_applied_event_id bigint NOT NULL
);
