//! One of the two backends, chosen by URL at startup, with private keys sealed
//! at rest.
//!
//! [`AnyStore`] is where sealing happens (see [`super::seal`]): appends seal the
//! sealed fields of the payloads that can carry them before the backend sees
//! them, and every read unseals them, so commands, the projection and the feed
//! only see plaintext. Without a keyring (tests, tools) payloads are stored as
//! given and a sealed value read back is an error.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::watch;

use super::seal::{Keyring, SealError, is_sealed_event_type, unseal_payload};
use super::{BatchEvent, EventStore, NewEvent, PgStore, SqliteStore, StoreError, StoredEvent};

/// The backend of an [`AnyStore`].
pub enum AnyBackend {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// Either backend plus the sealing keyring; implements [`EventStore`] by
/// delegation, sealing on the way in and unsealing on the way out.
pub struct AnyStore {
    inner: AnyBackend,
    keyring: Option<Arc<Keyring>>,
}

/// The SQLite database file a store URL names, `None` for PostgreSQL.
pub(crate) fn sqlite_path(url: &str) -> Result<Option<&str>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(None);
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
    Ok(Some(path))
}

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match &$self.inner {
            AnyBackend::Sqlite($s) => $call,
            AnyBackend::Postgres($s) => $call,
        }
    };
}

impl AnyStore {
    /// Opens a store from a URL:
    /// `postgres://…` / `postgresql://…` → [`PgStore`];
    /// `sqlite:///abs/path.db`, `sqlite://rel/path.db`, `sqlite:path.db` or a
    /// bare filesystem path → [`SqliteStore`] (file created if missing).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Ok(match sqlite_path(url)? {
            None => PgStore::connect(url).await?.into(),
            Some(path) => SqliteStore::open(Path::new(path)).await?.into(),
        })
    }

    /// Seals with `keyring` from now on (and unseals with it).
    pub fn with_keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = Some(Arc::new(keyring));
        self
    }

    /// The sealing keyring, if any.
    pub fn keyring(&self) -> Option<&Keyring> {
        self.keyring.as_deref()
    }

    /// The backend (for its own tables and maintenance).
    pub fn inner(&self) -> &AnyBackend {
        &self.inner
    }

    /// "sqlite" or "postgres".
    pub fn backend(&self) -> &'static str {
        match self.inner {
            AnyBackend::Sqlite(_) => "sqlite",
            AnyBackend::Postgres(_) => "postgres",
        }
    }

    /// Closes the underlying pools.
    pub async fn close(&self) {
        delegate!(self, s => s.close().await)
    }
}

impl From<SqliteStore> for AnyStore {
    fn from(store: SqliteStore) -> Self {
        AnyStore {
            inner: AnyBackend::Sqlite(store),
            keyring: None,
        }
    }
}

impl From<PgStore> for AnyStore {
    fn from(store: PgStore) -> Self {
        AnyStore {
            inner: AnyBackend::Postgres(store),
            keyring: None,
        }
    }
}

/// Payloads as given, for the events [`AnyStore::seal`] changed.
type Originals = Vec<Option<Value>>;

impl AnyStore {
    /// Seals `payload` in place if its event type can carry private keys;
    /// returns the plaintext payload to hand back to the caller.
    fn seal(&self, event: &mut NewEvent) -> Result<Option<Value>, StoreError> {
        let Some(keyring) = self.keyring.as_deref() else {
            return Ok(None);
        };
        if !is_sealed_event_type(&event.event_type) {
            return Ok(None);
        }
        let original = event.payload.clone();
        keyring
            .seal_payload(&mut event.payload)
            .map_err(|e| sealing_error(&format!("appending {}", event.event_type), e))?;
        Ok(Some(original))
    }

    /// Unseals the events read from the backend.
    fn unseal(&self, mut events: Vec<StoredEvent>) -> Result<Vec<StoredEvent>, StoreError> {
        for e in events
            .iter_mut()
            .filter(|e| is_sealed_event_type(&e.event_type))
        {
            unseal_payload(self.keyring.as_deref(), &mut e.payload).map_err(|err| {
                sealing_error(&format!("event {} ({})", e.event_id, e.event_type), err)
            })?;
        }
        Ok(events)
    }
}

/// The stored events with the caller's plaintext payloads back in place.
fn restore(mut stored: Vec<StoredEvent>, originals: Originals) -> Vec<StoredEvent> {
    for (e, original) in stored.iter_mut().zip(originals) {
        if let Some(payload) = original {
            e.payload = payload;
        }
    }
    stored
}

fn sealing_error(context: &str, err: SealError) -> StoreError {
    StoreError::Database(format!("private key sealing: {context}: {err}"))
}

impl EventStore for AnyStore {
    async fn append(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        expected_version: i64,
        actor_id: &str,
        mut events: Vec<NewEvent>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let originals = events
            .iter_mut()
            .map(|e| self.seal(e))
            .collect::<Result<Originals, _>>()?;
        let stored = delegate!(self, s => s.append(aggregate_type, aggregate_id, expected_version, actor_id, events).await)?;
        Ok(restore(stored, originals))
    }

    async fn append_batch(
        &self,
        actor_id: &str,
        mut events: Vec<BatchEvent>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let originals = events
            .iter_mut()
            .map(|e| self.seal(&mut e.event))
            .collect::<Result<Originals, _>>()?;
        let stored = delegate!(self, s => s.append_batch(actor_id, events).await)?;
        Ok(restore(stored, originals))
    }

    async fn version(&self, aggregate_type: &str, aggregate_id: &str) -> Result<i64, StoreError> {
        delegate!(self, s => s.version(aggregate_type, aggregate_id).await)
    }

    async fn read_after(
        &self,
        after_event_id: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.unseal(delegate!(self, s => s.read_after(after_event_id, limit).await)?)
    }

    async fn read_aggregate(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.unseal(delegate!(self, s => s.read_aggregate(aggregate_type, aggregate_id).await)?)
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
