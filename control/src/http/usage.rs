//! Usage endpoints (see [`crate::usage`] and `control/API.md`, "Usage"):
//!
//! - `POST /v1/usage` (proxy or admin token): store a [`UsageBatch`] once.
//!   200 `{"duplicate": false, "records": n}` when stored, 200
//!   `{"duplicate": true}` for a replay, 400 malformed JSON, 422 a batch that
//!   does not pass [`UsageBatch::check`], 409 a replay with other records.
//! - `GET /api/v1/apps/{app}/usage?period=D` or `?from=D1&to=D2` (admin token):
//!   totals per period and over the range, summed across nodes.

use super::{ApiError, ApiResult, Shared, parse};
use crate::commands::CommandError;
use crate::usage::{Period, PeriodUsage, Recorded, UsageBatch, UsageStore, is_app_id};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// Longest range one totals query may cover, in days.
pub const MAX_RANGE_DAYS: i64 = 366;

async fn post_usage(State(api): Shared, body: Bytes) -> ApiResult {
    let batch: UsageBatch = parse(&body)?;
    if let Err(problems) = crate::usage::check(&batch) {
        return Err(CommandError::Invalid {
            message: "usage batch refused; nothing was stored".into(),
            problems,
        }
        .into());
    }
    match api.commands.store().record_usage(&batch).await? {
        Recorded::Stored => Ok(axum::Json(
            json!({ "duplicate": false, "records": batch.records.len() }),
        )
        .into_response()),
        Recorded::Duplicate => Ok(axum::Json(json!({ "duplicate": true })).into_response()),
        Recorded::Mismatch => Err(ApiError::new(
            StatusCode::CONFLICT,
            "batch_conflict",
            format!(
                "batch {} of node `{}` was stored before with other records; nothing was stored \
                 (is node_id shared by two proxies?)",
                batch.batch_seq, batch.node_id
            ),
        )),
    }
}

#[derive(Deserialize)]
struct RangeQuery {
    period: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

fn period(name: &str, text: &str) -> Result<Period, ApiError> {
    Period::parse(text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "`{name}`: `{text}` is not a date (YYYY-MM-DD, UTC)"
        ))
    })
}

/// `period=D` or `from=D1&to=D2`, checked.
fn range(q: RangeQuery) -> Result<(Period, Period), ApiError> {
    let (from, to) = match (q.period, q.from, q.to) {
        (Some(p), None, None) => {
            let p = period("period", &p)?;
            (p, p)
        }
        (None, Some(from), Some(to)) => (period("from", &from)?, period("to", &to)?),
        _ => {
            return Err(ApiError::bad_request(
                "give `period=YYYY-MM-DD`, or both `from` and `to` (inclusive)",
            ));
        }
    };
    if to < from {
        return Err(ApiError::bad_request(format!(
            "`to` ({to}) is before `from` ({from})"
        )));
    }
    if to.unix_days() - from.unix_days() >= MAX_RANGE_DAYS {
        return Err(ApiError::bad_request(format!(
            "a range covers at most {MAX_RANGE_DAYS} days"
        )));
    }
    Ok((from, to))
}

async fn app_usage(
    State(api): Shared,
    Path(app): Path<String>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if !is_app_id(&app) {
        return Err(ApiError::bad_request(format!("`{app}` is not an app id")));
    }
    let (from, to) = range(q)?;
    let periods = api.commands.store().usage(&app, from, to).await?;
    let mut totals = PeriodUsage::default();
    for p in &periods {
        // Each sum is below 2^63 (the store's SUM would have failed otherwise);
        // saturate rather than wrap if the range's total is not.
        totals.requests = totals.requests.saturating_add(p.requests);
        totals.bytes_in = totals.bytes_in.saturating_add(p.bytes_in);
        totals.bytes_out = totals.bytes_out.saturating_add(p.bytes_out);
        totals.units = totals.units.saturating_add(p.units);
    }
    Ok(axum::Json(json!({
        "app": app,
        "from": from.to_string(),
        "to": to.to_string(),
        "totals": {
            "requests": totals.requests,
            "bytes_in": totals.bytes_in,
            "bytes_out": totals.bytes_out,
            "units": totals.units,
        },
        "periods": periods,
    }))
    .into_response())
}

/// `POST /v1/usage`, for the proxy-token router.
pub(super) fn proxy_routes() -> Router<Arc<super::Api>> {
    Router::new().route("/v1/usage", post(post_usage))
}

/// `GET /api/v1/apps/{app}/usage`, for the admin router.
pub(super) fn admin_routes() -> Router<Arc<super::Api>> {
    Router::new().route("/api/v1/apps/{app}/usage", get(app_usage))
}
