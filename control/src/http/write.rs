//! Write endpoints: each parses its body, runs one command and answers with the
//! result (see [`super::written`]).

use super::{ApiError, ApiResult, Shared, ctx, parse, written};
use crate::commands::{CreateApp, CreateKey, UploadCert};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{delete, post, put};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use tollgate_routing::{
    AuthPolicy, ClusterSpec, EndpointSpec, OidcIssuerSpec, PortPolicy, RouteSpec,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Bind {
    app: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rebind {
    from: String,
    to: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rotate {
    cert_pem: String,
    key_pem: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiHosts {
    hosts: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    grace_seconds: Option<u64>,
}

async fn create_app(State(api): Shared, headers: HeaderMap, body: Bytes) -> ApiResult {
    let req: CreateApp = parse(&body)?;
    let w = api.commands.create_app(&ctx(&headers)?, req).await?;
    written("app", w, true)
}

async fn suspend_app(State(api): Shared, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let w = api.commands.suspend_app(&ctx(&headers)?, &id).await?;
    written("app", w, false)
}

async fn resume_app(State(api): Shared, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let w = api.commands.resume_app(&ctx(&headers)?, &id).await?;
    written("app", w, false)
}

async fn set_auth(
    State(api): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let auth: Option<AuthPolicy> = parse(&body)?;
    let w = api
        .commands
        .set_app_auth(&ctx(&headers)?, &id, auth)
        .await?;
    written("app", w, false)
}

async fn delete_app(
    State(api): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    q: Result<Query<DeleteQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let grace = q.grace_seconds.unwrap_or(api.default_grace_seconds);
    let w = api.commands.delete_app(&ctx(&headers)?, &id, grace).await?;
    written("app", w, false)
}

async fn configure_upstream(
    State(api): Shared,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let mut value: Value = parse(&body)?;
    let Some(obj) = value.as_object_mut() else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    obj.entry("endpoints")
        .or_insert_with(|| Value::Array(Vec::new()));
    let cluster: ClusterSpec = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("invalid upstream settings: {e}")))?;
    let w = api
        .commands
        .configure_upstream(&ctx(&headers)?, &id, &name, cluster)
        .await?;
    written("app", w, false)
}

async fn add_instance(
    State(api): Shared,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let endpoint: EndpointSpec = parse(&body)?;
    let w = api
        .commands
        .add_instance(&ctx(&headers)?, &id, &name, endpoint)
        .await?;
    written("app", w, true)
}

async fn remove_instance(
    State(api): Shared,
    headers: HeaderMap,
    Path((id, name, address)): Path<(String, String, String)>,
) -> ApiResult {
    let w = api
        .commands
        .remove_instance(&ctx(&headers)?, &id, &name, &address)
        .await?;
    written("app", w, false)
}

async fn set_limits(
    State(api): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let limits: Value = parse(&body)?;
    let w = api
        .commands
        .set_limits(&ctx(&headers)?, &id, limits)
        .await?;
    written("app", w, false)
}

async fn create_key(
    State(api): Shared,
    headers: HeaderMap,
    Path(app): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req: CreateKey = parse(&body)?;
    let w = api.commands.create_key(&ctx(&headers)?, &app, req).await?;
    written("key", w, true)
}

async fn revoke_key(State(api): Shared, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let w = api.commands.revoke_key(&ctx(&headers)?, &id).await?;
    // The record without its hash.
    let w = w.map(|k| serde_json::json!({ "key_id": k.key_id, "app": k.app }));
    written("key", w, false)
}

async fn create_route(State(api): Shared, headers: HeaderMap, body: Bytes) -> ApiResult {
    let route: RouteSpec = parse(&body)?;
    let w = api.commands.create_route(&ctx(&headers)?, route).await?;
    written("route", w, true)
}

async fn delete_route(State(api): Shared, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let w = api.commands.delete_route(&ctx(&headers)?, &id).await?;
    written("route", w, false)
}

async fn bind_hostname(
    State(api): Shared,
    headers: HeaderMap,
    Path(hostname): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req: Bind = parse(&body)?;
    let w = api
        .commands
        .bind_hostname(&ctx(&headers)?, &hostname, &req.app)
        .await?;
    written("hostname", w, true)
}

async fn rebind_hostname(
    State(api): Shared,
    headers: HeaderMap,
    Path(hostname): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req: Rebind = parse(&body)?;
    let w = api
        .commands
        .rebind_hostname(&ctx(&headers)?, &hostname, &req.from, &req.to)
        .await?;
    written("hostname", w, false)
}

async fn unbind_hostname(
    State(api): Shared,
    headers: HeaderMap,
    Path(hostname): Path<String>,
) -> ApiResult {
    let w = api
        .commands
        .unbind_hostname(&ctx(&headers)?, &hostname)
        .await?;
    written("hostname", w, false)
}

async fn upload_certificate(State(api): Shared, headers: HeaderMap, body: Bytes) -> ApiResult {
    let req: UploadCert = parse(&body)?;
    let w = api
        .commands
        .upload_certificate(&ctx(&headers)?, req)
        .await?;
    written("certificate", w, true)
}

async fn rotate_certificate(
    State(api): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req: Rotate = parse(&body)?;
    let w = api
        .commands
        .rotate_certificate(&ctx(&headers)?, &id, req.cert_pem, req.key_pem)
        .await?;
    written("certificate", w, false)
}

async fn remove_certificate(
    State(api): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let w = api
        .commands
        .remove_certificate(&ctx(&headers)?, &id)
        .await?;
    written("certificate", w, false)
}

async fn configure_issuer(
    State(api): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let mut value: Value = parse(&body)?;
    let Some(obj) = value.as_object_mut() else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    match obj.get("name") {
        None => {
            obj.insert("name".into(), Value::String(name.clone()));
        }
        Some(Value::String(n)) if *n == name => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "`name` in the body differs from the name in the path",
            ));
        }
    }
    let issuer: OidcIssuerSpec = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("invalid issuer: {e}")))?;
    let w = api
        .commands
        .configure_issuer(&ctx(&headers)?, issuer)
        .await?;
    written("issuer", w, true)
}

async fn remove_issuer(
    State(api): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    let w = api.commands.remove_issuer(&ctx(&headers)?, &name).await?;
    written("issuer", w, false)
}

async fn set_api_hosts(State(api): Shared, headers: HeaderMap, body: Bytes) -> ApiResult {
    let req: ApiHosts = parse(&body)?;
    let w = api
        .commands
        .set_api_hosts(&ctx(&headers)?, req.hosts)
        .await?;
    written("api_hosts", w, false)
}

async fn set_port_policy(State(api): Shared, headers: HeaderMap, body: Bytes) -> ApiResult {
    let policy: PortPolicy = parse(&body)?;
    let w = api
        .commands
        .set_port_policy(&ctx(&headers)?, policy)
        .await?;
    written("port_policy", w, false)
}

pub(super) fn routes() -> Router<Arc<super::Api>> {
    Router::new()
        .route("/api/v1/apps", post(create_app))
        .route("/api/v1/apps/{app}", delete(delete_app))
        .route("/api/v1/apps/{app}/suspend", post(suspend_app))
        .route("/api/v1/apps/{app}/resume", post(resume_app))
        .route("/api/v1/apps/{app}/auth", put(set_auth))
        .route("/api/v1/apps/{app}/limits", put(set_limits))
        .route("/api/v1/apps/{app}/keys", post(create_key))
        .route(
            "/api/v1/apps/{app}/upstreams/{name}",
            put(configure_upstream),
        )
        .route(
            "/api/v1/apps/{app}/upstreams/{name}/instances",
            post(add_instance),
        )
        .route(
            "/api/v1/apps/{app}/upstreams/{name}/instances/{address}",
            delete(remove_instance),
        )
        .route("/api/v1/routes", post(create_route))
        .route("/api/v1/routes/{id}", delete(delete_route))
        .route(
            "/api/v1/hostnames/{hostname}",
            put(bind_hostname).delete(unbind_hostname),
        )
        .route("/api/v1/hostnames/{hostname}/rebind", post(rebind_hostname))
        .route("/api/v1/certificates", post(upload_certificate))
        .route(
            "/api/v1/certificates/{id}",
            put(rotate_certificate).delete(remove_certificate),
        )
        .route("/api/v1/keys/{key_id}", delete(revoke_key))
        .route(
            "/api/v1/issuers/{name}",
            put(configure_issuer).delete(remove_issuer),
        )
        .route("/api/v1/platform/api-hosts", put(set_api_hosts))
        .route("/api/v1/platform/port-policy", put(set_port_policy))
}
