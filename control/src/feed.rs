//! Reading the edge events proxies follow, shared by `EdgeFeed.Watch` and
//! `GET /v1/events`.
//!
//! Events are read from the store by id range, never from memory, and only up to
//! the projection's cursor: a snapshot (the projection at its cursor) followed by
//! the events after it is then exactly the log, and events the projection left out
//! ([`Projection::is_rejected`]) are left out of the feed too. Events that are not
//! edge events are skipped, but the range they are in still counts as covered.
//!
//! **Where a proxy resumes** ([`resume_point`]). A proxy names its cursor and its
//! marker, the last edge event it applied by id and fingerprint ([`EdgeMarker`];
//! [`StoredEvent::fingerprint`]). After the log is restored from a backup, ids past
//! the backup's end may be reused by new events, so the cursor alone would resume a
//! proxy in the middle of another history: it would keep what the lost events did and
//! skip the new events up to its cursor. With a marker the proxy resumes after the
//! marker, and only if the log holds that very event; else it gets a snapshot
//! ([`Unresumable::LogDiverged`]). The events between the marker and the cursor were
//! not edge events in the proxy's log, so when the log is the one the proxy followed,
//! resuming from the marker re-sends nothing it applied; when the log was restored to
//! a point between the two, it sends the new edge events there. A proxy without a
//! marker (older than this check, or with an older state file) resumes from its
//! cursor as before.

use crate::projection::{Projection, classify};
use crate::store::{AnyStore, EventStore, StoreError, StoredEvent};
use tollgate_routing::EdgeMarker;

/// One edge event as proxies get it.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedItem {
    pub event_id: i64,
    pub event_type: String,
    /// The stored payload: the `EdgeEvent` JSON.
    pub event: serde_json::Value,
    /// [`StoredEvent::fingerprint`]: with `event_id`, the proxy's marker once applied.
    pub fingerprint: String,
}

/// Why a proxy that asked to resume must take a snapshot instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unresumable {
    /// Its cursor (or marker) is beyond the end of the log.
    CursorAhead,
    /// The log does not hold the proxy's last edge event (no event at that id, or
    /// another one): it was restored from a backup or replaced.
    LogDiverged,
}

impl Unresumable {
    /// The name proxies see: the `reason` of a gRPC `Snapshot`, the error code of a
    /// `410` from `GET /v1/events`.
    pub fn code(self) -> &'static str {
        match self {
            Unresumable::CursorAhead => "cursor_ahead",
            Unresumable::LogDiverged => "log_diverged",
        }
    }
}

/// The marker of `event`: its id and fingerprint.
pub fn marker_of(event: &StoredEvent) -> EdgeMarker {
    EdgeMarker {
        event_id: event.event_id,
        fingerprint: event.fingerprint(),
    }
}

/// Where a proxy at `after` with `marker` (its last edge event; `None` from older
/// proxies) resumes in the log ending at `head`: `Ok(id)` to send the edge events
/// after `id` (0: the whole log, which `Watch` sends as a snapshot), or why it
/// cannot.
///
/// Costs at most one read of one event by id.
pub async fn resume_point(
    store: &AnyStore,
    after: i64,
    marker: Option<&EdgeMarker>,
    head: i64,
) -> Result<Result<i64, Unresumable>, StoreError> {
    let Some(marker) = marker else {
        // No marker: the cursor is all there is to go by.
        return Ok(if after > head {
            Err(Unresumable::CursorAhead)
        } else {
            Ok(after.max(0))
        });
    };
    if !marker.is_event() {
        // No edge event up to the cursor: everything the log has is new to it.
        return Ok(Ok(0));
    }
    if marker.event_id > head {
        return Ok(Err(Unresumable::CursorAhead));
    }
    let found = store.read_after(marker.event_id - 1, 1).await?;
    let same = found
        .first()
        .is_some_and(|e| e.event_id == marker.event_id && e.fingerprint() == marker.fingerprint);
    Ok(if same {
        Ok(marker.event_id)
    } else {
        Err(Unresumable::LogDiverged)
    })
}

/// A page of the feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<FeedItem>,
    /// Every event with `after < id <= covered` was examined: resume after it.
    pub covered: i64,
}

/// The edge events with `after < id <= upto`, at most `limit` of them, in id order.
pub async fn read_range(
    store: &AnyStore,
    projection: &Projection,
    after: i64,
    upto: i64,
    limit: usize,
) -> Result<Page, StoreError> {
    let mut items = Vec::new();
    let mut cursor = after;
    let limit = limit.max(1);
    'read: while cursor < upto && items.len() < limit {
        let batch = store
            .read_after(cursor, crate::projection::BATCH.min(limit as i64 * 2 + 16))
            .await?;
        if batch.is_empty() {
            break;
        }
        for event in batch {
            if event.event_id > upto {
                break 'read;
            }
            cursor = event.event_id;
            if classify(&event).is_some() && !projection.is_rejected(event.event_id) {
                items.push(FeedItem {
                    fingerprint: event.fingerprint(),
                    event_id: event.event_id,
                    event_type: event.event_type,
                    event: event.payload,
                });
                if items.len() >= limit {
                    break 'read;
                }
            }
        }
    }
    let covered = if items.len() >= limit {
        cursor
    } else {
        upto.max(after)
    };
    Ok(Page { items, covered })
}

#[cfg(test)]
mod tests {
    use super::{Unresumable, marker_of, resume_point};
    use crate::store::{AnyStore, EventStore, NewEvent, StoredEvent};
    use serde_json::json;
    use std::path::Path;
    use tollgate_routing::EdgeMarker;

    async fn open(path: &Path) -> AnyStore {
        AnyStore::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap()
    }

    async fn append(store: &AnyStore, app: &str) -> StoredEvent {
        let e = NewEvent::new("note", json!({ "app": app }));
        store
            .append("note", app, 0, "test", vec![e])
            .await
            .unwrap()
            .remove(0)
    }

    /// A log of 3 events, backed up; 2 more appended (lost); the backup restored and 3
    /// other events appended, reusing ids 4 and 5.
    #[tokio::test]
    async fn a_marker_resumes_only_in_the_log_it_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let (live, backup) = (dir.path().join("live.db"), dir.path().join("backup.db"));
        let store = open(&live).await;
        let mut kept = Vec::new();
        for app in ["a", "b", "c"] {
            kept.push(append(&store, app).await);
        }
        store.close().await;
        std::fs::copy(&live, &backup).unwrap();
        let store = open(&live).await;
        let lost = [append(&store, "d").await, append(&store, "e").await];
        store.close().await;

        let store = open(&backup).await;
        for app in ["x", "y", "z"] {
            append(&store, app).await;
        }
        let head = store.last_event_id().await.unwrap();
        assert_eq!(head, 6);
        let point = |after: i64, marker: Option<EdgeMarker>| {
            let store = &store;
            async move {
                resume_point(store, after, marker.as_ref(), head)
                    .await
                    .unwrap()
            }
        };

        // A marker the restored log still holds resumes after it, whatever the cursor.
        assert_eq!(point(3, Some(marker_of(&kept[2]))).await, Ok(3));
        assert_eq!(point(5, Some(marker_of(&kept[1]))).await, Ok(2));
        // A lost event at a reused id: a snapshot, though the cursor is within the log.
        assert_eq!(
            point(5, Some(marker_of(&lost[1]))).await,
            Err(Unresumable::LogDiverged)
        );
        assert_eq!(
            point(4, Some(marker_of(&lost[0]))).await,
            Err(Unresumable::LogDiverged)
        );
        // Beyond the end of the log.
        let mut ahead = marker_of(&lost[1]);
        ahead.event_id = 7;
        assert_eq!(point(7, Some(ahead)).await, Err(Unresumable::CursorAhead));
        // No edge event yet: from the start.
        assert_eq!(point(5, Some(EdgeMarker::none())).await, Ok(0));
        // No marker (an older proxy): the cursor, as before.
        assert_eq!(point(5, None).await, Ok(5));
        assert_eq!(point(0, None).await, Ok(0));
        assert_eq!(point(9, None).await, Err(Unresumable::CursorAhead));
        store.close().await;
    }

    #[tokio::test]
    async fn a_marker_at_an_id_the_log_skips_has_diverged() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("log.db")).await;
        let first = append(&store, "a").await;
        // Event 3 right after 1: no event has id 2 (as after a rolled-back append).
        let crate::store::AnyBackend::Sqlite(sqlite) = store.inner() else {
            unreachable!()
        };
        sqlx::query(
            "INSERT INTO events (event_id, occurred_at, aggregate_type, aggregate_id, \
             aggregate_seq, event_type, actor_id, payload) \
             VALUES (3, 0, 'note', 'b', 1, 'note', 'test', '{}')",
        )
        .execute(sqlite.pool())
        .await
        .unwrap();
        let mut gap = marker_of(&first);
        gap.event_id = 2;
        assert_eq!(
            resume_point(&store, 2, Some(&gap), 3).await.unwrap(),
            Err(Unresumable::LogDiverged)
        );
        assert_eq!(
            resume_point(&store, 2, Some(&marker_of(&first)), 3)
                .await
                .unwrap(),
            Ok(first.event_id)
        );
        store.close().await;
    }
}
