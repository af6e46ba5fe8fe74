//! Managed TLS endpoints: `PUT`/`DELETE`/`GET /api/v1/hostnames/{hostname}/tls`
//! and `GET /api/v1/tls` (every managed hostname). The ACME metrics are on
//! `GET /metrics` (the `metrics` module).

use super::{ApiError, ApiResult, Shared, ctx, ok, parse, written};
use crate::acme::schedule::renewal_at;
use crate::commands::{ManageTls, TlsView, tls_view};
use crate::store::EventStore;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use serde_json::json;
use std::sync::Arc;
use tollgate_routing::{EdgeConfig, ManagedTls};

fn view(api: &super::Api, config: &EdgeConfig, m: &ManagedTls) -> TlsView {
    tls_view(config, m, renewal_at(m, &api.acme))
}

async fn manage(
    State(api): Shared,
    headers: HeaderMap,
    Path(hostname): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req: ManageTls = if body.iter().all(u8::is_ascii_whitespace) {
        ManageTls::default()
    } else {
        parse(&body)?
    };
    let w = api
        .commands
        .manage_tls(&ctx(&headers)?, &hostname, req)
        .await?;
    let snapshot = api.commands.projection().view();
    let w = w.map(|m| view(&api, &snapshot.config, &m));
    let mut resp = written("tls", w, true)?;
    if api.acme.directory.is_none() {
        // Accepted, but nothing will order it until ACME is configured.
        resp.headers_mut().insert(
            "warning",
            axum::http::HeaderValue::from_static(
                "199 tollgate \"ACME is not configured (--acme-directory); the hostname waits in requested\"",
            ),
        );
    }
    Ok(resp)
}

async fn unmanage(
    State(api): Shared,
    headers: HeaderMap,
    Path(hostname): Path<String>,
) -> ApiResult {
    let w = api
        .commands
        .unmanage_tls(&ctx(&headers)?, &hostname)
        .await?;
    written("tls", w.map(|()| json!({ "managed": false })), false)
}

async fn get_one(State(api): Shared, Path(hostname): Path<String>) -> ApiResult {
    let name = crate::ids::normalize_hostname(&hostname);
    let snapshot = api.commands.projection().view();
    let m = snapshot
        .config
        .managed_tls
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("hostname `{name}` is not managed")))?;
    let version = api.commands.store().version("tls", &name).await?;
    ok(
        "tls",
        view(&api, &snapshot.config, m),
        &[
            ("event_id", json!(snapshot.event_id)),
            ("version", json!(version)),
        ],
    )
}

async fn list(State(api): Shared) -> ApiResult {
    let snapshot = api.commands.projection().view();
    let all: Vec<TlsView> = snapshot
        .config
        .managed_tls
        .values()
        .map(|m| view(&api, &snapshot.config, m))
        .collect();
    ok("tls", all, &[("event_id", json!(snapshot.event_id))])
}

/// The routes above (admin token).
pub fn routes() -> Router<Arc<super::Api>> {
    Router::new()
        .route(
            "/api/v1/hostnames/{hostname}/tls",
            get(get_one).put(manage).delete(unmanage),
        )
        .route("/api/v1/tls", get(list))
}
