//! `POST /api/v1/batch`: a list of commands applied atomically
//! ([`Commands::batch`](crate::commands::Commands::batch)).
//!
//! The body is `{"commands": [{"op": ..., ...}, ...]}`, at most
//! [`MAX_BATCH_ITEMS`] commands and [`MAX_BATCH_BYTES`] bytes (413 beyond). The
//! answer lists each item's result (what the single endpoint would answer, plus
//! its event ids) and the batch's event id range. A failing item makes the whole
//! batch a 422 `batch_item_failed` whose `error` names the item's `index`, its
//! `op` and what the single endpoint would have answered (`item`); nothing is
//! written. A store failure is a 503, a concurrent writer in another process a
//! 409, as for single commands.

use super::{ApiError, ApiResult, Shared, ctx};
use crate::commands::{BatchEntry, BatchError, MAX_BATCH_BYTES, MAX_BATCH_ITEMS};
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    commands: Vec<Value>,
}

fn too_large(message: String) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
}

fn bytes_cap() -> String {
    format!("a batch body may have at most {MAX_BATCH_BYTES} bytes")
}

/// The 422 naming item `index`, with what its single endpoint would answer.
fn item_failed(message: String, index: usize, op: &str, e: ApiError) -> ApiError {
    let mut item = json!({ "status": e.status.as_u16(), "code": e.code, "message": e.message });
    if let Some(p) = e.problems {
        item["problems"] = json!(p);
    }
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "batch_item_failed",
        message,
    )
    .with("index", json!(index))
    .with("op", json!(op))
    .with("item", item)
}

async fn batch(State(api): Shared, headers: HeaderMap, body: Body) -> ApiResult {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BATCH_BYTES) {
        return Err(too_large(bytes_cap()));
    }
    let bytes = axum::body::to_bytes(body, MAX_BATCH_BYTES)
        .await
        .map_err(|_| too_large(bytes_cap()))?;
    let ctx = ctx(&headers)?;
    if ctx.expected_version.is_some() {
        return Err(ApiError::bad_request(
            "a batch takes `if_match` per command, not an If-Match header",
        ));
    }
    let body: BatchBody = super::parse(&bytes)?;
    if body.commands.len() > MAX_BATCH_ITEMS {
        return Err(too_large(format!(
            "a batch may have at most {MAX_BATCH_ITEMS} commands (got {})",
            body.commands.len()
        )));
    }
    let mut entries = Vec::with_capacity(body.commands.len());
    for (index, item) in body.commands.into_iter().enumerate() {
        let op = item
            .get("op")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        let entry = BatchEntry::from_json(item).map_err(|e| {
            item_failed(format!("command {index} ({op}): {e}"), index, &op, e.into())
        })?;
        entries.push(entry);
    }
    let written = api
        .commands
        .batch(&ctx.actor, entries, api.default_grace_seconds)
        .await
        .map_err(|e| match e {
            BatchError::Item { index, op, error } => {
                let message = format!("command {index} ({op}): {error}");
                item_failed(message, index, op, error.into())
            }
            BatchError::Batch(error) => error.into(),
        })?;
    let items: Vec<Value> = written
        .items
        .into_iter()
        .enumerate()
        .map(|(index, i)| {
            let mut v = json!({
                "index": index,
                "op": i.op,
                "status": i.status,
                "version": i.version,
                "changed": i.changed,
                "event_ids": i.event_ids.map(|(a, b)| [a, b]),
            });
            v[i.name] = i.value;
            v
        })
        .collect();
    let body = json!({
        "items": items,
        "event_ids": written.event_ids.map(|(a, b)| [a, b]),
        "event_id": written.event_id,
        "changed": written.event_ids.is_some(),
    });
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

pub(super) fn routes() -> Router<Arc<super::Api>> {
    Router::new().route(
        "/api/v1/batch",
        // The cap is checked by the handler, which answers with the API's errors.
        post(batch).layer(DefaultBodyLimit::disable()),
    )
}
