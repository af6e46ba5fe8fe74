//! [`UsageStore`]: usage batches and totals in the event store's database, for
//! both backends.

use super::{Period, UsageBatch, UsageRecord};
use crate::store::{AnyBackend, AnyStore, PgStore, SqliteStore, StoreError};
use serde::Serialize;
use sqlx::{Postgres, QueryBuilder, Row, Sqlite};
use std::future::Future;

/// Rows per multi-row `INSERT` (8 binds each: well under both databases' limits).
const INSERT_CHUNK: usize = 500;

/// What storing a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The batch was new; its records are stored.
    Stored,
    /// The same batch (same records) was stored before; nothing changed.
    Duplicate,
    /// A batch with this `(node_id, batch_seq)` was stored before with other
    /// records; nothing changed. Two proxies share a `node_id`, or one reused a
    /// sequence number.
    Mismatch,
}

/// Summed usage of one app in one period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeriodUsage {
    pub period: String,
    pub requests: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub units: i64,
}

/// Storing usage batches and reading totals; both backends implement it.
pub trait UsageStore: Send + Sync {
    /// Stores a batch and its records in one transaction, once per
    /// `(node_id, batch_seq)`. Fails with [`StoreError::Invalid`] for a batch
    /// that does not pass [`UsageBatch::check`].
    fn record_usage(
        &self,
        batch: &UsageBatch,
    ) -> impl Future<Output = Result<Recorded, StoreError>> + Send;

    /// Usage of `app_id` per period from `from` to `to` (inclusive), summed over
    /// nodes and batches; periods without usage are left out.
    fn usage(
        &self,
        app_id: &str,
        from: Period,
        to: Period,
    ) -> impl Future<Output = Result<Vec<PeriodUsage>, StoreError>> + Send;
}

fn checked(batch: &UsageBatch) -> Result<(), StoreError> {
    batch.check().map_err(|problems| {
        let text: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.at, p.reason))
            .collect();
        StoreError::Invalid(format!("usage batch refused: {}", text.join("; ")))
    })
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Whether the stored records are the batch's (in any order).
fn same_records(mut stored: Vec<UsageRecord>, batch: &UsageBatch) -> Recorded {
    let mut sent = batch.records.clone();
    stored.sort();
    sent.sort();
    if stored == sent {
        Recorded::Duplicate
    } else {
        Recorded::Mismatch
    }
}

fn record_from_row<R: Row>(row: &R) -> Result<UsageRecord, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(UsageRecord {
        app_id: row.try_get("app_id")?,
        period: row.try_get("period")?,
        requests: row.try_get("requests")?,
        bytes_in: row.try_get("bytes_in")?,
        bytes_out: row.try_get("bytes_out")?,
        units: row.try_get("units")?,
    })
}

fn usage_from_row<R: Row>(row: &R) -> Result<PeriodUsage, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(PeriodUsage {
        period: row.try_get("period")?,
        requests: row.try_get("requests")?,
        bytes_in: row.try_get("bytes_in")?,
        bytes_out: row.try_get("bytes_out")?,
        units: row.try_get("units")?,
    })
}

const INSERT_BATCH: &str =
    "INSERT INTO usage_batches (node_id, batch_seq, received_at, record_count) ";
const INSERT_RECORDS: &str = "INSERT INTO usage_records \
     (node_id, batch_seq, app_id, period, requests, bytes_in, bytes_out, units) ";
const STORED_RECORDS: &str = "SELECT app_id, period, requests, bytes_in, bytes_out, units \
     FROM usage_records WHERE node_id = ";

/// Stores `$batch` in the open transaction `$tx` of database `$db`, then commits
/// (stored) or rolls back (replay, error). A macro because the two backends'
/// transactions differ only in type.
macro_rules! record_in_tx {
    ($db:ty, $tx:expr, $batch:expr) => {{
        let mut tx = $tx;
        let batch: &UsageBatch = $batch;
        let result: Result<Recorded, sqlx::Error> = async {
            // The batch row first: an existing one makes this insert nothing.
            let inserted = QueryBuilder::<$db>::new(INSERT_BATCH)
                .push("VALUES (")
                .push_bind(batch.node_id.as_str())
                .push(", ")
                .push_bind(batch.batch_seq)
                .push(", ")
                .push_bind(now_millis())
                .push(", ")
                .push_bind(i64::try_from(batch.records.len()).unwrap_or(i64::MAX))
                .push(") ON CONFLICT DO NOTHING")
                .build()
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if inserted == 0 {
                let rows = QueryBuilder::<$db>::new(STORED_RECORDS)
                    .push_bind(batch.node_id.as_str())
                    .push(" AND batch_seq = ")
                    .push_bind(batch.batch_seq)
                    .build()
                    .fetch_all(&mut *tx)
                    .await?;
                let stored = rows
                    .iter()
                    .map(record_from_row)
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(same_records(stored, batch));
            }
            for chunk in batch.records.chunks(INSERT_CHUNK) {
                QueryBuilder::<$db>::new(INSERT_RECORDS)
                    .push_values(chunk, |mut row, r| {
                        row.push_bind(batch.node_id.as_str())
                            .push_bind(batch.batch_seq)
                            .push_bind(r.app_id.as_str())
                            .push_bind(r.period.as_str())
                            .push_bind(r.requests)
                            .push_bind(r.bytes_in)
                            .push_bind(r.bytes_out)
                            .push_bind(r.units);
                    })
                    .build()
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(Recorded::Stored)
        }
        .await;
        match result {
            Ok(Recorded::Stored) => {
                tx.commit().await?;
                Ok(Recorded::Stored)
            }
            // Nothing was written; release the write lock now.
            Ok(replay) => {
                tx.rollback().await?;
                Ok(replay)
            }
            Err(e) => {
                // Best effort: the original error matters more.
                let _ = tx.rollback().await;
                Err(StoreError::from(e))
            }
        }
    }};
}

impl UsageStore for SqliteStore {
    async fn record_usage(&self, batch: &UsageBatch) -> Result<Recorded, StoreError> {
        checked(batch)?;
        // The write lock first, so a concurrent replay waits and then sees the row.
        let tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        record_in_tx!(Sqlite, tx, batch)
    }

    async fn usage(
        &self,
        app_id: &str,
        from: Period,
        to: Period,
    ) -> Result<Vec<PeriodUsage>, StoreError> {
        let rows = sqlx::query(
            "SELECT period, SUM(requests) AS requests, SUM(bytes_in) AS bytes_in, \
             SUM(bytes_out) AS bytes_out, SUM(units) AS units FROM usage_records \
             WHERE app_id = ?1 AND period >= ?2 AND period <= ?3 \
             GROUP BY period ORDER BY period",
        )
        .bind(app_id)
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all(self.read_pool())
        .await?;
        Ok(rows.iter().map(usage_from_row).collect::<Result<_, _>>()?)
    }
}

impl UsageStore for PgStore {
    async fn record_usage(&self, batch: &UsageBatch) -> Result<Recorded, StoreError> {
        checked(batch)?;
        // A concurrent insert of the same key waits for the other transaction,
        // then does nothing if it committed.
        let tx = self.pool().begin().await?;
        record_in_tx!(Postgres, tx, batch)
    }

    async fn usage(
        &self,
        app_id: &str,
        from: Period,
        to: Period,
    ) -> Result<Vec<PeriodUsage>, StoreError> {
        let rows = sqlx::query(
            "SELECT period, SUM(requests)::bigint AS requests, SUM(bytes_in)::bigint AS bytes_in, \
             SUM(bytes_out)::bigint AS bytes_out, SUM(units)::bigint AS units FROM usage_records \
             WHERE app_id = $1 AND period >= $2 AND period <= $3 \
             GROUP BY period ORDER BY period",
        )
        .bind(app_id)
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(usage_from_row).collect::<Result<_, _>>()?)
    }
}

impl UsageStore for AnyStore {
    async fn record_usage(&self, batch: &UsageBatch) -> Result<Recorded, StoreError> {
        match self.inner() {
            AnyBackend::Sqlite(s) => s.record_usage(batch).await,
            AnyBackend::Postgres(s) => s.record_usage(batch).await,
        }
    }

    async fn usage(
        &self,
        app_id: &str,
        from: Period,
        to: Period,
    ) -> Result<Vec<PeriodUsage>, StoreError> {
        match self.inner() {
            AnyBackend::Sqlite(s) => s.usage(app_id, from, to).await,
            AnyBackend::Postgres(s) => s.usage(app_id, from, to).await,
        }
    }
}
