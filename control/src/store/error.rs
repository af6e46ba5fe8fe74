//! Errors returned by the event store.

/// Everything an [`EventStore`](super::EventStore) operation can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Optimistic-concurrency failure: the aggregate is not at the version the
    /// command was decided against (HTTP 409). Nothing was appended.
    #[error("version conflict: expected version {expected}, aggregate is at {actual}")]
    Conflict { expected: i64, actual: i64 },
    /// The database refused or failed the operation, or a sealed private key
    /// could not be sealed or unsealed (the message names the key id).
    #[error("event store database error: {0}")]
    Database(String),
    /// The caller passed something the store cannot accept.
    #[error("invalid event store request: {0}")]
    Invalid(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        StoreError::Database(err.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        StoreError::Database(format!("migration failed: {err}"))
    }
}

/// True when `err` is a unique-constraint violation (a concurrent append won the
/// race for the same `aggregate_seq`).
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
