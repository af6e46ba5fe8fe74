//! The request's filter chain: the concerns a request passes between "which route"
//! and "which upstream", each a [`HeadFilter`] compiled per route into a [`RoutePlan`].
//!
//! Phases, in order (the request path in `http::handler` calls them):
//! 1. [`HeadFilter::on_request`], in chain order: may refuse the request, answer it
//!    itself (a CORS preflight, a redirect), or record what later phases need (the
//!    verified identity, the admitted stream's permit and budget meter).
//! 2. [`HeadFilter::on_upstream_request`]: edits the head sent upstream, after the
//!    proxy's own rewriting (hop-by-hop, forwarding and identity headers).
//! 3. [`HeadFilter::on_response`]: edits the response head on its way to the client,
//!    the upstream's answer or the proxy's own, in reverse chain order.
//!
//! Filters that follow the response body (budget metering) are
//! [`tollgate_filters::filter::StreamFilter`]s, created by a head filter at admission.
//! Which filters a route runs, and in what order, is decided once per config in
//! [`plan`]: a request does one route lookup and no map lookups after it.

mod admission;
mod auth;
mod body_limit;
mod cors;
mod headers;
mod hsts;
mod https_redirect;
mod plan;
mod redirect;
mod resume;
mod rpc_call;
mod security_headers;
mod status;

pub use plan::{ClusterChoice, Parts as PlanParts, Plans, RoutePlan, build_plans, update_plans};

use crate::auth::Identity;
use crate::http::body::ResponseBody;
use crate::http::errors::ProxyError;
use crate::http::handler::ConnInfo;
use crate::rpc::RpcCall;
use crate::state::{ProxyState, Shared};
use http::{HeaderMap, HeaderValue, Response};
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tollgate_filters::filter::StreamFilter;
use tollgate_filters::limit::StreamPermit;
use tollgate_filters::rpc::RpcProtocol;

/// A request-head filter's verdict: `Ok(None)` goes on down the chain, `Ok(Some(resp))`
/// answers the request without an upstream, `Err` refuses it.
pub type Outcome = Result<Option<Response<ResponseBody>>, ProxyError>;

/// How a filter returns its [`Outcome`]: at once, or after waiting (a key fetch, a
/// limiter backend). Only filters that wait allocate a future.
// `Ready` is the common, larger variant and a step is consumed where it is made:
// boxing it would allocate on every filter call to save a few bytes on the stack.
#[allow(clippy::large_enum_variant)]
pub enum Step<'a> {
    Ready(Outcome),
    Wait(Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>),
}

impl Step<'_> {
    /// Go on to the next filter.
    pub const NEXT: Step<'static> = Step::Ready(Ok(None));

    /// Refuse the request with `err`.
    pub fn refuse(err: ProxyError) -> Self {
        Step::Ready(Err(err))
    }
}

/// One concern of the request path, configured for one route.
pub trait HeadFilter: Send + Sync + Debug {
    /// The request head, before anything is sent upstream.
    fn on_request<'a>(
        &'a self,
        _head: &'a mut http::request::Parts,
        _cx: &'a mut RequestCx<'_>,
    ) -> Step<'a> {
        Step::NEXT
    }

    /// The head about to be sent upstream.
    fn on_upstream_request(&self, _cx: &RequestCx<'_>, _headers: &mut HeaderMap) {}

    /// The response head about to be sent to the client, whoever answered.
    fn on_response(&self, _cx: &ResponseCx<'_>, _headers: &mut HeaderMap) {}
}

/// What the request-head phase knows and what its filters leave for later phases.
pub struct RequestCx<'r> {
    pub shared: &'r Shared,
    pub state: &'r ProxyState,
    pub conn: &'r ConnInfo,
    pub plan: &'r RoutePlan,
    /// The least the request body holds (its declared length, when declared).
    pub body_hint: u64,
    /// The upstream path (normalised and rewritten), without the query.
    pub upstream_path: &'r str,
    /// The RPC protocol the client speaks, when it speaks one.
    pub protocol: Option<RpcProtocol>,
    /// Set by the auth filter: who the caller is, as verified.
    pub identity: Option<Identity>,
    /// Set by the RPC filter: the call, when the route is a gRPC service.
    pub rpc: Option<RpcCall>,
    /// Set at admission: a slot of the app's concurrent-stream quota.
    pub permit: Option<StreamPermit>,
    /// Set at admission: the stream filter paying for the response from the budget.
    pub meter: Option<Box<dyn StreamFilter>>,
    /// Set at admission: the budget units the response paid for, for usage.
    pub units: Option<Arc<AtomicU64>>,
    /// The request's trace: filters record their span in it when it is recorded.
    pub trace: &'r crate::trace::RequestTrace,
}

/// What response filters may read about the request they answer.
pub struct ResponseCx<'r> {
    pub conn: &'r ConnInfo,
    /// The request's `Origin`, for cross-origin grants.
    pub origin: Option<&'r HeaderValue>,
}

impl RoutePlan {
    /// Runs the request-head phase; `Ok(Some(_))` is an answer that ends the request.
    pub async fn request(
        &self,
        head: &mut http::request::Parts,
        cx: &mut RequestCx<'_>,
    ) -> Outcome {
        for filter in self.head.iter() {
            let outcome = match filter.on_request(head, cx) {
                Step::Ready(outcome) => outcome,
                Step::Wait(pending) => pending.await,
            };
            if !matches!(outcome, Ok(None)) {
                return outcome;
            }
        }
        Ok(None)
    }

    /// Runs the upstream-request phase over the headers sent upstream.
    pub fn upstream_request(&self, cx: &RequestCx<'_>, headers: &mut HeaderMap) {
        for filter in self.head.iter() {
            filter.on_upstream_request(cx, headers);
        }
    }

    /// Runs the response phase, last filter first.
    pub fn response(&self, cx: &ResponseCx<'_>, headers: &mut HeaderMap) {
        for filter in self.head.iter().rev() {
            filter.on_response(cx, headers);
        }
    }
}
