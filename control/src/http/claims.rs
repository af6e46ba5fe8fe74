//! Hostname claim endpoints: `POST`/`GET`/`DELETE /api/v1/hostnames/{hostname}/claim`
//! and `GET /api/v1/claims`.

use super::{ApiError, ApiResult, Shared, ctx, ok, parse, written};
use crate::commands::ClaimView;
use crate::store::EventStore;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Claim {
    app: String,
}

async fn claim(
    State(api): Shared,
    headers: HeaderMap,
    Path(hostname): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req: Claim = parse(&body)?;
    let w = api
        .commands
        .claim_hostname(&ctx(&headers)?, &hostname, &req.app)
        .await?;
    written("claim", w, true)
}

async fn withdraw(
    State(api): Shared,
    headers: HeaderMap,
    Path(hostname): Path<String>,
) -> ApiResult {
    let w = api
        .commands
        .withdraw_claim(&ctx(&headers)?, &hostname)
        .await?;
    written("claim", w.map(|()| json!({ "withdrawn": true })), false)
}

async fn get_one(State(api): Shared, Path(hostname): Path<String>) -> ApiResult {
    let name = crate::ids::normalize_hostname(&hostname);
    let view = api.commands.projection().view();
    let c = view
        .config
        .hostname_claims
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("`{name}` has no claim")))?;
    let version = api.commands.store().version("hostname", &name).await?;
    ok(
        "claim",
        ClaimView::from(c),
        &[
            ("event_id", json!(view.event_id)),
            ("version", json!(version)),
        ],
    )
}

async fn list(State(api): Shared) -> ApiResult {
    let view = api.commands.projection().view();
    let all: Vec<ClaimView> = view
        .config
        .hostname_claims
        .values()
        .map(ClaimView::from)
        .collect();
    ok("claims", all, &[("event_id", json!(view.event_id))])
}

/// The routes above (admin token).
pub fn routes() -> Router<Arc<super::Api>> {
    Router::new()
        .route(
            "/api/v1/hostnames/{hostname}/claim",
            get(get_one).post(claim).delete(withdraw),
        )
        .route("/api/v1/claims", get(list))
}
