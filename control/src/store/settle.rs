//! The end of an append transaction, the same for both stores and for single
//! appends and batches: commit and advance the feed's watch, or roll back and say why.

use super::model::bump;
use super::{BatchEvent, EventStore, StoreError, StoredEvent};
use tokio::sync::watch;

/// Why an append transaction did not commit.
pub(super) enum Failure {
    Store(StoreError),
    /// A unique violation on an aggregate's sequence: a writer that bypassed the
    /// store's lock appended concurrently.
    Raced,
}

impl From<sqlx::Error> for Failure {
    fn from(err: sqlx::Error) -> Self {
        if super::error::is_unique_violation(&err) {
            Failure::Raced
        } else {
            Failure::Store(err.into())
        }
    }
}

/// The aggregate a race is reported against, with the version the writer expected.
pub(super) struct Expected<'a> {
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub version: i64,
}

impl<'a> Expected<'a> {
    /// A batch's race is reported against its first aggregate.
    pub fn first_of(events: &'a [BatchEvent]) -> Self {
        let first = events.first();
        Expected {
            aggregate_type: first.map_or("", |e| e.aggregate_type.as_str()),
            aggregate_id: first.map_or("", |e| e.aggregate_id.as_str()),
            version: first.map_or(0, |e| e.expected_version),
        }
    }
}

/// Commits `tx` when `outcome` is the stored events (and raises `last_id` to the
/// last of them); otherwise rolls back at once (releasing any lock the transaction
/// holds) and returns the failure, a race as a conflict at `expected`'s aggregate.
pub(super) async fn settle<DB, S>(
    store: &S,
    last_id: &watch::Sender<i64>,
    tx: sqlx::Transaction<'_, DB>,
    outcome: Result<Vec<StoredEvent>, Failure>,
    expected: Expected<'_>,
) -> Result<Vec<StoredEvent>, StoreError>
where
    DB: sqlx::Database,
    S: EventStore,
{
    match outcome {
        Ok(stored) => {
            tx.commit().await?;
            if let Some(last) = stored.last() {
                bump(last_id, last.event_id);
            }
            Ok(stored)
        }
        Err(failure) => {
            // Best effort: a failed rollback is reported by the pool when the
            // connection is reused, and the original error matters more.
            let _ = tx.rollback().await;
            match failure {
                Failure::Store(err) => Err(err),
                Failure::Raced => Err(StoreError::Conflict {
                    expected: expected.version,
                    actual: store
                        .version(expected.aggregate_type, expected.aggregate_id)
                        .await?,
                }),
            }
        }
    }
}
