-- Usage records (SQLite): what proxies metered, per app and UTC day, as received
-- in batches. Not part of the event log: high volume, and never replayed into
-- the edge config. See control/src/usage/mod.rs.

-- One row per batch a proxy sent; its key makes replays idempotent.
CREATE TABLE IF NOT EXISTS usage_batches (
    node_id      TEXT    NOT NULL,
    batch_seq    INTEGER NOT NULL CHECK (batch_seq >= 0),
    received_at  INTEGER NOT NULL,
    record_count INTEGER NOT NULL,
    PRIMARY KEY (node_id, batch_seq)
);

-- The records of each batch; totals are sums over these rows.
CREATE TABLE IF NOT EXISTS usage_records (
    node_id   TEXT    NOT NULL,
    batch_seq INTEGER NOT NULL,
    app_id    TEXT    NOT NULL,
    period    TEXT    NOT NULL,
    requests  INTEGER NOT NULL CHECK (requests >= 0),
    bytes_in  INTEGER NOT NULL CHECK (bytes_in >= 0),
    bytes_out INTEGER NOT NULL CHECK (bytes_out >= 0),
    units     INTEGER NOT NULL CHECK (units >= 0),
    PRIMARY KEY (node_id, batch_seq, app_id, period),
    FOREIGN KEY (node_id, batch_seq) REFERENCES usage_batches (node_id, batch_seq)
);

-- Totals per app over a range of days.
CREATE INDEX IF NOT EXISTS usage_records_app_period
    ON usage_records (app_id, period);
