//! Admission at request head: the concurrent-stream quota, the rate rules, then the
//! budget, in that order (cheapest first). A refusal never reaches the upstream.

use super::{AppLimits, LimitEngine};
use crate::http::errors::ProxyError;
use crate::metrics::Metrics;
use tollgate_filters::budget::Meter;
use tollgate_filters::limit::{RequestKeys, Source, StreamPermit};
use tollgate_routing::{BudgetUnit, OnBackendError};

/// What an admitted request carries until it ends.
#[derive(Default)]
pub struct Admission {
    /// Holds a slot of the app's concurrent-stream quota.
    pub permit: Option<StreamPermit>,
    /// Meters the response stream against the app's budget.
    pub meter: Option<Meter>,
}

/// Checks one request against its app's limits; `app` is its metrics label.
pub async fn admit(
    limits: &AppLimits,
    engine: &LimitEngine,
    metrics: &Metrics,
    app: &str,
    keys: &RequestKeys<'_>,
) -> Result<Admission, ProxyError> {
    let permit = match &limits.quota {
        Some(q) => match q.try_acquire() {
            Some(p) => Some(p),
            None => {
                metrics.stream_quota_refused.with_label_values(&[app]).inc();
                return Err(ProxyError::TooManyStreams);
            }
        },
        None => None,
    };
    if let Some(limiter) = &limits.limiter {
        let checked = limiter.check(keys).await;
        let source = match checked.source {
            Source::Local => "local",
            Source::Cluster => "cluster",
            Source::Fallback(OnBackendError::Local) => "fallback_local",
            Source::Fallback(OnBackendError::Deny) => "fallback_deny",
            Source::Fallback(OnBackendError::Allow) => "fallback_allow",
        };
        let allowed = checked.decision.allowed;
        metrics
            .rate_limit_decisions
            .with_label_values(&[app, if allowed { "allowed" } else { "refused" }, source])
            .inc();
        if !allowed {
            return Err(ProxyError::RateLimited(Box::new(checked.decision)));
        }
    }
    let Some(account) = &limits.account else {
        return Ok(Admission {
            permit,
            meter: None,
        });
    };
    let budget = engine.budget();
    let fail_open = limits.budget_fails_open();
    let spent = match limits.unit {
        // Requests are paid for up front, exactly.
        BudgetUnit::Requests => budget.reserve(account, 1).await.map(|g| g.units == 0),
        _ => budget.remaining(account).await.map(|left| left == 0),
    };
    match spent {
        Ok(true) => {
            metrics
                .budget_exhausted
                .with_label_values(&[app, "before"])
                .inc();
            Err(ProxyError::BudgetExceeded)
        }
        Ok(false) => {
            let meter =
                (limits.unit != BudgetUnit::Requests).then(|| budget.meter(account.clone()));
            Ok(Admission { permit, meter })
        }
        Err(e) if fail_open => {
            tracing::warn!(app, error = %e, "budget store unavailable; admitting unmetered");
            Ok(Admission {
                permit,
                meter: None,
            })
        }
        Err(e) => {
            tracing::warn!(app, error = %e, "budget store unavailable; refusing");
            Err(ProxyError::LimitBackend)
        }
    }
}
