//! SQLite backend: one file, WAL journal, writers serialised by `BEGIN IMMEDIATE`.

use std::path::Path;
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use tokio::sync::watch;

use super::model::{
    now_millis, validate_append, validate_batch, validate_checkpoint, validate_limit,
};
use super::settle::{Expected, Failure, settle};
use super::{BatchEvent, EventStore, NewEvent, StoreError, StoredEvent};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a writer waits for another process holding the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Appends queue for the single write connection at most this long.
const WRITE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);
const READ_CONNECTIONS: u32 = 4;

macro_rules! columns {
    () => {
        "event_id, occurred_at, aggregate_type, aggregate_id, aggregate_seq, event_type, actor_id, payload"
    };
}

#[path = "sqlite_batch.rs"]
mod batch;

const VERSION_SQL: &str = "SELECT COALESCE(MAX(aggregate_seq), 0) FROM events \
     WHERE aggregate_type = ?1 AND aggregate_id = ?2";
const INSERT_SQL: &str = concat!(
    "INSERT INTO events (occurred_at, aggregate_type, aggregate_id, \
     aggregate_seq, event_type, actor_id, payload) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING ",
    columns!()
);
const LAST_ID_SQL: &str = "SELECT COALESCE(MAX(event_id), 0) FROM events";

/// The event log in a SQLite file.
///
/// Appends go through a single-connection write pool, so appends from many
/// tasks of this process queue in order instead of spinning on SQLite's busy
/// handler; each append runs in `BEGIN IMMEDIATE`, which takes the database
/// write lock *before* the version is read, so writers in other processes are
/// serialised as well (they wait up to the busy timeout). Reads use a separate
/// pool and, thanks to WAL, never block or get blocked by the writer.
///
/// Wake-ups ([`EventStore::subscribe`]) are in-process only: appends made by
/// another process on the same file are seen by readers, but do not wake them.
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    last_id: watch::Sender<i64>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file and applies migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(WRITE_ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(|e| StoreError::Database(format!("opening {}: {e}", path.display())))?;
        MIGRATOR.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .connect_with(options)
            .await?;
        let last: i64 = sqlx::query_scalar(LAST_ID_SQL).fetch_one(&reader).await?;
        let (last_id, _) = watch::channel(last);
        Ok(SqliteStore {
            writer,
            reader,
            last_id,
        })
    }

    /// The write pool, for maintenance and tests (raw SQL).
    pub fn pool(&self) -> &SqlitePool {
        &self.writer
    }

    /// The read pool (WAL readers never wait for the writer).
    pub(crate) fn read_pool(&self) -> &SqlitePool {
        &self.reader
    }

    /// Closes both pools, waiting for in-flight operations.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

pub(super) fn event_from_row(row: &SqliteRow) -> Result<StoredEvent, StoreError> {
    let payload: String = row.try_get("payload")?;
    let payload = serde_json::from_str(&payload)
        .map_err(|e| StoreError::Database(format!("stored payload is not JSON: {e}")))?;
    Ok(StoredEvent {
        event_id: row.try_get("event_id")?,
        occurred_at: row.try_get("occurred_at")?,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        aggregate_seq: row.try_get("aggregate_seq")?,
        event_type: row.try_get("event_type")?,
        actor_id: row.try_get("actor_id")?,
        payload,
    })
}

impl EventStore for SqliteStore {
    async fn append(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        expected_version: i64,
        actor_id: &str,
        events: Vec<NewEvent>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        validate_append(
            aggregate_type,
            aggregate_id,
            expected_version,
            actor_id,
            &events,
        )?;
        let payloads = events
            .iter()
            .map(|e| serde_json::to_string(&e.payload))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Invalid(format!("payload does not serialise: {e}")))?;

        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let outcome: Result<Vec<StoredEvent>, Failure> = async {
            let current: i64 = sqlx::query_scalar(VERSION_SQL)
                .bind(aggregate_type)
                .bind(aggregate_id)
                .fetch_one(&mut *tx)
                .await?;
            if current != expected_version {
                return Err(Failure::Store(StoreError::Conflict {
                    expected: expected_version,
                    actual: current,
                }));
            }
            let occurred_at = now_millis();
            let mut stored = Vec::with_capacity(events.len());
            for (seq, (event, payload)) in (current + 1..).zip(events.iter().zip(&payloads)) {
                let row = sqlx::query(INSERT_SQL)
                    .bind(occurred_at)
                    .bind(aggregate_type)
                    .bind(aggregate_id)
                    .bind(seq)
                    .bind(&event.event_type)
                    .bind(actor_id)
                    .bind(payload)
                    .fetch_one(&mut *tx)
                    .await?;
                stored.push(event_from_row(&row).map_err(Failure::Store)?);
            }
            Ok(stored)
        }
        .await;

        let expected = Expected {
            aggregate_type,
            aggregate_id,
            version: expected_version,
        };
        settle(self, &self.last_id, tx, outcome, expected).await
    }

    async fn append_batch(
        &self,
        actor_id: &str,
        events: Vec<BatchEvent>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        validate_batch(actor_id, &events)?;
        let payloads = events
            .iter()
            .map(|e| serde_json::to_string(&e.event.payload))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Invalid(format!("payload does not serialise: {e}")))?;

        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let outcome = batch::insert_all(&mut tx, actor_id, now_millis(), &events, &payloads).await;

        settle(
            self,
            &self.last_id,
            tx,
            outcome,
            Expected::first_of(&events),
        )
        .await
    }

    async fn version(&self, aggregate_type: &str, aggregate_id: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(VERSION_SQL)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .fetch_one(&self.reader)
            .await?)
    }

    async fn read_after(
        &self,
        after_event_id: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        validate_limit(limit)?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM events WHERE event_id > ?1 ORDER BY event_id LIMIT ?2"
        ))
        .bind(after_event_id)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn read_aggregate(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM events WHERE aggregate_type = ?1 AND aggregate_id = ?2 \
             ORDER BY aggregate_seq"
        ))
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn last_event_id(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(LAST_ID_SQL)
            .fetch_one(&self.reader)
            .await?)
    }

    async fn checkpoint(&self, projection: &str) -> Result<i64, StoreError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT last_applied_event_id FROM projection_checkpoints WHERE name = ?1",
        )
        .bind(projection)
        .fetch_optional(&self.reader)
        .await?;
        Ok(found.unwrap_or(0))
    }

    async fn save_checkpoint(
        &self,
        projection: &str,
        last_applied_event_id: i64,
    ) -> Result<(), StoreError> {
        validate_checkpoint(projection, last_applied_event_id)?;
        sqlx::query(
            "INSERT INTO projection_checkpoints (name, last_applied_event_id) VALUES (?1, ?2) \
             ON CONFLICT (name) DO UPDATE SET last_applied_event_id = excluded.last_applied_event_id",
        )
        .bind(projection)
        .bind(last_applied_event_id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    fn subscribe(&self) -> watch::Receiver<i64> {
        self.last_id.subscribe()
    }
}
