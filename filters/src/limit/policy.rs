//! An app's rate limits with their scope and backend-failure policy applied.
//!
//! Cluster-scoped checks go to Redis; when Redis fails or is slower than its timeout
//! the app's `on_backend_error` decides: `local` enforces the same windows on this
//! proxy alone (so a fleet of N admits up to N× the limit meanwhile), `deny` refuses
//! (fail closed, `Retry-After: 1`), `allow` admits. Every answer says in [`Source`]
//! where it came from so the proxy can count fallbacks; the limiter itself logs a
//! warning at most once a second, so a Redis outage does not flood the log.

use super::{BackendError, ClusterLimiter, Decision, LocalLimiter, RequestKeys, Window};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tollgate_routing::{LimitScope, LimitsSpec, OnBackendError};

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The app is limited per proxy.
    Local,
    /// Redis answered.
    Cluster,
    /// Redis failed; the policy named here decided.
    Fallback(OnBackendError),
}

/// A decision and its provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub decision: Decision,
    pub source: Source,
    /// Why Redis was not used, for fallbacks.
    pub error: Option<BackendError>,
}

/// One app's rate limits, built from its [`LimitsSpec`]; rebuild on a config change.
pub struct AppLimiter {
    app: Arc<str>,
    windows: Vec<Window>,
    local: Arc<LocalLimiter>,
    cluster: Option<ClusterLimiter>,
    scope: LimitScope,
    on_error: OnBackendError,
    born: Instant,
    last_warn_ms: AtomicU64,
}

impl AppLimiter {
    /// `cluster` is the shared Redis limiter; a cluster-scoped app without one answers
    /// every check by its `on_backend_error` policy.
    pub fn new(app: &str, spec: &LimitsSpec, cluster: Option<ClusterLimiter>) -> Self {
        let windows = Window::compile(&spec.rate);
        AppLimiter {
            app: app.into(),
            local: Arc::new(LocalLimiter::new(windows.clone())),
            windows,
            cluster,
            scope: spec.scope,
            on_error: spec.on_backend_error,
            born: Instant::now(),
            last_warn_ms: AtomicU64::new(0),
        }
    }

    /// Checks and charges one request; the `app` key is always this limiter's app.
    pub async fn check(&self, keys: &RequestKeys<'_>) -> Checked {
        let keys = &RequestKeys {
            app: &self.app,
            ..*keys
        };
        if self.scope == LimitScope::Local || self.windows.is_empty() {
            return Checked {
                decision: self.local.check(keys),
                source: Source::Local,
                error: None,
            };
        }
        let result = match &self.cluster {
            Some(c) => c.check(&self.app, &self.windows, keys).await,
            None => Err(BackendError::Config("no Redis configured".into())),
        };
        match result {
            Ok(decision) => Checked {
                decision,
                source: Source::Cluster,
                error: None,
            },
            Err(e) => {
                self.warn(&e);
                let decision = match self.on_error {
                    OnBackendError::Local => self.local.check(keys),
                    OnBackendError::Deny => Decision::refused(Duration::from_secs(1)),
                    OnBackendError::Allow => Decision::unlimited(),
                };
                Checked {
                    decision,
                    source: Source::Fallback(self.on_error),
                    error: Some(e),
                }
            }
        }
    }

    /// The per-proxy limiter (local scope and the `local` fallback); give it to
    /// [`super::spawn_housekeeping`] so idle keys are dropped.
    pub fn local(&self) -> &Arc<LocalLimiter> {
        &self.local
    }

    pub fn scope(&self) -> LimitScope {
        self.scope
    }

    /// The policy applied when Redis fails.
    pub fn on_backend_error(&self) -> OnBackendError {
        self.on_error
    }

    fn warn(&self, e: &BackendError) {
        let now = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= 1000;
        if due
            && self
                .last_warn_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(app = %self.app, policy = ?self.on_error, error = %e,
                "cluster rate limit unavailable; applying on_backend_error policy");
        }
    }
}
