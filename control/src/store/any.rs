//! One of the two backends, chosen by URL at startup.

use std::path::Path;

use tokio::sync::watch;

use super::{BatchEvent, EventStore, NewEvent, PgStore, SqliteStore, StoreError, StoredEvent};

/// Either backend; implements [`EventStore`] by delegation.
pub enum AnyStore {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl AnyStore {
    /// Opens a store from a URL:
    /// `postgres://…` / `postgresql://…` → [`PgStore`];
    /// `sqlite:///abs/path.db`, `sqlite://rel/path.db`, `sqlite:path.db` or a
    /// bare filesystem path → [`SqliteStore`] (file created if missing).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(AnyStore::Postgres(PgStore::connect(url).await?));
        }
        let path = match url.strip_prefix("sqlite:") {
            Some(rest) => rest.strip_prefix("//").unwrap_or(rest),
            None if url.contains("://") => {
                return Err(StoreError::Invalid(format!(
                    "unsupported event store URL scheme in {url:?} (want sqlite: or postgres:)"
                )));
            }
            None => url,
        };
        if path.is_empty() || path.starts_with(":memory:") {
            return Err(StoreError::Invalid(format!(
                "event store URL {url:?} names no database file"
            )));
        }
        if path.contains('?') {
            return Err(StoreError::Invalid(format!(
                "event store URL {url:?}: SQLite URL options are not supported"
            )));
        }
        Ok(AnyStore::Sqlite(SqliteStore::open(Path::new(path)).await?))
    }

    /// "sqlite" or "postgres".
    pub fn backend(&self) -> &'static str {
        match self {
            AnyStore::Sqlite(_) => "sqlite",
            AnyStore::Postgres(_) => "postgres",
        }
    }

    /// Closes the underlying pools.
    pub async fn close(&self) {
        match self {
            AnyStore::Sqlite(s) => s.close().await,
            AnyStore::Postgres(s) => s.close().await,
        }
    }
}

impl From<SqliteStore> for AnyStore {
    fn from(store: SqliteStore) -> Self {
        AnyStore::Sqlite(store)
    }
}

impl From<PgStore> for AnyStore {
    fn from(store: PgStore) -> Self {
        AnyStore::Postgres(store)
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $call,
            AnyStore::Postgres($s) => $call,
        }
    };
}

impl EventStore for AnyStore {
    async fn append(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        expected_version: i64,
        actor_id: &str,
        events: Vec<NewEvent>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        delegate!(self, s => s.append(aggregate_type, aggregate_id, expected_version, actor_id, events).await)
    }

    async fn append_batch(
        &self,
        actor_id: &str,
        events: Vec<BatchEvent>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        delegate!(self, s => s.append_batch(actor_id, events).await)
    }

    async fn version(&self, aggregate_type: &str, aggregate_id: &str) -> Result<i64, StoreError> {
        delegate!(self, s => s.version(aggregate_type, aggregate_id).await)
    }

    async fn read_after(
        &self,
        after_event_id: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        delegate!(self, s => s.read_after(after_event_id, limit).await)
    }

    async fn read_aggregate(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        delegate!(self, s => s.read_aggregate(aggregate_type, aggregate_id).await)
    }

    async fn last_event_id(&self) -> Result<i64, StoreError> {
        delegate!(self, s => s.last_event_id().await)
    }

    async fn checkpoint(&self, projection: &str) -> Result<i64, StoreError> {
        delegate!(self, s => s.checkpoint(projection).await)
    }

    async fn save_checkpoint(
        &self,
        projection: &str,
        last_applied_event_id: i64,
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.save_checkpoint(projection, last_applied_event_id).await)
    }

    fn subscribe(&self) -> watch::Receiver<i64> {
        delegate!(self, s => s.subscribe())
    }
}
