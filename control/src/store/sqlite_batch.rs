//! A batch append on SQLite in a few statements, not two per event.
//!
//! Each statement is a round trip to the connection's worker thread; at two per
//! event a 1,000-event batch held the write lock (and every command queued behind
//! it) for 100-200 ms on a busy machine. Here the touched aggregates' versions are
//! read [`VERSIONS_CHUNK`] at a time and the rows inserted [`INSERT_CHUNK`] at a
//! time, inside the caller's transaction.

use std::collections::HashMap;

use sqlx::sqlite::Sqlite;
use sqlx::{AssertSqlSafe, Row, Transaction};

use crate::store::model::BatchVersions;
use crate::store::settle::Failure;
use crate::store::{BatchEvent, StoreError, StoredEvent};

/// Aggregates whose versions one statement reads (three parameters each).
const VERSIONS_CHUNK: usize = 200;
/// Events one insert statement holds (seven parameters each).
const INSERT_CHUNK: usize = 100;

/// Checks every event's expected version and inserts them all, in order; the
/// stored events come back in the same order.
pub(super) async fn insert_all(
    tx: &mut Transaction<'_, Sqlite>,
    actor_id: &str,
    occurred_at: i64,
    events: &[BatchEvent],
    payloads: &[String],
) -> Result<Vec<StoredEvent>, Failure> {
    let current = versions(tx, events).await?;
    let seqs = BatchVersions::sequence(events, |e| {
        current
            .get(&(e.aggregate_type.as_str(), e.aggregate_id.as_str()))
            .copied()
            .unwrap_or(0)
    })
    .map_err(Failure::Store)?;
    let mut stored = Vec::with_capacity(events.len());
    for (start, chunk) in (0..).step_by(INSERT_CHUNK).zip(events.chunks(INSERT_CHUNK)) {
        let sql = insert_sql(chunk.len());
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (i, e) in chunk.iter().enumerate() {
            q = q
                .bind(occurred_at)
                .bind(&e.aggregate_type)
                .bind(&e.aggregate_id)
                .bind(seqs[start + i])
                .bind(&e.event.event_type)
                .bind(actor_id)
                .bind(&payloads[start + i]);
        }
        let mut ids = q
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|row| row.try_get::<i64, _>(0))
            .collect::<Result<Vec<_>, _>>()?;
        if ids.len() != chunk.len() {
            return Err(Failure::Store(StoreError::Database(format!(
                "an insert of {} events returned {} ids",
                chunk.len(),
                ids.len()
            ))));
        }
        // RETURNING's order is not promised; ids rise in VALUES order. The rest
        // of each stored event is what was inserted: no need to read it back.
        ids.sort_unstable();
        stored.extend(
            ids.into_iter()
                .zip(chunk)
                .enumerate()
                .map(|(i, (event_id, e))| StoredEvent {
                    event_id,
                    occurred_at,
                    aggregate_type: e.aggregate_type.clone(),
                    aggregate_id: e.aggregate_id.clone(),
                    aggregate_seq: seqs[start + i],
                    event_type: e.event.event_type.clone(),
                    actor_id: actor_id.to_string(),
                    payload: e.event.payload.clone(),
                }),
        );
    }
    Ok(stored)
}

/// The current version of every aggregate `events` touch (absent: none yet).
async fn versions<'e>(
    tx: &mut Transaction<'_, Sqlite>,
    events: &'e [BatchEvent],
) -> Result<HashMap<(&'e str, &'e str), i64>, Failure> {
    let mut keys: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.aggregate_type.as_str(), e.aggregate_id.as_str()))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut current = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(VERSIONS_CHUNK) {
        let sql = versions_sql(chunk.len());
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (n, (kind, id)) in chunk.iter().enumerate() {
            q = q.bind(n as i64).bind(*kind).bind(*id);
        }
        for row in q.fetch_all(&mut **tx).await? {
            let n: i64 = row.try_get(0)?;
            let version: i64 = row.try_get(1)?;
            if let Some(key) = usize::try_from(n).ok().and_then(|n| chunk.get(n)) {
                current.insert(*key, version);
            }
        }
    }
    Ok(current)
}

/// For `n` (position, type, id) triples, each position and its aggregate's highest
/// sequence number, through the aggregate index.
fn versions_sql(n: usize) -> String {
    let mut sql = String::from("WITH k(n, t, i) AS (VALUES ");
    push_tuples(&mut sql, n, 3);
    sql.push_str(
        ") SELECT n, (SELECT COALESCE(MAX(aggregate_seq), 0) FROM events \
         WHERE aggregate_type = k.t AND aggregate_id = k.i) FROM k",
    );
    sql
}

fn insert_sql(n: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO events (occurred_at, aggregate_type, aggregate_id, \
         aggregate_seq, event_type, actor_id, payload) VALUES ",
    );
    push_tuples(&mut sql, n, 7);
    sql.push_str(" RETURNING event_id");
    sql
}

/// `(?, ?), (?, ?), ...`: `n` tuples of `width` parameters.
fn push_tuples(sql: &mut String, n: usize, width: usize) {
    let tuple = format!("({})", vec!["?"; width].join(", "));
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&tuple);
    }
}
