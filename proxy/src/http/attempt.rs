//! One request's tries against a cluster: pick an endpoint, send, and on failure decide
//! whether another try is safe (the request provably never reached the app, or the
//! method is idempotent), within the cluster's retry limit and retry budget.
//!
//! Endpoint health follows the outcome: a gateway error or a failed exchange counts
//! against the endpoint unless the client's own body caused it.

use super::body::{BodyError, Exchange, RequestBody};
use super::client_body::ClientFault;
use super::errors::ProxyError;
use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::trace::{self, RequestTrace, TraceSpan};
use crate::upstream::cluster::Cluster;
use crate::upstream::endpoint::InFlight;
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;

/// One request's tries against a cluster.
pub struct Attempt<'a> {
    pub cluster: &'a Arc<Cluster>,
    pub app_id: &'a str,
    pub method: Method,
    pub headers: http::HeaderMap,
    pub path_and_query: PathAndQuery,
    /// Only bodies known in full can be sent again: streamed bodies are never buffered.
    pub retryable: bool,
    /// The call's own deadline (gRPC, gRPC-Web, Connect): no point waiting longer for
    /// response headers, and a wait it ends is not the endpoint's failure.
    pub deadline: Option<Duration>,
    /// Each try is a client span of the request's trace, when it is recorded.
    pub trace: &'a RequestTrace,
}

/// Whether a try that failed with `err` may be sent again: a refused connection never
/// reached the app; a broken exchange may have, so only idempotent methods go again.
pub fn safe_to_retry(err: &ProxyError, method: &Method) -> bool {
    match err {
        ProxyError::UpstreamConnect => true,
        ProxyError::UpstreamProtocol => is_idempotent(method),
        _ => false,
    }
}

/// RFC 9110 §9.2.2.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

impl Attempt<'_> {
    /// Sends the request, retrying where safe; the response head and the endpoint's
    /// in-flight count, held until the response ends.
    pub async fn send(
        mut self,
        metrics: &Metrics,
        body: RequestBody,
        exchange: Option<&Exchange>,
    ) -> Result<(Response<Incoming>, InFlight), ProxyError> {
        let cluster = self.cluster;
        let max_retries = if self.retryable {
            cluster.spec.retry.max_retries
        } else {
            0
        };
        let version = if cluster.spec.protocol.is_http2() {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        // No point waiting past the call's own deadline; when that is what ends the
        // wait, the endpoint is not at fault.
        let (wait, client_deadline) = match self.deadline {
            Some(d) if d < cluster.response_header_timeout => (d, true),
            _ => (cluster.response_header_timeout, false),
        };
        cluster.retry.deposit();
        let mut body = Some(body);
        let mut exclude = None;
        let mut tries = 0;
        loop {
            let now = now_ms();
            let idx = cluster
                .balancer
                .pick(&cluster.endpoints, &self.headers, self.app_id, exclude, now)
                // With nothing else left, a retry may go back to the same endpoint.
                .or_else(|| exclude.filter(|&i| cluster.endpoints[i].available(now)))
                .ok_or_else(|| ProxyError::NoHealthyEndpoint(self.app_id.to_string()))?;
            let ep = &cluster.endpoints[idx];
            let uri = Uri::builder()
                .scheme(cluster.scheme.clone())
                .authority(ep.authority.clone())
                .path_and_query(self.path_and_query.clone())
                .build()
                .map_err(|_| ProxyError::BadRequest("invalid path"))?;
            let last = tries >= max_retries;
            let mut headers = if last {
                std::mem::take(&mut self.headers)
            } else {
                self.headers.clone()
            };
            let mut span = self.trace.client(trace::method_name(&self.method));
            if let Some(parent) = span.traceparent() {
                // The upstream's spans are children of this try.
                headers.insert(&trace::TRACEPARENT, parent);
                let h2 = version == Version::HTTP_2;
                span.attrs(|| trace::attempt_attributes(&self.method, cluster, ep, tries, h2));
            }
            let this_body = if last {
                body.take()
            } else {
                body.as_ref().and_then(RequestBody::replay)
            };
            let mut up = Request::new(this_body.unwrap_or_else(RequestBody::empty));
            *up.method_mut() = self.method.clone();
            *up.uri_mut() = uri;
            *up.version_mut() = version;
            *up.headers_mut() = headers;

            let mut in_flight = ep.begin();
            // Boxed: the exchange's future (pool, connect, hyper's dispatch) is over 2 KiB,
            // and inline it would be carried, and moved, by every future above this one.
            let exchange_fut = Box::pin(cluster.client.request(&mut in_flight, up));
            let sent = tokio::time::timeout(wait, exchange_fut).await;
            let err = match sent {
                Ok(Ok(resp)) => {
                    trace_status(&mut span, resp.status().as_u16());
                    // A gateway error caused by the client's broken body is not the endpoint's.
                    let client_broke = exchange.is_some_and(|x| x.client_fault().is_some());
                    if !matches!(resp.status().as_u16(), 502..=504) {
                        ep.record_success();
                    } else if !client_broke {
                        self.failed(metrics, idx);
                    }
                    return Ok((resp, in_flight));
                }
                Ok(Err(e)) => {
                    if let Some(err) = client_failure(&e, exchange) {
                        span.error(err.code());
                        tracing::debug!(app = self.app_id, error = %error_chain(&e), "request failed on the client's side");
                        return Err(err);
                    }
                    tracing::warn!(app = self.app_id, endpoint = %ep.address, error = %error_chain(&e), "upstream request failed");
                    if e.is_connect() {
                        ProxyError::UpstreamConnect
                    } else {
                        ProxyError::UpstreamProtocol
                    }
                }
                // The upstream is waiting for the rest of a body the client does not send.
                Err(_) if exchange.is_some_and(Exchange::waiting_on_client) => {
                    let err = ProxyError::client_body(ClientFault::Timeout);
                    span.error(err.code());
                    return Err(err);
                }
                // The call's own deadline, shorter than the cluster's wait, ran out.
                Err(_) if client_deadline => {
                    span.error("deadline_exceeded");
                    return Err(ProxyError::DeadlineExceeded(wait));
                }
                Err(_) => {
                    tracing::warn!(app = self.app_id, endpoint = %ep.address, "upstream response headers timed out");
                    ProxyError::UpstreamTimeout(wait)
                }
            };
            drop(in_flight);
            span.error(err.code());
            drop(span);
            metrics
                .upstream_errors
                .with_label_values(&[&self.cluster.metrics_app, err.code()])
                .inc();
            self.failed(metrics, idx);
            if last || !safe_to_retry(&err, &self.method) {
                return Err(err);
            }
            if !cluster.retry.withdraw() {
                metrics
                    .upstream_retries
                    .with_label_values(&[&self.cluster.metrics_app, "budget_exhausted"])
                    .inc();
                return Err(err);
            }
            metrics
                .upstream_retries
                .with_label_values(&[&self.cluster.metrics_app, "sent"])
                .inc();
            tries += 1;
            exclude = Some(idx);
        }
    }

    fn failed(&self, metrics: &Metrics, idx: usize) {
        let ep = &self.cluster.endpoints[idx];
        if ep.record_failure(&self.cluster.spec.outlier) {
            tracing::warn!(app = self.app_id, endpoint = %ep.address, "endpoint ejected after consecutive failures");
            metrics
                .upstream_ejections
                .with_label_values(&[&self.cluster.metrics_app, &self.cluster.name])
                .inc();
        }
    }
}

/// An answered try: its status, failed from 400 on (a client span's rule).
fn trace_status(span: &mut TraceSpan, status: u16) {
    span.set("http.response.status_code", i64::from(status));
    if status >= 400 {
        span.error(trace::status_text(status));
    }
}

/// The client's side of a failed upstream request: its body ran over the limit,
/// broke, or could not be translated. None of these is charged to the upstream.
fn client_failure(
    e: &crate::upstream::client::Error,
    exchange: Option<&Exchange>,
) -> Option<ProxyError> {
    match body_error_of(e) {
        Some(BodyError::TooLarge(n)) => return Some(ProxyError::BodyTooLarge(*n)),
        Some(BodyError::Invalid(why)) => {
            let message = format!("invalid request body: {why}");
            return Some(ProxyError::ClientBody(ClientFault::Invalid, message));
        }
        Some(BodyError::Client(fault, _)) => return Some(ProxyError::client_body(*fault)),
        _ => {}
    }
    // An HTTP/2 upstream sees only a reset stream: the exchange tells what happened.
    let x = exchange?;
    if x.request_too_large() {
        return Some(ProxyError::BodyTooLarge(0));
    }
    x.client_fault()
        .map(|(fault, message)| ProxyError::ClientBody(*fault, message.clone()))
}

/// Our own request body error, when that is what failed the upstream request.
fn body_error_of(e: &crate::upstream::client::Error) -> Option<&BodyError> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(b) = s.downcast_ref::<BodyError>() {
            return Some(b);
        }
        src = s.source();
    }
    None
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_failures_that_cannot_have_reached_the_app_retry_unsafe_methods() {
        let connect = ProxyError::UpstreamConnect;
        let broken = ProxyError::UpstreamProtocol;
        let timeout = ProxyError::UpstreamTimeout(Duration::from_secs(1));
        let client = ProxyError::BodyTooLarge(1);
        let table: &[(&ProxyError, Method, bool)] = &[
            (&connect, Method::GET, true),
            (&connect, Method::POST, true),
            (&connect, Method::PATCH, true),
            (&broken, Method::GET, true),
            (&broken, Method::HEAD, true),
            (&broken, Method::PUT, true),
            (&broken, Method::DELETE, true),
            (&broken, Method::OPTIONS, true),
            (&broken, Method::TRACE, true),
            (&broken, Method::POST, false),
            (&broken, Method::PATCH, false),
            (&broken, Method::CONNECT, false),
            // The app may still be working on it: never sent twice.
            (&timeout, Method::GET, false),
            (&timeout, Method::POST, false),
            // The client's fault: another endpoint would fail the same way.
            (&client, Method::PUT, false),
        ];
        for (err, method, want) in table {
            assert_eq!(safe_to_retry(err, method), *want, "{err:?} {method}");
        }
    }
}
