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

impl StoredEvent {
    /// A short digest naming this appended event: the first 8 bytes of SHA-256, as 16
    /// hex digits, over its id, time, type, aggregate and sequence number.
    ///
    /// The same event read back from any copy of the log (a restored backup, either
    /// backend) has the same fingerprint; another event appended at the same id after
    /// a restore has another one (it was appended at another time, mostly to another
    /// aggregate). The payload is left out: its sealed fields may be re-sealed under
    /// another key, and the fields above already tell two appends apart. Computed on
    /// read: nothing is stored.
    pub fn fingerprint(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"tollgate-event-v1");
        for n in [self.event_id, self.occurred_at, self.aggregate_seq] {
            ctx.update(&n.to_be_bytes());
        }
        // Length-prefixed, so no two field splits hash alike.
        for s in [&self.event_type, &self.aggregate_type, &self.aggregate_id] {
            ctx.update(&(s.len() as u64).to_be_bytes());
            ctx.update(s.as_bytes());
        }
        let digest = ctx.finish();
        digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
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

    /// Each event's sequence number, in order: its expected version checked
    /// against its aggregate's version so far, which starts at `stored(e)`.
    pub fn sequence(
        events: &[BatchEvent],
        stored: impl Fn(&BatchEvent) -> i64,
    ) -> Result<Vec<i64>, StoreError> {
        let mut versions = BatchVersions::default();
        events
            .iter()
            .map(|e| {
                let now = versions.get(e).unwrap_or_else(|| stored(e));
                versions.advance(e, now)
            })
            .collect()
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

#[cfg(test)]
mod tests {
    use super::StoredEvent;
    use serde_json::json;

    fn event() -> StoredEvent {
        StoredEvent {
            event_id: 42,
            occurred_at: 1_700_000_000_000,
            aggregate_type: "app".into(),
            aggregate_id: "shop".into(),
            aggregate_seq: 3,
            event_type: "app_created".into(),
            actor_id: "admin".into(),
            payload: json!({"type": "app_created", "app": {"id": "shop"}}),
        }
    }

    #[test]
    fn fingerprint_is_16_hex_digits_and_stable() {
        let fp = event().fingerprint();
        assert_eq!(fp.len(), 16);
        assert!(fp.bytes().all(|b| b.is_ascii_hexdigit()), "{fp}");
        // Proxies persist fingerprints: changing the function makes every proxy
        // following the service take one fresh snapshot. Pinned so it is deliberate
        // (the value checked against Python's hashlib over the same bytes).
        assert_eq!(fp, "a9e4c93f6547474c");
    }

    #[test]
    fn fingerprint_tells_another_event_at_the_same_id_apart() {
        let base = event().fingerprint();
        let changes: [fn(&mut StoredEvent); 6] = [
            |e| e.event_id += 1,
            |e| e.occurred_at += 1,
            |e| e.aggregate_type = "route".into(),
            |e| e.aggregate_id = "shop2".into(),
            |e| e.aggregate_seq += 1,
            |e| e.event_type = "app_deleted".into(),
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut e = event();
            change(&mut e);
            assert_ne!(e.fingerprint(), base, "change {i}");
        }
        // Fields are length-prefixed: moving a byte from one to the next changes it.
        let mut a = event();
        a.aggregate_type = "ap".into();
        a.aggregate_id = "pshop".into();
        assert_ne!(a.fingerprint(), base);
    }

    #[test]
    fn fingerprint_ignores_the_payload_and_the_actor() {
        let base = event().fingerprint();
        let mut e = event();
        e.payload = json!({"type": "app_created", "sealed": "v2:..."});
        e.actor_id = "someone-else".into();
        assert_eq!(e.fingerprint(), base);
    }
}
