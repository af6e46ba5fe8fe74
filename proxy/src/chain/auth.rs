//! Credentials: runs the route's auth policy (API key or OIDC access token), counts
//! the result per app, refuses with 401 or 403, and passes the verified identity to
//! the upstream in the identity headers.

use super::{HeadFilter, Outcome, RequestCx, Step};
use crate::auth::{self, AuthFailure, Identity, Verdict};
use crate::clock::now_unix;
use crate::http::errors::ProxyError;
use crate::trace::TraceSpan;
use http::HeaderMap;
use prometheus::IntCounter;
use std::sync::OnceLock;
use tollgate_routing::AuthPolicy;

#[derive(Debug)]
pub struct Auth {
    app: String,
    policy: AuthPolicy,
    /// The `ok_api_key` and `ok_token` series of this route's app label (the plan's,
    /// fixed for the plan's life), resolved on first use: a request hashes no labels.
    ok: [OnceLock<IntCounter>; 2],
}

impl Auth {
    pub fn new(app: &str, policy: AuthPolicy) -> Self {
        Auth {
            app: app.to_string(),
            policy,
            ok: Default::default(),
        }
    }

    fn refusal(&self, failure: AuthFailure) -> ProxyError {
        tracing::debug!(
            app = %self.app,
            reason = failure.reason(),
            "request refused by auth policy"
        );
        if failure.is_forbidden() {
            ProxyError::Forbidden {
                scope: failure == AuthFailure::InsufficientScope,
            }
        } else {
            ProxyError::Unauthenticated {
                invalid: failure != AuthFailure::Missing,
            }
        }
    }

    /// Counts the verdict, records it on the span and keeps the identity.
    fn conclude(
        &self,
        cx: &mut RequestCx<'_>,
        mut span: TraceSpan,
        result: Result<Identity, AuthFailure>,
    ) -> Outcome {
        let (label, ok) = match &result {
            Ok(Identity::Key(_)) => ("ok_api_key", Some(&self.ok[0])),
            Ok(_) => ("ok_token", Some(&self.ok[1])),
            Err(f) => (f.reason(), None),
        };
        // The method and the verdict only: never a credential or who it names.
        if let Ok(id) = &result {
            span.set("tollgate.auth.method", id.method());
        }
        span.set("tollgate.auth.result", label);
        drop(span);
        let results = &cx.shared.metrics.auth_results;
        let app = &*cx.plan.series.app;
        match ok {
            Some(series) => series
                .get_or_init(|| results.with_label_values(&[app, label]))
                .inc(),
            None => results.with_label_values(&[app, label]).inc(),
        }
        cx.identity = Some(result.map_err(|f| self.refusal(f))?);
        Ok(None)
    }
}

impl HeadFilter for Auth {
    /// Settled without waiting (no boxed future) for an API key and for a token its
    /// issuer has verified before; a token seen for the first time waits for its
    /// issuer's keys.
    fn on_request<'a>(
        &'a self,
        head: &'a mut http::request::Parts,
        cx: &'a mut RequestCx<'_>,
    ) -> Step<'a> {
        let span = cx.trace.child("auth");
        let head: &'a http::request::Parts = head;
        let now = now_unix();
        let verdict = auth::authenticate(
            &cx.state.auth,
            &self.policy,
            &self.app,
            &head.headers,
            &cx.conn.credentials,
            now,
        );
        match verdict {
            Verdict::Done(result) => Step::Ready(self.conclude(cx, span, result)),
            Verdict::Unverified { token, digest } => Step::Wait(Box::pin(async move {
                let state = &cx.state.auth;
                let result =
                    auth::verify_token(state, &self.policy, &self.app, token, digest, now).await;
                self.conclude(cx, span, result)
            })),
        }
    }

    fn on_upstream_request(&self, cx: &RequestCx<'_>, headers: &mut HeaderMap) {
        if let (Some(id), Some(ups)) = (&cx.identity, &cx.plan.upstreams) {
            auth::set_identity_headers(headers, id, &ups.app_header);
        }
    }
}
