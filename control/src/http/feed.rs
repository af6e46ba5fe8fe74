//! The polling fallback for proxies:
//!
//! - `GET /v1/snapshot` → `{"event_id": N, "config": EdgeConfig}`: the projection
//!   at its cursor.
//! - `GET /v1/events?after=<id>&limit=<n>` → `{"events": [{"event_id",
//!   "event_type", "event"}], "last_event_id": N}`: edge events with id > `after`
//!   (at most `limit`, default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]) up to the
//!   projection's cursor, in id order. `last_event_id` is the id the answer covers:
//!   pass it as the next `after`. An `after` beyond the end of the log (the proxy
//!   followed another database) is a 410: fetch a snapshot.

use super::{ApiError, ApiResult, Shared};
use crate::feed::read_range;
use crate::store::EventStore;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

pub const DEFAULT_LIMIT: usize = 500;
pub const MAX_LIMIT: usize = 5000;

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after: i64,
    limit: Option<usize>,
}

async fn snapshot(State(api): Shared) -> ApiResult {
    let view = api.commands.projection().view();
    api.metrics.feed.snapshot_requested();
    Ok(axum::Json(json!({ "event_id": view.event_id, "config": view.config })).into_response())
}

async fn events(State(api): Shared, q: Result<Query<EventsQuery>, QueryRejection>) -> ApiResult {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if q.after < 0 {
        return Err(ApiError::bad_request("`after` must be 0 or more"));
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "`limit` must be 1-{MAX_LIMIT}"
        )));
    }
    let store = api.commands.store();
    let projection = api.commands.projection();
    let upto = projection.event_id();
    if q.after > upto && q.after > store.last_event_id().await? {
        return Err(ApiError::new(
            StatusCode::GONE,
            "cursor_ahead",
            format!(
                "event {} is beyond the end of the log; fetch /v1/snapshot",
                q.after
            ),
        ));
    }
    let page = read_range(store, projection, q.after, upto, limit).await?;
    api.metrics.feed.polled(upto - q.after);
    let events: Vec<_> = page
        .items
        .into_iter()
        .map(|i| json!({ "event_id": i.event_id, "event_type": i.event_type, "event": i.event }))
        .collect();
    Ok(axum::Json(json!({ "events": events, "last_event_id": page.covered })).into_response())
}

pub(super) fn routes() -> Router<Arc<super::Api>> {
    Router::new()
        .route("/v1/snapshot", get(snapshot))
        .route("/v1/events", get(events))
}
