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
