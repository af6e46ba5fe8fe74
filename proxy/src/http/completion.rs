//! What happens when an exchange ends: request metrics, the access-log line, and the
//! release of the in-flight counts, exactly once, however the stream ended.

use super::body::Exchange;
use super::stream_stats::StreamStats;
use crate::metric_scope::RouteSeries;
use crate::metrics::Metrics;
use crate::trace::RequestTrace;
use crate::upstream::endpoint::InFlight;
use crate::usage::{UsageDelta, UsageRecorder};
use http::{HeaderValue, Method, Uri};
use prometheus::IntGauge;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;
use tollgate_filters::limit::StreamPermit;
use tollgate_routing::AppSpec;

/// How a response stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    /// Dropped before its end: the client went away or the connection closed.
    Aborted,
    UpstreamReset,
    IdleTimeout,
    /// Ended by a filter: the app's budget ran out.
    Cut,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::Aborted => "aborted",
            Outcome::UpstreamReset => "upstream_reset",
            Outcome::IdleTimeout => "idle_timeout",
            Outcome::Cut => "cut",
        }
    }
}

/// Decrements the in-flight streams gauge when dropped, even if the handler is cancelled.
#[derive(Debug)]
pub struct StreamGuard(IntGauge);

impl StreamGuard {
    pub fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        StreamGuard(gauge.clone())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Fields of the access-log line, kept only when access logging is on.
#[derive(Debug)]
pub struct AccessRecord {
    pub request_id: HeaderValue,
    pub method: Method,
    pub uri: Uri,
    pub client: SocketAddr,
    pub host: Option<HeaderValue>,
}

/// Accounting for one exchange; [`Completion::finish`] records it.
#[derive(Debug)]
pub struct Completion {
    pub metrics: Arc<Metrics>,
    pub started: Instant,
    pub route: Arc<str>,
    pub app: Option<Arc<AppSpec>>,
    /// The route's request series; the unrouted one when no route matched.
    pub series: Option<Arc<RouteSeries>>,
    pub protocol: &'static str,
    pub status: u16,
    /// Counts the stream as open until the exchange is recorded.
    pub _stream: Option<StreamGuard>,
    pub in_flight: Option<InFlight>,
    pub access: Option<Box<AccessRecord>>,
    /// A slot of the app's concurrent-stream quota, freed when this is dropped.
    pub permit: Option<StreamPermit>,
    /// Budget units the response paid for, when it was metered.
    pub units: Option<Arc<AtomicU64>>,
    /// Where the app's usage is recorded for billing.
    pub usage: Arc<UsageRecorder>,
    /// Request body bytes, when there was a body.
    pub exchange: Option<Arc<Exchange>>,
    /// The request's trace; its span, when recorded, ends with the exchange.
    pub trace: RequestTrace,
    /// The stream's tally, when the exchange is a stream (RPC or server-sent events).
    pub stream: Option<StreamStats>,
}

impl Completion {
    pub fn finish(mut self, bytes: u64, outcome: Outcome) {
        let elapsed = self.started.elapsed();
        if let Some(s) = &self.stream {
            let ended = self.started + elapsed;
            self.metrics.streams.record(s, self.started, ended, outcome);
        }
        self.trace.finish(self.status, bytes, outcome.as_str());
        let app = self.app.as_deref().map_or("-", |a| a.id.as_str());
        if let Some(a) = &self.app {
            self.usage.record(
                &a.id,
                UsageDelta {
                    requests: 1,
                    bytes_in: self.exchange.as_ref().map_or(0, |x| x.request_bytes()),
                    bytes_out: bytes,
                    units: self.units.as_ref().map_or(0, |u| u.load(Relaxed)),
                },
            );
        }
        let series = match &self.series {
            Some(s) => s,
            None => &self.metrics.bounded.unrouted,
        };
        series.record(self.status, self.protocol, elapsed.as_secs_f64());
        if let Some(a) = &self.access {
            let upstream = self
                .in_flight
                .as_ref()
                .map(|f| f.endpoint().address.clone());
            tracing::info!(
                target: "access",
                request_id = %String::from_utf8_lossy(a.request_id.as_bytes()),
                client = %a.client,
                method = %a.method,
                host = a.host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("-"),
                path = a.uri.path(),
                protocol = self.protocol,
                status = self.status,
                bytes,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                route = &*self.route,
                app,
                upstream = upstream.as_deref().unwrap_or("-"),
                outcome = outcome.as_str(),
                trace_id = %self.trace.trace_id(),
            );
        }
    }
}
