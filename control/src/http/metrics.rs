//! `GET /metrics` (admin token): every metric of the service in Prometheus text
//! ([`crate::metrics`], the ACME ones included), and the middleware timing every
//! HTTP request by route template.
//!
//! The `route` label is the template axum matched (`/api/v1/apps/{app}`), never
//! the path itself, so app ids and hostnames stay out of the labels; a request no
//! route matched is `_unmatched`. Methods outside the standard set are `other`.

use super::{ApiError, ApiResult, Shared};
use crate::store::EventStore;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;
use std::time::Instant;

/// The `route` of requests no route matched.
pub const UNMATCHED: &str = "_unmatched";

/// Times a request to its response head (layered over every route and the fallback).
pub(super) async fn timed(State(api): Shared, req: Request, next: Next) -> Response {
    let started = Instant::now();
    // An Arc clone: the template outlives the request moved into `next`.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = method_label(req.method());
    let response = next.run(req).await;
    api.metrics.http.observe(
        route.as_ref().map_or(UNMATCHED, MatchedPath::as_str),
        method,
        status_class(response.status()),
        started.elapsed(),
    );
    response
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

async fn metrics(State(api): Shared) -> ApiResult {
    // The projection first: the head read after it is never below it.
    let projection = api.commands.projection().event_id();
    let head = match api.commands.store().last_event_id().await {
        Ok(head) => Some(head),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the log head");
            None
        }
    };
    api.metrics.log.observe(head, projection);
    let families = api.metrics.registry.gather();
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&families)
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("encoding metrics: {e}"),
            )
        })?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// `GET /metrics` (admin token).
pub(super) fn routes() -> Router<Arc<super::Api>> {
    Router::new().route("/metrics", get(metrics))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        assert_eq!(
            method_label(&Method::from_bytes(b"PURGE-ME").unwrap()),
            "other"
        );
        assert_eq!(status_class(StatusCode::UNPROCESSABLE_ENTITY), "4xx");
        assert_eq!(status_class(StatusCode::CREATED), "2xx");
        assert_eq!(status_class(StatusCode::SERVICE_UNAVAILABLE), "5xx");
    }
}
