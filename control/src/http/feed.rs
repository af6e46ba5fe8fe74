//! The polling fallback for proxies:
//!
//! - `GET /v1/snapshot` → `{"event_id": N, "config": EdgeConfig, "last_edge":
//!   {"event_id", "fingerprint"}}`: the projection at its cursor and its last edge
//!   event (the proxy's marker from then on; event 0 for none).
//! - `GET /v1/events?after=<id>&limit=<n>[&edge_id=<id>&edge_fp=<fingerprint>]` →
//!   `{"events": [{"event_id", "event_type", "event", "fingerprint"}],
//!   "last_event_id": N}`: edge events with id > `after` (at most `limit`, default
//!   [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]) up to the projection's cursor, in id
//!   order. `last_event_id` is the id the answer covers: pass it as the next
//!   `after`. An `after` beyond the end of the log (the proxy followed another
//!   database) is a 410 `cursor_ahead`: fetch a snapshot. With the proxy's marker
//!   (`edge_id`, `edge_fp`: its last edge event) the events are those after the
//!   marker, and a marker the log does not hold (restored or replaced) is a 410
//!   `log_diverged` ([`crate::feed::resume_point`]).

use super::{ApiError, ApiResult, Shared};
use crate::feed::{Unresumable, read_range, resume_point};
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
use tollgate_routing::EdgeMarker;

pub const DEFAULT_LIMIT: usize = 500;
pub const MAX_LIMIT: usize = 5000;

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after: i64,
    limit: Option<usize>,
    /// The proxy's last edge event, when it sends one.
    edge_id: Option<i64>,
    edge_fp: Option<String>,
}

async fn snapshot(State(api): Shared) -> ApiResult {
    let view = api.commands.projection().view();
    api.metrics.feed.snapshot_requested();
    let last_edge = view.last_edge.clone().unwrap_or_default();
    Ok(axum::Json(json!({
        "event_id": view.event_id,
        "config": view.config,
        "last_edge": last_edge,
    }))
    .into_response())
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
    let marker = match (q.edge_id, q.edge_fp) {
        (Some(id), _) if id < 0 => {
            return Err(ApiError::bad_request("`edge_id` must be 0 or more"));
        }
        (Some(event_id), fp) => Some(EdgeMarker {
            event_id,
            fingerprint: fp.unwrap_or_default(),
        }),
        (None, Some(_)) => return Err(ApiError::bad_request("`edge_fp` needs `edge_id`")),
        (None, None) => None,
    };
    let store = api.commands.store();
    let projection = api.commands.projection();
    let upto = projection.event_id();
    // The store's head is only needed past the projection's (another replica's append).
    let probe = marker.as_ref().map_or(q.after, |m| m.event_id);
    let head = if probe > upto {
        store.last_event_id().await?
    } else {
        upto
    };
    let from = match resume_point(store, q.after, marker.as_ref(), head).await? {
        Ok(from) => from,
        Err(u) => {
            let message = match u {
                Unresumable::CursorAhead => format!(
                    "event {} is beyond the end of the log; fetch /v1/snapshot",
                    probe
                ),
                Unresumable::LogDiverged => format!(
                    "event {} is not in the log as the proxy knew it (restored or replaced); \
                     fetch /v1/snapshot",
                    probe
                ),
            };
            return Err(ApiError::new(StatusCode::GONE, u.code(), message));
        }
    };
    let page = read_range(store, projection, from, upto, limit).await?;
    api.metrics.feed.polled(upto - q.after);
    let events: Vec<_> = page
        .items
        .into_iter()
        .map(|i| {
            json!({
                "event_id": i.event_id,
                "event_type": i.event_type,
                "event": i.event,
                "fingerprint": i.fingerprint,
            })
        })
        .collect();
    Ok(axum::Json(json!({ "events": events, "last_event_id": page.covered })).into_response())
}

pub(super) fn routes() -> Router<Arc<super::Api>> {
    Router::new()
        .route("/v1/snapshot", get(snapshot))
        .route("/v1/events", get(events))
}
