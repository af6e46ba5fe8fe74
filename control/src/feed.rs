//! Reading the edge events proxies follow, shared by `EdgeFeed.Watch` and
//! `GET /v1/events`.
//!
//! Events are read from the store by id range, never from memory, and only up to
//! the projection's cursor: a snapshot (the projection at its cursor) followed by
//! the events after it is then exactly the log, and events the projection left out
//! ([`Projection::is_rejected`]) are left out of the feed too. Events that are not
//! edge events are skipped, but the range they are in still counts as covered.

use crate::projection::{Projection, classify};
use crate::store::{AnyStore, EventStore, StoreError};

/// One edge event as proxies get it.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedItem {
    pub event_id: i64,
    pub event_type: String,
    /// The stored payload: the `EdgeEvent` JSON.
    pub event: serde_json::Value,
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
