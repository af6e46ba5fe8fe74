//! PostgreSQL backend: appends serialised by an advisory lock, wake-ups via
//! `LISTEN/NOTIFY` with a polling fallback.

use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::model::{
    BatchVersions, bump, now_millis, validate_append, validate_batch, validate_checkpoint,
    validate_limit,
};
use super::settle::{Expected, Failure, settle};
use super::{BatchEvent, EventStore, NewEvent, StoreError, StoredEvent};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Key of the transaction-scoped advisory lock every append takes first
/// (ASCII "tollgate"). Serialising appends makes identity values commit in
/// order, so a reader following `event_id` never skips an event that commits
/// late below its cursor. See the module docs of `store`.
pub const PG_APPEND_LOCK_KEY: i64 = 0x746f_6c6c_6761_7465;
/// The `NOTIFY` channel; the payload is the last appended event id.
pub const PG_NOTIFY_CHANNEL: &str = "tollgate_events";
/// How often the fallback poll reads `max(event_id)` for [`EventStore::subscribe`].
pub const PG_POLL_INTERVAL: Duration = Duration::from_secs(3);

const MAX_CONNECTIONS: u32 = 10;
const RETRY_DELAY: Duration = Duration::from_secs(1);

macro_rules! columns {
    () => {
        "event_id, occurred_at, aggregate_type, aggregate_id, aggregate_seq, event_type, actor_id, payload"
    };
}

const VERSION_SQL: &str = "SELECT COALESCE(MAX(aggregate_seq), 0)::bigint FROM events \
     WHERE aggregate_type = $1 AND aggregate_id = $2";
const INSERT_SQL: &str = concat!(
    "INSERT INTO events (occurred_at, aggregate_type, aggregate_id, \
     aggregate_seq, event_type, actor_id, payload) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
    columns!()
);
/// The version of each `(type, id)` pair in the two arrays.
const BATCH_VERSIONS_SQL: &str = "SELECT t.aggregate_type, t.aggregate_id, \
     COALESCE((SELECT MAX(e.aggregate_seq) FROM events e \
               WHERE e.aggregate_type = t.aggregate_type AND e.aggregate_id = t.aggregate_id), 0)::bigint \
     FROM UNNEST($1::text[], $2::text[]) AS t(aggregate_type, aggregate_id)";
/// A batch's rows in one statement, inserted (and given ids) in array order.
const BATCH_INSERT_SQL: &str = concat!(
    "INSERT INTO events (occurred_at, aggregate_type, aggregate_id, \
     aggregate_seq, event_type, actor_id, payload) \
     SELECT $1, t.aggregate_type, t.aggregate_id, t.aggregate_seq, t.event_type, $2, t.payload::jsonb \
     FROM UNNEST($3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[]) \
     WITH ORDINALITY AS t(aggregate_type, aggregate_id, aggregate_seq, event_type, payload, n) \
     ORDER BY t.n RETURNING ",
    columns!()
);
const LAST_ID_SQL: &str = "SELECT COALESCE(MAX(event_id), 0)::bigint FROM events";

/// The event log in PostgreSQL.
///
/// Owns two background tasks (stopped on drop): a `PgListener` on
/// [`PG_NOTIFY_CHANNEL`] and a poll of `max(event_id)` every
/// [`PG_POLL_INTERVAL`] (and after every listener reconnect); both only feed
/// [`EventStore::subscribe`].
pub struct PgStore {
    pool: PgPool,
    last_id: watch::Sender<i64>,
    tasks: Vec<JoinHandle<()>>,
}

impl PgStore {
    /// Connects, applies migrations and starts the wake-up tasks.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with_poll_interval(url, PG_POLL_INTERVAL).await
    }

    /// [`Self::connect`] with a custom fallback poll interval.
    pub async fn connect_with_poll_interval(
        url: &str,
        poll_interval: Duration,
    ) -> Result<Self, StoreError> {
        if poll_interval.is_zero() {
            return Err(StoreError::Invalid("poll interval is zero".into()));
        }
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect(url)
            .await?;
        MIGRATOR.run(&pool).await?;
        let last = last_event_id(&pool).await?;
        let (last_id, _) = watch::channel(last);
        let tasks = vec![
            tokio::spawn(listen(pool.clone(), last_id.clone())),
            tokio::spawn(poll(pool.clone(), last_id.clone(), poll_interval)),
        ];
        Ok(PgStore {
            pool,
            last_id,
            tasks,
        })
    }

    /// The connection pool, for maintenance and tests (raw SQL).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Stops the wake-up tasks and closes the pool.
    pub async fn close(&self) {
        for task in &self.tasks {
            task.abort();
        }
        self.pool.close().await;
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn last_event_id(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(LAST_ID_SQL).fetch_one(pool).await
}

async fn poll_once(pool: &PgPool, last_id: &watch::Sender<i64>) {
    match last_event_id(pool).await {
        Ok(id) => bump(last_id, id),
        Err(err) => tracing::debug!(error = %err, "event log wake-up poll failed"),
    }
}

/// Follows `NOTIFY tollgate_events`. Notifications sent while the listener was
/// disconnected are lost, so every (re)connect is followed by a poll.
async fn listen(pool: PgPool, last_id: watch::Sender<i64>) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(err) => {
                if pool.is_closed() {
                    return;
                }
                tracing::warn!(error = %err, "event log listener cannot connect; retrying");
                tokio::time::sleep(RETRY_DELAY).await;
                continue;
            }
        };
        if let Err(err) = listener.listen(PG_NOTIFY_CHANNEL).await {
            tracing::warn!(error = %err, "event log LISTEN failed; retrying");
            tokio::time::sleep(RETRY_DELAY).await;
            continue;
        }
        poll_once(&pool, &last_id).await;
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => match notification.payload().parse::<i64>() {
                    Ok(id) => bump(&last_id, id),
                    Err(_) => poll_once(&pool, &last_id).await,
                },
                // The connection dropped and was re-established (LISTEN re-issued).
                Ok(None) => {
                    tracing::debug!("event log listener reconnected");
                    poll_once(&pool, &last_id).await;
                }
                Err(err) => {
                    if pool.is_closed() {
                        return;
                    }
                    tracing::warn!(error = %err, "event log listener failed; reconnecting");
                    break;
                }
            }
        }
        tokio::time::sleep(RETRY_DELAY).await;
    }
}

async fn poll(pool: PgPool, last_id: watch::Sender<i64>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if pool.is_closed() {
            return;
        }
        poll_once(&pool, &last_id).await;
    }
}

fn event_from_row(row: &PgRow) -> Result<StoredEvent, StoreError> {
    let Json(payload): Json<serde_json::Value> = row.try_get("payload")?;
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

impl EventStore for PgStore {
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

        let mut tx = self.pool.begin().await?;
        let outcome: Result<Vec<StoredEvent>, Failure> = async {
            // Serialise all appends (see PG_APPEND_LOCK_KEY); released at
            // commit/rollback, after the commit is visible to readers.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PG_APPEND_LOCK_KEY)
                .execute(&mut *tx)
                .await?;
            // READ COMMITTED: this statement's snapshot is taken after the lock
            // was granted, so it sees every append committed before ours.
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
            for (seq, event) in (current + 1..).zip(&events) {
                let row = sqlx::query(INSERT_SQL)
                    .bind(occurred_at)
                    .bind(aggregate_type)
                    .bind(aggregate_id)
                    .bind(seq)
                    .bind(&event.event_type)
                    .bind(actor_id)
                    .bind(Json(&event.payload))
                    .fetch_one(&mut *tx)
                    .await?;
                stored.push(event_from_row(&row).map_err(Failure::Store)?);
            }
            if let Some(last) = stored.last() {
                // Delivered to listeners only if and when the transaction commits.
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(PG_NOTIFY_CHANNEL)
                    .bind(last.event_id.to_string())
                    .execute(&mut *tx)
                    .await?;
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

        let mut tx = self.pool.begin().await?;
        let outcome: Result<Vec<StoredEvent>, Failure> = async {
            // The same lock as `append`: appends and batches commit one at a time,
            // so a batch's identity values are one contiguous range.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PG_APPEND_LOCK_KEY)
                .execute(&mut *tx)
                .await?;
            // Two round trips whatever the batch's size: every touched aggregate's
            // version, then one multi-row insert.
            let mut seen = std::collections::HashSet::new();
            let (types, ids): (Vec<&str>, Vec<&str>) = events
                .iter()
                .map(|e| (e.aggregate_type.as_str(), e.aggregate_id.as_str()))
                .filter(|k| seen.insert(*k))
                .unzip();
            let rows = sqlx::query(BATCH_VERSIONS_SQL)
                .bind(&types)
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?;
            let mut current = std::collections::HashMap::with_capacity(rows.len());
            for row in &rows {
                let key: (String, String) = (row.try_get(0)?, row.try_get(1)?);
                current.insert(key, row.try_get::<i64, _>(2)?);
            }
            let seqs = BatchVersions::sequence(&events, |e| {
                current
                    .get(&(e.aggregate_type.clone(), e.aggregate_id.clone()))
                    .copied()
                    .unwrap_or(0)
            })
            .map_err(Failure::Store)?;
            let types: Vec<&str> = events.iter().map(|e| e.aggregate_type.as_str()).collect();
            let ids: Vec<&str> = events.iter().map(|e| e.aggregate_id.as_str()).collect();
            let kinds: Vec<&str> = events.iter().map(|e| e.event.event_type.as_str()).collect();
            let payloads = events
                .iter()
                .map(|e| serde_json::to_string(&e.event.payload))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    Failure::Store(StoreError::Invalid(format!(
                        "payload does not serialise: {e}"
                    )))
                })?;
            let rows = sqlx::query(BATCH_INSERT_SQL)
                .bind(now_millis())
                .bind(actor_id)
                .bind(&types)
                .bind(&ids)
                .bind(&seqs)
                .bind(&kinds)
                .bind(&payloads)
                .fetch_all(&mut *tx)
                .await?;
            let mut stored = rows
                .iter()
                .map(event_from_row)
                .collect::<Result<Vec<_>, _>>()
                .map_err(Failure::Store)?;
            // Identity values follow the insert's row order (the batch's order).
            stored.sort_by_key(|e| e.event_id);
            if let Some(last) = stored.last() {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(PG_NOTIFY_CHANNEL)
                    .bind(last.event_id.to_string())
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(stored)
        }
        .await;

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
            .fetch_one(&self.pool)
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
            " FROM events WHERE event_id > $1 ORDER BY event_id LIMIT $2"
        ))
        .bind(after_event_id)
        .bind(limit)
        .fetch_all(&self.pool)
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
            " FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
             ORDER BY aggregate_seq"
        ))
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn last_event_id(&self) -> Result<i64, StoreError> {
        Ok(last_event_id(&self.pool).await?)
    }

    async fn checkpoint(&self, projection: &str) -> Result<i64, StoreError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT last_applied_event_id FROM projection_checkpoints WHERE name = $1",
        )
        .bind(projection)
        .fetch_optional(&self.pool)
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
            "INSERT INTO projection_checkpoints (name, last_applied_event_id) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET last_applied_event_id = excluded.last_applied_event_id",
        )
        .bind(projection)
        .bind(last_applied_event_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    fn subscribe(&self) -> watch::Receiver<i64> {
        self.last_id.subscribe()
    }
}
