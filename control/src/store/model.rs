//! Event types shared by both backends.

use super::StoreError;

/// An event a command wants to append; the store assigns ids, sequence numbers
/// and the timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_type: String,
    pub payload: serde_json::Value,
}

impl NewEvent {
    pub fn new(event_type: impl Into<String>, payload: serde_json::Value) -> Self {
        NewEvent {
            event_type: event_type.into(),
            payload,
        }
    }
}

/// One event of a multi-aggregate append ([`EventStore::append_batch`]).
///
/// [`EventStore::append_batch`]: super::EventStore::append_batch
#[derive(Debug, Clone, PartialEq)]
pub struct BatchEvent {
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// The aggregate's version before this event (0 for a new aggregate); events
    /// of one aggregate later in the batch continue from the one before.
    pub expected_version: i64,
    pub event: NewEvent,
}

/// An event as stored in the log.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredEvent {
    /// Global, strictly increasing position in the log (gaps possible, never
    /// out-of-order commits).
    pub event_id: i64,
    /// Unix milliseconds at append time (all events of one append share it).
    pub occurred_at: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// 1-based position within the aggregate; contiguous.
    pub aggregate_seq: i64,
    pub event_type: String,
    pub actor_id: String,
    pub payload: serde_json::Value,
}

/// Checks done identically by both backends before touching the database.
pub(crate) fn validate_append(
    aggregate_type: &str,
    aggregate_id: &str,
    expected_version: i64,
    actor_id: &str,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    if aggregate_type.is_empty() {
        return Err(StoreError::Invalid("aggregate_type is empty".into()));
    }
    if aggregate_id.is_empty() {
        return Err(StoreError::Invalid("aggregate_id is empty".into()));
    }
    if actor_id.is_empty() {
        return Err(StoreError::Invalid("actor_id is empty".into()));
    }
    if expected_version < 0 {
        return Err(StoreError::Invalid(format!(
            "expected_version {expected_version} is negative"
        )));
    }
    if events.is_empty() {
        return Err(StoreError::Invalid("no events to append".into()));
    }
    if let Some(e) = events.iter().find(|e| e.event_type.is_empty()) {
        return Err(StoreError::Invalid(format!(
            "event with empty event_type (payload {})",
            e.payload
        )));
    }
    Ok(())
}

/// [`validate_append`] for a multi-aggregate batch, item by item.
pub(crate) fn validate_batch(actor_id: &str, events: &[BatchEvent]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Err(StoreError::Invalid("no events to append".into()));
    }
    for e in events {
        validate_append(
            &e.aggregate_type,
            &e.aggregate_id,
            e.expected_version,
            actor_id,
            std::slice::from_ref(&e.event),
        )?;
    }
    Ok(())
}

/// Versions of the aggregates a batch touches, as the batch goes: each event's
/// `expected_version` must equal its aggregate's version so far.
#[derive(Default)]
pub(crate) struct BatchVersions(std::collections::HashMap<(String, String), i64>);

impl BatchVersions {
    /// The version so far, if the batch touched the aggregate already.
    pub fn get(&self, e: &BatchEvent) -> Option<i64> {
        self.0
            .get(&(e.aggregate_type.clone(), e.aggregate_id.clone()))
            .copied()
    }

    /// Checks `e` against `current` (the version so far) and records its
    /// sequence number, which it returns.
    pub fn advance(&mut self, e: &BatchEvent, current: i64) -> Result<i64, StoreError> {
        if current != e.expected_version {
            return Err(StoreError::Conflict {
                expected: e.expected_version,
                actual: current,
            });
        }
        let seq = current + 1;
        self.0
            .insert((e.aggregate_type.clone(), e.aggregate_id.clone()), seq);
        Ok(seq)
    }
}

pub(crate) fn validate_limit(limit: i64) -> Result<(), StoreError> {
    if limit <= 0 {
        return Err(StoreError::Invalid(format!(
            "limit {limit} must be positive"
        )));
    }
    Ok(())
}

pub(crate) fn validate_checkpoint(projection: &str, event_id: i64) -> Result<(), StoreError> {
    if projection.is_empty() {
        return Err(StoreError::Invalid("projection name is empty".into()));
    }
    if event_id < 0 {
        return Err(StoreError::Invalid(format!(
            "checkpoint {event_id} is negative"
        )));
    }
    Ok(())
}

/// Current wall-clock time in unix milliseconds.
pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Raise a watch value monotonically (concurrent committers may report out of
/// order; the watch must never go backwards).
pub(crate) fn bump(tx: &tokio::sync::watch::Sender<i64>, event_id: i64) {
    tx.send_if_modified(|current| {
        if event_id > *current {
            *current = event_id;
            true
        } else {
            false
        }
    });
}
