//! The append-only event log and projection checkpoints.
//!
//! Two backends share one schema shape and one behaviour contract
//! ([`EventStore`]): [`SqliteStore`] for single-node deployments and
//! [`PgStore`] for PostgreSQL. [`AnyStore`] holds one of the two (the trait
//! uses `async fn`s, so it is not dyn-compatible; dispatch is by enum).
//!
//! # Guarantees
//!
//! * **Append-only in the database.** Triggers refuse `UPDATE` and `DELETE` on
//!   `events` (and `TRUNCATE` in PostgreSQL, `INSERT OR REPLACE` in SQLite);
//!   see `control/migrations/`. Migrations run when a store is opened.
//! * **Optimistic concurrency per aggregate.** [`EventStore::append`] reads the
//!   aggregate's version (its highest `aggregate_seq`, 0 if none) and inserts
//!   `version+1..` in one transaction. A stale `expected_version` yields
//!   [`StoreError::Conflict`]; a unique-constraint violation on
//!   `(aggregate_type, aggregate_id, aggregate_seq)` is mapped to `Conflict` too.
//! * **Gap-safe global order.** Readers follow the log by `event_id` cursor
//!   ([`EventStore::read_after`]). That is only sound if ids become visible in
//!   order: in PostgreSQL identity values are taken at insert time but become
//!   visible at commit, so two concurrent appends could commit 11 before 10 and a
//!   reader already past 11 would never see 10. Appends therefore serialise on a
//!   transaction-scoped advisory lock ([`PG_APPEND_LOCK_KEY`]) taken first in the
//!   append transaction; the lock is released only after the commit is visible.
//!   SQLite serialises writers by itself (`BEGIN IMMEDIATE` takes the write lock
//!   before the version is read). Ids may have gaps (rolled-back appends), never
//!   late arrivals below a cursor.
//! * **Wake-ups are hints.** [`EventStore::subscribe`] yields the last appended
//!   event id: in-process after commit (SQLite, and PostgreSQL's own appends),
//!   plus `LISTEN tollgate_events` and a periodic `max(event_id)` poll in
//!   PostgreSQL. A lost notification loses nothing; readers always read the
//!   table by id range.
//! * **Private keys sealed at rest.** [`AnyStore`] with a [`Keyring`] seals the
//!   `key_pem` and `account_credentials` fields of the events that carry them
//!   (AES-256-GCM, [`seal`]) and unseals them on every read; the keys come from
//!   [`SEALING_KEYS_ENV`] or a key file ([`load_keyring`]). Checkpoints hold
//!   only event ids.

mod any;
mod error;
mod keysource;
mod model;
mod postgres;
pub mod seal;
mod settle;
mod sqlite;

use std::future::Future;

pub use any::{AnyBackend, AnyStore};
pub use error::StoreError;
pub use keysource::{
    DEFAULT_KEY_FILE, KeySource, KeySourceError, SEALING_KEYS_ENV, load_keyring, resolve_keyring,
};
pub use model::{BatchEvent, NewEvent, StoredEvent};
pub use postgres::{PG_APPEND_LOCK_KEY, PG_NOTIFY_CHANNEL, PG_POLL_INTERVAL, PgStore};
pub use seal::{Keyring, KeyringError, SealError};
pub use sqlite::SqliteStore;

/// The event log contract both backends implement.
///
/// All futures are `Send`, so callers may spawn them.
pub trait EventStore: Send + Sync {
    /// Appends `events` to an aggregate at `expected_version` (0 for a new
    /// aggregate) in one transaction; returns them as stored, in order.
    /// Fails with [`StoreError::Conflict`] if the aggregate is at another
    /// version, [`StoreError::Invalid`] for empty names, a negative version or
    /// an empty batch.
    fn append(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        expected_version: i64,
        actor_id: &str,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// Appends events of several aggregates in one transaction, in the given
    /// order, under the same lock as [`Self::append`]: all or nothing, and the
    /// stored events get one contiguous range of event ids. Each event's
    /// `expected_version` is checked against its aggregate (the database's
    /// version for its first event in the batch, the previous event's sequence
    /// number after that); any mismatch is a [`StoreError::Conflict`] and
    /// nothing is appended. [`StoreError::Invalid`] as for [`Self::append`].
    fn append_batch(
        &self,
        actor_id: &str,
        events: Vec<BatchEvent>,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// The aggregate's current version: its highest `aggregate_seq`, 0 if none.
    fn version(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// Up to `limit` (> 0) events with `event_id > after_event_id`, ordered by
    /// `event_id`.
    fn read_after(
        &self,
        after_event_id: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// All events of one aggregate, ordered by `aggregate_seq`.
    fn read_aggregate(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// The highest committed `event_id`, 0 for an empty log.
    fn last_event_id(&self) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// A projection's last applied event id, 0 if it never saved one.
    fn checkpoint(&self, projection: &str) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// Stores (upserts) a projection's last applied event id.
    fn save_checkpoint(
        &self,
        projection: &str,
        last_applied_event_id: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A receiver of the last appended event id, for waking readers. Only a
    /// hint: it may skip values or lag; read the log with [`Self::read_after`].
    fn subscribe(&self) -> tokio::sync::watch::Receiver<i64>;
}
