//! The HTTP JSON API (axum): `/api/v1/...` for operators, `/v1/snapshot` and
//! `/v1/events` for proxies polling instead of watching, `/v1/usage` for proxies
//! reporting usage, `/healthz` for probes.
//! Every endpoint is documented with examples in `control/API.md`.
//!
//! - **Auth.** `/api/v1/...` needs `Authorization: Bearer <admin token>`; the
//!   proxy endpoints (`/v1/...`) accept the admin token or the proxy token
//!   (`--proxy-token`), so proxies need not hold the admin token. Anything else is a 401. Tokens are
//!   compared in constant time ([`crate::token`]). `/healthz` is open.
//! - **Errors** are `{"error": {"code", "message", "problems"?}}`: 400 bad JSON or
//!   fields, 401, 404 unknown object, 409 conflict (object state or aggregate
//!   version), 422 validation (with `problems`), 503 store unavailable.
//! - **Writes** answer with the object, the last appended `event_id` and the
//!   aggregate's new `version`; 201 when a create appended, 200 otherwise. An
//!   `If-Match: <version>` header makes the write conditional on the aggregate's
//!   version (409 otherwise). `X-Tollgate-Actor` names the operator in the log
//!   (`admin:<name>`; `admin` without it).
//! - **Batches** (`POST /api/v1/batch`, the `batch` module) run many commands atomically;
//!   a failing item is a 422 naming its index.
//! - **Metrics.** `GET /metrics` (admin token) serves [`crate::metrics`]; every
//!   request is timed by route template (the `metrics` module).

mod batch;
mod claims;
mod feed;
mod metrics;
mod read;
mod tls;
mod usage;
mod write;

use crate::commands::{CommandError, Commands, Ctx, Problem, Written};
use crate::token::{Token, bearer};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::sync::Arc;

/// What every handler shares.
pub struct Api {
    pub commands: Arc<Commands>,
    pub admin: Token,
    pub proxy: Option<Token>,
    /// Grace period of `DELETE /api/v1/apps/{app}` without `grace_seconds`.
    pub default_grace_seconds: u64,
    /// For renewal points in `GET` answers and whether ACME is on.
    pub acme: crate::acme::AcmeOptions,
    /// Served on `GET /metrics` (the ACME metrics included); requests are timed here.
    pub metrics: Arc<crate::metrics::ControlMetrics>,
}

type Shared = State<Arc<Api>>;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    problems: Option<Vec<Problem>>,
    /// More fields of the `error` object (a batch names its failing item).
    fields: Vec<(&'static str, Value)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            problems: None,
            fields: Vec::new(),
        }
    }
    /// The same error with one more field in its `error` object.
    pub fn with(mut self, name: &'static str, value: Value) -> Self {
        self.fields.push((name, value));
        self
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        let message = e.to_string();
        let (status, code) = match &e {
            CommandError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            CommandError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            CommandError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            CommandError::VersionConflict { .. } => (StatusCode::CONFLICT, "version_conflict"),
            CommandError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            CommandError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        };
        let problems = match e {
            CommandError::Invalid { problems, .. } => Some(problems),
            _ => None,
        };
        ApiError {
            status,
            code,
            message,
            problems,
            fields: Vec::new(),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        CommandError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(p) = self.problems {
            error["problems"] = json!(p);
        }
        for (k, v) in self.fields {
            error[k] = v;
        }
        let mut response = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

pub type ApiResult = Result<Response, ApiError>;

/// Parses a JSON body, as a 400 with serde's message.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// `{"<name>": value, ...extra}` with status 200.
pub fn ok(name: &str, value: impl Serialize, extra: &[(&str, Value)]) -> ApiResult {
    let mut body = json!({ name: value });
    for (k, v) in extra {
        body[*k] = v.clone();
    }
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

/// The answer to a write: the value under `name`, `event_id` and `version`;
/// `created` answers 201 when the command appended.
pub fn written<T: Serialize>(name: &str, w: Written<T>, created: bool) -> ApiResult {
    let status = if created && w.changed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = json!({
        name: w.value,
        "event_id": w.event_id,
        "version": w.version,
        "changed": w.changed,
    });
    Ok((status, axum::Json(body)).into_response())
}

/// The command context of a request: actor and `If-Match` version.
pub fn ctx(headers: &HeaderMap) -> Result<Ctx, ApiError> {
    let actor = match headers.get("x-tollgate-actor").map(|v| v.to_str()) {
        None => "admin".to_string(),
        Some(Ok(name))
            if !name.is_empty()
                && name.len() <= 128
                && name.bytes().all(|b| b.is_ascii_graphic() || b == b' ') =>
        {
            format!("admin:{name}")
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "X-Tollgate-Actor must be 1-128 printable ASCII characters",
            ));
        }
    };
    let expected_version = match headers.get(header::IF_MATCH) {
        None => None,
        Some(v) => {
            let text = v.to_str().unwrap_or("").trim();
            let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
            Some(
                text.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| {
                        ApiError::bad_request("If-Match must be an aggregate version (a number)")
                    })?,
            )
        }
    };
    Ok(Ctx {
        actor,
        expected_version,
    })
}

fn presented(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
}

fn unauthorized() -> Response {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid bearer token is required (Authorization: Bearer <token>)",
    )
    .into_response()
}

async fn admin_only(State(api): Shared, req: Request, next: Next) -> Response {
    match presented(&req) {
        Some(t) if api.admin.matches(t) => next.run(req).await,
        _ => unauthorized(),
    }
}

async fn admin_or_proxy(State(api): Shared, req: Request, next: Next) -> Response {
    let ok = presented(&req).is_some_and(|t| {
        // Both are checked, so timing does not tell which token matched.
        let admin = api.admin.matches(t);
        let proxy = api.proxy.as_ref().is_some_and(|p| p.matches(t));
        admin | proxy
    });
    if ok {
        next.run(req).await
    } else {
        unauthorized()
    }
}

async fn healthz(State(api): Shared) -> Response {
    axum::Json(json!({
        "status": "ok",
        "event_id": api.commands.projection().event_id(),
    }))
    .into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

/// The whole HTTP API.
pub fn router(api: Arc<Api>) -> Router {
    let admin = read::routes()
        .merge(write::routes())
        .merge(batch::routes())
        .merge(usage::admin_routes())
        .merge(tls::routes())
        .merge(claims::routes())
        .merge(metrics::routes())
        .route_layer(middleware::from_fn_with_state(api.clone(), admin_only));
    let proxies = feed::routes()
        .merge(usage::proxy_routes())
        .route_layer(middleware::from_fn_with_state(api.clone(), admin_or_proxy));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(admin)
        .merge(proxies)
        .fallback(not_found)
        // Outermost, per route: sees the matched template and every answer (401s too).
        .layer(middleware::from_fn_with_state(api.clone(), metrics::timed))
        .with_state(api)
}
