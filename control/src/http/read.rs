//! Read endpoints: served from the projection's current view. Lists carry the
//! `event_id` the view is current at; single objects also their aggregate
//! `version` (for `If-Match`). Certificates never show their key, keys never their
//! hash or secret.

use super::{ApiError, ApiResult, Shared, ok};
use crate::commands::{app_view, cert_view};
use crate::store::EventStore;
use axum::Router;
use axum::extract::{Path, Query};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use tollgate_routing::{ApiKeySpec, KeyKind};

#[derive(Debug, Deserialize)]
pub(super) struct AppFilter {
    app: Option<String>,
}

/// An API key as the API lists it.
#[derive(Debug, Serialize)]
struct KeyView<'a> {
    key_id: &'a str,
    app: &'a str,
    kind: KeyKind,
    scopes: &'a [String],
    expires_at: Option<i64>,
    allowed_origins: &'a [String],
}

fn key_view(k: &ApiKeySpec) -> KeyView<'_> {
    KeyView {
        key_id: &k.key_id,
        app: &k.app,
        kind: k.kind,
        scopes: &k.scopes,
        expires_at: k.expires_at,
        allowed_origins: &k.allowed_origins,
    }
}

fn filter(
    q: Result<Query<AppFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Option<String>, ApiError> {
    q.map(|Query(f)| f.app)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

async fn version(api: &super::Api, kind: &str, id: &str) -> Result<i64, ApiError> {
    Ok(api.commands.store().version(kind, id).await?)
}

async fn config_version(axum::extract::State(api): Shared) -> ApiResult {
    let last = api.commands.store().last_event_id().await?;
    ok(
        "event_id",
        api.commands.projection().event_id(),
        &[("store_last_event_id", json!(last))],
    )
}

async fn list_apps(axum::extract::State(api): Shared) -> ApiResult {
    let view = api.commands.projection().view();
    let apps: Vec<_> = view
        .config
        .apps
        .values()
        .map(|a| app_view(&view.config, a))
        .collect();
    ok("apps", apps, &[("event_id", json!(view.event_id))])
}

async fn get_app(axum::extract::State(api): Shared, Path(id): Path<String>) -> ApiResult {
    let view = api.commands.projection().view();
    let app = view
        .config
        .apps
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no app `{id}`")))?;
    let v = version(&api, "app", &id).await?;
    ok(
        "app",
        app_view(&view.config, app),
        &[("event_id", json!(view.event_id)), ("version", json!(v))],
    )
}

async fn list_routes(
    axum::extract::State(api): Shared,
    q: Result<Query<AppFilter>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let app = filter(q)?;
    let view = api.commands.projection().view();
    let routes: Vec<_> = view
        .config
        .routes
        .values()
        .filter(|r| app.as_ref().is_none_or(|a| *a == r.app))
        .collect();
    ok("routes", routes, &[("event_id", json!(view.event_id))])
}

async fn get_route(axum::extract::State(api): Shared, Path(id): Path<String>) -> ApiResult {
    let view = api.commands.projection().view();
    let route = view
        .config
        .routes
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no route `{id}`")))?;
    let v = version(&api, "route", &id).await?;
    ok(
        "route",
        route,
        &[("event_id", json!(view.event_id)), ("version", json!(v))],
    )
}

async fn list_hostnames(
    axum::extract::State(api): Shared,
    q: Result<Query<AppFilter>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let app = filter(q)?;
    let view = api.commands.projection().view();
    let list: Vec<_> = view
        .config
        .hostnames
        .iter()
        .filter(|(_, a)| app.as_ref().is_none_or(|f| f == *a))
        .map(|(h, a)| json!({ "hostname": h, "app": a }))
        .collect();
    ok("hostnames", list, &[("event_id", json!(view.event_id))])
}

async fn get_hostname(axum::extract::State(api): Shared, Path(name): Path<String>) -> ApiResult {
    let name = crate::ids::normalize_hostname(&name);
    let view = api.commands.projection().view();
    let app = view
        .config
        .hostnames
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("hostname `{name}` is not bound")))?;
    let v = version(&api, "hostname", &name).await?;
    ok(
        "hostname",
        json!({ "hostname": name, "app": app }),
        &[("event_id", json!(view.event_id)), ("version", json!(v))],
    )
}

async fn list_certificates(axum::extract::State(api): Shared) -> ApiResult {
    let view = api.commands.projection().view();
    // Parsing every certificate is CPU work: keep it off the async workers.
    let certs: Vec<_> = view.config.certificates.values().cloned().collect();
    let list = tokio::task::spawn_blocking(move || certs.iter().map(cert_view).collect::<Vec<_>>())
        .await
        .map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                e.to_string(),
            )
        })?;
    ok("certificates", list, &[("event_id", json!(view.event_id))])
}

async fn get_certificate(axum::extract::State(api): Shared, Path(id): Path<String>) -> ApiResult {
    let view = api.commands.projection().view();
    let cert = view
        .config
        .certificates
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no certificate `{id}`")))?;
    let v = version(&api, "certificate", &id).await?;
    ok(
        "certificate",
        cert_view(cert),
        &[("event_id", json!(view.event_id)), ("version", json!(v))],
    )
}

async fn list_keys(
    axum::extract::State(api): Shared,
    q: Result<Query<AppFilter>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let app = filter(q)?;
    list_keys_of(&api, app).await
}

async fn list_app_keys(axum::extract::State(api): Shared, Path(app): Path<String>) -> ApiResult {
    if !api
        .commands
        .projection()
        .view()
        .config
        .apps
        .contains_key(&app)
    {
        return Err(ApiError::not_found(format!("no app `{app}`")));
    }
    list_keys_of(&api, Some(app)).await
}

async fn list_keys_of(api: &super::Api, app: Option<String>) -> ApiResult {
    let view = api.commands.projection().view();
    let config = &view.config;
    // An app's keys through the index: listing them costs what the app holds.
    let keys: Vec<_> = match &app {
        Some(app) => config
            .keys_of(app)
            .iter()
            .filter_map(|id| config.api_keys.get(id))
            .map(|k| key_view(k))
            .collect(),
        None => config.api_keys.values().map(|k| key_view(k)).collect(),
    };
    ok("keys", keys, &[("event_id", json!(view.event_id))])
}

async fn get_key(axum::extract::State(api): Shared, Path(id): Path<String>) -> ApiResult {
    let view = api.commands.projection().view();
    let key = view
        .config
        .api_keys
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no key `{id}`")))?;
    let v = version(&api, "api_key", &id).await?;
    ok(
        "key",
        key_view(key),
        &[("event_id", json!(view.event_id)), ("version", json!(v))],
    )
}

async fn list_issuers(axum::extract::State(api): Shared) -> ApiResult {
    let view = api.commands.projection().view();
    let list: Vec<_> = view.config.oidc_issuers.values().collect();
    ok("issuers", list, &[("event_id", json!(view.event_id))])
}

async fn get_platform(axum::extract::State(api): Shared) -> ApiResult {
    let view = api.commands.projection().view();
    ok(
        "platform",
        json!({
            "api_hosts": view.config.api_hosts,
            "port_policy": view.config.port_policy,
        }),
        &[("event_id", json!(view.event_id))],
    )
}

pub(super) fn routes() -> Router<Arc<super::Api>> {
    Router::new()
        .route("/api/v1/version", get(config_version))
        .route("/api/v1/apps", get(list_apps))
        .route("/api/v1/apps/{app}", get(get_app))
        .route("/api/v1/apps/{app}/keys", get(list_app_keys))
        .route("/api/v1/routes", get(list_routes))
        .route("/api/v1/routes/{id}", get(get_route))
        .route("/api/v1/hostnames", get(list_hostnames))
        .route("/api/v1/hostnames/{hostname}", get(get_hostname))
        .route("/api/v1/certificates", get(list_certificates))
        .route("/api/v1/certificates/{id}", get(get_certificate))
        .route("/api/v1/keys", get(list_keys))
        .route("/api/v1/keys/{key_id}", get(get_key))
        .route("/api/v1/issuers", get(list_issuers))
        .route("/api/v1/platform", get(get_platform))
}
